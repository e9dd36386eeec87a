//! Projections: read models built from the global log by durable consumers.
//!
//! Each projection reads the log in position order and writes its rows and its checkpoint in
//! one transaction, so a crash at any instant leaves it at a consistent position: the
//! uncommitted batch is read again on restart, and nothing is skipped or applied twice. The
//! checkpoint row is locked (PostgreSQL) or the database write lock held (SQLite) while a batch
//! is applied, so two processes running the same projection never both apply a batch: the
//! second sees the checkpoint moved and re-reads from there.
//!
//! cqrs-es's own queries run after commit without a checkpoint (engineering-notes.md), which is
//! why the ledger does not use them.

mod ahead;
mod changes;
pub mod feed;
pub mod households;
pub mod persons;
mod rebuild;
mod runner;

pub use changes::{Changes, MEMBERS};
#[cfg(feature = "test-hooks")]
pub use runner::Faults;
pub use runner::Projections;

use crate::store::sql::{Db, Tx, Ty};
use crate::store::{Store, StoreError, StoredEvent};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event cannot be projected: {0}")]
    Corrupt(String),
    /// A test hook's fault (feature `test-hooks`).
    #[error("injected fault before commit")]
    Injected,
}

impl ProjectionError {
    /// An event or row that cannot be what the log or the projection promises.
    pub fn corrupt(e: impl std::fmt::Display) -> Self {
        ProjectionError::Corrupt(e.to_string())
    }
}

impl From<sqlx::Error> for ProjectionError {
    fn from(e: sqlx::Error) -> Self {
        ProjectionError::Store(StoreError::Database(e))
    }
}

/// What a projection worked out for a batch from the log alone (see [`Projection::prepare`]).
pub type Prepared = Box<dyn std::any::Any + Send>;

/// A projection's own prepared work back from the runner (`name`: whose, for the error).
pub(crate) fn prepared<T: 'static>(work: Prepared, name: &str) -> Result<T, ProjectionError> {
    work.downcast::<T>()
        .map(|w| *w)
        .map_err(|_| ProjectionError::Corrupt(format!("{name}: prepared work of another projection")))
}

/// One read model (or another durable consumer of the log, such as the audit chainer).
#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    fn name(&self) -> &'static str;
    /// The version of what its rows mean: a projection whose stored version is older is
    /// emptied and rebuilt when the checkpoints are loaded (rebuildable ones only).
    fn version(&self) -> i64 {
        1
    }
    /// The tables it owns (emptied by a rebuild), with all their columns.
    fn tables(&self) -> Vec<(&'static str, Vec<(&'static str, Ty)>)>;
    /// Whether `rebuild` empties and rebuilds it (the feed's records are permanent: no).
    fn rebuildable(&self) -> bool {
        true
    }
    /// The runner task it runs in (reads wait for the [`Lane::Reads`] projections only).
    fn lane(&self) -> Lane {
        Lane::Reads
    }
    /// The part of a batch's work that needs the log only, never the projection's own rows
    /// (reading streams, deriving rows). While a backlog is applied, the runner prepares the
    /// next batch while the previous one's transaction runs, so the ledger's CPU and the
    /// database's overlap. The default prepares nothing (all the work in `apply`).
    async fn prepare(&self, _store: &Store, _batch: &[StoredEvent]) -> Result<Prepared, ProjectionError> {
        Ok(Box::new(()))
    }
    /// Applies a batch of consecutive log events (of every stream type) inside `tx`, with what
    /// [`prepare`](Self::prepare) gave for exactly this batch.
    async fn apply(
        &self,
        store: &Store,
        tx: &mut Tx,
        batch: &[StoredEvent],
        prepared: Prepared,
    ) -> Result<(), ProjectionError>;
    /// Sets of rows a batch changes that belong to no stream of the batch, as (kind, id), from
    /// what [`prepare`](Self::prepare) gave: recorded in [`Changes`] with the batch (the
    /// persons projection: the households whose list of members it changed).
    fn touches(&self, _prepared: &Prepared) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Called after every round of its lane, busy or idle, with its committed position: work
    /// that depends on time rather than on new events (the audit trail's tail checkpoint).
    async fn tick(&self, _store: &Store, _db: &Db, _position: i64) -> Result<(), ProjectionError> {
        Ok(())
    }
    /// A permanent (not rebuildable) projection compares what it stored up to `upto` with a
    /// recomputation from the log; what a rebuild reports.
    async fn verify(&self, _store: &Store, _upto: i64) -> Result<Option<Verification>, ProjectionError> {
        Ok(None)
    }
}

/// The runner tasks: each reads the log for its own projections, so a slower one (the feed)
/// never holds back another (read-your-writes, the audit chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The read models that requests wait for.
    Reads,
    Feed,
    Audit,
}

pub(crate) const LANES: [Lane; 3] = [Lane::Reads, Lane::Feed, Lane::Audit];

/// A projection's progress, for /readyz and /metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub name: &'static str,
    pub position: i64,
    pub head: i64,
    pub lag_events: i64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
}

/// What a permanent projection's verification found: identical when `differences` is empty.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub name: &'static str,
    pub checked: u64,
    pub differences: Vec<String>,
}

/// What a rebuild did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RebuildSummary {
    /// The permanent projections (the feed) compared with a recomputation from the log (they
    /// are never rewritten).
    pub verified: Vec<Verification>,
    pub events: i64,
    /// The whole rebuild, feed check included.
    pub seconds: f64,
    /// Emptying and building the read models (before the feed check).
    pub build_seconds: f64,
    pub projections: Vec<(&'static str, i64)>,
    pub rows: Vec<(&'static str, i64)>,
}

/// A read-your-writes wait that ran out.
#[derive(Debug, thiserror::Error)]
#[error("projection {projection} is at position {position}, not yet at {wanted}")]
pub struct Lagging {
    pub projection: &'static str,
    pub position: i64,
    pub wanted: i64,
}
