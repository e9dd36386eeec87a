//! The binary itself: crash survival of acknowledged events (kill -9), graceful shutdown,
//! `import` (all-or-nothing validation, line numbers), `migrate`, exit codes.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Kind, TestDb};
use serde_json::{json, Value};

use common::process::{audit_key, http, start, stop, vault_key};

const BIN: &str = env!("CARGO_BIN_EXE_kokuho-ledger");

fn register(addr: &str, id: &str) -> (u16, Value) {
    let body = json!({"type": "registered", "effective_date": "2020-01-01", "name": "試験 花子", "name_kana": "シケン　ハナコ",
        "birth_date": "1985-03-03", "sex": "2"});
    http(addr, "POST", &format!("/v1/persons/{id}/events"), &body.to_string())
}

async fn crash_survival(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&db, dir.path());
    let addr = server.addr.clone();
    // Writers keep going while the process is killed; whatever was acknowledged must survive.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..400 {
                    let id = format!("{}{:04}", w + 1, i);
                    match std::panic::catch_unwind(|| register(&addr, &id)) {
                        Ok((201, body)) => acked.push((id, body["position"].as_i64().unwrap())),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    server.child.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.child.wait().unwrap();
    let acked: Vec<(String, i64)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(
        acked.len() > 10,
        "the server acknowledged writes before the kill ({})",
        acked.len()
    );

    let server = start(&db, dir.path());
    for (id, position) in &acked {
        // Read-your-writes: the restarted projections must reach the acknowledged position.
        let path = format!("/v1/persons/{id}/timeline?min_position={position}");
        let (status, body) = http(&server.addr, "GET", &path, "");
        assert_eq!(status, 200, "acknowledged person {id} lost: {body}");
        assert_eq!(body["events"][0]["position"].as_i64(), Some(*position));
    }
    let store = db.store().await;
    let events = store.read_log(0, 1_000_000).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=events.len() as i64).collect::<Vec<_>>()
    );
    // The audit chainer was killed mid-stream too: after the restart every event is chained
    // once, and the whole trail verifies.
    covered_checkpoint(&server.addr, events.len() as i64);
    // The projections were killed mid-stream too: once caught up every person has one version
    // in force, and the tables equal a fresh rebuild.
    stop(server);
    let verified = audit_cmd(&db, dir.path(), &["verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let projections = kokuho_ledger::ledger::projections(&store, &kokuho_ledger::settings::Settings::default(), None);
    projections.catch_up().await.unwrap();
    let incremental = projections.dump().await.unwrap();
    let persons = incremental.iter().find(|(t, _)| *t == "proj_person").unwrap();
    // Every acknowledged registration, each with one version in force.
    let open = persons
        .1
        .iter()
        .filter(|r| r[2] == kokuho_ledger::store::sql::Val::Int(None))
        .count();
    assert_eq!(open, events.iter().filter(|e| e.aggregate_type == "person").count());
    projections.rebuild(|_| {}).await.unwrap();
    assert_eq!(projections.dump().await.unwrap(), incremental);
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_survive_kill_9_postgres() {
    crash_survival(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_survive_kill_9_sqlite() {
    crash_survival(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&db, dir.path());
    assert_eq!(register(&server.addr, "1").0, 201);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = server.child.wait().unwrap();
    assert!(code.success(), "exit status {code:?}");
    let server = start(&db, dir.path());
    assert_eq!(http(&server.addr, "GET", "/v1/persons/1?min_position=1", "").0, 200);
    stop(server);
}

fn import(db: &TestDb, dir: &std::path::Path, lines: &[Value]) -> std::process::Output {
    let file = dir.join("events.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    Command::new(BIN)
        .args([
            "import",
            file.to_str().unwrap(),
            "--database-url",
            &db.url,
            "--batch-size",
            "7",
        ])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .output()
        .unwrap()
}

/// Imports `family()` with `line` inserted at index `at`: the import stops (exit 1). Its report.
fn import_stopped(db: &TestDb, dir: &std::path::Path, at: usize, line: Value) -> String {
    let mut lines = family();
    lines.insert(at, line);
    let out = import(db, dir, &lines);
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn family() -> Vec<Value> {
    // The card number is recorded first, so the joins get their branch numbers under it.
    let mut lines = vec![
        json!({"household_id": "900", "type": "card_number_assigned", "effective_date": "2021-04-01", "symbol": "1", "number": "00000900"}),
    ];
    for (i, id) in ["501", "502", "503"].iter().enumerate() {
        lines.push(
            json!({"person_id": id, "type": "registered", "effective_date": "2020-01-01", "name": "家族 一郎",
            "name_kana": "ｶｿﾞｸ ｲﾁﾛｳ", "birth_date": format!("198{i}-01-01"), "sex": "1", "my_number": "123456789018"}),
        );
        lines.push(json!({"person_id": id, "type": "moved_in", "effective_date": "2021-04-01", "from": "other_prefecture", "household_id": "900"}));
    }
    lines.push(json!({"household_id": "900", "type": "household_head_changed", "effective_date": "2021-04-01", "person_id": "501"}));
    lines.push(json!({"person_id": "502", "type": "employee_insurance_joined", "effective_date": "2023-04-01"}));
    lines
}

async fn import_on(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let store = db.store().await;
    // An invalid line: reported by number; the valid lines before it in its batch are in the
    // ledger, it and everything after are not, and the report says exactly that.
    let err = import_stopped(
        &db,
        dir.path(),
        4,
        json!({"person_id": "502", "type": "moved_out", "effective_date": "2021-01-01", "to": "abroad"}),
    );
    assert!(err.contains("line 5") && err.contains("not_resident"), "{err}");
    assert!(err.contains("lines 1–4 are in the ledger"), "{err}");
    // Lines 1–4: the card, 501 registered and moved in (with its branch number), 502 registered.
    assert_eq!(store.head().await.unwrap(), 5);
    // The same file with a malformed line 3: lines 1–2 are found in the ledger, line 3 stops it.
    let err = import_stopped(
        &db,
        dir.path(),
        2,
        json!({"person_id": "50x", "type": "died", "effective_date": "2021-01-01"}),
    );
    assert!(err.contains("line 3") && err.contains("invalid_person_id"), "{err}");
    assert_eq!(store.head().await.unwrap(), 5, "nothing of a refused line is written");

    // The corrected file finishes the load: what is in the ledger is skipped, not duplicated.
    let out = import(&db, dir.path(), &family());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("5 lines written (7 events), 4 already in the ledger; lines 1–9 are in the ledger"),
        "{said}"
    );
    let events = store.read_log(0, 100).await.unwrap();
    // 9 lines, plus a branch number for each of the three joins.
    assert_eq!(events.len(), 12);
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(
        events[1].payload.value().unwrap()["name_kana"],
        "カゾク　イチロウ",
        "half-width kana stored full width"
    );
    // The events' actor is the host's user who ran the import, and each batch left its
    // access record naming the persons it wrote.
    let actor = events[1].metadata.value().unwrap()["actor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(actor.starts_with("os:") && actor.contains('@'), "{actor}");
    let records = kokuho_ledger::access::log::list(
        store.db(),
        &kokuho_ledger::access::log::Filter {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let imports: Vec<_> = records.iter().filter(|r| r.screen == "cli import").collect();
    assert!(!imports.is_empty());
    assert!(imports
        .iter()
        .all(|r| r.actor == actor && r.kind.as_str() == "update" && r.outcome == 200));
    let named: std::collections::BTreeSet<&str> = imports
        .iter()
        .flat_map(|r| r.persons.iter().map(String::as_str))
        .collect();
    let written: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e.aggregate_type == "person")
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(named, written);
    let branches: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e.event_type == "branch_number_issued")
        .map(|e| {
            let f = |k: &str| e.payload.value().unwrap()[k].as_str().unwrap().to_owned();
            (f("person_id"), f("number"), f("branch"))
        })
        .collect();
    assert_eq!(
        branches,
        [("501", "01"), ("502", "02"), ("503", "03")].map(|(p, b)| (p.to_owned(), "00000900".to_owned(), b.to_owned()))
    );
    assert!(
        !serde_json::to_string(&events.iter().map(|e| &e.payload).collect::<Vec<_>>())
            .unwrap()
            .contains("123456789018")
    );
    // A second import continues the streams and re-checks against what is stored.
    let more = vec![
        json!({"person_id": "501", "type": "moved_in", "effective_date": "2022-01-01", "from": "abroad", "household_id": "900"}),
    ];
    let out = import(&db, dir.path(), &more);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already_resident"));
    let more = vec![
        json!({"household_id": "901", "type": "card_number_assigned", "effective_date": "2021-04-01", "symbol": "1", "number": "00000900"}),
    ];
    let out = import(&db, dir.path(), &more);
    assert!(String::from_utf8_lossy(&out.stderr).contains("card_number_in_use"));
    let more = vec![json!({"person_id": "502", "type": "employee_insurance_left", "effective_date": "2024-04-01"})];
    assert!(import(&db, dir.path(), &more).status.success());
    assert_eq!(store.head().await.unwrap(), 13);
    // `rebuild` builds the projections from the log and ends with a summary.
    let out = Command::new(BIN)
        .args(["rebuild", "--database-url", &db.url])
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("rebuilt persons, households from 13 events"),
        "{summary}"
    );
    assert!(summary.contains("proj_branch: 3 rows"), "{summary}");
    assert!(summary.contains("checkpoint persons: 13"), "{summary}");
    // The rebuild also caught the feed up (it is never emptied) and verified it.
    assert!(
        summary.contains("feed: 22 records verified against the log, identical"),
        "{summary}"
    );
    let projections = kokuho_ledger::ledger::projections(&store, &kokuho_ledger::settings::Settings::default(), None);
    let rebuilt = projections.dump().await.unwrap();
    let persons = rebuilt.iter().find(|(t, _)| *t == "proj_person").unwrap();
    assert_eq!(
        persons.1.len(),
        3,
        "one version per person: no attribute changed after registering"
    );
    store.close().await;
    db.cleanup().await;
}

/// A file of `n` persons: each registered, then moved into a household of two.
fn population(n: usize) -> Vec<Value> {
    (0..n)
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

/// The log as a comparison sees it: everything but the metadata (request ids differ by run).
async fn log_rows(store: &kokuho_ledger::store::Store) -> Vec<(i64, String, String, i64, String, Value)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_log(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        out.extend(page.into_iter().map(|e| {
            (
                e.position,
                e.aggregate_type,
                e.aggregate_id,
                e.sequence,
                e.event_type,
                e.payload.value().unwrap(),
            )
        }));
    }
    out
}

async fn import_resumes_after_kill_9_on(kind: Kind) {
    let lines = population(3_000);
    // The ledger an uninterrupted import gives.
    let whole = TestDb::new(kind_of(&kind)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = import(&whole, dir.path(), &lines);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = log_rows(&whole.store().await).await;
    assert_eq!(
        expected.len(),
        3_000 * 3 + 1_500,
        "registrations, moves, branches, cards"
    );

    // The same file, killed mid-way (some batches written, not all), then run again.
    let db = TestDb::new(kind).await;
    let file = dir.path().join("events.jsonl");
    let store = db.store().await;
    let mut child = Command::new(BIN)
        .args([
            "import",
            file.to_str().unwrap(),
            "--database-url",
            &db.url,
            "--batch-size",
            "100",
        ])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir.path()))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while store.head().await.unwrap() < 500 {
        assert!(started.elapsed() < Duration::from_secs(60), "the import wrote nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = store.head().await.unwrap();
    assert!(partial < expected.len() as i64, "killed before the end ({partial})");
    let out = Command::new(BIN)
        .args([
            "import",
            file.to_str().unwrap(),
            "--database-url",
            &db.url,
            "--batch-size",
            "100",
        ])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir.path()))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already in the ledger"));
    assert_eq!(
        log_rows(&store).await,
        expected,
        "the same ledger as an uninterrupted import"
    );
    store.close().await;
    db.cleanup().await;
    whole.cleanup().await;
}

fn kind_of(k: &Kind) -> Kind {
    match k {
        Kind::Postgres => Kind::Postgres,
        Kind::Sqlite => Kind::Sqlite,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn import_resumes_after_kill_9_postgres() {
    import_resumes_after_kill_9_on(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn import_resumes_after_kill_9_sqlite() {
    import_resumes_after_kill_9_on(Kind::Sqlite).await;
}

/// The batches are read ahead of the writes: a line that does not parse in a later batch
/// stops the import only after the batches before it, and its own lines before it, are
/// written; the batch read ahead of a refused one is not written.
async fn import_stops_in_a_batch_read_ahead_on(kind: Kind) {
    let second = kind_of(&kind);
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let store = db.store().await;
    // Batches of 7: lines 1–7, then 8–10 with line 9 malformed.
    let err = import_stopped(
        &db,
        dir.path(),
        8,
        json!({"person_id": "503", "type": "died", "effective_date": "2021-13-01"}),
    );
    assert!(
        err.contains("line 9") && err.contains("lines 1–8 are in the ledger"),
        "{err}"
    );
    // Eight lines and the branch numbers of the three joins.
    assert_eq!(store.head().await.unwrap(), 11);

    // A refused line in the first batch: the second batch, already read, is not written.
    let db2 = TestDb::new(second).await;
    let store2 = db2.store().await;
    let err = import_stopped(
        &db2,
        dir.path(),
        2,
        json!({"person_id": "501", "type": "moved_out", "effective_date": "2019-01-01", "to": "abroad"}),
    );
    assert!(
        err.contains("line 3") && err.contains("lines 1–2 are in the ledger"),
        "{err}"
    );
    assert_eq!(store2.head().await.unwrap(), 2);

    // The corrected file finishes the first load with the one line it lacked.
    let out = import(&db, dir.path(), &family());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1 lines written (1 events), 8 already in the ledger; lines 1–9 are in the ledger"),
        "{said}"
    );
    assert_eq!(store.head().await.unwrap(), 12);
    store.close().await;
    store2.close().await;
    db.cleanup().await;
    db2.cleanup().await;
}

kokuho_testing::on_both!(
    import_stops_in_a_batch_read_ahead,
    import_stops_in_a_batch_read_ahead_on
);

#[tokio::test(flavor = "multi_thread")]
async fn import_postgres() {
    import_on(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn import_sqlite() {
    import_on(Kind::Sqlite).await;
}

#[test]
fn usage_errors_exit_2_and_help_works() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["import", "--help"],
        &["rebuild", "--help"],
        &["feed", "export", "--help"],
    ] {
        let out = Command::new(BIN).args(sub).output().unwrap();
        assert!(out.status.success(), "{sub:?}");
    }
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_the_schema() {
    let db = TestDb::new(Kind::Postgres).await;
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = kokuho_ledger::store::Store::connect_without_migrating(&db.url)
        .await
        .unwrap();
    assert_eq!(store.head().await.unwrap(), 0);
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn age_out_command_records_and_is_idempotent() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        json!({"person_id": "71", "type": "registered", "effective_date": "2020-01-01", "name": "高齢 花子",
            "name_kana": "コウレイ　ハナコ", "birth_date": "1951-06-01", "sex": "2"}),
        json!({"person_id": "71", "type": "moved_in", "effective_date": "2020-01-10", "from": "abroad", "household_id": "7"}),
    ];
    assert!(import(&db, dir.path(), &lines).status.success());
    let run = |through: &str| {
        Command::new(BIN)
            .args(["age-out", "--through", through, "--database-url", &db.url])
            .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir.path()))
            .env("KOKUHO_INSURER_NUMBER", "131999")
            .output()
            .unwrap()
    };
    let out = run("2026-07-01");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 recorded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run("2026-07-01");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 recorded"));
    assert_eq!(run("2026-13-01").status.code(), Some(2), "a bad date is bad usage");
    let store = db.store().await;
    let events = store.load_stream("person", "71", None).await.unwrap();
    assert_eq!(events.last().unwrap().event_type, "late_elderly_age_reached");
    assert_eq!(events.len(), 3);
    // The import gave the household its card and the person branch 01.
    let household = store.load_stream("household", "7", None).await.unwrap();
    assert_eq!(
        household.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["card_number_assigned", "branch_number_issued"]
    );
    store.close().await;
}

fn export(db: &TestDb, out: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "feed",
            "export",
            "--database-url",
            &db.url,
            "--out",
            out.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .unwrap()
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    assert!(
        text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'),
        "CRLF line ends"
    );
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

async fn feed_export_on(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    // Half-width kana in the input are stored (and exported) full width; 𠮷 is outside
    // Windows-31J.
    let lines = vec![
        json!({"person_id": "81", "type": "registered", "effective_date": "2020-01-01", "name": "𠮷田 太郎",
            "name_kana": "ﾖｼﾀﾞ ﾀﾛｳ", "birth_date": "1980-02-03", "sex": "1"}),
        json!({"person_id": "81", "type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "80"}),
        json!({"person_id": "82", "type": "registered", "effective_date": "2020-01-01", "name": "山田 花子",
            "name_kana": "ヤマダ　ハナコ", "birth_date": "1982-05-06", "sex": "2"}),
        json!({"person_id": "82", "type": "moved_in", "effective_date": "2024-05-01", "from": "abroad", "household_id": "80"}),
    ];
    assert!(import(&db, dir.path(), &lines).status.success());
    let store = db.store().await;
    kokuho_ledger::ledger::projections(&store, &common::test_settings(), None)
        .catch_up()
        .await
        .unwrap();

    let out = dir.path().join("feed-utf8");
    let run = export(&db, &out, &["--encoding", "utf-8"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Two groups: 1 + 1 records, then 1 + 2.
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "5");
    let households = csv_rows(&std::fs::read_to_string(dir.path().join("feed-utf8.household.csv")).unwrap());
    let individuals = csv_rows(&std::fs::read_to_string(dir.path().join("feed-utf8.individual.csv")).unwrap());
    assert_eq!(
        households[0],
        kokuho_ledger::feed::export::HOUSEHOLD_COLUMNS.map(str::to_owned)
    );
    assert_eq!(
        individuals[0],
        kokuho_ledger::feed::export::INDIVIDUAL_COLUMNS.map(str::to_owned)
    );
    assert_eq!(households.len(), 3);
    assert_eq!(individuals.len(), 4);
    let col = |name: &str| {
        kokuho_ledger::feed::export::INDIVIDUAL_COLUMNS
            .iter()
            .position(|c| *c == name)
            .unwrap()
    };
    let first = &individuals[1];
    assert_eq!(
        (
            first[col("name")].as_str(),
            first[col("name_kana")].as_str(),
            first[col("birth_date")].as_str(),
            first[col("applied_from")].as_str(),
            first[col("applied_to")].as_str(),
            first[col("sex_on_back")].as_str(), // registered without it: printed (default)
            first[col("change")].as_str(),
            first[col("branch")].as_str(),
        ),
        (
            "𠮷田 太郎",
            "ヨシダ　タロウ",
            "19800203",
            "20240401",
            "",
            "1",
            "acquired",
            "01"
        )
    );

    // Windows-31J: 𠮷 fails the export, naming the record and the field; nothing is left.
    let out = dir.path().join("feed-sjis");
    let run = export(&db, &out, &["--encoding", "shift_jis"]);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("record 2, field name") && err.contains("U+20BB7"), "{err}");
    assert!(!dir.path().join("feed-sjis.individual.csv").exists());
    // With replacements allowed it becomes 〓, listed on stderr.
    let run = export(&db, &out, &["--encoding", "shift_jis", "--replace-unmappable"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.matches("replaced U+20BB7 with 〓").count(), 2, "{err}");
    let bytes = std::fs::read(dir.path().join("feed-sjis.individual.csv")).unwrap();
    let (text, _, malformed) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!malformed);
    let sjis = csv_rows(&text);
    assert_eq!(sjis[1][col("name")], "〓田 太郎");
    assert_eq!(sjis[1][col("name_kana")], "ヨシダ　タロウ");
    assert_eq!(sjis[3][col("name")], "山田 花子");
    assert_eq!(
        sjis[1..].iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        ["2", "4", "5"]
    );

    // The next run starts after the last position: headers only, same position printed.
    let run = export(&db, &dir.path().join("feed-next"), &["--after", "5"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "5");
    let rows = csv_rows(&std::fs::read_to_string(dir.path().join("feed-next.individual.csv")).unwrap());
    assert_eq!(rows.len(), 1);
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feed_export_postgres() {
    feed_export_on(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feed_export_sqlite() {
    feed_export_on(Kind::Sqlite).await;
}

/// `kokuho-ledger audit …` with the server's environment (a PostgreSQL deployment's key).
fn audit_cmd(db: &TestDb, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(BIN);
    if db.is_postgres() {
        command.env("KOKUHO_AUDIT_KEY_FILE", audit_key(dir));
    }
    command
        .arg("audit")
        .args(args)
        .args(["--database-url", &db.url])
        .output()
        .unwrap()
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
            "no checkpoint of size {head} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn audit_commands_on(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    for id in ["601", "602", "603"] {
        assert_eq!(register(&server.addr, id).0, 201);
    }
    let (status, moved) = http(
        &server.addr,
        "POST",
        "/v1/persons/601/events",
        &json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "60"})
            .to_string(),
    );
    assert_eq!(status, 201, "{moved}");
    // A join's last position is its last consequence: the branch number it caused.
    let head = moved["last_position"].as_i64().unwrap();
    let checkpoint = covered_checkpoint(&server.addr, head);
    let public_key = checkpoint["public_key"].as_str().unwrap().to_owned();
    stop(server);
    if !db.is_postgres() {
        // The embedded default made its key beside the database file (0600) and reuses it.
        let key = format!("{}.audit.key", kokuho_ledger::store::sqlite_path(&db.url).unwrap());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let server = start(&db, dir.path());
        assert_eq!(register(&server.addr, "604").0, 201);
        let again = covered_checkpoint(&server.addr, head + 1);
        assert_eq!(again["public_key"], public_key.as_str());
        stop(server);
    }

    let verify = audit_cmd(&db, dir.path(), &["verify"]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.contains("audit trail intact"), "{said}");

    // From a checkpoint the auditor kept (as GET /v1/audit/checkpoint gave it).
    let trusted = dir.path().join("trusted.json");
    std::fs::write(&trusted, checkpoint.to_string()).unwrap();
    let from = audit_cmd(
        &db,
        dir.path(),
        &["verify", "--from-checkpoint", trusted.to_str().unwrap()],
    );
    assert!(from.status.success(), "{}", String::from_utf8_lossy(&from.stderr));

    // The export, checked by the independent verifier.
    let out = dir.path().join("audit.jsonl");
    let export = audit_cmd(&db, dir.path(), &["export", "--out", out.to_str().unwrap()]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_audit.py");
    let checked = Command::new("python3")
        .args([script, out.to_str().unwrap(), "--public-key", &public_key])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));

    // Another key is not trusted: exit 1 naming the first checkpoint.
    let other = kokuho_ledger::audit::keys::Signer::generate().public_key();
    let wrong = audit_cmd(&db, dir.path(), &["verify", "--public-key", &other]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("FAILED at position"));

    // A changed event: exit 1 naming its position.
    let store = db.store().await;
    let change = "UPDATE events SET metadata = replace(metadata, 'cli-test', 'cli-tesT') WHERE position = 2";
    if let Some(pool) = store.pg_pool() {
        sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            &change
                .replace("replace(metadata,", "replace(metadata::text,")
                .replace("'cli-tesT')", "'cli-tesT')::json"),
        )
        .execute(pool)
        .await
        .unwrap();
    } else {
        let pool = store.sqlite_pool().unwrap();
        sqlx::query("DROP TRIGGER events_no_update")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(change).execute(pool).await.unwrap();
    }
    store.close().await;
    let failed = audit_cmd(&db, dir.path(), &["verify"]);
    assert_eq!(failed.status.code(), Some(1));
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(said.contains("FAILED at position 2:"), "{said}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_commands_postgres() {
    audit_commands_on(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_commands_sqlite() {
    audit_commands_on(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_keygen_never_overwrites_and_postgres_serve_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let first = Command::new(BIN)
        .args(["audit", "keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(first.status.success());
    let public_key = String::from_utf8(first.stdout).unwrap();
    assert_eq!(public_key.trim().len(), 44, "base64 of 32 bytes: {public_key}");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = Command::new(BIN)
        .args(["audit", "keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let db = TestDb::new(Kind::Postgres).await;
    let refused = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir.path()))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .env_remove("KOKUHO_AUDIT_KEY_FILE")
        .env_remove("KOKUHO_AUDIT_KEY")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("KOKUHO_AUDIT_KEY_FILE"));
    db.cleanup().await;
}

/// `serve` on PostgreSQL with the given environment; what it said and how it ended.
fn serve_refused(
    db: &TestDb,
    dir: &std::path::Path,
    env: &[(&str, std::ffi::OsString)],
    unset: &[&str],
) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url])
        .current_dir(dir);
    for name in [
        "KOKUHO_VAULT_KEY_FILE",
        "KOKUHO_VAULT_KEY",
        "KOKUHO_AUDIT_KEY_FILE",
        "KOKUHO_AUDIT_KEY",
        "KOKUHO_INSURER_NUMBER",
    ] {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    for k in unset {
        command.env_remove(k);
    }
    let out = command.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_serve_needs_its_configuration() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("KOKUHO_VAULT_KEY_FILE", vault_key(dir.path()).into_os_string()),
        ("KOKUHO_AUDIT_KEY_FILE", audit_key(dir.path()).into_os_string()),
    ];
    let insurer = ("KOKUHO_INSURER_NUMBER", std::ffi::OsString::from("131999"));
    // Without the insurer number.
    let (code, said) = serve_refused(&db, dir.path(), &keys, &[]);
    assert_eq!(code, Some(1));
    assert!(said.contains("KOKUHO_INSURER_NUMBER"), "{said}");
    // Without the vault key: refused, and no key is made in the working directory.
    let (code, said) = serve_refused(&db, dir.path(), &[keys[1].clone(), insurer.clone()], &[]);
    assert_eq!(code, Some(1));
    assert!(said.contains("KOKUHO_VAULT_KEY_FILE"), "{said}");
    assert!(!dir.path().join("kokuho-ledger.vault.key").exists());
    // A configured vault key file that does not exist is refused too, never created.
    let missing = dir.path().join("absent.key");
    let (code, said) = serve_refused(
        &db,
        dir.path(),
        &[
            ("KOKUHO_VAULT_KEY_FILE", missing.clone().into_os_string()),
            keys[1].clone(),
            insurer.clone(),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(said.contains("vault keygen"), "{said}");
    assert!(!missing.exists());
    db.cleanup().await;
}

#[test]
fn errors_name_what_went_wrong_once() {
    // A key into a directory that does not exist: the OS error once, with the path.
    let out = Command::new(BIN)
        .args(["audit", "keygen", "--out", "/nonexistent-dir/audit.key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.matches("No such file or directory").count(), 1, "{said}");
    assert!(said.contains("/nonexistent-dir/audit.key"), "{said}");
    // An unreachable PostgreSQL: at once, naming where and why.
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", "postgres://postgres@127.0.0.1:1/kokuho"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("127.0.0.1:1") && said.to_lowercase().contains("refused"),
        "{said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // --help lists the environment.
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "KOKUHO_INSURER_NUMBER",
        "KOKUHO_VAULT_KEY_FILE",
        "KOKUHO_AUDIT_KEY_FILE",
        "DATABASE_URL",
    ] {
        assert!(help.contains(var), "{var} not in --help");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_database_reads_the_first_ones_writes() {
    let db = TestDb::new(Kind::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(&db, dir.path());
    let b = start(&db, dir.path());
    for i in 0..10 {
        let id = format!("88{i}");
        assert_eq!(register(&a.addr, &id).0, 201);
        // No header: the other process's read includes the write.
        let (status, body) = http(&b.addr, "GET", &format!("/v1/persons/{id}"), "");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["person_id"], id.as_str());
    }
    stop(a);
    stop(b);
    db.cleanup().await;
}
