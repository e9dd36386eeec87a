//! Deciding one command against its folded stream: the aggregate's rules, the events it emits,
//! and what the ledger adds in the same stream (the 75th-birthday confirmations brought in line
//! with the history).

use std::sync::Arc;

use super::aggregate::decide;
use super::issuance::{issuance, Follow};
use super::source::{Folded, Source, SourceDirectory};
use super::Commands;
use crate::codec::Origin;
use crate::domain::input::PersonInput;
use crate::domain::{
    age, CommandError, Household, HouseholdEvent, HouseholdFact, HouseholdId, HouseholdServices, InputError, Person,
    PersonEvent, PersonFact, PersonId, PersonServices, RecordHouseholdEvent, RecordPersonEvent,
};
use crate::error::LedgerError;
use crate::request::RequestContext;
use crate::store::{NewEvent, VaultEntry};
use crate::vault::Vault;

/// Completes a parsed person event with what depends on the stream: the vault entry and
/// commitment of a My Number, and the defaults of a correction's replacement.
pub(crate) fn prepare_person_event(
    vault: &Vault,
    person_id: &PersonId,
    person: &Person,
    input: &PersonInput,
) -> (PersonEvent, Vec<VaultEntry>) {
    let mut event = input.event.clone();
    let mut entries = Vec::new();
    let sealed = input.my_number.as_ref().map(|n| vault.seal(person_id, n));
    match &mut event.fact {
        PersonFact::Registered(r) => {
            if let Some(v) = sealed {
                r.my_number_commitment = Some(v.commitment.clone());
                entries.push(v);
            }
        }
        PersonFact::Corrected {
            target_sequence,
            replacement,
        } => {
            let target = target_sequence
                .checked_sub(1)
                .and_then(|i| person.events().get(i as usize));
            if let Some(t) = target {
                if input.replacement_reported_date_missing {
                    replacement.reported_date = t.reported_date;
                }
            }
            if let PersonFact::Registered(r) = &mut replacement.fact {
                match sealed {
                    Some(v) => {
                        r.my_number_commitment = Some(v.commitment.clone());
                        entries.push(v);
                    }
                    // A correction of other fields keeps the number on record.
                    None => r.my_number_commitment = person.registration().and_then(|p| p.my_number_commitment),
                }
            }
        }
        _ => {}
    }
    (event, entries)
}

/// What a stream's decision adds to the log: its own events (the request's, then the ledger's
/// consequences in the same stream), events in other streams, and vault entries.
pub struct Decision {
    pub events: Vec<NewEvent>,
    pub follow: Follow,
    pub vault: Vec<VaultEntry>,
    /// A person's decision: whether the person's history, these events included, has a
    /// disclosure restriction (閲覧制限) in force (for the write's access record).
    pub restricted: Option<bool>,
}

/// A refusal of an event the ledger decided itself is a broken invariant, not the caller's
/// fault.
fn own(e: CommandError) -> LedgerError {
    match e {
        CommandError::Rule(r) => LedgerError::Internal(format!("the ledger's own consequence was refused: {r}")),
        CommandError::Service(s) => LedgerError::Service(s),
    }
}

impl Commands {
    /// A person's event: the aggregate's rules, the 75th-birthday confirmations brought in
    /// line, and the card and branch numbers the new history calls for. Returns the person as
    /// the decision leaves them.
    pub async fn decide_person(
        &self,
        source: &Arc<dyn Source>,
        person_id: &PersonId,
        folded: Folded<Person>,
        input: &PersonInput,
        ctx: &RequestContext,
        system: bool,
    ) -> Result<(Decision, Folded<Person>), LedgerError> {
        let today = self.clock.today();
        let services = PersonServices { today };
        let Folded {
            aggregate: mut person,
            sequence,
        } = folded;
        let (event, vault) = prepare_person_event(&self.vault, person_id, &person, input);
        let record_missing = age::moves_birth_date(&person, &event);
        let reported = event.reported_date;
        let origin = if system {
            Origin::System(ctx)
        } else {
            Origin::Request(ctx)
        };
        let command = RecordPersonEvent { event, system };
        let mut events = decide(&mut person, command, &services, origin, reported).await??;
        // A corrected birth date moves the 75th birthday: the confirmations follow it (and a
        // death or move-out before it takes a confirmation away).
        for consequence in age::reconcile(&person, today, record_missing) {
            let reported = consequence.reported_date;
            let command = RecordPersonEvent {
                event: consequence,
                system: true,
            };
            events.extend(
                decide(&mut person, command, &services, Origin::Consequence(ctx), reported)
                    .await?
                    .map_err(own)?,
            );
        }
        let derived = person
            .derive()
            .map_err(|e| LedgerError::Internal(format!("a decided history does not derive: {e}")))?;
        let follow = issuance(source, &self.settings, today, person_id, &derived, ctx).await?;
        let after = Folded {
            sequence: sequence + events.len() as i64,
            aggregate: person,
        };
        let decision = Decision {
            events,
            follow,
            vault,
            restricted: Some(derived.disclosure_restricted_from.is_some()),
        };
        Ok((decision, after))
    }

    /// A household's event: the aggregate's rules (which read the persons concerned).
    pub async fn decide_household(
        &self,
        source: &Arc<dyn Source>,
        household_id: &HouseholdId,
        folded: Folded<Household>,
        event: &HouseholdEvent,
        ctx: &RequestContext,
    ) -> Result<(Decision, Folded<Household>), LedgerError> {
        if let HouseholdFact::CardNumberAssigned { number, .. } = &event.fact {
            let width = self.settings.card_number_width;
            if number.as_str().len() != width {
                return Err(InputError::new(
                    "invalid_card_number",
                    format!("number must have exactly {width} digits (this deployment's card number width)"),
                )
                .into());
            }
        }
        let services = HouseholdServices {
            today: self.clock.today(),
            directory: Arc::new(SourceDirectory(source.clone())),
        };
        let Folded {
            aggregate: mut household,
            sequence,
        } = folded;
        let command = RecordHouseholdEvent {
            household_id: household_id.clone(),
            event: event.clone(),
            system: false,
        };
        let events = decide(
            &mut household,
            command,
            &services,
            Origin::Request(ctx),
            event.reported_date,
        )
        .await??;
        let after = Folded {
            sequence: sequence + events.len() as i64,
            aggregate: household,
        };
        let decision = Decision {
            events,
            follow: Follow::default(),
            vault: Vec::new(),
            restricted: None,
        };
        Ok((decision, after))
    }
}
