//! Card and branch numbers that a person's history calls for (domain.md §5).
//!
//! A household gets a card number the first time one of its members is insured, and every
//! person insured under it gets a branch number: the next unused one, never reused, the same
//! one back on rejoining. This module decides *what* must be issued; the ledger records it in
//! the same transaction as the event that caused it.

use chrono::NaiveDate;

use super::error::DomainError;
use super::event::{HouseholdEvent, HouseholdFact};
use super::history::Derived;
use super::household::Household;
use super::ids::{Branch, CardNumber, CardSymbol, HouseholdId, PersonId};

/// The most branch numbers one card number can carry (`99`, domain.md §5).
pub const MAX_BRANCH: u8 = Branch::MAX;

/// Each household in which the person is insured at some time, with the first such day, in
/// order of that day.
pub fn insured_households(derived: &Derived) -> Vec<(HouseholdId, NaiveDate)> {
    let mut out: Vec<(HouseholdId, NaiveDate)> = Vec::new();
    for i in &derived.intervals {
        if let Some(h) = &i.household_id {
            if !out.iter().any(|(known, _)| known == h) {
                out.push((h.clone(), i.from));
            }
        }
    }
    out
}

/// The branch number the next person joining this household's card gets.
pub fn next_branch(household: &Household) -> Result<Branch, DomainError> {
    let highest = household.branches().map(|(_, b)| b.value()).max().unwrap_or(0);
    match Branch::new(highest + 1).filter(|b| b.value() <= MAX_BRANCH) {
        Some(b) => Ok(b),
        None => {
            let (symbol, number) = household
                .card()
                .map(|(s, n)| (s.to_string(), n.to_string()))
                .unwrap_or_default();
            Err(DomainError::new(
                "branch_numbers_exhausted",
                format!(
                    "card {symbol}-{number} has issued all {MAX_BRANCH} branch numbers; no further person can join it"
                ),
            ))
        }
    }
}

/// A card number from the deployment's sequence: `n` zero-padded to `width` digits.
pub fn card_number(n: u64, width: usize) -> Result<CardNumber, DomainError> {
    let s = format!("{n:0width$}");
    match CardNumber::parse(&s) {
        Ok(c) if s.len() == width => Ok(c),
        _ => Err(DomainError::new(
            "card_numbers_exhausted",
            format!("card number {n} does not fit the configured width of {width} digits"),
        )),
    }
}

/// What must be issued in `household` for `person_id`, insured there from `first_day`:
/// nothing when the person already holds a branch under the household's card, otherwise the
/// card (if the household has none yet, `new_card` supplies it) and the next branch number.
/// The events take effect on `first_day` (never after `today`) and are reported `today`.
pub fn issue(
    household: &Household,
    person_id: &PersonId,
    first_day: NaiveDate,
    today: NaiveDate,
    new_card: impl FnOnce() -> Result<(CardSymbol, CardNumber), DomainError>,
) -> Result<Vec<HouseholdEvent>, DomainError> {
    let mut household = household.clone();
    let effective_date = first_day.min(today);
    let mut events = Vec::new();
    let (symbol, number) = match household.card() {
        Some(card) => card,
        None => {
            let (symbol, number) = new_card()?;
            let e = HouseholdEvent {
                effective_date,
                reported_date: today,
                fact: HouseholdFact::CardNumberAssigned {
                    symbol: symbol.clone(),
                    number: number.clone(),
                },
            };
            household = Household::from_events(household.events().iter().cloned().chain([e.clone()]).collect());
            events.push(e);
            (symbol, number)
        }
    };
    if household.branch_of(person_id).is_none() {
        events.push(HouseholdEvent {
            effective_date,
            reported_date: today,
            fact: HouseholdFact::BranchNumberIssued {
                person_id: person_id.clone(),
                symbol,
                number,
                branch: next_branch(&household)?,
            },
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn pid(s: &str) -> PersonId {
        PersonId::parse(s).unwrap()
    }
    fn card() -> Result<(CardSymbol, CardNumber), DomainError> {
        Ok((CardSymbol::parse("12").unwrap(), CardNumber::parse("0000001").unwrap()))
    }
    fn applied(h: &Household, events: Vec<HouseholdEvent>) -> Household {
        Household::from_events(h.events().iter().cloned().chain(events).collect())
    }

    #[test]
    fn first_join_issues_card_then_branch_01() {
        let h = Household::default();
        let events = issue(&h, &pid("1"), d("2026-04-01"), d("2026-11-25"), card).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(events[0].fact, HouseholdFact::CardNumberAssigned { .. }));
        match &events[1].fact {
            HouseholdFact::BranchNumberIssued { branch, person_id, .. } => {
                assert_eq!(branch.to_string(), "01");
                assert_eq!(person_id, &pid("1"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(events[1].effective_date, d("2026-04-01"));
        assert_eq!(events[1].reported_date, d("2026-11-25"));
    }

    #[test]
    fn next_unused_then_same_on_rejoin_and_never_reissued() {
        let mut h = Household::default();
        for p in ["1", "2", "3"] {
            let e = issue(&h, &pid(p), d("2026-04-01"), d("2026-11-25"), card).unwrap();
            h = applied(&h, e);
        }
        assert_eq!(h.branch_of(&pid("3")).unwrap().to_string(), "03");
        // Rejoining: nothing new.
        assert!(issue(&h, &pid("2"), d("2026-06-01"), d("2026-11-25"), card)
            .unwrap()
            .is_empty());
        // A newcomer never gets a number someone else held.
        let e = issue(&h, &pid("9"), d("2026-06-01"), d("2026-11-25"), card).unwrap();
        assert!(matches!(&e[0].fact, HouseholdFact::BranchNumberIssued { branch, .. } if branch.to_string() == "04"));
    }

    #[test]
    fn ninety_nine_exhausts_the_card() {
        let mut h = Household::default();
        for p in 1..=99 {
            let e = issue(&h, &pid(&p.to_string()), d("2026-04-01"), d("2026-11-25"), card).unwrap();
            h = applied(&h, e);
        }
        assert_eq!(h.branch_of(&pid("99")).unwrap().to_string(), "99");
        let err = issue(&h, &pid("100"), d("2026-04-01"), d("2026-11-25"), card).unwrap_err();
        assert_eq!(err.code, "branch_numbers_exhausted");
        // Those who hold one still rejoin.
        assert!(issue(&h, &pid("50"), d("2026-08-01"), d("2026-11-25"), card)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn future_first_day_takes_effect_today() {
        let e = issue(&Household::default(), &pid("1"), d("2027-01-01"), d("2026-11-25"), card).unwrap();
        assert!(e.iter().all(|e| e.effective_date == d("2026-11-25")));
    }

    #[test]
    fn card_numbers_are_zero_padded_and_bounded_by_width() {
        assert_eq!(card_number(42, 7).unwrap().as_str(), "0000042");
        assert_eq!(card_number(9_999_999, 7).unwrap().as_str(), "9999999");
        assert_eq!(card_number(10_000_000, 7).unwrap_err().code, "card_numbers_exhausted");
    }
}
