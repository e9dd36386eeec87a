//! PostgreSQL connections for single statements outside a transaction, kept apart from sqlx's
//! pool.
//!
//! sqlx makes a round trip (Sync, then ReadyForQuery) every time a connection goes back to its
//! pool, to catch a connection left mid-protocol by a cancelled query. For a one-statement read
//! (a stream, a timeline, the log head) that is a second round trip per query: measured 10 % of
//! the ledger's CPU during HTTP appends, and as much work again for the server. Here a
//! connection goes back only after its statement ran to the end (ReadyForQuery read) or was
//! refused by the server (sqlx reads the rest of that answer before the next statement); one
//! whose connection broke or whose caller went away is dropped with its socket, so no
//! connection is ever handed out mid-protocol. One idle for [`IDLE_CHECK`] is pinged before
//! use, as the pool does, so a connection the server ended meanwhile is replaced unseen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::bind::{bind_pg, read_pg};
use super::{Ty, Val};
use crate::store::StoreError;

/// A connection idle this long is pinged before it is used.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// At most `max` connections, opened when needed and kept while they work.
#[derive(Debug)]
pub struct Singles {
    opts: PgConnectOptions,
    /// Held by each statement while it runs: bounds the open connections (idle ones are given
    /// back before their permit).
    permits: Semaphore,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    acquire_timeout: Duration,
}

impl Singles {
    pub fn new(opts: PgConnectOptions, max: usize, acquire_timeout: Duration) -> Self {
        Self {
            opts,
            permits: Semaphore::new(max),
            idle: Mutex::new(Vec::new()),
            acquire_timeout,
        }
    }

    /// Runs one statement and reads its rows as `tys`.
    pub async fn fetch(&self, sql: &str, args: &[Val], tys: &[Ty]) -> Result<Vec<Vec<Val>>, StoreError> {
        let mut lease = self.lease().await?;
        let rows = bind_pg(sqlx::query(sql), args).fetch_all(lease.conn()).await;
        let rows = lease.settle(rows)?;
        rows.iter().map(|r| read_pg(r, tys)).collect()
    }

    /// A connection for one statement: an idle one (checked if it sat idle a while) or a new
    /// one, waiting at most the acquire timeout for one to be free.
    pub async fn lease(&self) -> Result<Lease<'_>, StoreError> {
        let permit = match tokio::time::timeout(self.acquire_timeout, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed.into()),
            // Every connection busy this long: overload, answered as the database being away.
            Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
        };
        loop {
            let popped = self.lock().pop();
            let Some((mut conn, since)) = popped else {
                let conn = match tokio::time::timeout(self.acquire_timeout, self.opts.connect()).await {
                    Ok(conn) => conn?,
                    Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
                };
                return Ok(Lease::new(self, conn, permit));
            };
            if since.elapsed() < IDLE_CHECK {
                return Ok(Lease::new(self, conn, permit));
            }
            // A server that stopped answering must not hold the statement (and its permit)
            // for good: no answer in time counts as dead.
            if let Ok(Ok(())) = tokio::time::timeout(self.acquire_timeout, conn.ping()).await {
                return Ok(Lease::new(self, conn, permit));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses new statements and closes the idle connections.
    pub async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.lock());
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }

    /// Connections open and idle now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }
}

/// A connection lent for one statement. It goes back to the idle ones only through
/// [`Lease::settle`]; dropped otherwise (the caller gone mid-statement), it is closed with its
/// socket.
pub struct Lease<'a> {
    singles: &'a Singles,
    conn: PgConnection,
    permit: SemaphorePermit<'a>,
}

impl<'a> Lease<'a> {
    fn new(singles: &'a Singles, conn: PgConnection, permit: SemaphorePermit<'a>) -> Self {
        Self { singles, conn, permit }
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// The statement's result: its connection goes back for the next statement when the
    /// statement ran to the end or the server refused it (an error response keeps the protocol
    /// in step: the next statement first reads what is left of this one's answer); after any
    /// other failure (the connection broken, the caller gone) it is closed.
    pub fn settle<T>(self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        let Lease { singles, conn, permit } = self;
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            singles.lock().push((conn, Instant::now()));
        }
        // Given back after the connection: open connections never exceed the permits.
        drop(permit);
        Ok(result?)
    }
}
