//! My Number protection (access.md) and person search (api.md), on SQLite and PostgreSQL: the
//! number only in its explicit reveal, search through the blind index for the `my_number`
//! role, no column from which a database reader could brute-force it, erasure that leaves a
//! verifying audit trail, and the move of old plain-salt entries into the sealed vault.

use kokuho_testing as common;
use kokuho_testing::on_both;

use std::sync::Arc;

use axum::http::StatusCode;
use common::api::{code, Api, Reply};
use common::TestDb;
use kokuho_ledger::access::Role;
use kokuho_ledger::store::sql::{Db, Dialect, Ty, Val};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NUMBERS: [(&str, &str); 3] = [("1", "123456789018"), ("2", "000000000051"), ("3", "111111111118")];

fn registration(kana: &str, number: Option<&str>) -> Value {
    let mut body = json!({"type": "registered", "effective_date": "2020-01-01", "name": "番号 太郎",
        "name_kana": kana, "birth_date": "1975-03-04", "sex": "1"});
    if let Some(n) = number {
        body["my_number"] = json!(n);
    }
    body
}

async fn residents(api: &Api) {
    for ((id, number), kana) in NUMBERS.iter().zip(["バンゴウ　タロウ", "バンゴウ　ハナコ", "ｻﾄｳ ｼﾞﾛｳ"])
    {
        let r = api.event(id, registration(kana, Some(number))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let mi = json!({"type": "moved_in", "effective_date": "2020-04-01", "from": "abroad", "household_id": "20"});
        assert_eq!(api.event(id, mi).await.status, StatusCode::CREATED);
    }
    assert_eq!(
        api.event("4", registration("バンゴウ　ナシ", None)).await.status,
        StatusCode::CREATED
    );
}

fn search_ids(r: &Reply) -> Vec<String> {
    r.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{} {}", r.status, r.body))
        .iter()
        .map(|x| x["person_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn search(api: &Api, body: Value) -> Reply {
    api.post("/v1/persons/search", &body.to_string(), &[]).await
}

on_both!(search_by_kana_name_birth_date_household, |kind| async move {
    let api = Api::new(kind).await;
    residents(&api).await;
    // Kana: a prefix, spaces ignored, half-width widened as stored.
    assert_eq!(
        search_ids(&search(&api, json!({"name_kana": "バンゴウ"})).await),
        ["1", "4", "2"],
        "in kana order"
    );
    assert_eq!(
        search_ids(&search(&api, json!({"name_kana": "バンゴウタ"})).await),
        ["1"]
    );
    assert_eq!(search_ids(&search(&api, json!({"name_kana": "ﾊﾞﾝｺﾞｳ ﾊ"})).await), ["2"]);
    assert_eq!(
        search_ids(&search(&api, json!({"name_kana": "サトウ　ジ"})).await),
        ["3"]
    );
    assert!(search_ids(&search(&api, json!({"name_kana": "ヤマダ"})).await).is_empty());
    assert_eq!(
        search_ids(&search(&api, json!({"name": "番号"})).await),
        ["3", "1", "4", "2"],
        "in kana order"
    );
    assert_eq!(
        search_ids(&search(&api, json!({"household_id": "20", "name_kana": "バンゴウ"})).await),
        ["1", "2"]
    );
    assert_eq!(
        search_ids(&search(&api, json!({"birth_date": "1975-03-04", "household_id": "20"})).await).len(),
        3
    );
    let r = search(&api, json!({"name_kana": "バンゴウ　タ"})).await;
    assert_eq!(
        r.body["results"][0],
        json!({"person_id": "1", "name": "番号 太郎", "name_kana": "バンゴウ　タロウ", "birth_date": "1975-03-04",
               "sex": "1", "household_id": "20", "insured": true})
    );
    assert_eq!(r.body["truncated"], false);
    // Bad input: a clear error, nothing else.
    for (body, expected) in [
        (json!({}), "empty_search"),
        (json!({"name_kana": "yamada"}), "invalid_kana"),
        (json!({"birth_date": "1975-02-30"}), "invalid_date"),
        (json!({"household_id": "x"}), "invalid_household_id"),
        (json!({"nickname": "タロ"}), "unknown_field"),
        (json!({"my_number": "123456789019"}), "invalid_my_number"),
        (json!(["name"]), "invalid_body"),
    ] {
        let r = search(&api, body.clone()).await;
        assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, expected), "{body}");
    }
    let r = api.post("/v1/persons/search", "{not json", &[]).await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "invalid_json"));
    api.t.db.cleanup().await;
});

on_both!(search_stops_at_fifty, |kind| async move {
    let api = Api::new(kind).await;
    for i in 0..53 {
        let r = api
            .event(&format!("{}", 100 + i), registration("タナカ　タロウ", None))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = search(&api, json!({"name_kana": "タナカ"})).await;
    assert_eq!(search_ids(&r).len(), 50);
    assert_eq!(r.body["truncated"], true);
    api.t.db.cleanup().await;
});

on_both!(the_my_number_role_reveals_and_searches, |kind| async move {
    let api = Api::new(kind).await;
    residents(&api).await;
    let clerk = api.token("clerk-no-number", &[Role::Clerk]).await;
    let mn = api.token("clerk-with-number", &[Role::Clerk, Role::MyNumber]).await;
    let only_mn = api.token("number-only", &[Role::MyNumber]).await;
    let with = |t: &str| format!("Bearer {t}");

    // Search by My Number: a body field, only with the role, flagged in the record.
    let body = json!({"my_number": "000000000051"}).to_string();
    let r = api
        .post("/v1/persons/search", &body, &[("authorization", &with(&clerk))])
        .await;
    assert_eq!((r.status, code(&r)), (StatusCode::FORBIDDEN, "forbidden"));
    let r = api
        .post("/v1/persons/search", &body, &[("authorization", &with(&mn))])
        .await;
    assert_eq!(search_ids(&r), ["2"]);
    assert!(!r.body.to_string().contains("000000000051"));
    let rec = api.access_records().await.pop().unwrap();
    assert_eq!((rec.my_number, rec.persons.clone()), (true, vec!["2".to_owned()]));

    // Reveal: one number, recorded.
    let r = api.get_as(&clerk, "/v1/persons/1/my-number").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api.get_as(&only_mn, "/v1/persons/1/my-number").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "my_number alone reaches no person");
    let r = api.get_as(&mn, "/v1/persons/1/my-number").await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"person_id": "1", "my_number": "123456789018"}))
    );
    let rec = api.access_records().await.pop().unwrap();
    assert_eq!(
        (rec.my_number, rec.persons.clone(), rec.actor.as_str()),
        (true, vec!["1".to_owned()], "clerk-with-number")
    );
    let r = api.get_as(&mn, "/v1/persons/4/my-number").await;
    assert_eq!((r.status, code(&r)), (StatusCode::NOT_FOUND, "no_my_number"));
    let r = api.get_as(&mn, "/v1/persons/999/my-number").await;
    assert_eq!((r.status, code(&r)), (StatusCode::NOT_FOUND, "person_not_found"));

    // The feed: my_number only for a consumer holding the role.
    let plain = api.token("premium-system", &[Role::FeedConsumer]).await;
    let channel = api
        .token("intermediate-server", &[Role::FeedConsumer, Role::MyNumber])
        .await;
    let r = api.get_as(&plain, "/v1/feed?limit=1000").await;
    assert!(!r.body.to_string().contains("123456789018"));
    assert!(!api.access_records().await.pop().unwrap().my_number);
    let r = api.get_as(&channel, "/v1/feed?limit=1000").await;
    let numbers: Vec<&str> = r.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["my_number"].as_str())
        .collect();
    assert!(numbers.contains(&"123456789018") && numbers.contains(&"000000000051"));
    assert!(api.access_records().await.pop().unwrap().my_number);
    api.t.db.cleanup().await;
});

/// Every value of every column of every table, as bytes (text as UTF-8).
async fn every_value(db: &Db) -> Vec<Vec<u8>> {
    let tables: Vec<String> = match db.dialect() {
        Dialect::Postgres => db
            .fetch(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                &[],
                &[Ty::Text],
            )
            .await
            .unwrap(),
        Dialect::Sqlite => db
            .fetch(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                &[],
                &[Ty::Text],
            )
            .await
            .unwrap(),
    }
    .into_iter()
    .map(|r| r[0].as_text().unwrap().to_owned())
    .collect();
    assert!(tables.len() > 15, "{tables:?}");
    let mut values = Vec::new();
    for t in tables {
        // Each row as text: PostgreSQL's row-to-JSON, SQLite's columns one by one.
        let rows = match db.dialect() {
            Dialect::Postgres => db
                .fetch(&format!("SELECT row_to_json(x)::text FROM {t} x"), &[], &[Ty::Text])
                .await
                .unwrap(),
            Dialect::Sqlite => {
                let cols: Vec<String> = db
                    .fetch(&format!("SELECT name FROM pragma_table_info('{t}')"), &[], &[Ty::Text])
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r[0].as_text().unwrap().to_owned())
                    .collect();
                let mut out = Vec::new();
                for c in cols {
                    out.extend(
                        db.fetch(&format!("SELECT hex({c}) FROM {t}"), &[], &[Ty::Text])
                            .await
                            .unwrap(),
                    );
                }
                out
            }
        };
        for r in rows {
            let Some(text) = r[0].as_text() else { continue };
            match db.dialect() {
                // SQLite: hex of the stored bytes.
                Dialect::Sqlite => values.push(hex::decode(text).unwrap()),
                // PostgreSQL: every JSON leaf of the row (bytea comes as \x-hex text).
                Dialect::Postgres => {
                    let v: Value = serde_json::from_str(text).unwrap();
                    leaves(&v, &mut values);
                }
            }
        }
    }
    values
}

fn leaves(v: &Value, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::Object(m) => m.values().for_each(|v| leaves(v, out)),
        Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
        Value::String(s) => {
            if let Some(h) = s.strip_prefix("\\x") {
                out.push(hex::decode(h).unwrap_or_default());
            } else if let Ok(inner) = serde_json::from_str::<Value>(s) {
                // JSON held as text (payloads on either backend).
                if inner.is_object() || inner.is_array() {
                    leaves(&inner, out);
                }
                out.push(s.as_bytes().to_vec());
            } else {
                out.push(s.as_bytes().to_vec());
            }
        }
        other => out.push(other.to_string().into_bytes()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Nothing in the database lets a reader test a guess: neither the number, nor its plain
/// SHA-256, nor SHA-256(v ‖ number) for any stored value v used as a salt, in hex or raw.
fn assert_not_brute_forceable(values: &[Vec<u8>], number: &str) {
    assert!(
        !testable(values, number),
        "a stored value reveals or tests My Number {number}"
    );
}

/// Whether some stored value reveals `number` or tests a guess of it.
fn testable(values: &[Vec<u8>], number: &str) -> bool {
    let text_values: Vec<&Vec<u8>> = values.iter().collect();
    let mut forbidden: Vec<Vec<u8>> = vec![number.as_bytes().to_vec()];
    let plain = Sha256::digest(number.as_bytes());
    forbidden.push(plain.to_vec());
    forbidden.push(hex::encode(plain).into_bytes());
    for v in values.iter().filter(|v| !v.is_empty() && v.len() <= 64) {
        let mut h = Sha256::new();
        h.update(v);
        h.update(number.as_bytes());
        let d = h.finalize();
        forbidden.push(d.to_vec());
        forbidden.push(hex::encode(d).into_bytes());
        // A hex-written salt used as bytes.
        if let Ok(raw) = hex::decode(v) {
            let mut h = Sha256::new();
            h.update(&raw);
            h.update(number.as_bytes());
            let d = h.finalize();
            forbidden.push(d.to_vec());
            forbidden.push(hex::encode(d).into_bytes());
        }
    }
    forbidden.iter().any(|f| text_values.iter().any(|v| contains(v, f)))
}

on_both!(
    no_column_can_be_brute_forced_and_no_response_carries_a_number,
    |kind| async move {
        let api = Api::new(kind).await;
        residents(&api).await;
        // Every kind of traffic that touches numbers, Idempotency-Keys included.
        let body = registration("バンゴウ　ゴロウ", Some("222222222225")).to_string();
        let r = api
            .post("/v1/persons/5/events", &body, &[("idempotency-key", "reg-5")])
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let again = api
            .post("/v1/persons/5/events", &body, &[("idempotency-key", "reg-5")])
            .await;
        assert_eq!(again.status, StatusCode::CREATED);
        let fix = json!({"type": "corrected", "target_sequence": 1, "replacement": registration("バンゴウ　タロウ", Some("333333333332"))});
        let fixed = api.event("1", fix).await;
        assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
        let mut responses = vec![r.body.to_string(), again.body.to_string()];
        for path in [
            "/v1/persons/1",
            "/v1/persons/1/timeline",
            "/v1/persons/2/eligibility?on=2024-01-01",
            "/v1/households/20",
            "/v1/feed?limit=1000",
            "/v1/audit/entries/1",
            "/v1/access-records?limit=1000",
        ] {
            let r = api.get(path).await;
            responses.push(r.body.to_string());
        }
        responses.push(search(&api, json!({"name_kana": "バンゴウ"})).await.body.to_string());
        let numbers = [
            "123456789018",
            "000000000051",
            "111111111118",
            "222222222225",
            "333333333332",
        ];
        for n in numbers {
            assert!(responses.iter().all(|r| !r.contains(n)), "{n} in a response");
        }
        let values = every_value(api.t.store.db()).await;
        for n in numbers {
            assert_not_brute_forceable(&values, n);
        }
        api.t.db.cleanup().await;
    }
);

on_both!(erasure_leaves_a_verifying_trail_and_a_410, |kind| async move {
    let signer = Arc::new(kokuho_ledger::audit::keys::Signer::generate());
    let db = TestDb::new(kind).await;
    let t = common::audited_ledger_on(db, true, signer.clone()).await;
    let api = Api::with(t).await;
    residents(&api).await;
    let mn = api.token("clerk-with-number", &[Role::Clerk, Role::MyNumber]).await;
    assert_eq!(api.get_as(&mn, "/v1/persons/2/my-number").await.status, StatusCode::OK);
    let store = &api.t.store;
    let erased =
        kokuho_ledger::vault::numbers::erase_person(store.db(), &kokuho_ledger::domain::PersonId::parse("2").unwrap())
            .await
            .unwrap();
    assert_eq!(erased, 1);
    let r = api.get_as(&mn, "/v1/persons/2/my-number").await;
    assert_eq!((r.status, code(&r)), (StatusCode::GONE, "my_number_erased"));
    assert_eq!(api.get_as(&mn, "/v1/persons/1/my-number").await.status, StatusCode::OK);
    // Not found by number any more; the feed carries it no more.
    let body = json!({"my_number": "000000000051"}).to_string();
    let r = api
        .post(
            "/v1/persons/search",
            &body,
            &[("authorization", &format!("Bearer {mn}"))],
        )
        .await;
    assert!(search_ids(&r).is_empty());
    // Nothing left in the database that holds it, sealed or not.
    let values = every_value(store.db()).await;
    let count = store
        .db()
        .fetch_int("SELECT count(*) FROM my_numbers WHERE person_id = '2'", &[])
        .await
        .unwrap();
    assert_eq!(count, 0);
    assert_not_brute_forceable(&values, "000000000051");
    // The commitment stays in the log, and the trail verifies.
    let head = store.head().await.unwrap();
    api.t
        .ledger
        .projections()
        .wait_for(head, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let report = kokuho_ledger::audit::verify::verify(
        store,
        &kokuho_ledger::audit::keys::parse_public_key(&signer.public_key()).unwrap(),
        kokuho_ledger::audit::verify::Start::Genesis,
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.failure.is_none(), "{report:?}");
    assert!(report.entries >= head as u64 - report.unchained);
    // Erasure by the day the numbers were stored: everything before tomorrow.
    let gone = kokuho_ledger::vault::numbers::erase_stored_before(
        store.db(),
        common::test_now() + chrono::Duration::days(400_000),
    )
    .await
    .unwrap();
    assert_eq!(gone, ["1", "3"]);
    assert_eq!(
        api.get_as(&mn, "/v1/persons/1/my-number").await.status,
        StatusCode::GONE
    );
    api.t.db.cleanup().await;
});

on_both!(old_plain_salts_move_into_the_sealed_vault, |kind| async move {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let db = TestDb::new(kind).await;
    let t = common::ledger_on(db.share(), false).await;
    // An entry as ledgers wrote it before: salt in the clear beside the commitment, the number
    // alone encrypted under the vault key ([42; 32] in the tests).
    let salt = [9u8; 16];
    let number = "123456789018";
    let mut h = Sha256::new();
    h.update(salt);
    h.update(number);
    let commitment = hex::encode(h.finalize());
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&[42; 32]));
    let nonce = [7u8; 12];
    let ciphertext = cipher
        .encrypt(
            chacha20poly1305::Nonce::from_slice(&nonce),
            Payload {
                msg: number.as_bytes(),
                aad: commitment.as_bytes(),
            },
        )
        .unwrap();
    t.store
        .db()
        .execute(
            "INSERT INTO my_number_vault (commitment, person_id, salt, nonce, ciphertext, position, created_at) \
             VALUES ($1, '77', $2, $3, $4, 1, $5)",
            &[
                Val::text(commitment.clone()),
                Val::Bytes(Some(salt.to_vec())),
                Val::Bytes(Some(nonce.to_vec())),
                Val::Bytes(Some(ciphertext)),
                Val::Instant(Some(common::test_now())),
            ],
        )
        .await
        .unwrap();
    // The scan sees what a database reader could do with such a row.
    assert!(testable(&every_value(t.store.db()).await, number));
    drop(t);
    // The next start moves it: same commitment, salt sealed, findable by number.
    let t = common::ledger_on(db.share(), false).await;
    let db_ = t.store.db();
    assert_eq!(
        db_.fetch_int("SELECT count(*) FROM my_number_vault", &[])
            .await
            .unwrap(),
        0
    );
    let entry = kokuho_ledger::vault::numbers::entry(db_, &commitment)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.ledger.vault().open(&entry).unwrap().expose(), number);
    let found = kokuho_ledger::vault::numbers::persons_with(
        db_,
        t.ledger.vault(),
        &kokuho_ledger::domain::MyNumber::parse(number).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(found, ["77"]);
    let values = every_value(db_).await;
    assert!(values.iter().all(|v| v.as_slice() != salt), "the plain salt is gone");
    assert_not_brute_forceable(&values, number);
    // A wrong key is refused at start, before anything moves.
    let wrong = kokuho_ledger::app::Builder::new(&db.url)
        .settings(common::test_settings())
        .vault(kokuho_ledger::vault::Vault::from_key([1; 32]))
        .build()
        .await;
    assert!(wrong.is_err());
    drop(t);
    db.cleanup().await;
});
