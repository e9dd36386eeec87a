//! Backups that restore (operations.md "Backups"), as an operator takes them: `backup` of the
//! embedded SQLite file while `serve` runs and a writer posts, and `pg_dump -Fc`/`pg_restore`
//! for PostgreSQL. Each restore verifies its audit trail against the checkpoints signed
//! before the backup, reads the same, and continues the log's positions.

use kokuho_testing as common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{cli, http, start, stop};
use common::{pg_admin_url, Kind, TestDb};
use kokuho_ledger::access::log::{self, Filter};
use kokuho_ledger::access::AccessKind;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kokuho-ledger");

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn register(addr: &str, id: &str) -> Value {
    let body = json!({"type": "registered", "effective_date": "2020-01-01", "name": "控え 花子",
        "name_kana": "ヒカエ　ハナコ", "birth_date": "1985-03-03", "sex": "2", "my_number": "123456789018"});
    let (status, answer) = http(addr, "POST", &format!("/v1/persons/{id}/events"), &body.to_string());
    assert_eq!(status, 201, "{answer}");
    answer
}

fn moved_in(addr: &str, id: &str, household: &str) -> i64 {
    let body = json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": household});
    let (status, answer) = http(addr, "POST", &format!("/v1/persons/{id}/events"), &body.to_string());
    assert_eq!(status, 201, "{answer}");
    answer["last_position"].as_i64().unwrap()
}

/// Waits until the server's latest checkpoint covers `head`; returns it.
fn covered_checkpoint(addr: &str, head: i64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = http(addr, "GET", "/v1/audit/checkpoint", "");
        if status == 200 && body["checkpoint"]["size"].as_i64() == Some(head) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no checkpoint of size {head} within 10 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The person and timeline reads of `ids`, once the projections reached `head`.
fn reads(addr: &str, ids: &[&str], head: i64) -> Vec<(u16, Value)> {
    let mut answers = Vec::new();
    for id in ids {
        answers.push(http(addr, "GET", &format!("/v1/persons/{id}?min_position={head}"), ""));
        answers.push(http(
            addr,
            "GET",
            &format!("/v1/persons/{id}/timeline?min_position={head}"),
            "",
        ));
    }
    answers
}

fn head_of(db: &TestDb, dir: &std::path::Path) -> i64 {
    let said = ok(&cli(db, dir, &["migrate"]));
    said.split("holds ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The ledger before a backup: persons with households, a checkpoint covering them (kept as
/// the auditor's trusted checkpoint), then their reads.
fn before_backup(addr: &str, dir: &std::path::Path) -> (Vec<(u16, Value)>, std::path::PathBuf, i64) {
    for id in ["701", "702", "703"] {
        register(addr, id);
    }
    let head = moved_in(addr, "701", "70");
    let checkpoint = covered_checkpoint(addr, head);
    let trusted = dir.join("trusted.json");
    std::fs::write(&trusted, checkpoint.to_string()).unwrap();
    (reads(addr, &["701", "702", "703"], head), trusted, head)
}

/// The restored ledger: the trail verifies from the trusted checkpoint, reads answer as
/// before, and the next event takes the next position, covered by a new checkpoint.
fn after_restore(
    restored: &TestDb,
    dir: &std::path::Path,
    trusted: &std::path::Path,
    before: &[(u16, Value)],
    head: i64,
) {
    let verified = ok(&cli(restored, dir, &["audit", "verify"]));
    assert!(verified.contains("audit trail intact"), "{verified}");
    ok(&cli(
        restored,
        dir,
        &["audit", "verify", "--from-checkpoint", trusted.to_str().unwrap()],
    ));
    let server = start(restored, dir);
    assert_eq!(reads(&server.addr, &["701", "702", "703"], head), before);
    let next = register(&server.addr, "799");
    assert_eq!(next["last_position"].as_i64(), Some(head + 1), "{next}");
    covered_checkpoint(&server.addr, head + 1);
    stop(server);
    let verified = ok(&cli(restored, dir, &["audit", "verify"]));
    assert!(verified.contains("audit trail intact"), "{verified}");
    ok(&cli(
        restored,
        dir,
        &["audit", "verify", "--from-checkpoint", trusted.to_str().unwrap()],
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_backup_while_serving_restores() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    let (before, trusted, _) = before_backup(&server.addr, dir.path());

    // A writer keeps posting while the backup is taken.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, stop_writing) = (server.addr.clone(), stop_writing.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..100_000 {
                if stop_writing.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("{}", 10_000 + i);
                acked.push((id.clone(), register(&addr, &id)["last_position"].as_i64().unwrap()));
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let out = dir.path().join("nightly.backup");
    let said = ok(&cli(&db, dir.path(), &["backup", "--out", out.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(300));
    stop_writing.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(said.contains("keys are not in the backup"), "{said}");
    assert!(said.contains("vault.key"), "{said}");
    let backup_head: i64 = said
        .split("positions 1..")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        acked.iter().any(|(_, p)| *p <= backup_head) && acked.iter().any(|(_, p)| *p > backup_head),
        "the backup was taken while the writer posted ({backup_head}, {} acknowledged)",
        acked.len()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&out).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    stop(server);

    // The send ledger: an export by the operator, with the file's SHA-256.
    let store = db.store().await;
    let records = log::list(
        store.db(),
        &Filter {
            limit: 10_000_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    store.close().await;
    let record = records
        .iter()
        .find(|r| r.screen == "cli backup")
        .expect("the backup's access record");
    assert_eq!((record.kind, record.outcome), (AccessKind::Export, 200));
    assert!(record.actor.starts_with("os:"));
    assert!(record.persons.contains(&"701".to_owned()));
    let export = record.export.as_ref().unwrap();
    assert_eq!(export["what"], "backup");
    assert_eq!(export["to"].as_i64(), Some(backup_head));
    assert_eq!(
        export["files"][0]["sha256"].as_str().unwrap(),
        kokuho_ledger::exports::file_sha256(&out).unwrap()
    );

    // Restore: the file and, kept apart, the keys, under a fresh path.
    let restored = TestDb::new(Kind::Sqlite).await;
    let restored_dir = tempfile::tempdir().unwrap();
    let path = kokuho_ledger::store::sqlite_path(&restored.url).unwrap().to_owned();
    std::fs::copy(&out, &path).unwrap();
    let original = kokuho_ledger::store::sqlite_path(&db.url).unwrap().to_owned();
    std::fs::copy(format!("{original}.audit.key"), format!("{path}.audit.key")).unwrap();
    std::fs::copy(dir.path().join("vault.key"), restored_dir.path().join("vault.key")).unwrap();
    assert_eq!(head_of(&restored, restored_dir.path()), backup_head);
    // Every acknowledged write up to the backup's head is in it, none after.
    let server = start(&restored, restored_dir.path());
    for (id, position) in &acked {
        let (status, body) = http(
            &server.addr,
            "GET",
            &format!("/v1/persons/{id}/timeline?min_position={backup_head}"),
            "",
        );
        if *position <= backup_head {
            assert_eq!(status, 200, "{id} at {position}: {body}");
            assert_eq!(body["events"][0]["position"].as_i64(), Some(*position));
        } else {
            assert_eq!(status, 404, "{id} at {position} is after the backup: {body}");
        }
    }
    stop(server);
    after_restore(&restored, restored_dir.path(), &trusted, &before, backup_head);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_refuses_postgres_and_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["backup", "--out"])
        .arg(dir.path().join("b"))
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("pg_dump") && said.contains("operations.md"), "{said}");
    assert!(!dir.path().join("b").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_pg_dump_and_pg_restore_restore() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    let (before, trusted, head) = before_backup(&server.addr, dir.path());
    // pg_dump reads one snapshot: the service may keep running (operations.md).
    let dump = dir.path().join("ledger.dump");
    let dumped = Command::new("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .args(["-d", &db.url])
        .output()
        .unwrap();
    ok(&dumped);
    stop(server);

    // createdb (the fresh, empty database) + pg_restore.
    let restored = TestDb::postgres_at(&pg_admin_url(), "kl_restore").await;
    let loaded = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "-d", &restored.url])
        .arg(&dump)
        .output()
        .unwrap();
    ok(&loaded);
    // The keys come from the deployment's own copies (the same files, in `dir`).
    assert_eq!(head_of(&restored, dir.path()), head);
    after_restore(&restored, dir.path(), &trusted, &before, head);
    restored.cleanup().await;
    db.cleanup().await;
}
