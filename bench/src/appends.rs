//! Single-event appends from concurrent clients against plain single-row INSERT commits of the
//! same rows, on the same server, in the same run; over HTTP also against two floors of the
//! same run (the HTTP exchange alone, and a request whose only write is its access record).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use kokuho_ledger::request::RequestContext;

use crate::support::{command_rate, ledger, percentiles, register_new, serve, PLAIN_TABLE};

pub async fn run(url: &str, clients: usize, seconds: u64, idempotency: bool) -> anyhow::Result<()> {
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
    let store = ledger.store().clone();
    let pool = store.pg_pool().context("appends needs PostgreSQL")?.clone();
    sqlx::query(PLAIN_TABLE).execute(&pool).await?;

    // The ledger: each client records single-event commands (a new person's registration).
    let commits = Commits::start();
    let ledger_rate = command_rate(&ledger, clients, seconds, idempotency).await?;
    let ledger_per_commit = commits.events_per_commit();
    // The same over HTTP, each request through the guard with its access record written.
    let served = serve(&app).await?;
    let commits = Commits::start();
    let (http_rate, latencies) = crate::access::appends(&served, clients, seconds, 700_000_000_000).await?;
    let http_per_commit = commits.events_per_commit();
    let (http_p50, http_p99, _) = percentiles(latencies);
    // Two floors under an append over HTTP, as many clients: `GET /healthz` without a
    // credential (the loopback and both HTTP stacks on these two cores, nothing stored), and
    // with one (its access record committed before the answer, nothing else).
    let (bare_rate, bare_latencies) = crate::access::exchanges(&served, false, clients, seconds).await?;
    let (bare_p50, _, _) = percentiles(bare_latencies);
    let (recorded_rate, recorded_latencies) = crate::access::exchanges(&served, true, clients, seconds).await?;
    let (recorded_p50, _, _) = percentiles(recorded_latencies);

    // Baseline: the same rows, one INSERT and one commit each, from the same number of clients.
    let sample = store.read_log(0, 1).await?.pop().context("a stored row")?;
    let payload = sample.payload.as_str().to_owned();
    let metadata = sample.metadata.as_str().to_owned();
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
    // The peer: postgres-es 0.5 with the same payload, same clients, same server.
    let peer_rate = crate::peers::postgres_es_rate(&pool, &sample.payload.value()?, clients, seconds).await?;
    println!("appends: {clients} clients, {seconds} s each, idempotency keys: {idempotency}");
    println!("  ledger single-event commands: {ledger_rate:.0} events/s ({ledger_per_commit:.1} events per commit)");
    println!(
        "  ledger over HTTP with access records: {http_rate:.0} events/s (p50 {http_p50:?}, p99 {http_p99:?}; {http_per_commit:.1} events per commit)"
    );
    println!("  the HTTP exchange alone (GET /healthz, no credential, no record): {bare_rate:.0} requests/s (p50 {bare_p50:?})");
    println!(
        "  the access record alone (GET /healthz with the token: its record committed, nothing else): \
         {recorded_rate:.0} requests/s (p50 {recorded_p50:?})"
    );
    println!("  postgres-es 0.5 single-event commands: {peer_rate:.0} events/s");
    println!("  plain INSERT, one commit each: {plain_rate:.0} rows/s");
    println!("  ratio ledger / plain: {:.2}", ledger_rate / plain_rate);
    println!("  ratio ledger over HTTP / plain: {:.2}", http_rate / plain_rate);
    println!("  ratio access record alone / plain: {:.2}", recorded_rate / plain_rate);
    println!("  ratio postgres-es / plain: {:.2}", peer_rate / plain_rate);
    println!("  ratio ledger / postgres-es: {:.2}", ledger_rate / peer_rate);
    load_drop(&ledger, clients).await?;
    store.close().await;
    Ok(())
}

/// What a sudden drop of the load costs the client that stays: the writer waits for as many
/// commands as its batches usually carry, so the first batches after `clients` become one may
/// wait for commands that no longer come. Prints that client's latencies alone, then right
/// after the drop.
async fn load_drop(ledger: &Arc<kokuho_ledger::ledger::Ledger>, clients: usize) -> anyhow::Result<()> {
    let one = |ledger: Arc<kokuho_ledger::ledger::Ledger>| async move {
        let ctx = RequestContext {
            actor: "bench".into(),
            request_id: "load-drop".into(),
            ..Default::default()
        };
        let t = Instant::now();
        register_new(&ledger, 0, &ctx).await?;
        anyhow::Ok(t.elapsed())
    };
    let mut alone = Vec::new();
    for _ in 0..200 {
        alone.push(one(ledger.clone()).await?);
    }
    let (alone_p50, _, _) = percentiles(alone);
    let others = Arc::new(AtomicBool::new(false));
    let crowd: Vec<_> = (1..clients)
        .map(|_| {
            let (ledger, others) = (ledger.clone(), others.clone());
            tokio::spawn(async move {
                while !others.load(Ordering::Relaxed) {
                    one(ledger.clone()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        one(ledger.clone()).await?;
    }
    others.store(true, Ordering::Relaxed);
    for t in crowd {
        t.await??;
    }
    let mut after = Vec::new();
    for _ in 0..20 {
        after.push(one(ledger.clone()).await?);
    }
    let first = after[0];
    let worst = after.iter().max().copied().unwrap_or_default();
    let (after_p50, _, _) = percentiles(after);
    println!(
        "  load drop ({clients} clients to 1, in process): alone p50 {alone_p50:?}; \
         the 20 commands after the drop: first {first:?}, worst {worst:?}, p50 {after_p50:?}"
    );
    Ok(())
}

/// The log's group commits during a phase, from the process's metrics (the ledger runs in the
/// bench's process): how many events one commit carried on average.
struct Commits {
    events: u64,
    batches: u64,
}

impl Commits {
    fn start() -> Self {
        let m = kokuho_ledger::metrics::global();
        Self {
            events: m.events_appended.get(),
            batches: m.append_batches.get(),
        }
    }

    fn events_per_commit(&self) -> f64 {
        let m = kokuho_ledger::metrics::global();
        (m.events_appended.get() - self.events) as f64 / (m.append_batches.get() - self.batches).max(1) as f64
    }
}
