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
const STATUSES: [u16; 9] = [200, 201, 400, 404, 409, 413, 422, 500, 503];

#[derive(Default)]
pub struct Metrics {
    pub events_appended: Counter,
    pub append_batches: Counter,
    pub commands_refused: Counter,
    responses: [Counter; STATUSES.len()],
    responses_other: Counter,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    pub fn response(&self, status: u16) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.responses[i].inc(),
            None => self.responses_other.inc(),
        }
    }

    /// Renders the metrics; `head` is the log's highest position.
    pub fn render(&self, head: Option<i64>) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "kokuho_events_appended_total",
            "Events appended by this process.",
            self.events_appended.get(),
        );
        counter(
            "kokuho_append_batches_total",
            "Group-commit transactions by this process.",
            self.append_batches.get(),
        );
        counter(
            "kokuho_commands_refused_total",
            "Commands refused by a domain rule.",
            self.commands_refused.get(),
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
        if let Some(h) = head {
            let _ = writeln!(out, "# HELP kokuho_log_head_position Highest position in the event log.\n# TYPE kokuho_log_head_position gauge\nkokuho_log_head_position {h}");
        }
        out
    }
}
