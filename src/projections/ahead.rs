//! Reading ahead while a backlog is applied: the next batch of the log is read, and each
//! projection's log-only work on it ([`Projection::prepare`]) done, in a task of its own while
//! the current batch's transactions run; and the batch after that is read while the next one
//! is prepared, so that reading, preparing and writing each take their own batch. Nothing is
//! written ahead: a projection's rows and checkpoint still move in its one transaction per
//! batch, in log order, and prepared work is used only by a projection that stands exactly
//! where it was prepared from.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{Prepared, Projection, ProjectionError};
use crate::store::{Store, StoreError, StoredEvent};

/// A batch of the log, with the work prepared for it so far.
pub(super) struct Batch {
    pub(super) events: Arc<Vec<StoredEvent>>,
    /// Per projection (by its index in the runner): the checkpoint it was prepared from and
    /// its work.
    work: Vec<Option<(i64, Prepared)>>,
}

impl Batch {
    /// A batch read in the round that applies it (nothing prepared).
    pub(super) fn read_now(events: Vec<StoredEvent>, projections: usize) -> Self {
        Self {
            events: Arc::new(events),
            work: (0..projections).map(|_| None).collect(),
        }
    }

    /// The work prepared for projection `index` if it was prepared from checkpoint `at`.
    pub(super) fn take(&mut self, index: usize, at: i64) -> Option<Prepared> {
        match self.work.get_mut(index)?.take() {
            Some((from, work)) if from == at => Some(work),
            _ => None,
        }
    }
}

/// A projection the next batch is prepared for: its index, the checkpoint it will stand at
/// when the batch comes to be applied, and itself.
pub(super) type Reader = (usize, i64, Arc<dyn Projection>);

/// A read of the log begun early: where it starts, its limit, and the read.
type Read = (i64, i64, JoinHandle<Result<Vec<StoredEvent>, StoreError>>);

/// A batch being read and prepared, and the read it began of the batch after it.
type Preparing = JoinHandle<Result<(Batch, Option<Read>), ProjectionError>>;

/// The read-ahead of one runner (a lane, a catch-up): at most one batch being prepared, and
/// the read of the one after it.
#[derive(Default)]
pub(super) struct Cursor {
    ahead: Option<(i64, Preparing)>,
    /// Begun when the batch being prepared was read (a full batch: the log goes on).
    next_read: Option<Read>,
    /// Reads the database only, never what this process has just committed (a verification
    /// checks what the database holds).
    database_only: bool,
}

/// The `limit` events after `after`, as a runner follows the log or from the database only.
async fn read(store: &Store, after: i64, limit: i64, database_only: bool) -> Result<Vec<StoredEvent>, StoreError> {
    if database_only {
        store.read_log(after, limit).await
    } else {
        store.follow_log(after, limit).await
    }
}

impl Cursor {
    /// A cursor that reads the database only.
    pub(super) fn database_only() -> Self {
        Self {
            ahead: None,
            next_read: None,
            database_only: true,
        }
    }

    /// Starts reading the `limit` events after `from` and preparing them for `readers`.
    pub(super) fn start(&mut self, store: &Store, from: i64, limit: i64, projections: usize, readers: Vec<Reader>) {
        if let Some((_, task)) = self.ahead.take() {
            task.abort();
        }
        let early = match self.next_read.take() {
            Some((start, l, read)) if start == from && l == limit => Some(read),
            Some((_, _, read)) => {
                read.abort();
                None
            }
            None => None,
        };
        let store = store.clone();
        let database_only = self.database_only;
        let task = tokio::spawn(async move {
            let events = match early {
                Some(read) => read
                    .await
                    .map_err(|e| ProjectionError::corrupt(format!("read-ahead task failed: {e}")))??,
                None => read(&store, from, limit, database_only).await?,
            };
            let next = match events.last() {
                Some(last) if events.len() as i64 >= limit => {
                    let (store, after) = (store.clone(), last.position);
                    Some((
                        after,
                        limit,
                        tokio::spawn(async move { read(&store, after, limit, database_only).await }),
                    ))
                }
                _ => None,
            };
            let mut batch = Batch::read_now(events, projections);
            for (index, at, projection) in readers {
                let start = batch.events.partition_point(|e| e.position <= at);
                if start < batch.events.len() {
                    let work = projection.prepare(&store, &batch.events[start..]).await?;
                    batch.work[index] = Some((at, work));
                }
            }
            Ok((batch, next))
        });
        self.ahead = Some((from, task));
    }

    /// The batch read ahead from `from`, if that is where the read-ahead started (a
    /// read-ahead from elsewhere is dropped: another process moved a checkpoint meanwhile).
    pub(super) async fn take(&mut self, from: i64) -> Result<Option<Batch>, ProjectionError> {
        match self.ahead.take() {
            Some((start, task)) if start == from => match task.await {
                Ok(done) => {
                    let (batch, next) = done?;
                    self.next_read = next;
                    Ok(Some(batch))
                }
                Err(e) => Err(ProjectionError::corrupt(format!("read-ahead task failed: {e}"))),
            },
            Some((_, task)) => {
                task.abort();
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn cancel(&mut self) {
        if let Some((_, task)) = self.ahead.take() {
            task.abort();
        }
        if let Some((_, _, read)) = self.next_read.take() {
            read.abort();
        }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.cancel();
    }
}
