//! What the benchmarks share: ledgers as `serve` runs them, generated persons and import
//! files, a minimal keep-alive HTTP client, percentiles, and the plain-INSERT baseline table.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kokuho_ledger::access::{Access, Role};
use kokuho_ledger::app::Builder;
use kokuho_ledger::audit::keys::Signer;
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::request::RequestContext;
use kokuho_ledger::settings::{Secret, Settings};
use serde_json::{json, Value};

/// The benchmarks' deployment: a vault key of their own and no practical rate limit (one
/// token drives the whole load), everything else default.
pub fn settings() -> Settings {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    Settings {
        vault_key: Some(Secret(hex::encode(key))),
        rate_limit: kokuho_ledger::http::rate::RateLimit {
            per_second: 10_000_000,
            burst: 10_000_000,
        },
        ..Settings::default()
    }
}

/// A ledger as `serve` runs it (projection runners beside the commands) and its identity and
/// access-log parts; with a signer, the audit chainer too.
pub struct App {
    pub ledger: Arc<Ledger>,
    pub access: Arc<Access>,
}

pub async fn ledger(url: &str, audit: Option<Arc<Signer>>) -> anyhow::Result<App> {
    let mut builder = Builder::new(url).settings(settings());
    if let Some(signer) = audit {
        builder = builder.audit(signer);
    }
    let app = builder.build().await?;
    // As in `serve`: the projection runners share the machine with the commands.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    app.ledger.projections().spawn(stopped.clone());
    app.ledger.feed.spawn_tail(stopped);
    std::mem::forget(stop);
    Ok(App {
        ledger: app.ledger,
        access: app.access,
    })
}

/// The benchmarks' principal: reads persons, records events, reads the feed.
pub async fn bench_token(access: &Access) -> anyhow::Result<String> {
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    Ok(access
        .tokens
        .create(
            &name,
            &[Role::Clerk, Role::FeedConsumer, Role::Auditor],
            None,
            "bench",
            chrono::Utc::now(),
        )
        .await?)
}

/// The same parts with a recorder that writes nothing: the baseline of what access recording
/// costs (bench only; the product cannot turn recording off).
pub fn unrecorded(app: &App) -> App {
    let a = &app.access;
    App {
        ledger: app.ledger.clone(),
        access: Arc::new(Access {
            roles: a.roles.clone(),
            tokens: kokuho_ledger::access::tokens::TokenStore::new(app.ledger.store().db().clone()),
            oidc: None,
            recorder: kokuho_ledger::access::Recorder::discarding(),
            proxies: a.proxies.clone(),
            unusual: a.unusual.clone(),
            sessions: kokuho_ledger::access::sessions::SessionStore::new(
                app.ledger.store().db().clone(),
                a.sessions.idle(),
            ),
        }),
    }
}

pub use kokuho_testing::history::registration;

/// The person id of generated person `i`.
pub fn person_id(i: usize) -> String {
    format!("{}", 100_000_000_000u64 + i as u64)
}

/// Ten events of generated person `i` (households of three): the reference history, as
/// import lines (`person_id` first).
pub fn person_lines(i: usize) -> Vec<Value> {
    let hid = format!("{}", 200_000_000_000u64 + (i / 3) as u64);
    kokuho_testing::history::person_events(i, &hid)
        .into_iter()
        .map(|event| {
            let mut line = serde_json::Map::new();
            line.insert("person_id".into(), json!(person_id(i)));
            line.extend(event.as_object().cloned().unwrap_or_default());
            Value::Object(line)
        })
        .collect()
}

/// An import file of the generated persons in `persons`.
pub fn write_import_file(path: &std::path::Path, persons: std::ops::Range<usize>) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in persons {
        for l in person_lines(i) {
            serde_json::to_writer(&mut w, &l)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Imports a file in process (as `kokuho-ledger import` does).
pub async fn import(ledger: &Ledger, file: &std::path::Path) -> anyhow::Result<kokuho_ledger::import::Report> {
    let options = kokuho_ledger::import::Options {
        batch_lines: 5_000,
        actor: "bench".into(),
        access: None,
    };
    let report = kokuho_ledger::import::run(ledger, file, &options, |_| {}).await?;
    anyhow::ensure!(report.failure.is_none(), "import failed: {:?}", report.failure);
    Ok(report)
}

/// (p50, p99, max).
pub fn percentiles(mut all: Vec<Duration>) -> (Duration, Duration, Duration) {
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (pct(0.50), pct(0.99), *all.last().unwrap())
}

/// The plain table of the INSERT baselines: the log's columns, nothing else.
pub const PLAIN_TABLE: &str = "CREATE TABLE bench_plain (position bigint PRIMARY KEY, aggregate_type text NOT NULL, \
    aggregate_id text NOT NULL, sequence bigint NOT NULL, event_type text NOT NULL, event_version text NOT NULL, \
    payload json NOT NULL, metadata json NOT NULL, recorded_at timestamptz NOT NULL)";

/// One keep-alive HTTP/1.1 connection: a minimal client, so the measured time is the
/// server's and the loopback's, not a client library's.
pub struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    /// The credential header line of every request.
    credential: String,
}

impl Conn {
    /// A connection whose requests carry `Authorization: Bearer <token>`.
    pub async fn open(addr: &Served) -> anyhow::Result<Self> {
        Self::open_with(addr, format!("Authorization: Bearer {}", addr.token)).await
    }

    /// A connection whose requests carry this header line (e.g. a console session's cookie).
    pub async fn open_with(addr: &Served, credential: String) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(&addr.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::new(stream),
            credential,
        })
    }

    /// (status, body length).
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, usize)> {
        self.request("GET", path, "").await
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, usize)> {
        let (status, body) = self.exchange(method, path, body).await?;
        Ok((status, body.len()))
    }

    /// (status, body).
    pub async fn exchange(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\n{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.credential,
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line.split(' ').nth(1).context("status line")?.parse()?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// A service over TCP and a token for it.
#[derive(Clone)]
pub struct Served {
    pub addr: String,
    pub token: String,
}

/// Serves `app` over TCP on a free port, as `serve` does (peer addresses as terminals).
pub async fn serve(app: &App) -> anyhow::Result<Served> {
    let router = kokuho_ledger::http::router(app.ledger.clone(), app.access.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Ok(Served {
        addr,
        token: bench_token(&app.access).await?,
    })
}

static NEXT_PERSON: AtomicU64 = AtomicU64::new(0);

/// Registers a person never used before (fresh across calls: a run may append more than
/// once) through the full command path, with the `i`th registration body.
pub async fn register_new(ledger: &Ledger, i: usize, ctx: &RequestContext) -> anyhow::Result<()> {
    let n = NEXT_PERSON.fetch_add(1, Ordering::Relaxed);
    let id = PersonId::parse(&format!("{}", 900_000_000_000u64 + n))?;
    ledger.record_person_event(&id, &registration(i), ctx).await?;
    Ok(())
}

/// `clients` record single-event commands (new persons' registrations) through the full
/// command path for `seconds`, each with its own Idempotency-Key if asked: events/s.
pub async fn command_rate(
    ledger: &Arc<Ledger>,
    clients: usize,
    seconds: u64,
    idempotency: bool,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (ledger, stop, count) = (ledger.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = idempotency.then(|| format!("bench-{c}-{i}"));
                    let ctx = RequestContext {
                        actor: "bench".into(),
                        request_id: format!("{c}-{i}"),
                        fingerprint: key.clone(),
                        idempotency_key: key,
                        ..Default::default()
                    };
                    register_new(&ledger, i, &ctx).await.expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The product binary beside this one (build both: `cargo build --release --workspace`).
pub fn product_binary() -> anyhow::Result<std::path::PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("kokuho-ledger");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release --workspace`",
        bin.display()
    );
    Ok(bin)
}

/// Runs a command under `/usr/bin/time`: (seconds, peak resident KiB, stdout).
pub fn timed(command: &mut std::process::Command) -> anyhow::Result<(f64, u64, String)> {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed.args(["-f", "peak-rss-kib %M"]).arg(program).args(args);
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = timed
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "the command failed: {stderr}");
    // What the command logged (nothing at the default level), passed on.
    for line in stderr.lines().filter(|l| !l.starts_with("peak-rss-kib ")) {
        eprintln!("{line}");
    }
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.trim().parse().ok())
        .context("no peak RSS from /usr/bin/time")?;
    Ok((secs, rss, String::from_utf8_lossy(&out.stdout).into_owned()))
}
