//! Projections: exactly-once application across faults and restarts, rebuild equality, card
//! and branch numbers under concurrency, on PostgreSQL and SQLite.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use std::sync::Arc;

use common::{ledger_on, ledger_with, Kind, TestLedger};
use kokuho_ledger::domain::{CardNumber, CardSymbol};
use kokuho_ledger::domain::{HouseholdId, PersonId};
use kokuho_ledger::error::LedgerError;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::projections::ProjectionError;
use kokuho_ledger::reads::{CardBranches, Consistency, HouseholdQuery, PersonQuery, Read};
use kokuho_ledger::request::RequestContext;
use serde_json::{json, Value};

fn ctx() -> RequestContext {
    RequestContext {
        actor: "test".into(),
        request_id: "projections-test".into(),
        ..Default::default()
    }
}

async fn try_record(ledger: &Ledger, id: &str, body: Value) -> Result<i64, LedgerError> {
    ledger
        .record_person_event(&PersonId::parse(id).unwrap(), &body, &ctx())
        .await
        .map(|r| r.last_position)
}

async fn record(ledger: &Ledger, id: &str, body: Value) -> i64 {
    try_record(ledger, id, body.clone())
        .await
        .unwrap_or_else(|e| panic!("{id} {body}: {e}"))
}

fn registered(birth: &str) -> Value {
    json!({"type": "registered", "effective_date": "2020-01-01", "name": "projection 太郎",
        "name_kana": "プロジェクション　タロウ", "birth_date": birth, "sex": "1"})
}

fn moved_in(date: &str, household: &str) -> Value {
    json!({"type": "moved_in", "effective_date": date, "from": "other_prefecture", "household_id": household})
}

/// A varied history: joins, household moves, employee insurance, a correction, a rescission,
/// a death and a household head — step `i` of it, for persons 1..=8.
fn script() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for p in 1..=8 {
        let id = p.to_string();
        let household = format!("{}", 100 + p % 3);
        out.push((id.clone(), registered(&format!("19{}0-05-0{}", 5 + p % 4, p))));
        out.push((id.clone(), moved_in("2021-04-01", &household)));
        match p % 4 {
            0 => {
                out.push((
                    id.clone(),
                    json!({"type": "household_changed", "effective_date": "2022-07-01", "household_id": "200"}),
                ));
                out.push((
                    id.clone(),
                    json!({"type": "employee_insurance_joined", "effective_date": "2023-04-01"}),
                ));
            }
            1 => {
                out.push((
                    id.clone(),
                    json!({"type": "employee_insurance_joined", "effective_date": "2022-04-01"}),
                ));
                out.push((
                    id.clone(),
                    json!({"type": "employee_insurance_left", "effective_date": "2024-04-01"}),
                ));
            }
            2 => {
                // The move-in was on another day: corrected; the correction moves the interval.
                out.push((
                    id.clone(),
                    json!({"type": "corrected", "target_sequence": 2,
                    "replacement": moved_in("2021-05-10", &household)}),
                ));
                out.push((id.clone(), json!({"type": "died", "effective_date": "2025-02-01"})));
            }
            _ => {
                out.push((
                    id.clone(),
                    json!({"type": "document_collected", "effective_date": "2023-01-05"}),
                ));
                out.push((
                    id.clone(),
                    json!({"type": "rescinded", "target_sequence": 3, "reason": "recorded in error"}),
                ));
            }
        }
    }
    out
}

async fn run_script(ledger: &Ledger, steps: &[(String, Value)]) {
    for (id, body) in steps {
        record(ledger, id, body.clone()).await;
    }
}

async fn person_events(t: &TestLedger) -> usize {
    t.store
        .read_log(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.aggregate_type == "person")
        .count()
}

/// Rows of a bitemporal table still in force (`known_to`, the third column, null).
fn open_versions(dump: &[(&'static str, Vec<Vec<kokuho_ledger::store::sql::Val>>)], table: &str) -> usize {
    dump.iter()
        .find(|(t, _)| *t == table)
        .map(|(_, r)| {
            r.iter()
                .filter(|row| row[2] == kokuho_ledger::store::sql::Val::Int(None))
                .count()
        })
        .unwrap()
}

fn rows(dump: &[(&'static str, Vec<Vec<kokuho_ledger::store::sql::Val>>)], table: &str) -> usize {
    dump.iter().find(|(t, _)| *t == table).map(|(_, r)| r.len()).unwrap()
}

on_both!(
    a_batch_killed_before_commit_is_applied_once_after_restart,
    |kind| async move {
        let t = ledger_with(kind, false).await;
        run_script(&t.ledger, &script()).await;
        let head = t.store.head().await.unwrap();

        // Batches of 5, each applied to `persons`, `households`, then `feed`: the fifth commit
        // (households' second batch) fails after writing its rows and checkpoint, before the commit.
        let first = kokuho_ledger::ledger::projections(&t.store, &common::test_settings(), None).with_batch(5);
        first.faults.fail_after_commits(4);
        assert!(matches!(first.catch_up().await, Err(ProjectionError::Injected)));
        let status = first.status().await.unwrap();
        assert_eq!(
            status.iter().map(|s| (s.name, s.position)).collect::<Vec<_>>(),
            vec![("persons", 10), ("households", 5), ("feed", 5)],
            "the failed batch left its projection at its last commit"
        );
        let partial = first.dump().await.unwrap();
        drop(first);

        // A new process resumes from the committed checkpoints.
        let second = kokuho_ledger::ledger::projections(&t.store, &common::test_settings(), None).with_batch(5);
        second.catch_up().await.unwrap();
        for s in second.status().await.unwrap() {
            assert_eq!((s.position, s.lag_events), (head, 0), "{}", s.name);
        }
        let incremental = second.dump().await.unwrap();
        assert!(rows(&incremental, "proj_person") > rows(&partial, "proj_person"));
        // Each person has exactly one version in force: nothing skipped, nothing applied twice
        // (a second application would also break the primary key).
        assert_eq!(open_versions(&incremental, "proj_person"), 8);
        // Persons 4 and 8 changed household: two membership periods each in force.
        assert_eq!(open_versions(&incremental, "proj_membership"), 10);

        // A rebuild (other batch boundaries) gives the very same tables.
        let summary = second.rebuild(|_| {}).await.unwrap();
        assert_eq!(summary.events, head);
        assert_eq!(second.dump().await.unwrap(), incremental);
        let big = kokuho_ledger::ledger::projections(&t.store, &common::test_settings(), None).with_batch(10_000);
        big.rebuild(|_| {}).await.unwrap();
        assert_eq!(big.dump().await.unwrap(), incremental);
        t.db.cleanup().await;
    }
);

/// A small deterministic generator (no extra dependency): xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

on_both!(
    any_interleaving_of_appends_faults_and_restarts_equals_a_rebuild,
    |kind| async move {
        for seed in [7u64, 1234, 987_654_321] {
            let t = ledger_with(kind_of(&kind), false).await;
            let mut rng = Rng(seed);
            let mut process = kokuho_ledger::ledger::projections(&t.store, &common::test_settings(), None)
                .with_batch(1 + (rng.next() % 4) as i64);
            for (id, body) in script() {
                record(&t.ledger, &id, body).await;
                match rng.next() % 6 {
                    // The running process applies what is there.
                    0 | 1 => process.catch_up().await.unwrap(),
                    // It is killed in the middle of a batch.
                    2 => {
                        process.faults.fail_after_commits(rng.next() % 2);
                        let _ = process.catch_up().await;
                        process.faults.fail_after_commits(u64::MAX);
                    }
                    // It restarts, perhaps with another batch size.
                    3 => {
                        process = kokuho_ledger::ledger::projections(&t.store, &common::test_settings(), None)
                            .with_batch(1 + (rng.next() % 7) as i64)
                    }
                    _ => {}
                }
            }
            process.catch_up().await.unwrap();
            let incremental = process.dump().await.unwrap();
            assert_eq!(open_versions(&incremental, "proj_person"), 8, "seed {seed}");
            assert!(person_events(&t).await > 8);
            process.rebuild(|_| {}).await.unwrap();
            assert_eq!(process.dump().await.unwrap(), incremental, "seed {seed}");
            t.db.cleanup().await;
        }
    }
);

fn kind_of(k: &Kind) -> Kind {
    match k {
        Kind::Postgres => Kind::Postgres,
        Kind::Sqlite => Kind::Sqlite,
    }
}

async fn branches(ledger: &Ledger, symbol: &str, number: &str) -> Vec<(String, String)> {
    let head = ledger.store().head().await.unwrap();
    let read = Read {
        min_position: Some(head),
        ..Default::default()
    };
    let query = CardBranches {
        symbol: CardSymbol::parse(symbol).unwrap(),
        number: CardNumber::parse(number).unwrap(),
    };
    ledger
        .ask(&query, &read)
        .await
        .unwrap()
        .branches
        .into_iter()
        .map(|b| (b.branch, b.person_id))
        .collect()
}

async fn card_of(ledger: &Ledger, household: &str) -> (String, String) {
    let head = ledger.store().head().await.unwrap();
    let read = Read {
        min_position: Some(head),
        ..Default::default()
    };
    let card = ledger
        .ask(
            &HouseholdQuery {
                household_id: HouseholdId::parse(household).unwrap(),
            },
            &read,
        )
        .await
        .unwrap()
        .card
        .expect("a card");
    (card.symbol, card.number)
}

on_both!(
    branch_numbers_concurrent_joins_rejoin_new_household_and_rebuild,
    |kind| async move {
        let t = common::ledger(kind).await;
        // A second ledger on the same database: another process competing for the same numbers.
        let other = ledger_on(t.db.share(), true).await;
        for p in 1..=20 {
            record(&t.ledger, &p.to_string(), registered("1980-01-01")).await;
        }
        let mut joins = Vec::new();
        for p in 1..=20 {
            let ledger: Arc<Ledger> = if p % 2 == 0 {
                t.ledger.clone()
            } else {
                other.ledger.clone()
            };
            joins.push(tokio::spawn(async move {
                record(&ledger, &p.to_string(), moved_in("2024-04-01", "500")).await
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
        let (symbol, number) = card_of(&t.ledger, "500").await;
        assert_eq!((symbol.as_str(), number.len()), ("1", 8));
        let issued = branches(&t.ledger, &symbol, &number).await;
        assert_eq!(
            issued.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(),
            (1..=20).map(|b| format!("{b:02}")).collect::<Vec<_>>(),
            "20 distinct numbers 01–20"
        );
        let mut holders: Vec<String> = issued.iter().map(|(_, p)| p.clone()).collect();
        holders.sort();
        holders.dedup();
        assert_eq!(holders.len(), 20, "one number per person");
        let branch_of = |p: &str| issued.iter().find(|(_, h)| h == p).unwrap().0.clone();

        // Person 7 leaves and rejoins: the same number, nothing new issued.
        let seven = branch_of("7");
        record(
            &t.ledger,
            "7",
            json!({"type": "moved_out", "effective_date": "2025-01-01", "to": "abroad"}),
        )
        .await;
        record(&t.ledger, "7", moved_in("2025-06-01", "500")).await;
        assert_eq!(branches(&t.ledger, &symbol, &number).await, issued);
        let head = t.store.head().await.unwrap();
        let p7 = t
            .ledger
            .ask(
                &PersonQuery {
                    person_id: PersonId::parse("7").unwrap(),
                },
                &Read {
                    min_position: Some(head),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(p7.card.unwrap().branch.as_deref(), Some(seven.as_str()));

        // Person 8 moves to another household: a new card there and branch 01 under it; the old
        // number under 500 is never reissued.
        record(
            &t.ledger,
            "8",
            json!({"type": "household_changed", "effective_date": "2025-03-01", "household_id": "501"}),
        )
        .await;
        let (s2, n2) = card_of(&t.ledger, "501").await;
        assert_ne!(n2, number);
        assert_eq!(
            branches(&t.ledger, &s2, &n2).await,
            vec![("01".to_owned(), "8".to_owned())]
        );
        record(&t.ledger, "21", registered("1980-01-01")).await;
        record(&t.ledger, "21", moved_in("2025-04-01", "500")).await;
        assert_eq!(
            branches(&t.ledger, &symbol, &number).await.last().unwrap(),
            &("21".to_owned(), "21".to_owned())
        );

        // Rebuild: every number as before (they are events; the rebuild only reads them).
        let log_before = t.store.read_log(0, 100_000).await.unwrap();
        let before = (
            branches(&t.ledger, &symbol, &number).await,
            branches(&t.ledger, &s2, &n2).await,
        );
        t.ledger.projections().rebuild(|_| {}).await.unwrap();
        let after = (
            branches(&t.ledger, &symbol, &number).await,
            branches(&t.ledger, &s2, &n2).await,
        );
        assert_eq!(before, after);
        assert_eq!(
            t.store.read_log(0, 100_000).await.unwrap(),
            log_before,
            "a rebuild writes no event"
        );
        t.db.cleanup().await;
    }
);

on_both!(ninety_nine_branch_numbers_exhaust_a_card, |kind| async move {
    let t = ledger_with(kind, false).await;
    for p in 1..=99 {
        let id = p.to_string();
        record(&t.ledger, &id, registered("1985-01-01")).await;
        record(&t.ledger, &id, moved_in("2024-04-01", "600")).await;
    }
    record(&t.ledger, "100", registered("1985-01-01")).await;
    let head = t.store.head().await.unwrap();
    match try_record(&t.ledger, "100", moved_in("2024-04-01", "600")).await {
        Err(LedgerError::Rule(r)) => assert_eq!(r.code, "branch_numbers_exhausted", "{}", r.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(t.store.head().await.unwrap(), head, "the refused join wrote nothing");
    // Someone who holds a number still rejoins.
    record(
        &t.ledger,
        "50",
        json!({"type": "moved_out", "effective_date": "2025-01-01", "to": "abroad"}),
    )
    .await;
    record(&t.ledger, "50", moved_in("2025-02-01", "600")).await;
    // Another household is unaffected.
    record(&t.ledger, "100", moved_in("2024-04-01", "601")).await;
    t.db.cleanup().await;
});

on_both!(reads_wait_for_their_own_writes_and_report_lag, |kind| async move {
    let t = ledger_with(kind, false).await;
    let written = record(&t.ledger, "1", registered("1980-01-01")).await;
    let pid = PersonId::parse("1").unwrap();
    // Nothing applies the log: the read that needs its write waits, then says so.
    let read = Read {
        min_position: Some(written),
        ..Default::default()
    };
    let waited = tokio::time::Instant::now();
    match t.ledger.ask(&PersonQuery { person_id: pid.clone() }, &read).await {
        Err(LedgerError::Lagging(l)) => assert_eq!((l.position, l.wanted), (0, written)),
        other => panic!("expected a lag error, got {other:?}"),
    }
    assert!(waited.elapsed() >= std::time::Duration::from_secs(4));
    let status = t.ledger.projections().status().await.unwrap();
    assert!(status.iter().all(|s| s.lag_events == written), "{status:?}");
    // Without the wait (an eventual read) the projection answers what it has: nothing yet.
    assert!(matches!(
        t.ledger
            .ask(
                &PersonQuery { person_id: pid.clone() },
                &Read {
                    consistency: Consistency::Eventual,
                    ..Default::default()
                }
            )
            .await,
        Err(LedgerError::NotFound { .. })
    ));
    // The runner starts; the same read is answered as soon as it has applied the write.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    t.ledger.projections().spawn(stopped);
    let p = t
        .ledger
        .ask(&PersonQuery { person_id: pid.clone() }, &read)
        .await
        .unwrap();
    assert_eq!(p.last_sequence, 1);
    let moved = record(&t.ledger, "1", moved_in("2024-04-01", "700")).await;
    let p = t
        .ledger
        .ask(
            &PersonQuery { person_id: pid.clone() },
            &Read {
                min_position: Some(moved),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(p.insured);
    assert_eq!(p.card.unwrap().branch.as_deref(), Some("01"));
    // A process that has just started (no runner yet) answers from the committed checkpoints,
    // not from position 0.
    let fresh = ledger_on(t.db.share(), false).await;
    let p = fresh
        .ledger
        .ask(&PersonQuery { person_id: pid.clone() }, &Read::default())
        .await
        .unwrap();
    assert_eq!((p.last_sequence, p.insured), (2, true));
    t.db.cleanup().await;
});

async fn household_record(ledger: &Ledger, id: &str, body: Value) {
    ledger
        .record_household_event(&HouseholdId::parse(id).unwrap(), &body, &ctx())
        .await
        .unwrap_or_else(|e| panic!("{id} {body}: {e}"));
}

on_both!(
    deemed_head_from_the_day_the_heads_loss_takes_effect,
    |kind| async move {
        let t = common::ledger(kind).await;
        for id in ["31", "32"] {
            record(&t.ledger, id, registered("1975-01-01")).await;
            record(&t.ledger, id, moved_in("2024-04-01", "800")).await;
        }
        household_record(
            &t.ledger,
            "800",
            json!({"type": "household_head_changed", "effective_date": "2024-04-01", "person_id": "31"}),
        )
        .await;
        // The head joins employee insurance on 2026-11-20: insured that day (the one-day overlap),
        // not from the 21st, when the loss takes effect.
        record(
            &t.ledger,
            "31",
            json!({"type": "employee_insurance_joined", "effective_date": "2026-11-20"}),
        )
        .await;
        let head = t.store.head().await.unwrap();
        let read = Read {
            min_position: Some(head),
            ..Default::default()
        };
        let hid = HouseholdId::parse("800").unwrap();
        let view_on = |day: &str| {
            let t = &t;
            let read = read.clone();
            let hid = hid.clone();
            let day = day.to_owned();
            async move {
                t.clock.set(
                    chrono::DateTime::parse_from_rfc3339(&format!("{day}T03:00:00Z"))
                        .unwrap()
                        .into(),
                );
                let h = t
                    .ledger
                    .ask(
                        &HouseholdQuery {
                            household_id: hid.clone(),
                        },
                        &read,
                    )
                    .await
                    .unwrap();
                let p = t
                    .ledger
                    .ask(
                        &PersonQuery {
                            person_id: PersonId::parse("31").unwrap(),
                        },
                        &read,
                    )
                    .await
                    .unwrap();
                (h.deemed_head, p.deemed_head, p.insured)
            }
        };
        assert_eq!(
            view_on("2026-11-20").await,
            (false, false, true),
            "the join day: still insured"
        );
        assert_eq!(
            view_on("2026-11-21").await,
            (true, true, false),
            "from the loss: deemed head"
        );
        // A member who is not the head is never the deemed head.
        let p32 = t
            .ledger
            .ask(
                &PersonQuery {
                    person_id: PersonId::parse("32").unwrap(),
                },
                &read,
            )
            .await
            .unwrap();
        assert!(!p32.deemed_head && p32.insured);
        // The other member leaves too: no insured member, no deemed head.
        t.clock.set(common::test_now());
        record(
            &t.ledger,
            "32",
            json!({"type": "employee_insurance_joined", "effective_date": "2026-11-22"}),
        )
        .await;
        let head = t.store.head().await.unwrap();
        let h = t
            .ledger
            .ask(
                &HouseholdQuery {
                    household_id: hid.clone(),
                },
                &Read {
                    min_position: Some(head),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(!h.deemed_head);
        t.db.cleanup().await;
    }
);

on_both!(
    the_rows_in_force_at_every_position_are_the_derived_history_there,
    |kind| async move {
        use kokuho_ledger::codec::fold;
        use kokuho_ledger::domain::Person;
        use kokuho_ledger::reads::sql;
        let t = ledger_with(kind, false).await;
        run_script(&t.ledger, &script()).await;
        // Small batches: versions opened and closed within a batch and across batches.
        let p = kokuho_ledger::ledger::projections(&t.store, &common::test_settings(), None).with_batch(3);
        p.catch_up().await.unwrap();
        let log = t.store.read_log(0, 1_000_000).await.unwrap();
        let db = t.store.db();
        let text = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string());
        for at in 0..=log.len() as i64 {
            for n in 1..=8 {
                let id = n.to_string();
                let prefix: Vec<_> = log
                    .iter()
                    .filter(|e| e.aggregate_id == id && e.aggregate_type == "person" && e.position <= at)
                    .cloned()
                    .collect();
                let (mut runs, mut intervals, mut memberships) = (Vec::new(), Vec::new(), Vec::new());
                if !prefix.is_empty() {
                    let derived = fold::<Person>(&prefix).unwrap().derive().unwrap();
                    for r in &derived.runs {
                        runs.push((
                            r.from,
                            r.to,
                            r.acquisition.as_str().to_owned(),
                            r.loss.map(|l| l.as_str().to_owned()),
                        ));
                    }
                    for i in &derived.intervals {
                        intervals.push((i.from, i.to, i.household_id.as_ref().map(|h| h.to_string())));
                    }
                    for m in &derived.memberships {
                        memberships.push((m.household_id.to_string(), m.from, text(m.to)));
                    }
                }
                let stored_runs: Vec<_> = sql::periods(db, false, &id, at)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.from, r.to, r.acquisition_reason, r.loss_reason))
                    .collect();
                let stored_intervals: Vec<_> = sql::periods(db, true, &id, at)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.from, r.to, r.household_id))
                    .collect();
                let stored_memberships: Vec<_> = sql::memberships(db, &id, at)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| (m.household_id, m.from, text(m.to)))
                    .collect();
                assert_eq!(stored_runs, runs, "runs of {id} at {at}");
                assert_eq!(stored_intervals, intervals, "intervals of {id} at {at}");
                assert_eq!(stored_memberships, memberships, "memberships of {id} at {at}");
            }
        }
        // A period that did not change keeps its row: person 1's first run is closed by the
        // employee insurance (a new version of that row) and not written again when the
        // second run begins — three rows, not four.
        let dump = p.dump().await.unwrap();
        let person_1_runs = dump
            .iter()
            .find(|(t, _)| *t == "proj_run")
            .map(|(_, rows)| {
                rows.iter()
                    .filter(|r| r[0] == kokuho_ledger::store::sql::Val::text("1"))
                    .count()
            })
            .unwrap();
        assert_eq!(person_1_runs, 3);
        t.db.cleanup().await;
    }
);
