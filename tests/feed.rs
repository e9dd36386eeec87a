//! The change feed (feed.md): groups, changes, no-ops, long-poll, resume by cursor — on
//! PostgreSQL and SQLite.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use std::time::Duration;

use common::{ledger, ledger_on};
use kokuho_ledger::domain::{HouseholdId, PersonId};
use kokuho_ledger::feed::FeedPage;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::request::RequestContext;
use serde_json::{json, Value};

fn ctx() -> RequestContext {
    RequestContext {
        actor: "test".into(),
        request_id: "feed-test".into(),
        ..Default::default()
    }
}

async fn person(l: &Ledger, id: &str, body: Value) -> i64 {
    l.record_person_event(&PersonId::parse(id).unwrap(), &body, &ctx())
        .await
        .unwrap_or_else(|e| panic!("{id} {body}: {e}"))
        .position
}

async fn household(l: &Ledger, id: &str, body: Value) -> i64 {
    l.record_household_event(&HouseholdId::parse(id).unwrap(), &body, &ctx())
        .await
        .unwrap_or_else(|e| panic!("{id} {body}: {e}"))
        .position
}

fn registered(name: &str, birth: &str) -> Value {
    json!({"type": "registered", "effective_date": "2020-01-01", "name": name,
        "name_kana": "フィード　タロウ", "birth_date": birth, "sex": "1"})
}

/// Everything in the feed once the feed consumer has caught up with the log.
async fn feed(l: &Ledger) -> Vec<Value> {
    let head = l.store().head().await.unwrap();
    for _ in 0..250 {
        let caught_up = l
            .projections()
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.position >= head);
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    l.feed.page(0, 1000, Duration::ZERO, false).await.unwrap().records
}

/// The stored feed records as text, exactly as issued.
async fn raw_feed(l: &Ledger) -> Vec<String> {
    kokuho_ledger::projections::feed::feed_records(l.store().db(), 0, 1_000_000)
        .await
        .unwrap()
}

/// The records caused by one log position, as (kind, person or household, change).
fn group(records: &[Value], cause: i64) -> Vec<(String, String, String)> {
    records
        .iter()
        .filter(|r| r["cause_position"] == cause)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            let who = if r["kind"] == "household" {
                s("household_id")
            } else {
                s("person_id")
            };
            (s("kind"), who, s("change"))
        })
        .collect()
}

fn g(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

on_both!(groups_changes_and_no_ops, |kind| async move {
    let t = ledger(kind).await;
    let l = &t.ledger;
    person(l, "1", registered("世帯 主", "1970-04-01")).await;
    person(l, "2", registered("世帯 員", "1975-04-01")).await;
    let join1 = person(
        l,
        "1",
        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "10"}),
    )
    .await;
    let join2 = person(
        l,
        "2",
        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "10"}),
    )
    .await;
    let head = household(
        l,
        "10",
        json!({"type": "household_head_changed", "effective_date": "2024-04-01", "person_id": "1"}),
    )
    .await;
    let same_head = household(
        l,
        "10",
        json!({"type": "household_head_changed", "effective_date": "2024-04-01", "person_id": "1"}),
    )
    .await;
    let employed = person(
        l,
        "1",
        json!({"type": "employee_insurance_joined", "effective_date": "2025-04-01"}),
    )
    .await;
    let records = feed(l).await;

    // Positions are 1.. without gaps; registrations (no household) cause nothing.
    let positions: Vec<i64> = records.iter().map(|r| r["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, (1..=records.len() as i64).collect::<Vec<_>>());
    // The first join: the household's card and the branch number come with it, in one group.
    assert_eq!(
        group(&records, join1),
        g(&[("household", "10", ""), ("individual", "1", "acquired")])
    );
    let first = &records[1];
    assert_eq!(
        (first["branch"].as_str(), first["applied_from"].as_str()),
        (Some("01"), Some("2024-04-01"))
    );
    assert_eq!(first["number"], records[0]["number"]);
    assert!(first.get("my_number").is_none(), "no My Number unless allowed");
    assert_eq!(records[0]["insured_count"], 1);
    // The second join re-sends the whole group.
    assert_eq!(
        group(&records, join2),
        g(&[
            ("household", "10", ""),
            ("individual", "1", "changed"),
            ("individual", "2", "acquired")
        ])
    );
    // Naming the register head changes the NHI head fields; naming them again changes nothing.
    assert_eq!(group(&records, head).len(), 3);
    let h = records.iter().find(|r| r["cause_position"] == head).unwrap();
    assert_eq!(h["nhi_head_person_id"], "1");
    assert_eq!(h["nhi_head_name"], "世帯 主");
    assert!(
        group(&records, same_head).is_empty(),
        "a change that alters no field makes no group"
    );
    // The head joins employee insurance: lost (loss code 03, applied_to inclusive), and the
    // head is now the deemed head.
    assert_eq!(
        group(&records, employed),
        g(&[
            ("household", "10", ""),
            ("individual", "1", "lost"),
            ("individual", "2", "changed")
        ])
    );
    let rec = |who: &str| {
        records
            .iter()
            .rev()
            .find(|r| {
                r["cause_position"] == employed
                    && (r["person_id"] == who || r["household_id"] == who && r["kind"] == "household")
            })
            .unwrap()
            .clone()
    };
    let lost = rec("1");
    assert_eq!(
        (
            lost["disqualified_on"].as_str(),
            lost["applied_to"].as_str(),
            lost["loss_code"].as_str()
        ),
        (Some("2025-04-02"), Some("2025-04-01"), Some("03"))
    );
    assert_eq!(lost["is_deemed_head"], true);
    let hh = rec("10");
    assert_eq!(
        (
            hh["deemed_head"].as_bool(),
            hh["deemed_head_person_id"].as_str(),
            hh["insured_count"].as_i64()
        ),
        (Some(true), Some("1"), Some(1))
    );
    t.db.cleanup().await;
});

on_both!(moves_corrections_and_the_75th_birthday, |kind| async move {
    let t = ledger(kind).await;
    let l = &t.ledger;
    person(l, "5", registered("転居 花子", "1951-06-01")).await;
    let join = person(
        l,
        "5",
        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "50"}),
    )
    .await;
    // A move to another household of the ward: a group for each.
    let moved = person(
        l,
        "5",
        json!({"type": "household_changed", "effective_date": "2025-01-01", "household_id": "51"}),
    )
    .await;
    // A correction of the move's date changes the records: `changed`.
    let fixed = person(
        l,
        "5",
        json!({"type": "corrected", "target_sequence": 3,
        "replacement": {"type": "household_changed", "effective_date": "2025-02-01", "household_id": "51"}}),
    )
    .await;
    let records = feed(l).await;
    assert_eq!(
        group(&records, join),
        g(&[("household", "50", ""), ("individual", "5", "acquired")])
    );
    assert_eq!(
        group(&records, moved),
        g(&[
            ("household", "50", ""),
            ("individual", "5", "lost"),
            ("household", "51", ""),
            ("individual", "5", "acquired")
        ])
    );
    let old = records
        .iter()
        .find(|r| r["cause_position"] == moved && r["kind"] == "individual")
        .unwrap();
    // Leaving the household is no loss of qualification.
    assert_eq!(
        (
            old["applied_to"].as_str(),
            old["disqualified_on"].as_str(),
            old["loss_code"].as_str()
        ),
        (Some("2024-12-31"), None, None)
    );
    assert_eq!(
        group(&records, fixed),
        g(&[
            ("household", "50", ""),
            ("individual", "5", "changed"),
            ("household", "51", ""),
            ("individual", "5", "changed")
        ])
    );
    // The 75th birthday (2026-06-01) is announced when the ledger records it, not before.
    let before = records.len();
    assert!(records.iter().all(|r| r["loss_code"] != "03"));
    kokuho_ledger::jobs::age_out::run(l, chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap())
        .await
        .unwrap();
    let records = feed(l).await;
    let aged = &records[before..];
    assert_eq!(aged.iter().filter(|r| r["kind"] == "individual").count(), 1);
    let r = aged.iter().find(|r| r["kind"] == "individual").unwrap();
    assert_eq!(
        (r["change"].as_str(), r["applied_to"].as_str(), r["loss_code"].as_str()),
        (Some("lost"), Some("2026-05-31"), Some("03"))
    );
    t.db.cleanup().await;
});

on_both!(long_poll_and_resume_from_a_cursor, |kind| async move {
    let t = ledger(kind).await;
    let l = t.ledger.clone();
    // A consumer waits for the first record.
    let waiting = {
        let l = l.clone();
        tokio::spawn(async move {
            let page: FeedPage = l.feed.page(0, 10, Duration::from_secs(10), false).await.unwrap();
            (page, tokio::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    person(&l, "7", registered("待機 一郎", "1980-01-01")).await;
    person(
        &l,
        "7",
        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "70"}),
    )
    .await;
    let (page, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((page.records.len(), page.next_after, page.head), (2, 2, 2));

    // Writers keep appending while a consumer reads in pages of 3 and "restarts" (a new
    // ledger process) after every page, resuming from its cursor.
    let writers = {
        let l = l.clone();
        tokio::spawn(async move {
            for p in 100..130 {
                let id = p.to_string();
                person(&l, &id, registered("並行 二郎", "1985-01-01")).await;
                person(&l, &id, json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": format!("{}", 200 + p % 5)})).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = 0;
    for _ in 0..200 {
        let consumer = ledger_on(t.db.share(), false).await;
        let page = consumer
            .ledger
            .feed
            .page(after, 3, Duration::from_millis(300), false)
            .await
            .unwrap();
        seen.extend(page.records.iter().map(|r| r["position"].as_i64().unwrap()));
        after = page.next_after;
        if writers.is_finished() && page.records.is_empty() && after == page.head {
            break;
        }
    }
    writers.await.unwrap();
    let all = feed(&l).await;
    assert!(all.len() > 30);
    let page = l.feed.page(after, 1000, Duration::ZERO, false).await.unwrap();
    seen.extend(page.records.iter().map(|r| r["position"].as_i64().unwrap()));
    assert_eq!(
        seen,
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "every record once, in order"
    );
    t.db.cleanup().await;
});

on_both!(
    deemed_head_disappears_same_prefecture_move_and_rebuild_keeps_the_feed,
    |kind| async move {
        let t = ledger(kind).await;
        let l = &t.ledger;
        for (id, birth) in [("11", "1970-01-01"), ("12", "1972-01-01")] {
            person(l, id, registered("擬制 世帯", birth)).await;
            person(
                l,
                id,
                json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "20"}),
            )
            .await;
        }
        household(
            l,
            "20",
            json!({"type": "household_head_changed", "effective_date": "2024-04-01", "person_id": "11"}),
        )
        .await;
        let employed = person(
            l,
            "11",
            json!({"type": "employee_insurance_joined", "effective_date": "2025-04-01"}),
        )
        .await;
        // The head leaves employee insurance: insured again, no longer the deemed head.
        let back = person(
            l,
            "11",
            json!({"type": "employee_insurance_left", "effective_date": "2025-10-01"}),
        )
        .await;
        // A move to another municipality of the prefecture: the ward's application ends, the
        // qualification does not (applied_to set, disqualified_on and loss_code empty).
        let moved = person(
            l,
            "12",
            json!({"type": "moved_out", "effective_date": "2026-01-10", "to": "same_prefecture"}),
        )
        .await;
        let records = feed(l).await;
        let household_at = |cause: i64| {
            records
                .iter()
                .find(|r| r["cause_position"] == cause && r["kind"] == "household")
                .unwrap()
        };
        assert_eq!(household_at(employed)["deemed_head_person_id"], "11");
        assert_eq!(
            group(&records, back),
            g(&[
                ("household", "20", ""),
                ("individual", "11", "acquired"),
                ("individual", "12", "changed")
            ])
        );
        assert_eq!(
            (
                household_at(back)["deemed_head"].as_bool(),
                household_at(back)["insured_count"].as_i64()
            ),
            (Some(false), Some(2))
        );
        let rejoined = records
            .iter()
            .find(|r| r["cause_position"] == back && r["person_id"] == "11")
            .unwrap();
        assert_eq!(
            (
                rejoined["is_deemed_head"].as_bool(),
                rejoined["applied_from"].as_str(),
                rejoined["applied_to"].as_str()
            ),
            (Some(false), Some("2025-10-01"), None)
        );
        let left = records
            .iter()
            .find(|r| r["cause_position"] == moved && r["person_id"] == "12")
            .unwrap();
        assert_eq!(
            (
                left["change"].as_str(),
                left["applied_to"].as_str(),
                left["disqualified_on"].as_str(),
                left["loss_code"].as_str()
            ),
            (Some("lost"), Some("2026-01-09"), None, None)
        );
        // A rebuild of the read models leaves every issued record as it was, and verifies them
        // against a recomputation from the log.
        let stored = raw_feed(l).await;
        let summary = l.projections().rebuild(|_| {}).await.unwrap();
        assert_eq!(raw_feed(l).await, stored, "the stored records, byte for byte");
        assert_eq!(feed(l).await, records);
        assert_eq!(
            (summary.verified[0].checked, summary.verified[0].differences.len()),
            (records.len() as u64, 0)
        );
        // A record changed behind the ledger's back (its trigger disabled by a superuser) is
        // reported, not rewritten.
        let tamper = "UPDATE feed_records SET record = replace(record, '\"2026-01-09\"', '\"2026-01-19\"') WHERE person_id = '12'";
        if let Some(pool) = t.store.pg_pool() {
            sqlx::query("ALTER TABLE feed_records DISABLE TRIGGER USER")
                .execute(pool)
                .await
                .unwrap();
            sqlx::query(tamper).execute(pool).await.unwrap();
        } else {
            let pool = t.store.sqlite_pool().unwrap();
            sqlx::query("DROP TRIGGER feed_no_update").execute(pool).await.unwrap();
            sqlx::query(tamper).execute(pool).await.unwrap();
        }
        let summary = l.projections().rebuild(|_| {}).await.unwrap();
        assert_eq!(
            summary.verified[0].differences.len(),
            1,
            "{:?}",
            summary.verified[0].differences
        );
        assert!(summary.verified[0].differences[0].starts_with(&format!("position {}:", left["position"])));
        t.db.cleanup().await;
    }
);

on_both!(my_number_only_when_the_server_allows_it, |kind| async move {
    let t = ledger(kind).await;
    let l = &t.ledger;
    let mut reg = registered("番号 三郎", "1980-01-01");
    reg["my_number"] = json!("123456789018");
    person(l, "31", reg).await;
    person(
        l,
        "31",
        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "30"}),
    )
    .await;
    let records = feed(l).await;
    assert!(records.iter().all(|r| r.get("my_number").is_none()), "off by default");
    // The stored records never hold it; a page for a consumer with the my_number role adds it.
    let stored = serde_json::to_string(&records).unwrap();
    assert!(!stored.contains("123456789018"));
    let page = l.feed.page(0, 100, Duration::ZERO, true).await.unwrap();
    let individual = page.records.iter().find(|r| r["kind"] == "individual").unwrap();
    assert_eq!(individual["my_number"], "123456789018");
    assert!(page
        .records
        .iter()
        .filter(|r| r["kind"] == "household")
        .all(|r| r.get("my_number").is_none()));
    t.db.cleanup().await;
});

on_both!(concurrent_consumers_see_the_same_sequence, |kind| async move {
    let t = ledger(kind).await;
    let l = t.ledger.clone();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let l = l.clone();
            tokio::spawn(async move {
                for p in 0..12 {
                    let id = format!("{}", 300 + w * 100 + p);
                    person(&l, &id, registered("同時 三郎", "1985-01-01")).await;
                    let household = format!("{}", 900 + p % 4);
                    person(&l, &id, json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": household})).await;
                }
            })
        })
        .collect();
    // Consumers with different page sizes and long-polls, each in its own "process", read
    // while the writers append; each keeps (position, record) as it saw them.
    // They stop once they reach the feed's final head, announced when the writers are done
    // and the feed has caught up.
    let (end, ended) = tokio::sync::watch::channel(None::<i64>);
    let consumers: Vec<_> = [1i64, 4, 50]
        .into_iter()
        .map(|limit| {
            let db = t.db.share();
            let ended = ended.clone();
            tokio::spawn(async move {
                let c = ledger_on(db, false).await;
                let mut seen: Vec<(i64, Value)> = Vec::new();
                let mut after = 0;
                while ended.borrow().is_none_or(|head| after < head) {
                    let page = c
                        .ledger
                        .feed
                        .page(after, limit, Duration::from_millis(400), false)
                        .await
                        .unwrap();
                    seen.extend(page.records.into_iter().map(|r| (r["position"].as_i64().unwrap(), r)));
                    after = page.next_after;
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let all: Vec<(i64, Value)> = feed(&l)
        .await
        .into_iter()
        .map(|r| (r["position"].as_i64().unwrap(), r))
        .collect();
    end.send(Some(all.len() as i64)).unwrap();
    assert!(all.len() >= 72, "a group per join at least: {}", all.len());
    for c in consumers {
        let seen = c.await.unwrap();
        assert_eq!(seen.len(), all.len(), "every record once");
        assert!(seen == all, "the same records in the same order");
    }
    t.db.cleanup().await;
});
