//! Access duties as an operator meets them, through the binary: a kill -9 under read load
//! leaves a record for every answered request, logs hold no personal data, and the token,
//! access and my-number commands, and the exports' send ledger.

use kokuho_testing as common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::process::{cli, create_token, http, http_with, start, start_with, stop};
use common::{Kind, TestDb};
use kokuho_ledger::access::log::{self, Filter};
use kokuho_ledger::access::AccessRecord;
use serde_json::json;
use sha2::Digest as _;

async fn all_records(db: &TestDb) -> Vec<AccessRecord> {
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
    records
}

fn registration(name: &str, kana: &str, number: &str) -> String {
    json!({"type": "registered", "effective_date": "2020-01-01", "name": name, "name_kana": kana,
        "birth_date": "1985-03-03", "sex": "2", "my_number": number})
    .to_string()
}

async fn answered_reads_keep_their_records(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&db, dir.path());
    for i in 1..=20 {
        let body = registration("負荷 花子", "フカ　ハナコ", "123456789018");
        let (status, _) = http(&server.addr, "POST", &format!("/v1/persons/{i}/events"), &body);
        assert_eq!(status, 201);
    }
    let readers: Vec<_> = (0..6)
        .map(|t| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                for i in 0..100_000 {
                    let id = format!("load-{t}-{i}");
                    let path = format!("/v1/persons/{}", i % 20 + 1);
                    match std::panic::catch_unwind(|| http_with(&addr, "GET", &path, "", &[("X-Request-Id", &id)])) {
                        Ok((200, body)) if body["person_id"].is_string() => answered.push(id),
                        _ => break,
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().unwrap(); // SIGKILL: nothing flushes on the way out
    server.child.wait().unwrap();
    let answered: Vec<String> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert!(
        answered.len() > 20,
        "reads were answered before the kill ({})",
        answered.len()
    );
    let recorded: BTreeSet<String> = all_records(&db).await.into_iter().map(|r| r.request_id).collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(missing.is_empty(), "answered without a record: {missing:?}");
    let verified = cli(&db, dir.path(), &["access", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("access log intact"));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answered_reads_keep_their_records_through_kill_9_postgres() {
    answered_reads_keep_their_records(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answered_reads_keep_their_records_through_kill_9_sqlite() {
    answered_reads_keep_their_records(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_hold_no_personal_data_and_no_credential() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    // The most talkative log there is.
    let server = start_with(&db, dir.path(), &[("RUST_LOG", "debug")]);
    let number = "000000000051";
    let (name, kana) = ("秘密 花子", "ヒミツ　ハナコ");
    let (status, _) = http(
        &server.addr,
        "POST",
        "/v1/persons/5/events",
        &registration(name, kana, number),
    );
    assert_eq!(status, 201);
    let token = create_token(&db, dir.path(), "number-clerk", &["clerk", "my_number"]);
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    // Reads, a reveal, searches, refusals with the data in the body.
    http(&server.addr, "GET", "/v1/persons/5", "");
    http(&server.addr, "GET", "/v1/persons/5/timeline", "");
    let (status, revealed) = http_with(&server.addr, "GET", "/v1/persons/5/my-number", "", &h);
    assert_eq!((status, revealed["my_number"].as_str()), (200, Some(number)));
    http_with(
        &server.addr,
        "POST",
        "/v1/persons/search",
        &json!({"my_number": number}).to_string(),
        &h,
    );
    http(
        &server.addr,
        "POST",
        "/v1/persons/search",
        &json!({"name": "秘密", "name_kana": "ヒミツ"}).to_string(),
    );
    let bad = registration(name, kana, "000000000052");
    let (status, _) = http(&server.addr, "POST", "/v1/persons/6/events", &bad);
    assert_eq!(status, 400);
    let (status, _) = http_with(
        &server.addr,
        "GET",
        "/v1/persons/5",
        "",
        &[("Authorization", "Bearer kl_wrong")],
    );
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("request"), "debug logging was on: {log}");
    for secret in [number, "000000000052", name, kana, "秘密", "ヒミツ", &token, "kl_wrong"] {
        assert!(!log.contains(secret), "{secret:?} in the log");
    }
    stop(server);
    db.cleanup().await;
}

async fn commands_on(kind: Kind) {
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&db, dir.path());
    for (id, n) in [("1", "123456789018"), ("2", "000000000051")] {
        let (status, _) = http(
            &server.addr,
            "POST",
            &format!("/v1/persons/{id}/events"),
            &registration("記録 一郎", "キロク　イチロウ", n),
        );
        assert_eq!(status, 201);
        let mi = json!({"type": "moved_in", "effective_date": "2020-04-01", "from": "abroad", "household_id": "9"});
        assert_eq!(
            http(
                &server.addr,
                "POST",
                &format!("/v1/persons/{id}/events"),
                &mi.to_string()
            )
            .0,
            201
        );
    }
    // Tokens: listed without their secrets, revoked.
    let token = create_token(&db, dir.path(), "premium-system", &["feed_consumer"]);
    assert!(token.starts_with("kl_"));
    let listed = cli(&db, dir.path(), &["token", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("premium-system\tfeed_consumer") && !text.contains("kl_"),
        "{text}"
    );
    let auth = format!("Bearer {token}");
    assert_eq!(
        http_with(&server.addr, "GET", "/v1/feed", "", &[("Authorization", &auth)]).0,
        200
    );
    assert!(cli(&db, dir.path(), &["token", "revoke", "premium-system"])
        .status
        .success());
    std::thread::sleep(kokuho_ledger::access::tokens::CACHE_TTL + Duration::from_millis(200));
    assert_eq!(
        http_with(&server.addr, "GET", "/v1/feed", "", &[("Authorization", &auth)]).0,
        401
    );
    let again = cli(
        &db,
        dir.path(),
        &["token", "create", "--name", "premium-system", "--role", "clerk"],
    );
    assert_eq!(again.status.code(), Some(1), "a name is never reused");
    let bad = cli(&db, dir.path(), &["token", "create", "--name", "x", "--role", "boss"]);
    assert_eq!(bad.status.code(), Some(2));
    stop(server);

    // Purge: refused for a date less than five years ago.
    let recent = (chrono::Utc::now().date_naive() - chrono::Months::new(12)).to_string();
    let refused = cli(&db, dir.path(), &["access", "purge", "--before", &recent]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("five years"));

    // Exports leave the send ledger: the range and each file's SHA-256.
    let out = dir.path().join("feed");
    let exported = cli(
        &db,
        dir.path(),
        &["feed", "export", "--after", "0", "--out", out.to_str().unwrap()],
    );
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let records = all_records(&db).await;
    let sent = records.iter().rev().find(|r| r.screen == "cli feed export").unwrap();
    assert!(sent.actor.starts_with("os:"));
    assert_eq!(sent.kind.as_str(), "export");
    assert_eq!(sent.persons, ["1", "2"]);
    let export = sent.export.as_ref().unwrap();
    for (i, suffix) in ["household", "individual"].into_iter().enumerate() {
        let file = dir.path().join(format!("feed.{suffix}.csv"));
        let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
        assert_eq!(export["files"][i]["name"], format!("feed.{suffix}.csv"));
        assert_eq!(export["files"][i]["sha256"], digest);
    }
    assert_eq!(export["after"], 0);
    let audit_out = dir.path().join("audit.jsonl");
    let audited = cli(
        &db,
        dir.path(),
        &["audit", "export", "--out", audit_out.to_str().unwrap()],
    );
    assert!(audited.status.success(), "{}", String::from_utf8_lossy(&audited.stderr));
    let records = all_records(&db).await;
    let sent = records.iter().rev().find(|r| r.screen == "cli audit export").unwrap();
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&audit_out).unwrap()));
    assert_eq!(sent.export.as_ref().unwrap()["files"][0]["sha256"], digest);

    // Erasure by person and by storage day, recorded; the trail still verifies.
    let erased = cli(&db, dir.path(), &["my-number", "erase", "--person", "1"]);
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
    assert!(String::from_utf8_lossy(&erased.stdout).contains("erased the My Numbers of 1 persons"));
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Days::new(2)).to_string();
    let erased = cli(
        &db,
        dir.path(),
        &["my-number", "erase", "--registered-before", &tomorrow],
    );
    assert!(String::from_utf8_lossy(&erased.stdout).contains("erased the My Numbers of 1 persons"));
    let records = all_records(&db).await;
    let erasures: Vec<&AccessRecord> = records.iter().filter(|r| r.screen == "cli my-number erase").collect();
    assert_eq!(erasures.len(), 2);
    assert_eq!(
        (erasures[0].persons.clone(), erasures[1].persons.clone()),
        (vec!["1".to_owned()], vec!["2".to_owned()])
    );
    assert_eq!(cli(&db, dir.path(), &["my-number", "erase"]).status.code(), Some(2));
    let verified = cli(&db, dir.path(), &["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let verified = cli(&db, dir.path(), &["access", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_access_and_my_number_commands_postgres() {
    commands_on(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_access_and_my_number_commands_sqlite() {
    commands_on(Kind::Sqlite).await;
}
