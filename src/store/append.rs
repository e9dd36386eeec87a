//! Appending to the log. Requests are planned against the stream heads and used keys read
//! under the log head lock, then written in one transaction: positions follow commit order
//! without gaps. PostgreSQL takes a one-statement fast path first ([`super::postgres`]); the
//! careful path here serves SQLite, and PostgreSQL batches the fast path cannot take.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sql::{Db, Tx, Ty, Val};
use super::{
    commit_instant, corrupt, idempotency_record, IdempotencyClaim, IdempotencyRecord, NewEvent, StoreError, VaultEntry,
};

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
    let mut cards = BTreeMap::new();
    for r in requests {
        if let Some(claim) = &r.idempotency {
            if let Some(rec) = used_keys.get(&claim.key) {
                outcomes.push(Err(Rejection::KeyUsed(rec.clone())));
                continue;
            }
            if let Some((c, first, last)) = keys.iter().find(|(c, _, _)| c.key == claim.key) {
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
            keys.push((claim.clone(), first_position, position));
        }
        for c in &r.cards {
            let top = cards.entry((c.symbol.clone(), c.width)).or_insert(c.number);
            *top = (*top).max(c.number);
        }
        outcomes.push(Ok(Appended {
            events: written,
            recorded_at,
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

pub(super) async fn append_batch(db: &Db, requests: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    if let Db::Postgres(pool) = db {
        match super::postgres::fast_append(pool, requests).await {
            Ok(Some(outcomes)) => return Ok(outcomes),
            // A stale expectation, a used Idempotency-Key or a uniqueness rule: nothing was
            // written; decide request by request on the careful path.
            Ok(None) => {}
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {}
            Err(other) => return Err(other),
        }
    }
    match careful(db, requests, false).await {
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            let constraint = e.constraint().unwrap_or("unique").to_owned();
            if requests.len() == 1 {
                return Ok(vec![Err(Rejection::Unique(constraint))]);
            }
            // One request broke a uniqueness rule: find it by appending one at a time.
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                out.extend(Box::pin(append_batch(db, std::slice::from_ref(r))).await?);
            }
            Ok(out)
        }
        other => other,
    }
}

pub(super) async fn append_atomic(
    db: &Db,
    requests: &[AppendRequest],
) -> Result<Result<Vec<Appended>, (Option<usize>, Rejection)>, StoreError> {
    let outcomes = match careful(db, requests, true).await {
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            let constraint = e.constraint().unwrap_or("unique").to_owned();
            return Ok(Err((None, Rejection::Unique(constraint))));
        }
        other => other?,
    };
    let mut appended = Vec::with_capacity(outcomes.len());
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(a) => appended.push(a),
            Err(r) => return Ok(Err((Some(i), r))),
        }
    }
    Ok(Ok(appended))
}

/// One transaction on either backend: lock the head, read the heads of the streams concerned
/// and the keys claimed, plan, write. With `atomic`, a single rejection rolls everything back.
/// The transaction runs to its end in a task of its own, so a caller that goes away never
/// leaves a connection inside a transaction.
async fn careful(db: &Db, requests: &[AppendRequest], atomic: bool) -> Result<Vec<Outcome>, StoreError> {
    let db = db.clone();
    let requests = requests.to_vec();
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let outcomes = careful_in(&mut tx, &requests, atomic).await?;
        if atomic && outcomes.iter().any(|o| o.is_err()) {
            // Dropped uncommitted: nothing of the batch is written.
            return Ok(outcomes);
        }
        tx.commit().await?;
        Ok(outcomes)
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

async fn careful_in(tx: &mut Tx, requests: &[AppendRequest], atomic: bool) -> Result<Vec<Outcome>, StoreError> {
    let d = tx.dialect();
    // The log head lock: held until commit, it orders every writer.
    let head = tx
        .fetch(
            &format!(
                "SELECT last_position, last_recorded_at FROM log_head WHERE id = true{}",
                d.for_update()
            ),
            &[],
            &[Ty::Int, Ty::Instant],
        )
        .await?;
    let head = head.first().ok_or_else(|| corrupt("log_head row missing"))?;
    let last_position = head[0].as_int().unwrap_or(0);
    let recorded_at = commit_instant(head[1].as_instant().unwrap_or(DateTime::<Utc>::UNIX_EPOCH));

    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, i, _) in requests.iter().flat_map(|r| r.streams()) {
        by_type.entry(t).or_default().push(i);
    }
    let mut heads: HashMap<(String, String), i64> = HashMap::new();
    for (t, ids) in by_type {
        let sql = format!(
            "SELECT aggregate_id, max(sequence) FROM events WHERE aggregate_type = $1 AND {} GROUP BY aggregate_id",
            d.in_json_array("aggregate_id", 2)
        );
        for r in tx
            .fetch(
                &sql,
                &[Val::text(t), super::sql::json_array(&ids)],
                &[Ty::Text, Ty::Int],
            )
            .await?
        {
            heads.insert(
                (t.to_owned(), r[0].as_text().unwrap_or_default().to_owned()),
                r[1].as_int().unwrap_or(0),
            );
        }
    }

    let claimed: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.idempotency.as_ref().map(|c| c.key.as_str()))
        .collect();
    let mut used = HashMap::new();
    if !claimed.is_empty() {
        let sql = format!(
            "SELECT key, fingerprint, {} FROM idempotency_keys WHERE {}",
            d.json_text("response"),
            d.in_json_array("key", 1)
        );
        for r in tx
            .fetch(
                &sql,
                &[super::sql::json_array(&claimed)],
                &[Ty::Text, Ty::Text, Ty::Json],
            )
            .await?
        {
            let key = r[0].as_text().unwrap_or_default().to_owned();
            let rec = idempotency_record(r[1].as_text().unwrap_or_default(), r[2].as_text().unwrap_or_default())?;
            used.insert(key, rec);
        }
    }

    let plan = plan(requests, heads, used, last_position, recorded_at)?;
    if atomic && plan.outcomes.iter().any(|o| o.is_err()) {
        return Ok(plan.outcomes);
    }
    let at = Val::Instant(Some(recorded_at));
    let rows: Vec<Vec<Val>> = plan
        .rows
        .into_iter()
        .map(|r| {
            vec![
                Val::Text(Some(r.aggregate_type)),
                Val::Text(Some(r.aggregate_id)),
                Val::int(r.sequence),
                Val::Text(Some(r.event_type)),
                Val::Text(Some(r.event_version)),
                Val::Json(Some(r.payload)),
                Val::Json(Some(r.metadata)),
                Val::int(r.position),
                at.clone(),
            ]
        })
        .collect();
    tx.insert("events", &EVENT_COLS, rows).await?;
    for (v, position) in &plan.vault {
        tx.execute(
            "INSERT INTO my_number_vault (commitment, person_id, salt, nonce, ciphertext, position, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (commitment) DO NOTHING",
            &[
                Val::text(&v.commitment),
                Val::text(&v.person_id),
                Val::Bytes(Some(v.salt.clone())),
                Val::Bytes(Some(v.nonce.clone())),
                Val::Bytes(Some(v.ciphertext.clone())),
                Val::int(*position),
                at.clone(),
            ],
        )
        .await?;
    }
    for (claim, first, last) in &plan.keys {
        let response = serde_json::json!({"first_position": first, "last_position": last}).to_string();
        tx.execute(
            &format!(
                "INSERT INTO idempotency_keys (key, fingerprint, response, position, created_at) VALUES ($1, $2, {}, $4, $5)",
                d.json_param(3)
            ),
            &[
                Val::text(&claim.key),
                Val::text(&claim.fingerprint),
                Val::Json(Some(response)),
                Val::int(*last),
                at.clone(),
            ],
        )
        .await?;
    }
    for ((symbol, width), number) in &plan.cards {
        tx.execute(
            "INSERT INTO card_sequence (symbol, width, last) VALUES ($1, $2, $3) \
             ON CONFLICT (symbol, width) DO UPDATE SET last = CASE WHEN excluded.last > card_sequence.last \
             THEN excluded.last ELSE card_sequence.last END",
            &[Val::text(symbol), Val::int(*width), Val::int(*number)],
        )
        .await?;
    }
    if plan.last_position != last_position {
        tx.execute(
            "UPDATE log_head SET last_position = $1, last_recorded_at = $2 WHERE id = true",
            &[Val::int(plan.last_position), at],
        )
        .await?;
    }
    Ok(plan.outcomes)
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
