//! The last log position at which each stream changed, as far as this process's read models
//! know: what an answer kept in memory checks before it is given again.
//!
//! The runner records the streams of each batch it reads for the read models before any of
//! their checkpoints covering it is published, so a reader that sees a committed position `Q`
//! also sees every change at or before `Q`. Checkpoints moved by another process (or by a rebuild) carry changes nobody
//! here saw: they raise a floor under every stream instead.
//!
//! Streams share a fixed array of slots by hash: a collision can only make a stream look
//! changed when it was not (an answer is worked out again), never the reverse, and the memory
//! stays 8 MiB whatever the number of streams.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::StoredEvent;

/// The kind of a household's list of members in [`Changes::touch`] (written by its members'
/// events, not by the household's stream).
pub const MEMBERS: &str = "members";

/// 2^20 slots: about one in seven of a 150,000-stream ward's streams shares its slot.
const SLOTS: usize = 1 << 20;

pub struct Changes {
    slots: Box<[AtomicI64]>,
    /// Every stream counts as changed at this position (changes this process did not see).
    floor: AtomicI64,
}

impl Changes {
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicI64::new(0)).collect(),
            floor: AtomicI64::new(0),
        }
    }

    fn slot(&self, aggregate_type: &str, id: &str) -> &AtomicI64 {
        // A fixed hasher: the same stream always lands in the same slot.
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((aggregate_type, id));
        &self.slots[(h as usize) & (SLOTS - 1)]
    }

    /// Records the streams `events` changed (before their checkpoint is published).
    pub(crate) fn observe(&self, events: &[StoredEvent]) {
        for e in events {
            self.slot(&e.aggregate_type, &e.aggregate_id)
                .fetch_max(e.position, Ordering::SeqCst);
        }
    }

    /// Records that the rows of `(kind, id)` (not a stream: a set of rows such as a
    /// household's members, [`MEMBERS`]) changed at `position`.
    pub(crate) fn touch(&self, kind: &str, id: &str, position: i64) {
        self.slot(kind, id).fetch_max(position, Ordering::SeqCst);
    }

    /// Every stream may have changed up to `position` without this process seeing the events
    /// (a checkpoint another process or a rebuild moved).
    pub(crate) fn unseen_through(&self, position: i64) {
        self.floor.fetch_max(position, Ordering::SeqCst);
    }

    /// The last position at which stream `(aggregate_type, id)` (or set of rows, see
    /// [`touch`](Self::touch)) may have changed (0: never).
    pub fn last(&self, aggregate_type: &str, id: &str) -> i64 {
        self.slot(aggregate_type, id)
            .load(Ordering::SeqCst)
            .max(self.floor.load(Ordering::SeqCst))
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, id: &str, position: i64) -> StoredEvent {
        StoredEvent {
            aggregate_type: kind.into(),
            aggregate_id: id.into(),
            position,
            sequence: 1,
            event_type: "registered".into(),
            event_version: "1".into(),
            payload: crate::store::Json::of(&serde_json::json!({})),
            metadata: crate::store::Json::of(&serde_json::json!({})),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_stream_changes_at_its_last_observed_event_or_the_floor() {
        let c = Changes::new();
        assert_eq!(c.last("person", "1"), 0);
        c.observe(&[
            event("person", "1", 5),
            event("household", "1", 7),
            event("person", "1", 3),
        ]);
        assert_eq!(c.last("person", "1"), 5, "the highest position, not the last seen");
        assert_eq!(c.last("household", "1"), 7, "the type is part of the stream's name");
        c.unseen_through(6);
        assert_eq!(c.last("person", "1"), 6);
        assert_eq!(c.last("person", "2"), 6);
        assert_eq!(c.last("household", "1"), 7);
        c.unseen_through(2);
        assert_eq!(c.last("person", "2"), 6, "the floor never goes down");
    }
}
