//! The HTTP API of api.md (axum). One error type maps every failure to its status and the
//! error body `{"error": {"code", "message"}}`.

mod audit;
mod error;
mod ops;
mod persons;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};

pub use error::ApiError;

use crate::ledger::{Ledger, RequestContext};
use crate::metrics;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
}

pub fn router(ledger: Arc<Ledger>) -> Router {
    let state = AppState { ledger };
    Router::new()
        .route("/v1/persons/{person_id}/events", post(persons::record_person_event))
        .route("/v1/persons/{person_id}", get(persons::person))
        .route("/v1/persons/{person_id}/timeline", get(persons::timeline))
        .route("/v1/persons/{person_id}/eligibility", get(persons::eligibility))
        .route(
            "/v1/households/{household_id}/events",
            post(persons::record_household_event),
        )
        .route("/v1/households/{household_id}", get(persons::household))
        .route("/v1/cards/{symbol}/{number}/branches", get(persons::card_branches))
        .route("/v1/feed", get(persons::feed))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/entries/{position}", get(audit::entry))
        .route("/v1/audit/proof/inclusion", get(audit::inclusion))
        .route("/v1/audit/proof/consistency", get(audit::consistency))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(request_id_and_metrics))
        .with_state(state)
}

/// Echoes or assigns `X-Request-Id` and counts responses by status.
async fn request_id_and_metrics(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert("x-request-id", v);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut res = next.run(req).await;
    metrics::global().response(res.status().as_u16());
    // Paths carry ids only (person/household numbers), never names.
    tracing::debug!(request_id = %id, %method, %path, status = res.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

fn header<'a>(headers: &'a HeaderMap, name: &str, code: &'static str, max: usize) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad_request(code, format!("{name} must be visible ASCII")))?;
            if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(ApiError::bad_request(
                    code,
                    format!("{name} must be 1 to {max} visible ASCII characters"),
                ));
            }
            Ok(Some(s))
        }
    }
}

/// Builds the request context from the headers: actor, terminal, request id, Idempotency-Key
/// (with a fingerprint of path and body) and If-Match.
pub(crate) fn context(headers: &HeaderMap, path: &str, body: &[u8]) -> Result<RequestContext, ApiError> {
    let idempotency_key = header(headers, "idempotency-key", "invalid_idempotency_key", 255)?.map(str::to_owned);
    let if_match = header(headers, "if-match", "invalid_if_match", 32)?
        .map(|v| {
            let v = v.trim().trim_start_matches("W/").trim_matches('"');
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request("invalid_if_match", "If-Match must be a sequence number, e.g. \"3\"")
            })
        })
        .transpose()?;
    let actor = header(headers, "x-actor", "invalid_header", 64)?
        .unwrap_or("anonymous")
        .to_owned();
    let terminal = header(headers, "x-terminal", "invalid_header", 64)?.map(str::to_owned);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fingerprint = idempotency_key.as_ref().map(|_| {
        let mut h = Sha256::new();
        h.update(path.as_bytes());
        h.update([0]);
        h.update(body);
        hex::encode(h.finalize())
    });
    Ok(RequestContext {
        actor,
        terminal,
        request_id,
        idempotency_key,
        fingerprint,
        if_match,
    })
}
