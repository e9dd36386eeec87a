//! The event log on PostgreSQL and SQLite alike: atomicity, optimistic concurrency, gapless
//! global positions, append-only enforcement, as-of reads, cqrs-es compatibility.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use std::collections::HashMap;

use common::{Kind, TestDb};
use kokuho_ledger::store::{AppendRequest, NewEvent, Rejection, Store};
use serde_json::json;

fn event(ty: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: ty.into(),
        event_version: "1".into(),
        payload,
        metadata: json!({"actor": "test"}),
    }
}

fn request(stream: &str, expected: i64, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        aggregate_type: "person".into(),
        aggregate_id: stream.into(),
        expected_sequence: expected,
        events,
        also: vec![],
        vault: vec![],
        idempotency: None,
        cards: vec![],
        rider: None,
    }
}

/// `n` new streams `<prefix>0`, `<prefix>1`, … of one event each.
fn registrations(prefix: &str, n: usize) -> Vec<AppendRequest> {
    (0..n)
        .map(|i| {
            request(
                &format!("{prefix}{i}"),
                0,
                vec![event("registered", json!({"type": "registered"}))],
            )
        })
        .collect()
}

fn card(household: &str, number: &str) -> AppendRequest {
    AppendRequest {
        aggregate_type: "household".into(),
        aggregate_id: household.into(),
        expected_sequence: 0,
        events: vec![
            event(
                "household_head_changed",
                json!({"type": "household_head_changed", "person_id": "1"}),
            ),
            event(
                "card_number_assigned",
                json!({"type": "card_number_assigned", "symbol": "1", "number": number}),
            ),
        ],
        also: vec![],
        vault: vec![],
        idempotency: None,
        cards: vec![],
        rider: None,
    }
}

/// Whether every request of the batch was written.
async fn all_written(store: &Store, requests: &[AppendRequest]) -> bool {
    store.append_batch(requests).await.unwrap().iter().all(Result::is_ok)
}

async fn all_events(store: &Store) -> Vec<kokuho_ledger::store::StoredEvent> {
    store.read_log(0, 1_000_000).await.unwrap()
}

on_both!(atomic_multi_event_append, |kind| async move {
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    let three = (1..=3).map(|i| event("document_collected", json!({"n": i}))).collect();
    let out = store.append_batch(&[request("7", 0, three)]).await.unwrap();
    let a = out[0].clone().unwrap();
    assert_eq!(
        (
            a.events.first().unwrap().sequence,
            a.events.last().unwrap().sequence,
            a.first_position(),
            a.last_position()
        ),
        (1, 3, 1, 3)
    );
    let stored = all_events(&store).await;
    assert_eq!(stored.len(), 3);
    assert!(
        stored.iter().all(|e| e.recorded_at == a.recorded_at),
        "one commit, one instant"
    );

    // A request whose second event breaks a uniqueness rule writes none of its events, and a
    // batch around it is unaffected.
    assert!(store.append_batch(&[card("10", "000001")]).await.unwrap()[0].is_ok());
    let head = store.head().await.unwrap();
    let out = store
        .append_batch(&[
            request("8", 0, vec![event("x", json!({}))]),
            card("11", "000001"),
            request("9", 0, vec![event("y", json!({}))]),
        ])
        .await
        .unwrap();
    assert!(out[0].is_ok() && out[2].is_ok());
    assert!(matches!(out[1], Err(Rejection::Unique(_))), "{:?}", out[1]);
    assert!(
        store.load_stream("household", "11", None).await.unwrap().is_empty(),
        "nothing of the refused request"
    );
    assert_eq!(store.head().await.unwrap(), head + 2);
    let positions: Vec<i64> = all_events(&store).await.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=head + 2).collect::<Vec<_>>(),
        "no gap left by the refused request"
    );
    db.cleanup().await;
});

on_both!(concurrent_appends_to_one_stream_exactly_one_wins, |kind| async move {
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    for round in 0..5i64 {
        let mut tasks = Vec::new();
        for w in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append_batch(&[request("42", round, vec![event("e", json!({"writer": w}))])])
                    .await
                    .unwrap()
                    .pop()
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(a) => {
                    wins += 1;
                    assert_eq!(a.events.last().unwrap().sequence, round + 1);
                }
                Err(Rejection::Conflict { expected, actual }) => assert_eq!((expected, actual), (round, round + 1)),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(wins, 1, "exactly one writer wins sequence {}", round + 1);
    }
    let seqs: Vec<i64> = store
        .load_stream("person", "42", None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    db.cleanup().await;
});

on_both!(global_positions_gapless_under_8_concurrent_writers, |kind| async move {
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40i64 {
                let n = 1 + (i % 3) as usize;
                let events = (0..n).map(|k| event("e", json!({"w": w, "i": i, "k": k}))).collect();
                let out = store
                    .append_batch(&[request(&format!("{}", 1000 + w), seq_before(&store, w).await, events)])
                    .await
                    .unwrap();
                assert!(out[0].is_ok(), "{:?}", out[0]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = all_events(&store).await;
    let n = events.len() as i64;
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(store.head().await.unwrap(), n);
    assert!(
        events.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at),
        "recorded_at follows position"
    );
    let mut per_stream: HashMap<String, Vec<i64>> = HashMap::new();
    for e in &events {
        per_stream.entry(e.aggregate_id.clone()).or_default().push(e.sequence);
    }
    assert_eq!(per_stream.len(), 8);
    for seqs in per_stream.values() {
        assert_eq!(*seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    }
    db.cleanup().await;
});

async fn seq_before(store: &Store, w: i32) -> i64 {
    store
        .load_stream("person", &format!("{}", 1000 + w), None)
        .await
        .unwrap()
        .len() as i64
}

on_both!(update_and_delete_are_refused, |kind| async move {
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    store
        .append_batch(&[request("5", 0, vec![event("e", json!({"a": 1}))])])
        .await
        .unwrap();
    let before = all_events(&store).await;
    let statements = [
        "UPDATE events SET event_type = 'tampered'",
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
    ];
    for sql in statements {
        let res = match (store.pg_pool(), store.sqlite_pool()) {
            (Some(p), _) => sqlx::query(sql).execute(p).await.map(drop),
            (_, Some(p)) => sqlx::query(sql).execute(p).await.map(drop),
            _ => unreachable!(),
        };
        let err = res.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if let Some(p) = store.pg_pool() {
        let err = sqlx::query("TRUNCATE events").execute(p).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(all_events(&store).await, before);
    db.cleanup().await;
});

on_both!(as_of_reads_select_what_was_recorded, |kind| async move {
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    let a = store
        .append_batch(&[request("3", 0, vec![event("e", json!({"n": 1}))])])
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let b = store
        .append_batch(&[request("3", 1, vec![event("e", json!({"n": 2}))])])
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    assert!(b.recorded_at > a.recorded_at);
    assert_eq!(
        store
            .load_stream("person", "3", Some(a.recorded_at))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .load_stream("person", "3", Some(b.recorded_at))
            .await
            .unwrap()
            .len(),
        2
    );
    let before = a.recorded_at - chrono::Duration::microseconds(1);
    assert!(store.load_stream("person", "3", Some(before)).await.unwrap().is_empty());
    db.cleanup().await;
});

on_both!(cqrs_es_framework_runs_on_the_log, |kind| async move {
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::CqrsFramework;
    use kokuho_ledger::domain::{Person, PersonEvent, PersonFact, PersonServices, RecordPersonEvent};

    let db = TestDb::new(kind).await;
    let store = db.store().await;
    let event_store = PersistedEventStore::<kokuho_testing::cqrs_repo::LogRepository, Person>::new_event_store(
        kokuho_testing::cqrs_repo::LogRepository(store.clone()),
    );
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let cqrs = CqrsFramework::new(event_store, vec![], PersonServices { today });
    let reg: PersonEvent = serde_json::from_value(json!({"type": "registered", "effective_date": "2020-01-01",
        "reported_date": "2020-01-01", "name": "山田 太郎", "name_kana": "ヤマダ　タロウ", "birth_date": "1980-06-15",
        "sex": "1", "sex_on_back": true}))
    .unwrap();
    cqrs.execute(
        "77",
        RecordPersonEvent {
            event: reg.clone(),
            system: false,
        },
    )
    .await
    .unwrap();
    let died = PersonEvent {
        fact: PersonFact::Died,
        ..reg.clone()
    };
    cqrs.execute(
        "77",
        RecordPersonEvent {
            event: died,
            system: false,
        },
    )
    .await
    .unwrap();
    let again = cqrs
        .execute(
            "77",
            RecordPersonEvent {
                event: reg,
                system: false,
            },
        )
        .await;
    assert!(again.is_err(), "the aggregate's rules apply");
    let stored = store.load_stream("person", "77", None).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| (e.sequence, e.position)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
    assert_eq!(stored[1].event_type, "died");
    db.cleanup().await;
});

#[tokio::test]
async fn postgres_es_repository_reads_and_writes_the_same_table() {
    use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
    use kokuho_ledger::domain::Person;
    use postgres_es::PostgresEventRepository;

    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    store
        .append_batch(&[request("9", 0, vec![event("died", json!({"type": "died"}))])])
        .await
        .unwrap();
    let repo = PostgresEventRepository::new(store.pg_pool().unwrap().clone());
    let theirs = repo.get_events::<Person>("9").await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].event_type, "died");
    // postgres-es's own insert gets the next position from the trigger, under the same lock.
    let e = SerializedEvent::new(
        "9".into(),
        2,
        "person".into(),
        "document_collected".into(),
        "1".into(),
        json!({}),
        json!({}),
    );
    repo.persist::<Person>(&[e], None).await.unwrap();
    let ours = store.load_stream("person", "9", None).await.unwrap();
    assert_eq!(ours.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(store.head().await.unwrap(), 2);
    assert!(ours[1].recorded_at >= ours[0].recorded_at);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_es_repository_reads_and_writes_the_same_table() {
    use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
    use kokuho_ledger::domain::Person;
    use sqlite_es::SqliteEventRepository;

    let db = TestDb::new(Kind::Sqlite).await;
    let store = db.store().await;
    store
        .append_batch(&[request("9", 0, vec![event("died", json!({"type": "died"}))])])
        .await
        .unwrap();
    let repo = SqliteEventRepository::new(store.sqlite_pool().unwrap().clone());
    assert_eq!(repo.get_events::<Person>("9").await.unwrap().len(), 1);
    let e = SerializedEvent::new(
        "9".into(),
        2,
        "person".into(),
        "document_collected".into(),
        "1".into(),
        json!({}),
        json!({}),
    );
    repo.persist::<Person>(&[e], None).await.unwrap();
    let ours = store.load_stream("person", "9", None).await.unwrap();
    assert_eq!(ours.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(store.head().await.unwrap(), 2);
}

on_both!(
    an_expectation_beyond_the_stream_is_a_conflict_not_a_gap,
    |kind| async move {
        let db = TestDb::new(kind).await;
        let store = db.store().await;
        let two = vec![event("e", json!({"n": 1})), event("e", json!({"n": 2}))];
        store.append_batch(&[request("12", 0, two)]).await.unwrap();
        for expected in [1, 5] {
            let out = store
                .append_batch(&[request("12", expected, vec![event("e", json!({}))])])
                .await
                .unwrap();
            assert_eq!(out[0], Err(Rejection::Conflict { expected, actual: 2 }));
        }
        // In one batch, a stale request does not hold back the others.
        let out = store
            .append_batch(&[
                request("12", 2, vec![event("e", json!({}))]),
                request("13", 0, vec![event("e", json!({}))]),
                request("12", 2, vec![event("e", json!({}))]),
            ])
            .await
            .unwrap();
        assert!(out[0].is_ok() && out[1].is_ok());
        assert_eq!(out[2], Err(Rejection::Conflict { expected: 2, actual: 3 }));
        let seqs: Vec<i64> = store
            .load_stream("person", "12", None)
            .await
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(store.head().await.unwrap(), 4);
        db.cleanup().await;
    }
);

on_both!(a_used_idempotency_key_returns_the_first_record, |kind| async move {
    use kokuho_ledger::store::IdempotencyClaim;
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    store
        .append_batch(&[request("20", 0, vec![event("e", json!({}))])])
        .await
        .unwrap();
    let keyed = |stream: &str, expected: i64| AppendRequest {
        idempotency: Some(IdempotencyClaim {
            key: "k".into(),
            fingerprint: "f".into(),
        }),
        ..request(stream, expected, vec![event("e", json!({"keyed": true}))])
    };
    let first = store
        .append_batch(&[keyed("21", 0)])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!((first.first_position(), first.events[0].sequence), (2, 1));
    // As a second process would send it: the key is taken, the first answer comes back.
    let again = store
        .append_batch(&[keyed("21", 1), request("22", 0, vec![event("e", json!({}))])])
        .await
        .unwrap();
    match &again[0] {
        Err(Rejection::KeyUsed(rec)) => {
            assert_eq!(rec.fingerprint, "f");
            assert_eq!((rec.first_position, rec.last_position), (2, 2));
        }
        other => panic!("expected KeyUsed, got {other:?}"),
    }
    assert_eq!(
        again[1].as_ref().unwrap().first_position(),
        3,
        "the rest of the batch went in"
    );
    let record = store.idempotency_record("k").await.unwrap().unwrap();
    assert_eq!((record.first_position, record.last_position), (2, 2));
    assert_eq!(store.head().await.unwrap(), 3);
    db.cleanup().await;
});

on_both!(
    a_key_claimed_twice_in_one_batch_answers_the_first_request,
    |kind| async move {
        use kokuho_ledger::store::IdempotencyClaim;
        let db = TestDb::new(kind).await;
        let store = db.store().await;
        let keyed = |stream: &str, key: &str| AppendRequest {
            idempotency: Some(IdempotencyClaim {
                key: key.into(),
                fingerprint: format!("f-{key}"),
            }),
            ..request(stream, 0, vec![event("e", json!({}))])
        };
        // Many keys in one batch (as an import sends them), one of them twice.
        let mut batch: Vec<AppendRequest> = (0..50).map(|n| keyed(&format!("s{n}"), &format!("k{n}"))).collect();
        batch.push(keyed("other", "k7"));
        let out = store.append_batch(&batch).await.unwrap();
        assert!(out[..50].iter().all(|o| o.is_ok()));
        match &out[50] {
            Err(Rejection::KeyUsed(rec)) => {
                assert_eq!(rec.fingerprint, "f-k7");
                assert_eq!((rec.first_position, rec.last_position), (8, 8));
            }
            other => panic!("expected KeyUsed, got {other:?}"),
        }
        assert_eq!(store.head().await.unwrap(), 50, "the repeated claim wrote nothing");
        db.cleanup().await;
    }
);

on_both!(bulk_inserts_keep_every_value, |kind| async move {
    use chrono::TimeZone as _;
    use kokuho_ledger::store::sql::{Dialect, Ty, Val};
    let db = TestDb::new(kind).await;
    let store = db.store().await;
    let ddl = match store.db().dialect() {
        Dialect::Postgres => "CREATE TABLE bulk (n bigint, t text, b boolean, y bytea, at timestamptz, j json)",
        Dialect::Sqlite => "CREATE TABLE bulk (n INTEGER, t TEXT, b INTEGER, y BLOB, at TEXT, j TEXT)",
    };
    store.db().execute(ddl, &[]).await.unwrap();
    let cols = [
        ("n", Ty::Int),
        ("t", Ty::Text),
        ("b", Ty::Bool),
        ("y", Ty::Bytes),
        ("at", Ty::Instant),
        ("j", Ty::Json),
    ];
    // Text that COPY's text format must escape, a literal `\N` that must not come back as
    // NULL, and NULLs of every type.
    let texts = [
        "a\\b",
        "tab\there",
        "line\nbreak\r",
        "\\N",
        "",
        "国民健康保険 ｺｸﾎ",
        "\\\\x00",
    ];
    let at = chrono::Utc.with_ymd_and_hms(2026, 12, 4, 9, 30, 15).unwrap() + chrono::Duration::microseconds(123_456);
    let row = |i: usize| {
        let null = i % 9 == 8;
        vec![
            Val::Int((!null).then_some(i as i64 - 600)),
            Val::Text((!null).then(|| format!("{}{i}", texts[i % texts.len()]))),
            Val::Bool(i % 2 == 0),
            Val::Bytes((!null).then(|| vec![0, b'\\', b'\t', 255, i as u8])),
            Val::Instant((!null).then_some(at + chrono::Duration::seconds(i as i64))),
            Val::Json((!null).then(|| format!(r#"{{"k":"{}"}}"#, i))),
        ]
    };
    // Few rows take the one-statement insert, many the bulk path: both must store the same.
    for (from, n) in [(0, 3), (3, 1200)] {
        let mut tx = store.db().begin().await.unwrap();
        tx.insert("bulk", &cols, (from..from + n).map(row).collect())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let tys: Vec<Ty> = cols.iter().map(|(_, t)| *t).collect();
    let sql = match store.db().dialect() {
        Dialect::Postgres => "SELECT n, t, b, y, at, j::text FROM bulk",
        Dialect::Sqlite => "SELECT n, t, b, y, at, j FROM bulk",
    };
    let stored = store.db().fetch(sql, &[], &tys).await.unwrap();
    assert_eq!(stored.len(), 1203);
    let mut expected: Vec<Vec<Val>> = (0..1203).map(row).collect();
    expected.sort();
    let mut got = stored;
    got.sort();
    assert_eq!(got, expected);
    db.cleanup().await;
});

/// The projections read a batch's streams (`Store::load_streams_before`) one index lookup per
/// stream, with statistics and without them (a fresh deployment or an import before
/// autovacuum's first ANALYZE): never a scan of every event of the type, whose cost grows with
/// the log on every batch.
#[tokio::test]
async fn a_batch_of_streams_is_read_by_index_with_or_without_statistics_postgres() {
    use kokuho_ledger::store::sql::{Dialect, Ty, Val};
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    // No ANALYZE behind the test's back.
    store
        .db()
        .execute("ALTER TABLE events SET (autovacuum_enabled = false)", &[])
        .await
        .unwrap();
    for chunk in registrations("p", 3000).chunks(500) {
        store.append_atomic(chunk).await.unwrap().unwrap();
    }
    let ids: Vec<String> = (0..60).map(|i| format!("p{}", i * 37)).collect();
    let sql = kokuho_ledger::store::streams_before_sql(Dialect::Postgres);
    for statistics in ["none", "analyzed"] {
        if statistics == "analyzed" {
            store.db().execute("ANALYZE events", &[]).await.unwrap();
        }
        let args = [
            Val::text("person"),
            Val::text(serde_json::to_string(&ids).unwrap()),
            Val::int(i64::MAX),
        ];
        let plan: Vec<String> = store
            .db()
            .fetch(&format!("EXPLAIN {sql}"), &args, &[Ty::Text])
            .await
            .unwrap()
            .into_iter()
            .map(|row| match &row[0] {
                Val::Text(Some(line)) => line.clone(),
                other => panic!("a plan line: {other:?}"),
            })
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using events_pkey") && plan.contains("aggregate_id ="),
            "statistics {statistics}: not an index lookup per stream:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan on events") && !plan.contains("Bitmap Heap Scan on events"),
            "statistics {statistics}: the events of the type are scanned:\n{plan}"
        );
        let events = store.load_streams_before("person", &ids, i64::MAX).await.unwrap();
        let read: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(
            read, expected,
            "statistics {statistics}: one event per stream, by stream"
        );
    }
    db.cleanup().await;
}

/// A pooled connection that the server ended while it sat idle (a restart, an administrator's
/// `pg_terminate_backend`) is found dead before it is handed out, and replaced: the next
/// queries get live connections, not an error. (Connections in steady use are not pinged
/// before each query; one that breaks in use fails its query, answered as 503.)
#[tokio::test]
async fn a_connection_ended_while_idle_is_replaced_before_use_postgres() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    let writes = registrations("idle", 4);
    // Several connections in each pool at once (the batch writers' and the others').
    let appended = futures::future::join_all(writes.iter().map(|w| store.append_atomic(std::slice::from_ref(w)))).await;
    assert!(appended.into_iter().all(|a| matches!(a, Ok(Ok(_)))));
    let ids: Vec<String> = (0..4).map(|i| format!("idle{i}")).collect();
    let read = futures::future::join_all(ids.iter().map(|id| store.load_stream("person", id, None))).await;
    assert!(read.into_iter().all(|r| r.expect("a stream").len() == 1));
    let ended = db.end_connections().await;
    assert!(ended >= 2, "the pools' connections were ended ({ended})");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for _ in 0..10 {
        assert_eq!(store.head().await.expect("a live connection"), 4);
    }
    let more = store
        .append_batch(&registrations("after", 1))
        .await
        .expect("a live batch connection");
    assert!(matches!(&more[..], [Ok(_)]));
    db.cleanup().await;
}

/// Single statements (most reads) run on connections that are reused without sqlx's round
/// trip on release. So a connection goes back only when its statement ran to the end or the
/// server refused it: one whose caller went away mid-statement is closed. The next statement
/// gets its own answer, never another statement's rows or error. At most eight are open at
/// once.
#[tokio::test]
async fn single_statements_reuse_only_connections_whose_statement_finished_postgres() {
    use kokuho_ledger::store::sql::{Db, Ty};
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    let Db::Postgres(pg) = store.db() else { unreachable!() };
    let backend = || async {
        store
            .db()
            .fetch_int("SELECT pg_backend_pid()::bigint", &[])
            .await
            .unwrap()
    };
    let first = backend().await;
    for _ in 0..10 {
        assert_eq!(backend().await, first, "statements in a row share one connection");
    }
    assert_eq!(pg.singles.idle(), 1);

    // The caller goes away mid-statement: its connection is not handed out again.
    let slow = store.db().fetch("SELECT 7::bigint FROM pg_sleep(3)", &[], &[Ty::Int]);
    assert!(tokio::time::timeout(std::time::Duration::from_millis(200), slow)
        .await
        .is_err());
    assert_eq!(pg.singles.idle(), 0, "the abandoned connection was dropped");
    assert_eq!(store.db().fetch_int("SELECT (40 + 2)::bigint", &[]).await.unwrap(), 42);
    let second = backend().await;
    assert_ne!(second, first);

    // The server refuses a statement: the error is that statement's, and the connection
    // answers the next one with the next one's rows (what was left of the refusal is read
    // first). A statement refused after some of its rows were sent, likewise.
    let failed = store.db().fetch("SELECT 1 / 0", &[], &[Ty::Int]).await;
    assert!(format!("{failed:?}").contains("division by zero"), "{failed:?}");
    assert_eq!(pg.singles.idle(), 1, "a refused statement's connection is kept");
    assert_eq!(store.db().fetch_int("SELECT 5::bigint", &[]).await.unwrap(), 5);
    let midway = store
        .db()
        .fetch(
            "SELECT 10 / (3 - n)::bigint FROM generate_series(1, 5) n",
            &[],
            &[Ty::Int],
        )
        .await;
    assert!(format!("{midway:?}").contains("division by zero"), "{midway:?}");
    assert_eq!(store.db().fetch_int("SELECT 6::bigint", &[]).await.unwrap(), 6);
    assert_eq!(backend().await, second, "one connection throughout");

    // Many at once: never more than eight connections.
    let pids = futures::future::join_all((0..40).map(|_| {
        store
            .db()
            .fetch_int("SELECT pg_backend_pid()::bigint FROM pg_sleep(0.05)", &[])
    }))
    .await;
    let distinct: std::collections::BTreeSet<i64> = pids.into_iter().map(Result::unwrap).collect();
    assert!((2..=8).contains(&distinct.len()), "{} connections", distinct.len());
    assert!(pg.singles.idle() <= 8);
    db.cleanup().await;
}

/// The batch statements (the event log's appends, the access log's records) are planned once
/// per connection: re-planning them at each execution cost twice their run. Every other
/// statement keeps PostgreSQL's own choice of plan.
#[tokio::test]
async fn batch_statements_are_planned_once_and_others_as_postgresql_chooses_postgres() {
    use kokuho_ledger::store::sql::Ty;
    use sqlx::Row as _;
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    for (i, w) in registrations("plan", 12).iter().enumerate() {
        let out = store.append_batch(std::slice::from_ref(w)).await.unwrap();
        assert!(
            matches!(&out[..], [Ok(a)] if a.first_position() == i as i64 + 1),
            "{out:?}"
        );
    }
    let kokuho_ledger::store::sql::Db::Postgres(pg) = store.db() else {
        unreachable!()
    };
    // Every connection the batch statements opened (idle again as soon as its append was
    // answered), leased at once so that each is a different one.
    let opened = pg.batches.idle();
    assert!(opened >= 1, "the appends' connections are idle again");
    let mut held = Vec::new();
    for _ in 0..opened {
        held.push(pg.batches.lease().await.unwrap());
    }
    let (mut generic, mut custom) = (0i64, 0i64);
    for lease in &mut held {
        let plans = sqlx::query(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'WITH guard AS%'",
        )
        .fetch_all(lease.conn())
        .await
        .unwrap();
        for r in plans {
            generic += r.get::<i64, _>(0);
            custom += r.get::<i64, _>(1);
        }
    }
    assert_eq!(
        (generic, custom),
        (12, 0),
        "the append statement's plans (generic, custom)"
    );
    let mode = |r: sqlx::postgres::PgRow| r.get::<String, _>(0);
    let shown = sqlx::query("SHOW plan_cache_mode").fetch_one(&pg.pool).await.unwrap();
    assert_eq!(mode(shown), "auto", "the transactions' connections");
    let single = store
        .db()
        .fetch("SHOW plan_cache_mode", &[], &[Ty::Text])
        .await
        .unwrap();
    assert_eq!(
        single[0][0].as_text(),
        Some("auto"),
        "the other single statements' connections"
    );
    db.cleanup().await;
}

on_both!(
    the_log_followed_from_memory_is_what_the_database_holds,
    |kind| async move {
        let db = TestDb::new(kind).await;
        let store = db.store().await;
        // Another process writing the same log.
        let other = db.store().await;
        let awkward = json!({
            "type": "registered",
            "name": "山田 花子\u{3000}ヤマダ",
            "note": "tab\tquote\"backslash\\bell\u{7}",
            "nested": {"b": [1, 2.5, null, true], "a": "z"}
        });

        // One batch of new streams (PostgreSQL's one-statement path), with a multi-event request.
        let mut batch = registrations("m", 5);
        batch[0].events.push(event("registered", awkward.clone()));
        batch.push(card("h1", "000001"));
        assert!(all_written(&store, &batch).await);
        assert_eq!(store.followed_from_memory(), Some((1, 8)));

        // A batch whose second request conflicts with its first: written request by request.
        let out = store
            .append_batch(&[
                request("c", 0, vec![event("x", awkward.clone())]),
                request("c", 0, vec![event("y", json!({}))]),
            ])
            .await
            .unwrap();
        assert!(out[0].is_ok() && matches!(out[1], Err(Rejection::Conflict { .. })));
        assert_eq!(store.followed_from_memory(), Some((1, 9)));

        // All or nothing: a refused batch leaves the memory as it was.
        let refused = store
            .append_atomic(&[request("c", 0, vec![event("z", json!({}))])])
            .await
            .unwrap();
        assert!(refused.is_err());
        assert_eq!(store.followed_from_memory(), Some((1, 9)));
        let all = registrations("a", 3);
        assert!(store.append_atomic(&all).await.unwrap().is_ok());
        assert_eq!(store.followed_from_memory(), Some((1, 12)));

        // Another process writes 13 and 14: this one's next events start the memory afresh.
        assert!(all_written(&other, &registrations("o", 2)).await);
        assert_eq!(store.followed_from_memory(), Some((1, 12)));
        assert!(all_written(&store, &registrations("n", 2)).await);
        assert_eq!(store.followed_from_memory(), Some((15, 16)));
        assert_eq!(store.head().await.unwrap(), 16);

        // From every position, what is followed is what the database holds, field for field.
        let stored = all_events(&store).await;
        for after in 0..16 {
            let followed = store.follow_log(after, 3).await.unwrap();
            assert!(!followed.is_empty(), "after {after}: nothing followed");
            let from_database = &stored[after as usize..];
            assert_eq!(
                &followed[..],
                &from_database[..followed.len()],
                "after {after}: memory and database differ"
            );
        }
        assert!(store.follow_log(16, 3).await.unwrap().is_empty());
        db.cleanup().await;
    }
);
