//! Reads: rebuilding the read models (against a bare read of the log), timelines over TCP
//! (closed and open loop), one person's timeline through the router, the lag from an append
//! to its projection, and what consistent reads cost under write load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::reads::Resource;
use kokuho_ledger::request::RequestContext;
use serde_json::json;
use tower::ServiceExt;

use crate::support::{
    bench_token, command_rate, import, ledger, percentiles, person_id, registration, serve, settings,
    write_import_file, Conn, Served,
};

/// Timeline GETs of random generated persons from `clients` connections for `seconds`; with
/// `rate`, an open loop at that total rate (latency from each request's scheduled time).
pub async fn timelines(
    addr: &Served,
    persons: usize,
    clients: usize,
    seconds: u64,
    rate: Option<u64>,
    query: &'static str,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    person_reads(addr, persons, clients, seconds, rate, "/timeline", query).await
}

/// GETs of `/v1/persons/{random id}{resource}{query}`, as [`timelines`] describes.
pub async fn person_reads(
    addr: &Served,
    persons: usize,
    clients: usize,
    seconds: u64,
    rate: Option<u64>,
    resource: &'static str,
    query: &'static str,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = addr.clone();
        let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut lat = Vec::new();
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            let mut next = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / clients as f64));
            while Instant::now() < deadline {
                if interval.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pid = person_id((x % persons as u64) as usize);
                let t = if interval.is_some() { next } else { Instant::now() };
                let (status, _) = conn.get(&format!("/v1/persons/{pid}{resource}{query}")).await?;
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
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((all, rate))
}

pub async fn projections(url: &str, persons: usize, clients: usize, seconds: u64, rate: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
    let report = import(&ledger, &file).await?;
    println!("import: {report}");
    let store = ledger.store().clone();
    let head = store.head().await?;
    ledger.projections().catch_up().await?;

    // Baseline: a bare sequential read of the whole log, in the batches the projections read.
    let started = Instant::now();
    let (mut after, mut n) = (0, 0usize);
    loop {
        let batch = store.read_log(after, 2000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        n += batch.len();
    }
    let scan = n as f64 / started.elapsed().as_secs_f64();
    println!("bare sequential read of the log ({n} events, batches of 2000): {scan:.0} events/s");

    let p = kokuho_ledger::ledger::projections(&store, &settings(), None);
    let started = Instant::now();
    let summary = p.rebuild(|_| {}).await?;
    let secs = started.elapsed().as_secs_f64();
    let build = summary.build_seconds;
    let check = secs - build;
    println!(
        "rebuild of {} read models over {head} events: {build:.1} s, {:.0} events/s, ratio to the bare read {:.2}; \
         then the feed check: {check:.1} s, {:.0} events/s; together {:.0} events/s",
        summary.projections.len(),
        head as f64 / build,
        head as f64 / build / scan,
        head as f64 / check,
        head as f64 / secs,
    );
    for (table, rows) in &summary.rows {
        println!("  {table}: {rows} rows");
    }

    let addr = serve(&app).await?;
    // The first pass meets answers nobody read yet (the memory of answers starts empty), the
    // second mostly kept ones, as a server that has run for a while does.
    let memo = ledger.reads().answers();
    let passes = [
        ("timeline", "/timeline", "closed loop, first pass", None),
        ("timeline", "/timeline", "closed loop, second pass", None),
        ("timeline", "/timeline", "open loop", Some(rate)),
        ("person", "", "closed loop, first pass", None),
        ("person", "", "closed loop, second pass", None),
        // Views are read after the timelines: a third pass finds them all kept, as the
        // timelines' second does.
        ("person", "", "closed loop, third pass", None),
    ];
    for (what, resource, label, pace) in passes {
        let kind = if resource.is_empty() {
            Resource::Person
        } else {
            Resource::Timeline
        };
        let (hits, misses) = (memo.hits(kind), memo.misses(kind));
        let (all, rate) = person_reads(&addr, persons, clients, seconds, pace, resource, "").await?;
        let (p50, p99, max) = percentiles(all);
        let (hits, misses) = (memo.hits(kind) - hits, memo.misses(kind) - misses);
        println!(
            "{what} over TCP, {label}, {clients} connections, {persons} persons: p50 {p50:?}, p99 {p99:?}, max {max:?}, {rate:.0} req/s; \
             {:.0} % from memory ({} MiB kept)",
            100.0 * hits as f64 / (hits + misses).max(1) as f64,
            memo.weight() >> 20
        );
    }
    // The views' reads alone (no HTTP), same persons and run: the statements each made before
    // against the one it makes now.
    for (label, queries) in [
        (
            "person view's read-model queries, four statements",
            ViewQueries::PersonFour,
        ),
        (
            "person view's read-model queries, one statement",
            ViewQueries::PersonOne,
        ),
        (
            "timeline's stream and intervals, two statements",
            ViewQueries::TimelineTwo,
        ),
        (
            "timeline's stream and intervals, one statement",
            ViewQueries::TimelineOne,
        ),
    ] {
        let rate = view_queries(&store, persons, clients, seconds, queries).await?;
        println!("{label}, {clients} tasks: {rate:.0} persons/s");
    }
    store.close().await;
    Ok(())
}

/// The statements a view reads with.
#[derive(Clone, Copy)]
enum ViewQueries {
    /// The person view's four former statements.
    PersonFour,
    /// `sql::person_record`.
    PersonOne,
    /// The timeline's former stream read and `sql::intervals_with_cards`.
    TimelineTwo,
    /// `sql::timeline_record`.
    TimelineOne,
}

/// Reads random persons' view rows from `clients` tasks for `seconds` with `queries`.
/// Persons read per second.
async fn view_queries(
    store: &kokuho_ledger::store::Store,
    persons: usize,
    clients: usize,
    seconds: u64,
    queries: ViewQueries,
) -> anyhow::Result<f64> {
    use kokuho_ledger::reads::sql;
    let at = store.head().await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (db, store) = (store.db().clone(), store.clone());
            tokio::spawn(async move {
                let (mut n, mut x) = (0u64, 0x2545_f491_4f6c_dd1du64 ^ (c as u64 + 1));
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = person_id((x % persons as u64) as usize);
                    let found = match queries {
                        ViewQueries::PersonOne => sql::person_record(&db, &id, at).await?.is_some(),
                        ViewQueries::PersonFour => {
                            let person = sql::person(&db, &id, at).await?;
                            sql::periods(&db, false, &id, at).await?;
                            sql::memberships(&db, &id, at).await?;
                            sql::intervals_with_cards(&db, &id, at).await?;
                            person.is_some()
                        }
                        ViewQueries::TimelineTwo => {
                            let mut stream = store.load_stream("person", &id, None).await?;
                            stream.retain(|e| e.position <= at);
                            sql::intervals_with_cards(&db, &id, at).await?;
                            !stream.is_empty()
                        }
                        ViewQueries::TimelineOne => !sql::timeline_record(&db, &id, at).await?.0.is_empty(),
                    };
                    anyhow::ensure!(found, "person {id} not found");
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// What consistent reads cost: timelines with no writes and under `writers` clients appending,
/// each consistent (the default) and `consistency=eventual`.
pub async fn consistency(
    url: &str,
    persons: usize,
    readers: usize,
    writers: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
    import(&ledger, &file).await?;
    ledger.projections().catch_up().await?;
    let addr = serve(&app).await?;
    for load in [false, true] {
        for (label, query) in [("consistent", ""), ("eventual", "?consistency=eventual")] {
            let writing = load.then(|| {
                let ledger = ledger.clone();
                tokio::spawn(async move { command_rate(&ledger, writers, seconds, false).await })
            });
            let (all, rate) = timelines(&addr, persons, readers, seconds, None, query).await?;
            let appended = match writing {
                Some(w) => format!(", {:.0} appends/s beside them", w.await??),
                None => String::new(),
            };
            let (p50, p99, max) = percentiles(all);
            println!(
                "timeline, {readers} readers, {label}, {}: p50 {p50:?}, p99 {p99:?}, max {max:?}, {rate:.0} req/s{appended}",
                if load { format!("{writers} clients appending") } else { "no writes".into() }
            );
        }
    }
    ledger.store().close().await;
    Ok(())
}

pub async fn timeline(url: &str, events: usize, requests: usize, clients: usize) -> anyhow::Result<()> {
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
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
        let body = json!({"type": "document_collected", "effective_date": d.to_string()});
        ledger.record_person_event(&id, &body, &ctx).await?;
    }
    ledger.projections().catch_up().await?;
    let router = kokuho_ledger::http::router(ledger.clone(), app.access.clone()).layer(
        axum::extract::connect_info::MockConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))),
    );
    let auth = format!("Bearer {}", bench_token(&app.access).await?);
    for (label, concurrency) in [("sequential", 1usize), ("concurrent", clients)] {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let router = router.clone();
            let auth = auth.clone();
            let n = requests / concurrency;
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let res = router
                        .clone()
                        .oneshot(
                            Request::get("/v1/persons/1/timeline")
                                .header("authorization", &auth)
                                .body(Body::empty())
                                .unwrap(),
                        )
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
        let count = all.len();
        let (p50, p99, _) = percentiles(all);
        println!(
            "timeline ({events} events, {label}, {concurrency} clients): p50 {p50:?}, p99 {p99:?}, {:.0} req/s",
            count as f64 / wall
        );
    }
    ledger.store().close().await;
    Ok(())
}

pub async fn lag(url: &str, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let ctx = RequestContext {
                actor: "bench".into(),
                ..Default::default()
            };
            let mut lag = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = c * 10_000_000 + i;
                let id = PersonId::parse(&format!("{}", 300_000_000_000u64 + n as u64))?;
                let r = ledger.record_person_event(&id, &registration(n), &ctx).await?;
                let acked = Instant::now();
                // Watched apart, so the client goes on appending at full speed.
                let watcher = ledger.clone();
                lag.push(tokio::spawn(async move {
                    watcher
                        .projections()
                        .wait_for(r.last_position, Duration::from_secs(30))
                        .await
                        .map(|_| acked.elapsed())
                }));
                i += 1;
            }
            anyhow::Ok(lag)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
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
    ledger.store().close().await;
    Ok(())
}
