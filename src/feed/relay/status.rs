//! The relay's state for `/metrics` and `/readyz`: the position published last, counters,
//! and whether it stopped with an error. One relay per process, so the state is global like
//! the other metrics; the lag is computed at scrape time against the feed head read then.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex};

use crate::metrics::Counter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not configured in this process.
    Off = 0,
    /// Connecting, creating or checking the stream, reading its last message.
    Starting = 1,
    /// Publishing or waiting for new records.
    Running = 2,
    /// NATS (or the database) failed; retrying.
    Retrying = 3,
    /// Stopped with an error an operator must resolve.
    Stopped = 4,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Off => "off",
            State::Starting => "starting",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Self {
        [
            State::Off,
            State::Starting,
            State::Running,
            State::Retrying,
            State::Stopped,
        ]
        .into_iter()
        .find(|s| *s as u8 == v)
        .unwrap_or(State::Off)
    }
}

#[derive(Default)]
pub struct RelayStatus {
    enabled: AtomicBool,
    state: AtomicU8,
    /// The position the stream is known to hold last for this ledger's subject.
    published: AtomicI64,
    pub published_total: Counter,
    pub duplicates_total: Counter,
    pub resyncs_total: Counter,
    pub retries_total: Counter,
    /// The last error (ids and positions only, never a record's content).
    error: Mutex<Option<String>>,
}

static GLOBAL: LazyLock<RelayStatus> = LazyLock::new(RelayStatus::default);

pub fn global() -> &'static RelayStatus {
    &GLOBAL
}

/// A snapshot for rendering.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: State,
    pub published: i64,
    pub error: Option<String>,
}

impl RelayStatus {
    pub fn set_state(&self, state: State) {
        self.enabled.store(true, Ordering::Relaxed);
        self.state.store(state as u8, Ordering::Relaxed);
        if state == State::Running {
            *self.error.lock().expect("relay status") = None;
        }
    }

    pub fn failed(&self, state: State, error: &str) {
        self.set_state(state);
        *self.error.lock().expect("relay status") = Some(error.to_owned());
    }

    pub fn published(&self, position: i64) {
        self.published.store(position, Ordering::Relaxed);
    }

    /// None when no relay runs in this process.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        Some(Snapshot {
            state: State::from_u8(self.state.load(Ordering::Relaxed)),
            published: self.published.load(Ordering::Relaxed),
            error: self.error.lock().expect("relay status").clone(),
        })
    }
}

impl RelayStatus {
    /// The relay's lines of `/metrics`; `feed_head` is the feed's highest position, read for
    /// this scrape. Nothing when no relay runs in this process.
    pub fn render(&self, feed_head: Option<i64>) -> String {
        use std::fmt::Write as _;
        let Some(s) = self.snapshot() else {
            return String::new();
        };
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "kokuho_nats_relay_position",
            "Last feed position the NATS stream holds for this ledger.",
            s.published,
        );
        if let Some(head) = feed_head {
            gauge(
                "kokuho_nats_relay_lag_positions",
                "Feed positions not yet published to NATS (feed head minus the relay's position).",
                (head - s.published).max(0),
            );
        }
        gauge(
            "kokuho_nats_relay_up",
            "1 while the relay publishes or waits for records, 0 while it starts, retries or has stopped.",
            i64::from(s.state == State::Running),
        );
        gauge(
            "kokuho_nats_relay_stopped",
            "1 when the relay stopped with an error an operator must resolve.",
            i64::from(s.state == State::Stopped),
        );
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "kokuho_nats_relay_published_total",
            "Feed records this process stored in the NATS stream.",
            self.published_total.get(),
        );
        counter(
            "kokuho_nats_relay_duplicates_total",
            "Retries the stream acknowledged as duplicates.",
            self.duplicates_total.get(),
        );
        counter(
            "kokuho_nats_relay_resyncs_total",
            "Refused publications after which the relay re-read the stream's last message.",
            self.resyncs_total.get(),
        );
        counter(
            "kokuho_nats_relay_retries_total",
            "Failures (NATS or the database) the relay retried.",
            self.retries_total.get(),
        );
        out
    }
}
