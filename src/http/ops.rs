//! Operations endpoints: health, readiness, metrics, the OpenAPI document, and the JSON 404.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState};
use crate::metrics;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers.
pub async fn readyz(State(s): State<AppState>) -> Response {
    match s.ledger.store().head().await {
        Ok(head) => Json(json!({"status": "ready", "database": "ok", "log_head": head})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "unreachable", "error": {"code": "database_unavailable", "message": "the database does not answer"}})),
            )
                .into_response()
        }
    }
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    let head = s.ledger.store().head().await.ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::global().render(head),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
