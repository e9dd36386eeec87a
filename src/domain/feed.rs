//! The records of the change feed (被保険者異動情報, feed.md, domain.md §9): what a household's
//! group says, derived from the household's facts and its members' histories alone — never
//! from the wall clock, so the same log always gives the same feed.
//!
//! Each record describes the latest known state: a member's most recent period under the
//! household's card, with its end when one is known. A loss derived only from age is not
//! "known" until `late_elderly_age_reached` is recorded (the feed announces it then).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::event::PersonFact;
use super::history::Derived;
use super::household::Household;
use super::ids::PersonId;
use super::person::{EventStatus, Person};

/// A day after every date the ledger holds: "the latest known state".
const END_OF_KNOWN_TIME: NaiveDate = NaiveDate::MAX;

/// 資格情報(世帯): one per group, first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HouseholdRecord {
    pub insurer_number: String,
    pub symbol: String,
    pub number: String,
    pub household_id: String,
    pub nhi_head_person_id: Option<String>,
    pub nhi_head_name: Option<String>,
    pub deemed_head: bool,
    pub deemed_head_person_id: Option<String>,
    pub insured_count: u32,
}

/// 資格情報(個人): one per member who is or was insured under the card, and the deemed head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndividualRecord {
    pub insurer_number: String,
    pub symbol: String,
    pub number: String,
    pub branch: Option<String>,
    pub person_id: String,
    pub name: String,
    pub name_kana: String,
    pub real_name: Option<String>,
    pub real_name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub sex_on_back: bool,
    pub is_nhi_head: bool,
    pub is_deemed_head: bool,
    pub qualified_on: Option<NaiveDate>,
    pub disqualified_on: Option<NaiveDate>,
    pub loss_code: Option<String>,
    pub applied_from: Option<NaiveDate>,
    /// Inclusive last covered day.
    pub applied_to: Option<NaiveDate>,
    pub disclosure_restricted: bool,
    pub document_collected_on: Option<NaiveDate>,
}

/// `acquired` / `lost` / `changed` (feed.md), against the person's previous record in this
/// household.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Acquired,
    Lost,
    Changed,
}

impl Change {
    /// The kind of change from `before` (None: no record yet) to `after`: a period that opens
    /// (first join, rejoin) is `acquired`, one that gets its end is `lost`, anything else —
    /// a corrected date, a new name, another member's change, the end of the same period
    /// withdrawn (a rescinded loss) — is `changed`.
    pub fn between(before: Option<&IndividualRecord>, after: &IndividualRecord) -> Change {
        let open = |r: &IndividualRecord| r.applied_from.is_some() && r.applied_to.is_none();
        match before {
            None if after.applied_from.is_some() => {
                if open(after) {
                    Change::Acquired
                } else {
                    Change::Lost
                }
            }
            None => Change::Changed,
            Some(b) if open(b) && !open(after) => Change::Lost,
            Some(b) if !open(b) && open(after) && b.applied_from != after.applied_from => Change::Acquired,
            Some(_) => Change::Changed,
        }
    }
}

impl IndividualRecord {
    /// Place in a group: branch order, members without a branch last, by person id.
    pub fn group_order(&self) -> (bool, Option<&str>, &str) {
        (self.branch.is_none(), self.branch.as_deref(), &self.person_id)
    }

    /// The last record of a person who no longer belongs to the group (a rescinded or
    /// corrected move-in, a deemed head who stopped being one without ever being insured):
    /// announced once with no period and no head role, then dropped from the group.
    pub fn withdrawn(&self) -> IndividualRecord {
        IndividualRecord {
            is_nhi_head: false,
            is_deemed_head: false,
            qualified_on: None,
            disqualified_on: None,
            loss_code: None,
            applied_from: None,
            applied_to: None,
            ..self.clone()
        }
    }
}

/// One member as the group builder needs them: their stream folded and derived.
pub struct Member<'a> {
    pub person_id: &'a PersonId,
    pub person: &'a Person,
    pub derived: &'a Derived,
}

/// A member's most recent period in the household, as (from, to-exclusive or open,
/// qualified_on, disqualified_on, loss code).
struct Span {
    from: NaiveDate,
    to: Option<NaiveDate>,
    qualified_on: NaiveDate,
    disqualified_on: Option<NaiveDate>,
    loss_code: Option<&'static str>,
}

fn age_loss_announced(person: &Person) -> bool {
    let (status, _) = person.statuses();
    person
        .events()
        .iter()
        .zip(&status)
        .any(|(e, s)| matches!(e.fact, PersonFact::LateElderlyAgeReached) && *s != EventStatus::Rescinded)
}

fn span_in(m: &Member<'_>, household: &str) -> Option<Span> {
    let intervals: Vec<_> = m
        .derived
        .intervals
        .iter()
        .filter(|i| i.household_id.as_ref().is_some_and(|h| h.as_str() == household))
        .collect();
    let last = *intervals.last()?;
    // Back to the start of the contiguous stretch that ends with `last`.
    let mut from = last.from;
    for i in intervals.iter().rev().skip(1) {
        if i.to == Some(from) {
            from = i.from;
        } else {
            break;
        }
    }
    let mut span = Span {
        from,
        to: last.to,
        qualified_on: last.qualified_on,
        disqualified_on: last.disqualified_on,
        loss_code: last.loss.and_then(|l| l.code()),
    };
    // A loss derived from age alone is announced when the ledger records it (feed.md).
    let by_age = m.derived.runs.iter().any(|r| r.loss_by_age && r.to == last.to);
    if by_age && !age_loss_announced(m.person) {
        span.to = None;
        span.disqualified_on = None;
        span.loss_code = None;
    }
    Some(span)
}

/// The household's group as the log stands, or None while the household has no card.
/// Individual records are in branch order (members without a branch last, by person id).
pub fn group(
    insurer_number: &str,
    household_id: &str,
    household: &Household,
    members: &[Member<'_>],
) -> Option<(HouseholdRecord, Vec<IndividualRecord>)> {
    let (symbol, number) = household.card()?;
    let spans: Vec<Option<Span>> = members.iter().map(|m| span_in(m, household_id)).collect();
    let insured = |i: usize| spans[i].as_ref().is_some_and(|s| s.to.is_none());
    let index_of = |p: &PersonId| members.iter().position(|m| m.person_id == p);
    // The register head named last, while still a member of the household (after moving out
    // or dying they head nothing until the register names a new head).
    let head = household.head_on(END_OF_KNOWN_TIME).filter(|h| {
        index_of(h).is_some_and(|i| {
            members[i]
                .derived
                .memberships
                .last()
                .is_some_and(|m| m.to.is_none() && m.household_id.as_str() == household_id)
        })
    });
    // A designation lapses when its person stops being an insured member (their stretch in
    // the household has an end, or began again after the designation).
    let designated = household
        .designation_since(END_OF_KNOWN_TIME)
        .filter(|(p, since)| {
            index_of(p).is_some_and(|i| spans[i].as_ref().is_some_and(|s| s.to.is_none() && s.from <= *since))
        })
        .map(|(p, _)| p);
    let nhi_head = designated.or_else(|| head.clone());
    // 擬制世帯主: the register head is not insured while another member is.
    let deemed = head.as_ref().filter(|h| {
        let head_insured = index_of(h).is_some_and(insured);
        let other_insured = (0..members.len()).any(|i| members[i].person_id != *h && insured(i));
        !head_insured && other_insured
    });
    let name_of = |p: &PersonId| {
        index_of(p)
            .and_then(|i| members[i].person.registration())
            .map(|r| r.name.as_str().to_owned())
    };
    let household_record = HouseholdRecord {
        insurer_number: insurer_number.to_owned(),
        symbol: symbol.to_string(),
        number: number.to_string(),
        household_id: household_id.to_owned(),
        nhi_head_person_id: nhi_head.as_ref().map(|p| p.to_string()),
        nhi_head_name: nhi_head.as_ref().and_then(name_of),
        deemed_head: deemed.is_some(),
        deemed_head_person_id: deemed.map(|p| p.to_string()),
        insured_count: (0..members.len()).filter(|i| insured(*i)).count() as u32,
    };
    let mut individuals = Vec::new();
    for (m, span) in members.iter().zip(&spans) {
        let is_deemed = deemed == Some(m.person_id);
        if span.is_none() && !is_deemed {
            continue;
        }
        let Some(reg) = m.person.registration() else { continue };
        individuals.push(IndividualRecord {
            insurer_number: insurer_number.to_owned(),
            symbol: symbol.to_string(),
            number: number.to_string(),
            branch: household.branch_of(m.person_id).map(|b| b.to_string()),
            person_id: m.person_id.to_string(),
            name: reg.name.as_str().to_owned(),
            name_kana: reg.name_kana.as_str().to_owned(),
            real_name: reg.real_name.as_ref().map(|n| n.as_str().to_owned()),
            real_name_kana: reg.real_name_kana.as_ref().map(|n| n.as_str().to_owned()),
            birth_date: reg.birth_date,
            sex: reg.sex.code().to_owned(),
            sex_on_back: reg.sex_on_back,
            is_nhi_head: nhi_head.as_ref() == Some(m.person_id),
            is_deemed_head: is_deemed,
            qualified_on: span.as_ref().map(|s| s.qualified_on),
            disqualified_on: span.as_ref().and_then(|s| s.disqualified_on),
            loss_code: span.as_ref().and_then(|s| s.loss_code).map(str::to_owned),
            applied_from: span.as_ref().map(|s| s.from),
            applied_to: span.as_ref().and_then(|s| s.to).and_then(|t| t.pred_opt()),
            disclosure_restricted: m.derived.disclosure_restricted_from.is_some(),
            document_collected_on: m.derived.last_document_collected,
        });
    }
    individuals.sort_by(|a, b| a.group_order().cmp(&b.group_order()));
    Some((household_record, individuals))
}
