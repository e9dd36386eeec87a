//! The change feed relay to NATS JetStream (issue 16), against real `nats-server -js`
//! processes each test starts for itself (own port, own store directory): exactly once per
//! position through SIGKILLs of the relay and of the NATS server, consumers from the start and
//! from a position, and a stream that disagrees with the ledger.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::{self, message::PublishMessage};
use common::nats::{self as nats_test, NatsServer, Received};
use common::process::{create_token, http, http_text, http_with, start_with, stop, vault_key, Server};
use common::{Kind, TestDb};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kokuho-ledger");
const STREAM: &str = "KOKUHO_FEED";
const SUBJECT: &str = "kokuho.feed.131999";

/// Persons `from..to`, each registered and moved in from abroad, two to a household: 2.5 feed
/// records per person.
fn population(from: usize, to: usize) -> Vec<Value> {
    (from..to)
        .flat_map(|i| {
            let id = format!("{}", 700_000 + i);
            [
                json!({"person_id": id, "type": "registered", "effective_date": "2020-01-01", "name": "移行 太郎",
                    "name_kana": "イコウ　タロウ", "birth_date": "1980-01-01", "sex": "1"}),
                json!({"person_id": id, "type": "moved_in", "effective_date": "2021-04-01", "from": "abroad",
                    "household_id": format!("{}", 800_000 + i / 2)}),
            ]
        })
        .collect()
}

/// `kokuho-ledger import` of persons `from..to` (its own process, as an operator runs it).
fn import(db: &TestDb, dir: &std::path::Path, from: usize, to: usize) {
    import_lines(db, dir, &format!("events-{from}"), &population(from, to));
}

fn import_lines(db: &TestDb, dir: &std::path::Path, name: &str, lines: &[Value]) {
    let file = dir.join(format!("{name}.jsonl"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let out = Command::new(BIN)
        .args([
            "import",
            file.to_str().unwrap(),
            "--database-url",
            &db.url,
            "--batch-size",
            "5000",
        ])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn publish_command(db: &TestDb, dir: &std::path::Path, nats_url: &str) -> Command {
    publish_command_with(db, dir, nats_url, &[])
}

fn publish_command_with(db: &TestDb, dir: &std::path::Path, nats_url: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["feed", "publish", "--nats-url", nats_url, "--database-url", &db.url])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// `kokuho-ledger feed publish` to the end.
fn publish(db: &TestDb, dir: &std::path::Path, nats_url: &str) -> Output {
    publish_command(db, dir, nats_url).output().unwrap()
}

fn spawn_publish(db: &TestDb, dir: &std::path::Path, nats_url: &str) -> Child {
    publish_command(db, dir, nats_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The feed's records as stored (what `GET /v1/feed` splices into its pages).
async fn feed_in_db(db: &TestDb) -> Vec<String> {
    let store = db.store().await;
    let mut out = Vec::new();
    loop {
        let page = kokuho_ledger::projections::feed::feed_records(store.db(), out.len() as i64, 10_000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    store.close().await;
    out
}

/// The whole feed as `GET /v1/feed` serves it, each record serialized as the page carries it.
fn feed_over_http(addr: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (status, page) = http(addr, "GET", &format!("/v1/feed?after={}&limit=1000", out.len()), "");
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().unwrap();
        if records.is_empty() {
            break;
        }
        out.extend(records.iter().map(|r| serde_json::to_vec(r).unwrap()));
    }
    out
}

/// Each position exactly once, in order, with the relay's headers, bodies equal to `feed`
/// (from `first` on).
fn assert_exactly_once(received: &[Received], feed: &[Vec<u8>], first: i64) {
    assert_eq!(
        received.len(),
        feed.len() - (first - 1) as usize,
        "one message per position from {first}"
    );
    let mut last_sequence = 0;
    for (i, m) in received.iter().enumerate() {
        let position = first + i as i64;
        assert_eq!(
            m.position,
            Some(position),
            "message {i} (stream sequence {})",
            m.stream_sequence
        );
        assert_eq!(m.msg_id.as_deref(), Some(format!("131999:{position}").as_str()));
        assert!(m.stream_sequence > last_sequence, "in stream order");
        last_sequence = m.stream_sequence;
        assert!(
            m.body == feed[(position - 1) as usize],
            "position {position}: the body differs from the feed's record"
        );
    }
}

async fn wait_stored(js: &jetstream::Context, at_least: u64, within: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let n = nats_test::stored(js, STREAM).await;
        if n >= at_least {
            return n;
        }
        assert!(
            started.elapsed() < within,
            "the stream holds {n} messages after {within:?}, expected {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn relay_env(nats: &NatsServer) -> Vec<(&'static str, String)> {
    vec![("KOKUHO_NATS_URL", nats.url())]
}

fn serve(db: &TestDb, dir: &std::path::Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_with(db, dir, &env)
}

async fn export_records(db: &TestDb, screen: &str) -> Vec<kokuho_ledger::access::AccessRecord> {
    let store = db.store().await;
    let records = kokuho_ledger::access::log::list(
        store.db(),
        &kokuho_ledger::access::log::Filter {
            limit: 10_000_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    store.close().await;
    records.into_iter().filter(|r| r.screen == screen).collect()
}

/// 100,000 feed records published by the lane of `serve` while the server is killed
/// (SIGKILL) three times and started again: every position once, in order, bodies equal to
/// `GET /v1/feed`; the lag reaches 0 in `/metrics` and `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_100000_records_exactly_once_through_three_sigkills_sqlite() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    import(&db, dir.path(), 0, 40_000);
    let records = feed_in_db(&db).await.len() as u64;
    assert!(records >= 100_000, "{records} feed records");
    let nats = NatsServer::start();
    let js = nats_test::connect(&nats.url()).await;
    let env = relay_env(&nats);
    let mut server = serve(&db, dir.path(), &env);
    let mut kills = Vec::new();
    for quarter in 1..=3 {
        let at = wait_stored(&js, records * quarter / 4, Duration::from_secs(240)).await;
        server.child.kill().unwrap(); // SIGKILL, mid-publication
        server.child.wait().unwrap();
        kills.push(at);
        server = serve(&db, dir.path(), &env);
    }
    assert!(kills.iter().all(|k| *k < records), "killed before the end: {kills:?}");
    wait_stored(&js, records, Duration::from_secs(240)).await;
    // Nothing more than the feed arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(nats_test::stored(&js, STREAM).await, records);

    let received = nats_test::read(&js, STREAM, SUBJECT, DeliverPolicy::All).await;
    let feed = feed_over_http(&server.addr);
    assert_eq!(feed.len() as u64, records);
    assert_exactly_once(&received, &feed, 1);

    // The lag as operations see it.
    let started = Instant::now();
    loop {
        let (status, ready) = http(&server.addr, "GET", "/readyz", "");
        if ready["nats_relay"]["lag_positions"] == 0 {
            assert_eq!(status, 200, "{ready}");
            assert_eq!(ready["nats_relay"]["state"], "running", "{ready}");
            assert_eq!(ready["nats_relay"]["position"], records);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, metrics) = http_text(&server.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("kokuho_nats_relay_lag_positions 0\n"), "{metrics}");
    assert!(
        metrics.contains(&format!("kokuho_nats_relay_position {records}\n")),
        "{metrics}"
    );
    // Each published batch was an export in the access log, naming its persons.
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("移行"), "no names in the log");
    stop(server);
    let exports = export_records(&db, "serve nats relay").await;
    assert!(
        exports.len() as u64 >= records / 1000,
        "{} access records",
        exports.len()
    );
    assert!(exports
        .iter()
        .all(|r| r.kind == kokuho_ledger::access::AccessKind::Export && !r.persons.is_empty() && !r.my_number));
    assert_eq!(exports[0].export.as_ref().unwrap()["to"], "nats");
}

/// The NATS server is killed and started again (same port, same store) while `feed publish`
/// runs: the relay reconnects, re-reads the stream's end and completes, with no gap and no
/// duplicate — also when the killed server lost messages it had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_restarted_mid_publication_sqlite() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    import(&db, dir.path(), 0, 10_000);
    let feed: Vec<Vec<u8>> = feed_in_db(&db).await.into_iter().map(String::into_bytes).collect();
    let records = feed.len() as u64;
    let mut nats = NatsServer::start();
    let mut child = spawn_publish(&db, dir.path(), &nats.url());
    let js = nats_test::connect(&nats.url()).await;
    for fraction in [4, 2] {
        wait_stored(&js, records / fraction, Duration::from_secs(120)).await;
        nats.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nats.restart();
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "feed publish did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{stderr}\n{}", nats.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), records.to_string());
    assert!(stderr.contains("retrying"), "the outage was seen: {stderr}");
    let js = nats_test::connect(&nats.url()).await;
    let received = nats_test::read(&js, STREAM, SUBJECT, DeliverPolicy::All).await;
    assert_exactly_once(&received, &feed, 1);
    // A second run finds the stream complete and publishes nothing.
    let again = publish(&db, dir.path(), &nats.url());
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("published 0 records"));
    assert_eq!(nats_test::stored(&js, STREAM).await, records);
}

/// A consumer reading from the start, one resuming from a position, and a durable consumer
/// stopped half-way and resumed all see `GET /v1/feed`'s sequence — also for records appended
/// while the relay (the lane of `serve`) follows the feed.
async fn consumers_see_the_feed(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    import(&db, dir.path(), 0, 400);
    let nats = NatsServer::start();
    let js = nats_test::connect(&nats.url()).await;
    let server = serve(&db, dir.path(), &relay_env(&nats));
    let feed = feed_over_http(&server.addr);
    let records = feed.len();
    wait_stored(&js, records as u64, Duration::from_secs(120)).await;

    let from_start = nats_test::read(&js, STREAM, SUBJECT, DeliverPolicy::All).await;
    assert_exactly_once(&from_start, &feed, 1);

    // Resuming after position P: in a stream the relay created for one ledger, the stream
    // sequence of position P is P (docs/operations.md); the header confirms it.
    let resume_after = records as i64 / 3;
    let resumed = nats_test::read(
        &js,
        STREAM,
        SUBJECT,
        DeliverPolicy::ByStartSequence {
            start_sequence: resume_after as u64 + 1,
        },
    )
    .await;
    assert_exactly_once(&resumed, &feed, resume_after + 1);

    // A durable consumer that stops half-way goes on where it acknowledged.
    let stream = js.get_stream(STREAM).await.unwrap();
    let config = consumer::pull::Config {
        durable_name: Some("downstream".into()),
        filter_subject: SUBJECT.into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    let mut durable: consumer::PullConsumer = stream.create_consumer(config.clone()).await.unwrap();
    let first_half = nats_test::read_from(&mut durable, records / 2, true).await;
    drop(durable);

    // Records appended while the relay follows the feed.
    for i in 0..10 {
        let id = format!("{}", 900_000 + i);
        let body = json!({"type": "registered", "effective_date": "2020-01-01", "name": "追加 花子",
            "name_kana": "ツイカ　ハナコ", "birth_date": "1990-01-01", "sex": "2"});
        assert_eq!(
            http(
                &server.addr,
                "POST",
                &format!("/v1/persons/{id}/events"),
                &body.to_string()
            )
            .0,
            201
        );
        let body = json!({"type": "moved_in", "effective_date": "2021-04-01", "from": "abroad", "household_id": format!("{}", 950_000 + i)});
        assert_eq!(
            http(
                &server.addr,
                "POST",
                &format!("/v1/persons/{id}/events"),
                &body.to_string()
            )
            .0,
            201
        );
    }
    let started = Instant::now();
    let feed = loop {
        let feed = feed_over_http(&server.addr);
        if feed.len() >= records + 20 {
            break feed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the feed grew to {}",
            feed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_stored(&js, feed.len() as u64, Duration::from_secs(60)).await;
    let mut durable: consumer::PullConsumer = stream.get_consumer("downstream").await.unwrap();
    let pending = durable.info().await.unwrap().num_pending as usize;
    let second_half = nats_test::read_from(&mut durable, pending, true).await;
    let both: Vec<Received> = first_half.into_iter().chain(second_half).collect();
    assert_exactly_once(&both, &feed, 1);
    stop(server);
    db.cleanup().await;
}

on_both!(
    consumers_from_the_start_and_from_a_position_see_the_feed,
    consumers_see_the_feed
);

/// Someone else published to the subject a message that is not the ledger's record at the
/// position it claims: the relay stops with an error naming it and publishes nothing past it,
/// and `serve` reports the stopped relay in `/readyz` (503) and `/metrics`.
async fn a_foreign_record_stops_the_relay(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    import(&db, dir.path(), 0, 20);
    let nats = NatsServer::start();
    let first = publish(&db, dir.path(), &nats.url());
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let published = feed_in_db(&db).await;
    let n = published.len() as i64;
    assert_eq!(String::from_utf8_lossy(&first.stdout).trim(), n.to_string());
    // Each batch was recorded as an export before it was published.
    let exports = export_records(&db, "cli feed publish").await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].export.as_ref().unwrap()["last_position"], n);
    assert_eq!(exports[0].persons.len(), 20);

    // The ledger goes on; another publisher puts its own record at the next position.
    import(&db, dir.path(), 20, 30);
    let js = nats_test::connect(&nats.url()).await;
    let foreign = PublishMessage::build()
        .payload(published[0].clone().into())
        .message_id(format!("131999:{}", n + 1))
        .header("Kokuho-Feed-Position", (n + 1).to_string());
    js.send_publish(SUBJECT, foreign).await.unwrap().await.unwrap();

    let refused = publish(&db, dir.path(), &nats.url());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the message at stream sequence {} is not the ledger's feed record at position {}",
            n + 1,
            n + 1
        )),
        "{stderr}"
    );
    assert!(stderr.contains("body differs"), "{stderr}");
    assert_eq!(
        nats_test::stored(&js, STREAM).await,
        n as u64 + 1,
        "nothing published past it"
    );

    // The lane of `serve` stops the same way and says so.
    let server = serve(&db, dir.path(), &relay_env(&nats));
    let started = Instant::now();
    loop {
        let (status, ready) = http(&server.addr, "GET", "/readyz", "");
        if ready["nats_relay"]["state"] == "stopped" {
            assert_eq!(status, 503, "{ready}");
            assert_eq!(ready["error"]["code"], "relay_stopped");
            assert!(
                ready["nats_relay"]["error"].as_str().unwrap().contains("body differs"),
                "{ready}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_text(&server.addr, "/metrics");
    assert!(metrics.contains("kokuho_nats_relay_stopped 1\n"), "{metrics}");
    // The ledger itself goes on serving.
    assert_eq!(http(&server.addr, "GET", "/v1/feed?after=0&limit=1", "").0, 200);
    stop(server);
    assert_eq!(nats_test::stored(&js, STREAM).await, n as u64 + 1);

    // A message without the relay's headers is refused as well.
    let other = NatsServer::start();
    let js = nats_test::connect(&other.url()).await;
    let created = publish(&db, dir.path(), &other.url());
    assert!(created.status.success());
    js.publish(SUBJECT, "hello".into()).await.unwrap().await.unwrap();
    let refused = publish(&db, dir.path(), &other.url());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Kokuho-Feed-Position header"), "{stderr}");
    db.cleanup().await;
}

on_both!(
    a_stream_holding_another_record_stops_the_relay,
    a_foreign_record_stops_the_relay
);

/// With `KOKUHO_NATS_MY_NUMBER=true` the stream is the intermediate-server channel: bodies are
/// the records as `GET /v1/feed` serves them to a consumer with the `my_number` role (with the
/// number), and each batch's access record says a number went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_intermediate_server_channel_carries_my_number_sqlite() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines = population(0, 6);
    lines[0]["my_number"] = json!("123456789018");
    import_lines(&db, dir.path(), "numbered", &lines);
    let nats = NatsServer::start();
    let out = publish_command_with(&db, dir.path(), &nats.url(), &[("KOKUHO_NATS_MY_NUMBER", "true")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("123456789018"),
        "never logged"
    );

    let server = serve(&db, dir.path(), &[]);
    let token = create_token(&db, dir.path(), "intermediate-server", &["feed_consumer", "my_number"]);
    let (status, page) = http_with(
        &server.addr,
        "GET",
        "/v1/feed?after=0&limit=1000",
        "",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(status, 200, "{page}");
    let feed: Vec<Vec<u8>> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    let numbered = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["my_number"] == "123456789018")
        .count();
    assert!(numbered >= 1, "the channel's records carry the number");
    let js = nats_test::connect(&nats.url()).await;
    let received = nats_test::read(&js, STREAM, SUBJECT, DeliverPolicy::All).await;
    assert_exactly_once(&received, &feed, 1);
    // The plain HTTP feed (no my_number role) differs exactly by the number.
    let plain = feed_over_http(&server.addr);
    assert_ne!(plain, feed);
    stop(server);
    let exports = export_records(&db, "cli feed publish").await;
    assert_eq!(exports.len(), 1);
    assert!(exports[0].my_number, "the access record says a number went out");
    assert_eq!(exports[0].export.as_ref().unwrap()["my_number"], true);
    // A second run checks the last message (number set aside) and publishes nothing.
    let again = publish_command_with(&db, dir.path(), &nats.url(), &[("KOKUHO_NATS_MY_NUMBER", "true")])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("published 0 records"));
}
