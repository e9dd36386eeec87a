//! Rows of another hash-chained log that commit in the same statement as a batch's events: a
//! write's access record rides with its event, so the write waits for one commit instead of
//! two. The store knows only rows and a guarded one-row head; the log that owns them (the
//! access log) numbers and chains them, and learns from [`Boarding::settle`] whether they
//! were written.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::sql::{Ty, Val};

/// What one request carries for the side log (the log's owner knows its type).
#[derive(Clone)]
pub struct Rider(pub Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Rider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rider")
    }
}

/// Rows of one table of the side log.
pub struct SideInsert {
    pub table: &'static str,
    pub cols: &'static [(&'static str, Ty)],
    pub rows: Vec<Vec<Val>>,
}

/// A batch's riders numbered and chained after the side log's head as this process knows it.
/// The owner holds that head until the boarding is settled, so nothing else chains from it
/// meanwhile; a boarding dropped unsettled counts as not written.
pub struct Boarding {
    /// The head table: one row (`id = 1`) of `last_id`, `last_hash`. The statement moves it
    /// from `expected` to `next` only if it is still at `expected` (another process may have
    /// written since), and writes nothing at all otherwise.
    pub head_table: &'static str,
    pub expected: (i64, Vec<u8>),
    pub next: (i64, Vec<u8>),
    pub inserts: Vec<SideInsert>,
    settle: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Boarding {
    pub fn new(
        head_table: &'static str,
        expected: (i64, Vec<u8>),
        next: (i64, Vec<u8>),
        inserts: Vec<SideInsert>,
        settle: impl FnOnce(bool) + Send + 'static,
    ) -> Self {
        Self {
            head_table,
            expected,
            next,
            inserts,
            settle: Some(Box::new(settle)),
        }
    }

    /// Tells the owner whether the rows committed.
    pub fn settle(mut self, written: bool) {
        if let Some(f) = self.settle.take() {
            f(written);
        }
    }
}

impl Drop for Boarding {
    fn drop(&mut self) {
        if let Some(f) = self.settle.take() {
            f(false);
        }
    }
}

/// The owner of a side log, as the writer sees it.
#[async_trait::async_trait]
pub trait SideLog: Send + Sync {
    /// Numbers and chains one batch's riders, in order. None: this process does not know the
    /// side log's head now (the riders are then written by their owner's own path).
    async fn board(&self, riders: Vec<Rider>) -> Option<Boarding>;
}
