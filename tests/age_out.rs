//! The 75th-birthday job: records `late_elderly_age_reached` once for each person insured up to
//! the birthday, skips the others, and is idempotent (PostgreSQL and SQLite).

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use chrono::NaiveDate;
use common::ledger;
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::error::LedgerError;
use kokuho_ledger::jobs::age_out::{self, AgeOutSummary};
use kokuho_ledger::request::RequestContext;
use serde_json::json;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn record(t: &common::TestLedger, id: &str, body: serde_json::Value) {
    let ctx = RequestContext {
        actor: "test".into(),
        ..Default::default()
    };
    t.ledger
        .record_person_event(&PersonId::parse(id).unwrap(), &body, &ctx)
        .await
        .unwrap_or_else(|e| panic!("{id} {body}: {e}"));
}

async fn resident(t: &common::TestLedger, id: &str, birth: &str) {
    record(
        t,
        id,
        json!({"type": "registered", "effective_date": "2020-01-01", "name": "高齢 一郎",
        "name_kana": "コウレイ　イチロウ", "birth_date": birth, "sex": "1"}),
    )
    .await;
    record(
        t,
        id,
        json!({"type": "moved_in", "effective_date": "2020-01-10", "from": "other_prefecture", "household_id": "1"}),
    )
    .await;
}

on_both!(records_each_insured_75th_birthday_once, |kind| async move {
    let t = ledger(kind).await;
    resident(&t, "901", "1951-06-01").await; // 75 on 2026-06-01, insured until then
    resident(&t, "902", "1951-03-01").await;
    record(
        &t,
        "902",
        json!({"type": "moved_out", "effective_date": "2025-01-01", "to": "abroad"}),
    )
    .await;
    resident(&t, "903", "1960-01-01").await; // far from 75
    resident(&t, "904", "1951-11-26").await; // 75 tomorrow
    resident(&t, "905", "1951-08-01").await;
    record(&t, "905", json!({"type": "died", "effective_date": "2026-03-01"})).await;
    resident(&t, "906", "1951-09-10").await;
    record(&t, "906", json!({"type": "corrected", "target_sequence": 1, "replacement": {"type": "registered",
        "effective_date": "2020-01-01", "name": "高齢 一郎", "name_kana": "コウレイ　イチロウ", "birth_date": "1955-09-10", "sex": "1"}})).await;

    let today = d("2026-11-25");
    let first = age_out::run(&t.ledger, today).await.unwrap();
    assert_eq!(
        first,
        AgeOutSummary {
            recorded: 1,
            recorded_persons: vec!["901".into()],
            already: 0,
            failed: vec![]
        }
    );
    let events = t.store.load_stream("person", "901", None).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "late_elderly_age_reached");
    assert_eq!(last.payload.value().unwrap()["effective_date"], "2026-06-01");
    assert_eq!(last.metadata.value().unwrap()["actor"], "system");

    let head = t.store.head().await.unwrap();
    let again = age_out::run(&t.ledger, today).await.unwrap();
    assert_eq!(again.recorded, 0, "idempotent");
    assert_eq!(t.store.head().await.unwrap(), head);
    for id in ["902", "903", "904", "905", "906"] {
        let types: Vec<String> = t
            .store
            .load_stream("person", id, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert!(
            !types.contains(&"late_elderly_age_reached".to_owned()),
            "{id} was not insured up to a 75th birthday by today"
        );
    }
    // Tomorrow's birthday is recorded tomorrow.
    t.clock.set(common::test_now() + chrono::Duration::days(1));
    let tomorrow = age_out::run(&t.ledger, d("2026-11-26")).await.unwrap();
    assert_eq!(tomorrow.recorded, 1);
    // The job never records ahead of today.
    match age_out::run(&t.ledger, d("2026-12-31")).await {
        Err(LedgerError::Rule(e)) => assert_eq!(e.code, "future_date"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    t.db.cleanup().await;
});

on_both!(concurrent_runs_record_once, |kind| async move {
    let t = ledger(kind).await;
    for i in 0..10 {
        resident(&t, &format!("95{i}"), &format!("1950-0{}-15", i % 9 + 1)).await;
    }
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let l = t.ledger.clone();
            tokio::spawn(async move { age_out::run(&l, d("2026-11-25")).await.unwrap() })
        })
        .collect();
    let mut recorded = 0;
    for r in runs {
        let s = r.await.unwrap();
        recorded += s.recorded;
    }
    assert_eq!(recorded, 10, "each person once across concurrent runs");
    let all = t.store.read_log(0, 1000).await.unwrap();
    assert_eq!(
        all.iter()
            .filter(|e| e.event_type == "late_elderly_age_reached")
            .count(),
        10
    );
    t.db.cleanup().await;
});
