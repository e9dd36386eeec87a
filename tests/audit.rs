//! The audit trail (audit.md) on PostgreSQL and SQLite: every event chained once, checkpoints
//! signed, proofs correct for every (position, size) and (from, to), `audit verify` catching
//! every kind of tampering at the right position, the export checked by the independent
//! Python verifier, and no My Number anywhere in it.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{audited_ledger_on, Kind, TestDb, TestLedger};
use kokuho_ledger::audit::checkpoint::SignedCheckpoint;
use kokuho_ledger::audit::keys::{parse_public_key, Signer};
use kokuho_ledger::audit::merkle::{self, Hash};
use kokuho_ledger::audit::verify::{self, Report, Start};
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::request::RequestContext;
use serde_json::{json, Value};

const MY_NUMBERS: [&str; 4] = ["314159265352", "271828182840", "161803398872", "141421356230"];

fn ctx() -> RequestContext {
    RequestContext {
        actor: "audit-test".into(),
        request_id: "audit".into(),
        ..Default::default()
    }
}

async fn person(l: &Ledger, id: &str, body: Value) -> i64 {
    l.record_person_event(&PersonId::parse(id).unwrap(), &body, &ctx())
        .await
        .unwrap_or_else(|e| panic!("{id} {body}: {e}"))
        .last_position
}

/// `persons` people registered (four with a My Number), moved in, some with later facts:
/// person events plus the card and branch numbers they cause.
async fn populate(l: &Ledger, from: usize, persons: usize) {
    for i in from..from + persons {
        let id = format!("{}", 5000 + i);
        let mut reg = json!({"type": "registered", "effective_date": "2020-01-01", "name": "監査 𠮷子",
            "name_kana": "カンサ　ヨシコ", "birth_date": "1980-02-29", "sex": "2"});
        if let Some(number) = MY_NUMBERS.get(i) {
            reg["my_number"] = json!(number);
        }
        person(l, &id, reg).await;
        person(l, &id, json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": format!("{}", 70 + i / 3)})).await;
        if i % 2 == 0 {
            person(
                l,
                &id,
                json!({"type": "employee_insurance_joined", "effective_date": "2025-04-01"}),
            )
            .await;
        }
    }
}

struct Fixture {
    t: TestLedger,
    signer: Arc<Signer>,
}

impl Fixture {
    async fn new(kind: Kind, persons: usize) -> Self {
        let signer = Arc::new(Signer::generate());
        let t = audited_ledger_on(TestDb::new(kind).await, false, signer.clone()).await;
        populate(&t.ledger, 0, persons).await;
        let f = Self { t, signer };
        f.chain().await;
        f
    }

    /// Chains everything and signs the tail (its oldest entry must be a second old).
    async fn chain(&self) {
        let p = self.t.ledger.projections();
        p.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        p.tick_all().await.unwrap();
    }

    fn key(&self) -> ed25519_dalek::VerifyingKey {
        parse_public_key(&self.signer.public_key()).unwrap()
    }

    async fn verify(&self) -> Report {
        verify::verify(&self.t.store, &self.key(), Start::Genesis, |_| {})
            .await
            .unwrap()
    }

    async fn sql(&self, statements: &[&str]) {
        if let Some(pool) = self.t.store.pg_pool() {
            for s in statements {
                sqlx::query(s)
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        } else {
            let pool = self.t.store.sqlite_pool().unwrap();
            for s in statements {
                sqlx::query(s)
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
    }

    /// What an attacker with superuser rights does first: switch the append-only triggers off.
    async fn disable_triggers(&self) {
        if self.t.db.is_postgres() {
            self.sql(&[
                "ALTER TABLE events DISABLE TRIGGER USER",
                "ALTER TABLE audit_entries DISABLE TRIGGER USER",
                "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
            ])
            .await;
        } else {
            self.sql(&[
                "DROP TRIGGER events_no_update",
                "DROP TRIGGER events_no_delete",
                "DROP TRIGGER audit_entries_no_update",
                "DROP TRIGGER audit_checkpoints_no_update",
            ])
            .await;
        }
    }

    fn pg(&self) -> bool {
        self.t.db.is_postgres()
    }

    async fn cleanup(self) {
        self.t.db.cleanup().await;
    }
}

fn failure(r: &Report) -> (i64, String) {
    let f = r.failure.as_ref().expect("verification must fail");
    (f.position, f.what.clone())
}

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

on_both!(every_event_is_chained_and_every_proof_verifies, |kind| async move {
    let f = Fixture::new(kind, 12).await;
    let audit = f.t.ledger.audit();
    let n = audit.size().await.unwrap();
    assert_eq!(n, f.t.store.head().await.unwrap(), "every event chained");
    assert!(n >= 30, "{n}");
    let report = f.verify().await;
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!((report.entries, report.unchained, report.uncovered), (n as u64, 0, 0));

    // The latest checkpoint covers everything, verifies, and its root matches the entries.
    let latest = audit.checkpoint().await.unwrap().unwrap();
    assert_eq!(latest.signed.checkpoint.size, n as u64);
    assert_eq!(latest.signed.checkpoint.origin, "test.kokuho-ledger");
    assert_eq!(latest.public_key, f.signer.public_key());
    assert!(latest.signed.verifies(&f.key()));
    let mut leaves = Vec::new();
    let mut chain = merkle::CHAIN_START;
    for p in 1..=n {
        let e = audit.entry(p).await.unwrap();
        assert_eq!(e.entry["position"], p);
        let canonical = kokuho_ledger::audit::jcs::to_vec(&e.entry).unwrap();
        let leaf = merkle::leaf_hash(&canonical);
        assert_eq!(hex::encode(leaf), e.leaf_hash, "leaf of {p} from its entry");
        chain = merkle::chain_next(&chain, &leaf);
        assert_eq!(hex::encode(chain), e.chain_hash, "chain at {p}");
        leaves.push(leaf);
    }
    assert_eq!(hex::encode(chain), latest.signed.checkpoint.chain_head);
    let roots: Vec<Hash> = (0..=n as usize).map(|k| reference_root(&leaves[..k])).collect();
    assert_eq!(hex::encode(roots[n as usize]), latest.signed.checkpoint.root);

    // Every (position, size) inclusion proof and every (from, to) consistency proof.
    for size in 1..=n {
        for position in 1..=size {
            let p = audit.inclusion(position, size).await.unwrap();
            assert_eq!(p.root, hex::encode(roots[size as usize]));
            let path: Vec<Hash> = p.path.iter().map(|s| h(s)).collect();
            assert!(
                merkle::verify_inclusion(
                    (position - 1) as u64,
                    size as u64,
                    &h(&p.leaf_hash),
                    &path,
                    &roots[size as usize]
                ),
                "inclusion ({position}, {size})"
            );
        }
        for from in 1..=size {
            let c = audit.consistency(from, size).await.unwrap();
            assert_eq!(
                (c.from_root.as_str(), c.to_root.as_str()),
                (
                    hex::encode(roots[from as usize]).as_str(),
                    hex::encode(roots[size as usize]).as_str()
                )
            );
            let path: Vec<Hash> = c.path.iter().map(|s| h(s)).collect();
            assert!(
                merkle::verify_consistency(
                    from as u64,
                    size as u64,
                    &roots[from as usize],
                    &roots[size as usize],
                    &path
                ),
                "consistency ({from}, {size})"
            );
        }
    }
    f.cleanup().await;
});

/// RFC 9162's MTH written down directly (the oracle for the stored-subtree proofs).
fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => merkle::empty_root(),
        1 => leaves[0],
        n => {
            let k = merkle::split(n as u64) as usize;
            merkle::node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

on_both!(the_http_api_serves_checkpoints_entries_and_proofs, |kind| async move {
    let f = Fixture::new(kind, 3).await;
    let router = kokuho_ledger::http::router(f.t.ledger.clone(), f.t.access.clone())
        .layer(axum::extract::connect_info::MockConnectInfo(common::api::peer()));
    let token =
        f.t.access
            .tokens
            .create(
                "auditor",
                &[kokuho_ledger::access::Role::Auditor],
                None,
                "test",
                common::test_now(),
            )
            .await
            .unwrap();
    let get = |path: String| {
        let router = router.clone();
        let auth = format!("Bearer {token}");
        async move {
            use http_body_util::BodyExt as _;
            use tower::ServiceExt as _;
            let res = router
                .oneshot(
                    axum::http::Request::get(&path)
                        .header("authorization", auth)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };
    let n = f.t.store.head().await.unwrap();
    let (status, cp) = get("/v1/audit/checkpoint".into()).await;
    assert_eq!(status, 200);
    assert_eq!(cp["checkpoint"]["size"], n);
    assert_eq!(cp["public_key"], f.signer.public_key());
    let signed: SignedCheckpoint = serde_json::from_value(cp.clone()).unwrap();
    assert!(signed.verifies(&f.key()));
    let (status, e) = get("/v1/audit/entries/1".into()).await;
    assert_eq!(status, 200);
    assert_eq!(
        (e["entry"]["stream"].as_str(), e["entry"]["sequence"].as_i64()),
        (Some("person"), Some(1))
    );
    let (status, p) = get(format!("/v1/audit/proof/inclusion?position=2&size={n}")).await;
    assert_eq!(status, 200);
    assert_eq!(p["root"], cp["checkpoint"]["root"]);
    let (status, c) = get(format!("/v1/audit/proof/consistency?from=1&to={n}")).await;
    assert_eq!(status, 200);
    assert_eq!(c["to_root"], cp["checkpoint"]["root"]);
    for (path, want, code) in [
        (format!("/v1/audit/entries/{}", n + 1), 404, "entry_not_found"),
        ("/v1/audit/entries/0".to_owned(), 400, "invalid_position"),
        ("/v1/audit/entries/x".to_owned(), 400, "invalid_position"),
        (
            format!("/v1/audit/proof/inclusion?position=1&size={}", n + 1),
            404,
            "beyond_log",
        ),
        (
            "/v1/audit/proof/inclusion?position=3&size=2".to_owned(),
            400,
            "invalid_proof_request",
        ),
        ("/v1/audit/proof/inclusion?size=2".to_owned(), 400, "invalid_position"),
        (
            "/v1/audit/proof/inclusion?position=1&size=abc".to_owned(),
            400,
            "invalid_size",
        ),
        (
            "/v1/audit/proof/consistency?from=0&to=2".to_owned(),
            400,
            "invalid_from",
        ),
        (
            "/v1/audit/proof/consistency?from=3&to=2".to_owned(),
            400,
            "invalid_proof_request",
        ),
        (
            format!("/v1/audit/proof/consistency?from=1&to={}", n + 5),
            404,
            "beyond_log",
        ),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (want, Some(code)), "{path}");
    }
    f.cleanup().await;
});

on_both!(checkpoints_every_thousand_entries_and_for_the_tail, |kind| async move {
    let signer = Arc::new(Signer::generate());
    let t = audited_ledger_on(TestDb::new(kind).await, true, signer.clone()).await;
    // Enough events to cross two multiples of 1,000, through the running chainer.
    let lines: Vec<String> = (0..1100)
        .map(|i| {
            json!({"person_id": format!("{}", 800_000 + i), "type": "registered", "effective_date": "2020-01-01",
            "name": "大量 太郎", "name_kana": "タイリョウ　タロウ", "birth_date": "1990-01-01", "sex": "1"})
            .to_string()
        })
        .chain((0..1100).map(|i| {
            json!({"person_id": format!("{}", 800_000 + i), "type": "moved_in", "effective_date": "2024-04-01",
            "from": "abroad", "household_id": format!("{}", 900_000 + i)})
            .to_string()
        }))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulk.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let options = kokuho_ledger::import::Options {
        batch_lines: 10_000,
        actor: "test".into(),
        access: None,
    };
    let report = kokuho_ledger::import::run(&t.ledger, &file, &options, |_| {})
        .await
        .unwrap();
    assert_eq!((report.written, report.failure), (2200, None));
    t.ledger.projections().notify();
    let head = t.store.head().await.unwrap();
    // An idle ledger's latest checkpoint covers everything within 10 s of the last entry.
    let started = Instant::now();
    let latest = loop {
        let latest = t.ledger.audit().checkpoint().await.unwrap();
        if latest.as_ref().is_some_and(|c| c.signed.checkpoint.size as i64 == head) {
            break latest.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the tail was not checkpointed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let db = t.store.db().clone();
    let sizes: Vec<u64> = kokuho_ledger::audit::store::checkpoints_after(&db, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.signed.checkpoint.size)
        .collect();
    assert!(head > 4000, "{head}");
    for k in 1..=(head / 1000) as u64 {
        assert!(sizes.contains(&(k * 1000)), "a checkpoint at {}: {sizes:?}", k * 1000);
    }
    assert!(sizes.windows(2).all(|w| w[1] - w[0] <= 1000), "{sizes:?}");
    assert_eq!(*sizes.last().unwrap(), latest.signed.checkpoint.size);
    let report = verify::verify(
        &t.store,
        &parse_public_key(&signer.public_key()).unwrap(),
        Start::Genesis,
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.checkpoints, sizes.len() as u64);
    t.db.cleanup().await;
});

on_both!(
    an_untouched_ledger_verifies_and_tampering_fails_at_the_right_position,
    |kind: Kind| async move {
        let pg = matches!(kind, Kind::Postgres);
        let kind = || if pg { Kind::Postgres } else { Kind::Sqlite };
        let f = Fixture::new(kind(), 6).await;
        assert!(f.verify().await.failure.is_none());
        let n = f.t.store.head().await.unwrap();
        f.cleanup().await;
        let p = 7; // a position in the middle (a person event)
        assert!(n > 12);

        // One payload byte.
        let f = Fixture::new(kind(), 6).await;
        f.disable_triggers().await;
        let change = if f.pg() {
            format!("UPDATE events SET payload = replace(payload::text, '2024-04-01', '2024-04-02')::json WHERE position = {p}")
        } else {
            format!("UPDATE events SET payload = replace(payload, '2024-04-01', '2024-04-02') WHERE position = {p}")
        };
        f.sql(&[&change]).await;
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, p, "{what}");
        assert!(what.contains("leaf hash"), "{what}");
        f.cleanup().await;

        // recorded_at.
        let f = Fixture::new(kind(), 6).await;
        f.disable_triggers().await;
        if f.pg() {
            f.sql(&[&format!(
                "UPDATE events SET recorded_at = recorded_at + interval '1 microsecond' WHERE position = {p}"
            )])
            .await;
        } else {
            // SQLite keeps the instant as text: write it one microsecond later.
            let pool = f.t.store.sqlite_pool().unwrap();
            let at: String = sqlx::query_scalar(&format!("SELECT recorded_at FROM events WHERE position = {p}"))
                .fetch_one(pool)
                .await
                .unwrap();
            let t = chrono::DateTime::parse_from_rfc3339(&at).unwrap() + chrono::Duration::microseconds(1);
            let moved = t
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            f.sql(&[&format!(
                "UPDATE events SET recorded_at = '{moved}' WHERE position = {p}"
            )])
            .await;
        }
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, p, "{what}");
        f.cleanup().await;

        // Delete an event.
        let f = Fixture::new(kind(), 6).await;
        f.disable_triggers().await;
        f.sql(&[&format!("DELETE FROM events WHERE position = {p}")]).await;
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, p, "{what}");
        assert!(what.contains("no event"), "{what}");
        f.cleanup().await;

        // Insert one: later events move up a position to make room.
        let f = Fixture::new(kind(), 6).await;
        f.disable_triggers().await;
        let shift = format!("UPDATE events SET position = position + 1000000 WHERE position >= {p}");
        let back = "UPDATE events SET position = position - 999999 WHERE position >= 1000000";
        let insert = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, recorded_at) \
         SELECT 'person', '999', 1, event_type, event_version, payload, metadata, {p}, recorded_at FROM events WHERE position = 1"
    );
        f.sql(&[&shift, back, &insert]).await;
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, p, "{what}");
        f.cleanup().await;

        // Swap two.
        let f = Fixture::new(kind(), 6).await;
        f.disable_triggers().await;
        let q = p + 4;
        f.sql(&[
            &format!("UPDATE events SET position = 999999999 WHERE position = {p}"),
            &format!("UPDATE events SET position = {p} WHERE position = {q}"),
            &format!("UPDATE events SET position = {q} WHERE position = 999999999"),
        ])
        .await;
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, p, "{what}");
        f.cleanup().await;

        // A change with the chain rewritten consistently after it: only the signed checkpoint
        // can tell, so verification fails at the first checkpoint that covers the change.
        let f = Fixture::new(kind(), 6).await;
        let covering =
            f.t.ledger
                .audit()
                .checkpoint()
                .await
                .unwrap()
                .unwrap()
                .signed
                .checkpoint
                .size as i64;
        f.disable_triggers().await;
        let change = if f.pg() {
            format!("UPDATE events SET payload = replace(payload::text, '2024-04-01', '2024-04-02')::json WHERE position = {p}")
        } else {
            format!("UPDATE events SET payload = replace(payload, '2024-04-01', '2024-04-02') WHERE position = {p}")
        };
        f.sql(&[&change]).await;
        rewrite_chain(&f).await;
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, covering, "{what}");
        assert!(
            what.contains(&format!("signed checkpoint of size {covering}")),
            "{what}"
        );
        f.cleanup().await;

        // A replaced checkpoint signature (a valid one, from another key).
        let f = Fixture::new(kind(), 6).await;
        let latest = f.t.ledger.audit().checkpoint().await.unwrap().unwrap();
        let forged = Signer::generate().sign(&latest.signed.checkpoint.canonical());
        f.disable_triggers().await;
        f.sql(&[&format!(
            "UPDATE audit_checkpoints SET signature = '{forged}' WHERE size = {}",
            latest.signed.checkpoint.size
        )])
        .await;
        let (at, what) = failure(&f.verify().await);
        assert_eq!(at, latest.signed.checkpoint.size as i64, "{what}");
        assert!(what.contains("signature"), "{what}");
        f.cleanup().await;
    }
);

/// Recomputes every stored hash from the (changed) events, as an attacker covering their
/// tracks would: a consistent chain that no signed checkpoint vouches for.
async fn rewrite_chain(f: &Fixture) {
    let events = f.t.store.read_log(0, 1_000_000).await.unwrap();
    let mut chain = merkle::CHAIN_START;
    let mut frontier = merkle::Frontier::new();
    let mut buf = Vec::new();
    for e in &events {
        let (leaf, next) = kokuho_ledger::audit::entry::hashes(e, &chain, &mut buf).unwrap();
        let mut done = Vec::new();
        frontier.push(leaf, &mut done);
        chain = next;
        let (l, c, s) = (hex::encode(leaf), hex::encode(chain), hex::encode(done.concat()));
        let sql = if f.pg() {
            format!("UPDATE audit_entries SET leaf_hash = '\\x{l}', chain_hash = '\\x{c}', subtrees = '\\x{s}' WHERE position = {}", e.position)
        } else {
            format!("UPDATE audit_entries SET leaf_hash = x'{l}', chain_hash = x'{c}', subtrees = x'{s}' WHERE position = {}", e.position)
        };
        f.sql(&[&sql]).await;
    }
}

on_both!(
    from_a_trusted_checkpoint_only_what_came_after_is_verified,
    |kind| async move {
        let f = Fixture::new(kind, 4).await;
        let trusted = f.t.ledger.audit().checkpoint().await.unwrap().unwrap().signed;
        let m = trusted.checkpoint.size as i64;
        populate(&f.t.ledger, 10, 4).await;
        f.chain().await;
        let start = || Start::Trusted(trusted.clone());
        let report = verify::verify(&f.t.store, &f.key(), start(), |_| {}).await.unwrap();
        assert!(report.failure.is_none(), "{:?}", report.failure);
        let n = f.t.store.head().await.unwrap();
        assert_eq!(
            report.entries,
            (n - m) as u64,
            "only the entries after the trusted checkpoint"
        );

        // A checkpoint that is not the deployment's is refused.
        let mut forged = trusted.clone();
        forged.checkpoint.size += 1;
        let report = verify::verify(&f.t.store, &f.key(), Start::Trusted(forged), |_| {})
            .await
            .unwrap();
        assert!(failure(&report).1.contains("trusted checkpoint"));

        // A change after the trusted checkpoint fails; the full verification names it too.
        f.disable_triggers().await;
        let p = m + 2;
        let change = if f.pg() {
            format!("UPDATE events SET metadata = replace(metadata::text, 'audit-test', 'audit-tesu')::json WHERE position = {p}")
        } else {
            format!("UPDATE events SET metadata = replace(metadata, 'audit-test', 'audit-tesu') WHERE position = {p}")
        };
        f.sql(&[&change]).await;
        assert_eq!(
            failure(&verify::verify(&f.t.store, &f.key(), start(), |_| {}).await.unwrap()).0,
            p
        );
        assert_eq!(failure(&f.verify().await).0, p);
        f.cleanup().await;
    }
);

on_both!(
    chained_exactly_once_across_crashes_and_two_processes,
    |kind| async move {
        let signer = Arc::new(Signer::generate());
        let db = TestDb::new(kind).await;
        let a = audited_ledger_on(db.share(), true, signer.clone()).await;
        let b = audited_ledger_on(db.share(), true, signer.clone()).await;
        // A batch that fails before its commit, as a process killed there would.
        b.ledger.projections().faults.fail_after_commits(3);
        let writers: Vec<_> = [a.ledger.clone(), b.ledger.clone()]
            .into_iter()
            .enumerate()
            .map(|(w, l)| tokio::spawn(async move { populate(&l, w * 100, 15).await }))
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let head = a.store.head().await.unwrap();
        let started = Instant::now();
        while a
            .ledger
            .audit()
            .checkpoint()
            .await
            .unwrap()
            .is_none_or(|c| (c.signed.checkpoint.size as i64) < head)
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not chained and checkpointed within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let report = verify::verify(
            &a.store,
            &parse_public_key(&signer.public_key()).unwrap(),
            Start::Genesis,
            |_| {},
        )
        .await
        .unwrap();
        assert!(report.failure.is_none(), "{:?}", report.failure);
        assert_eq!(report.entries, head as u64);
        db.cleanup().await;
    }
);

on_both!(an_append_is_chained_at_the_next_wake_up, |kind| async move {
    let signer = Arc::new(Signer::generate());
    let t = audited_ledger_on(TestDb::new(kind).await, true, signer).await;
    populate(&t.ledger, 0, 1).await;
    let last = person(
        &t.ledger,
        "5000",
        json!({"type": "document_collected", "effective_date": "2025-01-01"}),
    )
    .await;
    let started = Instant::now();
    while t.ledger.audit().size().await.unwrap() < last {
        // The chainer is woken by the append; its poll interval (200 ms) bounds the wait for
        // appends of other processes. A generous bound: this is not a speed test.
        assert!(started.elapsed() < Duration::from_secs(2), "event {last} not chained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.db.cleanup().await;
});

on_both!(
    the_export_passes_the_independent_verifier_and_holds_no_my_number,
    |kind| async move {
        let f = Fixture::new(kind, 8).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit.jsonl");
        let latest = f.t.ledger.audit().checkpoint().await.unwrap().unwrap();
        let exported =
            kokuho_ledger::audit::export::export(&f.t.store, &out, "test.kokuho-ledger", &f.signer.public_key())
                .await
                .unwrap();
        let n = f.t.store.head().await.unwrap();
        assert_eq!(exported.entries, n as u64);
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            json!({"format": "kokuho-ledger-audit/1", "origin": "test.kokuho-ledger", "public_key": f.signer.public_key()})
        );
        assert_eq!(lines[1]["entry"]["position"], 1);
        assert_eq!(
            lines.last().unwrap()["checkpoint"]["size"],
            latest.signed.checkpoint.size
        );
        for number in MY_NUMBERS {
            assert!(!text.contains(number), "My Number {number} in the export");
        }
        assert!(
            text.contains("my_number_commitment"),
            "registrations carry the commitment instead"
        );
        // The log itself neither.
        for e in f.t.store.read_log(0, 100_000).await.unwrap() {
            let entry = kokuho_ledger::audit::entry::entry(&e).to_string();
            for number in MY_NUMBERS {
                assert!(!entry.contains(number), "My Number in entry {}", e.position);
            }
        }

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_audit.py");
        let run = |file: &std::path::Path| {
            std::process::Command::new("python3")
                .arg(script)
                .arg(file)
                .arg("--public-key")
                .arg(f.signer.public_key())
                .output()
                .expect("python3 runs the independent verifier")
        };
        let ok = run(&out);
        let stdout = String::from_utf8_lossy(&ok.stdout);
        assert!(ok.status.success(), "{stdout}{}", String::from_utf8_lossy(&ok.stderr));
        assert!(stdout.contains(&format!("ok: {n} entries")), "{stdout}");

        // The same script catches a changed entry, naming its position.
        let tampered = dir.path().join("tampered.jsonl");
        let mut changed: Vec<String> = text.lines().map(str::to_owned).collect();
        // Line i holds position i; change the second move-in.
        let i = (1..changed.len())
            .filter(|i| changed[*i].contains("\"type\":\"moved_in\""))
            .nth(1)
            .unwrap();
        changed[i] = changed[i].replacen("2024-04-01", "2024-04-02", 1);
        std::fs::write(&tampered, changed.join("\n") + "\n").unwrap();
        let bad = run(&tampered);
        assert_eq!(bad.status.code(), Some(1));
        let said = String::from_utf8_lossy(&bad.stdout);
        assert!(said.contains(&format!("FAILED at position {i}:")), "{said}");
        f.cleanup().await;
    }
);

#[test]
fn the_independent_verifier_accepts_the_documented_example_and_nothing_else() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_audit.py");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audit-example.jsonl");
    let key = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
    let run = |file: &str, key: &str| {
        std::process::Command::new("python3")
            .args([script, file, "--public-key", key])
            .output()
            .expect("python3 runs the independent verifier")
    };
    let ok = run(example, key);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "ok: 3 entries, 1 checkpoints, 2 streams"
    );
    // Another key, a changed signature, a changed root: each refused.
    let other = Signer::from_seed([8; 32]).public_key();
    assert_eq!(run(example, &other).status.code(), Some(1));
    let text = std::fs::read_to_string(example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("\"signature\":\"M", "\"signature\":\"N"),
        ("\"root\":\"c9b5", "\"root\":\"c9b6"),
    ] {
        let changed = dir.path().join("changed.jsonl");
        std::fs::write(&changed, text.replacen(from, to, 1)).unwrap();
        let out = run(changed.to_str().unwrap(), key);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{from}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED at position 3"));
    }
}

on_both!(verify_and_export_pass_while_eight_writers_append, |kind| async move {
    let signer = Arc::new(Signer::generate());
    let t = audited_ledger_on(TestDb::new(kind).await, true, signer.clone()).await;
    populate(&t.ledger, 0, 20).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (l, stop) = (t.ledger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("{}{:05}", 9 - w, i);
                    person(
                        &l,
                        &id,
                        json!({"type": "registered", "effective_date": "2020-01-01", "name": "並行 次郎",
                        "name_kana": "ヘイコウ　ジロウ", "birth_date": "1980-01-01", "sex": "1"}),
                    )
                    .await;
                    person(
                        &l,
                        &id,
                        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad",
                        "household_id": format!("{}", 900 + w * 1000 + i / 2)}),
                    )
                    .await;
                    i += 1;
                }
                i
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let key = parse_public_key(&signer.public_key()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_audit.py");
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = verify::verify(&t.store, &key, Start::Genesis, |_| {}).await.unwrap();
        assert!(report.failure.is_none(), "round {round}: {:?}", report.failure);
        let out = dir.path().join(format!("audit-{round}.jsonl"));
        kokuho_ledger::audit::export::export(&t.store, &out, "test.kokuho-ledger", &signer.public_key())
            .await
            .unwrap();
        let checked = std::process::Command::new("python3")
            .arg(script)
            .arg(&out)
            .arg("--public-key")
            .arg(signer.public_key())
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 8, "the writers kept appending ({written})");
    t.db.cleanup().await;
});
