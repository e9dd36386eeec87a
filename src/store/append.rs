//! What an append is (requests, their outcomes) and how a batch of them is laid out against
//! the stream heads and used keys read under the log head lock: which requests go in, at which
//! sequences and positions, and which are refused (the others are unaffected).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::side::Rider;
use super::sql::Ty;
use super::{corrupt, IdempotencyClaim, IdempotencyRecord, Json, NewEvent, StoreError, StoredEvent, VaultEntry};

/// One atomic append: events of one stream, plus optionally events of other streams that must
/// commit with them or not at all (e.g. the branch number a join causes in its household).
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The stream's last sequence the caller's decision was based on (0: new stream).
    pub expected_sequence: i64,
    pub events: Vec<NewEvent>,
    /// Consequences in other streams, appended after `events` in the same transaction.
    pub also: Vec<StreamAppend>,
    pub vault: Vec<VaultEntry>,
    pub idempotency: Option<IdempotencyClaim>,
    /// Card numbers this request takes from the deployment's sequences.
    pub cards: Vec<CardClaim>,
    /// Written with the events in the same statement where the store can (the request's
    /// access record); see [`super::side`].
    pub rider: Option<Rider>,
}

impl AppendRequest {
    /// A request with events of one stream only.
    pub fn new(aggregate_type: &str, aggregate_id: &str, expected_sequence: i64, events: Vec<NewEvent>) -> Self {
        Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            expected_sequence,
            events,
            also: Vec::new(),
            vault: Vec::new(),
            idempotency: None,
            cards: Vec::new(),
            rider: None,
        }
    }

    /// Every stream the request writes, with the sequence it expects there.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        std::iter::once((
            self.aggregate_type.as_str(),
            self.aggregate_id.as_str(),
            self.expected_sequence,
        ))
        .chain(
            self.also
                .iter()
                .map(|s| (s.aggregate_type.as_str(), s.aggregate_id.as_str(), s.expected_sequence)),
        )
    }

    /// How many events the request writes.
    pub fn size(&self) -> usize {
        self.events.len() + self.also.iter().map(|a| a.events.len()).sum::<usize>()
    }
}

/// Events for one further stream of an [`AppendRequest`].
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub expected_sequence: i64,
    pub events: Vec<NewEvent>,
}

/// A number taken from a card-number sequence (symbol, width): the sequence's state moves to
/// at least `number` in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardClaim {
    pub symbol: String,
    pub width: i64,
    pub number: i64,
}

/// One event an accepted request wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub event_type: String,
}

/// The result of an accepted append: every event it wrote, in position order (the request's
/// own stream first, then its consequences in other streams).
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    pub events: Vec<AppendedEvent>,
    pub recorded_at: DateTime<Utc>,
    /// The request's rider committed with its events.
    pub rider_written: bool,
}

impl Appended {
    pub fn first_position(&self) -> i64 {
        self.events.first().map_or(0, |e| e.position)
    }
    pub fn last_position(&self) -> i64 {
        self.events.last().map_or(0, |e| e.position)
    }
}

/// Why one request of a batch was not written (the others are unaffected).
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// The stream moved on since the caller read it.
    Conflict { expected: i64, actual: i64 },
    /// The Idempotency-Key was used before: here is what it wrote.
    KeyUsed(IdempotencyRecord),
    /// A uniqueness rule of the log (e.g. one card number per household) refused it.
    Unique(String),
}

pub type Outcome = Result<Appended, Rejection>;

/// A batch laid out against the stream heads and used keys read under the log lock.
pub(super) struct Plan {
    pub outcomes: Vec<Outcome>,
    pub rows: Vec<Row>,
    /// Vault entries with the position of the event that carries their commitment.
    pub vault: Vec<(VaultEntry, i64)>,
    /// Claimed keys with the positions their request spans.
    pub keys: Vec<(IdempotencyClaim, i64, i64)>,
    /// The highest number claimed from each card sequence.
    pub cards: BTreeMap<(String, i64), i64>,
    pub last_position: i64,
}

pub(super) struct Row {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub position: i64,
}

impl Row {
    /// The event as the log holds it once committed, at `base` plus its planned position.
    pub(super) fn stored(self, base: i64, recorded_at: DateTime<Utc>) -> StoredEvent {
        StoredEvent {
            position: base + self.position,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: Json::stored(self.payload),
            metadata: Json::stored(self.metadata),
            recorded_at,
        }
    }
}

pub(super) fn plan(
    requests: &[AppendRequest],
    mut heads: HashMap<(String, String), i64>,
    used_keys: HashMap<String, IdempotencyRecord>,
    mut position: i64,
    recorded_at: DateTime<Utc>,
) -> Result<Plan, StoreError> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut rows = Vec::new();
    let mut vault = Vec::new();
    let mut keys: Vec<(IdempotencyClaim, i64, i64)> = Vec::new();
    // Where each key claimed in this batch is in `keys`: an import batch claims thousands.
    let mut claimed: HashMap<String, usize> = HashMap::new();
    let mut cards = BTreeMap::new();
    for r in requests {
        if let Some(claim) = &r.idempotency {
            if let Some(rec) = used_keys.get(&claim.key) {
                outcomes.push(Err(Rejection::KeyUsed(rec.clone())));
                continue;
            }
            if let Some((c, first, last)) = claimed.get(&claim.key).map(|&k| &keys[k]) {
                outcomes.push(Err(Rejection::KeyUsed(IdempotencyRecord {
                    fingerprint: c.fingerprint.clone(),
                    first_position: *first,
                    last_position: *last,
                })));
                continue;
            }
        }
        // Every stream must be where the request expects it before anything is laid out.
        let stale = r.streams().find_map(|(t, i, expected)| {
            let actual = heads.get(&(t.to_owned(), i.to_owned())).copied().unwrap_or(0);
            (actual != expected).then_some((expected, actual))
        });
        if let Some((expected, actual)) = stale {
            outcomes.push(Err(Rejection::Conflict { expected, actual }));
            continue;
        }
        let first_position = position + 1;
        let mut written = Vec::with_capacity(r.size());
        let parts = std::iter::once((&r.aggregate_type, &r.aggregate_id, &r.events))
            .chain(r.also.iter().map(|s| (&s.aggregate_type, &s.aggregate_id, &s.events)));
        for (t, i, events) in parts {
            let head = heads.entry((t.clone(), i.clone())).or_insert(0);
            for e in events {
                *head += 1;
                position += 1;
                rows.push(Row {
                    aggregate_type: t.clone(),
                    aggregate_id: i.clone(),
                    sequence: *head,
                    event_type: e.event_type.clone(),
                    event_version: e.event_version.clone(),
                    payload: serde_json::to_string(&e.payload).map_err(corrupt)?,
                    metadata: serde_json::to_string(&e.metadata).map_err(corrupt)?,
                    position,
                });
                written.push(AppendedEvent {
                    aggregate_type: t.clone(),
                    aggregate_id: i.clone(),
                    sequence: *head,
                    position,
                    event_type: e.event_type.clone(),
                });
            }
        }
        // The registration carrying the commitment is the request's first event.
        vault.extend(r.vault.iter().map(|v| (v.clone(), first_position)));
        if let Some(claim) = &r.idempotency {
            claimed.insert(claim.key.clone(), keys.len());
            keys.push((claim.clone(), first_position, position));
        }
        for c in &r.cards {
            let top = cards.entry((c.symbol.clone(), c.width)).or_insert(c.number);
            *top = (*top).max(c.number);
        }
        outcomes.push(Ok(Appended {
            events: written,
            recorded_at,
            rider_written: false,
        }));
    }
    Ok(Plan {
        outcomes,
        rows,
        vault,
        keys,
        cards,
        last_position: position,
    })
}

/// The log's columns, for bulk inserts.
pub(super) const EVENT_COLS: [(&str, Ty); 9] = [
    ("aggregate_type", Ty::Text),
    ("aggregate_id", Ty::Text),
    ("sequence", Ty::Int),
    ("event_type", Ty::Text),
    ("event_version", Ty::Text),
    ("payload", Ty::Json),
    ("metadata", Ty::Json),
    ("position", Ty::Int),
    ("recorded_at", Ty::Instant),
];
