//! The one door every request passes (access.md): authenticate the bearer credential,
//! refuse `X-Actor`, authorise against the route table, run the handler, and write the access
//! record before the response leaves — a response whose record cannot be written is not
//! sent (503 `access_log_unavailable` instead).

use std::net::SocketAddr;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::routes::is_console_path;
use super::{ApiError, AppState};
use crate::access::sessions::Closed;
use crate::access::{AccessError, AccessKind, AccessRecord, Principal};
use crate::request::RequestContext;

/// The authenticated caller, for handlers (an extension of the request).
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub terminal: String,
    pub request_id: String,
    /// The console session the request came with (None: a bearer credential, which a
    /// browser never sends by itself, so its forms need no CSRF token).
    pub session: Option<SessionCredential>,
    /// The request's access record as begun here, for a write to carry with its event (None
    /// where records cannot ride: see `access::ride`).
    pub record: Option<AccessRecord>,
}

/// A console session as the handlers need it.
#[derive(Clone, Debug)]
pub struct SessionCredential {
    /// The cookie value (sign-out ends the session behind it).
    pub cookie: String,
    /// The session's CSRF token: every form carries it and every POST must match it.
    pub csrf: String,
}

/// Where a request came from, for handlers of open routes that record themselves (the
/// console's sign-in).
#[derive(Clone, Debug)]
pub struct Origin {
    pub terminal: String,
    pub request_id: String,
}

/// The console session cookie's name: with `Secure`, the `__Host-` prefix binds it to this
/// host and path `/`.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-kokuho_session"
    } else {
        "kokuho_session"
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether the console is served over TLS (its public URL is https): cookies get `Secure`.
pub fn secure(s: &AppState) -> bool {
    s.ledger
        .settings()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

impl Caller {
    /// The request context of a command: the principal is the actor.
    pub fn context(&self) -> RequestContext {
        RequestContext {
            actor: self.principal.id.clone(),
            terminal: Some(self.terminal.clone()),
            request_id: self.request_id.clone(),
            ..Default::default()
        }
    }
}

/// What a handler's response carried or changed, for its access record (an extension of the
/// response): アクセス対象者, whether a My Number was revealed or searched by, and the send
/// ledger of an export.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    pub persons: Vec<String>,
    pub my_number: bool,
    pub export: Option<Value>,
    /// The record was committed with the request's events, with this outcome.
    pub recorded: Option<u16>,
}

impl Touched {
    pub fn persons(persons: impl IntoIterator<Item = String>) -> Self {
        Self {
            persons: persons.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Attaches this to a response.
    pub fn on(self, response: impl IntoResponse) -> Response {
        let mut res = response.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

fn bearer(headers: &HeaderMap) -> Option<Result<String, AccessError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AccessError::Unauthenticated("the Authorization header is not a bearer credential".into()));
    Some(parsed)
}

fn unauthenticated(reason: Option<&AccessError>, presented: bool) -> Response {
    let mut res = match reason {
        // The credential could not be looked up: not the client's fault.
        Some(AccessError::Store(e)) => return ApiError::unavailable(e).into_response(),
        Some(AccessError::Unavailable(_)) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_provider_unavailable",
                "the identity provider cannot be reached to check the credential; retry",
            )
            .with_header("retry-after", "5")
            .into_response()
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            if presented {
                "the credential is not valid (unknown, revoked, expired or not issued for this ledger)"
            } else {
                "this endpoint needs a credential: Authorization: Bearer <token>"
            },
        )
        .into_response(),
    };
    let challenge = if presented {
        "Bearer error=\"invalid_token\""
    } else {
        "Bearer"
    };
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    res
}

/// What the request presented to say who it is.
enum Credential {
    None,
    Bearer(Result<String, AccessError>),
    /// The console's session cookie (console paths only).
    Session(String),
}

pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let now = s.ledger.clock().now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let console = is_console_path(&path);
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let route = matched.as_deref().and_then(|m| s.routes.get(&method, m)).cloned();
    let headers = req.headers();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        // The tests' stand-in for a socket (axum's own mock of the peer).
        .or_else(|| req.extensions().get::<MockConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let terminal = s
        .access
        .proxies
        .terminal(peer, text("x-terminal-id"), text("x-forwarded-for"));
    let session_cookie = console
        .then(|| cookie(headers, session_cookie_name(secure(&s))))
        .flatten()
        .map(str::to_owned);
    let credential = match (bearer(headers), session_cookie) {
        (Some(b), _) => Credential::Bearer(b),
        (None, Some(c)) => Credential::Session(c),
        (None, None) => Credential::None,
    };
    req.extensions_mut().insert(Origin {
        terminal: terminal.clone(),
        request_id: request_id.clone(),
    });
    if route.as_ref().is_some_and(|r| r.open()) && matches!(credential, Credential::None | Credential::Session(_)) {
        return with_console_headers(console, next.run(req).await);
    }
    let screen = match (&route, &matched) {
        (Some(r), _) => r.screen_name(),
        (None, Some(m)) => format!("{method} {m}"),
        (None, None) => format!("{method} (no such endpoint)"),
    };
    let mut record = AccessRecord::new(
        now,
        "anonymous",
        route.as_ref().map_or(AccessKind::Inquiry, |r| r.kind),
        screen,
    );
    record.terminal = terminal.clone();
    record.request_id = request_id.clone();
    record.path = Some(path.clone());

    let mut session = None;
    let principal = match credential {
        Credential::None => Err(Refusal::NoCredential),
        Credential::Bearer(Err(e)) => Err(Refusal::Bad(e)),
        Credential::Bearer(Ok(token)) => s.access.authenticate(&token, now).await.map_err(Refusal::Bad),
        Credential::Session(cookie) => match s.access.sessions.touch(&cookie, &s.access.roles, now).await {
            Ok(Ok(open)) => {
                session = Some(SessionCredential {
                    cookie,
                    csrf: open.csrf,
                });
                Ok(open.principal)
            }
            Ok(Err(closed)) => Err(Refusal::Ended(closed)),
            Err(e) => {
                tracing::error!(error = %e, request_id = %request_id, "console session lookup failed");
                return with_console_headers(console, finish(&s, record, access_log_unavailable()).await);
            }
        },
    };
    let response = match principal {
        Err(Refusal::Bad(reason)) => {
            // The reason is for the operator; the token itself is never logged.
            tracing::info!(request_id = %request_id, %reason, "credential refused");
            unauthenticated(Some(&reason), true)
        }
        // A staff member's browser without a session goes to the sign-in page.
        Err(why) if console => {
            super::console::sign_in_redirect(&path, req.uri().query(), matches!(why, Refusal::Ended(Closed::Idle)))
        }
        Err(_) => unauthenticated(None, false),
        Ok(principal) => {
            record.actor = principal.id.clone();
            record.roles = principal.role_names();
            let cross_site =
                session.is_some() && method != Method::GET && method != Method::HEAD && !same_origin(req.headers());
            if let Err(wait) = s.limits.check(&principal.id) {
                // Refused before any handler touches the database; recorded like every refusal.
                crate::metrics::global().rate_limited.inc();
                rate_limited(console, wait)
            } else if req.headers().contains_key("x-actor") {
                ApiError::bad_request(
                    "actor_header_not_accepted",
                    "X-Actor is not accepted: the actor is the authenticated principal",
                )
                .into_response()
            } else if route.as_ref().is_some_and(|r| !principal.may_all(r.needs))
                || (route.is_none() && matched.as_deref().is_some_and(|m| !s.routes.has_template(m)))
            {
                if console {
                    super::console::forbidden_page()
                } else {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "your roles do not allow this request",
                    )
                    .into_response()
                }
            } else if cross_site {
                // A form posted from another site with the staff member's cookie.
                super::console::forbidden_page()
            } else {
                req.extensions_mut().insert(Caller {
                    principal,
                    terminal,
                    request_id: request_id.clone(),
                    session,
                    record: (s.access.recorder.rides() && method == Method::POST).then(|| record.clone()),
                });
                next.run(req).await
            }
        }
    };
    with_console_headers(console, finish(&s, record, response).await)
}

/// Why a request has no principal.
enum Refusal {
    NoCredential,
    /// A console session that has ended (sign-out or idle): the sign-in page says which.
    Ended(Closed),
    Bad(AccessError),
}

/// A state-changing request from a browser must come from the console's own pages: the
/// `Origin` (or, without it, `Sec-Fetch-Site`) must not name another site.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        return origin != "null" && origin_host.is_some() && origin_host == host;
    }
    !matches!(
        headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
        Some("cross-site")
    )
}

/// The console's pages carry personal data: never cached, never framed, no script but the
/// console's own file.
fn with_console_headers(console: bool, mut res: Response) -> Response {
    if console {
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        // Pages are never cached; the static files set their own (they hold nothing personal).
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        // Not `no-referrer`: under it a browser sends `Origin: null` with the console's own
        // forms, and the cross-site check could not tell them from forged ones.
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    res
}

/// Completes the record from the response and writes it; the response goes out only after.
async fn finish(s: &AppState, mut record: AccessRecord, mut response: Response) -> Response {
    let status = response.status();
    let mut recorded = None;
    if let Some(t) = response.extensions_mut().remove::<Touched>() {
        record.set_persons(t.persons);
        record.my_number = t.my_number;
        record.export = t.export;
        recorded = t.recorded;
    }
    record.outcome = status.as_u16();
    match recorded {
        Some(outcome) if outcome == record.outcome => return response,
        // Cannot happen (a write that committed its record answers what it recorded); if it
        // did, the answer actually given is recorded too.
        Some(outcome) => {
            tracing::error!(request_id = %record.request_id, recorded = outcome, answered = record.outcome,
            "a write's access record disagrees with its answer")
        }
        None => {}
    }
    // `restricted` is decided by the recorder, for the whole batch in one query.
    let request_id = record.request_id.clone();
    match s.access.recorder.record(record).await {
        Ok(_) => response,
        Err(e) => {
            tracing::error!(error = %e, request_id = %request_id, "access record not written: the response is withheld");
            access_log_unavailable()
        }
    }
}

/// 429 `rate_limited`, with when to retry (a page on console paths).
fn rate_limited(console: bool, wait: std::time::Duration) -> Response {
    let e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests from this principal; retry after the Retry-After seconds",
    )
    .with_header("retry-after", super::rate::retry_after_seconds(wait).to_string());
    if console {
        super::console::ConsoleError(e).into_response()
    } else {
        e.into_response()
    }
}

fn access_log_unavailable() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "access_log_unavailable",
        "the access record of this request could not be written, so its answer is withheld; retry",
    )
    .with_header("retry-after", "1")
    .into_response()
}
