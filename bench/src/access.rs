//! What access recording costs (issue 12): timeline reads over TCP and single-event appends
//! over HTTP, each through the full guard with its access record written, against the same
//! requests through the same guard with a recorder that writes nothing (bench only), in the
//! same run; and the size of one record and of a ward's year of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::reads::timelines;
use crate::support::{import, ledger, percentiles, serve, unrecorded, write_import_file, Conn, Served};

/// Single-event appends (new persons' registrations) over HTTP from `clients` connections
/// for `seconds`: requests/s and latencies.
pub async fn appends(addr: &Served, clients: usize, seconds: u64, base: u64) -> anyhow::Result<(f64, Vec<Duration>)> {
    closed_loop(addr, Some(&addr.token), clients, seconds, base, |n| {
        let body = json!({"type": "registered", "effective_date": "2000-01-01", "name": "山田 太郎",
            "name_kana": "ヤマダ　タロウ", "birth_date": "1970-01-01", "sex": "1"})
        .to_string();
        ("POST", format!("/v1/persons/{n}/events"), body, 201)
    })
    .await
}

/// `GET /healthz` from `clients` connections for `seconds`: without a credential the HTTP
/// exchange with nothing behind it; with the bearer token, the same and the request's access
/// record, durably written before the answer (access.md), and nothing else. Requests/s and
/// latencies.
pub async fn exchanges(
    addr: &Served,
    credential: bool,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let token = credential.then_some(addr.token.as_str());
    closed_loop(addr, token, clients, seconds, 0, |_| {
        ("GET", "/healthz".to_owned(), String::new(), 200)
    })
    .await
}

/// `clients` connections (with the bearer `token`, if any), each sending the request `make(n)`
/// builds (method, path, body, expected status) as soon as the last one is answered, for
/// `seconds`.
async fn closed_loop(
    addr: &Served,
    token: Option<&str>,
    clients: usize,
    seconds: u64,
    base: u64,
    make: fn(u64) -> (&'static str, String, String, u16),
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(base));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, stop, next) = (addr.clone(), stop.clone(), next.clone());
        let credential = token.map_or_else(|| "X-Bench: bare".to_owned(), |t| format!("Authorization: Bearer {t}"));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open_with(&addr, credential).await?;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (method, path, body, expected) = make(next.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                let (status, _) = conn.request(method, &path, &body).await?;
                anyhow::ensure!(status == expected, "{method} {path}: status {status}");
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as f64 / started.elapsed().as_secs_f64(), all))
}

pub async fn run(url: &str, persons: usize, clients: usize, writers: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    let app = ledger(url, None).await?;
    import(&app.ledger, &file).await?;
    app.ledger.projections().catch_up().await?;
    let on = serve(&app).await?;
    let off_app = unrecorded(&app);
    let off = serve(&off_app).await?;
    let db = app.ledger.store().db().clone();
    let count = || async {
        db.fetch_int("SELECT count(*) FROM access_records", &[])
            .await
            .context("counting records")
    };

    // Reads: alternating rounds, so that drift of the machine falls on both alike.
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    let (mut on_lat, mut off_lat) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (lat, rate) = timelines(&off, persons, clients, seconds, None, "").await?;
        off_rates.push(rate);
        off_lat.extend(lat);
        let (lat, rate) = timelines(&on, persons, clients, seconds, None, "").await?;
        on_rates.push(rate);
        on_lat.extend(lat);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (on_rate, off_rate) = (mean(&on_rates), mean(&off_rates));
    let (p50, p99, _) = percentiles(on_lat);
    let (q50, q99, _) = percentiles(off_lat);
    println!(
        "timeline reads, {clients} connections, {persons} persons: with access records {on_rate:.0} req/s \
         (p50 {p50:?}, p99 {p99:?}); recording off {off_rate:.0} req/s (p50 {q50:?}, p99 {q99:?}); ratio {:.2}",
        on_rate / off_rate
    );

    // Appends: the same alternation.
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    let mut base = 800_000_000_000u64;
    for _ in 0..2 {
        let (rate, _) = appends(&off, writers, seconds, base).await?;
        off_rates.push(rate);
        base += 10_000_000;
        let (rate, _) = appends(&on, writers, seconds, base).await?;
        on_rates.push(rate);
        base += 10_000_000;
    }
    let (on_rate, off_rate) = (mean(&on_rates), mean(&off_rates));
    println!(
        "single-event appends over HTTP, {writers} connections: with access records {on_rate:.0}/s; \
         recording off {off_rate:.0}/s; ratio {:.2}",
        on_rate / off_rate
    );

    // Size: the table, its person index and their indexes per record, on PostgreSQL.
    let records = count().await?;
    let pool = app
        .ledger
        .store()
        .pg_pool()
        .context("the access bench needs PostgreSQL")?;
    sqlx::query("VACUUM ANALYZE access_records").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE access_record_persons")
        .execute(pool)
        .await?;
    let bytes: i64 = sqlx::query_scalar(
        "SELECT pg_total_relation_size('access_records') + pg_total_relation_size('access_record_persons')",
    )
    .fetch_one(pool)
    .await?;
    let json_bytes: i64 = sqlx::query_scalar(
        "SELECT avg(length(json_build_object('id', id, 'at', at, 'actor', actor, 'roles', roles, 'terminal', terminal, \
         'screen', screen, 'kind', kind, 'persons', persons, 'outcome', outcome, 'my_number', my_number, \
         'restricted', restricted, 'request_id', request_id, 'path', path, 'export', export)::text))::bigint \
         FROM access_records",
    )
    .fetch_one(pool)
    .await?;
    let per_record = bytes as f64 / records.max(1) as f64;
    // A ward: about 100 staff × 2,000 reads a working day × 245 working days.
    let yearly = 100.0 * 2_000.0 * 245.0;
    println!(
        "access records: {records} written; {per_record:.0} bytes each on disk with indexes (JSON form {json_bytes} bytes); \
         a ward's year (≈{:.0} M records) ≈ {:.1} GB",
        yearly / 1e6,
        yearly * per_record / 1e9
    );
    drop(off_app);
    app.ledger.store().close().await;
    Ok(())
}
