//! The application service: runs commands through the aggregates and the group-commit writer,
//! and answers reads by folding streams on demand.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::domain::input::{parse_household_event, parse_person_event, PersonInput};
use crate::domain::issuance;
use crate::domain::person::{EventStatus, LATE_REPORT_DAYS};
use crate::domain::{
    CardSymbol, CommandError, Directory, DomainError, Household, HouseholdEvent, HouseholdId, HouseholdServices,
    InputError, Person, PersonEvent, PersonFact, PersonId, PersonServices, RecordHouseholdEvent, RecordPersonEvent,
};
use crate::metrics;
use crate::projections::{read, Projections};
use crate::settings::Settings;
use crate::store::writer::{Ticket, Writer};
use crate::store::{
    format_instant, AppendRequest, Appended, IdempotencyClaim, NewEvent, Rejection, Store, StoreError, StoredEvent,
    StreamAppend, VaultEntry,
};
use crate::stream_locks::StreamLocks;
use crate::vault::Vault;

/// How often a command is re-run when another writer moved the stream first (without If-Match).
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("expected sequence {expected}, the stream is at {actual}")]
    Conflict { expected: i64, actual: i64 },
    #[error("other writers kept changing the stream")]
    ConflictPersisted,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lagging(#[from] crate::projections::Lagging),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CommandError> for LedgerError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rule(r) => LedgerError::Rule(r),
            CommandError::Service(s) => LedgerError::Internal(s),
        }
    }
}

/// What a command causes in other streams (see [`Ledger::issuance`]).
#[derive(Default)]
pub struct Follow {
    also: Vec<StreamAppend>,
    guards: Vec<crate::stream_locks::StreamGuard>,
    card_guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// Aggregates whose decisions cause events in other streams.
pub trait Consequences: Aggregate {
    fn consequences<'a>(
        ledger: &'a Ledger,
        stream_id: &'a str,
        after: &'a Self,
        ctx: &'a RequestContext,
    ) -> impl std::future::Future<Output = Result<Follow, LedgerError>> + Send + 'a;
}

impl Consequences for Person {
    fn consequences<'a>(
        ledger: &'a Ledger,
        stream_id: &'a str,
        after: &'a Self,
        ctx: &'a RequestContext,
    ) -> impl std::future::Future<Output = Result<Follow, LedgerError>> + Send + 'a {
        ledger.issuance(stream_id, after, ctx)
    }
}

impl Consequences for Household {
    fn consequences<'a>(
        _: &'a Ledger,
        _: &'a str,
        _: &'a Self,
        _: &'a RequestContext,
    ) -> impl std::future::Future<Output = Result<Follow, LedgerError>> + Send + 'a {
        std::future::ready(Ok(Follow::default()))
    }
}

/// How long a read waits for the projections to reach the position it needs.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a read needs: knowledge as of an instant (None: latest), and at least the effects of
/// the caller's own write at `min_position` (read-your-writes).
#[derive(Clone, Debug, Default)]
pub struct Read {
    pub as_of: Option<DateTime<Utc>>,
    pub min_position: Option<i64>,
}

/// Who asked, for the event metadata (ids only, never personal data).
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub actor: String,
    pub terminal: Option<String>,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request (path and body) the key guards.
    pub fingerprint: Option<String>,
    /// `If-Match`: the stream's last sequence the client saw.
    pub if_match: Option<i64>,
}

/// An accepted (or replayed) command.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub appended: Appended,
    /// Answered from the Idempotency-Key record: nothing new was written.
    pub replayed: bool,
}

pub struct Ledger {
    store: Store,
    writer: Writer,
    clock: Arc<dyn Clock>,
    vault: Arc<Vault>,
    settings: Settings,
    locks: StreamLocks,
    projections: Arc<Projections>,
    /// Serialises card-number issuance in this process (the log's unique index guards the rest).
    card_lock: Arc<tokio::sync::Mutex<()>>,
}

fn corrupt(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Store(StoreError::Corrupt(e.to_string()))
}

/// Folds a stored stream into its aggregate (cqrs-es `apply`, in sequence order).
pub fn fold<A: Aggregate>(events: &[StoredEvent]) -> Result<A, LedgerError> {
    let mut aggregate = A::default();
    for e in events {
        aggregate.apply(A::Event::deserialize(&e.payload).map_err(corrupt)?);
    }
    Ok(aggregate)
}

/// Serialises an event for the log, with the request's context as metadata.
pub fn new_event<E: DomainEvent>(
    event: &E,
    ctx: &RequestContext,
    reported_date: NaiveDate,
) -> Result<NewEvent, LedgerError> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("actor".into(), json!(ctx.actor));
    if let Some(t) = &ctx.terminal {
        metadata.insert("terminal".into(), json!(t));
    }
    metadata.insert("request_id".into(), json!(ctx.request_id));
    if let Some(k) = &ctx.idempotency_key {
        metadata.insert("idempotency_key".into(), json!(k));
    }
    metadata.insert("reported_date".into(), json!(reported_date.to_string()));
    Ok(NewEvent {
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(event).map_err(|e| LedgerError::Internal(e.to_string()))?,
        metadata: Value::Object(metadata),
    })
}

/// Completes a parsed person event with what depends on the stream: the vault entry and
/// commitment of a My Number, and the defaults of a correction's replacement.
pub fn prepare_person_event(
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

/// Household rules that read other streams go through this.
pub struct StoreDirectory {
    pub store: Store,
}

#[async_trait::async_trait]
impl Directory for StoreDirectory {
    async fn person(&self, id: &PersonId) -> Result<Option<Person>, String> {
        let events = self
            .store
            .load_stream("person", id.as_str(), None)
            .await
            .map_err(|e| e.to_string())?;
        if events.is_empty() {
            return Ok(None);
        }
        fold::<Person>(&events).map(Some).map_err(|e| e.to_string())
    }
    async fn card_holder(
        &self,
        symbol: &crate::domain::CardSymbol,
        number: &crate::domain::CardNumber,
    ) -> Result<Option<HouseholdId>, String> {
        let holder = self
            .store
            .card_holder(symbol.as_str(), number.as_str())
            .await
            .map_err(|e| e.to_string())?;
        Ok(holder.and_then(|h| HouseholdId::parse(&h).ok()))
    }
}

/// Runs a command through an aggregate (applying what it emits) and serialises the events for
/// the log; the inner error is the aggregate's refusal.
pub async fn decide<A>(
    aggregate: &mut A,
    command: A::Command,
    services: &A::Services,
    ctx: &RequestContext,
    reported: NaiveDate,
) -> Result<Result<Vec<NewEvent>, CommandError>, LedgerError>
where
    A: Aggregate<Error = CommandError>,
{
    let sink = EventSink::default();
    if let Err(e) = aggregate.handle(command, services, &sink).await {
        return Ok(Err(e));
    }
    let events = sink.collect().await;
    events
        .iter()
        .map(|e| new_event(e, ctx, reported))
        .collect::<Result<Vec<_>, _>>()
        .map(Ok)
}

/// The household events that give `person_id` (insured there from `first_day`) a branch number
/// in `household`, and the household its card when it has none (`card`, from the sequence);
/// run through the household's own rules and applied to it.
pub async fn issue_events(
    household: &mut Household,
    household_id: &HouseholdId,
    person_id: &PersonId,
    first_day: NaiveDate,
    card: Option<(CardSymbol, crate::domain::CardNumber)>,
    services: &HouseholdServices,
    ctx: &RequestContext,
) -> Result<Vec<NewEvent>, LedgerError> {
    let issued = issuance::issue(household, person_id, first_day, services.today, || {
        card.ok_or_else(|| DomainError::new("card_missing", "no card number to issue"))
    })?;
    let mut events = Vec::with_capacity(issued.len());
    for event in issued {
        let reported = event.reported_date;
        let command = RecordHouseholdEvent {
            household_id: household_id.clone(),
            event,
            system: true,
        };
        events.extend(decide(household, command, services, ctx, reported).await??);
    }
    Ok(events)
}

// ---- views -------------------------------------------------------------------------------

#[derive(Debug, Serialize, PartialEq)]
pub struct CardView {
    pub insurer_number: String,
    pub symbol: String,
    pub number: String,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PersonView {
    pub person_id: String,
    pub name: String,
    pub name_kana: String,
    pub real_name: Option<String>,
    pub real_name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub sex_on_back: bool,
    pub household_id: Option<String>,
    pub insured: bool,
    pub qualified_on: Option<NaiveDate>,
    pub disqualified_on: Option<NaiveDate>,
    pub applied_from: Option<NaiveDate>,
    /// Inclusive last covered day (適用終了年月日).
    pub applied_to: Option<NaiveDate>,
    pub loss_reason: Option<String>,
    pub loss_code: Option<String>,
    pub card: Option<CardView>,
    /// The coming 75th-birthday loss of a person insured today (derived, not yet reached).
    pub late_elderly_on: Option<NaiveDate>,
    pub deemed_head: bool,
    pub disclosure_restricted: bool,
    pub deceased_on: Option<NaiveDate>,
    pub last_sequence: u64,
    pub today: NaiveDate,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct IntervalCard {
    pub symbol: String,
    pub number: String,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct IntervalView {
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
    pub acquisition_reason: String,
    pub loss_reason: Option<String>,
    pub loss_code: Option<String>,
    pub qualified_on: NaiveDate,
    pub disqualified_on: Option<NaiveDate>,
    /// Inclusive last covered day of this interval (`to` − 1).
    pub applied_to: Option<NaiveDate>,
    pub household_id: Option<String>,
    pub card: Option<IntervalCard>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EventView {
    pub sequence: i64,
    pub position: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub effective_date: Option<NaiveDate>,
    pub reported_date: Option<NaiveDate>,
    pub recorded_at: String,
    pub late_report: bool,
    pub status: EventStatus,
    pub body: Value,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TimelineView {
    pub person_id: String,
    pub intervals: Vec<IntervalView>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EligibilityView {
    pub person_id: String,
    pub on: NaiveDate,
    pub insured: bool,
    pub interval: Option<IntervalView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HouseholdCard {
    pub symbol: String,
    pub number: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MemberView {
    pub person_id: String,
    pub insured: bool,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HouseholdView {
    pub household_id: String,
    /// Resident-register head (住基上の世帯主) today.
    pub head_person_id: Option<String>,
    /// NHI head (国保上の世帯主): the designated insured member, else the register head.
    pub nhi_head_person_id: Option<String>,
    /// Whether the register head is a deemed head (擬制世帯主) today.
    pub deemed_head: bool,
    pub card: Option<HouseholdCard>,
    pub members: Vec<MemberView>,
    pub today: NaiveDate,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct BranchView {
    pub branch: String,
    pub person_id: String,
    pub issued_at_position: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct CardBranchesView {
    pub symbol: String,
    pub number: String,
    pub household_id: String,
    pub branches: Vec<BranchView>,
}

/// `GET /v1/feed`.
#[derive(Debug, Serialize)]
pub struct FeedPage {
    pub records: Vec<Value>,
    pub next_after: i64,
    pub head: i64,
}

/// A feed page with its records as stored JSON text.
#[derive(Debug)]
pub struct FeedText {
    pub records: Vec<String>,
    pub next_after: i64,
    pub head: i64,
}

impl FeedText {
    /// `{"records": [...], "next_after", "head"}`, the records spliced in as stored.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.records.iter().map(|r| r.len() + 1).sum::<usize>() + 64);
        out.push_str("{\"records\":[");
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r);
        }
        out.push_str(&format!(
            "],\"next_after\":{},\"head\":{}}}",
            self.next_after, self.head
        ));
        out
    }
}

/// What one run of the 75th-birthday job did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgeOutSummary {
    pub recorded: usize,
    /// Recorded before (by an earlier or concurrent run).
    pub already: usize,
    /// Not insured on the eve of the birthday (moved out, died, excluded, never insured).
    pub not_insured: usize,
    /// Candidates whose (corrected) 75th birthday is still to come.
    pub not_yet: usize,
}

/// A person's stream as known at an instant, folded.
struct Known {
    person: Person,
    derived: crate::domain::history::Derived,
}

impl Ledger {
    pub fn new(store: Store, writer: Writer, clock: Arc<dyn Clock>, vault: Arc<Vault>, settings: Settings) -> Self {
        Self {
            projections: Arc::new(Projections::new(store.clone()).with_insurer_number(&settings.insurer_number)),
            store,
            writer,
            clock,
            vault,
            settings,
            locks: StreamLocks::default(),
            card_lock: Arc::default(),
        }
    }

    /// The same ledger with the audit chainer among its projections, signing checkpoints with
    /// `signer` under the deployment's log origin.
    pub fn with_audit(mut self, signer: Arc<crate::audit::keys::Signer>) -> Self {
        let chainer = crate::audit::chainer::Chainer::new(&self.settings.log_origin, signer);
        self.projections = Arc::new(
            Projections::new(self.store.clone())
                .with_insurer_number(&self.settings.insurer_number)
                .with_audit(chainer),
        );
        self
    }

    /// Reads of the audit trail.
    pub fn audit(&self) -> crate::audit::Audit {
        crate::audit::Audit::new(&self.store)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn projections(&self) -> &Arc<Projections> {
        &self.projections
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn replay(&self, ctx: &RequestContext) -> Result<Option<Recorded>, LedgerError> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        match self.store.idempotency_record(key).await? {
            None => Ok(None),
            Some(rec) => self.replayed(ctx, rec).map(Some),
        }
    }

    fn replayed(&self, ctx: &RequestContext, rec: crate::store::IdempotencyRecord) -> Result<Recorded, LedgerError> {
        if Some(&rec.fingerprint) == ctx.fingerprint.as_ref() {
            Ok(Recorded {
                appended: rec.response,
                replayed: true,
            })
        } else {
            Err(LedgerError::Rule(DomainError::new(
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request",
            )))
        }
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
                Ok(Some(Recorded {
                    appended,
                    replayed: false,
                }))
            }
            Err(Rejection::KeyUsed(rec)) => self.replayed(ctx, rec).map(Some),
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

    /// A refused command: if its Idempotency-Key already has an answer (this is a retry of a
    /// command that landed), that answer stands; otherwise the refusal.
    async fn or_replay(&self, e: LedgerError, ctx: &RequestContext) -> Result<Recorded, LedgerError> {
        if let Some(r) = self.replay(ctx).await? {
            return Ok(r);
        }
        if matches!(e, LedgerError::Rule(_)) {
            metrics::global().commands_refused.inc();
        }
        Err(e)
    }

    fn check_if_match(ctx: &RequestContext, last: u64) -> Result<(), LedgerError> {
        match ctx.if_match {
            Some(expected) if expected != last as i64 => Err(LedgerError::Conflict {
                expected,
                actual: last as i64,
            }),
            _ => Ok(()),
        }
    }

    /// `POST /v1/persons/{id}/events`.
    pub async fn record_person_event(
        &self,
        person_id: &PersonId,
        body: &Value,
        ctx: &RequestContext,
    ) -> Result<Recorded, LedgerError> {
        let today = self.clock.today();
        let input = parse_person_event(body, today)?;
        self.run_person_command(person_id, input, ctx, false).await
    }

    /// Runs a parsed person command (API, import or the ledger's own jobs).
    pub async fn run_person_command(
        &self,
        person_id: &PersonId,
        input: PersonInput,
        ctx: &RequestContext,
        system: bool,
    ) -> Result<Recorded, LedgerError> {
        let services = PersonServices {
            today: self.clock.today(),
        };
        self.run_command::<Person>(person_id.as_str(), ctx, &services, |person| {
            let (event, vault) = prepare_person_event(&self.vault, person_id, person, &input);
            let reported = event.reported_date;
            (RecordPersonEvent { event, system }, vault, reported)
        })
        .await
    }

    /// `POST /v1/households/{id}/events`.
    pub async fn record_household_event(
        &self,
        household_id: &HouseholdId,
        body: &Value,
        ctx: &RequestContext,
    ) -> Result<Recorded, LedgerError> {
        let today = self.clock.today();
        let event = parse_household_event(body, today)?;
        self.run_household_command(household_id, event, ctx, false).await
    }

    pub async fn run_household_command(
        &self,
        household_id: &HouseholdId,
        event: HouseholdEvent,
        ctx: &RequestContext,
        system: bool,
    ) -> Result<Recorded, LedgerError> {
        let services = HouseholdServices {
            today: self.clock.today(),
            directory: Arc::new(StoreDirectory {
                store: self.store.clone(),
            }),
        };
        self.run_command::<Household>(household_id.as_str(), ctx, &services, |_| {
            let command = RecordHouseholdEvent {
                household_id: household_id.clone(),
                event: event.clone(),
                system,
            };
            (command, Vec::new(), event.reported_date)
        })
        .await
    }

    /// The command cycle shared by every stream: serialise on the stream, answer a used
    /// Idempotency-Key, then load, fold, check If-Match, decide, add what the decision causes
    /// in other streams, and append all of it atomically expecting the sequences read — again
    /// from the top when another process moved a stream first.
    async fn run_command<A>(
        &self,
        stream_id: &str,
        ctx: &RequestContext,
        services: &A::Services,
        command: impl Fn(&A) -> (A::Command, Vec<VaultEntry>, NaiveDate) + Send + Sync,
    ) -> Result<Recorded, LedgerError>
    where
        A: Aggregate<Error = CommandError> + Consequences,
        A::Command: Send,
    {
        let _serial = self.locks.lock(format!("{}/{stream_id}", A::TYPE)).await;
        // A used Idempotency-Key is found by the append itself (atomically, under the log lock)
        // or, for a retry that the history now refuses, by `or_replay`: no look-up up front.
        for _ in 0..CONFLICT_RETRIES {
            let ticket = self.writer.ticket();
            let stored = self.store.load_stream(A::TYPE, stream_id, None).await?;
            let mut aggregate = fold::<A>(&stored)?;
            if let Err(e) = Self::check_if_match(ctx, stored.len() as u64) {
                return self.or_replay(e, ctx).await;
            }
            let (cmd, vault, reported) = command(&aggregate);
            let events = match decide(&mut aggregate, cmd, services, ctx, reported).await? {
                Ok(events) => events,
                Err(refusal) => return self.or_replay(refusal.into(), ctx).await,
            };
            let follow = match A::consequences(self, stream_id, &aggregate, ctx).await {
                Ok(f) => f,
                Err(e @ LedgerError::Rule(_)) => return self.or_replay(e, ctx).await,
                Err(e) => return Err(e),
            };
            let request = AppendRequest {
                aggregate_type: A::TYPE.into(),
                aggregate_id: stream_id.into(),
                expected_sequence: stored.len() as i64,
                events,
                also: follow.also,
                vault,
                idempotency: ctx.idempotency_key.clone().map(|key| IdempotencyClaim {
                    key,
                    fingerprint: ctx.fingerprint.clone().unwrap_or_default(),
                }),
            };
            let caused = !request.also.is_empty();
            if let Some(r) = self.submit(ticket, request, ctx, caused).await? {
                tracing::info!(
                    stream = A::TYPE,
                    id = stream_id,
                    sequence = r.appended.last_sequence,
                    position = r.appended.last_position,
                    "event recorded"
                );
                return Ok(r);
            }
        }
        Err(LedgerError::ConflictPersisted)
    }

    /// The card and branch numbers a person's new history calls for (domain.md §5), as events
    /// of the households concerned, to be appended with the person's event. Holds those
    /// households' stream locks (and the card-number lock when a card is issued) until the
    /// append is answered, so concurrent joins in this process queue instead of colliding.
    async fn issuance(&self, person_id: &str, person: &Person, ctx: &RequestContext) -> Result<Follow, LedgerError> {
        let derived = person
            .derive()
            .map_err(|e| LedgerError::Internal(format!("a decided history does not derive: {e}")))?;
        let pid = PersonId::parse(person_id).map_err(|e| LedgerError::Internal(e.message))?;
        let mut wanted = issuance::insured_households(&derived);
        if wanted.is_empty() {
            return Ok(Follow::default());
        }
        // One lock order for everyone: by household id.
        wanted.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let today = self.clock.today();
        let system = RequestContext {
            actor: "system".into(),
            terminal: None,
            request_id: ctx.request_id.clone(),
            ..Default::default()
        };
        let services = HouseholdServices {
            today,
            directory: Arc::new(StoreDirectory {
                store: self.store.clone(),
            }),
        };
        let mut follow = Follow::default();
        let mut next_card: Option<u64> = None;
        for (household_id, first_day) in wanted {
            let guard = self.locks.lock(format!("{}/{household_id}", Household::TYPE)).await;
            let stored = self
                .store
                .load_stream(Household::TYPE, household_id.as_str(), None)
                .await?;
            let mut household = fold::<Household>(&stored)?;
            if household.card().is_some() && household.branch_of(&pid).is_some() {
                continue;
            }
            let needs_card = household.card().is_none();
            if needs_card && follow.card_guard.is_none() {
                follow.card_guard = Some(self.card_lock.clone().lock_owned().await);
            }
            let mut attempts = 0;
            let events = loop {
                let mut card = None;
                if needs_card {
                    let n = match next_card {
                        Some(n) => n,
                        None => {
                            self.store
                                .max_card_number(&self.settings.card_symbol, self.settings.card_number_width)
                                .await?
                                + 1
                        }
                    };
                    next_card = Some(n + 1);
                    let symbol =
                        CardSymbol::parse(&self.settings.card_symbol).map_err(|e| LedgerError::Internal(e.message))?;
                    card = Some((symbol, issuance::card_number(n, self.settings.card_number_width)?));
                }
                match issue_events(&mut household, &household_id, &pid, first_day, card, &services, &system).await {
                    // Another process took the number this one chose from the sequence between
                    // reading the sequence and checking the number: choose again from the log.
                    Err(LedgerError::Rule(e))
                        if needs_card && e.code == "card_number_in_use" && attempts < CONFLICT_RETRIES =>
                    {
                        attempts += 1;
                        next_card = None;
                        household = fold::<Household>(&stored)?;
                    }
                    other => break other?,
                }
            };
            follow.also.push(StreamAppend {
                aggregate_type: Household::TYPE.into(),
                aggregate_id: household_id.to_string(),
                expected_sequence: stored.len() as i64,
                events,
            });
            follow.guards.push(guard);
        }
        Ok(follow)
    }

    /// The 75th-birthday job: records `late_elderly_age_reached` (actor `system`) for every
    /// person insured up to a 75th birthday that falls on or before `through`. Idempotent:
    /// a person is recorded once, whatever runs concurrently or is repeated.
    pub async fn age_out(&self, through: NaiveDate) -> Result<AgeOutSummary, LedgerError> {
        let today = self.clock.today();
        if through > today {
            return Err(LedgerError::Rule(DomainError::new(
                "future_date",
                format!("age-out through {through} is after today ({today})"),
            )));
        }
        // A 75th birthday on or before `through` means a birth on or before `through` − 75
        // years (29 February births only come later); the day of margin covers month clamping.
        let bound = through
            .checked_sub_months(chrono::Months::new(75 * 12))
            .and_then(|d| d.succ_opt())
            .ok_or_else(|| LedgerError::Internal("date out of range".into()))?;
        let mut summary = AgeOutSummary::default();
        for id in self.store.age_out_candidates(bound).await? {
            let person_id = PersonId::parse(&id).map_err(|e| corrupt(format!("stored person id: {e}")))?;
            let k = self.known(&person_id, None).await?;
            let Some(reg) = k.person.registration() else { continue };
            let birthday = crate::domain::history::seventy_fifth_birthday(reg.birth_date);
            if birthday > through {
                summary.not_yet += 1;
                continue;
            }
            let eve = birthday.pred_opt().expect("date after the minimum");
            if !k.derived.insured_on(eve) {
                summary.not_insured += 1;
                continue;
            }
            let key = format!("age-out:{person_id}:{birthday}");
            let ctx = RequestContext {
                actor: "system".into(),
                request_id: format!("age-out:{through}"),
                fingerprint: Some(key.clone()),
                idempotency_key: Some(key),
                ..Default::default()
            };
            let input = PersonInput {
                // Reported by the ledger on the day it became true: a catch-up run is no late report.
                event: PersonEvent {
                    effective_date: birthday,
                    reported_date: birthday,
                    fact: PersonFact::LateElderlyAgeReached,
                },
                my_number: None,
                replacement_reported_date_missing: false,
            };
            match self.run_person_command(&person_id, input, &ctx, true).await {
                Ok(r) if r.replayed => summary.already += 1,
                Ok(_) => summary.recorded += 1,
                Err(LedgerError::Rule(e)) if e.code == "age_reached_already_recorded" => summary.already += 1,
                Err(e) => return Err(e),
            }
        }
        tracing::info!(%through, recorded = summary.recorded, already = summary.already, not_insured = summary.not_insured, "age-out done");
        Ok(summary)
    }

    // ---- reads ---------------------------------------------------------------------------

    async fn known(&self, person_id: &PersonId, as_of: Option<DateTime<Utc>>) -> Result<Known, LedgerError> {
        let events = self.store.load_stream(Person::TYPE, person_id.as_str(), as_of).await?;
        if events.is_empty() {
            return Err(LedgerError::NotFound {
                code: "person_not_found",
                message: format!(
                    "no person {person_id}{}",
                    if as_of.is_some() { " as of that instant" } else { "" }
                ),
            });
        }
        let person = fold::<Person>(&events)?;
        // Stored histories were validated on the way in; a failure here means the log no longer
        // satisfies today's rules (e.g. after a rule change) and is an internal error.
        let derived = person
            .derive()
            .map_err(|e| LedgerError::Internal(format!("stored history does not derive: {e}")))?;
        Ok(Known { person, derived })
    }

    /// The log position a read answers at (at most the projections' committed position), after
    /// waiting (briefly) for the projections to reach what the caller needs: the position it last wrote (read-your-writes) and, for an
    /// as-of read, the last position recorded by that instant (so the answer is complete).
    async fn read_at(&self, r: &Read) -> Result<i64, LedgerError> {
        let mut needed = r.min_position.unwrap_or(0);
        let at = match r.as_of {
            Some(t) => {
                let p = self.store.position_at(t).await?;
                needed = needed.max(p);
                p
            }
            None => i64::MAX,
        };
        if needed > 0 {
            self.projections.wait_for(needed, READ_WAIT).await?;
        }
        // Never beyond what every projection has committed: rows valid at such a position do
        // not change any more, so the several queries of one read see one consistent state.
        Ok(at.min(self.projections.committed().await?))
    }

    fn person_not_found(person_id: &PersonId, r: &Read) -> LedgerError {
        LedgerError::NotFound {
            code: "person_not_found",
            message: format!(
                "no person {person_id}{}",
                if r.as_of.is_some() { " as of that instant" } else { "" }
            ),
        }
    }

    /// The card (and the person's branch under it) of a household, as known at `at`.
    async fn card_at(
        &self,
        household_id: &str,
        person_id: &str,
        at: i64,
    ) -> Result<Option<(read::CardRow, Option<String>)>, LedgerError> {
        Ok(read::card_and_branch(self.projections.db(), household_id, person_id, at).await?)
    }

    /// `GET /v1/households/{id}`: members and heads today (Asia/Tokyo), as known at `as_of`.
    pub async fn household_view(&self, household_id: &HouseholdId, r: &Read) -> Result<HouseholdView, LedgerError> {
        let at = self.read_at(r).await?;
        self.household_view_at(household_id, at).await
    }

    async fn household_view_at(&self, household_id: &HouseholdId, at: i64) -> Result<HouseholdView, LedgerError> {
        let db = self.projections.db();
        let today = self.clock.today();
        let id = household_id.as_str();
        let facts = read::household_facts(db, id, at).await?;
        let card = read::card_of(db, id, at).await?;
        if facts.is_empty() && card.is_none() && read::members(db, id, None, at).await?.is_empty() {
            return Err(LedgerError::NotFound {
                code: "household_not_found",
                message: format!("no household {household_id}"),
            });
        }
        let mut members = Vec::new();
        for person_id in read::members(db, id, Some(today), at).await? {
            let insured = read::periods(db, true, &person_id, at)
                .await?
                .iter()
                .any(|i| i.contains(today));
            members.push(MemberView {
                branch: read::branch_of(db, id, &person_id, at).await?,
                person_id,
                insured,
            });
        }
        let head = read::in_force_on(&facts, &["head"], today).and_then(|f| f.person_id.clone());
        let designated = read::in_force_on(&facts, &["designation", "revocation"], today)
            .filter(|f| f.kind == "designation")
            .and_then(|f| f.person_id.clone());
        let insured = |p: &str| members.iter().any(|m| m.person_id == p && m.insured);
        // 擬制世帯主: the register head is not insured while another member is (domain.md §1).
        let deemed_head = head
            .as_deref()
            .is_some_and(|h| !insured(h) && members.iter().any(|m| m.insured && m.person_id != h));
        Ok(HouseholdView {
            household_id: household_id.to_string(),
            nhi_head_person_id: designated.or_else(|| head.clone()),
            head_person_id: head,
            deemed_head,
            card: card.map(|c| HouseholdCard {
                symbol: c.symbol,
                number: c.number,
            }),
            members,
            today,
        })
    }

    /// `GET /v1/cards/{symbol}/{number}/branches`: every branch number issued under a card.
    pub async fn card_branches(&self, symbol: &str, number: &str, r: &Read) -> Result<CardBranchesView, LedgerError> {
        let at = self.read_at(r).await?;
        let db = self.projections.db();
        let card = read::card_by_number(db, symbol, number)
            .await?
            .ok_or_else(|| LedgerError::NotFound {
                code: "card_not_found",
                message: format!("no card {symbol}-{number}"),
            })?;
        let branches = read::branches(db, symbol, number, at)
            .await?
            .into_iter()
            .map(|b| BranchView {
                branch: b.branch,
                person_id: b.person_id,
                issued_at_position: b.position,
            })
            .collect();
        Ok(CardBranchesView {
            symbol: symbol.to_owned(),
            number: number.to_owned(),
            household_id: card.household_id,
            branches,
        })
    }

    /// `GET /v1/persons/{id}`: the person as of today (Asia/Tokyo), as known at `as_of`.
    pub async fn person(&self, person_id: &PersonId, r: &Read) -> Result<PersonView, LedgerError> {
        let today = self.clock.today();
        let at = self.read_at(r).await?;
        let db = self.projections.db();
        let id = person_id.as_str();
        let row = read::person(db, id, at)
            .await?
            .ok_or_else(|| Self::person_not_found(person_id, r))?;
        let runs = read::periods(db, false, id, at).await?;
        let current = runs.iter().find(|r| r.contains(today));
        // Not insured today: show the last period, so staff see since when and why it ended.
        let shown = current.or_else(|| runs.iter().rev().find(|r| r.from <= today));
        // A loss only derived from age and not reached yet is no end of the current period:
        // it is announced when the birthday arrives (feed.md), and shown apart here.
        let pending_age_loss = current.filter(|r| r.loss_by_age).and_then(|r| r.to);
        let ended = shown.filter(|_| pending_age_loss.is_none());
        let memberships = read::memberships(db, id, at).await?;
        let household_id = memberships
            .iter()
            .rev()
            .find(|m| m.from <= today)
            .or(memberships.first())
            .map(|m| m.household_id.clone());
        let mut card = None;
        let mut deemed_head = false;
        if let Some(h) = &household_id {
            if let Some((c, branch)) = self.card_at(h, id, at).await? {
                card = Some(CardView {
                    insurer_number: self.settings.insurer_number.clone(),
                    symbol: c.symbol,
                    number: c.number,
                    branch,
                });
            }
            // Only an uninsured register head can be one; the household's rule decides.
            if current.is_none() {
                let hid = HouseholdId::parse(h).map_err(|e| corrupt(format!("stored household id: {e}")))?;
                match self.household_view_at(&hid, at).await {
                    Ok(v) => deemed_head = v.deemed_head && v.head_person_id.as_deref() == Some(id),
                    Err(LedgerError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(PersonView {
            person_id: person_id.to_string(),
            name: row.name,
            name_kana: row.name_kana,
            real_name: row.real_name,
            real_name_kana: row.real_name_kana,
            birth_date: row.birth_date,
            sex: row.sex,
            sex_on_back: row.sex_on_back,
            household_id,
            insured: current.is_some(),
            qualified_on: shown.map(|r| r.qualified_on),
            disqualified_on: ended.and_then(|r| r.disqualified_on),
            applied_from: shown.map(|r| r.from),
            applied_to: ended.and_then(|r| r.to).and_then(|t| t.pred_opt()),
            loss_reason: ended.and_then(|r| r.loss_reason.clone()),
            loss_code: ended.and_then(|r| r.loss_code.clone()),
            card,
            late_elderly_on: pending_age_loss,
            deemed_head,
            disclosure_restricted: row.disclosure_restricted_from.is_some_and(|d| d <= today),
            deceased_on: row.deceased_on,
            last_sequence: read::last_sequence(db, id, at).await? as u64,
            today,
        })
    }

    async fn interval_views(
        &self,
        person_id: &PersonId,
        intervals: Vec<read::PeriodRow>,
        at: i64,
    ) -> Result<Vec<IntervalView>, LedgerError> {
        let mut cards: HashMap<String, Option<(read::CardRow, Option<String>)>> = HashMap::new();
        let mut out = Vec::with_capacity(intervals.len());
        for i in intervals {
            let mut card = None;
            if let Some(h) = &i.household_id {
                if !cards.contains_key(h) {
                    cards.insert(h.clone(), self.card_at(h, person_id.as_str(), at).await?);
                }
                card = cards[h].as_ref().map(|(c, branch)| IntervalCard {
                    symbol: c.symbol.clone(),
                    number: c.number.clone(),
                    branch: branch.clone(),
                });
            }
            out.push(IntervalView {
                from: i.from,
                to: i.to,
                acquisition_reason: i.acquisition_reason,
                loss_reason: i.loss_reason,
                loss_code: i.loss_code,
                qualified_on: i.qualified_on,
                disqualified_on: i.disqualified_on,
                applied_to: i.to.and_then(|t| t.pred_opt()),
                household_id: i.household_id,
                card,
            });
        }
        Ok(out)
    }

    /// `GET /v1/persons/{id}/timeline`: the intervals from the projection; the events are the
    /// person's stream itself, up to what the projection has applied.
    pub async fn timeline(&self, person_id: &PersonId, r: &Read) -> Result<TimelineView, LedgerError> {
        let at = self.read_at(r).await?;
        let db = self.projections.db();
        if read::person(db, person_id.as_str(), at).await?.is_none() {
            return Err(Self::person_not_found(person_id, r));
        }
        // The log prefix the projection rows describe: never ahead of the intervals.
        let mut stored = self
            .store
            .load_stream(Person::TYPE, person_id.as_str(), r.as_of)
            .await?;
        stored.retain(|e| e.position <= at);
        let person = fold::<Person>(&stored)?;
        let (statuses, _) = person.statuses();
        let events = stored
            .iter()
            .zip(statuses)
            .map(|(e, status)| {
                let date = |f: &str| e.payload.get(f).and_then(Value::as_str).and_then(|s| s.parse::<NaiveDate>().ok());
                let (effective_date, reported_date) = (date("effective_date"), date("reported_date"));
                let late_report = matches!((effective_date, reported_date), (Some(eff), Some(rep)) if (rep - eff).num_days() > LATE_REPORT_DAYS);
                EventView {
                    sequence: e.sequence,
                    position: e.position,
                    event_type: e.event_type.clone(),
                    effective_date,
                    reported_date,
                    recorded_at: format_instant(&e.recorded_at),
                    late_report,
                    status,
                    body: e.payload.clone(),
                }
            })
            .collect();
        let intervals = read::periods(db, true, person_id.as_str(), at).await?;
        Ok(TimelineView {
            person_id: person_id.to_string(),
            intervals: self.interval_views(person_id, intervals, at).await?,
            events,
        })
    }

    /// `GET /v1/persons/{id}/eligibility?on=`.
    pub async fn eligibility(
        &self,
        person_id: &PersonId,
        on: Option<NaiveDate>,
        r: &Read,
    ) -> Result<EligibilityView, LedgerError> {
        let on = on.unwrap_or_else(|| self.clock.today());
        let at = self.read_at(r).await?;
        let db = self.projections.db();
        if read::person(db, person_id.as_str(), at).await?.is_none() {
            return Err(Self::person_not_found(person_id, r));
        }
        let found: Vec<read::PeriodRow> = read::periods(db, true, person_id.as_str(), at)
            .await?
            .into_iter()
            .filter(|i| i.contains(on))
            .collect();
        let interval = self.interval_views(person_id, found, at).await?.pop();
        Ok(EligibilityView {
            person_id: person_id.to_string(),
            on,
            insured: interval.is_some(),
            interval,
        })
    }

    /// `GET /v1/feed`: records after `after`; with `wait`, blocks until there is one (or the
    /// wait ends). Woken by this process's feed commits, and looks again every 200 ms for
    /// commits of other processes.
    pub async fn feed(&self, after: i64, limit: i64, wait: std::time::Duration) -> Result<FeedPage, LedgerError> {
        let page = self.feed_text(after, limit, wait).await?;
        let mut records = page
            .records
            .iter()
            .map(|r| serde_json::from_str::<Value>(r).map_err(corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        if self.settings.feed_my_number {
            self.add_my_numbers(&mut records).await?;
        }
        Ok(FeedPage {
            records,
            next_after: page.next_after,
            head: page.head,
        })
    }

    /// Whether feed pages must be completed per record (`my_number`) rather than served as
    /// stored.
    pub fn feed_needs_values(&self) -> bool {
        self.settings.feed_my_number
    }

    /// The feed page with each record as its stored JSON text, byte for byte (long-polling as
    /// [`feed`](Self::feed) does): what `GET /v1/feed` sends when nothing is added per record.
    pub async fn feed_text(&self, after: i64, limit: i64, wait: std::time::Duration) -> Result<FeedText, LedgerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let db = self.projections.db();
        loop {
            let commit = self.projections.next_commit();
            tokio::pin!(commit);
            commit.as_mut().enable();
            let records = read::feed_records(db, after, limit).await?;
            let now = tokio::time::Instant::now();
            if !records.is_empty() || now >= deadline {
                #[derive(Deserialize)]
                struct Position {
                    position: i64,
                }
                let next_after = match records.last() {
                    Some(r) => serde_json::from_str::<Position>(r).map_err(corrupt)?.position,
                    None => after,
                };
                return Ok(FeedText {
                    records,
                    next_after,
                    head: read::feed_head(db).await?,
                });
            }
            let pause = (deadline - now).min(std::time::Duration::from_millis(200));
            tokio::select! {
                _ = commit => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Adds `my_number` to individual records whose person has one in the vault (the
    /// registration in force as of the record's cause names its commitment).
    async fn add_my_numbers(&self, records: &mut [Value]) -> Result<(), LedgerError> {
        for r in records.iter_mut().filter(|r| r["kind"] == "individual") {
            let (Some(person_id), Some(cause)) = (r["person_id"].as_str(), r["cause_position"].as_i64()) else {
                continue;
            };
            let mut stream = self.store.load_stream(Person::TYPE, person_id, None).await?;
            stream.retain(|e| e.position <= cause);
            let commitment = fold::<Person>(&stream)?
                .registration()
                .and_then(|reg| reg.my_number_commitment);
            let Some(commitment) = commitment else { continue };
            let Some(entry) = self.store.vault_entry(&commitment).await? else {
                continue;
            };
            let number = self
                .vault
                .open(&entry)
                .map_err(|e| LedgerError::Internal(format!("vault: {e}")))?;
            r["my_number"] = Value::String(number.expose().to_owned());
        }
        Ok(())
    }
}
