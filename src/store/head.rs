//! Reads of the log head shared by concurrent callers.
//!
//! A consistent read must include every event committed before it arrived, so it needs a head
//! read that *started* after its arrival: a query already running may have begun before a
//! commit the caller has seen acknowledged. Callers arriving while a query runs therefore
//! wait for the next one, which every one of them shares. Under 200 concurrent readers this
//! turns 200 identical queries into two or three per round trip, and never answers from a
//! head read that began before the caller did.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::sql::Db;
use super::StoreError;

/// The last finished round and its answer.
type Round = (u64, Result<i64, Arc<StoreError>>);

#[derive(Debug, Default)]
struct State {
    /// Rounds started so far (the running one included).
    started: u64,
    running: bool,
    /// Someone arrived while a round was running: start another when it ends.
    wanted: bool,
}

/// Shared head reads of one store; cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedHead {
    state: Arc<Mutex<State>>,
    done: watch::Sender<Round>,
}

impl SharedHead {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            done: watch::Sender::new((0, Ok(0))),
        }
    }

    /// The log head, read by a query that started after this call.
    pub async fn read(&self, db: &Db) -> Result<i64, StoreError> {
        let mut rx = self.done.subscribe();
        let target = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.running {
                s.wanted = true;
                s.started + 1
            } else {
                s.running = true;
                s.started += 1;
                // The query runs in its own task: a caller that goes away (a closed connection)
                // must not leave the others waiting.
                tokio::spawn(self.clone().rounds(db.clone()));
                s.started
            }
        };
        let round = rx
            .wait_for(|(r, _)| *r >= target)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        round.1.clone().map_err(StoreError::Batch)
    }

    /// Runs rounds while callers keep arriving during them.
    async fn rounds(self, db: Db) {
        loop {
            let answer = db
                .fetch_int("SELECT last_position FROM log_head", &[])
                .await
                .map_err(Arc::new);
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let _previous = self.done.send_replace((s.started, answer));
            if !s.wanted {
                s.running = false;
                return;
            }
            s.wanted = false;
            s.started += 1;
        }
    }
}

impl Default for SharedHead {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_sees_each_commit_acknowledged_before_its_call() {
        use std::sync::atomic::{AtomicI64, Ordering};
        const LAST: i64 = 2000;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let store = crate::store::Store::connect(&url).await.unwrap();
        let (heads, db) = (SharedHead::new(), store.db().clone());
        let acknowledged = Arc::new(AtomicI64::new(0));
        let writer = {
            let (db, acknowledged) = (db.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 1..=LAST {
                    db.execute(
                        "UPDATE log_head SET last_position = $1",
                        &[crate::store::sql::Val::int(n)],
                    )
                    .await
                    .unwrap();
                    acknowledged.store(n, Ordering::SeqCst);
                }
            })
        };
        let readers: Vec<_> = (0..16)
            .map(|_| {
                let (heads, db, acknowledged) = (heads.clone(), db.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    let mut reads = 0;
                    while acknowledged.load(Ordering::SeqCst) < LAST {
                        let before = acknowledged.load(Ordering::SeqCst);
                        let head = heads.read(&db).await.unwrap();
                        assert!(head >= before, "a head read missed commit {before} (saw {head})");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        writer.await.unwrap();
        let mut reads = 0;
        for r in readers {
            reads += r.await.unwrap();
        }
        assert!(reads > 16, "the readers ran ({reads} reads)");
        assert_eq!(heads.read(&db).await.unwrap(), LAST);
    }
}
