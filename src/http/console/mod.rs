//! The staff console (console.md): server-rendered pages under `/console/`, in Japanese, on
//! the same guard as the API — every page is a route of the route table with its screen name
//! (操作画面), so each view is an access record and each role sees only what the table allows.
//! Sessions come from the sign-in pages; a bearer credential opens pages too (scripts,
//! checks). Forms carry the session's CSRF token and pass a confirmation step; a commit is
//! idempotent, so a double submit records once.

mod auth;
mod pages;
mod record;
mod review;

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::guard::Caller;
use super::routes::Route;
use super::ApiError;
use crate::access::sessions::csrf_matches;
use crate::access::{AccessKind, Permission};
use crate::error::LedgerError;

pub fn routes() -> Vec<Route> {
    use Permission::*;
    let page =
        |method, path, needs, kind, screen, handler| Route::new(method, path, needs, kind, handler).screen(screen);
    vec![
        Route::new(Method::GET, "/", &[], AccessKind::Inquiry, || {
            get(|| async { Redirect::to("/console/") })
        }),
        Route::new(Method::GET, "/console/", &[], AccessKind::Inquiry, || {
            get(|| async { Redirect::to("/console/search") })
        }),
        Route::new(
            Method::GET,
            "/console/static/console.css",
            &[],
            AccessKind::Inquiry,
            || get(|| async { asset("text/css; charset=utf-8", include_str!("../../../static/console.css")) }),
        ),
        Route::new(
            Method::GET,
            "/console/static/console.js",
            &[],
            AccessKind::Inquiry,
            || {
                get(|| async {
                    asset(
                        "text/javascript; charset=utf-8",
                        include_str!("../../../static/console.js"),
                    )
                })
            },
        ),
        // Sign-in: open (no credential yet); the handlers write their own `sign_in` records.
        Route::new(Method::GET, "/console/sign-in", &[], AccessKind::SignIn, || {
            get(auth::sign_in_page)
        }),
        Route::new(Method::POST, "/console/sign-in", &[], AccessKind::SignIn, || {
            post(auth::sign_in_local)
        }),
        Route::new(Method::GET, "/console/sign-in/oidc", &[], AccessKind::SignIn, || {
            get(auth::sign_in_oidc)
        }),
        Route::new(Method::GET, "/console/callback", &[], AccessKind::SignIn, || {
            get(auth::callback)
        }),
        page(
            Method::POST,
            "/console/sign-out",
            &[],
            AccessKind::SignOut,
            "サインアウト",
            || post(auth::sign_out),
        )
        .signed_in(),
        page(
            Method::GET,
            "/console/search",
            &[ReadPersons],
            AccessKind::Inquiry,
            "対象者検索",
            || get(pages::search_page),
        ),
        page(
            Method::POST,
            "/console/search",
            &[ReadPersons],
            AccessKind::Inquiry,
            "対象者検索",
            || post(pages::search),
        ),
        page(
            Method::GET,
            "/console/persons/{person_id}",
            &[ReadPersons],
            AccessKind::Inquiry,
            "資格履歴照会",
            || get(pages::person),
        ),
        page(
            Method::POST,
            "/console/persons/{person_id}/my-number",
            &[ReadPersons, MyNumber],
            AccessKind::Inquiry,
            "個人番号表示",
            || post(pages::my_number),
        ),
        page(
            Method::GET,
            "/console/households/{household_id}",
            &[ReadPersons],
            AccessKind::Inquiry,
            "世帯照会",
            || get(pages::household),
        ),
        page(
            Method::GET,
            "/console/record",
            &[RecordEvents],
            AccessKind::Inquiry,
            "異動入力",
            || get(record::form_get),
        ),
        page(
            Method::POST,
            "/console/record/confirm",
            &[RecordEvents],
            AccessKind::Inquiry,
            "異動入力（確認）",
            || post(record::confirm),
        ),
        page(
            Method::POST,
            "/console/record",
            &[RecordEvents],
            AccessKind::Update,
            "異動入力（登録）",
            || post(record::commit),
        ),
        page(
            Method::GET,
            "/console/access",
            &[Audit],
            AccessKind::Inquiry,
            "アクセス記録確認",
            || get(review::records),
        ),
        page(
            Method::GET,
            "/console/access/unusual",
            &[Audit],
            AccessKind::Inquiry,
            "異常アクセス確認",
            || get(review::unusual),
        ),
        page(
            Method::GET,
            "/console/status",
            &[],
            AccessKind::Inquiry,
            "運用状況",
            || get(pages::status),
        )
        .signed_in(),
    ]
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// What every page's header shows: who is signed in, and the menu their roles open.
pub struct Nav {
    pub principal: String,
    pub roles: String,
    /// The form token of the session (empty for a bearer credential).
    pub csrf: String,
    pub session: bool,
    pub can_read: bool,
    pub can_record: bool,
    pub can_audit: bool,
    pub can_reveal: bool,
}

impl Nav {
    pub fn of(caller: &Caller) -> Self {
        let p = &caller.principal;
        Self {
            principal: p.id.clone(),
            roles: p.role_names().join(", "),
            csrf: caller.session.as_ref().map(|s| s.csrf.clone()).unwrap_or_default(),
            session: caller.session.is_some(),
            can_read: p.may(Permission::ReadPersons),
            can_record: p.may(Permission::RecordEvents),
            can_audit: p.may(Permission::Audit),
            can_reveal: p.may(Permission::ReadPersons) && p.may(Permission::MyNumber),
        }
    }
}

/// A rendered page.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    code: &'a str,
}

/// A failure shown as a page: the status and code of the API's error, the message in Japanese
/// where the console knows one.
#[derive(Debug)]
pub struct ConsoleError(pub ApiError);

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<LedgerError> for ConsoleError {
    fn from(e: LedgerError) -> Self {
        Self(e.into())
    }
}

impl From<crate::domain::InputError> for ConsoleError {
    fn from(e: crate::domain::InputError) -> Self {
        Self(e.into())
    }
}

impl From<crate::access::AccessError> for ConsoleError {
    fn from(e: crate::access::AccessError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (title, message) = match (e.code, e.status) {
            ("oidc_not_configured", _) => (
                "設定されていません",
                "職員認証（OpenID Connect）はこの環境では設定されていません。",
            ),
            ("csrf_mismatch", _) => ("画面の有効期限切れ", "画面を開き直してから、もう一度操作してください。"),
            ("unknown_event_type", _) => ("異動の種類を選んでください", "異動の種類を選んでから入力してください。"),
            (_, status) => match status {
                StatusCode::NOT_FOUND => ("見つかりません", "指定された対象は登録されていません。"),
                StatusCode::FORBIDDEN => ("権限がありません", "この操作を行う権限がありません。"),
                StatusCode::GONE => ("消去済み", "この個人番号は消去されています。"),
                StatusCode::BAD_REQUEST => ("入力が正しくありません", "入力内容を確認してください。"),
                StatusCode::UNPROCESSABLE_ENTITY => ("登録できません", "この内容は登録できません。"),
                StatusCode::SERVICE_UNAVAILABLE => {
                    ("一時的に利用できません", "しばらくしてからもう一度お試しください。")
                }
                StatusCode::TOO_MANY_REQUESTS => (
                    "操作が集中しています",
                    "短時間に多くの操作がありました。しばらく待ってからもう一度お試しください。",
                ),
                _ => ("エラー", "処理できませんでした。システム管理者に連絡してください。"),
            },
        };
        let mut res = render(&ErrorPage {
            title,
            message,
            code: e.code,
        });
        *res.status_mut() = e.status;
        for (name, value) in e.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(name, v);
            }
        }
        res
    }
}

pub type PageResult = Result<Response, ConsoleError>;

/// 403 as a page (the guard's refusal on console paths).
pub fn forbidden_page() -> Response {
    ConsoleError(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "your roles do not allow this request",
    ))
    .into_response()
}

/// A console path without a session: to the sign-in page, which brings the staff member back
/// to the page (a path with ids only; a query is kept only when it is an as-of instant or
/// event type, never personal data).
pub fn sign_in_redirect(path: &str, query: Option<&str>, idle: bool) -> Response {
    let mut next = path.to_owned();
    if let Some(q) = query.filter(|q| q.len() <= 200) {
        next.push('?');
        next.push_str(q);
    }
    let mut url = format!("/console/sign-in?next={}", urlencode(&next));
    if idle {
        url.push_str("&reason=idle");
    }
    Redirect::to(&url).into_response()
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e[1..].to_owned())
        .unwrap_or_default()
}

/// A form body (`application/x-www-form-urlencoded`) whose CSRF token matches the session's.
/// With a bearer credential (no session, no cookie a browser would send by itself) there is
/// nothing to forge and no token is needed.
pub fn form(caller: &Caller, body: &Bytes) -> Result<BTreeMap<String, String>, ConsoleError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| ApiError::bad_request("invalid_form", "the form could not be decoded"))?;
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v).is_some() {
            return Err(
                ApiError::bad_request("invalid_form", format!("form field {k} is given more than once")).into(),
            );
        }
    }
    if let Some(session) = &caller.session {
        let given = map.remove("csrf").unwrap_or_default();
        if !csrf_matches(&session.csrf, &given) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_mismatch",
                "the form's token does not match the session",
            )
            .into());
        }
    } else {
        map.remove("csrf");
    }
    Ok(map)
}
