//! The `household` aggregate: register head, NHI head designation, card number and branch
//! numbers of one household (世帯).

use std::sync::Arc;

use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::error::{CommandError, DomainError, ServiceError};
use super::event::{HouseholdEvent, HouseholdFact};
use super::ids::{Branch, CardNumber, CardSymbol, HouseholdId, PersonId};
use super::person::Person;

/// Read access to other aggregates, for rules that span streams.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    async fn person(&self, id: &PersonId) -> Result<Option<Person>, ServiceError>;
    /// The household holding a card symbol and number, if any.
    async fn card_holder(&self, symbol: &CardSymbol, number: &CardNumber) -> Result<Option<HouseholdId>, ServiceError>;
}

#[derive(Clone)]
pub struct HouseholdServices {
    pub today: NaiveDate,
    pub directory: Arc<dyn Directory>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecordHouseholdEvent {
    pub household_id: HouseholdId,
    pub event: HouseholdEvent,
    /// Recorded by the ledger itself (branch-number issuance).
    pub system: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Household {
    events: Vec<HouseholdEvent>,
}

impl Household {
    pub fn from_events(events: Vec<HouseholdEvent>) -> Self {
        Self { events }
    }
    pub fn events(&self) -> &[HouseholdEvent] {
        &self.events
    }
    pub fn last_sequence(&self) -> u64 {
        self.events.len() as u64
    }

    fn by_effective_date(&self) -> Vec<&HouseholdEvent> {
        let mut v: Vec<&HouseholdEvent> = self.events.iter().collect();
        v.sort_by_key(|e| e.effective_date); // stable: same-day events keep sequence order
        v
    }

    /// The resident-register head on day `d`.
    pub fn head_on(&self, d: NaiveDate) -> Option<PersonId> {
        let mut head = None;
        for e in self
            .by_effective_date()
            .into_iter()
            .take_while(|e| e.effective_date <= d)
        {
            if let HouseholdFact::HouseholdHeadChanged { person_id } = &e.fact {
                head = Some(person_id.clone());
            }
        }
        head
    }

    /// The member designated NHI head on day `d` (施行規則10条の2), if a designation is in force.
    pub fn designation_on(&self, d: NaiveDate) -> Option<PersonId> {
        let mut designated = None;
        for e in self
            .by_effective_date()
            .into_iter()
            .take_while(|e| e.effective_date <= d)
        {
            match &e.fact {
                HouseholdFact::NhiHeadDesignated { person_id } => designated = Some(person_id.clone()),
                HouseholdFact::NhiHeadDesignationRevoked => designated = None,
                _ => {}
            }
        }
        designated
    }

    /// The designation standing on day `d` — the latest on or before `d`, not revoked since —
    /// with its effective date. It is in force only while its person stays an insured member
    /// of the household from that date on: it lapses the day they move out, die, change
    /// household or lose coverage (the caller checks that against the person's history).
    pub fn designation_since(&self, d: NaiveDate) -> Option<(PersonId, NaiveDate)> {
        let mut designated = None;
        for e in self
            .by_effective_date()
            .into_iter()
            .take_while(|e| e.effective_date <= d)
        {
            match &e.fact {
                HouseholdFact::NhiHeadDesignated { person_id } => {
                    designated = Some((person_id.clone(), e.effective_date))
                }
                HouseholdFact::NhiHeadDesignationRevoked => designated = None,
                _ => {}
            }
        }
        designated
    }

    pub fn card(&self) -> Option<(CardSymbol, CardNumber)> {
        self.events.iter().find_map(|e| match &e.fact {
            HouseholdFact::CardNumberAssigned { symbol, number } => Some((symbol.clone(), number.clone())),
            _ => None,
        })
    }

    pub fn branches(&self) -> impl Iterator<Item = (&PersonId, Branch)> {
        self.events.iter().filter_map(|e| match &e.fact {
            HouseholdFact::BranchNumberIssued { person_id, branch, .. } => Some((person_id, *branch)),
            _ => None,
        })
    }

    pub fn branch_of(&self, person: &PersonId) -> Option<Branch> {
        self.branches().find(|(p, _)| *p == person).map(|(_, b)| b)
    }

    async fn member_on(
        directory: &dyn Directory,
        household: &HouseholdId,
        person_id: &PersonId,
        d: NaiveDate,
        must_be_insured: bool,
    ) -> Result<(), CommandError> {
        let person = directory
            .person(person_id)
            .await?
            .filter(Person::is_registered)
            .ok_or_else(|| {
                CommandError::rule("person_not_registered", format!("person {person_id} is not registered"))
            })?;
        let derived = person.derive()?;
        if derived.household_on(d) != Some(household) {
            return Err(CommandError::rule(
                "not_a_member",
                format!("person {person_id} is not a member of household {household} on {d}"),
            ));
        }
        if must_be_insured && !derived.insured_on(d) {
            return Err(CommandError::rule(
                "not_insured",
                format!("person {person_id} is not insured on {d}"),
            ));
        }
        Ok(())
    }
}

fn check_household_dates(e: &HouseholdEvent, today: NaiveDate) -> Result<(), DomainError> {
    let ty = e.fact.type_name();
    if e.effective_date > today {
        return Err(DomainError::new(
            "future_date",
            format!("{ty}: effective date {} is in the future", e.effective_date),
        ));
    }
    if e.reported_date > today {
        return Err(DomainError::new(
            "reported_date_in_future",
            format!("{ty}: reported date {} is in the future", e.reported_date),
        ));
    }
    if e.reported_date < e.effective_date {
        return Err(DomainError::new(
            "reported_before_effective",
            format!(
                "{ty}: reported date {} is before the effective date {}",
                e.reported_date, e.effective_date
            ),
        ));
    }
    Ok(())
}

impl Aggregate for Household {
    const TYPE: &'static str = "household";
    type Command = RecordHouseholdEvent;
    type Event = HouseholdEvent;
    type Error = CommandError;
    type Services = HouseholdServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let RecordHouseholdEvent {
            household_id,
            event,
            system,
        } = command;
        check_household_dates(&event, services.today)?;
        let d = event.effective_date;
        let dir = services.directory.as_ref();
        match &event.fact {
            HouseholdFact::HouseholdHeadChanged { person_id } => {
                Self::member_on(dir, &household_id, person_id, d, false).await?;
            }
            HouseholdFact::NhiHeadDesignated { person_id } => {
                Self::member_on(dir, &household_id, person_id, d, true).await?;
            }
            HouseholdFact::NhiHeadDesignationRevoked => {
                if self.designation_on(d).is_none() {
                    return Err(CommandError::rule(
                        "designation_not_active",
                        format!("no NHI head designation is in force on {d}"),
                    ));
                }
            }
            HouseholdFact::CardNumberAssigned { symbol, number } => {
                if let Some((s, n)) = self.card() {
                    return Err(CommandError::rule(
                        "card_number_already_assigned",
                        format!("household {household_id} already has card {s}-{n}"),
                    ));
                }
                if let Some(holder) = dir.card_holder(symbol, number).await? {
                    return Err(CommandError::rule(
                        "card_number_in_use",
                        format!(
                            "card {symbol}-{number} belongs to household {holder}",
                            symbol = symbol.as_str(),
                            number = number.as_str()
                        ),
                    ));
                }
            }
            HouseholdFact::BranchNumberIssued {
                person_id,
                symbol,
                number,
                branch,
            } => {
                if !system {
                    return Err(CommandError::rule(
                        "system_event_only",
                        "branch_number_issued is recorded by the ledger itself",
                    ));
                }
                match self.card() {
                    Some((s, n)) if &s == symbol && &n == number => {}
                    _ => {
                        return Err(CommandError::rule(
                            "card_mismatch",
                            "the branch number names a card this household does not hold",
                        ))
                    }
                }
                if let Some((holder, _)) = self.branches().find(|(_, b)| b == branch) {
                    return Err(CommandError::rule(
                        "branch_in_use",
                        format!("branch {branch} is already issued to person {holder}"),
                    ));
                }
                if let Some(b) = self.branch_of(person_id) {
                    return Err(CommandError::rule(
                        "branch_already_issued",
                        format!("person {person_id} already holds branch {b}"),
                    ));
                }
            }
        }
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.events.push(event);
    }
}
