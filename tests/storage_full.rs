//! A database that refuses writes (issue 14): PostgreSQL made read-only by its operator, and
//! the embedded default on a full disk. Writes answer 503 `storage_unavailable`, reads (and
//! their access records) go on, nothing partial is left, and writes succeed again once the
//! database takes them.

use std::io::Write as _;
use std::time::{Duration, Instant};

use kokuho_testing as common;

use common::pg::PrivateCluster;
use common::process::{http, start_with, stop, Server};
use common::TestDb;
use serde_json::{json, Value};

fn registration() -> String {
    json!({"type": "registered", "effective_date": "2020-01-01", "name": "試験 花子",
        "name_kana": "シケン　ハナコ", "birth_date": "1985-03-03", "sex": "2"})
    .to_string()
}

fn register(addr: &str, person: &str) -> (u16, Value) {
    http(addr, "POST", &format!("/v1/persons/{person}/events"), &registration())
}

/// Registers `person` until the answer is `status` (the refusal or the recovery takes effect
/// within a few seconds); the answer.
fn register_until(addr: &str, person: &str, status: u16) -> Value {
    let started = Instant::now();
    loop {
        let (s, body) = register(addr, person);
        if s == status {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {status} within 10 s; last {s} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The writes of a refusing database are refused, its reads answered and recorded.
/// Registers new persons until one is refused (503), then checks that writes stay refused
/// and reads go on; the log head then. A write may still be accepted just after the change:
/// PostgreSQL applies a reloaded setting to a pooled backend only between its commands, so
/// each attempt registers someone new and the head counts what was accepted.
fn while_refusing(server: &Server, mut head: i64) -> i64 {
    let started = Instant::now();
    for n in 0.. {
        let (s, body) = register(&server.addr, &format!("{}", 8_001_000 + n));
        match s {
            201 => head = body["position"].as_i64().unwrap(),
            503 => {
                assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
                break;
            }
            _ => panic!("{s} {body}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no 503 within 10 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..3 {
        let (s, body) = register(&server.addr, "8000002");
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (503, Some("storage_unavailable")),
            "{body}"
        );
    }
    let (s, timeline) = http(&server.addr, "GET", "/v1/persons/1000001/timeline", "");
    assert_eq!(s, 200, "{timeline}");
    assert_eq!(timeline["person_id"], "1000001");
    let (s, person) = http(&server.addr, "GET", "/v1/persons/1000002", "");
    assert_eq!(s, 200, "{person}");
    // Each answered read was recorded first: the record of the person read is there.
    let (s, records) = http(&server.addr, "GET", "/v1/access-records?person_id=1000002", "");
    assert_eq!(s, 200, "{records}");
    assert!(
        records["records"].as_array().is_some_and(|r| !r.is_empty()),
        "{records}"
    );
    // Nothing partial: the log did not move.
    let (_, ready) = http(&server.addr, "GET", "/readyz", "");
    assert_eq!(ready["log_head"].as_i64(), Some(head), "{ready}");
    head
}

fn seed(server: &Server) -> i64 {
    let mut last = 0;
    for p in ["1000001", "1000002", "1000003"] {
        let (s, body) = register(&server.addr, p);
        assert_eq!(s, 201, "{body}");
        last = body["position"].as_i64().unwrap();
    }
    // The reads below wait for nothing: the projections have the seeded persons.
    let (s, _) = http(
        &server.addr,
        "GET",
        &format!("/v1/persons/1000003?min_position={last}"),
        "",
    );
    assert_eq!(s, 200);
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_postgres_refuses_writes_and_keeps_reading() {
    let cluster = PrivateCluster::start();
    let db = TestDb::postgres_at(&cluster.admin_url(), "kl_fault").await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(&db, dir.path(), &[]);
    let head = seed(&server);

    cluster.sql("postgres", "ALTER SYSTEM SET default_transaction_read_only = on");
    cluster.sql("postgres", "SELECT pg_reload_conf()");
    let head = while_refusing(&server, head);

    cluster.sql("postgres", "ALTER SYSTEM RESET default_transaction_read_only");
    cluster.sql("postgres", "SELECT pg_reload_conf()");
    let accepted = register_until(&server.addr, "8000001", 201);
    // The log continues where it stopped: no position was used by a refused write.
    assert_eq!(accepted["position"].as_i64(), Some(head + 1), "{accepted}");
    stop(server);
}

/// A tmpfs of its own, unmounted when the test ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, megabytes: u32) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root (the CI runs as root)");
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` up to the last byte with one file; its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_under_the_embedded_default_refuses_writes_and_keeps_reading() {
    let keys = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(disk.path(), 48);
    let db = TestDb::at(format!("sqlite://{}", disk.path().join("ledger.db").display()));
    let server = start_with(&db, keys.path(), &[("KOKUHO_STORAGE_RESERVE_MB", "4")]);
    assert_eq!(
        std::fs::metadata(disk.path().join("ledger.db.reserve")).unwrap().len(),
        4 << 20,
        "the reserve is allocated beside the database"
    );
    let head = seed(&server);

    let filler = fill(disk.path());
    let head = while_refusing(&server, head);
    let (_, ready) = http(&server.addr, "GET", "/readyz", "");
    assert_eq!(ready["storage"], "full", "{ready}");

    std::fs::remove_file(&filler).unwrap();
    let accepted = register_until(&server.addr, "8000001", 201);
    assert_eq!(accepted["position"].as_i64(), Some(head + 1), "{accepted}");
    let (_, ready) = http(&server.addr, "GET", "/readyz", "");
    assert_eq!(ready["storage"], "ok", "{ready}");
    stop(server);
}
