//! The shared feed tail: one task per process reads the feed records after its head, once per
//! wake-up, into a bounded ring of the most recent records, and publishes its head on a watch.
//! Consumers whose cursor lies in the ring are answered from memory, and long-polls at the
//! head wait on the watch, so N waiting consumers cost one query per wake-up, not N.
//!
//! Reading "after the head" misses nothing because the feed projection is the only writer of
//! `feed_records` and numbers each batch from the committed maximum while holding its
//! checkpoint lock (PostgreSQL `FOR UPDATE`, SQLite's single writer): a record is never
//! committed below one already visible. Committed records are never rewritten, so the ring is
//! never stale, only short.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::FeedText;
use crate::metrics;
use crate::projections::feed::{feed_head, feed_records_at};
use crate::store::sql::Db;
use crate::store::StoreError;

/// The ring's bounds: whichever is reached first.
pub const MAX_RECORDS: usize = 20_000;
pub const MAX_BYTES: usize = 32 << 20;
/// Looks at the database at least this often, for feed commits of other processes.
const POLL: Duration = Duration::from_millis(200);
/// Records per query when catching up.
const CHUNK: i64 = 1000;

/// Why the tail queried: a feed checkpoint this process saw move, or its periodic look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Commit,
    Poll,
}

/// Every committed record in `(base, head]`, in position order.
struct Ring {
    records: VecDeque<(i64, String)>,
    bytes: usize,
    base: i64,
    head: i64,
}

pub struct Tail {
    db: Db,
    ring: RwLock<Ring>,
    head: watch::Sender<i64>,
    /// True while the task runs and has read the head once: before and after, consumers read
    /// the database as they would without a tail.
    live: AtomicBool,
    max_records: usize,
    max_bytes: usize,
}

impl Tail {
    pub fn new(db: Db) -> Self {
        Self::with_bounds(db, MAX_RECORDS, MAX_BYTES)
    }

    pub fn with_bounds(db: Db, max_records: usize, max_bytes: usize) -> Self {
        Self {
            db,
            ring: RwLock::new(Ring {
                records: VecDeque::new(),
                bytes: 0,
                base: 0,
                head: 0,
            }),
            head: watch::Sender::new(0),
            live: AtomicBool::new(false),
            max_records: max_records.max(1),
            max_bytes,
        }
    }

    /// The tail's head (0 before it has read the database).
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// Runs the tail until `stop` turns true (or its sender goes). `moved` is the feed
    /// projection's checkpoint: it moves on this process's feed commits and when the
    /// projection runner finds another process committed.
    pub fn spawn(
        self: &Arc<Self>,
        mut moved: watch::Receiver<i64>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut cause = Cause::Poll;
            let mut watching = true;
            loop {
                if *stop.borrow() {
                    break;
                }
                // Marked seen before the query, so that a commit during it wakes us again
                // (after it, the commit would wait for the next 200 ms look).
                moved.borrow_and_update();
                if let Err(e) = tail.advance(cause).await {
                    tracing::error!(error = %e, "the feed tail cannot read the feed; retrying");
                    metrics::global().feed_tail_errors.inc();
                }
                cause = tokio::select! {
                    changed = moved.changed(), if watching => {
                        // Without the projections only the poll is left.
                        watching = changed.is_ok();
                        Cause::Commit
                    }
                    _ = tokio::time::sleep(POLL) => Cause::Poll,
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        continue;
                    }
                };
            }
            tail.live.store(false, Ordering::SeqCst);
        })
    }

    /// One wake-up: the records after the head (one query unless far behind), into the ring.
    async fn advance(&self, cause: Cause) -> Result<(), StoreError> {
        if !self.live.load(Ordering::SeqCst) {
            // Start at the current head: consumers behind it read the database.
            let head = feed_head(&self.db).await?;
            metrics::global().feed_tail_query(cause);
            {
                let mut ring = self.ring.write().expect("feed tail");
                ring.base = head;
                ring.head = head;
            }
            self.head.send_replace(head);
            self.live.store(true, Ordering::SeqCst);
            return Ok(());
        }
        loop {
            let after = self.head();
            let rows = feed_records_at(&self.db, after, CHUNK).await?;
            metrics::global().feed_tail_query(cause);
            let Some(last) = rows.last().map(|r| r.0) else {
                return Ok(());
            };
            let full = rows.len() as i64 == CHUNK;
            self.append(rows);
            self.head.send_replace(last);
            if !full {
                return Ok(());
            }
        }
    }

    fn append(&self, rows: Vec<(i64, String)>) {
        let mut ring = self.ring.write().expect("feed tail");
        for (position, text) in rows {
            ring.bytes += text.len();
            ring.records.push_back((position, text));
            ring.head = position;
        }
        while ring.records.len() > self.max_records || (ring.bytes > self.max_bytes && ring.records.len() > 1) {
            let Some((position, text)) = ring.records.pop_front() else {
                break;
            };
            ring.bytes -= text.len();
            ring.base = position;
        }
    }

    /// A page from memory, or `None` when the database must answer: the tail is not running,
    /// `after` is before the ring, or the caller does not wait and the ring cannot fill the
    /// page (the tail may be a moment behind the database, and an immediate answer should
    /// show all that is committed; a full page is the same either way, records being
    /// immutable and gapless).
    pub async fn page(&self, after: i64, limit: i64, wait: Duration) -> Option<FeedText> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut head = self.head.subscribe();
        loop {
            match self.slice(after, limit) {
                Some(None) => return None,
                Some(Some(page)) if wait.is_zero() && (page.records.len() as i64) < limit => return None,
                Some(page) => return page,
                None if wait.is_zero() => return None,
                None => {}
            }
            // Wait for the head to pass `after`, without a query; at the deadline, an empty page.
            let _waiting = Waiting::start();
            let passed = tokio::time::timeout_at(deadline, head.wait_for(|h| *h > after)).await;
            match passed {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return None,
                Err(_) => {
                    let head = self.ring.read().expect("feed tail").head;
                    return Some(FeedText {
                        records: Vec::new(),
                        next_after: after,
                        head,
                    });
                }
            }
        }
    }

    /// `Some(None)`: `after` is before the ring; `None`: nothing after `after` yet.
    fn slice(&self, after: i64, limit: i64) -> Option<Option<FeedText>> {
        let ring = self.ring.read().expect("feed tail");
        if after < ring.base {
            return Some(None);
        }
        if after >= ring.head {
            return None;
        }
        let from = ring.records.partition_point(|(p, _)| *p <= after);
        let records: Vec<&(i64, String)> = ring.records.range(from..).take(limit.max(1) as usize).collect();
        let next_after = records.last().map_or(after, |r| r.0);
        Some(Some(FeedText {
            records: records.into_iter().map(|r| r.1.clone()).collect(),
            next_after,
            head: ring.head,
        }))
    }
}

/// Counts a consumer waiting on the tail while it waits (the `/metrics` gauge).
struct Waiting;

impl Waiting {
    fn start() -> Self {
        metrics::global().feed_waiting.fetch_add(1, Ordering::Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::global().feed_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(from: i64, to: i64) -> Vec<(i64, String)> {
        (from..=to).map(|p| (p, format!("{{\"position\":{p}}}"))).collect()
    }

    async fn tail(max_records: usize, max_bytes: usize) -> Tail {
        // Never queried here (the ring is filled by hand); a database only to build one.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect_sqlite(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let t = Tail::with_bounds(db, max_records, max_bytes);
        t.live.store(true, Ordering::SeqCst);
        t
    }

    #[tokio::test]
    async fn the_ring_keeps_the_newest_records_within_its_bounds() {
        let t = tail(5, usize::MAX).await;
        t.append(rows(1, 8));
        t.head.send_replace(8);
        // Positions 4..=8 are kept: after 3 is answered, after 2 is not.
        assert!(t.page(2, 2, Duration::ZERO).await.is_none());
        let page = t.page(3, 2, Duration::ZERO).await.unwrap();
        assert_eq!(page.records, vec!["{\"position\":4}", "{\"position\":5}"]);
        assert_eq!((page.next_after, page.head), (5, 8));
        // A part page or nothing, without waiting: the database answers; waiting, memory.
        assert!(t.page(3, 10, Duration::ZERO).await.is_none());
        assert!(t.page(8, 10, Duration::ZERO).await.is_none());
        assert_eq!(t.page(3, 10, Duration::from_secs(1)).await.unwrap().records.len(), 5);

        let t = tail(100, 30).await;
        t.append(rows(1, 5));
        // 14 bytes each: two fit in 30.
        assert_eq!(t.ring.read().unwrap().base, 3);
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_when_the_head_passes_its_cursor() {
        let t = Arc::new(tail(10, usize::MAX).await);
        let waiting = {
            let t = t.clone();
            tokio::spawn(async move { t.page(0, 10, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        t.append(rows(1, 2));
        t.head.send_replace(2);
        let page = waiting.await.unwrap().unwrap();
        assert_eq!((page.records.len(), page.next_after, page.head), (2, 2, 2));
        // Nothing comes: an empty page at the deadline.
        let page = t.page(2, 10, Duration::from_millis(50)).await.unwrap();
        assert_eq!((page.records.len(), page.next_after, page.head), (0, 2, 2));
    }
}
