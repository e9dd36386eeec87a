//! The HTTP API against the router (tower oneshot), on SQLite and PostgreSQL: every status
//! code of api.md, idempotent retries, If-Match, and that refused requests write nothing.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::Kind;
use http_body_util::BodyExt;
use kokuho_testing::api::{code, Api};
use serde_json::{json, Value};
use tower::ServiceExt;

on_both!(records_a_move_in_and_reads_the_timeline, |kind| async move {
    let api = Api::new(kind).await;
    let r = api.register("100000000001", "1980-06-15").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        (
            r.body["person_id"].as_str(),
            r.body["sequence"].as_i64(),
            r.body["position"].as_i64()
        ),
        (Some("100000000001"), Some(1), Some(1))
    );
    assert!(r.body["recorded_at"].as_str().unwrap().ends_with('Z'));
    let r = api
        .event(
            "100000000001",
            json!({"type": "moved_in", "effective_date": "2025-04-01", "reported_date": "2025-04-03",
        "from": "other_prefecture", "household_id": "200000000001"}),
        )
        .await;
    // The move-in makes the household's first insured member: its card number (position 3)
    // and the person's branch number (position 4) are recorded with it, atomically. The
    // answer's position is the move-in's own; the consequences are listed (api.md).
    assert_eq!(
        (r.status, r.body["sequence"].as_i64(), r.body["position"].as_i64()),
        (StatusCode::CREATED, Some(2), Some(2))
    );
    assert_eq!(
        r.body["consequences"],
        json!([
            {"stream": "household", "stream_id": "200000000001", "sequence": 1, "position": 3, "type": "card_number_assigned"},
            {"stream": "household", "stream_id": "200000000001", "sequence": 2, "position": 4, "type": "branch_number_issued"}
        ])
    );
    assert_eq!(r.body["last_position"], 4);
    // The audit entry at the answered position is the move-in itself.
    let entry = api.t.store.read_log(1, 1).await.unwrap();
    assert_eq!((entry[0].position, entry[0].event_type.as_str()), (2, "moved_in"));
    let log = api.t.store.read_log(1, 10).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (
                e.aggregate_id.as_str(),
                e.event_type.as_str(),
                e.metadata.value().unwrap()["actor"].as_str().map(str::to_owned)
            ))
            .collect::<Vec<_>>(),
        vec![
            ("100000000001", "moved_in", Some(Api::NAME.to_owned())),
            ("200000000001", "card_number_assigned", Some("system".to_owned())),
            ("200000000001", "branch_number_issued", Some("system".to_owned())),
        ]
    );
    assert_eq!(log[2].payload.value().unwrap()["branch"], "01");
    assert_eq!(log[1].payload.value().unwrap()["number"], "00000001");

    let t = api.get("/v1/persons/100000000001/timeline").await;
    assert_eq!(t.status, StatusCode::OK);
    let i = &t.body["intervals"][0];
    assert_eq!(i["from"], "2025-04-01");
    assert_eq!(i["acquisition_reason"], "moved_in");
    assert_eq!(i["qualified_on"], "2025-04-01");
    assert_eq!(i["household_id"], "200000000001");
    assert_eq!(i["to"], "2055-06-15", "the 75th birthday is a known future loss");
    assert_eq!(t.body["events"][1]["late_report"], false);
    assert_eq!(
        t.body["events"][0]["late_report"], true,
        "registered 2020, reported 2026"
    );
    assert_eq!(t.body["events"][1]["status"], "in_force");

    let p = api.get("/v1/persons/100000000001").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(
        (p.body["insured"].as_bool(), p.body["applied_from"].as_str()),
        (Some(true), Some("2025-04-01"))
    );
    assert_eq!(p.body["household_id"], "200000000001");
    assert_eq!(
        (p.body["disqualified_on"].clone(), p.body["applied_to"].clone()),
        (Value::Null, Value::Null),
        "api.md: open today"
    );
    assert_eq!(p.body["late_elderly_on"], "2055-06-15");
    assert!(p.body.get("my_number").is_none());
    assert!(!p.body.to_string().contains("123456789018"));

    let e = api.get("/v1/persons/100000000001/eligibility?on=2025-03-31").await;
    assert_eq!((e.status, e.body["insured"].as_bool()), (StatusCode::OK, Some(false)));
    let e = api.get("/v1/persons/100000000001/eligibility?on=2025-04-01").await;
    assert_eq!(e.body["insured"], true);
    assert_eq!(e.body["interval"]["from"], "2025-04-01");
    api.t.db.cleanup().await;
});

on_both!(malformed_requests_are_400_and_write_nothing, |kind| async move {
    let api = Api::new(kind).await;
    api.register("1", "1980-06-15").await;
    let head = api.head().await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("/v1/persons/1/events", "{not json".into(), "invalid_json"),
        ("/v1/persons/1/events", "[1,2]".into(), "invalid_body"),
        ("/v1/persons/1/events", json!({"type": "died", "effective_date": "2025-01-01", "colour": "red"}).to_string(), "unknown_field"),
        ("/v1/persons/1/events", json!({"type": "teleported", "effective_date": "2025-01-01"}).to_string(), "unknown_event_type"),
        ("/v1/persons/1/events", json!({"type": "died", "effective_date": "2025/01/01"}).to_string(), "invalid_date"),
        ("/v1/persons/1/events", json!({"type": "died"}).to_string(), "missing_field"),
        ("/v1/persons/12345678901234567/events", json!({"type": "died", "effective_date": "2025-01-01"}).to_string(), "invalid_person_id"),
        ("/v1/persons/abc/events", json!({"type": "died", "effective_date": "2025-01-01"}).to_string(), "invalid_person_id"),
        ("/v1/persons/1/events", json!({"type": "moved_in", "effective_date": "2025-01-01", "from": "abroad", "household_id": "x1"}).to_string(), "invalid_household_id"),
        ("/v1/persons/2/events", json!({"type": "registered", "effective_date": "2020-01-01", "name": "A", "name_kana": "ア", "birth_date": "1980-01-01", "sex": "1", "my_number": "123456789019"}).to_string(), "invalid_my_number"),
        ("/v1/persons/2/events", json!({"type": "registered", "effective_date": "2020-01-01", "name": "A", "name_kana": "ア", "birth_date": "1980-01-01", "sex": "9"}).to_string(), "invalid_sex"),
        ("/v1/persons/2/events", json!({"type": "registered", "effective_date": "2020-01-01", "name": "A", "name_kana": "abc", "birth_date": "1980-01-01", "sex": "1"}).to_string(), "invalid_kana"),
        ("/v1/persons/2/events", json!({"type": "registered", "effective_date": "2020-01-01", "name": "", "name_kana": "ア", "birth_date": "1980-01-01", "sex": "1"}).to_string(), "invalid_name"),
        ("/v1/households/1/events", json!({"type": "household_head_changed", "effective_date": "2025-01-01", "person_id": "p"}).to_string(), "invalid_person_id"),
        ("/v1/households/h/events", json!({"type": "nhi_head_designation_revoked", "effective_date": "2025-01-01"}).to_string(), "invalid_household_id"),
    ];
    for (path, body, expected) in cases {
        let r = api.post(path, &body, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {body}: {}", r.body);
        assert_eq!(code(&r), expected, "{path} {body}");
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = api
        .post(
            "/v1/persons/1/events",
            &json!({"type": "died", "effective_date": "2025-01-01"}).to_string(),
            &[("if-match", "abc")],
        )
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_if_match"));
    let r = api.get("/v1/persons/1?as_of=yesterday").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_as_of"));
    let r = api.get("/v1/persons/1/eligibility?on=2025-13-01").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_on"));
    assert_eq!(api.head().await, head, "no 400 wrote anything");
    api.t.db.cleanup().await;
});

on_both!(domain_refusals_are_422_and_write_nothing, |kind| async move {
    let api = Api::new(kind).await;
    let r = api
        .event("5", json!({"type": "died", "effective_date": "2025-01-01"}))
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "person_not_registered")
    );
    api.register("5", "1980-06-15").await;
    let head = api.head().await;
    let cases = [
        (
            json!({"type": "moved_out", "effective_date": "2025-01-01", "to": "abroad"}),
            "not_resident",
        ),
        (json!({"type": "died", "effective_date": "2027-01-01"}), "future_date"),
        (
            json!({"type": "welfare_ended", "effective_date": "2025-01-01"}),
            "exclusion_not_started",
        ),
        (
            json!({"type": "late_elderly_age_reached", "effective_date": "2025-01-01"}),
            "system_event_only",
        ),
        (
            json!({"type": "rescinded", "target_sequence": 1, "reason": "x"}),
            "cannot_rescind_registration",
        ),
        (
            json!({"type": "corrected", "target_sequence": 9, "replacement": {"type": "died", "effective_date": "2025-01-01"}}),
            "target_not_found",
        ),
    ];
    for (body, expected) in cases {
        let r = api.event("5", body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.body);
        assert_eq!(code(&r), expected, "{body}");
    }
    let r = api.register("5", "1980-06-15").await;
    assert_eq!(code(&r), "already_registered");
    let r = api
        .post(
            "/v1/households/9/events",
            &json!({"type": "household_head_changed", "effective_date": "2025-01-01", "person_id": "5"}).to_string(),
            &[],
        )
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::UNPROCESSABLE_ENTITY, "not_a_member"));
    assert_eq!(api.head().await, head);
    api.t.db.cleanup().await;
});

on_both!(unknown_persons_and_routes_are_404, |kind| async move {
    let api = Api::new(kind).await;
    for path in [
        "/v1/persons/404",
        "/v1/persons/404/timeline",
        "/v1/persons/404/eligibility?on=2025-01-01",
    ] {
        let r = api.get(path).await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::NOT_FOUND, "person_not_found"),
            "{path}"
        );
    }
    let r = api.get("/v1/nothing").await;
    assert_eq!((r.status, code(&r)), (StatusCode::NOT_FOUND, "not_found"));
    // The framework's own refusals carry the error body too.
    let r = api
        .send(Request::delete("/v1/persons/1").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let r = api.get("/v1/persons/1?as_of=%ZZ").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_as_of"));
    let r = api.get("/v1/persons/%FF%FE").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_path"));
    api.t.db.cleanup().await;
});

on_both!(if_match_conflicts_are_409, |kind| async move {
    let api = Api::new(kind).await;
    api.register("6", "1980-06-15").await;
    let body =
        json!({"type": "moved_in", "effective_date": "2025-04-01", "from": "abroad", "household_id": "1"}).to_string();
    let r = api.post("/v1/persons/6/events", &body, &[("if-match", "\"0\"")]).await;
    assert_eq!((r.status, code(&r)), (StatusCode::CONFLICT, "sequence_conflict"));
    assert_eq!(api.head().await, 1);
    let r = api.post("/v1/persons/6/events", &body, &[("if-match", "\"1\"")]).await;
    assert_eq!((r.status, r.body["sequence"].as_i64()), (StatusCode::CREATED, Some(2)));
    api.t.db.cleanup().await;
});

// A registration is decided before its stream is read (commands::Command::creates_stream):
// whatever the stream holds, the answer must be the one a read would have given.
on_both!(a_registration_answers_as_if_its_stream_was_read, |kind| async move {
    let api = Api::new(kind).await;
    // Process-wide counters (other tests may add to them meanwhile, never take away).
    let m = kokuho_ledger::metrics::global();
    let before = (
        m.registrations_unread_answered.get(),
        m.registrations_unread_read_again.get(),
    );
    let r = api.register("8", "1980-06-15").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Refused on the stream's history, not on the empty stream it was first decided against
    // (there, the future date would have been the refusal).
    let future = json!({"type": "registered", "effective_date": "2099-01-01", "name": "山田 太郎",
        "name_kana": "ヤマダ　タロウ", "birth_date": "1980-06-15", "sex": "1"})
    .to_string();
    for headers in [&[][..], &[("if-match", "\"1\"")][..]] {
        let r = api.post("/v1/persons/8/events", &future, headers).await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::UNPROCESSABLE_ENTITY, "already_registered"),
            "{headers:?}"
        );
        let r = api.register("8", "1980-06-15").await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::UNPROCESSABLE_ENTITY, "already_registered")
        );
    }
    // On a new stream the date rules still answer.
    let r = api.post("/v1/persons/9/events", &future, &[]).await;
    assert_eq!((r.status, code(&r)), (StatusCode::UNPROCESSABLE_ENTITY, "future_date"));
    assert_eq!(api.head().await, 1, "refusals write nothing");

    // Eight registrations of one new person at once: one is written, the others are refused
    // on what it wrote.
    let answers = futures::future::join_all((0..8).map(|_| api.register("10", "1990-01-01"))).await;
    let mut statuses: Vec<(u16, String)> = answers
        .iter()
        .map(|r| {
            (
                r.status.as_u16(),
                r.body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses[0].0, 201, "{statuses:?}");
    assert!(
        statuses[1..]
            .iter()
            .all(|(s, c)| *s == 422 && c == "already_registered"),
        "{statuses:?}"
    );
    assert_eq!(api.head().await, 2);
    let stream = api.t.store.load_stream("person", "10", None).await.unwrap();
    assert_eq!(stream.len(), 1);
    // Two registrations answered unread; read again: the two refusals on person 8 without
    // If-Match, the future date on person 9, and the seven refused of the eight.
    assert!(m.registrations_unread_answered.get() - before.0 >= 2);
    assert!(m.registrations_unread_read_again.get() - before.1 >= 10);
    let text = api.get("/metrics").await.body.as_str().unwrap().to_owned();
    assert!(
        text.contains("kokuho_registrations_unread_total{outcome=\"read_again\"}"),
        "{text}"
    );
    api.t.db.cleanup().await;
});

// The forms src/http/openapi.json states, at their edges (the schemathesis run of
// scripts/schemathesis.sh holds the whole document against the server).
on_both!(headers_and_numbers_take_the_documented_forms, |kind| async move {
    let api = Api::new(kind).await;
    api.register("7", "1980-06-15").await;
    let collected = json!({"type": "document_collected", "effective_date": "2025-04-01"}).to_string();
    // If-Match: "N", N or W/"N", at most 18 digits.
    for bad in ["\"\"1\"\"", "W/W/1", "+1", "\"1", "1234567890123456789", "W/ \"1\""] {
        let r = api.post("/v1/persons/7/events", &collected, &[("if-match", bad)]).await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::BAD_REQUEST, "invalid_if_match"),
            "{bad}"
        );
    }
    let r = api
        .post("/v1/persons/7/events", &collected, &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!((r.status, r.body["sequence"].as_i64()), (StatusCode::CREATED, Some(2)));
    let r = api
        .post(
            "/v1/persons/7/events",
            &collected,
            &[("if-match", "000000000000000002")],
        )
        .await;
    assert_eq!((r.status, r.body["sequence"].as_i64()), (StatusCode::CREATED, Some(3)));
    // A whole number written with a fraction is that integer.
    let correction = json!({"type": "corrected", "target_sequence": 2.0,
        "replacement": {"type": "document_collected", "effective_date": "2025-04-02"}});
    let r = api.event("7", correction).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for bad in [json!(2.5), json!(0.0), json!(-1.0)] {
        let body = json!({"type": "rescinded", "target_sequence": bad, "reason": "x"});
        let r = api.event("7", body).await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::BAD_REQUEST, "invalid_field"),
            "{bad}"
        );
    }
    // The query parameter wins over its header, but a malformed header is refused all the same.
    let r = api
        .get_with("/v1/persons/7?min_position=1", &[("x-min-position", "one")])
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_min_position"));
    let r = api.get_with("/v1/persons/7", &[("x-min-position", "é")]).await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_min_position"));
    let r = api
        .get_with("/v1/persons/7?consistency=eventual", &[("x-consistency", "later")])
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_consistency"));
    let r = api
        .get_with("/v1/persons/7?min_position=1", &[("x-min-position", "99")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An as_of past the year 9999 in UTC is after everything, like any later instant.
    for t in [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:00:00-05:00",
        "9999-12-31T23:59:60-23:59",
    ] {
        let r = api.get(&format!("/v1/persons/7?as_of={t}")).await;
        assert_eq!(r.status, StatusCode::OK, "{t}: {}", r.body);
    }
    api.t.db.cleanup().await;
});

on_both!(idempotent_retry_returns_the_first_response, |kind| async move {
    let api = Api::new(kind).await;
    api.register("8", "1980-06-15").await;
    let body =
        json!({"type": "moved_in", "effective_date": "2025-04-01", "from": "abroad", "household_id": "1"}).to_string();
    let first = api
        .post("/v1/persons/8/events", &body, &[("idempotency-key", "k-1")])
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let head = api.head().await;
    let again = api
        .post("/v1/persons/8/events", &body, &[("idempotency-key", "k-1")])
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(api.head().await, head, "the retry wrote nothing");
    let other = json!({"type": "died", "effective_date": "2025-05-01"}).to_string();
    let r = api
        .post("/v1/persons/8/events", &other, &[("idempotency-key", "k-1")])
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // Concurrent retries with one key: one write, the same answer for all.
    let body = json!({"type": "welfare_started", "effective_date": "2025-06-01"}).to_string();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = api.router.clone();
        let body = body.clone();
        let auth = format!("Bearer {}", api.token);
        tasks.push(tokio::spawn(async move {
            let req = Request::post("/v1/persons/8/events")
                .header("authorization", auth)
                .header("idempotency-key", "k-2")
                .body(Body::from(body))
                .unwrap();
            let res = router.oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            res.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(api.head().await, head + 1);
    // A retry carrying the If-Match of its first attempt still gets the first answer, not 409.
    let body = json!({"type": "document_collected", "effective_date": "2025-07-01"}).to_string();
    let last = api.get("/v1/persons/8").await.body["last_sequence"]
        .as_i64()
        .unwrap()
        .to_string();
    let headers = [("idempotency-key", "k-3"), ("if-match", last.as_str())];
    let first = api.post("/v1/persons/8/events", &body, &headers).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = api.post("/v1/persons/8/events", &body, &headers).await;
    assert_eq!((again.status, &again.body), (StatusCode::CREATED, &first.body));
    assert_eq!(api.head().await, head + 2);
    api.t.db.cleanup().await;
});

on_both!(bodies_over_one_mebibyte_are_413, |kind| async move {
    let api = Api::new(kind).await;
    let big = format!(
        "{{\"type\": \"died\", \"effective_date\": \"2025-01-01\", \"pad\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let r = api.post("/v1/persons/1/events", &big, &[]).await;
    assert_eq!((r.status, code(&r)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    assert_eq!(api.head().await, 0);
    api.t.db.cleanup().await;
});

on_both!(storage_failures_are_answered_without_details, |kind| async move {
    let api = Api::new(kind).await;
    api.register("3", "1980-06-15").await;
    api.t.store.close().await;
    // The read fails, and so does its access record: no answer leaves without its record.
    let r = api.get_now("/v1/persons/3").await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::SERVICE_UNAVAILABLE, "access_log_unavailable")
    );
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(!msg.to_lowercase().contains("pool") && !msg.contains("sql"), "{msg}");
    let r = api.get_now("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    api.t.db.cleanup().await;
});

on_both!(as_of_before_and_after_a_correction, |kind| async move {
    let api = Api::new(kind).await;
    let reg = api.register("4", "1960-06-15").await;
    api.event(
        "4",
        json!({"type": "moved_in", "effective_date": "2020-01-10", "from": "abroad", "household_id": "1"}),
    )
    .await;
    let death = api
        .event("4", json!({"type": "died", "effective_date": "2025-03-31"}))
        .await;
    assert_eq!(death.status, StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let fix = api
        .event(
            "4",
            json!({"type": "corrected", "target_sequence": 3,
        "replacement": {"type": "died", "effective_date": "2025-02-14"}}),
        )
        .await;
    assert_eq!(fix.status, StatusCode::CREATED, "{}", fix.body);

    let now = api.get("/v1/persons/4/timeline").await;
    assert_eq!(now.body["intervals"][0]["to"], "2025-02-15");
    assert_eq!(now.body["intervals"][0]["loss_code"], "01");
    assert_eq!(now.body["events"][2]["status"], "corrected");
    assert_eq!(now.body["events"][3]["status"], "in_force");

    let at = |t: &str| format!("/v1/persons/4/timeline?as_of={}", t.replace('+', "%2B"));
    let before = api.get(&at(death.body["recorded_at"].as_str().unwrap())).await;
    assert_eq!(
        before.body["intervals"][0]["to"], "2025-04-01",
        "as known before the correction"
    );
    assert_eq!(before.body["events"].as_array().unwrap().len(), 3);
    assert_eq!(before.body["events"][2]["status"], "in_force");
    let after = api.get(&at(fix.body["recorded_at"].as_str().unwrap())).await;
    assert_eq!(after.body["intervals"][0]["to"], "2025-02-15");
    let reg_at: chrono::DateTime<chrono::Utc> = reg.body["recorded_at"].as_str().unwrap().parse().unwrap();
    let earlier = (reg_at - chrono::Duration::seconds(1)).to_rfc3339();
    let r = api.get(&at(&earlier)).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::NOT_FOUND, "person_not_found"),
        "not yet recorded then"
    );
    // Eligibility as of: insured on 2025-03-01 before the correction, not after.
    let e = api
        .get(&format!(
            "/v1/persons/4/eligibility?on=2025-03-01&as_of={}",
            death.body["recorded_at"].as_str().unwrap()
        ))
        .await;
    assert_eq!(e.body["insured"], true);
    let e = api.get("/v1/persons/4/eligibility?on=2025-03-01").await;
    assert_eq!(e.body["insured"], false);
    api.t.db.cleanup().await;
});

on_both!(deemed_head_and_card_in_person_reads, |kind| async move {
    let api = Api::new(kind).await;
    // A card number recorded explicitly before anyone is insured is the one the joins use.
    let r = api
        .household(
            "300",
            json!({"type": "card_number_assigned", "effective_date": "2024-04-01", "symbol": "1", "number": "00000123"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for (id, birth) in [("21", "1970-01-01"), ("22", "1972-01-01")] {
        api.register(id, birth).await;
        api.event(
            id,
            json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "300"}),
        )
        .await;
    }
    let r = api
        .household(
            "300",
            json!({"type": "household_head_changed", "effective_date": "2024-04-01", "person_id": "21"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = api
        .household(
            "300",
            json!({"type": "card_number_assigned", "effective_date": "2024-04-01", "symbol": "1", "number": "00000124"}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "card_number_already_assigned")
    );
    let r = api
        .post(
            "/v1/households/301/events",
            &json!({"type": "card_number_assigned", "effective_date": "2024-04-01", "symbol": "1", "number": "00000123"})
                .to_string(),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "card_number_in_use")
    );
    let p = api.get("/v1/persons/21").await;
    assert_eq!(p.body["deemed_head"], false);
    assert_eq!(
        p.body["card"],
        json!({"insurer_number": "131999", "symbol": "1", "number": "00000123", "branch": "01"})
    );
    // The head joins employee insurance: from the day after, they are the deemed head.
    api.event(
        "21",
        json!({"type": "employee_insurance_joined", "effective_date": "2025-04-01"}),
    )
    .await;
    let p = api.get("/v1/persons/21").await;
    assert_eq!(
        (p.body["insured"].as_bool(), p.body["deemed_head"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(p.body["disqualified_on"], "2025-04-02");
    let r = api
        .household(
            "300",
            json!({"type": "nhi_head_designated", "effective_date": "2025-05-01", "person_id": "21"}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::UNPROCESSABLE_ENTITY, "not_insured"));
    let r = api
        .household(
            "300",
            json!({"type": "nhi_head_designated", "effective_date": "2025-05-01", "person_id": "22"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.household("300", json!({"type": "branch_number_issued", "effective_date": "2025-05-01", "person_id": "22", "symbol": "1", "number": "00000123", "branch": "01"})).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "system_event_only")
    );
    api.t.db.cleanup().await;
});

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_a_lagging_projection() {
    // No projection runner: the log moves on, the projections do not.
    let api = Api::with(common::ledger_with(Kind::Sqlite, false).await).await;
    api.register("1", "1980-06-15").await;
    let r = api.get_now("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "lag under 5 s is still ready: {}", r.body);
    assert_eq!(r.body["projections"][0]["lag_events"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    let r = api.get_now("/readyz").await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::SERVICE_UNAVAILABLE, "projection_lagging")
    );
    assert_eq!(r.body["status"], "lagging");
    assert!(r.body["projections"][0]["lag_seconds"].as_f64().unwrap() > 5.0);
    // A read that needs the write says why it cannot answer.
    let r = api.get("/v1/persons/1").await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::SERVICE_UNAVAILABLE, "projection_lagging")
    );
    let r = api.get_now("/v1/persons/1?min_position=x").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_min_position"));
    api.t.db.cleanup().await;
}

on_both!(feed_endpoint_checks_its_parameters, |kind| async move {
    let api = Api::new(kind).await;
    api.register("1", "1980-06-15").await;
    api.event(
        "1",
        json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "9"}),
    )
    .await;
    let r = api.get_now("/v1/feed?after=0&limit=1&wait=5").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["records"].as_array().unwrap().len(), 1);
    assert_eq!(
        (r.body["next_after"].as_i64(), r.body["records"][0]["kind"].as_str()),
        (Some(1), Some("household"))
    );
    let r = api.get_now("/v1/feed?after=1&limit=10&wait=5").await;
    assert_eq!(
        (r.body["next_after"].as_i64(), r.body["head"].as_i64()),
        (Some(2), Some(2))
    );
    // Nothing after the head: an empty page after the wait, the cursor unchanged.
    let r = api.get_now("/v1/feed?after=2&wait=1").await;
    assert_eq!(
        (
            r.body["records"].as_array().unwrap().len(),
            r.body["next_after"].as_i64()
        ),
        (0, Some(2))
    );
    for (q, code_) in [
        ("after=-1", "invalid_after"),
        ("after=x", "invalid_after"),
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("wait=31", "invalid_wait"),
    ] {
        let r = api.get_now(&format!("/v1/feed?{q}")).await;
        assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, code_), "{q}");
    }
    api.t.db.cleanup().await;
});

#[tokio::test]
async fn operations_endpoints() {
    let api = Api::new(Kind::Sqlite).await;
    let r = api.get("/healthz").await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("ok")));
    api.register("1", "1980-06-15").await;
    // Once a read has waited for the write and the feed has seen it, no projection lags.
    assert_eq!(api.get("/v1/persons/1").await.status, StatusCode::OK);
    assert_eq!(api.get_now("/v1/feed?after=0&wait=1").await.status, StatusCode::OK);
    for _ in 0..100 {
        let p = api.t.ledger.projections().status().await.unwrap();
        if p.iter().all(|s| s.lag_events == 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = api.get("/readyz").await;
    assert_eq!((r.status, r.body["log_head"].as_i64()), (StatusCode::OK, Some(1)));
    assert_eq!(
        r.body["projections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (
                p["name"].as_str().unwrap(),
                p["position"].as_i64().unwrap(),
                p["lag_events"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        vec![("persons", 1, 0), ("households", 1, 0), ("feed", 1, 0)]
    );
    let r = api.get("/metrics").await;
    let text = r.body.as_str().unwrap();
    assert!(text.contains("kokuho_log_head_position 1"), "{text}");
    assert!(
        text.contains("kokuho_projection_position{projection=\"persons\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kokuho_projection_lag_events{projection=\"households\"} 0"),
        "{text}"
    );
    assert!(text.contains("kokuho_http_responses_total{status=\"201\"}"));
    let r = api.get("/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().expect("an OpenAPI document with paths");
    for p in [
        "/v1/persons/{person_id}/events",
        "/v1/persons/{person_id}",
        "/v1/persons/{person_id}/timeline",
        "/v1/persons/{person_id}/eligibility",
        "/v1/households/{household_id}/events",
        "/v1/households/{household_id}",
        "/v1/cards/{symbol}/{number}/branches",
        "/v1/feed",
        "/v1/audit/checkpoint",
        "/v1/audit/entries/{position}",
        "/v1/audit/proof/inclusion",
        "/v1/audit/proof/consistency",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}");
    }
    let r = api
        .post(
            "/v1/persons/1/events",
            &json!({"type": "died", "effective_date": "2025-01-01"}).to_string(),
            &[("x-request-id", "req-123")],
        )
        .await;
    assert_eq!(r.headers.get("x-request-id").unwrap(), "req-123");
}

on_both!(my_number_never_enters_the_log, |kind| async move {
    let api = Api::new(kind).await;
    api.register("31", "1980-06-15").await;
    let fix = api.event("31", json!({"type": "corrected", "target_sequence": 1, "replacement": {"type": "registered",
        "effective_date": "2020-01-01", "name": "山田 太朗", "name_kana": "ヤマダ　タロウ", "birth_date": "1980-06-15", "sex": "1",
        "my_number": "000000000051"}})).await;
    assert_eq!(fix.status, StatusCode::CREATED, "{}", fix.body);
    let events = api.t.store.read_log(0, 100).await.unwrap();
    let raw = serde_json::to_string(&events.iter().map(|e| (&e.payload, &e.metadata)).collect::<Vec<_>>()).unwrap();
    assert!(!raw.contains("123456789018") && !raw.contains("000000000051"));
    let commitment = events[0].payload.value().unwrap()["my_number_commitment"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(commitment.len(), 64);
    let entry = kokuho_ledger::vault::numbers::entry(api.t.store.db(), &commitment)
        .await
        .unwrap()
        .expect("vault entry");
    assert_eq!(entry.person_id, "31");
    api.t.db.cleanup().await;
});

on_both!(concurrent_commands_without_if_match_all_land, |kind| async move {
    let api = Api::new(kind).await;
    api.register("61", "1980-06-15").await;
    api.event(
        "61",
        json!({"type": "moved_in", "effective_date": "2020-04-01", "from": "abroad", "household_id": "1"}),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let router = api.router.clone();
        let auth = format!("Bearer {}", api.token);
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"type": "document_collected", "effective_date": format!("2025-01-{:02}", i + 1)}).to_string();
            let res = router
                .oneshot(
                    Request::post("/v1/persons/61/events")
                        .header("authorization", auth)
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            let v: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
            v["sequence"].as_i64().unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(
        seqs,
        (3..=22).collect::<Vec<_>>(),
        "each command landed once, none lost to a conflict"
    );
    api.t.db.cleanup().await;
});

on_both!(household_and_card_reads, |kind| async move {
    let api = Api::new(kind).await;
    assert_eq!(
        api.household(
            "400",
            json!({"type": "card_number_assigned", "effective_date": "2024-04-01", "symbol": "1", "number": "00000400"})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    for id in ["41", "42"] {
        api.register(id, "1970-01-01").await;
        api.event(
            id,
            json!({"type": "moved_in", "effective_date": "2024-04-01", "from": "abroad", "household_id": "400"}),
        )
        .await;
    }
    let head = json!({"type": "household_head_changed", "effective_date": "2024-04-01", "person_id": "41"});
    assert_eq!(api.household("400", head).await.status, StatusCode::CREATED);
    let h = api.get("/v1/households/400").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    assert_eq!(
        (h.body["head_person_id"].as_str(), h.body["nhi_head_person_id"].as_str()),
        (Some("41"), Some("41"))
    );
    assert_eq!(h.body["deemed_head"], false);
    assert_eq!(h.body["card"], json!({"symbol": "1", "number": "00000400"}));
    assert_eq!(
        h.body["members"],
        json!([{"person_id": "41", "insured": true, "branch": "01"}, {"person_id": "42", "insured": true, "branch": "02"}])
    );

    // The head joins employee insurance while 42 stays insured: 41 is the deemed head from the
    // day the loss takes effect; as known before that was recorded, not.
    let before = api.get("/v1/households/400").await;
    let joined = api
        .event(
            "41",
            json!({"type": "employee_insurance_joined", "effective_date": "2025-04-01"}),
        )
        .await;
    let h = api.get("/v1/households/400").await;
    assert_eq!(h.body["deemed_head"], true);
    assert_eq!(
        h.body["members"][0],
        json!({"person_id": "41", "insured": false, "branch": "01"})
    );
    let at = |t: &str| format!("/v1/households/400?as_of={}", t);
    let earlier = chrono::DateTime::parse_from_rfc3339(joined.body["recorded_at"].as_str().unwrap()).unwrap()
        - chrono::Duration::microseconds(1);
    let h_then = api
        .get(&at(&earlier.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .await;
    assert_eq!(h_then.body, before.body);
    let e = api.get("/v1/persons/41/eligibility?on=2025-04-01").await;
    assert_eq!(
        e.body["insured"], true,
        "the one-day overlap: still insured on the join date"
    );
    let e = api.get("/v1/persons/41/eligibility?on=2025-04-02").await;
    assert_eq!(e.body["insured"], false);

    // Designation of an insured member as NHI head, and its revocation.
    let r = api
        .household(
            "400",
            json!({"type": "nhi_head_designated", "effective_date": "2025-05-01", "person_id": "42"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(api.get("/v1/households/400").await.body["nhi_head_person_id"], "42");
    let r = api
        .household(
            "400",
            json!({"type": "nhi_head_designation_revoked", "effective_date": "2025-06-01"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(api.get("/v1/households/400").await.body["nhi_head_person_id"], "41");
    let r = api
        .household(
            "400",
            json!({"type": "nhi_head_designation_revoked", "effective_date": "2025-07-01"}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "designation_not_active")
    );

    // The branch numbers the joins caused show under the card, the household and the person;
    // a branch number cannot be recorded by hand, not even an unused one.
    let log = api.t.store.read_log(0, 100).await.unwrap();
    let issued_at = |person: &str| {
        log.iter()
            .find(|e| e.event_type == "branch_number_issued" && e.payload.value().unwrap()["person_id"] == person)
            .map(|e| e.position)
            .unwrap()
    };
    let c = api.get("/v1/cards/1/00000400/branches").await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(
        c.body,
        json!({"symbol": "1", "number": "00000400", "household_id": "400",
            "branches": [{"branch": "01", "person_id": "41", "issued_at_position": issued_at("41")},
                         {"branch": "02", "person_id": "42", "issued_at_position": issued_at("42")}]})
    );
    assert_eq!(api.get("/v1/households/400").await.body["members"][1]["branch"], "02");
    assert_eq!(api.get("/v1/persons/42").await.body["card"]["branch"], "02");
    let issue = json!({"type": "branch_number_issued", "effective_date": "2024-04-01", "person_id": "42", "symbol": "1", "number": "00000400", "branch": "03"});
    let r = api.household("400", issue).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "system_event_only")
    );

    for (path, status, expected) in [
        ("/v1/households/999", StatusCode::NOT_FOUND, "household_not_found"),
        ("/v1/cards/1/999999/branches", StatusCode::NOT_FOUND, "card_not_found"),
        ("/v1/households/x1", StatusCode::BAD_REQUEST, "invalid_household_id"),
        (
            "/v1/cards/a%20b/1/branches",
            StatusCode::BAD_REQUEST,
            "invalid_card_symbol",
        ),
        (
            "/v1/cards/1/12a/branches",
            StatusCode::BAD_REQUEST,
            "invalid_card_number",
        ),
    ] {
        let r = api.get(path).await;
        assert_eq!((r.status, code(&r)), (status, expected), "{path}");
    }
    api.t.db.cleanup().await;
});

on_both!(what_a_new_user_meets, |kind| async move {
    let api = Api::new(kind).await;
    api.register("1", "1980-06-15").await;
    // An impossible day in the right format says so.
    for day in ["2025-02-30", "2010-13-01"] {
        let r = api.event("1", json!({"type": "died", "effective_date": day})).await;
        assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_date"));
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("is not a day of the calendar") && message.contains(day),
            "{message}"
        );
    }
    // A misspelt query parameter is refused, not ignored.
    let r = api.get("/v1/persons/1/eligibility?date=2025-01-01").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "unknown_parameter"));
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("on, as_of"),
        "{}",
        r.body
    );
    let r = api.get("/v1/persons/1?on=2025-01-01").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "unknown_parameter"));
    let r = api.get("/v1/persons/1/eligibility?on=2025-02-30").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_on"));
    // An as_of pasted with an unencoded `+` (which arrives as a space) is read as meant.
    let r = api.get("/v1/persons/1?as_of=2099-01-01T12:00:00+09:00").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.get("/v1/persons/1?as_of=2099-01-01T12:00:00%2B09:00").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.get("/v1/persons/1?as_of=yesterday").await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_as_of"));
    // A method a route does not take: 405 with Allow and the error body.
    let r = api
        .send(
            axum::http::Request::delete("/v1/persons/1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let allow = r.headers.get("allow").unwrap().to_str().unwrap();
    assert!(allow.contains("GET"), "{allow}");
    let r = api
        .send(Request::get("/v1/persons/1/events").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers.get("allow").unwrap().to_str().unwrap().contains("POST"));
    api.t.db.cleanup().await;
});

// The OpenAPI document and the route table describe the same routes: every route of the table
// is an operation of the document with the same method and template, and every operation is a
// route (a route cannot be added or removed without the document following). The open routes
// are exactly those marked `security: []`; every other operation inherits the global bearer
// requirement and documents 401 and 403.
#[test]
fn openapi_lists_exactly_the_route_table() {
    use std::collections::BTreeSet;
    let doc: Value = serde_json::from_str(include_str!("../src/http/openapi.json")).unwrap();
    // The staff console's HTML pages are not the API (console.md documents them).
    let table: Vec<_> = kokuho_ledger::http::routes::table()
        .into_iter()
        .filter(|r| !r.is_console())
        .collect();
    let methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| methods.contains(&m.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = table
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(missing.is_empty(), "routes missing from openapi.json: {missing:?}");
    assert!(
        extra.is_empty(),
        "operations of openapi.json that are no route: {extra:?}"
    );

    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    for route in &table {
        let label = format!("{} {}", route.method, route.path);
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        if route.open() {
            assert_eq!(op["security"], json!([]), "{label} is open: security []");
        } else {
            assert!(
                op.get("security").is_none(),
                "{label} needs the global bearer requirement"
            );
            for status in ["401", "403"] {
                assert!(op["responses"].get(status).is_some(), "{label} lacks {status}");
            }
        }
        // The template's parameters are the operation's path parameters.
        let in_template: BTreeSet<String> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let in_doc: BTreeSet<String> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| match p["$ref"].as_str() {
                Some(r) => &doc["components"]["parameters"][r.rsplit('/').next().unwrap()],
                None => p,
            })
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_template, in_doc, "{label}: path parameters");
    }
}

// Found by schemathesis: an export after a position beyond 2^53 − 1 put a number into the
// send ledger that the access record's canonical JSON cannot hold, which killed the access log
// writer, and every request after it answered 503. Such an `after` is refused now.
on_both!(an_export_after_beyond_the_exact_range_is_refused, |kind| async move {
    let api = Api::new(kind).await;
    api.register("11", "1980-06-15").await;
    for after in ["9007199254740992", "9223372036854775806"] {
        let r = api
            .get(&format!("/v1/exports/feed?file=individual&after={after}"))
            .await;
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::BAD_REQUEST, "invalid_after"),
            "{after}"
        );
    }
    let r = api.get("/v1/exports/feed?file=individual&after=9007199254740991").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers.get("x-last-position").unwrap(), "9007199254740991");
    // The access log still takes records.
    let r = api.get("/v1/persons/11").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    api.t.db.cleanup().await;
});

// Found by schemathesis: a Shift_JIS feed file was labelled `charset=utf-8`.
on_both!(a_shift_jis_feed_file_says_so, |kind| async move {
    let api = Api::new(kind).await;
    api.register("12", "1980-06-15").await;
    let r = api.get("/v1/exports/feed?file=individual").await;
    assert_eq!(r.headers.get("content-type").unwrap(), "text/csv; charset=utf-8");
    let r = api.get("/v1/exports/feed?file=individual&encoding=shift_jis").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers.get("content-type").unwrap(), "text/csv; charset=Shift_JIS");
    api.t.db.cleanup().await;
});

// Found by schemathesis: `actor` of the access records is 1–200 characters, not bytes.
on_both!(an_access_record_actor_is_counted_in_characters, |kind| async move {
    let api = Api::new(kind).await;
    let r = api.get(&format!("/v1/access-records?actor={}", "山".repeat(200))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.get(&format!("/v1/access-records?actor={}", "山".repeat(201))).await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_actor"));
    api.t.db.cleanup().await;
});

// Found by schemathesis: `expires_days` written with a fraction (`30.0`, a JSON Schema
// integer) was refused.
on_both!(
    a_token_expiry_written_with_a_fraction_is_that_integer,
    |kind| async move {
        use kokuho_ledger::access::Role;
        let api = Api::new(kind).await;
        let admin = format!("Bearer {}", api.token("admin-1", &[Role::Admin]).await);
        let create =
            |name: &str, days: Value| json!({"name": name, "roles": ["inquiry"], "expires_days": days}).to_string();
        let r = api
            .post(
                "/v1/tokens",
                &create("whole", json!(30.0)),
                &[("authorization", &admin)],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let listed = api.get_with("/v1/tokens", &[("authorization", &admin)]).await;
        let whole = listed.body["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "whole")
            .unwrap()
            .clone();
        assert!(whole["expires_at"].is_string(), "{whole}");
        for bad in [json!(30.5), json!(0.0), json!(3651.0)] {
            let r = api
                .post(
                    "/v1/tokens",
                    &create("fraction", bad.clone()),
                    &[("authorization", &admin)],
                )
                .await;
            assert_eq!(
                (r.status, code(&r)),
                (StatusCode::BAD_REQUEST, "invalid_token_request"),
                "{bad}"
            );
        }
        api.t.db.cleanup().await;
    }
);
