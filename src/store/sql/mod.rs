//! The one way the ledger talks SQL to either backend: typed values, one transaction type,
//! bulk inserts (UNNEST on PostgreSQL, a prepared statement per row on SQLite) and typed
//! reads. Queries are written once with `$n` placeholders (SQLite gets `?n`); the few places
//! where the dialects differ ask [`Dialect`] for their fragment.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use super::StoreError;

mod bind;
mod copy;
mod singles;
use bind::{bind_pg, bind_sqlite, read_pg, read_sqlite, sqlite_sql};
pub use bind::{bind_pg_rows, pg_rows, pg_rows_numbered, pg_unnest, PgQuery};
pub use singles::{Lease, Singles};

/// A column value. Dates are ISO `YYYY-MM-DD` text on both backends (their order is the
/// dates' order); booleans are `boolean` on PostgreSQL and 0/1 on SQLite; JSON is `json` on
/// PostgreSQL and text on SQLite; instants are `timestamptz` on PostgreSQL and fixed-width
/// RFC 3339 text on SQLite (text order is time order).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Bytes(Option<Vec<u8>>),
    Json(Option<String>),
    Instant(Option<DateTime<Utc>>),
}

impl Val {
    pub fn text(s: impl Into<String>) -> Self {
        Val::Text(Some(s.into()))
    }
    pub fn int(i: i64) -> Self {
        Val::Int(Some(i))
    }
    pub fn opt_text<T: ToString>(s: Option<T>) -> Self {
        Val::Text(s.map(|s| s.to_string()))
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Val::Text(t) | Val::Json(t) => t.as_deref(),
            _ => None,
        }
    }
    pub fn into_text(self) -> Option<String> {
        match self {
            Val::Text(t) | Val::Json(t) => t,
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => *i,
            _ => None,
        }
    }
    pub fn as_bool(&self) -> bool {
        matches!(self, Val::Bool(true))
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Bytes(b) => b.as_deref(),
            _ => None,
        }
    }
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Val::Bytes(b) => b,
            _ => None,
        }
    }
    pub fn as_instant(&self) -> Option<DateTime<Utc>> {
        match self {
            Val::Instant(t) => *t,
            _ => None,
        }
    }
}

/// Column types, for reads and for PostgreSQL's typed arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Text,
    Int,
    Bool,
    Bytes,
    Json,
    Instant,
}

impl Ty {
    fn pg_array(self) -> &'static str {
        match self {
            Ty::Text | Ty::Json => "text[]",
            Ty::Int => "bigint[]",
            Ty::Bool => "boolean[]",
            Ty::Bytes => "bytea[]",
            Ty::Instant => "timestamptz[]",
        }
    }
}

/// Where the two SQL dialects differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// A JSON column read as text.
    pub fn json_text(self, column: &str) -> String {
        match self {
            Dialect::Postgres => format!("{column}::text"),
            Dialect::Sqlite => column.to_owned(),
        }
    }
    /// `column` is one of the strings of a JSON array parameter `$n`: one statement whatever
    /// the number of values. On PostgreSQL the list becomes an array first, so an index on the
    /// column is used (a set-returning function in `IN (…)` plans as a scan of the table).
    pub fn in_json_array(self, column: &str, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("{column} = ANY(ARRAY(SELECT json_array_elements_text(${n}::json)))"),
            Dialect::Sqlite => format!("{column} IN (SELECT value FROM json_each(${n}))"),
        }
    }
    /// Parameter `$n` as JSON (PostgreSQL casts the text; SQLite stores it as text).
    pub fn json_param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}::json"),
            Dialect::Sqlite => format!("${n}"),
        }
    }
    /// Locks the selected rows until commit (SQLite's write lock is taken by BEGIN IMMEDIATE).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }
}

/// The parameter of [`Dialect::in_json_array`].
pub fn json_array<S: serde::Serialize>(values: &[S]) -> Val {
    Val::Text(Some(serde_json::to_string(values).unwrap_or_else(|_| "[]".into())))
}

/// A connection pool on either backend. Cheap to clone.
/// False for a connection still inside a transaction when it is taken from the pool, which
/// is then closed and replaced. SQLite rolls a transaction back by itself when a COMMIT fails
/// with a full disk or an I/O error; sqlx's ROLLBACK on drop then fails and leaves the
/// connection marked as in a transaction, so every later BEGIN would fail (the pool tested it
/// first, so the queued rollback has run by now).
fn out_of_transaction(conn: &sqlx::SqliteConnection) -> bool {
    <sqlx::sqlite::SqliteTransactionManager as sqlx::TransactionManager>::get_transaction_depth(conn) == 0
}

#[derive(Clone, Debug)]
pub enum Db {
    Postgres(Pg),
    /// One writer connection (SQLite has one writer at a time anyway) and a pool of readers.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
        /// Disk space held back for when the disk fills (none for an in-memory database).
        reserve: Option<std::sync::Arc<super::space::Reserve>>,
    },
}

/// PostgreSQL's connections: a pool for transactions, and two sets for single statements
/// outside a transaction ([`Singles`], which skip the round trip sqlx makes when a connection
/// goes back to its pool).
///
/// `batches` serves the batch statements of the event and access logs' writers. Those are long
/// statements (a dozen arrays unnested in CTEs) whose custom plan, made again at every execution,
/// cost twice their run (measured: bind 356 µs, execute 179 µs). Their connections plan once
/// (`plan_cache_mode = force_generic_plan`), which this statement shape can afford: every
/// access in it is by primary key. `singles` serves every other single statement (most reads),
/// with PostgreSQL's choice of plan, as the pool's transactions have.
#[derive(Clone, Debug)]
pub struct Pg {
    pub pool: PgPool,
    pub batches: std::sync::Arc<Singles>,
    pub singles: std::sync::Arc<Singles>,
}

impl std::ops::Deref for Pg {
    type Target = PgPool;
    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

/// Connections the batch statements use at most: one writer of each log per process.
const PG_BATCH_CONNECTIONS: usize = 4;
/// Connections for transactions.
const PG_CONNECTIONS: u32 = 12;
/// Connections for single statements: two cores' server runs no more at once anyway.
const PG_SINGLE_CONNECTIONS: usize = 8;

/// How long a request waits for a pooled connection before it is told the database is
/// unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The same for PostgreSQL, shorter: a server that is down refuses connections, and a request
/// (which also waits to write its access record) should hear 503 `database_unavailable` in a
/// few seconds; a pool of 16 busy for 2 s means overload, where refusing is right too.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled PostgreSQL connection idle this long is pinged before it is handed out.
const PG_IDLE_CHECK: Duration = singles::IDLE_CHECK;

/// A PostgreSQL pool of at most `max` connections.
fn pg_pool(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        // sqlx pings every connection it hands out (one more round trip per query); only
        // one that sat idle for a while is checked here, and a connection that broke in
        // use fails its query, which the caller answers as the database being away.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PG_IDLE_CHECK {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
}

impl Db {
    pub async fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        // JIT compilation: the planner's estimates for the appends' UNNEST statements look
        // expensive, and compiling them costs more than running them (measured: 250 ms of a
        // 350 ms batch). The ledger's statements are short and indexed; JIT never pays.
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .options([("jit", "off")]);
        let target = format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        );
        // One connection first: an unreachable or refusing server is reported at once, with
        // where and why, instead of after the pool's acquire timeout.
        sqlx::ConnectOptions::connect(&opts)
            .await
            .map_err(|e| StoreError::Unreachable(format!("PostgreSQL at {target}: {e}")))?;
        let batches = opts.clone().options([("plan_cache_mode", "force_generic_plan")]);
        let singles = Singles::new(opts.clone(), PG_SINGLE_CONNECTIONS, PG_ACQUIRE_TIMEOUT);
        Ok(Db::Postgres(Pg {
            pool: pg_pool(PG_CONNECTIONS).connect_with(opts).await?,
            batches: std::sync::Arc::new(Singles::new(batches, PG_BATCH_CONNECTIONS, PG_ACQUIRE_TIMEOUT)),
            singles: std::sync::Arc::new(singles),
        }))
    }

    pub async fn connect_sqlite(path: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged commit survives a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            // An erased My Number's sealed bytes are overwritten, not left in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .before_acquire(|conn, _| Box::pin(async move { Ok(out_of_transaction(conn)) }))
            .connect_with(opts.clone())
            .await
            .map_err(|e| StoreError::Unreachable(format!("SQLite file {path}: {e}")))?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .before_acquire(|conn, _| Box::pin(async move { Ok(out_of_transaction(conn)) }))
            .connect_with(opts)
            .await?;
        let reserve = match path {
            "" => None,
            p if p.starts_with(':') => None,
            p => Some(super::space::Reserve::open(
                std::path::Path::new(p),
                super::space::reserve_bytes_from_env().map_err(StoreError::Url)?,
            )),
        };
        Ok(Db::Sqlite { write, read, reserve })
    }

    /// True while events are refused because the embedded database's disk is full.
    pub fn disk_full(&self) -> bool {
        matches!(self, Db::Sqlite { reserve: Some(r), .. } if r.is_full())
    }

    /// Called with a failed write: a full disk (SQLITE_FULL) releases the reserve, so that
    /// access records and the projections can still be written; true if it did (the write
    /// may be tried once more).
    pub fn note_failure(&self, e: &StoreError) -> bool {
        match self {
            Db::Sqlite { reserve: Some(r), .. } if super::disk_full(e) => r.exhausted(),
            _ => false,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite { .. } => Dialect::Sqlite,
        }
    }

    /// A write transaction. On SQLite it takes the database's write lock at once.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// A write transaction that is read-write even when the operator made PostgreSQL read-only
    /// by default (`default_transaction_read_only`): for the access records, which every
    /// answer needs.
    pub async fn begin_read_write(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin_with("BEGIN READ WRITE").await?),
            Db::Sqlite { .. } => self.begin().await?,
        })
    }

    /// A read-only transaction: every query in it sees one snapshot of the database.
    pub async fn snapshot(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?),
            // A deferred transaction's first read fixes its snapshot of the WAL.
            Db::Sqlite { read, .. } => Tx::Sqlite(read.begin_with("BEGIN DEFERRED").await?),
        })
    }

    pub async fn fetch(&self, sql: &str, args: &[Val], tys: &[Ty]) -> Result<Vec<Vec<Val>>, StoreError> {
        match self {
            Db::Postgres(p) => p.singles.fetch(sql, args, tys).await,
            Db::Sqlite { read, .. } => {
                let sql = sqlite_sql(sql);
                let rows = bind_sqlite(sqlx::query(&sql), args).fetch_all(read).await?;
                rows.iter().map(|r| read_sqlite(r, tys)).collect()
            }
        }
    }

    /// The first row's first column as an integer (0 when there is none or it is NULL).
    pub async fn fetch_int(&self, sql: &str, args: &[Val]) -> Result<i64, StoreError> {
        Ok(self
            .fetch(sql, args, &[Ty::Int])
            .await?
            .first()
            .and_then(|r| r[0].as_int())
            .unwrap_or(0))
    }

    pub async fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = tx.execute(sql, args).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// A maintenance statement outside any transaction (`VACUUM`, `PRAGMA wal_checkpoint`),
    /// on the writing connection.
    pub async fn maintain(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Db::Postgres(p) => {
                sqlx::query(sql).execute(&p.pool).await?;
            }
            Db::Sqlite { write, .. } => {
                sqlx::query(sql).fetch_all(write).await?;
            }
        }
        Ok(())
    }

    /// A consistent copy of an SQLite database into a new file (`VACUUM INTO`): it reads one
    /// snapshot, like any reader, so the service keeps writing meanwhile. On a reading
    /// connection: the writer is never held up. `None` for PostgreSQL (pg_dump's job).
    pub async fn sqlite_vacuum_into(&self, path: &str) -> Option<Result<(), StoreError>> {
        match self {
            Db::Postgres(_) => None,
            Db::Sqlite { read, .. } => Some(
                sqlx::query("VACUUM INTO ?")
                    .bind(path)
                    .execute(read)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from),
            ),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => {
                p.singles.close().await;
                p.batches.close().await;
                p.pool.close().await;
            }
            Db::Sqlite { write, read, .. } => {
                read.close().await;
                write.close().await;
            }
        }
    }
}

pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Postgres(_) => Dialect::Postgres,
            Tx::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub async fn execute(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        Ok(match self {
            Tx::Postgres(tx) => bind_pg(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Sqlite(tx) => {
                let sql = sqlite_sql(sql);
                bind_sqlite(sqlx::query(&sql), args)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    pub async fn fetch(&mut self, sql: &str, args: &[Val], tys: &[Ty]) -> Result<Vec<Vec<Val>>, StoreError> {
        match self {
            Tx::Postgres(tx) => {
                let rows = bind_pg(sqlx::query(sql), args).fetch_all(&mut **tx).await?;
                rows.iter().map(|r| read_pg(r, tys)).collect()
            }
            Tx::Sqlite(tx) => {
                let sql = sqlite_sql(sql);
                let rows = bind_sqlite(sqlx::query(&sql), args).fetch_all(&mut **tx).await?;
                rows.iter().map(|r| read_sqlite(r, tys)).collect()
            }
        }
    }

    /// The first row's first column as an integer (0 when there is none or it is NULL).
    pub async fn fetch_int(&mut self, sql: &str, args: &[Val]) -> Result<i64, StoreError> {
        Ok(self
            .fetch(sql, args, &[Ty::Int])
            .await?
            .first()
            .and_then(|r| r[0].as_int())
            .unwrap_or(0))
    }

    /// Inserts rows of `(name, type)` columns: one statement on PostgreSQL.
    pub async fn insert(&mut self, table: &str, cols: &[(&str, Ty)], rows: Vec<Vec<Val>>) -> Result<(), StoreError> {
        self.insert_with(table, cols, rows, "").await
    }

    /// As [`insert`](Self::insert), with a clause after the rows (`ON CONFLICT … DO NOTHING`).
    pub async fn insert_with(
        &mut self,
        table: &str,
        cols: &[(&str, Ty)],
        rows: Vec<Vec<Val>>,
        suffix: &str,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let names = cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        match self {
            Tx::Postgres(tx) if suffix.is_empty() && rows.len() >= copy::COPY_FROM_ROWS => {
                copy::copy_rows(tx, table, cols, &rows).await?;
            }
            Tx::Postgres(tx) => {
                let sql = format!("INSERT INTO {table} ({names}) {} {suffix}", pg_unnest(cols, 1));
                bind_pg_rows(sqlx::query(&sql), cols, rows).execute(&mut **tx).await?;
            }
            Tx::Sqlite(tx) => {
                let marks = (1..=cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let sql = format!("INSERT INTO {table} ({names}) VALUES ({marks}) {suffix}");
                for r in &rows {
                    bind_sqlite(sqlx::query(&sql), r).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    /// Ends the open versions (`known_to IS NULL`) of the given keys at the given positions.
    pub async fn close_versions(&mut self, table: &str, key: &str, closes: &[(String, i64)]) -> Result<(), StoreError> {
        if closes.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Postgres(tx) => {
                let sql = format!(
                    "UPDATE {table} t SET known_to = u.p FROM {} AS u \
                     WHERE t.{key} = u.k AND t.known_to IS NULL",
                    pg_rows(&[("$1::text[]", "k"), ("$2::bigint[]", "p")])
                );
                let (keys, positions): (Vec<String>, Vec<i64>) = closes.iter().cloned().unzip();
                sqlx::query(&sql).bind(keys).bind(positions).execute(&mut **tx).await?;
            }
            Tx::Sqlite(tx) => {
                let sql = format!("UPDATE {table} SET known_to = ?2 WHERE {key} = ?1 AND known_to IS NULL");
                for (k, p) in closes {
                    sqlx::query(&sql).bind(k).bind(p).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    /// Closes single open rows: (key, ordinal, position) ends the row of that key and ordinal
    /// whose `known_to` is still NULL.
    pub async fn close_rows(
        &mut self,
        table: &str,
        key: &str,
        closes: &[(String, i64, i64)],
    ) -> Result<(), StoreError> {
        if closes.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Postgres(tx) => {
                let sql = format!(
                    "UPDATE {table} t SET known_to = u.p FROM {} AS u \
                     WHERE t.{key} = u.k AND t.ordinal = u.o AND t.known_to IS NULL",
                    pg_rows(&[("$1::text[]", "k"), ("$2::bigint[]", "o"), ("$3::bigint[]", "p")])
                );
                let mut keys = Vec::with_capacity(closes.len());
                let (mut ordinals, mut positions) =
                    (Vec::with_capacity(closes.len()), Vec::with_capacity(closes.len()));
                for (k, o, p) in closes {
                    keys.push(k.as_str());
                    ordinals.push(*o);
                    positions.push(*p);
                }
                sqlx::query(&sql)
                    .bind(keys)
                    .bind(ordinals)
                    .bind(positions)
                    .execute(&mut **tx)
                    .await?;
            }
            Tx::Sqlite(tx) => {
                let sql =
                    format!("UPDATE {table} SET known_to = ?3 WHERE {key} = ?1 AND ordinal = ?2 AND known_to IS NULL");
                for (k, o, p) in closes {
                    sqlx::query(&sql).bind(k).bind(o).bind(p).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}
