//! The staff console's sessions and guards (console.md, access.md) against the router on
//! SQLite and PostgreSQL: sign-in with a token and through OpenID Connect (code + PKCE with the
//! issuer inside the suite), cookie flags, CSRF and cross-site refusals, the idle timeout on
//! the ledger's clock, the Content-Security-Policy, screen names in the access records, and a
//! commit sent twice recorded once. The pages in a real browser: tests/browser.

use kokuho_testing as common;
use kokuho_testing::on_both;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::api::{Api, Reply};
use common::oidc::TestIssuer;
use common::{ledger_on_with, test_settings, Kind, TestDb};
use kokuho_ledger::access::oidc::OidcConfig;
use kokuho_ledger::access::{AccessRecord, Role};
use kokuho_ledger::clock::Clock as _;
use kokuho_ledger::settings::{Secret, Settings};
use serde_json::json;

const HOST: &str = "console.test";

async fn api_with(kind: Kind, settings: Settings) -> Api {
    Api::with(ledger_on_with(TestDb::new(kind).await, true, settings).await).await
}

async fn resident(api: &Api, id: &str) {
    let r = api.register(id, "1980-01-01").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = api
        .event(
            id,
            json!({"type": "moved_in", "effective_date": "2020-04-01", "from": "abroad", "household_id": "10"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

fn html(r: &Reply) -> &str {
    r.body.as_str().unwrap_or_default()
}

/// The value of `name="csrf"` on a page.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// `name=value` of a Set-Cookie header for `name`.
fn set_cookie(r: &Reply, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_pair(set: &str) -> String {
    set.split(';').next().unwrap().to_owned()
}

async fn send(
    api: &Api,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder().method(method).uri(path).header("host", HOST);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let body = match form {
        Some(f) => {
            b = b.header("content-type", "application/x-www-form-urlencoded");
            Body::from(f.to_owned())
        }
        None => Body::empty(),
    };
    api.send_raw(b.body(body).unwrap()).await
}

async fn get(api: &Api, path: &str, cookie: &str) -> Reply {
    send(api, "GET", path, Some(cookie), None, &[]).await
}

async fn post(api: &Api, path: &str, cookie: &str, form: &[(&str, &str)]) -> Reply {
    let body = serde_urlencoded::to_string(form).unwrap();
    send(
        api,
        "POST",
        path,
        Some(cookie),
        Some(&body),
        &[("origin", &format!("http://{HOST}"))],
    )
    .await
}

/// Signs in with a token through the sign-in form; returns the session cookie (`name=value`).
async fn sign_in(api: &Api, token: &str, session_cookie: &str) -> String {
    let page = send(api, "GET", "/console/sign-in?next=%2Fconsole%2Fsearch", None, None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let pre = cookie_pair(&set_cookie(&page, "kokuho_sign_in").unwrap());
    let form = serde_urlencoded::to_string([
        ("csrf", csrf(html(&page)).as_str()),
        ("token", token),
        ("next", "/console/search"),
    ])
    .unwrap();
    let r = send(api, "POST", "/console/sign-in", Some(&pre), Some(&form), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.headers.get("location").unwrap(), "/console/search");
    cookie_pair(&set_cookie(&r, session_cookie).expect("a session cookie"))
}

async fn records(api: &Api) -> Vec<AccessRecord> {
    api.access_records().await
}

on_both!(
    a_session_signs_in_reads_signs_out_and_each_step_is_recorded,
    |kind| async move {
        let api = Api::new(kind).await;
        resident(&api, "1").await;
        let token = api.token("clerk-yamada", &[Role::Clerk]).await;
        let before = records(&api).await.len();

        // The sign-in page sets only its own form cookie; the session cookie comes with sign-in.
        let page = send(&api, "GET", "/console/sign-in", None, None, &[]).await;
        let pre = set_cookie(&page, "kokuho_sign_in").unwrap();
        assert!(pre.contains("HttpOnly") && pre.contains("SameSite=Lax"), "{pre}");
        let form =
            serde_urlencoded::to_string([("csrf", csrf(html(&page)).as_str()), ("token", token.as_str())]).unwrap();
        let r = send(
            &api,
            "POST",
            "/console/sign-in",
            Some(&cookie_pair(&pre)),
            Some(&form),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        let set = set_cookie(&r, "kokuho_session").unwrap();
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(flag), "{set}");
        }
        assert!(!set.contains("Secure"), "served over plain HTTP: {set}");
        let session = cookie_pair(&set);

        let person = get(&api, "/console/persons/1", &session).await;
        assert_eq!(person.status, StatusCode::OK);
        assert!(html(&person).contains(r#"data-testid="principal">clerk-yamada<"#));
        let search = get(&api, "/console/search", &session).await;
        assert_eq!(search.status, StatusCode::OK);
        let out = post(&api, "/console/sign-out", &session, &[("csrf", &csrf(html(&search)))]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
        assert!(set_cookie(&out, "kokuho_session").unwrap().contains("Max-Age=0"));
        // The ended session opens nothing, even if a browser kept the cookie.
        let after = get(&api, "/console/persons/1", &session).await;
        assert_eq!(after.status, StatusCode::SEE_OTHER);
        assert_eq!(
            after.headers.get("location").unwrap(),
            "/console/sign-in?next=%2Fconsole%2Fpersons%2F1"
        );

        let seen: Vec<(String, String, String, Vec<String>, u16)> = records(&api).await[before..]
            .iter()
            .map(|r| {
                (
                    r.actor.clone(),
                    r.kind.as_str().to_owned(),
                    r.screen.clone(),
                    r.persons.clone(),
                    r.outcome,
                )
            })
            .collect();
        let expect = |actor: &str, kind: &str, screen: &str, persons: &[&str], outcome: u16| {
            (
                actor.to_owned(),
                kind.to_owned(),
                screen.to_owned(),
                persons.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
                outcome,
            )
        };
        assert_eq!(
            seen,
            [
                expect("clerk-yamada", "sign_in", "サインイン", &[], 303),
                expect("clerk-yamada", "inquiry", "資格履歴照会", &["1"], 200),
                expect("clerk-yamada", "inquiry", "対象者検索", &[], 200),
                expect("clerk-yamada", "sign_out", "サインアウト", &[], 303),
                expect("anonymous", "inquiry", "資格履歴照会", &[], 303),
            ]
        );
        api.t.db.cleanup().await;
    }
);

on_both!(
    over_tls_the_session_cookie_is_secure_and_host_bound,
    |kind| async move {
        let settings = Settings {
            public_url: Some("https://kokuho.ward.example".into()),
            ..test_settings()
        };
        let api = api_with(kind, settings).await;
        let token = api.token("clerk-yamada", &[Role::Clerk]).await;
        let session = sign_in(&api, &token, "__Host-kokuho_session").await;
        assert!(session.starts_with("__Host-kokuho_session="));
        // The plain name is not a session over TLS.
        let value = session.split_once('=').unwrap().1;
        let r = get(&api, "/console/search", &format!("kokuho_session={value}")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(get(&api, "/console/search", &session).await.status, StatusCode::OK);
        api.t.db.cleanup().await;
    }
);

on_both!(
    forms_need_the_session_token_and_the_console_s_own_origin,
    |kind| async move {
        let api = Api::new(kind).await;
        resident(&api, "1").await;
        let token = api.token("clerk-yamada", &[Role::Clerk]).await;
        let session = sign_in(&api, &token, "kokuho_session").await;
        let page = get(&api, "/console/search", &session).await;
        let good = csrf(html(&page));
        let before = records(&api).await.len();

        let missing = post(&api, "/console/search", &session, &[("person_id", "1")]).await;
        assert_eq!(missing.status, StatusCode::FORBIDDEN);
        let wrong = post(
            &api,
            "/console/search",
            &session,
            &[("csrf", "x".repeat(43).as_str()), ("person_id", "1")],
        )
        .await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        let form = serde_urlencoded::to_string([("csrf", good.as_str()), ("person_id", "1")]).unwrap();
        let cross = send(
            &api,
            "POST",
            "/console/search",
            Some(&session),
            Some(&form),
            &[("origin", "https://evil.example")],
        )
        .await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN);
        let null = send(
            &api,
            "POST",
            "/console/search",
            Some(&session),
            Some(&form),
            &[("origin", "null")],
        )
        .await;
        assert_eq!(null.status, StatusCode::FORBIDDEN);
        let fetch = send(
            &api,
            "POST",
            "/console/search",
            Some(&session),
            Some(&form),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
        assert_eq!(fetch.status, StatusCode::FORBIDDEN);
        // The page's own form, from the console's origin: to the person.
        let ok = post(
            &api,
            "/console/search",
            &session,
            &[("csrf", &good), ("person_id", "1")],
        )
        .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
        assert_eq!(ok.headers.get("location").unwrap(), "/console/persons/1");
        // Every refusal is recorded.
        let outcomes: Vec<u16> = records(&api).await[before..].iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [403, 403, 403, 403, 403, 303]);
        api.t.db.cleanup().await;
    }
);

on_both!(a_session_ends_after_the_idle_period, |kind| async move {
    let api = Api::new(kind).await;
    let token = api.token("clerk-yamada", &[Role::Clerk]).await;
    let session = sign_in(&api, &token, "kokuho_session").await;
    let start = api.t.clock.now();
    // Each request restarts the idle clock.
    for minutes in [14, 28, 42] {
        api.t.clock.set(start + chrono::Duration::minutes(minutes));
        assert_eq!(
            get(&api, "/console/search", &session).await.status,
            StatusCode::OK,
            "{minutes}"
        );
    }
    api.t.clock.set(start + chrono::Duration::minutes(42 + 15));
    let r = get(&api, "/console/search", &session).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "/console/sign-in?next=%2Fconsole%2Fsearch&reason=idle"
    );
    // Ended for good: coming back does not revive it.
    api.t.clock.set(start + chrono::Duration::minutes(43));
    assert_eq!(
        get(&api, "/console/search", &session).await.status,
        StatusCode::SEE_OTHER
    );
    api.t.db.cleanup().await;
});

/// The console → the provider (with PKCE, state and nonce) → back with a code: the callback's
/// path and query.
async fn round_trip(api: &Api, http: &reqwest::Client, idp: &TestIssuer, next: &str) -> String {
    let start = send(
        api,
        "GET",
        &format!("/console/sign-in/oidc?next={next}"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let to = start.headers.get("location").unwrap().to_str().unwrap().to_owned();
    assert!(to.starts_with(&format!("{}/authorize?", idp.issuer)), "{to}");
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "scope=openid",
    ] {
        assert!(to.contains(p), "{p} in {to}");
    }
    let back = http.get(&to).send().await.unwrap();
    assert_eq!(back.status(), 303);
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let prefix = format!("http://{HOST}");
    assert!(
        callback.starts_with(&format!("{prefix}/console/callback?")),
        "{callback}"
    );
    callback[prefix.len()..].to_owned()
}

on_both!(staff_sign_in_through_openid_connect_with_pkce, |kind| async move {
    let idp = TestIssuer::start().await;
    idp.register_client("kokuho-console", "console-secret");
    let settings = Settings {
        oidc: Some(OidcConfig {
            issuer: idp.issuer.clone(),
            audience: "kokuho-api".into(),
            client_id: "kokuho-console".into(),
            client_secret: Some(Secret("console-secret".into())),
            user_claim: "sub".into(),
            roles_claim: "groups".into(),
            role_map: OidcConfig::parse_role_map("nhi-clerks=clerk").unwrap(),
        }),
        ..test_settings()
    };
    let api = api_with(kind, settings).await;
    resident(&api, "1").await;
    idp.sign_in_as("staff-0042", &["nhi-clerks"]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let callback = round_trip(&api, &http, &idp, "%2Fconsole%2Fpersons%2F1").await;
    let r = send(&api, "GET", &callback, None, None, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.headers.get("location").unwrap(), "/console/persons/1");
    assert_eq!(
        idp.refused(),
        0,
        "the token endpoint took the client and the PKCE verifier"
    );
    let session = cookie_pair(&set_cookie(&r, "kokuho_session").unwrap());
    let page = get(&api, "/console/persons/1", &session).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(html(&page).contains(r#"data-testid="principal">staff-0042<"#));
    let rec = records(&api).await;
    let signed_in = rec.iter().rev().find(|r| r.kind.as_str() == "sign_in").unwrap();
    assert_eq!(
        (signed_in.actor.as_str(), signed_in.roles.clone(), signed_in.outcome),
        ("staff-0042", vec!["clerk".to_owned()], 303)
    );

    // The same callback again: its state was taken once.
    let again = send(&api, "GET", &callback, None, None, &[]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(set_cookie(&again, "kokuho_session").is_none());
    // A forged state never started here.
    let forged = send(&api, "GET", "/console/callback?code=x&state=forged", None, None, &[]).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    // An ID token with another nonce (injected or replayed) is refused and recorded.
    idp.use_wrong_nonce(true);
    let callback = round_trip(&api, &http, &idp, "%2Fconsole%2Fsearch").await;
    let refused = send(&api, "GET", &callback, None, None, &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&refused, "kokuho_session").is_none());
    let last = records(&api).await.pop().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.kind.as_str(), last.outcome),
        ("anonymous", "sign_in", 401)
    );
    // A code exchanged without the verifier is refused by the provider.
    let start = send(&api, "GET", "/console/sign-in/oidc", None, None, &[]).await;
    let to = start.headers.get("location").unwrap().to_str().unwrap().to_owned();
    let back = http.get(&to).send().await.unwrap();
    let code_url = reqwest::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let code = code_url.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let stolen = http
        .post(format!("{}/token", idp.issuer))
        .basic_auth("kokuho-console", Some("console-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &format!("http://{HOST}/console/callback")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 400);
    api.t.db.cleanup().await;
});

on_both!(
    pages_carry_a_policy_without_inline_script_and_are_not_cached,
    |kind| async move {
        let api = Api::new(kind).await;
        resident(&api, "1").await;
        let token = api.token("clerk-yamada", &[Role::Clerk, Role::MyNumber]).await;
        let session = sign_in(&api, &token, "kokuho_session").await;
        for path in [
            "/console/search",
            "/console/persons/1",
            "/console/households/10",
            "/console/record?type=moved_out&person_id=1",
            "/console/status",
            "/console/sign-in",
        ] {
            let r = get(&api, path, &session).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            let csp = r.headers.get("content-security-policy").unwrap().to_str().unwrap();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
                "{csp}"
            );
            assert!(csp.contains("frame-ancestors 'none'"));
            assert_eq!(r.headers.get("cache-control").unwrap(), "no-store", "{path}");
            let page = html(&r);
            // No inline script or style for the policy to have to allow, and no My Number.
            assert!(
                !page.contains("<script>") && !page.contains(" style=") && !page.contains("onclick"),
                "{path}"
            );
            assert!(!page.contains("123456789018"), "{path}");
        }
        api.t.db.cleanup().await;
    }
);

on_both!(a_commit_sent_twice_records_once, |kind| async move {
    let api = Api::new(kind).await;
    resident(&api, "1").await;
    let token = api.token("clerk-yamada", &[Role::Clerk]).await;
    let session = sign_in(&api, &token, "kokuho_session").await;
    let form_page = get(&api, "/console/record?type=document_collected&person_id=1", &session).await;
    let token = csrf(html(&form_page));
    let confirm = post(
        &api,
        "/console/record/confirm",
        &session,
        &[
            ("csrf", &token),
            ("form.type", "document_collected"),
            ("form.person_id", "1"),
            ("effective_date", "2024-01-01"),
            ("reported_date", "2024-01-02"),
        ],
    )
    .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let page = html(&confirm);
    let at = page.find("name=\"nonce\" value=\"").unwrap() + 20;
    let nonce = page[at..].split('"').next().unwrap().to_owned();
    let commit = [
        ("csrf", token.as_str()),
        ("form.type", "document_collected"),
        ("form.person_id", "1"),
        ("effective_date", "2024-01-01"),
        ("reported_date", "2024-01-02"),
        ("nonce", nonce.as_str()),
    ];
    let head = api.head().await;
    let (a, b) = tokio::join!(
        post(&api, "/console/record", &session, &commit),
        post(&api, "/console/record", &session, &commit)
    );
    assert_eq!((a.status, b.status), (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER));
    assert_eq!(a.headers.get("location"), b.headers.get("location"));
    assert_eq!(api.head().await, head + 1, "one event for two submits");
    let timeline = api.get("/v1/persons/1/timeline").await;
    let collected = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "document_collected")
        .count();
    assert_eq!(collected, 1);
    // The commit is an update in the access log, with the person.
    let updates: Vec<AccessRecord> = records(&api)
        .await
        .into_iter()
        .filter(|r| r.kind.as_str() == "update" && r.actor == "clerk-yamada")
        .collect();
    assert_eq!(updates.len(), 2);
    assert!(updates
        .iter()
        .all(|r| r.persons == ["1"] && r.screen == "異動入力（登録）"));
    api.t.db.cleanup().await;
});
