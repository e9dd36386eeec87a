//! The projection runner: one task per lane, checkpoints, read-your-writes waits, lag
//! status, start-up version checks and `rebuild`.

#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Notify};

use super::ahead::{Batch, Cursor};
use super::changes::Changes;
use super::{Lagging, Lane, Prepared, Projection, ProjectionError, Status, LANES};
use crate::metrics;
use crate::store::sql::{Db, Dialect, Tx, Ty, Val};
use crate::store::{Store, StoreError, StoredEvent};

#[cfg(feature = "test-hooks")]
/// Test hook (feature `test-hooks`, for the crash tests): one batch fails after its rows and checkpoint are written and before the commit,
/// as a process killed at that instant would.
#[derive(Debug)]
pub struct Faults {
    /// Batches still to commit before the failing one; `u64::MAX`: none armed.
    commits_before_failure: AtomicU64,
}

#[cfg(feature = "test-hooks")]
impl Default for Faults {
    fn default() -> Self {
        Self {
            commits_before_failure: AtomicU64::new(u64::MAX),
        }
    }
}

#[cfg(feature = "test-hooks")]
impl Faults {
    /// Lets `n` batches commit, then fails the next one.
    pub fn fail_after_commits(&self, n: u64) {
        self.commits_before_failure.store(n, Ordering::SeqCst);
    }
    fn take(&self) -> bool {
        let prev = self
            .commits_before_failure
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                u64::MAX => None,
                0 => Some(u64::MAX),
                n => Some(n - 1),
            });
        prev == Ok(0)
    }
}

/// A projection's batch written and not yet committed.
struct Written {
    tx: Tx,
    last: i64,
    events: usize,
}

pub(super) struct Entry {
    pub(super) projection: Arc<dyn Projection>,
    /// The committed checkpoint, as this process last saw it.
    pub(super) position: watch::Sender<i64>,
}

/// Every projection of the ledger, with its checkpoint and runner.
pub struct Projections {
    pub(super) store: Store,
    pub(super) db: Db,
    pub(super) entries: Vec<Entry>,
    pub(super) batch: i64,
    /// One per lane, woken by this process's appends.
    wakes: [Notify; 3],
    /// Woken after every committed batch (feed long-polls wait on it).
    committed: Notify,
    /// Set once the checkpoints were read from the database (before that, positions are 0).
    loaded: tokio::sync::OnceCell<()>,
    /// Where each stream last changed, recorded before the read models' checkpoints move.
    changes: Changes,
    #[cfg(feature = "test-hooks")]
    pub faults: Faults,
}

/// Events read and applied per transaction at most: a default import batch (5,000 lines, about
/// 5,700 events) in one round, not three (each round has its fixed statements and the feed
/// reads the streams of the households it touches once per round).
const BATCH: i64 = 6000;
/// After a part batch, the runner waits this long for more events (bounds the rounds per
/// second under load; adds at most this much to the lag).
const GATHER: Duration = Duration::from_millis(20);
/// Events per transaction during a rebuild.
pub(super) const REBUILD_BATCH: i64 = 10_000;
/// A runner looks at the log at least this often, for writers in other processes.
const POLL: Duration = Duration::from_millis(200);

impl Projections {
    /// The runner of `projections` over the log of `store`.
    pub fn new(store: Store, projections: Vec<Box<dyn Projection>>) -> Self {
        let db = store.db().clone();
        Self {
            store,
            db,
            entries: projections
                .into_iter()
                .map(|projection| Entry {
                    projection: Arc::from(projection),
                    position: watch::Sender::new(0),
                })
                .collect(),
            batch: BATCH,
            wakes: std::array::from_fn(|_| Notify::new()),
            committed: Notify::new(),
            loaded: tokio::sync::OnceCell::new(),
            changes: Changes::new(),
            #[cfg(feature = "test-hooks")]
            faults: Faults::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Where each stream last changed, as far as the read models' committed positions go.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Moves a checkpoint to `to` for a reason other than this process's own commit (only
    /// forward with `forward_only`): the changes in between were not seen here, so every stream
    /// counts as changed up to there before the new position is published.
    fn moved_elsewhere(&self, entry: &Entry, to: i64, forward_only: bool) {
        entry.position.send_if_modified(|p| {
            if *p == to || (forward_only && to < *p) {
                return false;
            }
            self.changes.unseen_through((*p).max(to));
            *p = to;
            true
        });
    }

    /// The projections a rebuild empties and builds again (not the feed).
    pub fn rebuildable_names(&self) -> Vec<&'static str> {
        self.entries
            .iter()
            .filter(|e| e.projection.rebuildable())
            .map(|e| e.projection.name())
            .collect()
    }

    /// Resolves after the next committed projection batch (create it before looking, so a
    /// commit in between is not missed).
    pub fn next_commit(&self) -> tokio::sync::futures::Notified<'_> {
        self.committed.notified()
    }

    /// Tells the runner the log moved (called after each append in this process).
    pub fn notify(&self) {
        for wake in &self.wakes {
            wake.notify_one();
        }
    }

    /// A projection's committed checkpoint as this process sees it: moved by this process's
    /// commits and when its runner finds another process moved it (the feed tail waits on it).
    pub fn checkpoint(&self, name: &str) -> Option<watch::Receiver<i64>> {
        self.entries
            .iter()
            .find(|e| e.projection.name() == name)
            .map(|e| e.position.subscribe())
    }

    /// The lowest checkpoint this process has seen committed.
    pub fn position(&self) -> i64 {
        self.entries.iter().map(|e| *e.position.borrow()).min().unwrap_or(0)
    }

    /// The lowest checkpoint of the projections that serve reads.
    pub fn read_position(&self) -> i64 {
        self.entries
            .iter()
            .filter(|e| e.projection.lane() == Lane::Reads)
            .map(|e| *e.position.borrow())
            .min()
            .unwrap_or(0)
    }

    /// A projection's committed checkpoint (0 before its row exists); reads only, so status
    /// and metrics scrapes never take a write lock.
    pub(super) async fn stored_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let rows = self
            .db
            .fetch(
                "SELECT position FROM projection_checkpoints WHERE name = $1",
                &[Val::text(name)],
                &[Ty::Int],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].as_int()).unwrap_or(0))
    }

    /// Reads every checkpoint from the database (at start and after another process moved one).
    /// A rebuildable projection whose stored version is older than its code's is emptied and
    /// starts again from position 1 (what its rows mean has changed).
    pub async fn load_checkpoints(&self) -> Result<(), StoreError> {
        for e in &self.entries {
            let name = e.projection.name();
            let version = e.projection.version();
            // The row must exist before a batch locks and moves it.
            self.db
                .execute(
                    "INSERT INTO projection_checkpoints (name, position, version) VALUES ($1, 0, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[Val::text(name), Val::int(version)],
                )
                .await?;
            let stored = self
                .db
                .fetch_int(
                    "SELECT version FROM projection_checkpoints WHERE name = $1",
                    &[Val::text(name)],
                )
                .await?;
            if stored < version {
                self.upgrade(e, stored).await?;
            }
            let p = self.stored_checkpoint(name).await?;
            self.moved_elsewhere(e, p, false);
        }
        let _ = self.loaded.set(());
        Ok(())
    }

    /// Brings a projection's stored version up to its code's: a rebuildable one is emptied
    /// (its runner then builds it again from the log); a permanent one keeps what it stored and
    /// applies the new meaning from its checkpoint on.
    async fn upgrade(&self, e: &Entry, stored: i64) -> Result<(), StoreError> {
        let name = e.projection.name();
        let version = e.projection.version();
        let mut tx = self.db.begin().await?;
        let current = tx
            .fetch_int(
                &format!(
                    "SELECT version FROM projection_checkpoints WHERE name = $1{}",
                    tx.dialect().for_update()
                ),
                &[Val::text(name)],
            )
            .await?;
        if current >= version {
            // Another process upgraded it meanwhile.
            return Ok(());
        }
        if e.projection.rebuildable() {
            for (table, _) in e.projection.tables() {
                tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
            }
            tx.execute(
                "UPDATE projection_checkpoints SET position = 0, version = $2, updated_at = CURRENT_TIMESTAMP WHERE name = $1",
                &[Val::text(name), Val::int(version)],
            )
            .await?;
        } else {
            tx.execute(
                "UPDATE projection_checkpoints SET version = $2 WHERE name = $1",
                &[Val::text(name), Val::int(version)],
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(
            projection = name,
            from = stored,
            to = version,
            rebuilt = e.projection.rebuildable(),
            "projection upgraded"
        );
        Ok(())
    }

    /// The committed position every projection has reached, read from the database the first
    /// time (so a process that has just started does not answer from position 0).
    pub async fn committed(&self) -> Result<i64, StoreError> {
        if !self.loaded.initialized() {
            self.load_checkpoints().await?;
        }
        Ok(self.read_position())
    }

    /// Applies `events` (which follow position `from`) to one projection in one transaction.
    async fn apply_batch(
        &self,
        entry: &Entry,
        from: i64,
        events: &[StoredEvent],
        prepared: Prepared,
    ) -> Result<usize, ProjectionError> {
        let Some(tx) = self.begin_batch(entry, from).await? else {
            return Ok(0);
        };
        let written = self.write_batch(entry, tx, events, prepared).await?;
        self.commit_batch(entry, written).await
    }

    /// A projection's transaction with its checkpoint locked at `from`; None when another
    /// process moved the checkpoint away from there.
    async fn begin_batch(&self, entry: &Entry, from: i64) -> Result<Option<Tx>, ProjectionError> {
        let name = entry.projection.name();
        let mut tx = self.db.begin().await?;
        if tx.is_postgres() {
            // A projection is derivable from the log, and its rows and checkpoint commit or vanish
            // together either way: it need not wait for its own WAL flush (which would compete
            // with the log's). After a crash it redoes what it lost, from its checkpoint.
            tx.execute("SET LOCAL synchronous_commit = off", &[]).await?;
        }
        let lock = if tx.is_postgres() {
            "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE"
        } else {
            "SELECT position FROM projection_checkpoints WHERE name = $1"
        };
        let stored = tx.fetch(lock, &[Val::text(name)], &[Ty::Int]).await?;
        let stored = stored.first().and_then(|r| r[0].as_int()).unwrap_or(0);
        if stored != from {
            // Another process (or a rebuild) moved it: continue from what is committed.
            drop(tx);
            self.moved_elsewhere(entry, stored, false);
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Writes `events` (which follow the checkpoint `tx` locked) and the new checkpoint, up to
    /// the commit.
    async fn write_batch(
        &self,
        entry: &Entry,
        mut tx: Tx,
        events: &[StoredEvent],
        prepared: Prepared,
    ) -> Result<Written, ProjectionError> {
        let last = events.last().map_or(0, |e| e.position);
        if entry.projection.lane() == Lane::Reads {
            // Before the commit publishes the checkpoint (the batch's streams were recorded
            // by `round`): a reader that sees it sees these.
            for (kind, id) in entry.projection.touches(&prepared) {
                self.changes.touch(kind, &id, last);
            }
        }
        entry.projection.apply(&self.store, &mut tx, events, prepared).await?;
        tx.execute(
            "UPDATE projection_checkpoints SET position = $2, updated_at = CURRENT_TIMESTAMP WHERE name = $1",
            &[Val::text(entry.projection.name()), Val::Int(Some(last))],
        )
        .await?;
        Ok(Written {
            tx,
            last,
            events: events.len(),
        })
    }

    /// Commits what [`write_batch`](Self::write_batch) wrote; the number of events applied.
    async fn commit_batch(&self, entry: &Entry, written: Written) -> Result<usize, ProjectionError> {
        let Written { tx, last, events } = written;
        #[cfg(feature = "test-hooks")]
        if self.faults.take() {
            // The transaction is dropped uncommitted, exactly as if the process died here.
            return Err(ProjectionError::Injected);
        }
        tx.commit().await?;
        entry.position.send_replace(last);
        self.committed.notify_waiters();
        metrics::global().projected(entry.projection.name(), last, events as u64);
        Ok(events)
    }

    /// Applies everything up to the current head to every projection.
    pub async fn catch_up(&self) -> Result<(), ProjectionError> {
        self.catch_up_with(|_| {}).await
    }

    /// Like [`catch_up`](Self::catch_up), reporting events applied as it goes. The log is read
    /// once for all projections that stand at the same position (as after a rebuild).
    pub async fn catch_up_with(&self, progress: impl Fn(u64)) -> Result<(), ProjectionError> {
        self.catch_up_in(self.batch, progress).await
    }

    pub(super) async fn catch_up_in(&self, batch: i64, progress: impl Fn(u64)) -> Result<(), ProjectionError> {
        self.load_checkpoints().await?;
        let head = self.store.head().await?;
        let mut cursor = Cursor::default();
        while self.position() < head {
            self.round(batch, &progress, None, &mut cursor).await?;
        }
        Ok(())
    }

    /// Applies everything up to the current head to the projections of one lane (e.g. the
    /// read models a command-line job reads).
    pub async fn catch_up_lane(&self, lane: Lane) -> Result<(), ProjectionError> {
        self.load_checkpoints().await?;
        let head = self.store.head().await?;
        let lowest = |p: &Self| {
            p.entries
                .iter()
                .filter(|e| e.projection.lane() == lane)
                .map(|e| *e.position.borrow())
                .min()
                .unwrap_or(head)
        };
        let mut cursor = Cursor::default();
        while lowest(self) < head {
            self.round(self.batch, &|_| {}, Some(lane), &mut cursor).await?;
        }
        Ok(())
    }

    /// Reads the batch after the lowest checkpoint once and applies to every projection the
    /// part it has not applied yet; the number of events read (0: the log has nothing new).
    /// With `lane`, only that lane's projections. After a full batch (a backlog), the next one
    /// is read and prepared by `cursor` while this one's transactions run.
    async fn round(
        &self,
        batch: i64,
        progress: &impl Fn(u64),
        lane: Option<Lane>,
        cursor: &mut Cursor,
    ) -> Result<usize, ProjectionError> {
        let mine = |e: &&Entry| lane.is_none_or(|l| e.projection.lane() == l);
        let Some(from) = self.entries.iter().filter(mine).map(|e| *e.position.borrow()).min() else {
            return Ok(0);
        };
        let mut batch_read = match cursor.take(from).await? {
            Some(ahead) => ahead,
            None => Batch::read_now(self.store.follow_log(from, batch).await?, self.entries.len()),
        };
        let read = batch_read.events.len();
        if let Some(last) = batch_read.events.last().map(|e| e.position) {
            if read as i64 >= batch {
                let readers = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| mine(e))
                    .map(|(i, e)| (i, last.max(*e.position.borrow()), e.projection.clone()))
                    .collect();
                cursor.start(&self.store, last, batch, self.entries.len(), readers);
            }
        }
        let events = batch_read.events.clone();
        let mut work = Vec::new();
        for (index, entry) in self.entries.iter().enumerate().filter(|(_, e)| mine(e)) {
            let at = *entry.position.borrow();
            let start = events.partition_point(|e| e.position <= at);
            if start < events.len() {
                work.push((entry, at, &events[start..], batch_read.take(index, at)));
            }
        }
        let reads_from = work
            .iter()
            .filter(|w| w.0.projection.lane() == Lane::Reads)
            .map(|w| w.1)
            .min();
        if let Some(from) = reads_from {
            // Once per batch read, before any read model's checkpoint covering it is published:
            // a reader that sees the checkpoint sees these changes.
            self.changes
                .observe(&events[events.partition_point(|e| e.position <= from)..]);
        }
        if self.db.dialect() == Dialect::Postgres {
            // The projections' transactions are written side by side (each on its own
            // connection, none reads another's tables) and committed one by one in their
            // order, as they would be one after the other. Their checkpoints are locked first,
            // one by one in that order, so that two processes doing the same wait for each
            // other instead of each holding a lock the other needs.
            let mut begun = Vec::new();
            for (entry, at, part, prepared) in work {
                if let Some(tx) = self.begin_batch(entry, at).await? {
                    begun.push((entry, tx, part, prepared));
                }
            }
            let written =
                futures::future::try_join_all(begun.into_iter().map(|(entry, tx, part, prepared)| async move {
                    let prepared = self.prepared(entry, part, prepared).await?;
                    Ok::<_, ProjectionError>((entry, self.write_batch(entry, tx, part, prepared).await?))
                }))
                .await?;
            for (entry, written) in written {
                progress(self.commit_batch(entry, written).await? as u64);
            }
        } else {
            // SQLite has one writer: one transaction at a time.
            for (entry, at, part, prepared) in work {
                let prepared = self.prepared(entry, part, prepared).await?;
                progress(self.apply_batch(entry, at, part, prepared).await? as u64);
            }
        }
        // Freeing a batch's events takes a few milliseconds: not on the way of the next one.
        drop(batch_read);
        tokio::task::spawn_blocking(move || drop(events));
        Ok(read)
    }

    /// The work read-ahead prepared for `events`, or prepared now.
    async fn prepared(
        &self,
        entry: &Entry,
        events: &[StoredEvent],
        ahead: Option<Prepared>,
    ) -> Result<Prepared, ProjectionError> {
        match ahead {
            Some(work) => Ok(work),
            None => entry.projection.prepare(&self.store, events).await,
        }
    }

    /// Runs the projections until `stop` turns true (or its sender is dropped): one task per
    /// lane, each reading the log for its own projections.
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let lanes: Vec<_> = LANES
            .into_iter()
            .filter(|l| self.entries.iter().any(|e| e.projection.lane() == *l))
            .map(|l| tokio::spawn(self.clone().run(stop.clone(), l)))
            .collect();
        tokio::spawn(async move {
            for lane in lanes {
                let _ = lane.await;
            }
        })
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, lane: Lane) {
        if let Err(e) = self.load_checkpoints().await {
            tracing::error!(error = %e, "cannot read the projection checkpoints");
        }
        let wake = &self.wakes[lane as usize];
        let mut cursor = Cursor::default();
        loop {
            if *stop.borrow() {
                break;
            }
            let round = self.round(self.batch, &|_| {}, Some(lane), &mut cursor).await;
            if let Err(e) = self.tick(lane).await {
                tracing::error!(error = %e, ?lane, "projection tick failed");
                metrics::global().projection_errors.inc();
            }
            let pause = match round {
                Ok(0) => Some(POLL),
                // A part batch: let a few more appends gather before the next round, so the
                // projections' cost per event stays low under load.
                Ok(n) if (n as i64) < self.batch => {
                    tokio::select! {
                        _ = tokio::time::sleep(GATHER) => {}
                        changed = stop.changed() => if changed.is_err() { break },
                    }
                    None
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(error = %e, ?lane, "projection batch failed; retrying");
                    metrics::global().projection_errors.inc();
                    Some(Duration::from_secs(1))
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                    // A dropped sender means stop too.
                    changed = stop.changed() => if changed.is_err() { break },
                }
            }
        }
    }

    async fn tick(&self, lane: Lane) -> Result<(), ProjectionError> {
        for e in self.entries.iter().filter(|e| e.projection.lane() == lane) {
            let position = *e.position.borrow();
            e.projection.tick(&self.store, &self.db, position).await?;
        }
        Ok(())
    }

    /// Runs every projection's time-driven work once (after a catch-up, in tools and tests).
    pub async fn tick_all(&self) -> Result<(), ProjectionError> {
        for lane in LANES {
            self.tick(lane).await?;
        }
        Ok(())
    }

    /// Waits until every projection has applied `position` (read-your-writes), up to `limit`.
    pub async fn wait_for(&self, position: i64, limit: Duration) -> Result<(), Lagging> {
        let deadline = tokio::time::Instant::now() + limit;
        for e in self.entries.iter().filter(|e| e.projection.lane() == Lane::Reads) {
            let mut rx = e.position.subscribe();
            if tokio::time::timeout_at(deadline, rx.wait_for(|p| *p >= position))
                .await
                .is_err()
            {
                return Err(Lagging {
                    projection: e.projection.name(),
                    position: *rx.borrow(),
                    wanted: position,
                });
            }
        }
        Ok(())
    }

    /// Each projection's checkpoint and lag behind the log head.
    pub async fn status(&self) -> Result<Vec<Status>, StoreError> {
        let head = self.store.head().await?;
        let mut out = Vec::new();
        for e in &self.entries {
            let name = e.projection.name();
            let position = self.stored_checkpoint(name).await?;
            self.moved_elsewhere(e, position, true);
            let lag_seconds = if position < head {
                match self.store.read_log(position, 1).await?.first() {
                    Some(oldest) => (Utc::now() - oldest.recorded_at).num_microseconds().unwrap_or(0) as f64 / 1e6,
                    None => 0.0,
                }
            } else {
                0.0
            };
            out.push(Status {
                name,
                position,
                head,
                lag_events: head - position,
                lag_seconds: lag_seconds.max(0.0),
            });
        }
        Ok(out)
    }
}
