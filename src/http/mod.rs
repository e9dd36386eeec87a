//! The HTTP API of api.md (axum). One router per resource; one error type maps every failure
//! to its status and the error body `{"error": {"code", "message"}}`.

pub(crate) mod access_records;
mod admin;
mod audit;
mod console;
mod error;
mod exports;
pub mod extract;
mod feed;
pub mod guard;
mod households;
mod ops;
mod persons;
pub mod rate;
pub mod routes;
pub mod serve;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use error::ApiError;
use routes::RouteIndex;

use crate::access::Access;
use crate::ledger::Ledger;
use crate::metrics;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub access: Arc<Access>,
    pub routes: Arc<RouteIndex>,
    pub limits: Arc<rate::RateLimiter>,
}

/// The service: the route table's routes, each behind the guard (identity, roles, access
/// record), the JSON 404 (guarded too), and the request-id, body-limit and 405 layers.
pub fn router(ledger: Arc<Ledger>, access: Arc<Access>) -> Router {
    let table = routes::table();
    let state = AppState {
        limits: Arc::new(rate::RateLimiter::new(ledger.settings().rate_limit)),
        ledger,
        access,
        routes: Arc::new(RouteIndex::new(&table)),
    };
    routes::router(&table)
        .fallback(ops::not_found)
        // Per route (after routing: the guard sees the matched template) and the fallback.
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(json_method_not_allowed))
        .layer(middleware::from_fn(request_id_and_metrics))
        .with_state(state)
}

/// axum answers a method a route does not take with 405 and its `Allow` header; the body
/// becomes the API's error body, the header stays.
async fn json_method_not_allowed(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let allow = res.headers().get(axum::http::header::ALLOW).cloned();
    let mut json = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
    .into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    json
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
