//! The `person` aggregate: a person's stream of facts. State is the list of events; everything
//! else is derived from it on demand (the stream is short: tens of events per person).

use chrono::{Days, NaiveDate};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::error::{CommandError, DomainError};
use super::event::{PersonEvent, PersonFact, Registration};
use super::history::{derive, Derived};

/// How far ahead a move-out may be pre-filed (転出予定日).
pub const PREFILE_MOVE_OUT_DAYS: u64 = 31;
/// A report later than this many days after the fact is flagged (施行規則2条).
pub const LATE_REPORT_DAYS: i64 = 14;

/// The registration in force, the day it was recorded for, and the other facts in force with
/// their sequences.
pub type InForce = (Registration, NaiveDate, Vec<(u64, PersonEvent)>);

/// Record one event in a person's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordPersonEvent {
    pub event: PersonEvent,
    /// Recorded by the ledger itself (e.g. `late_elderly_age_reached`).
    pub system: bool,
}

/// What a command handler needs from outside: "today" in Asia/Tokyo.
#[derive(Clone, Copy, Debug)]
pub struct PersonServices {
    pub today: NaiveDate,
}

/// Status of an event in the stream, for the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    InForce,
    Corrected,
    Rescinded,
}

/// The name in force is the registered one as changed by `name_changed` facts, the latest
/// effective date last (same day: the later recorded). A change without a real name keeps the
/// registered real name: it renames the alias printed on the card, not the person.
fn apply_name_changes(r: &mut Registration, facts: &[(u64, PersonEvent)]) {
    let mut changes: Vec<(NaiveDate, u64, &super::event::NameChange)> = facts
        .iter()
        .filter_map(|(seq, e)| match &e.fact {
            PersonFact::NameChanged(c) => Some((e.effective_date, *seq, c)),
            _ => None,
        })
        .collect();
    changes.sort_by_key(|(d, seq, _)| (*d, *seq));
    for (_, _, c) in changes {
        r.name = c.name.clone();
        r.name_kana = c.name_kana.clone();
        if c.real_name.is_some() {
            r.real_name = c.real_name.clone();
        }
        if c.real_name_kana.is_some() {
            r.real_name_kana = c.real_name_kana.clone();
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Event `i` has sequence `i + 1`.
    events: Vec<PersonEvent>,
}

impl Person {
    pub fn from_events(events: Vec<PersonEvent>) -> Self {
        Self { events }
    }
    pub fn events(&self) -> &[PersonEvent] {
        &self.events
    }
    pub fn last_sequence(&self) -> u64 {
        self.events.len() as u64
    }
    pub fn is_registered(&self) -> bool {
        !self.events.is_empty()
    }

    /// Status of each event (index = sequence − 1) and the replacement in force for corrected ones.
    pub fn statuses(&self) -> (Vec<EventStatus>, Vec<Option<&PersonEvent>>) {
        let mut status = vec![EventStatus::InForce; self.events.len()];
        let mut replacement: Vec<Option<&PersonEvent>> = vec![None; self.events.len()];
        // Targets were checked when recorded (an earlier, non-correction event of this stream);
        // an index outside the stream is ignored rather than trusted.
        let index = |t: u64, len: usize| t.checked_sub(1).map(|i| i as usize).filter(|i| *i < len);
        for e in &self.events {
            match &e.fact {
                PersonFact::Corrected {
                    target_sequence,
                    replacement: r,
                } => {
                    if let Some(t) = index(*target_sequence, status.len()) {
                        status[t] = EventStatus::Corrected;
                        replacement[t] = Some(r);
                    }
                }
                PersonFact::Rescinded { target_sequence, .. } => {
                    if let Some(t) = index(*target_sequence, status.len()) {
                        status[t] = EventStatus::Rescinded;
                        replacement[t] = None;
                    }
                }
                _ => {}
            }
        }
        (status, replacement)
    }

    /// The registration in force, the day it was recorded for, and every other fact in force
    /// (corrections applied, rescinded facts dropped) with its sequence.
    pub fn in_force(&self) -> Option<InForce> {
        let (status, replacement) = self.statuses();
        let mut registration = None;
        let mut facts = Vec::with_capacity(self.events.len());
        for (i, e) in self.events.iter().enumerate() {
            if e.fact.is_correction() || status[i] == EventStatus::Rescinded {
                continue;
            }
            let current = replacement[i].unwrap_or(e);
            match &current.fact {
                PersonFact::Registered(r) => registration = Some((r.clone(), current.effective_date)),
                _ => facts.push((i as u64 + 1, current.clone())),
            }
        }
        registration.map(|(mut r, on)| {
            apply_name_changes(&mut r, &facts);
            (r, on, facts)
        })
    }

    pub fn registration(&self) -> Option<Registration> {
        self.in_force().map(|(r, _, _)| r)
    }

    /// Derives eligibility from the facts in force.
    pub fn derive(&self) -> Result<Derived, DomainError> {
        let (reg, on, facts) = self
            .in_force()
            .ok_or_else(|| DomainError::new("person_not_registered", "the person is not registered"))?;
        derive(&reg, on, &facts)
    }

    /// The sequences of the `late_elderly_age_reached` events in force, with the effective
    /// date each says (a corrected one: its replacement's).
    pub fn age_reached_in_force(&self) -> Vec<(u64, NaiveDate)> {
        let (status, replacement) = self.statuses();
        self.events
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                matches!(e.fact, PersonFact::LateElderlyAgeReached) && status[*i] != EventStatus::Rescinded
            })
            .map(|(i, e)| (i as u64 + 1, replacement[i].unwrap_or(e).effective_date))
            .collect()
    }

    /// `late_elderly_age_reached` is recorded once, on the 75th birthday itself, and only when
    /// the loss on that day is due (insured up to it, not lost the same day otherwise).
    fn check_age_reached(&self, e: &PersonEvent) -> Result<(), DomainError> {
        if !self.age_reached_in_force().is_empty() {
            return Err(DomainError::new(
                "age_reached_already_recorded",
                "late_elderly_age_reached is already recorded",
            ));
        }
        self.check_age_reached_date(e)
    }

    fn check_age_reached_date(&self, e: &PersonEvent) -> Result<(), DomainError> {
        let Some(reg) = self.registration() else {
            return Err(DomainError::new(
                "person_not_registered",
                "the person is not registered",
            ));
        };
        let birthday = super::history::seventy_fifth_birthday(reg.birth_date);
        if birthday != e.effective_date {
            return Err(DomainError::new(
                "not_75th_birthday",
                format!(
                    "late_elderly_age_reached on {} is not the 75th birthday",
                    e.effective_date
                ),
            ));
        }
        if !self.derive()?.age_loss_on(birthday) {
            return Err(DomainError::new(
                "age_loss_not_due",
                format!("the person is not insured up to the 75th birthday on {birthday}"),
            ));
        }
        Ok(())
    }

    fn check_correction_target(
        &self,
        target_sequence: u64,
        replacement: Option<&PersonEvent>,
        system: bool,
    ) -> Result<(), DomainError> {
        let Some(target) = target_sequence.checked_sub(1).and_then(|i| self.events.get(i as usize)) else {
            return Err(DomainError::new(
                "target_not_found",
                format!("no event with sequence {target_sequence} in this person's stream"),
            ));
        };
        if target.fact.is_system() && !system {
            return Err(DomainError::new(
                "system_event_only",
                format!(
                    "event {target_sequence} ({}) is recorded by the ledger itself and is corrected only by it",
                    target.fact.type_name()
                ),
            ));
        }
        if target.fact.is_correction() {
            return Err(DomainError::new(
                "target_is_correction",
                format!("event {target_sequence} is itself a correction or rescission"),
            ));
        }
        let (status, _) = self.statuses();
        if status[(target_sequence - 1) as usize] == EventStatus::Rescinded {
            return Err(DomainError::new(
                "target_rescinded",
                format!("event {target_sequence} is already rescinded"),
            ));
        }
        match replacement {
            Some(r) if r.fact.type_name() != target.fact.type_name() => Err(DomainError::new(
                "replacement_type_mismatch",
                format!(
                    "the replacement is a {} but event {target_sequence} is a {}",
                    r.fact.type_name(),
                    target.fact.type_name()
                ),
            )),
            None if matches!(target.fact, PersonFact::Registered(_)) => Err(DomainError::new(
                "cannot_rescind_registration",
                "the registration cannot be rescinded; correct it instead",
            )),
            _ => Ok(()),
        }
    }
}

/// Date rules that depend on "today" (§7): not in the future (a move-out may be pre-filed up
/// to 31 days), reported neither in the future nor before the fact.
pub fn check_dates(e: &PersonEvent, today: NaiveDate) -> Result<(), DomainError> {
    let ty = e.fact.type_name();
    let move_out = matches!(e.fact, PersonFact::MovedOut { .. });
    let limit = if move_out {
        today
            .checked_add_days(Days::new(PREFILE_MOVE_OUT_DAYS))
            .expect("date in range")
    } else {
        today
    };
    if e.effective_date > limit {
        let why = if move_out {
            "more than 31 days ahead"
        } else {
            "in the future"
        };
        return Err(DomainError::new(
            "future_date",
            format!("{ty}: effective date {} is {why}", e.effective_date),
        ));
    }
    if e.reported_date > today {
        return Err(DomainError::new(
            "reported_date_in_future",
            format!("{ty}: reported date {} is in the future", e.reported_date),
        ));
    }
    if e.reported_date < e.effective_date && !move_out {
        return Err(DomainError::new(
            "reported_before_effective",
            format!(
                "{ty}: reported date {} is before the effective date {}",
                e.reported_date, e.effective_date
            ),
        ));
    }
    if let PersonFact::Registered(r) = &e.fact {
        if r.birth_date > today {
            return Err(DomainError::new(
                "future_date",
                format!("birth date {} is in the future", r.birth_date),
            ));
        }
    }
    Ok(())
}

impl Aggregate for Person {
    const TYPE: &'static str = "person";
    type Command = RecordPersonEvent;
    type Event = PersonEvent;
    type Error = CommandError;
    type Services = PersonServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let RecordPersonEvent { event, system } = command;
        let registering = matches!(event.fact, PersonFact::Registered(_));
        if self.events.is_empty() && !registering {
            return Err(CommandError::rule(
                "person_not_registered",
                "the person is not registered",
            ));
        }
        if !self.events.is_empty() && registering {
            return Err(CommandError::rule(
                "already_registered",
                "the person is already registered",
            ));
        }
        if event.fact.is_system() && !system {
            return Err(CommandError::rule(
                "system_event_only",
                "late_elderly_age_reached is recorded by the ledger itself",
            ));
        }
        check_dates(&event, services.today)?;
        if matches!(event.fact, PersonFact::LateElderlyAgeReached) {
            self.check_age_reached(&event)?;
        }
        match &event.fact {
            PersonFact::Corrected {
                target_sequence,
                replacement,
            } => {
                self.check_correction_target(*target_sequence, Some(replacement), system)?;
                check_dates(replacement, services.today)?;
            }
            PersonFact::Rescinded { target_sequence, .. } => {
                self.check_correction_target(*target_sequence, None, system)?
            }
            _ => {}
        }
        // Validate the whole history as it would stand, in effective-date order: this is what
        // makes retroactive inserts, corrections and rescissions safe.
        let mut candidate = self.clone();
        candidate.events.push(event.clone());
        candidate.derive()?;
        if let PersonFact::Corrected { replacement, .. } = &event.fact {
            if matches!(replacement.fact, PersonFact::LateElderlyAgeReached) {
                // The corrected confirmation must name the (corrected) 75th birthday.
                candidate.check_age_reached_date(replacement)?;
            }
        }
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.events.push(event);
    }
}
