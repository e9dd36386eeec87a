//! The access log written by several processes at once: each recorder (one per process)
//! chains from the head it last wrote, and must notice when another process has moved it.
//! Two recorders on separate connection pools interleave batches; the log must stay gapless,
//! every record chained, and every acknowledged record present with the id it was given.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use common::TestDb;
use kokuho_ledger::access::log;
use kokuho_ledger::access::recorder::Recorder;
use kokuho_ledger::access::{AccessKind, AccessRecord};

fn record(writer: usize, n: usize) -> AccessRecord {
    let mut r = AccessRecord::new(
        common::test_now(),
        &format!("clerk{writer}"),
        AccessKind::Inquiry,
        "timeline",
    );
    r.persons = vec![format!("{}", 1000 + n % 7)];
    r.request_id = format!("w{writer}-{n}");
    r.outcome = 200;
    r
}

on_both!(two_processes_keep_one_gapless_chain, |kind| async move {
    let db = TestDb::new(kind).await;
    // Separate pools: as separate processes would hold.
    let (a, b) = (db.store().await, db.store().await);
    let (ra, _ta) = Recorder::spawn(a.db().clone());
    let (rb, _tb) = Recorder::spawn(b.db().clone());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let recorder = if w % 2 == 0 { ra.clone() } else { rb.clone() };
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..60 {
                ids.push((format!("w{w}-{n}"), recorder.record(record(w, n)).await.unwrap()));
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let verified = log::verify(a.db()).await.unwrap();
    assert_eq!((verified.records, verified.last_id), (480, 480));
    let filter = log::Filter {
        limit: 1000,
        ..Default::default()
    };
    let stored = log::list(a.db(), &filter).await.unwrap();
    for (request_id, id) in &acknowledged {
        let r = stored
            .iter()
            .find(|r| r.id == *id)
            .expect("an acknowledged record is stored");
        assert_eq!(&r.request_id, request_id, "record {id}");
    }
    let mut ids: Vec<i64> = acknowledged.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=480).collect::<Vec<_>>());
    db.cleanup().await;
});

// Two ledgers ("processes") on one database answer writes and reads at once. On PostgreSQL a
// write's record rides in its event's statement from the access head its process last wrote,
// while the other process's records keep moving that head: some ride, some fall back to the
// recorder. Whatever the interleaving: one record per answered request, with the outcome
// answered; the log gapless and chained; every write's event in the log.
on_both!(
    two_processes_writing_and_reading_keep_one_record_per_request,
    |kind| async move {
        use common::api::Api;
        use common::{ledger_on_with, test_settings};
        use serde_json::json;
        use std::sync::Arc;

        let a = Api::with(ledger_on_with(TestDb::new(kind).await, true, test_settings()).await).await;
        let b = Api::with(ledger_on_with(a.t.db.share(), true, test_settings()).await).await;
        for p in 1..=8 {
            let body = json!({"type": "registered", "effective_date": "2020-01-01", "name": "試験 太郎",
            "name_kana": "シケン　タロウ", "birth_date": "1980-06-15", "sex": "1"});
            assert_eq!(a.event(&p.to_string(), body).await.status, 201);
        }
        let (a, b) = (Arc::new(a), Arc::new(b));
        let mut tasks = Vec::new();
        for w in 0..8usize {
            let api = if w % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0..20usize {
                    // Two writers share each person: some of their commands conflict and run again.
                    let person = (w / 2 + n % 2) % 8 + 1;
                    let id = format!("w{w}-{n}");
                    let day =
                        chrono::NaiveDate::from_ymd_opt(2021, 1, 1).unwrap() + chrono::Days::new((w * 40 + n) as u64);
                    let body = json!({"type": "document_collected", "effective_date": day.to_string()}).to_string();
                    let r = api
                        .post(&format!("/v1/persons/{person}/events"), &body, &[("x-request-id", &id)])
                        .await;
                    assert_eq!(r.status, 201, "{}", r.body);
                    answered.push((id, 201u16, Some((person, r.body["position"].as_i64().unwrap()))));
                    let id = format!("r{w}-{n}");
                    let r = api
                        .get_with(&format!("/v1/persons/{person}/timeline"), &[("x-request-id", &id)])
                        .await;
                    assert_eq!(r.status, 200, "{}", r.body);
                    answered.push((id, 200, None));
                }
                answered
            }));
        }
        let mut answered = Vec::new();
        for t in tasks {
            answered.extend(t.await.unwrap());
        }

        let verified = log::verify(a.t.store.db()).await.unwrap();
        let stored = a.access_records().await;
        assert_eq!(verified.last_id, stored.len() as i64, "the chain verifies to its end");
        assert!(
            stored.iter().enumerate().all(|(i, r)| r.id == i as i64 + 1),
            "gapless ids"
        );
        for (id, outcome, write) in &answered {
            let mine: Vec<_> = stored.iter().filter(|r| &r.request_id == id).collect();
            assert_eq!(mine.len(), 1, "one record of {id}");
            assert_eq!(mine[0].outcome, *outcome, "{id}");
            if let Some((person, position)) = write {
                assert_eq!(mine[0].persons, [person.to_string()], "{id}");
                let events = a.t.store.read_range(*position, *position).await.unwrap();
                assert_eq!(events.len(), 1, "{id}: its event at {position}");
                assert_eq!(events[0].aggregate_id, person.to_string(), "{id}");
            }
        }
        if let Some(pool) = a.t.store.pg_pool() {
            let rode: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT r.id) FROM access_records r JOIN events e ON r.xmin::text = e.xmin::text \
             WHERE r.request_id LIKE 'w%'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            // Typically 70–130 of the 160 writes' records rode, the rest fell back.
            assert!(rode > 0, "on PostgreSQL writes' records ride with their events");
        }
        let b = Arc::into_inner(b).unwrap();
        drop(b);
        Arc::into_inner(a).unwrap().t.db.cleanup().await;
    }
);
