//! Recording events: the command cycle every stream shares.
//!
//! A command arrives parsed (the door turned the request into typed values and answered
//! malformed input with 400). Under the stream's lock it is decided against the folded stream,
//! the ledger adds what the decision causes (in the same stream and in others), and everything
//! is appended atomically through the group-commit writer, expecting the sequences read —
//! again from the top when another process moved a stream first.

mod aggregate;
mod decide;
pub mod issuance;
pub(crate) mod locks;
mod recorded;
pub mod source;

use std::sync::Arc;

use cqrs_es::Aggregate;

pub use decide::Decision;
pub use recorded::{Consequence, Recorded};

use crate::access::ride;
use crate::clock::Clock;
use crate::domain::input::PersonInput;
use crate::domain::{DomainError, Household, HouseholdEvent, HouseholdId, Person, PersonFact, PersonId};
use crate::error::LedgerError;
use crate::metrics;
use crate::projections::Projections;
use crate::request::RequestContext;
use crate::settings::Settings;
use crate::store::writer::{Ticket, Writer};
use crate::store::{AppendRequest, IdempotencyClaim, IdempotencyRecord, Rejection, Store};
use crate::vault::Vault;
use locks::StreamLocks;
use source::{Folded, Source, StoreSource};

/// How often a command is re-run when another writer moved the stream first (without If-Match).
const CONFLICT_RETRIES: usize = 5;

/// A command as the door parsed it.
#[derive(Clone, Debug)]
pub enum Command {
    /// `POST /v1/persons/{person_id}/events`.
    Person { person_id: PersonId, input: PersonInput },
    /// `POST /v1/households/{household_id}/events`.
    Household {
        household_id: HouseholdId,
        event: HouseholdEvent,
    },
}

impl Command {
    /// Whether the command starts its stream (a person's registration), so that its stream is
    /// almost always empty. Such a command is decided first against an empty stream without
    /// reading it: the append expects sequence 0 and checks it under the log head lock, so if
    /// the stream does exist nothing is written, and the command is decided again on what it
    /// holds. The answer is the same as after a read; a new stream, by far the usual case,
    /// costs one statement less.
    fn creates_stream(&self) -> bool {
        matches!(self, Command::Person { input, .. } if matches!(input.event.fact, PersonFact::Registered(_)))
    }

    fn stream(&self) -> (&'static str, &str) {
        match self {
            Command::Person { person_id, .. } => (Person::TYPE, person_id.as_str()),
            Command::Household { household_id, .. } => (Household::TYPE, household_id.as_str()),
        }
    }
}

/// The service that records events.
pub struct Commands {
    pub(crate) store: Store,
    writer: Writer,
    pub(crate) clock: Arc<dyn Clock>,
    vault: Arc<Vault>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) locks: StreamLocks,
    /// The store as the API's commands read it (with this process's stream and card locks).
    source: Arc<dyn Source>,
    projections: Arc<Projections>,
}

impl Commands {
    pub fn new(
        store: Store,
        writer: Writer,
        clock: Arc<dyn Clock>,
        vault: Arc<Vault>,
        settings: Arc<Settings>,
        projections: Arc<Projections>,
    ) -> Self {
        let locks = StreamLocks::default();
        let source = Arc::new(StoreSource {
            store: store.clone(),
            locks: locks.clone(),
            cards: Arc::default(),
        });
        Self {
            store,
            writer,
            clock,
            vault,
            settings,
            locks,
            source,
            projections,
        }
    }

    /// Records a command of a principal.
    pub async fn execute(&self, command: &Command, ctx: &RequestContext) -> Result<Recorded, LedgerError> {
        self.run(command, ctx, false).await
    }

    /// Records an event the ledger decides on its own account (actor `system`): the
    /// 75th-birthday job.
    pub async fn execute_system(&self, command: &Command, ctx: &RequestContext) -> Result<Recorded, LedgerError> {
        self.run(command, ctx, true).await
    }

    /// The command cycle: serialise on the stream, then load, fold, check If-Match, decide,
    /// add what the decision causes, and append all of it atomically expecting the sequences
    /// read. A used Idempotency-Key is found by the append itself (atomically, under the log
    /// lock) or, for a retry that the history now refuses, by `or_replay`: no look-up up front.
    async fn run(&self, command: &Command, ctx: &RequestContext, system: bool) -> Result<Recorded, LedgerError> {
        let (stream, id) = command.stream();
        let _serial = self.locks.lock(format!("{stream}/{id}")).await;
        // The write's access record commits with its events where it can.
        let rides = ctx.access.is_some() && self.writer.rides();
        // A registration is first decided against an empty stream without reading it (see
        // `creates_stream`); every later attempt reads.
        let mut guess = ctx.if_match.is_none() && command.creates_stream();
        let mut attempts = 0;
        while attempts < CONFLICT_RETRIES {
            let guessed = std::mem::take(&mut guess);
            if !guessed {
                attempts += 1;
            }
            let ticket = self.writer.ticket();
            let (expected, decision) = match command {
                Command::Person { person_id, input } => {
                    let folded = if guessed {
                        Folded::default()
                    } else {
                        self.source.person(person_id).await?
                    };
                    let expected = folded.sequence;
                    if let Err(e) = check_if_match(ctx, expected) {
                        return self.or_replay(e, ctx).await;
                    }
                    let decided = self
                        .decide_person(&self.source, person_id, folded, input, ctx, system)
                        .await;
                    (expected, decided.map(|(d, _)| d))
                }
                Command::Household { household_id, event } => {
                    let folded = self.source.household(household_id).await?;
                    let expected = folded.sequence;
                    if let Err(e) = check_if_match(ctx, expected) {
                        return self.or_replay(e, ctx).await;
                    }
                    let decided = self
                        .decide_household(&self.source, household_id, folded, event, ctx)
                        .await;
                    (expected, decided.map(|(d, _)| d))
                }
            };
            let decision = match decision {
                Ok(d) => d,
                // Refused against the guess: the answer is the stream's, so read it.
                Err(LedgerError::Rule(_) | LedgerError::Input(_)) if guessed => {
                    metrics::global().registrations_unread_read_again.inc();
                    continue;
                }
                Err(e @ (LedgerError::Rule(_) | LedgerError::Input(_))) => return self.or_replay(e, ctx).await,
                Err(e) => return Err(e),
            };
            let caused = !decision.follow.also.is_empty();
            let rider = match (&ctx.access, rides) {
                (Some(record), true) => {
                    // The stream's person's flag comes from its own history, this write included.
                    let own = decision.restricted.map(|r| (id.to_owned(), r));
                    let consequences = decision
                        .follow
                        .also
                        .iter()
                        .filter(|s| s.aggregate_type == "person")
                        .map(|s| s.aggregate_id.clone());
                    Some(ride::rider(self.store.db(), record.clone(), consequences, own).await?)
                }
                _ => None,
            };
            let request = AppendRequest {
                aggregate_type: stream.into(),
                aggregate_id: id.into(),
                expected_sequence: expected,
                events: decision.events,
                also: decision.follow.also,
                vault: decision.vault,
                idempotency: ctx.idempotency_key.clone().map(|key| IdempotencyClaim {
                    key,
                    fingerprint: ctx.fingerprint.clone().unwrap_or_default(),
                }),
                cards: decision.follow.cards,
                rider,
            };
            // The household and card locks are held until the append is answered.
            let _held = (decision.follow.guards, decision.follow.card_guard);
            let submitted = self.submit(ticket, request, ctx, caused).await?;
            if guessed {
                let m = metrics::global();
                match submitted {
                    Some(_) => m.registrations_unread_answered.inc(),
                    None => m.registrations_unread_read_again.inc(),
                }
            }
            if let Some(r) = submitted {
                tracing::info!(
                    stream,
                    id,
                    sequence = r.sequence,
                    position = r.position,
                    consequences = r.consequences.len(),
                    replayed = r.replayed,
                    "event recorded"
                );
                return Ok(r);
            }
        }
        Err(LedgerError::ConflictPersisted)
    }

    /// Appends requests decided elsewhere (an import batch) all together or not at all.
    pub async fn append_all(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<crate::store::writer::AllOutcome, LedgerError> {
        let outcome = self.writer.append_all(requests).await?;
        if outcome.is_ok() {
            self.projections.notify();
        }
        Ok(outcome)
    }

    /// Submits one append and interprets the outcome; `Ok(None)` means "conflict: run again".
    async fn submit(
        &self,
        ticket: Ticket,
        request: AppendRequest,
        ctx: &RequestContext,
        caused: bool,
    ) -> Result<Option<Recorded>, LedgerError> {
        match self.writer.append(Some(ticket), request).await? {
            Ok(appended) => {
                self.projections.notify();
                let mut recorded = Recorded::new(&appended.events, appended.recorded_at, false)
                    .ok_or_else(|| LedgerError::Internal("an append wrote no event".into()))?;
                recorded.access_recorded = appended.rider_written;
                Ok(Some(recorded))
            }
            Err(Rejection::KeyUsed(rec)) => self.replayed(ctx, rec).await.map(Some),
            Err(Rejection::Conflict { expected, actual }) => {
                if ctx.if_match.is_some() {
                    Err(LedgerError::Conflict { expected, actual })
                } else {
                    Ok(None)
                }
            }
            // A number the ledger chose itself was taken by another process meanwhile: the next
            // attempt reads the log again and chooses the next one.
            Err(Rejection::Unique(_)) if caused => Ok(None),
            Err(Rejection::Unique(constraint)) => Err(LedgerError::Rule(match constraint.as_str() {
                "events_card_number" => DomainError::new(
                    "card_number_in_use",
                    "this card symbol and number belong to another household",
                ),
                "events_branch_number" => DomainError::new("branch_in_use", "this branch number is already issued"),
                _ => DomainError::new("duplicate", "a uniqueness rule of the ledger refused the event"),
            })),
        }
    }

    /// The answer a used Idempotency-Key stands for, rebuilt from the events its request wrote;
    /// a key used with another request is refused.
    async fn replayed(&self, ctx: &RequestContext, rec: IdempotencyRecord) -> Result<Recorded, LedgerError> {
        if Some(&rec.fingerprint) != ctx.fingerprint.as_ref() {
            return Err(LedgerError::Rule(DomainError::new(
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request",
            )));
        }
        let events = self.store.read_range(rec.first_position, rec.last_position).await?;
        Recorded::replayed(&events).ok_or_else(|| {
            LedgerError::Internal(format!(
                "the events of Idempotency-Key record {}..{} are missing",
                rec.first_position, rec.last_position
            ))
        })
    }

    /// A refused command: if its Idempotency-Key already has an answer (this is a retry of a
    /// command that landed), that answer stands; otherwise the refusal.
    async fn or_replay(&self, e: LedgerError, ctx: &RequestContext) -> Result<Recorded, LedgerError> {
        if let Some(key) = &ctx.idempotency_key {
            if let Some(rec) = self.store.idempotency_record(key).await? {
                return self.replayed(ctx, rec).await;
            }
        }
        if matches!(e, LedgerError::Rule(_)) {
            metrics::global().commands_refused.inc();
        }
        Err(e)
    }
}

fn check_if_match(ctx: &RequestContext, last: i64) -> Result<(), LedgerError> {
    match ctx.if_match {
        Some(expected) if expected != last => Err(LedgerError::Conflict { expected, actual: last }),
        _ => Ok(()),
    }
}
