//! Audit endpoints (audit.md): the latest signed checkpoint, entries, inclusion and
//! consistency proofs.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{path, Params};
use super::guard::Touched;
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::record::named_persons;
use crate::access::{AccessKind, Permission};
use crate::audit::{AuditError, ConsistencyProof, EntryView, InclusionProof};

pub fn routes() -> Vec<Route> {
    let audit = &[Permission::Audit];
    vec![
        // Published so that others can witness the log (access.md): no personal data.
        Route::new(Method::GET, "/v1/audit/checkpoint", &[], AccessKind::Inquiry, || {
            get(checkpoint)
        }),
        Route::new(
            Method::GET,
            "/v1/audit/entries/{position}",
            audit,
            AccessKind::Inquiry,
            || get(entry),
        ),
        Route::new(
            Method::GET,
            "/v1/audit/proof/inclusion",
            audit,
            AccessKind::Inquiry,
            || get(inclusion),
        ),
        Route::new(
            Method::GET,
            "/v1/audit/proof/consistency",
            audit,
            AccessKind::Inquiry,
            || get(consistency),
        ),
    ]
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::BadRequest(code, message) => ApiError::bad_request(code, message),
            AuditError::NotFound(code, message) => ApiError::new(StatusCode::NOT_FOUND, code, message),
            AuditError::Store(err) => crate::error::LedgerError::Store(err).into(),
        }
    }
}

async fn checkpoint(State(s): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    params.finish()?;
    let latest = s.ledger.audit().checkpoint().await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "no checkpoint has been signed yet (the log is empty or not yet chained)",
        )
    })?;
    Ok(Json(json!({
        "checkpoint": latest.signed.checkpoint,
        "signature": latest.signed.signature,
        "public_key": latest.public_key,
    })))
}

async fn entry(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish()?;
    let raw = path(p)?;
    let position = raw
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_position", "position must be a positive integer"))?;
    let view: EntryView = s.ledger.audit().entry(position).await?;
    // An entry shows its event: the person of a person stream, and whoever its payload names.
    let mut persons = named_persons(&view.entry["payload"]);
    if view.entry["stream"] == "person" {
        persons.extend(view.entry["stream_id"].as_str().map(str::to_owned));
    }
    Ok(Touched::persons(persons).on(Json(view)))
}

async fn inclusion(State(s): State<AppState>, mut params: Params) -> Result<Json<InclusionProof>, ApiError> {
    let position = params.int("position", None, 1, i64::MAX, "invalid_position")?;
    let size = params.int("size", None, 1, i64::MAX, "invalid_size")?;
    params.finish()?;
    Ok(Json(s.ledger.audit().inclusion(position, size).await?))
}

async fn consistency(State(s): State<AppState>, mut params: Params) -> Result<Json<ConsistencyProof>, ApiError> {
    let from = params.int("from", None, 1, i64::MAX, "invalid_from")?;
    let to = params.int("to", None, 1, i64::MAX, "invalid_to")?;
    params.finish()?;
    Ok(Json(s.ledger.audit().consistency(from, to).await?))
}
