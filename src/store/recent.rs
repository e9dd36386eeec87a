//! The log's latest events as this process committed them, for the runners that follow the
//! log (the read models, the feed, the audit chain): they read what this process has just
//! written from memory instead of reading it back from the database, three times over.
//!
//! What the window holds is exactly what the database holds at those positions: an append
//! hands in its events only after its commit succeeded, with the text, positions and instant
//! the database stored. The window is always one gapless run of positions; events that do not
//! continue it (another process wrote in between) start it afresh, so a position it lacks is
//! read from the database as before. Anything that must check the database itself (an audit
//! verification, an export) reads the log, never this.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::StoredEvent;

/// Events the window keeps at least (whole appends are dropped from its front beyond this): a
/// few import batches, or seconds of appends (about 700 bytes each).
const KEEP: usize = 32_768;

/// The appends of one gapless run of positions, oldest first, and how many events they hold.
#[derive(Debug, Default)]
struct Window {
    appends: VecDeque<Arc<Vec<StoredEvent>>>,
    events: usize,
}

impl Window {
    fn first(&self) -> Option<i64> {
        self.appends.front()?.first().map(|e| e.position)
    }
    fn last(&self) -> Option<i64> {
        self.appends.back()?.last().map(|e| e.position)
    }
}

#[derive(Debug, Default)]
pub(super) struct Recent {
    window: Mutex<Window>,
}

impl Recent {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the events of a committed append, in position order.
    pub(super) fn committed(&self, events: Vec<StoredEvent>) {
        let Some(first) = events.first().map(|e| e.position) else {
            return;
        };
        let mut window = self.window();
        if window.last().is_some_and(|last| last + 1 != first) {
            // Another writer's events lie in between (or this one's came out of order).
            *window = Window::default();
        }
        window.events += events.len();
        window.appends.push_back(Arc::new(events));
        while window.appends.front().is_some_and(|a| window.events - a.len() >= KEEP) {
            if let Some(a) = window.appends.pop_front() {
                window.events -= a.len();
            }
        }
    }

    /// The first and last position the window holds.
    pub(super) fn range(&self) -> Option<(i64, i64)> {
        let window = self.window();
        Some((window.first()?, window.last()?))
    }

    /// The events after `after`, at most `limit`, if the window holds the next position; they
    /// are what the log holds there, though the log may already hold more. The events are
    /// copied outside the lock, so an append is never held up by a reader.
    pub(super) fn after(&self, after: i64, limit: i64) -> Option<Vec<StoredEvent>> {
        let appends: Vec<Arc<Vec<StoredEvent>>> = {
            let window = self.window();
            let (first, last) = (window.first()?, window.last()?);
            if after < first - 1 || after >= last || limit <= 0 {
                return None;
            }
            let upto = after.saturating_add(limit);
            window
                .appends
                .iter()
                .filter(|a| {
                    let (a_first, a_last) = (a[0].position, a[a.len() - 1].position);
                    a_last > after && a_first <= upto
                })
                .cloned()
                .collect()
        };
        Some(
            appends
                .iter()
                .flat_map(|a| a.iter())
                .filter(|e| e.position > after)
                .take(limit as usize)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Json;

    fn event(position: i64) -> StoredEvent {
        StoredEvent {
            position,
            aggregate_type: "person".into(),
            aggregate_id: format!("{position}"),
            sequence: 1,
            event_type: "registered".into(),
            event_version: "1".into(),
            payload: Json::of(&serde_json::json!({ "n": position })),
            metadata: Json::of(&serde_json::json!({})),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn positions(events: Option<Vec<StoredEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.position).collect())
    }

    #[test]
    fn the_window_answers_only_from_a_gapless_run_it_holds() {
        let recent = Recent::default();
        assert_eq!(positions(recent.after(0, 10)), None, "an empty window answers nothing");
        recent.committed((1..=3).map(event).collect());
        recent.committed((4..=5).map(event).collect());
        assert_eq!(positions(recent.after(0, 10)), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(positions(recent.after(2, 2)), Some(vec![3, 4]));
        assert_eq!(positions(recent.after(5, 10)), None, "nothing after the window's end");
        // Positions 6 and 7 were written by another process: the window starts again.
        recent.committed((8..=9).map(event).collect());
        assert_eq!(positions(recent.after(5, 10)), None);
        assert_eq!(positions(recent.after(3, 10)), None);
        assert_eq!(positions(recent.after(7, 10)), Some(vec![8, 9]));
        assert_eq!(positions(recent.after(8, 10)), Some(vec![9]));
    }

    #[test]
    fn the_window_keeps_only_the_latest_events() {
        let recent = Recent::default();
        let n = KEEP as i64 + 1100;
        for start in (1..=n).step_by(1000) {
            recent.committed((start..=(start + 999).min(n)).map(event).collect());
        }
        // Whole appends go: 1..=1000 no longer, 1001..=2000 still.
        assert_eq!(positions(recent.after(999, 1)), None, "the oldest are gone");
        assert_eq!(positions(recent.after(1000, 2)), Some(vec![1001, 1002]));
        assert_eq!(positions(recent.after(n - 2, 10)), Some(vec![n - 1, n]));
    }
}
