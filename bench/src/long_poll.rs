//! Appends with and without N feed consumers long-polling over TCP in the same run: the
//! consumers follow the feed (each answer's `next_after` is the next cursor, `wait=30`), so
//! every feed commit wakes all of them; the shared feed tail reads the feed once per wake-up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kokuho_ledger::domain::PersonId;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::request::RequestContext;
use serde_json::json;

use crate::support::{ledger, registration, serve, Conn, Served};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// `clients` append a registration and a move-in (which issues feed records) per person for
/// `seconds` (registrations only with `parked`: nothing for the consumers, who keep waiting):
/// events/s.
async fn append_rate(ledger: &Arc<Ledger>, clients: usize, seconds: u64, parked: bool) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (ledger, stop, count) = (ledger.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let ctx = RequestContext {
                    actor: "bench".into(),
                    ..Default::default()
                };
                while !stop.load(Ordering::Relaxed) {
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    let id = PersonId::parse(&format!("{}", 700_000_000_000u64 + n)).unwrap();
                    ledger
                        .record_person_event(&id, &registration(n as usize), &ctx)
                        .await
                        .expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                    if parked {
                        continue;
                    }
                    let moved = json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad",
                        "household_id": format!("{}", 800_000_000_000u64 + n)});
                    ledger.record_person_event(&id, &moved, &ctx).await.expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("appender");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A consumer following the feed from `after` until `stop`; counts its answers.
async fn follow(served: Served, mut after: i64, stop: Arc<AtomicBool>, answers: Arc<AtomicU64>) {
    let mut conn = Conn::open(&served).await.expect("connect");
    while !stop.load(Ordering::Relaxed) {
        let (status, body) = conn
            .exchange("GET", &format!("/v1/feed?after={after}&limit=100&wait=30"), "")
            .await
            .expect("long-poll");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let page: serde_json::Value = serde_json::from_slice(&body).expect("a page");
        after = page["next_after"].as_i64().expect("next_after");
        answers.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(url: &str, consumers: usize, clients: usize, seconds: u64, parked: bool) -> anyhow::Result<()> {
    let app = ledger(url, None).await?;
    let served = serve(&app).await?;
    let l = app.ledger.clone();
    let alone = append_rate(&l, clients, seconds, parked).await;

    let head = l.feed.page_text(0, 1, Duration::ZERO).await?.head;
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let followers: Vec<_> = (0..consumers)
        .map(|_| tokio::spawn(follow(served.clone(), head, stop.clone(), answers.clone())))
        .collect();
    // Every consumer connected and waiting before the clock starts.
    let t0 = Instant::now();
    while kokuho_ledger::metrics::global().feed_waiting.load(Ordering::Relaxed) < consumers as i64 {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "the consumers did not all wait"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queries_before = tail_queries();
    let answers_before = answers.load(Ordering::Relaxed);
    let started = Instant::now();
    let watched = append_rate(&l, clients, seconds, parked).await;
    let elapsed = started.elapsed().as_secs_f64();
    let queries = tail_queries() - queries_before;
    let answered = answers.load(Ordering::Relaxed) - answers_before;
    stop.store(true, Ordering::Relaxed);
    // The followers wait up to 30 s for a last record: one more append each wakes them.
    append_rate(&l, 1, 1, false).await;
    for f in followers {
        let _ = tokio::time::timeout(Duration::from_secs(60), f).await;
    }
    let what = if parked {
        "waiting (the appends issue no feed records)"
    } else {
        "following the feed"
    };
    println!("long-poll: {clients} appending clients, {seconds} s each, {consumers} consumers {what}");
    println!("  appends alone: {alone:.0} events/s");
    println!("  appends with the consumers waiting: {watched:.0} events/s");
    println!("  ratio: {:.2}", watched / alone);
    println!(
        "  meanwhile: {:.0} feed answers/s, {:.1} feed tail queries/s",
        answered as f64 / elapsed,
        queries as f64 / elapsed
    );
    l.store().close().await;
    Ok(())
}

/// The feed tail's queries so far, from the rendered metrics (its counters are private).
fn tail_queries() -> u64 {
    kokuho_ledger::metrics::global()
        .render(None, &[])
        .lines()
        .filter_map(|l| l.strip_prefix("kokuho_feed_tail_queries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
