//! The 75th birthday (後期高齢者医療, domain.md §3): when its loss is due, and what the log must
//! say about it. The loss is derived from the birth date; `late_elderly_age_reached` only
//! confirms it (and makes the feed announce it). When a later fact moves the birthday (a
//! corrected birth date) or takes the loss away (a death or move-out before it), the ledger
//! brings its confirmations in line in the same commit, so the log never says "reached" on a
//! day the history no longer supports.

use chrono::NaiveDate;

use super::event::{PersonEvent, PersonFact};
use super::history::seventy_fifth_birthday;
use super::person::Person;

/// Why the ledger rescinds its own confirmation.
pub const STALE_REASON: &str = "the 75th-birthday loss is no longer due under the corrected history";

/// The 75th birthday of the registered person, when the loss on it is due and not after
/// `through`; None otherwise (not registered, not insured up to it, or still to come).
pub fn due_birthday(person: &Person, through: NaiveDate) -> Option<NaiveDate> {
    let reg = person.registration()?;
    let birthday = seventy_fifth_birthday(reg.birth_date);
    let derived = person.derive().ok()?;
    (birthday <= through && derived.age_loss_on(birthday)).then_some(birthday)
}

/// The confirmation the 75th-birthday job records on the birthday itself.
pub fn reached(birthday: NaiveDate) -> PersonEvent {
    PersonEvent {
        effective_date: birthday,
        // Reported by the ledger on the day it became true: a catch-up is no late report.
        reported_date: birthday,
        fact: PersonFact::LateElderlyAgeReached,
    }
}

/// The system events that make the person's `late_elderly_age_reached` events agree with the
/// history as it now stands (today = `today`):
/// - a confirmation on another day than the (corrected) due birthday is corrected to it;
/// - a confirmation that is no longer due is rescinded;
/// - with `record_missing`, a due loss without confirmation is confirmed (after a corrected
///   birth date; otherwise the daily job does it on the birthday).
pub fn reconcile(person: &Person, today: NaiveDate, record_missing: bool) -> Vec<PersonEvent> {
    let in_force = person.age_reached_in_force();
    let due = due_birthday(person, today);
    let mut out = Vec::new();
    let mut kept = false;
    for (sequence, date) in in_force {
        match due {
            Some(birthday) if !kept => {
                kept = true;
                if date != birthday {
                    out.push(PersonEvent {
                        effective_date: today,
                        reported_date: today,
                        fact: PersonFact::Corrected {
                            target_sequence: sequence,
                            replacement: Box::new(reached(birthday)),
                        },
                    });
                }
            }
            _ => out.push(PersonEvent {
                effective_date: today,
                reported_date: today,
                fact: PersonFact::Rescinded {
                    target_sequence: sequence,
                    reason: STALE_REASON.to_owned(),
                },
            }),
        }
    }
    if let (Some(birthday), false, true) = (due, kept, record_missing) {
        out.push(reached(birthday));
    }
    out
}

/// Whether `event` changes the registered birth date of `before` (a correction of the
/// registration naming another birth date).
pub fn moves_birth_date(before: &Person, event: &PersonEvent) -> bool {
    let PersonFact::Corrected { replacement, .. } = &event.fact else {
        return false;
    };
    let PersonFact::Registered(new) = &replacement.fact else {
        return false;
    };
    before
        .registration()
        .is_some_and(|old| old.birth_date != new.birth_date)
}
