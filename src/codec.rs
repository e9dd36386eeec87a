//! Domain events to and from the log's rows: folding a stored stream into its aggregate, and
//! serialising a decided event with its metadata.

use chrono::NaiveDate;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::{json, Value};

use crate::request::RequestContext;
use crate::store::{NewEvent, StoreError, StoredEvent};

/// Folds a stored stream into its aggregate (cqrs-es `apply`, in sequence order).
pub fn fold<A: Aggregate>(events: &[StoredEvent]) -> Result<A, StoreError> {
    let mut aggregate = A::default();
    for e in events {
        aggregate.apply(decode::<A>(e)?);
    }
    Ok(aggregate)
}

/// One stored event as the aggregate's event type.
pub fn decode<A: Aggregate>(e: &StoredEvent) -> Result<A::Event, StoreError> {
    e.payload
        .decode()
        .map_err(|err| StoreError::Corrupt(format!("position {}: {err}", e.position)))
}

/// Who recorded an event and why it is in the log: the metadata stored with it (ids only,
/// never personal data).
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// The request's own event, recorded by its principal.
    Request(&'a RequestContext),
    /// Recorded by the ledger itself as a consequence of the request's event, in the same
    /// append (card and branch numbers, confirmations brought in line): actor `system`.
    Consequence(&'a RequestContext),
    /// Recorded by the ledger itself on its own account (the 75th-birthday job).
    System(&'a RequestContext),
}

/// Serialises an event for the log, with its metadata: actor, terminal, request id,
/// Idempotency-Key and reported date.
pub fn new_event<E: DomainEvent>(
    event: &E,
    origin: Origin<'_>,
    reported_date: NaiveDate,
) -> Result<NewEvent, StoreError> {
    let mut metadata = serde_json::Map::new();
    let ctx = match origin {
        Origin::Request(ctx) => {
            metadata.insert("actor".into(), json!(ctx.actor));
            if let Some(t) = &ctx.terminal {
                metadata.insert("terminal".into(), json!(t));
            }
            ctx
        }
        Origin::Consequence(ctx) | Origin::System(ctx) => {
            metadata.insert("actor".into(), json!("system"));
            ctx
        }
    };
    metadata.insert("request_id".into(), json!(ctx.request_id));
    if let (Origin::Request(_) | Origin::System(_), Some(k)) = (origin, &ctx.idempotency_key) {
        metadata.insert("idempotency_key".into(), json!(k));
    }
    if matches!(origin, Origin::Consequence(_)) {
        metadata.insert("consequence".into(), json!(true));
    }
    metadata.insert("reported_date".into(), json!(reported_date.to_string()));
    Ok(NewEvent {
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(event).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        metadata: Value::Object(metadata),
    })
}

/// Whether the ledger recorded this event as the consequence of another one in the same
/// append (card and branch numbers of a join, confirmations brought in line with a corrected
/// birth date): it is no cause of its own.
pub fn is_consequence(e: &StoredEvent) -> Result<bool, StoreError> {
    let flags = flags(e)?;
    Ok(flags.consequence == Some(true)
        // Card and branch numbers recorded before the flag existed.
        || (e.aggregate_type == "household"
            && matches!(e.event_type.as_str(), "card_number_assigned" | "branch_number_issued")
            && flags.actor.as_deref() == Some("system")))
}

/// What an event's metadata says of who recorded it and why.
pub fn flags(e: &StoredEvent) -> Result<Flags<'_>, StoreError> {
    e.metadata
        .decode()
        .map_err(|err| StoreError::Corrupt(format!("position {}: metadata: {err}", e.position)))
}

/// The fields of an event's metadata that readers ask about (the others are skipped unread).
#[derive(Debug, serde::Deserialize)]
pub struct Flags<'a> {
    /// Who recorded it: a staff id, or `system`.
    #[serde(borrow)]
    pub actor: Option<std::borrow::Cow<'a, str>>,
    pub consequence: Option<bool>,
}
