//! The durable, globally ordered event log, on PostgreSQL or the embedded SQLite default,
//! behind one interface.
//!
//! Every append takes the log head lock, so positions are dense, gapless and in commit order;
//! all events of one request are written in one transaction or not at all; the expected
//! sequence of each stream is checked under the lock (optimistic concurrency). The store knows
//! streams, positions and JSON text — nothing of the domain's event types.

mod append;
mod careful;
mod head;
mod json;
mod postgres;
mod recent;
pub mod side;
pub mod space;
pub mod sql;
pub mod writer;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use append::{AppendRequest, Appended, AppendedEvent, CardClaim, Outcome, Rejection, StreamAppend};
pub use json::Json;
use sql::{Db, Dialect, Ty, Val};

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
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    #[error("a storage task failed: {0}")]
    Task(String),
    #[error("the writer has stopped")]
    WriterGone,
    #[error("batch append failed: {0}")]
    Batch(std::sync::Arc<StoreError>),
    #[error("the database's disk is full: events are refused until there is room")]
    Full,
}

/// Why the storage cannot serve a request for now (503, not 500: the client may retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The database does not answer: down, restarting, the connection lost, no connection free.
    Database,
    /// The database answers but refuses to write: disk full, read-only, I/O error.
    Storage,
}

impl StoreError {
    /// Whether this failure is the storage being unavailable rather than a defect.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            StoreError::Full => Some(Unavailable::Storage),
            StoreError::Unreachable(_) => Some(Unavailable::Database),
            StoreError::Batch(inner) => inner.unavailable(),
            StoreError::Database(e) => unavailable(e),
            _ => None,
        }
    }
}

fn unavailable(e: &sqlx::Error) -> Option<Unavailable> {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Unavailable::Database),
        sqlx::Error::Database(d) => {
            let code = d.code()?;
            match d.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLite's extended result code; its low byte is the primary code.
                Some(_) => match code.parse::<i32>().ok()? & 0xff {
                    // SQLITE_BUSY, SQLITE_LOCKED: another process holds the database too long.
                    5 | 6 => Some(Unavailable::Database),
                    // SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN.
                    8 | 10 | 13 | 14 => Some(Unavailable::Storage),
                    _ => None,
                },
                // SQLSTATE: connection exceptions, shutdown, too many connections; then disk
                // full, out of memory, read-only transactions, I/O errors.
                None => match code.as_ref() {
                    c if c.starts_with("08") => Some(Unavailable::Database),
                    "57P01" | "57P02" | "57P03" | "53300" => Some(Unavailable::Database),
                    "53100" | "53200" | "25006" | "58030" => Some(Unavailable::Storage),
                    _ => None,
                },
            }
        }
        _ => None,
    }
}

/// SQLITE_FULL: the embedded database's disk has no room.
pub(crate) fn disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Batch(inner) => disk_full(inner),
        StoreError::Database(sqlx::Error::Database(d)) => {
            d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && d.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| c & 0xff == 13)
        }
        _ => false,
    }
}

/// An event as stored, with its place in the global log. Its payload and metadata stay JSON
/// text until a reader parses them into what it needs ([`Json`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Json,
    pub metadata: Json,
    pub recorded_at: DateTime<Utc>,
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// A sealed My Number written with the registration that carries its commitment: the
/// commitment's salt and the number encrypted together, and the keyed blind index that finds
/// the person by number (src/vault).
#[derive(Clone, Debug)]
pub struct VaultEntry {
    pub commitment: String,
    pub person_id: String,
    pub nonce: Vec<u8>,
    pub sealed: Vec<u8>,
    pub blind_index: String,
}

/// An Idempotency-Key claimed by the append it guards.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    pub key: String,
    pub fingerprint: String,
}

/// What a completed request wrote, kept for retries with the same key: the positions it
/// spans (the answer is rebuilt from the log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub first_position: i64,
    pub last_position: i64,
}

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

pub(crate) fn parse_instant(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(corrupt)
}

/// The commit instant of a batch: now, truncated to microseconds, never before the last one.
fn commit_instant(last: DateTime<Utc>) -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6).max(last)
}

/// Handle to the event log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    heads: head::SharedHead,
    /// What this process committed last, for the runners that follow the log.
    recent: std::sync::Arc<recent::Recent>,
}

/// Which database a URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The columns of an event row, in the order [`stored_event`] reads them.
pub(crate) const EVENT_TYS: [Ty; 9] = [
    Ty::Int,
    Ty::Text,
    Ty::Text,
    Ty::Int,
    Ty::Text,
    Ty::Text,
    Ty::Json,
    Ty::Json,
    Ty::Instant,
];

/// The statement of [`Store::load_streams_before`]: `$1` the aggregate type, `$2` the ids as a
/// JSON array, `$3` the position the events lie before.
pub fn streams_before_sql(d: Dialect) -> String {
    match d {
        // One index lookup per stream, whatever the statistics say. Without statistics (a
        // fresh deployment, an import, before autovacuum's first ANALYZE) `aggregate_id =
        // ANY(…)`, or this join flattened, was planned as a scan of every event of the type
        // up to `$3`: a cost that grew with the log on every projection batch. `OFFSET 0`
        // keeps the subquery a per-stream index scan.
        Dialect::Postgres => format!(
            "SELECT e.* FROM (SELECT DISTINCT json_array_elements_text($2::json) AS id) AS ids \
             CROSS JOIN LATERAL ({} WHERE aggregate_type = $1 AND aggregate_id = ids.id AND position < $3 \
             OFFSET 0) AS e ORDER BY e.aggregate_id, e.sequence",
            select_events(d)
        ),
        Dialect::Sqlite => format!(
            "{} WHERE aggregate_type = $1 AND {} AND position < $3 ORDER BY aggregate_id, sequence",
            select_events(d),
            d.in_json_array("aggregate_id", 2)
        ),
    }
}

fn select_events(d: Dialect) -> String {
    format!("SELECT {} FROM events", event_columns(d))
}

/// The columns of an event row, as [`EVENT_TYS`] types them.
pub(crate) fn event_columns(d: Dialect) -> String {
    format!(
        "position, aggregate_type, aggregate_id, sequence, event_type, event_version, {}, {}, recorded_at",
        d.json_text("payload"),
        d.json_text("metadata")
    )
}

pub(crate) fn stored_event(row: Vec<Val>) -> Result<StoredEvent, StoreError> {
    let mut it = row.into_iter();
    let mut next = || it.next().ok_or_else(|| corrupt("short event row"));
    let int = |v: Val| v.as_int().ok_or_else(|| corrupt("event row: integer missing"));
    let text = |v: Val| v.into_text().ok_or_else(|| corrupt("event row: text missing"));
    Ok(StoredEvent {
        position: int(next()?)?,
        aggregate_type: text(next()?)?,
        aggregate_id: text(next()?)?,
        sequence: int(next()?)?,
        event_type: text(next()?)?,
        event_version: text(next()?)?,
        payload: Json::stored(text(next()?)?),
        metadata: Json::stored(text(next()?)?),
        recorded_at: next()?
            .as_instant()
            .ok_or_else(|| corrupt("event row: recorded_at missing"))?,
    })
}

impl Store {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn connect_without_migrating(url: &str) -> Result<Self, StoreError> {
        let db = match database_kind(url)? {
            DatabaseKind::Postgres => Db::connect_postgres(url).await?,
            DatabaseKind::Sqlite => {
                Db::connect_sqlite(sqlite_path(url).ok_or_else(|| StoreError::Url(url.into()))?).await?
            }
        };
        Ok(Self {
            db,
            heads: head::SharedHead::new(),
            recent: Default::default(),
        })
    }

    pub fn kind(&self) -> DatabaseKind {
        match self.db.dialect() {
            Dialect::Postgres => DatabaseKind::Postgres,
            Dialect::Sqlite => DatabaseKind::Sqlite,
        }
    }

    /// The SQL layer, for the modules that keep their own tables (projections, audit, jobs).
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Postgres(p) => sqlx::migrate!("migrations/postgres").run(&p.pool).await?,
            Db::Sqlite { write, .. } => sqlx::migrate!("migrations/sqlite").run(write).await?,
        }
        Ok(())
    }

    /// The PostgreSQL pool, for tests and tools that need raw access.
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.db {
            Db::Postgres(p) => Some(&p.pool),
            Db::Sqlite { .. } => None,
        }
    }

    /// The SQLite writer pool, for tests and tools that need raw access.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.db {
            Db::Sqlite { write, .. } => Some(write),
            Db::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        self.db.close().await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.fetch("SELECT 1", &[], &[Ty::Int]).await.map(drop)
    }

    /// Appends a batch of requests in one transaction (group commit). Each request is
    /// all-or-nothing; a rejected request does not affect the others.
    pub async fn append_batch(&self, requests: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
        self.append_riding(requests, None).await
    }

    /// [`Self::append_batch`], with the requests' riders written in the same statement as
    /// their events where that can be done (PostgreSQL's fast path, the side log's head known
    /// here); an outcome's `rider_written` says so.
    pub async fn append_riding(
        &self,
        requests: &[AppendRequest],
        side: Option<&dyn side::SideLog>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.room()?;
        let result = careful::append_batch(&self.db, requests, side, &self.recent).await;
        self.note(result)
    }

    /// Refuses events while the embedded database's disk is full.
    fn room(&self) -> Result<(), StoreError> {
        if self.db.disk_full() {
            return Err(StoreError::Full);
        }
        Ok(())
    }

    /// A write that failed for a full disk releases the reserve.
    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.db.note_failure(e);
        }
        result
    }

    /// Whether events are being refused for a full disk (embedded default only).
    pub fn disk_full(&self) -> bool {
        self.db.disk_full()
    }

    /// Appends every request or none: on the first rejection nothing is written and the
    /// rejection is returned with the index of its request (None: a uniqueness rule refused
    /// one request of the batch, which one is not known).
    pub async fn append_atomic(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Result<Vec<Appended>, (Option<usize>, Rejection)>, StoreError> {
        self.room()?;
        let result = careful::append_atomic(&self.db, requests, &self.recent).await;
        self.note(result)
    }

    /// A stream's events in sequence order; with `as_of`, only those recorded by then.
    pub async fn load_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "{} WHERE aggregate_type = $1 AND aggregate_id = $2 AND ($3 IS NULL OR recorded_at <= $3) ORDER BY sequence",
            select_events(self.db.dialect())
        );
        let args = [Val::text(aggregate_type), Val::text(aggregate_id), Val::Instant(as_of)];
        self.events(&sql, &args).await
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
        let sql = streams_before_sql(self.db.dialect());
        let mut out = Vec::new();
        for chunk in ids.chunks(5000) {
            let args = [Val::text(aggregate_type), sql::json_array(chunk), Val::int(before)];
            out.extend(self.events(&sql, &args).await?);
        }
        Ok(out)
    }

    /// The last position recorded at or before an instant (0: none): the log prefix an as-of
    /// read sees (`recorded_at` never decreases along positions).
    pub async fn position_at(&self, at: DateTime<Utc>) -> Result<i64, StoreError> {
        self.db
            .fetch_int(
                "SELECT coalesce(max(position), 0) FROM events WHERE recorded_at <= $1",
                &[Val::Instant(Some(at))],
            )
            .await
    }

    /// Events in global order after `after`, at most `limit`.
    pub async fn read_log(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "{} WHERE position > $1 ORDER BY position LIMIT $2",
            select_events(self.db.dialect())
        );
        self.events(&sql, &[Val::int(after), Val::int(limit)]).await
    }

    /// As [`read_log`](Self::read_log) for a runner that follows the log: the events this
    /// process has just committed come from memory (exactly what the database stored), the
    /// rest from the database. It may answer fewer than the log already holds, as a read a
    /// moment earlier would.
    pub async fn follow_log(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        match self.recent.after(after, limit) {
            Some(events) => Ok(events),
            None => self.read_log(after, limit).await,
        }
    }

    /// The positions [`follow_log`](Self::follow_log) answers from memory (diagnostics, tests).
    pub fn followed_from_memory(&self) -> Option<(i64, i64)> {
        self.recent.range()
    }

    /// The events at positions `from..=to`, in position order.
    pub async fn read_range(&self, from: i64, to: i64) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_log(from - 1, (to - from + 1).max(0)).await
    }

    async fn events(&self, sql: &str, args: &[Val]) -> Result<Vec<StoredEvent>, StoreError> {
        self.db
            .fetch(sql, args, &EVENT_TYS)
            .await?
            .into_iter()
            .map(stored_event)
            .collect()
    }

    /// The highest position written.
    /// The log head, read after this call began (concurrent callers share the query).
    pub async fn head(&self) -> Result<i64, StoreError> {
        self.heads.read(&self.db).await
    }

    pub async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let d = self.db.dialect();
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT fingerprint, {} FROM idempotency_keys WHERE key = $1",
                    d.json_text("response")
                ),
                &[Val::text(key)],
                &[Ty::Text, Ty::Json],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| idempotency_record(r[0].as_text().unwrap_or_default(), r[1].as_text().unwrap_or_default()))
            .transpose()
    }

    /// The last number issued from a card-number sequence (symbol and width), 0 when none.
    pub async fn card_sequence(&self, symbol: &str, width: usize) -> Result<i64, StoreError> {
        self.db
            .fetch_int(
                "SELECT last FROM card_sequence WHERE symbol = $1 AND width = $2",
                &[Val::text(symbol), Val::int(width as i64)],
            )
            .await
    }
}

/// An idempotency record from its stored columns (older records carry more fields; only the
/// positions are kept).
fn idempotency_record(fingerprint: &str, response: &str) -> Result<IdempotencyRecord, StoreError> {
    #[derive(Deserialize)]
    struct Span {
        first_position: i64,
        last_position: i64,
    }
    let span: Span = serde_json::from_str(response).map_err(corrupt)?;
    Ok(IdempotencyRecord {
        fingerprint: fingerprint.to_owned(),
        first_position: span.first_position,
        last_position: span.last_position,
    })
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}
