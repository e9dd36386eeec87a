//! Person views and timelines answered from memory (`reads::memo`): a kept answer is given
//! again only while it is still the answer. Every read over HTTP is compared with a fresh one
//! worked out from the read models at the same point, through a varied history, with a second
//! process writing to the same database, with households changing under a kept answer, and
//! across midnight.

use kokuho_testing as common;
use kokuho_testing::on_both;

use common::api::Api;
use common::{ledger_on, Kind};
use kokuho_ledger::clock::Clock;
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::reads::{PersonQuery, Read, Resource, TimelineQuery};
use kokuho_ledger::request::RequestContext;
use serde_json::{json, Value};

fn registered(birth: &str) -> Value {
    json!({"type": "registered", "effective_date": "2020-01-01", "name": "記憶 花子",
        "name_kana": "キオク　ハナコ", "birth_date": birth, "sex": "2"})
}

fn moved_in(date: &str, household: &str) -> Value {
    json!({"type": "moved_in", "effective_date": date, "from": "other_prefecture", "household_id": household})
}

/// The timeline and the person view worked out now from the read models, as the API would
/// answer them.
async fn fresh(ledger: &Ledger, id: &str) -> (Value, Value) {
    let person_id = PersonId::parse(id).unwrap();
    let read = Read::default();
    let timeline = ledger
        .ask(
            &TimelineQuery {
                person_id: person_id.clone(),
            },
            &read,
        )
        .await
        .unwrap();
    let person = ledger.ask(&PersonQuery { person_id }, &read).await.unwrap();
    (
        serde_json::to_value(timeline).unwrap(),
        serde_json::to_value(person).unwrap(),
    )
}

/// Reads person `id`'s timeline and view over HTTP twice each (the second may come from
/// memory) and checks them against fresh answers; the timeline.
async fn read_and_check(api: &Api, id: &str) -> Value {
    let (timeline, person) = fresh(&api.t.ledger, id).await;
    for round in 0..2 {
        for (path, want) in [
            (format!("/v1/persons/{id}/timeline"), &timeline),
            (format!("/v1/persons/{id}"), &person),
        ] {
            let r = api.get(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(
                &r.body, want,
                "{path}, read {round}: the answer differs from a fresh one"
            );
        }
    }
    timeline
}

fn events(timeline: &Value) -> usize {
    timeline["events"].as_array().unwrap().len()
}

async fn record(api: &Api, id: &str, body: Value) {
    let r = api.event(id, body.clone()).await;
    assert_eq!(r.status, 201, "{id} {body}: {}", r.body);
}

on_both!(
    kept_timelines_are_the_fresh_answers_through_a_varied_history,
    |kind: Kind| async move {
        let api = Api::new(kind).await;
        let persons: Vec<String> = (1..=6).map(|p| p.to_string()).collect();
        // Each step changes one person; after it, every person is read (most from memory).
        let mut steps: Vec<(String, Value)> = Vec::new();
        for (i, p) in persons.iter().enumerate() {
            steps.push((p.clone(), registered(&format!("198{i}-04-0{}", i + 1))));
            steps.push((p.clone(), moved_in("2021-04-01", &format!("{}", 700 + i % 2))));
        }
        steps.extend([
            (
                "1".into(),
                json!({"type": "employee_insurance_joined", "effective_date": "2022-04-01"}),
            ),
            (
                "2".into(),
                json!({"type": "household_changed", "effective_date": "2022-07-01", "household_id": "702"}),
            ),
            (
                "3".into(),
                json!({"type": "corrected", "target_sequence": 2, "replacement": moved_in("2021-05-10", "700")}),
            ),
            (
                "1".into(),
                json!({"type": "employee_insurance_left", "effective_date": "2024-04-01"}),
            ),
            (
                "4".into(),
                json!({"type": "document_collected", "effective_date": "2023-01-05"}),
            ),
            (
                "4".into(),
                json!({"type": "rescinded", "target_sequence": 3, "reason": "recorded in error"}),
            ),
            ("5".into(), json!({"type": "died", "effective_date": "2025-02-01"})),
            (
                "6".into(),
                json!({"type": "household_changed", "effective_date": "2023-07-01", "household_id": "702"}),
            ),
        ]);
        for (n, (id, body)) in steps.into_iter().enumerate() {
            record(&api, &id, body).await;
            // Registered persons only (a read of an unregistered one is a 404 either way).
            for p in persons.iter().take((n / 2 + 1).min(persons.len())) {
                read_and_check(&api, p).await;
            }
        }
        let memo = api.t.ledger.reads().answers();
        for r in [Resource::Timeline, Resource::Person] {
            assert!(memo.hits(r) > 50, "{r:?} answers from memory: {}", memo.hits(r));
        }
        assert!(memo.weight() > 0);
        api.t.db.cleanup().await;
    }
);

on_both!(
    another_process_s_writes_reach_the_kept_answers,
    |kind: Kind| async move {
        let api = Api::new(kind).await;
        // Another process on the same database, applying the log to the read models too: either
        // process may commit a batch, so both ways a checkpoint moves are met.
        let other = ledger_on(api.t.db.share(), true).await;
        let ctx = RequestContext {
            actor: "other-process".into(),
            request_id: "timeline-memory".into(),
            ..Default::default()
        };
        record(&api, "11", registered("1970-01-01")).await;
        record(&api, "11", moved_in("2021-04-01", "900")).await;
        let mut before = events(&read_and_check(&api, "11").await);
        for round in 0..12 {
            let date = format!("2022-{:02}-01", round + 1);
            let body = if round % 2 == 0 {
                json!({"type": "employee_insurance_joined", "effective_date": date})
            } else {
                json!({"type": "employee_insurance_left", "effective_date": date})
            };
            if round % 3 == 0 {
                record(&api, "11", body).await;
            } else {
                other
                    .ledger
                    .record_person_event(&PersonId::parse("11").unwrap(), &body, &ctx)
                    .await
                    .unwrap();
            }
            let now = events(&read_and_check(&api, "11").await);
            assert_eq!(now, before + 1, "round {round}: the new event is in the answer");
            before = now;
        }
        assert!(api.t.ledger.reads().answers().hits(Resource::Timeline) >= 12);
        api.t.db.cleanup().await;
    }
);

on_both!(
    a_household_event_retires_the_kept_answers_of_its_members,
    |kind: Kind| async move {
        let api = Api::new(kind).await;
        record(&api, "21", registered("1960-01-01")).await;
        record(&api, "21", moved_in("2021-04-01", "950")).await;
        let kept = read_and_check(&api, "21").await;
        assert!(kept["intervals"][0]["card"]["number"].is_string(), "{kept}");
        let memo = api.t.ledger.reads().answers();
        let misses = || memo.misses(Resource::Timeline);
        let before = misses();
        read_and_check(&api, "21").await;
        assert_eq!(misses(), before, "nothing changed: from memory");
        // Another member joins: the household's stream gets a branch number. Person 21's answer
        // reads that household's rows, so it is worked out again (and is the same).
        record(&api, "22", registered("1962-01-01")).await;
        read_and_check(&api, "21").await;
        assert_eq!(misses(), before, "a stranger's registration keeps it");
        record(&api, "22", moved_in("2021-06-01", "950")).await;
        let again = read_and_check(&api, "21").await;
        assert_eq!(misses(), before + 1, "the household changed: worked out again");
        assert_eq!(again, kept);
        api.t.db.cleanup().await;
    }
);

on_both!(a_person_view_kept_yesterday_is_not_today_s, |kind: Kind| async move {
    let api = Api::new(kind).await;
    record(&api, "31", registered("1960-01-01")).await;
    record(&api, "31", moved_in("2021-04-01", "960")).await;
    let now = api.t.clock.now();
    let yesterday = read_and_check(&api, "31").await;
    let view = api.get("/v1/persons/31").await.body;
    // The next day in Tokyo: the view names the day it describes, so it is worked out again.
    api.t.clock.set(now + chrono::Duration::days(1));
    let memo = api.t.ledger.reads().answers();
    let misses = memo.misses(Resource::Person);
    assert_eq!(
        read_and_check(&api, "31").await,
        yesterday,
        "the timeline does not depend on the day"
    );
    assert_eq!(memo.misses(Resource::Person), misses + 1);
    let next = api.get("/v1/persons/31").await.body;
    assert_ne!(next["today"], view["today"]);
    assert_eq!(next["insured"], true);
    api.t.db.cleanup().await;
});

on_both!(
    under_concurrent_writes_every_reader_sees_what_was_acknowledged_before_it,
    |kind: Kind| async move {
        let api = std::sync::Arc::new(Api::new(kind).await);
        const PERSONS: usize = 4;
        const EVENTS: usize = 12;
        for p in 0..PERSONS {
            let id = (41 + p).to_string();
            record(&api, &id, registered("1970-01-01")).await;
            record(&api, &id, moved_in("2021-04-01", "970")).await;
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Readers keep every person's answers in memory and race the writers' invalidations.
        let readers: Vec<_> = (0..4)
            .map(|r| {
                let (api, done) = (api.clone(), done.clone());
                tokio::spawn(async move {
                    let mut n = r;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        let id = 41 + n % PERSONS;
                        let path = if n % 2 == 0 {
                            format!("/v1/persons/{id}/timeline")
                        } else {
                            format!("/v1/persons/{id}")
                        };
                        assert_eq!(api.get(&path).await.status, 200);
                        n += 1;
                    }
                })
            })
            .collect();
        // Each writer is the only one writing its person: after each acknowledged event, its
        // own next read must show exactly the events written so far.
        let writers: Vec<_> = (0..PERSONS)
            .map(|p| {
                let api = api.clone();
                tokio::spawn(async move {
                    let id = (41 + p).to_string();
                    for k in 0..EVENTS {
                        let date = format!("2022-{:02}-{:02}", 1 + k % 12, 1 + k / 12);
                        record(&api, &id, json!({"type": "document_collected", "effective_date": date})).await;
                        let t = api.get(&format!("/v1/persons/{id}/timeline")).await.body;
                        assert_eq!(events(&t), 3 + k, "person {id} after event {k}: {t}");
                        let v = api.get(&format!("/v1/persons/{id}")).await.body;
                        assert_eq!(v["last_sequence"], 3 + k as u64, "person {id} after event {k}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            r.await.unwrap();
        }
        for p in 0..PERSONS {
            read_and_check(&api, &(41 + p).to_string()).await;
        }
        let api = std::sync::Arc::into_inner(api).expect("every task is done");
        api.t.db.cleanup().await;
    }
);

on_both!(
    a_deemed_head_s_view_follows_the_other_members,
    |kind: Kind| async move {
        let api = Api::new(kind).await;
        for id in ["51", "52"] {
            record(&api, id, registered("1970-01-01")).await;
            record(&api, id, moved_in("2021-04-01", "980")).await;
        }
        let head = json!({"type": "household_head_changed", "effective_date": "2021-04-01", "person_id": "51"});
        assert_eq!(api.household("980", head).await.status, 201);
        record(
            &api,
            "51",
            json!({"type": "employee_insurance_joined", "effective_date": "2022-04-01"}),
        )
        .await;
        let deemed = |v: Value| v["deemed_head"].clone();
        read_and_check(&api, "51").await;
        assert_eq!(
            deemed(api.get("/v1/persons/51").await.body),
            true,
            "uninsured head, insured member"
        );
        // Every change below is another person's: person 51's own stream stays as it is.
        let steps = [
            // The only insured member leaves the NHI: no deemed head.
            (
                "52",
                json!({"type": "employee_insurance_joined", "effective_date": "2023-04-01"}),
                false,
            ),
            // A new insured member joins.
            ("53", registered("1990-01-01"), false),
            ("53", moved_in("2023-06-01", "980"), true),
            // … and moves to another household; then that move is rescinded (no event names
            // household 980, yet its members change back).
            (
                "53",
                json!({"type": "household_changed", "effective_date": "2023-09-01", "household_id": "981"}),
                false,
            ),
            (
                "53",
                json!({"type": "rescinded", "target_sequence": 3, "reason": "recorded in error"}),
                true,
            ),
        ];
        for (id, body, want) in steps {
            record(&api, id, body.clone()).await;
            read_and_check(&api, "51").await;
            assert_eq!(deemed(api.get("/v1/persons/51").await.body), want, "after {id} {body}");
        }
        assert!(api.t.ledger.reads().answers().hits(Resource::Person) > 0);
        api.t.db.cleanup().await;
    }
);
