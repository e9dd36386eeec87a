//! Load tool for docs/benchmarks.md. Each figure is measured against a baseline taken in the
//! same run on the same server: a plain INSERT of rows of the same size with the same commit
//! pattern. Every run works in a fresh database created from `--admin-url`.
//!
//!   ledger-bench appends  [--clients 8] [--seconds 10]
//!   ledger-bench import   [--persons 100000]
//!   ledger-bench timeline [--events 50] [--requests 2000]
//!   ledger-bench projections [--persons 100000] [--clients 200]   (rebuild vs bare scan; timeline
//!                                                                   reads over TCP on that ledger)
//!   ledger-bench lag      [--clients 8] [--seconds 10]          (append → projection applied)
//!   ledger-bench feed     [--persons 100000]   (feed generation during an import; GET /v1/feed
//!                                               paging; CSV export Shift_JIS vs UTF-8)

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::Request;
use clap::{Parser, Subcommand};
use kokuho_ledger::audit::keys::Signer;
use kokuho_ledger::clock::SystemClock;
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::ledger::{Ledger, RequestContext};
use kokuho_ledger::settings::Settings;
use kokuho_ledger::store::writer::Writer;
use kokuho_ledger::store::Store;
use kokuho_ledger::vault::Vault;
use serde_json::{json, Value};
use sqlx::{Connection, PgPool};
use tower::ServiceExt;

#[derive(Parser)]
struct Args {
    /// A PostgreSQL server where the tool may create a database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    admin_url: String,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Single-event commands from concurrent clients vs plain single-row INSERT commits.
    Appends {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Send an Idempotency-Key with every command, as production clients do.
        #[arg(long)]
        idempotency: bool,
    },
    /// `import` of 10 events per person vs a plain batched INSERT of the same rows.
    Import {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
    },
    /// Imports N persons (10 events each), rebuilds the projections (vs a bare sequential read
    /// of the log in the same run), then reads random timelines over TCP from C clients.
    Projections {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Also an open-loop run at this total rate (requests/s) over the same connections;
        /// latency counts from each request's scheduled time (no coordinated omission).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
    },
    /// End-to-end lag from an acknowledged single-event append to its projection.
    Lag {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Imports N persons (10 events each) while the change feed runs; then reads the whole feed
    /// over TCP with limit=1000 and exports it as CSV in Shift_JIS and in UTF-8.
    Feed {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        /// Records per export run (the first N of the feed).
        #[arg(long, default_value_t = 1_000_000)]
        export_records: usize,
    },
    /// The audit trail: append throughput with and without the chainer (alternating, fresh
    /// databases); then the chaining rate and `audit verify` (rate, peak memory) against a
    /// bare read of the same rows, on half the log and on all of it.
    Audit {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Timeline reads of one person with N events through the HTTP router.
    Timeline {
        #[arg(long, default_value_t = 50)]
        events: usize,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
}

fn with_database(url: &str, db: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{root}/{db}")
}

struct BenchDb {
    admin: String,
    name: String,
    url: String,
}

impl BenchDb {
    async fn create(admin: &str) -> anyhow::Result<Self> {
        let name = format!("kl_bench_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(admin)
            .await
            .context("connecting to the admin URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await?;
        Ok(Self {
            admin: admin.into(),
            url: with_database(admin, &name),
            name,
        })
    }
    async fn drop_db(&self) -> anyhow::Result<()> {
        let mut c = sqlx::PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut c)
            .await?;
        Ok(())
    }
}

async fn ledger(url: &str, dir: &std::path::Path) -> anyhow::Result<(Arc<Ledger>, Store)> {
    ledger_with(url, dir, None).await
}

/// A ledger as `serve` runs it (projection runners beside the commands); with a signer, the
/// audit chainer too.
async fn ledger_with(
    url: &str,
    dir: &std::path::Path,
    audit: Option<Arc<Signer>>,
) -> anyhow::Result<(Arc<Ledger>, Store)> {
    let store = Store::connect(url).await?;
    let settings = Settings::default();
    let (writer, _task) = Writer::spawn(store.clone(), settings.max_batch);
    let vault = Vault::open_key_file(&dir.join("bench.key"), true)?;
    let mut ledger = Ledger::new(store.clone(), writer, Arc::new(SystemClock), Arc::new(vault), settings);
    if let Some(signer) = audit {
        ledger = ledger.with_audit(signer);
    }
    let ledger = Arc::new(ledger);
    // As in `serve`: the projection runners share the machine with the commands.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    ledger.projections().spawn(stopped);
    std::mem::forget(stop);
    Ok((ledger, store))
}

fn registration(i: usize) -> Value {
    json!({"type": "registered", "effective_date": "2000-01-01", "reported_date": "2000-01-05",
        "name": "山田 太郎", "name_kana": "ヤマダ　タロウ", "birth_date": format!("19{:02}-0{}-1{}", 45 + i % 40, 1 + i % 9, i % 10),
        "sex": if i % 2 == 0 { "1" } else { "2" }})
}

const PLAIN_TABLE: &str = "CREATE TABLE bench_plain (position bigint PRIMARY KEY, aggregate_type text NOT NULL, \
    aggregate_id text NOT NULL, sequence bigint NOT NULL, event_type text NOT NULL, event_version text NOT NULL, \
    payload json NOT NULL, metadata json NOT NULL, recorded_at timestamptz NOT NULL)";

async fn appends(url: &str, clients: usize, seconds: u64, idempotency: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ledger, store) = ledger(url, dir.path()).await?;
    let pool: PgPool = store.pg_pool().context("appends needs PostgreSQL")?.clone();
    sqlx::query(PLAIN_TABLE).execute(&pool).await?;

    // The ledger: each client records single-event commands (a new person's registration).
    let ledger_rate = command_rate(&ledger, clients, seconds, idempotency).await?;

    // Baseline: the same rows, one INSERT and one commit each, from the same number of clients.
    let sample = store.read_log(0, 1).await?.pop().context("a stored row")?;
    let payload = serde_json::to_string(&sample.payload)?;
    let metadata = serde_json::to_string(&sample.metadata)?;
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..clients {
        let (pool, stop, next, payload, metadata) = (
            pool.clone(),
            stop.clone(),
            next.clone(),
            payload.clone(),
            metadata.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let p = next.fetch_add(1, Ordering::Relaxed) as i64 + 1;
                sqlx::query("INSERT INTO bench_plain VALUES ($1, 'person', $2, 1, 'registered', '1', $3::json, $4::json, now())")
                    .bind(p)
                    .bind(format!("{c}-{p}"))
                    .bind(&payload)
                    .bind(&metadata)
                    .execute(&pool)
                    .await
                    .expect("plain insert");
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let plain_rate = next.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("appends: {clients} clients, {seconds} s each, idempotency keys: {idempotency}");
    println!("  ledger single-event commands: {ledger_rate:.0} events/s");
    println!("  plain INSERT, one commit each: {plain_rate:.0} rows/s");
    println!("  ratio: {:.2}", ledger_rate / plain_rate);
    store.close().await;
    Ok(())
}

fn person_lines(i: usize) -> Vec<Value> {
    let pid = format!("{}", 100_000_000_000u64 + i as u64);
    let hid = format!("{}", 200_000_000_000u64 + (i / 3) as u64);
    let mut reg = registration(i);
    reg["person_id"] = json!(pid);
    let ev =
        |ty: &str, date: &str| json!({"person_id": pid, "type": ty, "effective_date": date, "reported_date": date});
    let mut moved = ev("moved_in", "2001-04-01");
    moved["from"] = json!("other_prefecture");
    moved["household_id"] = json!(hid);
    let mut renamed = ev("name_changed", "2015-02-02");
    renamed["name"] = json!("山田 花子");
    renamed["name_kana"] = json!("ヤマダ　ハナコ");
    vec![
        reg,
        moved,
        ev("employee_insurance_joined", "2005-04-01"),
        ev("employee_insurance_left", "2008-10-01"),
        ev("welfare_started", "2012-06-10"),
        ev("welfare_ended", "2013-01-05"),
        renamed,
        ev("document_collected", "2016-03-03"),
        ev("disclosure_restricted", "2018-01-01"),
        ev("disclosure_restriction_lifted", "2019-01-01"),
    ]
}

async fn import(url: &str, persons: usize, batch_size: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
    for i in 0..persons {
        for l in person_lines(i) {
            serde_json::to_writer(&mut w, &l)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    drop(w);
    let settings = Settings {
        vault_key_file: Some(dir.path().join("k.key")),
        ..Settings::default()
    };
    let started = Instant::now();
    let summary = kokuho_ledger::import::run(&file, url, settings, batch_size, "bench").await?;
    let total = started.elapsed().as_secs_f64();
    println!("import: {summary}");
    let store = Store::connect(url).await?;
    let pool = store.pg_pool().context("import benchmark needs PostgreSQL")?.clone();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    println!(
        "  end to end (parse + check + write): {:.0} events/s over {n} events",
        n as f64 / total
    );

    // Baseline: the same rows into a plain table, same batch size, one commit per batch.
    sqlx::query(PLAIN_TABLE).execute(&pool).await?;
    let rows = store.read_log(0, i64::MAX).await?;
    let started = Instant::now();
    for chunk in rows.chunks(batch_size) {
        let mut c: [Vec<String>; 6] = Default::default();
        let (mut seqs, mut pos) = (Vec::new(), Vec::new());
        for r in chunk {
            c[0].push(r.aggregate_type.clone());
            c[1].push(r.aggregate_id.clone());
            c[2].push(r.event_type.clone());
            c[3].push(r.event_version.clone());
            c[4].push(serde_json::to_string(&r.payload)?);
            c[5].push(serde_json::to_string(&r.metadata)?);
            seqs.push(r.sequence);
            pos.push(r.position);
        }
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO bench_plain SELECT pos, t, i, s, et, ev, p::json, m::json, now() FROM \
             UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]) \
             AS u(t, i, s, et, ev, p, m, pos)",
        )
        .bind(&c[0])
        .bind(&c[1])
        .bind(&seqs)
        .bind(&c[2])
        .bind(&c[3])
        .bind(&c[4])
        .bind(&c[5])
        .bind(&pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let plain = rows.len() as f64 / started.elapsed().as_secs_f64();
    println!("  plain batched INSERT of the same rows: {plain:.0} rows/s");
    println!("  ratio (end to end / plain): {:.2}", n as f64 / total / plain);
    store.close().await;
    Ok(())
}

async fn timeline(url: &str, events: usize, requests: usize, clients: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ledger, store) = ledger(url, dir.path()).await?;
    let id = PersonId::parse("1")?;
    let ctx = RequestContext {
        actor: "bench".into(),
        ..Default::default()
    };
    ledger.record_person_event(&id, &registration(1), &ctx).await?;
    let mi = json!({"type": "moved_in", "effective_date": "2001-04-01", "from": "abroad", "household_id": "7"});
    ledger.record_person_event(&id, &mi, &ctx).await?;
    for k in 2..events {
        let d = chrono::NaiveDate::from_ymd_opt(2002, 1, 1).unwrap() + chrono::Days::new(k as u64 * 30);
        ledger
            .record_person_event(
                &id,
                &json!({"type": "document_collected", "effective_date": d.to_string()}),
                &ctx,
            )
            .await?;
    }
    ledger.projections().catch_up().await?;
    let router = kokuho_ledger::http::router(ledger.clone());
    for (label, concurrency) in [("sequential", 1usize), ("concurrent", clients)] {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let router = router.clone();
            let n = requests / concurrency;
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let res = router
                        .clone()
                        .oneshot(Request::get("/v1/persons/1/timeline").body(Body::empty()).unwrap())
                        .await
                        .unwrap();
                    assert!(res.status().is_success());
                    let _ = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        let wall = started.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        println!(
            "timeline ({events} events, {label}, {concurrency} clients): p50 {:?}, p99 {:?}, {:.0} req/s",
            pct(0.50),
            pct(0.99),
            all.len() as f64 / wall
        );
    }
    store.close().await;
    Ok(())
}

fn write_import_file(path: &std::path::Path, persons: usize) -> anyhow::Result<()> {
    write_import_range(path, 0..persons)
}

fn write_import_range(path: &std::path::Path, persons: std::ops::Range<usize>) -> anyhow::Result<()> {
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

fn percentiles(mut all: Vec<Duration>) -> (Duration, Duration, Duration) {
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (pct(0.50), pct(0.99), *all.last().unwrap())
}

/// One keep-alive HTTP/1.1 connection doing GETs: a minimal client, so the measured time is
/// the server's and the loopback's, not a client library's.
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::new(stream),
        })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, usize)> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
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
        Ok((status, len))
    }
}

async fn projections(url: &str, persons: usize, clients: usize, seconds: u64, rate: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, persons)?;
    let settings = Settings {
        vault_key_file: Some(dir.path().join("bench.key")),
        ..Settings::default()
    };
    let summary = kokuho_ledger::import::run(&file, url, settings, 10_000, "bench").await?;
    println!("import: {summary}");
    let store = Store::connect(url).await?;
    let head = store.head().await?;

    // Baseline: a bare sequential read of the whole log, in the batches the projections read.
    let started = Instant::now();
    let mut after = 0;
    let mut n = 0usize;
    loop {
        let batch = store.read_log(after, 2000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        n += batch.len();
    }
    let scan = n as f64 / started.elapsed().as_secs_f64();
    println!("bare sequential read of the log ({n} events, batches of 2000): {scan:.0} events/s");

    let p = kokuho_ledger::projections::Projections::new(store.clone());
    let started = Instant::now();
    let summary = p.rebuild(|_| {}).await?;
    let secs = started.elapsed().as_secs_f64();
    let per_projection = head as f64 * summary.projections.len() as f64 / secs;
    println!(
        "rebuild of {} projections over {head} events: {secs:.1} s; {:.0} events/s through all projections, \
         {per_projection:.0} events/s per projection; ratio to the bare read {:.2}",
        summary.projections.len(),
        head as f64 / secs,
        head as f64 / secs / scan
    );
    for (table, rows) in &summary.rows {
        println!("  {table}: {rows} rows");
    }

    // Timeline reads over TCP from many clients, random persons.
    let (ledger, _) = ledger(url, dir.path()).await?;
    let router = kokuho_ledger::http::router(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    for (label, pace) in [("closed loop", None), ("open loop", Some(rate))] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let addr = addr.clone();
            // Open loop: each connection sends on a fixed schedule, staggered.
            let interval = pace.map(|r| Duration::from_secs_f64(clients as f64 / r as f64));
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&addr).await?;
                let mut lat = Vec::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                let mut next =
                    Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / clients as f64));
                while Instant::now() < deadline {
                    if interval.is_some() {
                        tokio::time::sleep_until(next.into()).await;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let pid = 100_000_000_000u64 + x % persons as u64;
                    let t = if interval.is_some() { next } else { Instant::now() };
                    let (status, _) = conn.get(&format!("/v1/persons/{pid}/timeline")).await?;
                    anyhow::ensure!(status == 200, "status {status}");
                    lat.push(t.elapsed());
                    if let Some(i) = interval {
                        next += i;
                    }
                }
                anyhow::Ok(lat)
            }));
        }
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let wall = started.elapsed().as_secs_f64();
        let count = all.len();
        let (p50, p99, max) = percentiles(all);
        println!(
            "timeline over TCP, {label}, {clients} connections, {persons} persons: p50 {p50:?}, p99 {p99:?}, max {max:?}, {:.0} req/s",
            count as f64 / wall
        );
    }
    store.close().await;
    Ok(())
}

async fn lag(url: &str, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ledger, store) = ledger(url, dir.path()).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = RequestContext {
                actor: "bench".into(),
                ..Default::default()
            };
            let mut lag = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let n = c * 10_000_000 + i;
                let id = PersonId::parse(&format!("{}", 300_000_000_000u64 + n as u64))?;
                let r = ledger.record_person_event(&id, &registration(n), &ctx).await?;
                let acked = Instant::now();
                // Watched apart, so the client goes on appending at full speed.
                let watcher = ledger.clone();
                lag.push(tokio::spawn(async move {
                    watcher
                        .projections()
                        .wait_for(r.appended.last_position, Duration::from_secs(30))
                        .await
                        .map(|_| acked.elapsed())
                }));
                i += 1;
            }
            anyhow::Ok(lag)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        for w in t.await?? {
            all.push(w.await??);
        }
    }
    let count = all.len();
    let (p50, p99, max) = percentiles(all);
    println!(
        "append → projection applied, {clients} clients appending single events: {count} appends, \
         lag p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    store.close().await;
    Ok(())
}

async fn feed_position(p: &kokuho_ledger::projections::Projections) -> anyhow::Result<i64> {
    Ok(p.status()
        .await?
        .into_iter()
        .find(|s| s.name == "feed")
        .map_or(0, |s| s.position))
}

async fn feed(url: &str, persons: usize, export_records: usize) -> anyhow::Result<()> {
    use kokuho_ledger::feed_export::{export, Encoding};
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, persons)?;
    let store = Store::connect(url).await?;
    // The feed consumer runs (as in `serve`) while the import writes the log.
    let p = Arc::new(kokuho_ledger::projections::Projections::new(store.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = p.spawn(stopped);
    let settings = Settings {
        vault_key_file: Some(dir.path().join("bench.key")),
        ..Settings::default()
    };
    let started = Instant::now();
    let summary = kokuho_ledger::import::run(&file, url, settings, 10_000, "bench").await?;
    let import_secs = started.elapsed().as_secs_f64();
    let head = store.head().await?;
    let at_import_end = feed_position(&p).await?;
    println!("import: {summary}");
    loop {
        if feed_position(&p).await? >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    stop.send(true)?;
    runner.await?;
    let db = kokuho_ledger::projections::db::Db::new(&store);
    let records = kokuho_ledger::projections::read::feed_head(&db).await?;
    println!(
        "feed during the import of {head} events ({import_secs:.1} s): the feed consumer applied {at_import_end} events ({:.0} events/s); caught up {:.1} s after the import ended; overall {:.0} events/s and {:.0} feed records/s ({records} records)",
        at_import_end as f64 / import_secs,
        total_secs - import_secs,
        head as f64 / total_secs,
        records as f64 / total_secs,
    );

    // Reading the whole feed over TCP, limit=1000, one consumer (baseline: the same pages by SQL).
    let started = Instant::now();
    let mut after = 0;
    loop {
        let page = kokuho_ledger::projections::read::feed_records(&db, after, 1000).await?;
        if page.len() < 1000 {
            break;
        }
        after += 1000;
    }
    let sql_rate = records as f64 / started.elapsed().as_secs_f64();
    let (ledger, _) = ledger(url, dir.path()).await?;
    let router = kokuho_ledger::http::router(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut conn = Conn::open(&addr).await?;
    let started = Instant::now();
    let (mut after, mut bytes, mut pages) = (0i64, 0usize, 0usize);
    while after < records {
        let (status, len) = conn.get(&format!("/v1/feed?after={after}&limit=1000")).await?;
        anyhow::ensure!(status == 200, "status {status}");
        after = (after + 1000).min(records);
        bytes += len;
        pages += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "GET /v1/feed?limit=1000 over TCP, whole feed: {pages} pages, {:.0} records/s, {:.0} MB/s; \
         the same pages by bare SQL: {sql_rate:.0} records/s; ratio {:.2}",
        records as f64 / secs,
        bytes as f64 / secs / 1e6,
        records as f64 / secs / sql_rate
    );

    // Long-poll wake-up: a consumer waits at the head with wait=30; a command whose group
    // changes the feed is appended; time from its acknowledgement to the consumer's answer
    // (an upper bound of the time from the record's commit).
    let mut waits = Vec::new();
    for i in 0..40usize {
        let head = kokuho_ledger::projections::read::feed_head(&db).await?;
        let addr = addr.clone();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let consumer = tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let _ = ready.send(());
            let (status, _) = conn.get(&format!("/v1/feed?after={head}&limit=10&wait=30")).await?;
            anyhow::ensure!(status == 200, "status {status}");
            Ok::<_, anyhow::Error>(Instant::now())
        });
        is_ready.await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pid = PersonId::parse(&format!("{}", 100_000_000_000u64 + i as u64))?;
        let body = json!({"type": "name_changed", "effective_date": "2020-02-02", "name": format!("山田 {i}"), "name_kana": "ヤマダ　ハナコ"});
        ledger
            .record_person_event(&pid, &body, &RequestContext::default())
            .await?;
        let acknowledged = Instant::now();
        let answered = consumer.await??;
        waits.push(answered.saturating_duration_since(acknowledged));
    }
    let (p50, p99, max) = percentiles(waits);
    println!(
        "long-poll wait=30, append acknowledged → consumer answered: p50 {p50:?}, p99 {p99:?}, max {max:?} (40 runs)"
    );

    // Export: the same records to Shift_JIS and to UTF-8 (the same bytes with no transcoding).
    let limit = export_records.min(records as usize);
    let mut rates = Vec::new();
    for (label, encoding) in [
        ("UTF-8 (no encoding)", Encoding::Utf8),
        ("Shift_JIS", Encoding::ShiftJis),
        ("UTF-8 (no encoding)", Encoding::Utf8),
        ("Shift_JIS", Encoding::ShiftJis),
    ] {
        let out = dir.path().join(format!("export-{label}"));
        let started = Instant::now();
        let e = export(&store, 0, Some(limit), &out, encoding, false).await?;
        let secs = started.elapsed().as_secs_f64();
        let size = std::fs::metadata(&e.household_file)?.len() + std::fs::metadata(&e.individual_file)?.len();
        println!(
            "export {label}: {} records in {secs:.2} s, {:.0} records/s, {:.1} MB",
            e.records,
            e.records as f64 / secs,
            size as f64 / 1e6
        );
        rates.push((encoding, e.records as f64 / secs));
        std::fs::remove_file(&e.household_file)?;
        std::fs::remove_file(&e.individual_file)?;
    }
    let best = |enc| {
        rates
            .iter()
            .filter(|(e, _)| *e == enc)
            .map(|(_, r)| *r)
            .fold(0.0, f64::max)
    };
    println!(
        "export ratio Shift_JIS / UTF-8 (best of two each): {:.2}",
        best(Encoding::ShiftJis) / best(Encoding::Utf8)
    );
    store.close().await;
    Ok(())
}

/// `clients` record single-event commands (new persons' registrations) through the full
/// command path for `seconds`, each with its own Idempotency-Key if asked: events/s.
async fn command_rate(ledger: &Arc<Ledger>, clients: usize, seconds: u64, idempotency: bool) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (ledger, stop, count) = (ledger.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let id = PersonId::parse(&format!("{}{:09}", c + 1, i)).unwrap();
                    let key = idempotency.then(|| format!("bench-{c}-{i}"));
                    let ctx = RequestContext {
                        actor: "bench".into(),
                        request_id: format!("{c}-{i}"),
                        fingerprint: key.clone(),
                        idempotency_key: key,
                        ..Default::default()
                    };
                    ledger
                        .record_person_event(&id, &registration(i), &ctx)
                        .await
                        .expect("append");
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

/// Single-event commands from `clients` for `seconds` on a fresh database (events/s).
async fn append_rate(admin: &str, clients: usize, seconds: u64, audit: bool) -> anyhow::Result<f64> {
    let db = BenchDb::create(admin).await?;
    let dir = tempfile::tempdir()?;
    let signer = audit.then(|| Arc::new(Signer::generate()));
    let (ledger, store) = ledger_with(&db.url, dir.path(), signer).await?;
    let rate = command_rate(&ledger, clients, seconds, false).await?;
    if audit {
        // Everything appended was chained meanwhile (or is at the next wake-up).
        let head = store.head().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ledger.audit().size().await? < head && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "    chained {} of {head} events within 30 s of the end",
            ledger.audit().size().await?
        );
    }
    store.close().await;
    drop(ledger);
    db.drop_db().await?;
    Ok(rate)
}

/// Reads every event and audit row in pages, as the verifier does, without hashing (rows/s).
async fn bare_read(store: &Store) -> anyhow::Result<(i64, f64)> {
    let db = kokuho_ledger::projections::db::Db::new(store);
    let started = Instant::now();
    let (mut after, mut rows) = (0i64, 0i64);
    loop {
        let (events, audit) = tokio::try_join!(
            store.read_log_raw(after, 10_000),
            kokuho_ledger::audit::store::rows_after(&db, after, 10_000)
        )?;
        rows += events.len() as i64;
        match events.last() {
            Some(e) => after = e.position,
            None => break,
        }
        std::hint::black_box(audit);
    }
    Ok((rows, rows as f64 / started.elapsed().as_secs_f64()))
}

/// `kokuho-ledger audit verify` as its own process: (seconds, peak resident KiB).
fn verify_process(url: &str, public_key: &str) -> anyhow::Result<(f64, u64)> {
    let bin = std::env::current_exe()?.with_file_name("kokuho-ledger");
    let started = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib %M"])
        .arg(&bin)
        .args(["audit", "verify", "--database-url", url, "--public-key", public_key])
        .output()
        .context("running /usr/bin/time kokuho-ledger audit verify")?;
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "verify failed: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.trim().parse().ok())
        .context("no peak RSS from /usr/bin/time")?;
    Ok((secs, rss))
}

async fn audit(admin: &str, url: &str, persons: usize, clients: usize, seconds: u64) -> anyhow::Result<()> {
    use kokuho_ledger::audit::chainer::Chainer;
    // Appends with and without the chainer, alternating, each on a fresh database.
    let mut rates: [Vec<f64>; 2] = Default::default();
    for _ in 0..2 {
        for audit in [false, true] {
            let rate = append_rate(admin, clients, seconds, audit).await?;
            println!(
                "  appends, {clients} clients, {seconds} s, chainer {}: {rate:.0} events/s",
                if audit { "on" } else { "off" }
            );
            rates[audit as usize].push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "appends with the chainer / without (mean of two each): {:.0} / {:.0} events/s, ratio {:.2}",
        mean(&rates[1]),
        mean(&rates[0]),
        mean(&rates[1]) / mean(&rates[0])
    );

    // The log in two halves: chain, read bare, verify — at half and at full size.
    let dir = tempfile::tempdir()?;
    let signer = Arc::new(Signer::generate());
    let store = Store::connect(url).await?;
    let settings = Settings {
        vault_key_file: Some(dir.path().join("bench.key")),
        ..Settings::default()
    };
    for (n, range) in [(1, 0..persons / 2), (2, persons / 2..persons)] {
        let file = dir.path().join(format!("part{n}.jsonl"));
        write_import_range(&file, range)?;
        kokuho_ledger::import::run(&file, url, settings.clone(), 10_000, "bench").await?;
        let head = store.head().await?;
        let chainer = kokuho_ledger::projections::Projections::empty(store.clone())
            .with_audit(Chainer::new("bench.kokuho-ledger", signer.clone()));
        chainer.load_checkpoints().await?;
        let before = chainer.position();
        let started = Instant::now();
        chainer.catch_up().await?;
        let chain_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        chainer.tick_all().await?;
        println!(
            "log of {head} events: chained {} entries in {chain_secs:.1} s ({:.0} entries/s)",
            head - before.max(0),
            (head - before.max(0)) as f64 / chain_secs
        );
        let (rows, bare) = bare_read(&store).await?;
        let (secs, rss) = verify_process(url, &signer.public_key())?;
        println!(
            "  bare sequential read of the same rows: {rows} rows, {bare:.0} rows/s; audit verify (own process): {secs:.1} s, {:.0} entries/s, ratio {:.2}, peak RSS {:.1} MiB",
            head as f64 / secs,
            head as f64 / secs / bare,
            rss as f64 / 1024.0
        );
    }
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = BenchDb::create(&args.admin_url).await?;
    let result = match args.what {
        What::Appends {
            clients,
            seconds,
            idempotency,
        } => appends(&db.url, clients, seconds, idempotency).await,
        What::Import { persons, batch_size } => import(&db.url, persons, batch_size).await,
        What::Timeline {
            events,
            requests,
            clients,
        } => timeline(&db.url, events, requests, clients).await,
        What::Projections {
            persons,
            clients,
            seconds,
            rate,
        } => projections(&db.url, persons, clients, seconds, rate).await,
        What::Lag { clients, seconds } => lag(&db.url, clients, seconds).await,
        What::Feed {
            persons,
            export_records,
        } => feed(&db.url, persons, export_records).await,
        What::Audit {
            persons,
            clients,
            seconds,
        } => audit(&args.admin_url, &db.url, persons, clients, seconds).await,
    };
    if !args.keep {
        db.drop_db().await?;
    }
    result
}
