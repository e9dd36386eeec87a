//! Defects found in review, each reproduced through the HTTP API on PostgreSQL and SQLite
//! (issue 10): the 75th-birthday job, the card-number sequence, system events and corrected
//! birth dates, the write answer's position, household membership and NHI head designations,
//! same-day facts in any recording order, consistent reads.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use axum::http::StatusCode;
use kokuho_ledger::jobs::age_out;
use kokuho_testing::api::{code, Api};
use serde_json::{json, Value};

fn d(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

/// Registered (born `birth`) and moved into `household` on 2020-01-10.
async fn resident(api: &Api, id: &str, birth: &str, household: &str) {
    let r = api
        .event(
            id,
            json!({"type": "registered", "effective_date": "2020-01-01", "name": "試験 一郎",
                "name_kana": "シケン　イチロウ", "birth_date": birth, "sex": "1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = api
        .event(
            id,
            json!({"type": "moved_in", "effective_date": "2020-01-10", "from": "other_prefecture", "household_id": household}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

async fn types(api: &Api, id: &str) -> Vec<String> {
    api.t
        .store
        .load_stream("person", id, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

on_both!(
    the_75th_birthday_job_picks_the_due_and_never_stops_at_a_refusal,
    |kind| async move {
        let api = Api::new(kind).await;
        // Died on the eve of the 75th birthday: insured on the eve, never on the birthday.
        resident(&api, "11", "1951-06-01", "1").await;
        let r = api
            .event("11", json!({"type": "died", "effective_date": "2026-05-31"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // Moved abroad on the eve: resident through the eve, lost on the birthday by the move.
        resident(&api, "12", "1951-07-01", "2").await;
        let r = api
            .event(
                "12",
                json!({"type": "moved_out", "effective_date": "2026-06-30", "to": "abroad"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // Due: insured up to their birthdays.
        resident(&api, "13", "1951-08-01", "3").await;
        resident(&api, "14", "1951-09-01", "4").await;
        // A read model that says person 15 is due when the history says not (as a stale or damaged
        // row would): the ledger refuses that confirmation, reports it, and goes on with 16.
        resident(&api, "15", "1951-10-01", "5").await;
        let r = api
            .event("15", json!({"type": "died", "effective_date": "2026-03-01"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        resident(&api, "16", "1951-11-01", "6").await;
        api.get("/v1/persons/16").await;
        let damage = "UPDATE proj_run SET loss_by_age = true, to_date = '2026-10-01', loss_reason = 'late_elderly' \
                  WHERE person_id = '15' AND known_to IS NULL";
        match (api.t.store.pg_pool(), api.t.store.sqlite_pool()) {
            (Some(p), _) => drop(sqlx::query(damage).execute(p).await.unwrap()),
            (None, Some(p)) => drop(sqlx::query(damage).execute(p).await.unwrap()),
            _ => unreachable!(),
        }
        let summary = age_out::run(&api.t.ledger, d("2026-11-25")).await.unwrap();
        assert_eq!((summary.recorded, summary.already), (3, 0), "{summary:?}");
        assert_eq!(summary.failed.len(), 1, "{summary:?}");
        assert_eq!(summary.failed[0].0, "15");
        assert!(summary.failed[0].1.contains("age_loss_not_due"), "{summary:?}");
        for id in ["13", "14", "16"] {
            assert!(
                types(&api, id).await.contains(&"late_elderly_age_reached".to_owned()),
                "{id}"
            );
        }
        for id in ["11", "12", "15"] {
            assert!(
                !types(&api, id).await.contains(&"late_elderly_age_reached".to_owned()),
                "{id}"
            );
        }
        // The next run records nobody twice and still reports the one it cannot record.
        let again = age_out::run(&api.t.ledger, d("2026-11-25")).await.unwrap();
        assert_eq!((again.recorded, again.failed.len()), (0, 1));
        api.t.db.cleanup().await;
    }
);

on_both!(
    card_numbers_come_from_the_sequence_not_from_typed_numbers,
    |kind| async move {
        let api = Api::new(kind).await;
        // A number of another width than the deployment's is refused.
        let r = api
            .household(
                "90",
                json!({"type": "card_number_assigned", "effective_date": "2024-04-01", "symbol": "1", "number": "123"}),
            )
            .await;
        assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_card_number"));
        // The largest number there is, typed in by hand, and a number the sequence would issue.
        for (household, number) in [("90", "99999999"), ("91", "00000002")] {
            let r = api
            .household(
                household,
                json!({"type": "card_number_assigned", "effective_date": "2024-04-01", "symbol": "1", "number": number}),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        // First joins of new households still get numbers: 1, then 3 (2 is taken).
        resident(&api, "1", "1980-01-01", "100").await;
        resident(&api, "2", "1980-01-01", "101").await;
        let card = |h: &'static str| {
            let api = &api;
            async move { api.get(&format!("/v1/households/{h}")).await.body["card"].clone() }
        };
        assert_eq!(card("100").await, json!({"symbol": "1", "number": "00000001"}));
        assert_eq!(card("101").await, json!({"symbol": "1", "number": "00000003"}));
        // The typed-in cards serve their households' joins.
        resident(&api, "3", "1980-01-01", "90").await;
        assert_eq!(api.get("/v1/persons/3").await.body["card"]["number"], "99999999");
        api.t.db.cleanup().await;
    }
);

/// The person's `late_elderly_age_reached` events: (sequence, effective date, status).
async fn confirmations(api: &Api, id: &str) -> Vec<(i64, Value, Value)> {
    let t = api.get(&format!("/v1/persons/{id}/timeline")).await;
    t.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "late_elderly_age_reached")
        .map(|e| {
            (
                e["sequence"].as_i64().unwrap(),
                e["effective_date"].clone(),
                e["status"].clone(),
            )
        })
        .collect()
}

on_both!(system_events_follow_a_corrected_birth_date, |kind| async move {
    let api = Api::new(kind).await;
    resident(&api, "21", "1951-06-01", "20").await;
    age_out::run(&api.t.ledger, d("2026-11-25")).await.unwrap();
    assert_eq!(
        confirmations(&api, "21").await,
        vec![(3, json!("2026-06-01"), json!("in_force"))]
    );
    // The ledger's own event is neither rescinded nor corrected from the API.
    let r = api
        .event(
            "21",
            json!({"type": "rescinded", "target_sequence": 3, "reason": "mistake"}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "system_event_only")
    );
    let r = api
        .event(
            "21",
            json!({"type": "corrected", "target_sequence": 3, "replacement": {"type": "late_elderly_age_reached", "effective_date": "2026-06-02"}}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "system_event_only")
    );

    // The birth date is corrected three months earlier: the confirmation follows it in the
    // same commit (a system correction), and the answer lists it.
    let registration = |birth: &str| {
        json!({"type": "corrected", "target_sequence": 1, "replacement": {"type": "registered",
            "effective_date": "2020-01-01", "name": "試験 一郎", "name_kana": "シケン　イチロウ", "birth_date": birth, "sex": "1"}})
    };
    let r = api.event("21", registration("1951-03-01")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["sequence"], 4);
    assert_eq!(
        r.body["consequences"],
        json!([{"stream": "person", "stream_id": "21", "sequence": 5, "position": r.body["position"].as_i64().unwrap() + 1, "type": "corrected"}])
    );
    let log = api.t.store.load_stream("person", "21", None).await.unwrap();
    assert_eq!(log[4].metadata.value().unwrap()["actor"], "system");
    assert_eq!(
        log[4].payload.value().unwrap()["replacement"]["effective_date"],
        "2026-03-01"
    );
    assert_eq!(
        confirmations(&api, "21").await,
        vec![(3, json!("2026-06-01"), json!("corrected"))]
    );
    let correction = r.body["position"].as_i64().unwrap();
    // The feed announces the corrected loss once, for the correction's cause.
    api.t.ledger.projections().catch_up().await.unwrap();
    let feed = api.get_now("/v1/feed?after=0&limit=1000").await.body["records"].clone();
    let lost: Vec<&Value> = feed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "individual" && r["person_id"] == "21" && r["cause_position"] == correction)
        .collect();
    assert_eq!(lost.len(), 1, "{feed}");
    assert_eq!(
        (
            &lost[0]["disqualified_on"],
            &lost[0]["applied_to"],
            &lost[0]["loss_code"]
        ),
        (&json!("2026-03-01"), &json!("2026-02-28"), &json!("03"))
    );

    // Corrected so that the 75th birthday is still to come: the confirmation is rescinded.
    let r = api.event("21", registration("1952-06-01")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["consequences"][0]["type"], "rescinded");
    assert_eq!(
        confirmations(&api, "21").await,
        vec![(3, json!("2026-06-01"), json!("rescinded"))]
    );
    let t = api.get("/v1/persons/21/timeline").await;
    assert_eq!(t.body["intervals"][0]["to"], "2027-06-01");
    // And back into the past: confirmed again, at the corrected birthday.
    let r = api.event("21", registration("1951-04-01")).await;
    assert_eq!(
        r.body["consequences"][0]["type"], "late_elderly_age_reached",
        "{}",
        r.body
    );
    let now = confirmations(&api, "21").await;
    assert_eq!(now.last().unwrap().1, json!("2026-04-01"));
    assert_eq!(now.last().unwrap().2, json!("in_force"));
    // The daily job finds nothing left to do.
    let summary = age_out::run(&api.t.ledger, d("2026-11-25")).await.unwrap();
    assert_eq!((summary.recorded, summary.failed.len()), (0, 0));
    api.t.db.cleanup().await;
});

on_both!(
    a_late_death_before_the_75th_birthday_rescinds_the_confirmation,
    |kind| async move {
        let api = Api::new(kind).await;
        resident(&api, "22", "1951-06-01", "20").await;
        age_out::run(&api.t.ledger, d("2026-11-25")).await.unwrap();
        // The death (before the birthday) is reported late: accepted, and the confirmation that
        // no longer holds is rescinded in the same commit.
        let r = api
            .event("22", json!({"type": "died", "effective_date": "2026-05-20"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["consequences"][0]["type"], "rescinded");
        assert_eq!(confirmations(&api, "22").await[0].2, json!("rescinded"));
        let p = api.get("/v1/persons/22").await;
        assert_eq!(
            (&p.body["loss_reason"], &p.body["disqualified_on"]),
            (&json!("died"), &json!("2026-05-21"))
        );
        api.t.db.cleanup().await;
    }
);

on_both!(the_nhi_head_designation_lapses_and_members_leave, |kind| async move {
    let api = Api::new(kind).await;
    resident(&api, "51", "1980-01-01", "50").await;
    resident(&api, "52", "1982-01-01", "50").await;
    let head = json!({"type": "household_head_changed", "effective_date": "2020-01-10", "person_id": "51"});
    assert_eq!(api.household("50", head).await.status, StatusCode::CREATED);
    let designate = json!({"type": "nhi_head_designated", "effective_date": "2021-01-01", "person_id": "52"});
    assert_eq!(api.household("50", designate).await.status, StatusCode::CREATED);
    let h = api.get("/v1/households/50").await;
    assert_eq!(h.body["nhi_head_person_id"], "52");
    let before = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // The designated head moves out of the ward.
    let r = api
        .event(
            "52",
            json!({"type": "moved_out", "effective_date": "2026-10-01", "to": "other_prefecture"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let h = api.get("/v1/households/50").await;
    assert_eq!(h.body["nhi_head_person_id"], "51", "the designation lapsed: {}", h.body);
    assert_eq!(
        h.body["members"],
        json!([{"person_id": "51", "insured": true, "branch": "01"}])
    );
    assert_eq!(api.get("/v1/persons/52").await.body["household_id"], Value::Null);
    // As known before the move-out was recorded: still a member and the NHI head.
    let then = api.get(&format!("/v1/households/50?as_of={before}")).await;
    assert_eq!(then.body["nhi_head_person_id"], "52", "{}", then.body);
    assert_eq!(then.body["members"].as_array().unwrap().len(), 2);
    // A person who is not a member that day cannot be named register head.
    let r = api
        .household(
            "50",
            json!({"type": "household_head_changed", "effective_date": "2026-10-05", "person_id": "52"}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::UNPROCESSABLE_ENTITY, "not_a_member"));
    // The feed's household record follows: the register head is the NHI head again.
    api.t.ledger.projections().catch_up().await.unwrap();
    let feed = api.get_now("/v1/feed?after=0&limit=1000").await.body["records"].clone();
    let last_household = feed
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["kind"] == "household" && r["household_id"] == "50")
        .unwrap()
        .clone();
    assert_eq!(last_household["nhi_head_person_id"], "51", "{last_household}");
    api.t.db.cleanup().await;
});

on_both!(same_day_facts_in_any_recording_order, |kind| async move {
    let api = Api::new(kind).await;
    resident(&api, "61", "1980-01-01", "60").await;
    resident(&api, "62", "1980-01-01", "60").await;
    let change = json!({"type": "household_changed", "effective_date": "2026-10-01", "household_id": "63"});
    let out = json!({"type": "moved_out", "effective_date": "2026-10-01", "to": "other_prefecture"});
    // In order: the change, then the move-out.
    for body in [&change, &out] {
        let r = api.event("61", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // The move-out recorded first: the change of the same day is still accepted.
    for body in [&out, &change] {
        let r = api.event("62", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // (Their branch numbers under the household's card differ; nothing else may.)
    let intervals = |id: &'static str| {
        let api = &api;
        async move {
            let mut v = api.get(&format!("/v1/persons/{id}/timeline")).await.body["intervals"].clone();
            for i in v.as_array_mut().unwrap() {
                i["card"]["branch"] = Value::Null;
            }
            v
        }
    };
    let (a, b) = (intervals("61").await, intervals("62").await);
    assert_eq!(a, b, "the same history whatever the recording order");
    assert_eq!(a[0]["to"], "2026-10-01");
    api.t.db.cleanup().await;
});

on_both!(reads_are_consistent_by_default, |kind| async move {
    let api = Api::new(kind).await;
    // Written and read at once, with no header: the read includes the write.
    for i in 0..20 {
        let id = format!("{}", 700 + i);
        resident(&api, &id, "1980-01-01", "70").await;
        let p = api.get(&format!("/v1/persons/{id}")).await;
        assert_eq!(
            (p.status, &p.body["insured"]),
            (StatusCode::OK, &json!(true)),
            "{}",
            p.body
        );
        let t = api.get(&format!("/v1/persons/{id}/timeline")).await;
        assert_eq!(t.body["events"].as_array().unwrap().len(), 2);
    }
    // A position beyond the log head is refused at once.
    let head = api.head().await;
    let started = std::time::Instant::now();
    let r = api.get(&format!("/v1/persons/700?min_position={}", head + 1)).await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_min_position"));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let r = api
        .get_with("/v1/persons/700", &[("x-min-position", &(head + 5).to_string())])
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_min_position"));
    // Eventual reads opt out of the wait; an unknown consistency is refused.
    let r = api.get("/v1/persons/700?consistency=eventual").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.get_with("/v1/persons/700", &[("x-consistency", "eventual")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.get("/v1/persons/700?consistency=strong").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_consistency"));
    api.t.db.cleanup().await;
});

on_both!(reads_on_another_ledger_see_the_write, |kind| async move {
    // Two ledgers on one database ("two instances"): the second has no runner of its own
    // started before the write, and reads what the first wrote, with no header.
    let a = Api::new(kind).await;
    let b = Api::with(common::ledger_on(a.t.db.share(), true).await).await;
    resident(&a, "801", "1980-01-01", "80").await;
    let p = b.get("/v1/persons/801").await;
    assert_eq!(
        (p.status, &p.body["insured"]),
        (StatusCode::OK, &json!(true)),
        "{}",
        p.body
    );
    a.t.db.cleanup().await;
});

on_both!(a_register_head_who_leaves_heads_nothing, |kind| async move {
    let api = Api::new(kind).await;
    resident(&api, "55", "1980-01-01", "56").await;
    resident(&api, "57", "1982-01-01", "56").await;
    let head = json!({"type": "household_head_changed", "effective_date": "2020-01-10", "person_id": "55"});
    assert_eq!(api.household("56", head).await.status, StatusCode::CREATED);
    let r = api
        .event(
            "55",
            json!({"type": "moved_out", "effective_date": "2026-09-01", "to": "abroad"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let h = api.get("/v1/households/56").await;
    assert_eq!(
        (
            &h.body["head_person_id"],
            &h.body["nhi_head_person_id"],
            &h.body["deemed_head"]
        ),
        (&Value::Null, &Value::Null, &json!(false)),
        "{}",
        h.body
    );
    api.t.ledger.projections().catch_up().await.unwrap();
    let feed = api.get_now("/v1/feed?after=0&limit=1000").await.body["records"].clone();
    let last = feed
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["kind"] == "household" && r["household_id"] == "56")
        .unwrap()
        .clone();
    assert_eq!(last["nhi_head_person_id"], Value::Null, "{last}");
    api.t.db.cleanup().await;
});
