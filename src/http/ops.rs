//! Operations endpoints: health, readiness, metrics, the OpenAPI document, and the JSON 404.

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;

use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::AccessKind;
use crate::feed::relay;
use crate::metrics;
use crate::projections::feed::feed_head;

/// Open without a credential (access.md): nothing personal.
pub fn routes() -> Vec<Route> {
    let open = |path, handler| Route::new(Method::GET, path, &[], AccessKind::Inquiry, handler);
    vec![
        open("/healthz", || get(healthz)),
        open("/readyz", || get(readyz)),
        open("/metrics", || get(metrics)),
        open("/v1/openapi.json", || get(openapi)),
    ]
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// How far behind the log a projection may be and the service still be ready (api.md).
const READY_LAG_SECONDS: f64 = 5.0;

/// Ready when the database answers and every projection is caught up within 5 s.
async fn readyz(State(s): State<AppState>) -> Response {
    let unavailable = |body: serde_json::Value| (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    let head = match s.ledger.store().head().await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            return unavailable(
                json!({"status": "unavailable", "database": "unreachable", "error": {"code": "database_unavailable", "message": "the database does not answer"}}),
            );
        }
    };
    let projections = match s.ledger.projections().status().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "projection status unavailable");
            return unavailable(
                json!({"status": "unavailable", "database": "ok", "error": {"code": "projections_unavailable", "message": "projection checkpoints cannot be read"}}),
            );
        }
    };
    let lagging: Vec<&str> = projections
        .iter()
        .filter(|p| p.lag_events > 0 && p.lag_seconds > READY_LAG_SECONDS)
        .map(|p| p.name)
        .collect();
    let mut body = json!({
        "status": if lagging.is_empty() { "ready" } else { "lagging" },
        "database": "ok",
        // Full: events are refused (503 storage_unavailable) while reads go on, so the
        // service stays in the pool.
        "storage": if s.ledger.store().disk_full() { "full" } else { "ok" },
        "log_head": head,
        "projections": projections,
    });
    // The relay's lag is reported but does not make the service unready: NATS being away
    // delays consumers, not the ledger's own API. A relay stopped by an error does, because
    // nothing recovers it without an operator (docs/operations.md).
    let relay = relay::status::global().snapshot();
    if let Some(r) = &relay {
        let feed_head = feed_head(s.ledger.store().db()).await.ok();
        body["nats_relay"] = json!({
            "state": r.state.as_str(),
            "position": r.published,
            "lag_positions": feed_head.map(|h| (h - r.published).max(0)),
            "error": r.error,
        });
        if r.state == relay::State::Stopped {
            body["status"] = json!("relay_stopped");
            body["error"] = json!({"code": "relay_stopped", "message": "the NATS relay stopped with an error (see nats_relay.error)"});
            return unavailable(body);
        }
    }
    if lagging.is_empty() {
        Json(body).into_response()
    } else {
        let mut body = body;
        body["error"] = json!({"code": "projection_lagging", "message": format!("behind the log by more than {READY_LAG_SECONDS} s: {}", lagging.join(", "))});
        unavailable(body)
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let head = s.ledger.store().head().await.ok();
    let projections = s.ledger.projections().status().await.unwrap_or_default();
    let mut text = metrics::global().render(head, &gauges(&projections));
    text.push_str(&s.ledger.reads().answers().render());
    if relay::status::global().snapshot().is_some() {
        let feed_head = feed_head(s.ledger.store().db()).await.ok();
        text.push_str(&relay::status::global().render(feed_head));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The projections' progress as gauge rows for the metrics text.
fn gauges(projections: &[crate::projections::Status]) -> Vec<metrics::Progress> {
    projections
        .iter()
        .map(|p| metrics::Progress {
            name: p.name,
            position: p.position,
            lag_events: p.lag_events,
            lag_seconds: p.lag_seconds,
        })
        .collect()
}
