//! Process metrics, exported in the Prometheus text format on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// HTTP responses by status class.
const STATUSES: [u16; 10] = [200, 201, 400, 404, 409, 413, 422, 429, 500, 503];

#[derive(Default)]
pub struct Metrics {
    pub events_appended: Counter,
    pub append_batches: Counter,
    pub commands_refused: Counter,
    /// Registrations decided without reading their stream (see `commands`): answered so, or
    /// decided again after a read because the stream was not empty.
    pub registrations_unread_answered: Counter,
    pub registrations_unread_read_again: Counter,
    pub projection_errors: Counter,
    /// The shared feed tail's queries, by cause (a feed commit seen, the periodic look).
    feed_tail_queries_commit: Counter,
    feed_tail_queries_poll: Counter,
    pub feed_tail_errors: Counter,
    /// Feed pages answered from the tail's memory or by reading the database.
    pub feed_answers_from_memory: Counter,
    pub feed_answers_from_database: Counter,
    /// Feed consumers waiting on the shared tail now.
    pub feed_waiting: std::sync::atomic::AtomicI64,
    /// Feed pages answered to requests with `wait` > 0.
    pub feed_long_poll_answers: Counter,
    /// Requests refused with 429 `rate_limited`.
    pub rate_limited: Counter,
    /// Per projection: (name, last applied position, events applied).
    projections: std::sync::Mutex<Vec<(&'static str, i64, u64)>>,
    responses: [Counter; STATUSES.len()],
    responses_other: Counter,
}

/// A durable consumer's progress, as read from the database for a scrape.
#[derive(Clone, Debug)]
pub struct Progress {
    pub name: &'static str,
    pub position: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    /// A projection committed a batch ending at `position` with `events` events.
    pub fn projected(&self, name: &'static str, position: i64, events: u64) {
        let mut p = self.projections.lock().expect("metrics");
        match p.iter_mut().find(|(n, _, _)| *n == name) {
            Some(entry) => {
                entry.1 = position;
                entry.2 += events;
            }
            None => p.push((name, position, events)),
        }
    }

    pub fn feed_tail_query(&self, cause: crate::feed::tail::Cause) {
        match cause {
            crate::feed::tail::Cause::Commit => self.feed_tail_queries_commit.inc(),
            crate::feed::tail::Cause::Poll => self.feed_tail_queries_poll.inc(),
        }
    }

    pub fn response(&self, status: u16) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.responses[i].inc(),
            None => self.responses_other.inc(),
        }
    }

    /// Renders the metrics; `head` is the log's highest position, `projections` each
    /// projection's committed position and lag as read from the database.
    pub fn render(&self, head: Option<i64>, projections: &[Progress]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut out,
            "kokuho_events_appended_total",
            "Events appended by this process.",
            self.events_appended.get(),
        );
        counter(
            &mut out,
            "kokuho_append_batches_total",
            "Group-commit transactions by this process.",
            self.append_batches.get(),
        );
        counter(
            &mut out,
            "kokuho_commands_refused_total",
            "Commands refused by a domain rule.",
            self.commands_refused.get(),
        );
        let _ = writeln!(
            out,
            "# HELP kokuho_registrations_unread_total Registrations decided before reading their stream, by outcome.\n\
             # TYPE kokuho_registrations_unread_total counter\n\
             kokuho_registrations_unread_total{{outcome=\"answered\"}} {}\n\
             kokuho_registrations_unread_total{{outcome=\"read_again\"}} {}",
            self.registrations_unread_answered.get(),
            self.registrations_unread_read_again.get()
        );
        let _ = writeln!(
            out,
            "# HELP kokuho_http_responses_total HTTP responses by status.\n# TYPE kokuho_http_responses_total counter"
        );
        for (s, c) in STATUSES.iter().zip(&self.responses) {
            let _ = writeln!(out, "kokuho_http_responses_total{{status=\"{s}\"}} {}", c.get());
        }
        let _ = writeln!(
            out,
            "kokuho_http_responses_total{{status=\"other\"}} {}",
            self.responses_other.get()
        );
        counter(
            &mut out,
            "kokuho_projection_errors_total",
            "Projection batches that failed and were retried.",
            self.projection_errors.get(),
        );
        let _ = writeln!(
            out,
            "# HELP kokuho_feed_tail_queries_total Queries of the shared feed tail, by cause.\n# TYPE kokuho_feed_tail_queries_total counter\n\
             kokuho_feed_tail_queries_total{{cause=\"commit\"}} {}\nkokuho_feed_tail_queries_total{{cause=\"poll\"}} {}",
            self.feed_tail_queries_commit.get(),
            self.feed_tail_queries_poll.get()
        );
        counter(
            &mut out,
            "kokuho_feed_tail_errors_total",
            "Feed tail queries that failed and were retried.",
            self.feed_tail_errors.get(),
        );
        let _ = writeln!(
            out,
            "# HELP kokuho_feed_answers_total Feed pages answered, by source.\n# TYPE kokuho_feed_answers_total counter\n\
             kokuho_feed_answers_total{{source=\"memory\"}} {}\nkokuho_feed_answers_total{{source=\"database\"}} {}",
            self.feed_answers_from_memory.get(),
            self.feed_answers_from_database.get()
        );
        counter(
            &mut out,
            "kokuho_feed_long_poll_answers_total",
            "Feed pages answered to requests that could wait (wait > 0).",
            self.feed_long_poll_answers.get(),
        );
        let _ = writeln!(
            out,
            "# HELP kokuho_feed_waiting Feed consumers waiting on the shared tail.\n# TYPE kokuho_feed_waiting gauge\nkokuho_feed_waiting {}",
            self.feed_waiting.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "kokuho_rate_limited_total",
            "Requests refused because their principal was over its rate limit.",
            self.rate_limited.get(),
        );
        let _ = writeln!(
            out,
            "# HELP kokuho_projection_events_applied_total Events applied by this process's projection runners.\n# TYPE kokuho_projection_events_applied_total counter"
        );
        for (name, _, n) in self.projections.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "kokuho_projection_events_applied_total{{projection=\"{name}\"}} {n}"
            );
        }
        type Gauge = fn(&Progress) -> f64;
        let gauges: [(&str, &str, Gauge); 3] = [
            (
                "kokuho_projection_position",
                "Last log position a projection has committed.",
                |s| s.position as f64,
            ),
            (
                "kokuho_projection_lag_events",
                "Log events not yet applied by a projection.",
                |s| s.lag_events as f64,
            ),
            (
                "kokuho_projection_lag_seconds",
                "Age of the oldest event a projection has not applied.",
                |s| s.lag_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in projections {
                let _ = writeln!(out, "{name}{{projection=\"{}\"}} {}", s.name, value(s));
            }
        }
        if let Some(h) = head {
            let _ = writeln!(out, "# HELP kokuho_log_head_position Highest position in the event log.\n# TYPE kokuho_log_head_position gauge\nkokuho_log_head_position {h}");
        }
        out
    }
}
