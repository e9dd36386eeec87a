//! Answers kept in memory as the JSON they were given with, each with the log position it
//! describes, the day it was worked out for (when the answer depends on "today") and the
//! households it read.
//!
//! A timeline or person view at position P is read from the person's stream and from rows of
//! the read models that only the person's events and their households' events write
//! (attributes, periods, memberships, intervals, cards, branches); the view of an uninsured
//! register head also from the household's list of members and their rows. So it is still
//! the answer at any later position Q, on the same day, as long as none of those changed in
//! (P, Q]; [`Changes`] tells, for every position the read models have committed. A kept
//! answer is never given for a position before its own, and one the log has made stale is
//! worked out again: memory saves work, it never changes an answer.
//!
//! The JSON is kept lz4-compressed (about a third of its size): a ward's timelines fit in the
//! default budget, and decompressing one costs microseconds against a query's round trip.

use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDate;
use cqrs_es::Aggregate;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::domain::{Household, Person};
use crate::metrics::Counter;
use crate::projections::Changes;

/// Which answer about a person an entry is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Resource {
    /// `GET /v1/persons/{id}/timeline`.
    Timeline = 0,
    /// `GET /v1/persons/{id}`.
    Person = 1,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Timeline => "timeline",
            Resource::Person => "person",
        }
    }
}

/// What an answer was read from, besides the person's own stream.
#[derive(Default)]
pub struct Sources {
    /// The day the answer is for, when it depends on the day.
    pub today: Option<NaiveDate>,
    /// Other streams, and sets of rows ([`Changes::touch`]), as (kind, id).
    pub streams: Vec<(&'static str, String)>,
}

impl Sources {
    /// Household `id`'s stream (its card, branches and facts).
    pub fn household(&mut self, id: &str) {
        self.streams.push((Household::TYPE, id.to_owned()));
    }
}

/// One kept answer.
struct Kept {
    position: i64,
    today: Option<NaiveDate>,
    streams: Box<[(&'static str, String)]>,
    /// The answer's JSON, compressed with its length in front.
    json: Box<[u8]>,
}

type Key = (Resource, String);

/// What an entry costs: its compressed JSON, ids and bookkeeping.
#[derive(Clone)]
struct Size;

impl Weighter<Key, Arc<Kept>> for Size {
    fn weight(&self, (_, id): &Key, kept: &Arc<Kept>) -> u64 {
        (kept.json.len() + id.len() + kept.streams.iter().map(|(_, s)| s.len() + 40).sum::<usize>() + 104) as u64
    }
}

/// Answers given before, up to a budget in bytes (the least recently useful go first).
pub struct Answers {
    kept: Option<Cache<Key, Arc<Kept>, Size>>,
    /// Per [`Resource`]: answers given from memory, and worked out from the database.
    hits: [Counter; 2],
    misses: [Counter; 2],
}

impl Answers {
    /// A memory of at most `budget` bytes; 0 keeps nothing.
    pub fn new(budget: u64) -> Self {
        // quick_cache sizes its tables from an estimate of the entries: about 1.2 KiB each.
        let kept = (budget > 0).then(|| Cache::with_weighter((budget / 1200).max(16) as usize, budget, Size));
        Self {
            kept,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// The kept answer about person `id`, if it is still the answer at `position` on `today`.
    pub fn get(
        &self,
        resource: Resource,
        id: &str,
        position: i64,
        today: NaiveDate,
        changes: &Changes,
    ) -> Option<Bytes> {
        let kept = self.kept.as_ref().and_then(|c| c.get(&(resource, id.to_owned())));
        let answer = kept
            .filter(|k| k.today.is_none_or(|d| d == today) && still_valid(k, id, position, changes))
            // A corrupt entry (it cannot be: it was compressed here) is a miss, not an error.
            .and_then(|k| lz4_flex::decompress_size_prepended(&k.json).ok().map(Bytes::from));
        match answer {
            Some(_) => self.hits[resource as usize].inc(),
            None => self.misses[resource as usize].inc(),
        }
        answer
    }

    /// Keeps `json`, the answer about person `id` at `position`, read from `read`.
    pub fn put(&self, resource: Resource, id: &str, position: i64, read: Sources, json: &[u8]) {
        let Some(cache) = &self.kept else { return };
        let key = (resource, id.to_owned());
        if cache
            .get(&key)
            .is_some_and(|k| k.position >= position && k.today == read.today)
        {
            // A concurrent read kept a later answer: keep that one.
            return;
        }
        let kept = Kept {
            position,
            today: read.today,
            streams: read.streams.into(),
            json: lz4_flex::compress_prepend_size(json).into(),
        };
        cache.insert(key, Arc::new(kept));
    }

    /// Answers of `resource` given from memory so far.
    pub fn hits(&self, resource: Resource) -> u64 {
        self.hits[resource as usize].get()
    }

    /// Answers of `resource` worked out from the database so far.
    pub fn misses(&self, resource: Resource) -> u64 {
        self.misses[resource as usize].get()
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.kept.as_ref().map_or(0, Cache::weight)
    }

    /// The memory's lines of `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP kokuho_read_answers_total Person reads answered, by resource and source (memory: kept and still valid).\n\
             # TYPE kokuho_read_answers_total counter\n",
        );
        for r in [Resource::Timeline, Resource::Person] {
            out.push_str(&format!(
                "kokuho_read_answers_total{{resource=\"{0}\",source=\"memory\"}} {1}\n\
                 kokuho_read_answers_total{{resource=\"{0}\",source=\"database\"}} {2}\n",
                r.name(),
                self.hits(r),
                self.misses(r)
            ));
        }
        out.push_str(&format!(
            "# HELP kokuho_read_memory_bytes Bytes of answers kept in memory.\n\
             # TYPE kokuho_read_memory_bytes gauge\nkokuho_read_memory_bytes {}\n",
            self.weight()
        ));
        out
    }
}

/// Whether an answer kept at `k.position` is the answer at `position`: not earlier than it,
/// and none of the streams it was read from changed since.
fn still_valid(k: &Kept, id: &str, position: i64, changes: &Changes) -> bool {
    k.position <= position
        && changes.last(Person::TYPE, id) <= k.position
        && k.streams.iter().all(|(kind, s)| changes.last(kind, s) <= k.position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Resource::{Person, Timeline};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    fn from(households: &[&str]) -> Sources {
        let mut s = Sources::default();
        households.iter().for_each(|h| s.household(h));
        s
    }

    #[test]
    fn a_kept_answer_is_given_only_where_nothing_it_depends_on_changed() {
        let changes = Changes::new();
        let t = Answers::new(1 << 20);
        let json = br#"{"person_id":"7","events":[]}"#;
        assert_eq!(t.get(Timeline, "7", 10, day(1), &changes), None);
        t.put(Timeline, "7", 10, from(&["500"]), json);
        assert_eq!(t.get(Timeline, "7", 10, day(1), &changes).as_deref(), Some(&json[..]));
        let later = t.get(Timeline, "7", 12, day(2), &changes);
        assert_eq!(
            later.as_deref(),
            Some(&json[..]),
            "later, another day: still the answer"
        );
        assert_eq!(
            t.get(Timeline, "7", 9, day(1), &changes),
            None,
            "never for a position before its own"
        );
        assert_eq!(t.get(Timeline, "8", 12, day(1), &changes), None);
        assert_eq!(t.get(Person, "7", 12, day(1), &changes), None, "another resource");
        assert_eq!((t.hits(Timeline), t.misses(Timeline), t.misses(Person)), (2, 3, 1));
    }

    #[test]
    fn an_answer_for_a_day_is_given_on_that_day_only() {
        let changes = Changes::new();
        let t = Answers::new(1 << 20);
        let today = Sources {
            today: Some(day(1)),
            ..Sources::default()
        };
        t.put(Person, "7", 10, today, b"{}");
        assert!(t.get(Person, "7", 11, day(1), &changes).is_some());
        assert_eq!(t.get(Person, "7", 11, day(2), &changes), None, "the next day");
    }

    #[test]
    fn a_change_of_the_person_or_a_household_it_names_makes_it_stale() {
        use crate::store::{Json, StoredEvent};
        let event = |kind: &str, id: &str, position| StoredEvent {
            position,
            aggregate_type: kind.into(),
            aggregate_id: id.into(),
            sequence: 1,
            event_type: "e".into(),
            event_version: "1".into(),
            payload: Json::of(&serde_json::json!({})),
            metadata: Json::of(&serde_json::json!({})),
            recorded_at: chrono::Utc::now(),
        };
        let changes = Changes::new();
        let t = Answers::new(1 << 20);
        let get = |position| t.get(Timeline, "7", position, day(1), &changes);
        t.put(Timeline, "7", 10, from(&["500"]), b"{}");
        changes.observe(&[
            event(crate::domain::Person::TYPE, "8", 11),
            event(Household::TYPE, "501", 12),
        ]);
        assert!(get(12).is_some(), "other streams changed");
        changes.observe(&[event(Household::TYPE, "500", 13)]);
        assert_eq!(get(13), None, "its household changed");
        t.put(Timeline, "7", 13, from(&["500"]), b"{}");
        changes.observe(&[event(crate::domain::Person::TYPE, "7", 14)]);
        assert_eq!(get(14), None, "the person changed");
        t.put(Timeline, "7", 14, from(&[]), b"{}");
        t.put(Timeline, "7", 12, from(&[]), b"{\"older\":1}");
        assert_eq!(
            get(14).as_deref(),
            Some(&b"{}"[..]),
            "a later answer is not replaced by an earlier one"
        );
        changes.unseen_through(15);
        assert_eq!(get(15), None, "changes another process made");
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let changes = Changes::new();
        let t = Answers::new(64 * 1024);
        // Answers of 1 KiB that compress poorly: a few hundred bytes each, kept.
        for i in 0..1000u32 {
            let json: Vec<u8> = (0..1024u32)
                .map(|b| (b.wrapping_mul(2_654_435_761).wrapping_add(i) >> 13) as u8)
                .collect();
            t.put(Timeline, &i.to_string(), 1, from(&[]), &json);
        }
        assert!(t.weight() <= 64 * 1024, "{} bytes kept", t.weight());
        let kept = (0..1000u32)
            .filter(|i| t.get(Timeline, &i.to_string(), 1, day(1), &changes).is_some())
            .count();
        // Each entry weighs at least its bookkeeping (104 bytes): far fewer than 1,000 fit.
        assert!((20..=64 * 1024 / 104).contains(&kept), "{kept} answers kept");
        let none = Answers::new(0);
        none.put(Timeline, "1", 1, from(&[]), b"{}");
        assert_eq!(none.get(Timeline, "1", 1, day(1), &changes), None);
    }
}
