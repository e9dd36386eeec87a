//! 2,000 feed consumers long-polling a real `serve` process over TCP cost a few feed queries
//! per wake-up (the shared feed tail), not one each: one event appended reaches every one of
//! them, the append itself is acknowledged promptly while they wait, and `/metrics` counts
//! the tail's queries.

use kokuho_testing as common;

use std::time::{Duration, Instant};

use common::process::{http, http_text, start, token_of};
use common::{on_both, TestDb};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONSUMERS: usize = 2000;
/// Consumers connecting at once.
const WAVE: usize = 250;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

async fn metrics(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || http_text(&addr, "/metrics").1)
        .await
        .unwrap()
}

/// One long-poll over its own connection: the status and the JSON body.
async fn long_poll(addr: String, token: String, after: i64) -> (u16, Value) {
    let req = format!(
        "GET /v1/feed?after={after}&wait=30 HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    // A full accept backlog refuses or resets a few of 2,000 connections opened at once, before
    // any answer: try again (the GET changes nothing).
    let mut raw = Vec::new();
    for attempt in 0.. {
        raw.clear();
        let answered = async {
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.write_all(req.as_bytes()).await?;
            s.read_to_end(&mut raw).await
        }
        .await;
        match answered {
            Ok(_) => break,
            Err(_) if raw.is_empty() && attempt < 100 => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("long-poll: {e}"),
        }
    }
    let raw = String::from_utf8_lossy(&raw);
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

async fn post(addr: &str, path: &str, body: Value) -> (u16, Value) {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || http(&addr, "POST", &path, &body.to_string()))
        .await
        .unwrap()
}

on_both!(two_thousand_long_polls_cost_a_few_queries, |kind| async move {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    let addr = server.addr.clone();
    let token = token_of(&addr).unwrap();
    let registered = json!({"type": "registered", "effective_date": "2020-01-01", "name": "待機 一郎",
        "name_kana": "タイキ　イチロウ", "birth_date": "1980-01-01", "sex": "1"});
    assert_eq!(post(&addr, "/v1/persons/7/events", registered).await.0, 201);
    let (_, page) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || http(&addr, "GET", "/v1/feed?after=0&limit=1000", "")
    })
    .await
    .unwrap();
    let head = page["head"].as_i64().unwrap();

    // Every consumer is waiting on the tail before the append. They connect in waves, each
    // waiting before the next opens, so that a loaded machine's accept queue never overflows;
    // a consumer answered before the append fails the test at once, with its answer.
    let mut consumers = Vec::with_capacity(CONSUMERS);
    while consumers.len() < CONSUMERS {
        let wave = WAVE.min(CONSUMERS - consumers.len());
        consumers.extend((0..wave).map(|_| tokio::spawn(long_poll(addr.clone(), token.clone(), head))));
        let started = Instant::now();
        loop {
            if let Some(i) = consumers.iter().position(|c| c.is_finished()) {
                let answered = consumers.swap_remove(i).await;
                panic!("a consumer was answered before any new record: {answered:?}");
            }
            let text = metrics(&addr).await;
            let waiting = metric(&text, "kokuho_feed_waiting") as usize;
            if waiting == consumers.len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{waiting} of {} consumers are waiting; the server's feed metrics:\n{}",
                consumers.len(),
                text.lines()
                    .filter(|l| l.starts_with("kokuho_feed"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let before = metrics(&addr).await;

    // One event; its acknowledgement does not wait behind the consumers.
    let t0 = Instant::now();
    let moved = json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "70"});
    let (status, _) = post(&addr, "/v1/persons/7/events", moved).await;
    let acknowledged = t0.elapsed();
    assert_eq!(status, 201);
    assert!(
        acknowledged < Duration::from_secs(5),
        "the append took {acknowledged:?} with {CONSUMERS} consumers waiting"
    );

    for c in consumers {
        let (status, page) = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("every consumer is answered")
            .unwrap();
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().unwrap();
        assert!(!records.is_empty(), "the consumer got the new records: {page}");
        assert_eq!(records[0]["position"].as_i64(), Some(head + 1));
        assert!(page["head"].as_i64() >= page["next_after"].as_i64());
    }
    let elapsed = t0.elapsed();
    let after = metrics(&addr).await;
    let grew = |name: &str| metric(&after, name) - metric(&before, name);
    let commit = grew("kokuho_feed_tail_queries_total{cause=\"commit\"}");
    let poll = grew("kokuho_feed_tail_queries_total{cause=\"poll\"}");
    // A query per feed commit (one or two here), and one per 200 ms look for other processes.
    assert!(
        commit <= 5.0,
        "{commit} tail queries on commits for {CONSUMERS} consumers"
    );
    let looks = (elapsed.as_millis() / 200) as f64 + 2.0;
    assert!(poll <= looks, "{poll} periodic tail queries in {elapsed:?}");
    assert_eq!(grew("kokuho_feed_answers_total{source=\"database\"}"), 0.0);
    assert!(grew("kokuho_feed_long_poll_answers_total") >= CONSUMERS as f64);
    drop(server);
    db.cleanup().await;
});
