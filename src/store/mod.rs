//! The durable, globally ordered event log, on PostgreSQL or the embedded SQLite default,
//! behind one interface.
//!
//! Every append takes the log head lock, so positions are dense, gapless and in commit order;
//! all events of one request are written in one transaction or not at all; the expected
//! sequence of each stream is checked under the lock (optimistic concurrency).

mod cqrs;
mod postgres;
mod sqlite;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Failure of the storage itself (not a refusal of a request).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("the writer has stopped")]
    WriterGone,
    #[error("batch append failed: {0}")]
    Batch(String),
}

/// An event as stored, with its place in the global log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// An event as stored with its payload and metadata still JSON text: what the audit verifier
/// hashes without building values.
#[derive(Clone, Debug, PartialEq)]
pub struct RawEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

impl RawEvent {
    pub fn parse(self) -> Result<StoredEvent, StoreError> {
        Ok(StoredEvent {
            position: self.position,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: parse_json(&self.payload)?,
            metadata: parse_json(&self.metadata)?,
            recorded_at: self.recorded_at,
        })
    }
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// An encrypted My Number written with the registration that carries its commitment.
#[derive(Clone, Debug)]
pub struct VaultEntry {
    pub commitment: String,
    pub person_id: String,
    pub salt: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// An Idempotency-Key claimed by the append it guards.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    pub key: String,
    pub fingerprint: String,
}

/// What a completed request was answered with, kept for retries with the same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub response: Appended,
}

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
}

/// Events for one further stream of an [`AppendRequest`].
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub expected_sequence: i64,
    pub events: Vec<NewEvent>,
}

impl AppendRequest {
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
}

/// The result of an accepted append. Sequences are those of the request's own stream; the
/// positions span every event of the request, consequences in other streams included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Appended {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub first_position: i64,
    pub last_position: i64,
    #[serde(with = "micros")]
    pub recorded_at: DateTime<Utc>,
}

/// Why one request of a batch was not written (the others are unaffected).
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// The stream moved on since the caller read it.
    Conflict { expected: i64, actual: i64 },
    /// The Idempotency-Key was used before: here is what it was answered with.
    KeyUsed(IdempotencyRecord),
    /// A uniqueness rule of the log (e.g. one card number per household) refused it.
    Unique(String),
}

pub type Outcome = Result<Appended, Rejection>;

/// `recorded_at` format of audit.md: UTC, exactly six fractional digits, `Z`.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    use std::fmt::Write as _;
    // Written directly rather than through a format string: the audit verifier formats one
    // per entry.
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000 % 1_000_000
    );
    s
}

pub(crate) mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_instant(t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// The commit instant of a batch: now, truncated to microseconds, never before the last one.
fn commit_instant(last: DateTime<Utc>) -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6).max(last)
}

#[derive(Clone, Debug)]
enum Backend {
    Postgres(PgPool),
    /// One writer connection (SQLite has one writer at a time anyway) and a pool of readers.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
}

/// Handle to the event log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

/// Which database a URL selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    Sqlite,
}

pub fn database_kind(url: &str) -> Result<DatabaseKind, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseKind::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(DatabaseKind::Sqlite)
    } else {
        Err(StoreError::Url("expected postgres://… or sqlite://path".into()))
    }
}

/// The file of a `sqlite://path` URL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest))
}

impl Store {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn connect_without_migrating(url: &str) -> Result<Self, StoreError> {
        let backend = match database_kind(url)? {
            DatabaseKind::Postgres => {
                let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await?;
                Backend::Postgres(pool)
            }
            DatabaseKind::Sqlite => {
                let path = sqlite_path(url).ok_or_else(|| StoreError::Url(url.into()))?;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: an acknowledged commit survives a power cut, not only a crash.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10));
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts.clone())
                    .await?;
                let read = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(opts.read_only(false))
                    .await?;
                Backend::Sqlite { write, read }
            }
        };
        Ok(Self { backend })
    }

    pub fn kind(&self) -> DatabaseKind {
        match self.backend {
            Backend::Postgres(_) => DatabaseKind::Postgres,
            Backend::Sqlite { .. } => DatabaseKind::Sqlite,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await?,
            Backend::Sqlite { write, .. } => sqlx::migrate!("migrations/sqlite").run(write).await?,
        }
        Ok(())
    }

    /// The PostgreSQL pool, for tests and tools that need raw access.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite { .. } => None,
        }
    }

    /// The SQLite writer and reader pools.
    pub fn sqlite_pools(&self) -> Option<(&SqlitePool, &SqlitePool)> {
        match &self.backend {
            Backend::Sqlite { write, read } => Some((write, read)),
            Backend::Postgres(_) => None,
        }
    }

    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite { write, .. } => Some(write),
            Backend::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Postgres(p) => p.close().await,
            Backend::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
            Backend::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(drop)?,
        }
        Ok(())
    }

    /// Appends a batch of requests in one transaction (group commit). Each request is
    /// all-or-nothing; a rejected request does not affect the others.
    pub async fn append_batch(&self, requests: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let attempt = match &self.backend {
            Backend::Postgres(p) => postgres::append(p, requests).await,
            Backend::Sqlite { write, .. } => sqlite::append(write, requests).await,
        };
        match attempt {
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                let constraint = e.constraint().unwrap_or("unique").to_owned();
                if requests.len() == 1 {
                    return Ok(vec![Err(Rejection::Unique(constraint))]);
                }
                // One request broke a uniqueness rule: find it by appending one at a time.
                let mut out = Vec::with_capacity(requests.len());
                for r in requests {
                    out.extend(Box::pin(self.append_batch(std::slice::from_ref(r))).await?);
                }
                Ok(out)
            }
            other => other,
        }
    }

    /// A stream's events in sequence order; with `as_of`, only those recorded by then.
    pub async fn load_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match &self.backend {
            Backend::Postgres(p) => postgres::load_stream(p, aggregate_type, aggregate_id, as_of).await,
            Backend::Sqlite { read, .. } => sqlite::load_stream(read, aggregate_type, aggregate_id, as_of).await,
        }
    }

    /// The events of many streams of one type, grouped by stream in sequence order.
    pub async fn load_streams(&self, aggregate_type: &str, ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        self.load_streams_before(aggregate_type, ids, i64::MAX).await
    }

    /// The events of many streams of one type at positions before `before`.
    pub async fn load_streams_before(
        &self,
        aggregate_type: &str,
        ids: &[String],
        before: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(5000) {
            out.extend(match &self.backend {
                Backend::Postgres(p) => postgres::load_streams(p, aggregate_type, chunk, before).await?,
                Backend::Sqlite { read, .. } => sqlite::load_streams(read, aggregate_type, chunk, before).await?,
            });
        }
        Ok(out)
    }

    /// The last position recorded at or before an instant (0: none): the log prefix an as-of
    /// read sees (`recorded_at` never decreases along positions).
    pub async fn position_at(&self, at: DateTime<Utc>) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Postgres(p) => postgres::position_at(p, at).await,
            Backend::Sqlite { read, .. } => sqlite::position_at(read, &format_instant(&at)).await,
        }
    }

    /// Events in global order after `after`, at most `limit`.
    pub async fn read_log(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_log_raw(after, limit)
            .await?
            .into_iter()
            .map(RawEvent::parse)
            .collect()
    }

    /// As [`read_log`](Self::read_log), payload and metadata as stored text.
    pub async fn read_log_raw(&self, after: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
        match &self.backend {
            Backend::Postgres(p) => postgres::read_log_raw(p, after, limit).await,
            Backend::Sqlite { read, .. } => sqlite::read_log_raw(read, after, limit).await,
        }
    }

    /// The highest position written.
    pub async fn head(&self) -> Result<i64, StoreError> {
        let q = "SELECT last_position FROM log_head";
        Ok(match &self.backend {
            Backend::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await?,
            Backend::Sqlite { read, .. } => sqlx::query_scalar(q).fetch_one(read).await?,
        })
    }

    /// (household, person) for every person whose facts (ever) name one of these households.
    pub async fn household_person_ids(&self, household_ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in household_ids.chunks(5000) {
            out.extend(match &self.backend {
                Backend::Postgres(p) => postgres::household_person_ids(p, chunk).await?,
                Backend::Sqlite { read, .. } => sqlite::household_person_ids(read, chunk).await?,
            });
        }
        Ok(out)
    }

    /// Persons born on or before a day (by any recorded or corrected birth date) who have no
    /// `late_elderly_age_reached` yet: a superset of those the 75th-birthday job must record.
    pub async fn age_out_candidates(&self, born_on_or_before: chrono::NaiveDate) -> Result<Vec<String>, StoreError> {
        let bound = born_on_or_before.to_string();
        match &self.backend {
            Backend::Postgres(p) => postgres::age_out_candidates(p, &bound).await,
            Backend::Sqlite { read, .. } => sqlite::age_out_candidates(read, &bound).await,
        }
    }

    /// The household a card symbol and number was assigned to.
    pub async fn card_holder(&self, symbol: &str, number: &str) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Postgres(p) => postgres::card_holder(p, symbol, number).await,
            Backend::Sqlite { read, .. } => sqlite::card_holder(read, symbol, number).await,
        }
    }

    /// The highest card number of `width` digits issued under `symbol` (0: none). Only numbers
    /// of the sequence's width count: a number of another width cannot collide with them.
    pub async fn max_card_number(&self, symbol: &str, width: usize) -> Result<u64, StoreError> {
        let top: Option<String> = match &self.backend {
            Backend::Postgres(p) => postgres::max_card_number(p, symbol, width as i64).await?,
            Backend::Sqlite { read, .. } => sqlite::max_card_number(read, symbol, width as i64).await?,
        };
        top.map_or(Ok(0), |n| n.parse().map_err(corrupt))
    }

    pub async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let raw = match &self.backend {
            Backend::Postgres(p) => postgres::idempotency(p, key).await?,
            Backend::Sqlite { read, .. } => sqlite::idempotency(read, key).await?,
        };
        raw.map(|(fingerprint, response)| {
            Ok(IdempotencyRecord {
                fingerprint,
                response: serde_json::from_str(&response).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            })
        })
        .transpose()
    }

    /// The encrypted My Number for a commitment.
    pub async fn vault_entry(&self, commitment: &str) -> Result<Option<VaultEntry>, StoreError> {
        match &self.backend {
            Backend::Postgres(p) => postgres::vault_entry(p, commitment).await,
            Backend::Sqlite { read, .. } => sqlite::vault_entry(read, commitment).await,
        }
    }
}

/// Shared batch logic: decides each request's fate against the current stream heads and used
/// keys (all read under the log lock), and lays out the rows to insert.
struct Plan {
    outcomes: Vec<Outcome>,
    rows: Vec<Row>,
    vault: Vec<(VaultEntry, i64)>,
    keys: Vec<(IdempotencyClaim, Appended)>,
    last_position: i64,
}

struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    position: i64,
}

fn plan(
    requests: &[AppendRequest],
    mut heads: std::collections::HashMap<(String, String), i64>,
    used_keys: std::collections::HashMap<String, IdempotencyRecord>,
    mut position: i64,
    recorded_at: DateTime<Utc>,
) -> Result<Plan, StoreError> {
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut rows = Vec::new();
    let mut vault = Vec::new();
    let mut keys: Vec<(IdempotencyClaim, Appended)> = Vec::new();
    for r in requests {
        if let Some(claim) = &r.idempotency {
            if let Some(rec) = used_keys.get(&claim.key) {
                outcomes.push(Err(Rejection::KeyUsed(rec.clone())));
                continue;
            }
            if let Some((c, a)) = keys.iter().find(|(c, _)| c.key == claim.key) {
                let rec = IdempotencyRecord {
                    fingerprint: c.fingerprint.clone(),
                    response: a.clone(),
                };
                outcomes.push(Err(Rejection::KeyUsed(rec)));
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
        let first_sequence = r.expected_sequence + 1;
        let first_position = position + 1;
        let mut last_sequence = r.expected_sequence;
        let parts = std::iter::once((&r.aggregate_type, &r.aggregate_id, &r.events))
            .chain(r.also.iter().map(|s| (&s.aggregate_type, &s.aggregate_id, &s.events)));
        for (n, (t, i, events)) in parts.enumerate() {
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
                    payload: serde_json::to_string(&e.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    metadata: serde_json::to_string(&e.metadata).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    position,
                });
            }
            if n == 0 {
                last_sequence = *head;
            }
        }
        let appended = Appended {
            aggregate_type: r.aggregate_type.clone(),
            aggregate_id: r.aggregate_id.clone(),
            first_sequence,
            last_sequence,
            first_position,
            last_position: position,
            recorded_at,
        };
        vault.extend(r.vault.iter().map(|v| (v.clone(), appended.last_position)));
        if let Some(claim) = &r.idempotency {
            keys.push((claim.clone(), appended.clone()));
        }
        outcomes.push(Ok(appended));
    }
    Ok(Plan {
        outcomes,
        rows,
        vault,
        keys,
        last_position: position,
    })
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn parse_json(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(corrupt)
}
