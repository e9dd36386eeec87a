//! The NATS JetStream relay (issue 16): publication rate of the whole feed against bare
//! publishes of the same bodies to the same server in the same run; end-to-end latency from an
//! acknowledged append to the record's arrival at a JetStream consumer; append throughput with
//! and without the relay following the feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::feed::relay::{Disclosure, Relay, RelayConfig, Until};
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::projections::feed::{feed_head, feed_records};
use kokuho_ledger::request::RequestContext;
use serde_json::json;

use crate::support::{import, ledger, percentiles, registration, write_import_file};

async fn feed_caught_up(ledger: &Ledger) -> anyhow::Result<()> {
    let head = ledger.store().head().await?;
    loop {
        let p = ledger.projections().status().await?;
        if p.iter().find(|s| s.name == "feed").is_some_and(|s| s.position >= head) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(nats_url: &str, tag: &str) -> RelayConfig {
    RelayConfig {
        url: Some(nats_url.to_owned()),
        stream: format!("BENCH_FEED_{tag}"),
        subject_prefix: format!("bench{tag}.feed"),
        ..RelayConfig::default()
    }
}

/// A stream like the relay's for the baselines (file storage, the same limits), without the
/// relay's headers on its messages.
async fn bare_stream(js: &jetstream::Context, name: &str, subjects: &str) -> anyhow::Result<()> {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: stream::StorageType::File,
        max_messages_per_subject: -1,
        ..Default::default()
    })
    .await?;
    Ok(())
}

pub async fn run(
    url: &str,
    nats_url: &str,
    persons: usize,
    samples: usize,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
    let started = Instant::now();
    import(&ledger, &file).await?;
    feed_caught_up(&ledger).await?;
    let db = ledger.store().db().clone();
    let records = feed_head(&db).await?;
    println!(
        "feed: {records} records from {persons} persons ({:.0} s to import and project)",
        started.elapsed().as_secs_f64()
    );
    let client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(client.clone());

    // 1. The relay, from an empty stream to the feed head (reads, access records and all).
    let relay_config = config(nats_url, &tag);
    let relay = Relay::new(
        ledger.clone(),
        relay_config.clone(),
        Disclosure::new(app.access.recorder.clone(), "bench nats"),
    )?;
    let started = Instant::now();
    let outcome = relay.run(Until::Head).await?;
    let relay_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(outcome.position == records, "published up to {}", outcome.position);
    let relay_rate = records as f64 / relay_secs;

    // 2. Baselines: the same bodies (read beforehand), no headers, to a stream of the same
    // kind; (a) each acknowledged before the next, as the relay does; (b) 256 in flight;
    // (c) core NATS publishes (no JetStream acknowledgement), then a flush.
    let mut bodies = Vec::with_capacity(records as usize);
    let mut after = 0;
    loop {
        let page = feed_records(&db, after, 10_000).await?;
        if page.is_empty() {
            break;
        }
        after += page.len() as i64;
        bodies.extend(page.into_iter().map(bytes::Bytes::from));
    }
    let bare = format!("BENCH_BARE_{tag}");
    bare_stream(&js, &bare, &format!("benchbare{tag}.>")).await?;
    let subject = format!("benchbare{tag}.seq");
    let started = Instant::now();
    for b in &bodies {
        js.publish(subject.clone(), b.clone()).await?.await?;
    }
    let sequential_rate = records as f64 / started.elapsed().as_secs_f64();
    let subject = format!("benchbare{tag}.pipelined");
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for b in &bodies {
        in_flight.push_back(js.publish(subject.clone(), b.clone()).await?);
        if in_flight.len() >= 256 {
            in_flight.pop_front().expect("one").await?;
        }
    }
    for ack in in_flight {
        ack.await?;
    }
    let pipelined_rate = records as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for b in &bodies {
        client.publish(format!("benchcore{tag}.feed"), b.clone()).await?;
    }
    client.flush().await?;
    let core_rate = records as f64 / started.elapsed().as_secs_f64();
    drop(bodies);
    println!("publication of {records} feed records to local JetStream (file storage):");
    println!(
        "  relay (one at a time, Nats-Msg-Id + expected last subject sequence + position header, access records): {relay_rate:.0} records/s ({relay_secs:.1} s)"
    );
    println!(
        "  bare JetStream publish, no headers, each acknowledged before the next: {sequential_rate:.0} msgs/s; ratio {:.2}",
        relay_rate / sequential_rate
    );
    println!(
        "  bare JetStream publish, no headers, 256 acknowledgements in flight: {pipelined_rate:.0} msgs/s; ratio {:.2}",
        relay_rate / pipelined_rate
    );
    println!(
        "  bare core NATS publish (no acknowledgement, no persistence), then flush: {core_rate:.0} msgs/s; ratio {:.3}",
        relay_rate / core_rate
    );

    // 3. End to end: the relay follows the feed (as the lane of `serve`); one writer records a
    // move-in at a time; latency from its acknowledgement to the first record it causes
    // arriving at an ordered push consumer of the subject.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let lane = {
        let relay = Relay::new(
            ledger.clone(),
            relay_config.clone(),
            Disclosure::new(app.access.recorder.clone(), "bench nats"),
        )?;
        tokio::spawn(async move { relay.run(Until::Stopped(stopped)).await })
    };
    let feed_stream = js.get_stream(&relay_config.stream).await?;
    let arrivals: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let mut messages = feed_stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: relay.subject().to_owned(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let seen = arrivals.clone();
    let receiver = tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            let at = Instant::now();
            #[derive(serde::Deserialize)]
            struct Cause {
                cause_position: i64,
            }
            if let Ok(c) = serde_json::from_slice::<Cause>(&m.payload) {
                seen.lock().unwrap().entry(c.cause_position).or_insert(at);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = PersonId::parse(&format!("{}", 800_000_000_000u64 + i as u64)).unwrap();
        let ctx = RequestContext {
            actor: "bench".into(),
            request_id: format!("e2e-{i}"),
            ..Default::default()
        };
        ledger.record_person_event(&id, &registration(i), &ctx).await?;
        let moved = json!({"type": "moved_in", "effective_date": "2001-04-01", "from": "abroad",
            "household_id": format!("{}", 810_000_000_000u64 + i as u64)});
        let recorded = ledger.record_person_event(&id, &moved, &ctx).await?;
        let acked = Instant::now();
        let position = recorded.position;
        let deadline = acked + Duration::from_secs(30);
        loop {
            if let Some(at) = arrivals.lock().unwrap().get(&position) {
                latencies.push(at.saturating_duration_since(acked));
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "position {position} did not arrive");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let (p50, p99, max) = percentiles(latencies);
    println!(
        "end to end, acknowledged append (moved_in) -> first feed record at a JetStream ordered consumer, {samples} samples one at a time: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );

    let _ = stop.send(true);
    lane.await?.context("the relay lane")?;
    receiver.abort();

    // 4. Appends (registration + move-in pairs: each pair issues feed records) without and
    // with the relay following the feed, in alternating rounds so drift falls on both alike.
    let (mut with_relay, mut without_relay) = (Vec::new(), Vec::new());
    for on in [false, true, false, true] {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let lane = if on {
            let relay = Relay::new(
                ledger.clone(),
                relay_config.clone(),
                Disclosure::new(app.access.recorder.clone(), "bench nats"),
            )?;
            Some(tokio::spawn(async move { relay.run(Until::Stopped(stopped)).await }))
        } else {
            None
        };
        let rate = pair_rate(&ledger, clients, seconds).await?;
        let _ = stop.send(true);
        if let Some(lane) = lane {
            lane.await?.context("the relay lane")?;
            with_relay.push(rate);
        } else {
            without_relay.push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "appends, {clients} clients, {seconds} s per round (registration + move-in pairs), rounds off/on/off/on: \
         with the relay following {with_relay:.0?} events/s, without {without_relay:.0?} events/s; ratio of means {:.2}",
        mean(&with_relay) / mean(&without_relay)
    );

    for name in [relay_config.stream.clone(), bare] {
        let _ = js.delete_stream(&name).await;
    }
    ledger.store().close().await;
    Ok(())
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Events/s of clients each recording a new person's registration and move-in.
async fn pair_rate(ledger: &Arc<Ledger>, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (ledger, stop, count) = (ledger.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    let id = PersonId::parse(&format!("{}", 850_000_000_000u64 + n)).unwrap();
                    let ctx = RequestContext {
                        actor: "bench".into(),
                        request_id: format!("pair-{c}-{n}"),
                        ..Default::default()
                    };
                    ledger
                        .record_person_event(&id, &registration(n as usize), &ctx)
                        .await
                        .expect("append");
                    let moved = json!({"type": "moved_in", "effective_date": "2001-04-01", "from": "abroad",
                        "household_id": format!("{}", 860_000_000_000u64 + n)});
                    ledger.record_person_event(&id, &moved, &ctx).await.expect("append");
                    count.fetch_add(2, Ordering::Relaxed);
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
