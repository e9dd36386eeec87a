//! The one door every request passes (access.md): authenticate the bearer credential,
//! refuse `X-Actor`, authorise against the route table, run the handler, and write the access
//! record before the response leaves — a response whose record cannot be written is not
//! sent (503 `access_log_unavailable` instead).

use std::net::SocketAddr;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ApiError, AppState};
use crate::access::{AccessError, AccessKind, AccessRecord, Principal};
use crate::request::RequestContext;

/// The authenticated caller, for handlers (an extension of the request).
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub terminal: String,
    pub request_id: String,
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

fn unauthenticated(reason: &AccessError, presented: bool) -> Response {
    let mut res = match reason {
        AccessError::Unavailable(_) => {
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

pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let now = s.ledger.clock().now();
    let method = req.method().clone();
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let route = matched.as_deref().and_then(|m| s.routes.get(&method, m)).cloned();
    let headers = req.headers();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let credential = bearer(headers);
    if route.as_ref().is_some_and(|r| r.open()) && credential.is_none() {
        return next.run(req).await;
    }
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
    let screen = match (&route, &matched) {
        (Some(r), _) => r.screen(),
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
    record.path = Some(req.uri().path().to_owned());

    let principal = match credential {
        None => Err((AccessError::Unauthenticated("no credential".into()), false)),
        Some(Err(e)) => Err((e, true)),
        Some(Ok(token)) => s.access.authenticate(&token, now).await.map_err(|e| (e, true)),
    };
    let response = match principal {
        Err((reason, presented)) => {
            // The reason is for the operator; the token itself is never logged.
            tracing::info!(request_id = %request_id, %reason, "credential refused");
            unauthenticated(&reason, presented)
        }
        Ok(principal) => {
            record.actor = principal.id.clone();
            record.roles = principal.role_names();
            if req.headers().contains_key("x-actor") {
                ApiError::bad_request(
                    "actor_header_not_accepted",
                    "X-Actor is not accepted: the actor is the authenticated principal",
                )
                .into_response()
            } else if route.as_ref().is_some_and(|r| !principal.may_all(r.needs))
                || (route.is_none() && matched.as_deref().is_some_and(|m| !s.routes.has_template(m)))
            {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "your roles do not allow this request",
                )
                .into_response()
            } else {
                req.extensions_mut().insert(Caller {
                    principal,
                    terminal,
                    request_id: request_id.clone(),
                });
                next.run(req).await
            }
        }
    };
    finish(&s, record, response).await
}

/// Completes the record from the response and writes it; the response goes out only after.
async fn finish(s: &AppState, mut record: AccessRecord, mut response: Response) -> Response {
    let status = response.status();
    if let Some(t) = response.extensions_mut().remove::<Touched>() {
        record.set_persons(t.persons);
        record.my_number = t.my_number;
        record.export = t.export;
    }
    record.outcome = status.as_u16();
    if !record.persons.is_empty() {
        match s.ledger.reads.any_restricted(&record.persons).await {
            Ok(r) => record.restricted = r,
            Err(e) => {
                tracing::error!(error = %e, request_id = %record.request_id, "restriction check failed");
                return access_log_unavailable();
            }
        }
    }
    let request_id = record.request_id.clone();
    match s.access.recorder.record(record).await {
        Ok(_) => response,
        Err(e) => {
            tracing::error!(error = %e, request_id = %request_id, "access record not written: the response is withheld");
            access_log_unavailable()
        }
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
