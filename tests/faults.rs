//! Faults as an operator meets them, from outside the process (issue 14): `serve` killed
//! under HTTP write load, PostgreSQL stopped and started again, connections killed mid-batch,
//! a database that refuses writes (read-only PostgreSQL, a full disk under the embedded
//! default). Tests that stop or reconfigure PostgreSQL use a private cluster of their own.

use std::time::{Duration, Instant};

use kokuho_testing as common;

use common::load::{Load, Seen};
use common::pg::PrivateCluster;
use common::process::{cli, http, request, start, stop, token_of};
use common::{Kind, TestDb};
use kokuho_ledger::store::sql::{Ty, Val};

/// The codes a request may meet while the storage is away: each a 503 with `Retry-After`.
const UNAVAILABLE: [&str; 4] = [
    "database_unavailable",
    "storage_unavailable",
    "access_log_unavailable",
    "projection_lagging",
];

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every answer of the load was one it may give: writes 201, reads 200, a 503 with one of
/// [`UNAVAILABLE`] while something was away; never a 500 or another refusal.
fn assert_expected(seen: &[Seen]) {
    for s in seen {
        match (s.status, s.code.as_deref()) {
            (Some(201), _) if s.write => {}
            (Some(200), _) if !s.write => {}
            (Some(503), Some(code)) if UNAVAILABLE.contains(&code) => {}
            (None, _) => {}
            other => panic!("unexpected answer {other:?} to {s:?}"),
        }
    }
}

/// What must hold after any fault, with the server stopped: every acknowledged event in the
/// log at its position and sequence, nothing recorded twice, positions gapless, every answered
/// read recorded, the projections equal to a rebuild, the feed equal to a recomputation from
/// the log, and the audit trail verified.
async fn assert_nothing_lost(db: &TestDb, dir: &std::path::Path, load: &Load) {
    let store = db.store().await;
    let events = store.read_log(0, 10_000_000).await.unwrap();
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=events.len() as i64).collect::<Vec<_>>(), "gapless");
    let acked = load.acked();
    assert!(acked.len() >= 20, "the load was acknowledged ({} events)", acked.len());
    for a in &acked {
        let e = &events[(a.position - 1) as usize];
        assert_eq!(
            (e.aggregate_type.as_str(), e.aggregate_id.as_str(), e.sequence),
            ("person", a.person.as_str(), a.sequence),
            "acknowledged event at {}",
            a.position
        );
    }
    // Each writer finishes the request it has in flight: the person events in the log are
    // exactly the acknowledged ones, none written twice by a retry.
    let persons = events.iter().filter(|e| e.aggregate_type == "person").count();
    assert_eq!(
        persons,
        acked.len(),
        "person events in the log against acknowledged ones"
    );

    let rows = store
        .db()
        .fetch("SELECT request_id FROM access_records", &[], &[Ty::Text])
        .await
        .unwrap();
    let recorded: std::collections::HashSet<String> = rows
        .into_iter()
        .filter_map(|r| match &r[0] {
            Val::Text(Some(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let seen = load.seen();
    // Every answer but the one that says its record could not be written.
    let answered: Vec<&Seen> = seen
        .iter()
        .filter(|s| !s.write && s.status.is_some() && s.code.as_deref() != Some("access_log_unavailable"))
        .collect();
    assert!(answered.iter().any(|s| s.status == Some(200)), "reads were answered");
    for s in answered {
        let id = s.request_id.as_ref().expect("an answer carries its request id");
        assert!(recorded.contains(id), "answered read {id} has no access record");
    }

    let projections = kokuho_ledger::ledger::projections(&store, &kokuho_ledger::settings::Settings::default(), None);
    projections.catch_up().await.unwrap();
    let incremental = projections.dump().await.unwrap();
    store.close().await;
    // `rebuild` rebuilds the read models and fails if the feed differs from the log.
    assert_ok(&cli(db, dir, &["rebuild"]), "rebuild");
    let store = db.store().await;
    let projections = kokuho_ledger::ledger::projections(&store, &kokuho_ledger::settings::Settings::default(), None);
    assert_eq!(
        projections.dump().await.unwrap(),
        incremental,
        "projections equal a rebuild"
    );
    store.close().await;
    assert_ok(&cli(db, dir, &["audit", "verify"]), "audit verify");
}

/// Polls `/readyz` until it answers `status`; the body it answered with.
fn readyz_until(addr: &str, status: u16, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok(a) = request(addr, "GET", "/readyz", "", "", Duration::from_secs(15)) {
            if a.status == status {
                return a.body;
            }
        }
        assert!(
            started.elapsed() < limit,
            "/readyz did not answer {status} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn crash_under_write_load(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&db, dir.path());
    // One principal for the whole run: an Idempotency-Key belongs to its principal.
    let token = token_of(&server.addr).unwrap();
    let load = Load::new(&server.addr, &token);
    let threads = load.start(8, 2);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        server.child.kill().unwrap(); // SIGKILL: no shutdown path runs
        server.child.wait().unwrap();
        server = start(&db, dir.path());
        load.follow(&server.addr);
    }
    std::thread::sleep(Duration::from_millis(1500));
    load.finish(threads);
    let seen = load.seen();
    assert_expected(&seen);
    assert!(seen.iter().any(|s| s.status.is_none()), "the kills cut requests off");
    stop(server);
    assert_nothing_lost(&db, dir.path(), &load).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_http_write_load_loses_nothing_postgres() {
    crash_under_write_load(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_http_write_load_loses_nothing_sqlite() {
    crash_under_write_load(Kind::Sqlite).await;
}

/// PostgreSQL stopped for 10 s under read and write load and started again: 503s with a
/// clear code while it is away (no hang, no 500), `/readyz` says why, and the same process
/// serves again within 5 s with nothing lost or applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_answers_503_and_the_same_process_recovers() {
    let cluster = PrivateCluster::start();
    let db = TestDb::postgres_at(&cluster.admin_url(), "kl_fault").await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    let load = Load::new(&server.addr, &token_of(&server.addr).unwrap());
    let threads = load.start(4, 2);
    std::thread::sleep(Duration::from_secs(2));

    let down = Instant::now();
    cluster.stop_server();
    let ready = readyz_until(&server.addr, 503, Duration::from_secs(15));
    assert_eq!(ready["error"]["code"], "database_unavailable", "{ready}");
    // Requests of the test's own while it is down: each a 503 with a clear code, in bounded
    // time (the pool's 2 s wait for its work and again for its access record; a read first
    // waits up to 5 s for the projections).
    let auth = format!("Authorization: Bearer {}\r\n", token_of(&server.addr).unwrap());
    let probes = [
        ("POST", "/v1/persons/9000002/events"),
        ("GET", "/v1/persons/9000002"),
        ("GET", "/v1/feed?after=0"),
    ];
    std::thread::scope(|scope| {
        for (method, path) in probes {
            let (addr, auth) = (&server.addr, &auth);
            scope.spawn(move || {
                let started = Instant::now();
                let a = request(addr, method, path, "{}", auth, Duration::from_secs(30))
                    .unwrap_or_else(|e| panic!("{method} {path} while the database is down: {e}"));
                let code = a.body["error"]["code"].as_str().unwrap_or_default().to_owned();
                assert!(
                    a.status == 503 && UNAVAILABLE.contains(&code.as_str()),
                    "{method} {path} while the database is down: {} {}",
                    a.status,
                    a.body
                );
                let took = started.elapsed();
                assert!(took < Duration::from_secs(10), "{method} {path} took {took:?}");
            });
        }
    });
    let remaining = Duration::from_secs(10).saturating_sub(down.elapsed());
    std::thread::sleep(remaining);
    let up = Instant::now();
    cluster.start_server();
    cluster.wait_ready(Duration::from_secs(30));
    // The same process serves again: ready, and a write is acknowledged.
    readyz_until(&server.addr, 200, Duration::from_secs(5));
    let person = "9000001";
    let body = serde_json::json!({"type": "registered", "effective_date": "2020-01-01", "name": "試験 花子",
        "name_kana": "シケン　ハナコ", "birth_date": "1985-03-03", "sex": "2"});
    let (status, reply) = http(
        &server.addr,
        "POST",
        &format!("/v1/persons/{person}/events"),
        &body.to_string(),
    );
    assert_eq!(status, 201, "{reply}");
    let recovered = up.elapsed();
    assert!(recovered < Duration::from_secs(5), "served again after {recovered:?}");
    std::thread::sleep(Duration::from_secs(2));
    load.finish(threads);

    let seen = load.seen();
    assert_expected(&seen);
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > down + Duration::from_millis(200) && s.at + s.took < up)
        .collect();
    for s in &during {
        assert_eq!(s.status, Some(503), "answered while the database was down: {s:?}");
        assert!(s.took < Duration::from_secs(10), "a request hung: {s:?}");
    }
    // The chainer resumed: a checkpoint covers the whole log.
    let head = http(&server.addr, "GET", "/readyz", "").1["log_head"].as_i64().unwrap();
    covered_checkpoint(&server.addr, head);
    assert!(!server.log.lock().unwrap().contains("panicked"), "no task panicked");
    stop(server);
    // The test's own write is in the log too; count it with the load's.
    load.acked.lock().unwrap().push(common::load::Acked {
        person: person.into(),
        position: reply["position"].as_i64().unwrap(),
        sequence: 1,
    });
    assert_nothing_lost(&db, dir.path(), &load).await;
}

/// Waits until the server's latest checkpoint covers `head`.
fn covered_checkpoint(addr: &str, head: i64) {
    let started = Instant::now();
    loop {
        let (status, body) = http(addr, "GET", "/v1/audit/checkpoint", "");
        if status == 200 && body["checkpoint"]["size"].as_i64() >= Some(head) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no checkpoint of size {head}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server's connections are killed (`pg_terminate_backend`) again and again under write
/// load: an acknowledged batch is durable, an unacknowledged one is answered 503 and retried
/// with its key, never half-applied or applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn connections_killed_mid_batch_lose_nothing_and_apply_nothing_twice() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    let load = Load::new(&server.addr, &token_of(&server.addr).unwrap());
    let threads = load.start(8, 2);
    let mut killed = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        killed += db.end_connections().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish(threads);
    assert!(killed > 8, "connections were killed ({killed})");
    assert_expected(&load.seen());
    assert!(!server.log.lock().unwrap().contains("panicked"), "no task panicked");
    stop(server);
    assert_nothing_lost(&db, dir.path(), &load).await;
    db.cleanup().await;
}

/// The 75th-birthday job meets a stopped database at its run and tries again within seconds
/// once it is back, not at the next midnight.
#[tokio::test(flavor = "multi_thread")]
async fn the_daily_job_runs_again_within_seconds_after_an_outage() {
    use kokuho_ledger::domain::PersonId;
    let cluster = PrivateCluster::start();
    let db = TestDb::postgres_at(&cluster.admin_url(), "kl_fault").await;
    let t = common::ledger_on(db, true).await;
    let ctx = kokuho_ledger::request::RequestContext {
        actor: "test".into(),
        ..Default::default()
    };
    let id = PersonId::parse("901").unwrap();
    // 75 on 2026-06-01, insured until then; the test clock's today is 2026-11-25.
    for body in [
        serde_json::json!({"type": "registered", "effective_date": "2020-01-01", "name": "高齢 一郎",
            "name_kana": "コウレイ　イチロウ", "birth_date": "1951-06-01", "sex": "1"}),
        serde_json::json!({"type": "moved_in", "effective_date": "2020-01-10", "from": "other_prefecture", "household_id": "1"}),
    ] {
        t.ledger.record_person_event(&id, &body, &ctx).await.unwrap();
    }
    cluster.stop_server();
    let job = tokio::spawn(kokuho_ledger::jobs::age_out::daily(t.ledger.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_server();
    let back = Instant::now();
    loop {
        if let Ok(events) = t.store.load_stream("person", "901", None).await {
            if events
                .last()
                .is_some_and(|e| e.event_type == "late_elderly_age_reached")
            {
                break;
            }
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "the daily job did not run again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    job.abort();
}
