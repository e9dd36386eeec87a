//! The soak driver (issue 14), shared by `ledger-bench soak` and `tests/soak.rs`: a real
//! `kokuho-ledger serve` process on a fresh database under mixed load — appends, reads,
//! searches, long-polling feed consumers, one feed export and `audit verify` runs against the
//! serving database — with the server's resident memory sampled from `/proc/<pid>/status`.
//! Every response is counted by kind, status and error code; anything outside the expected
//! set (success, plus the 409 and 422 the driver provokes on purpose) is reported.
//!
//! Not `kokuho-ledger rebuild`: it empties the read models and must not run beside a serving
//! process (the runner's own comment: "nothing is served meanwhile"). `audit verify` is the
//! recompute-and-compare that may run against a live database.

pub mod load;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use load::{expected, Shared, Tally};

use crate::process::{self, Server};
use crate::TestDb;

pub struct Config {
    pub duration: Duration,
    /// How often the server's resident memory is sampled.
    pub sample_every: Duration,
    pub appenders: u64,
    pub readers: usize,
    pub feed_consumers: usize,
    /// Each client's pause between requests: a steady load that leaves the (shared) machine
    /// some headroom, so a slow stretch is not mistaken for a leak or a refusal.
    pub pause: Duration,
    /// Runs of `audit verify` during the load, evenly spread.
    pub verifies: usize,
    /// Records in the export (it is built in memory: bounded).
    pub export_limit: u64,
    /// When the export runs (it holds its files in memory: a one-off peak).
    pub export_at: Duration,
}

impl Config {
    pub fn new(duration: Duration, sample_every: Duration) -> Self {
        Config {
            duration,
            sample_every,
            appenders: 4,
            readers: 4,
            feed_consumers: 3,
            pause: Duration::from_millis(5),
            verifies: 1,
            export_limit: 50_000,
            export_at: duration / 4,
        }
    }
}

pub struct Report {
    /// (seconds since the load started, resident KiB of the server).
    pub samples: Vec<(f64, u64)>,
    pub counts: BTreeMap<(&'static str, String), u64>,
    pub feed_records: u64,
    pub elapsed: Duration,
    /// `/readyz` after the load stopped.
    pub ready_at_end: u16,
    /// `audit verify` after the load stopped (exit code).
    pub verify_at_end: i32,
    /// ERROR lines in the server's log (their count only: a log line may name a person).
    pub server_errors: usize,
}

/// The kinds of load, in the order reports list them.
pub const KINDS: [&str; 10] = [
    "append",
    "conflict",
    "refusal",
    "read_person",
    "read_timeline",
    "search",
    "feed",
    "export",
    "verify",
    "ready",
];

/// Resident memory of a process in KiB (`VmRSS`), or 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn verify_command(db: &TestDb, dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(&*process::BIN);
    if db.is_postgres() {
        command.env("KOKUHO_AUDIT_KEY_FILE", process::audit_key(dir));
    }
    command
        .args(["audit", "verify", "--database-url", &db.url])
        .env("KOKUHO_VAULT_KEY_FILE", process::vault_key(dir))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// Runs the soak against a server started on `db` (keys and files in `dir`).
pub async fn run(db: &TestDb, dir: &std::path::Path, cfg: &Config) -> anyhow::Result<Report> {
    // Warnings and errors only (and the line announcing the address): the driver keeps the
    // server's log in memory for the whole run.
    let server: Server = process::start_with(db, dir, &[("RUST_LOG", "warn,kokuho_ledger::cli::serve=info")]);
    let pid = server.child.id();
    let token = process::token_of(&server.addr).expect("the server's token");
    let exporter = process::create_token(db, dir, "soak-exporter", &["exporter"]);
    let shared = Arc::new(Shared {
        base: format!("http://{}", server.addr),
        client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?,
        token,
        tally: Tally::default(),
        stop: false.into(),
        registered: Mutex::new(Vec::new()),
        pause: cfg.pause,
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..cfg.appenders {
        tasks.push(tokio::spawn(load::appender(shared.clone(), c)));
    }
    for _ in 0..cfg.readers {
        tasks.push(tokio::spawn(load::reader(shared.clone())));
    }
    for _ in 0..cfg.feed_consumers {
        tasks.push(tokio::spawn(load::feed_consumer(shared.clone())));
    }
    // The one-off operations on a schedule: the export, the verifies spread evenly.
    let mut ops: Vec<(Duration, bool)> = vec![(cfg.export_at, true)];
    for i in 1..=cfg.verifies {
        ops.push((cfg.duration * i as u32 / (cfg.verifies as u32 + 1), false));
    }
    ops.sort();
    let ops_task = {
        let (s, limit) = (shared.clone(), cfg.export_limit);
        let verify = (0..cfg.verifies).map(|_| verify_command(db, dir)).collect::<Vec<_>>();
        tokio::spawn(async move {
            let mut verify = verify.into_iter();
            for (at, is_export) in ops {
                tokio::time::sleep_until((started + at).into()).await;
                if is_export {
                    load::export(&s, &exporter, limit).await;
                } else if let Some(command) = verify.next() {
                    load::audit_verify(&s, command).await;
                }
            }
        })
    };
    let mut samples = vec![(0.0, rss_kib(pid))];
    let mut next = started + cfg.sample_every;
    while next <= started + cfg.duration {
        tokio::time::sleep_until(next.into()).await;
        samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
        next += cfg.sample_every;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    ops_task.await?;
    let elapsed = started.elapsed();
    // The server after the load: ready again within its 5 s lag bound, and the chain intact.
    let mut ready_at_end = 0;
    for _ in 0..30 {
        match shared
            .send("ready", shared.client.get(format!("{}/readyz", shared.base)))
            .await
        {
            Some((200, _)) => {
                ready_at_end = 200;
                break;
            }
            Some((status, _)) => ready_at_end = status,
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut command = verify_command(db, dir);
    let verify_at_end = tokio::task::spawn_blocking(move || command.status())
        .await??
        .code()
        .unwrap_or(-1);
    let server_errors = server
        .log
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .count();
    process::stop(server);
    Ok(Report {
        samples,
        counts: shared.tally.snapshot(),
        feed_records: shared.tally.feed_records.load(Ordering::Relaxed),
        elapsed,
        ready_at_end,
        verify_at_end,
        server_errors,
    })
}

/// The memory check: windows of the samples after `warm_up`, split in thirds.
pub struct Growth {
    pub first_max_kib: u64,
    pub last_max_kib: u64,
    pub limit_kib: u64,
}

impl Growth {
    pub fn ok(&self) -> bool {
        self.last_max_kib <= self.limit_kib
    }
}

impl Report {
    /// Resident memory does not grow after warm-up: the highest sample of the last third of
    /// the post-warm-up samples is at most the highest of the first third × 1.25 + 16 MiB.
    /// Maxima, not single samples or a fitted slope, because the allocator returns memory in
    /// steps and a sample may land on a transient peak (a batch, the export); the slack covers
    /// caches that settle late (connection pools, prepared statements) while a leak that
    /// scales with the load still exceeds it over a long run.
    pub fn growth(&self, warm_up: Duration) -> Growth {
        let after: Vec<u64> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= warm_up.as_secs_f64())
            .map(|(_, r)| *r)
            .collect();
        let third = (after.len() / 3).max(1);
        let first_max_kib = after.iter().take(third).copied().max().unwrap_or(0);
        let last_max_kib = after.iter().rev().take(third).copied().max().unwrap_or(0);
        Growth {
            first_max_kib,
            last_max_kib,
            limit_kib: first_max_kib * 5 / 4 + 16 * 1024,
        }
    }

    /// Outcomes outside the expected set, with their counts.
    pub fn unexpected(&self) -> Vec<(&'static str, String, u64)> {
        self.counts
            .iter()
            .filter(|((kind, outcome), _)| !expected(kind, outcome))
            .map(|((kind, outcome), n)| (*kind, outcome.clone(), *n))
            .collect()
    }

    /// Expected outcomes of one kind (the progress it made).
    pub fn done(&self, kind: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((k, outcome), _)| *k == kind && expected(k, outcome))
            .map(|(_, n)| n)
            .sum()
    }

    /// A plain-text summary: samples every `every` seconds, throughput, outcomes.
    pub fn summary(&self, every: f64) -> String {
        use std::fmt::Write as _;
        let secs = self.elapsed.as_secs_f64();
        let mut out = format!("soak: {secs:.0} s of load\nresident memory of the server:\n");
        let mut due = 0.0;
        for (t, kib) in &self.samples {
            if *t + 0.5 >= due {
                let _ = writeln!(out, "  {:>6.0} s  {:>7.1} MiB", t, *kib as f64 / 1024.0);
                due += every;
            }
        }
        out.push_str("throughput (expected outcomes):\n");
        for kind in KINDS {
            let n = self.done(kind);
            let _ = writeln!(out, "  {kind:<14} {n:>9}  {:>8.1}/s", n as f64 / secs);
        }
        let _ = writeln!(
            out,
            "  feed records   {:>9}  {:>8.1}/s",
            self.feed_records,
            self.feed_records as f64 / secs
        );
        out.push_str("outcomes:\n");
        for ((kind, outcome), n) in &self.counts {
            let mark = if expected(kind, outcome) { "" } else { "  UNEXPECTED" };
            let _ = writeln!(out, "  {kind:<14} {outcome:<32} {n:>9}{mark}");
        }
        let _ = writeln!(
            out,
            "after the load: /readyz {}, audit verify exit {}, ERROR lines in the server log: {}",
            self.ready_at_end, self.verify_at_end, self.server_errors
        );
        out
    }
}
