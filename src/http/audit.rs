//! Audit endpoints (audit.md): the latest signed checkpoint, entries, inclusion and
//! consistency proofs.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::extract::{path, Params};
use super::{ApiError, AppState};
use crate::audit::{AuditError, ConsistencyProof, EntryView, InclusionProof};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/checkpoint", get(checkpoint))
        .route("/v1/audit/entries/{position}", get(entry))
        .route("/v1/audit/proof/inclusion", get(inclusion))
        .route("/v1/audit/proof/consistency", get(consistency))
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
) -> Result<Json<EntryView>, ApiError> {
    params.finish()?;
    let raw = path(p)?;
    let position = raw
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_position", "position must be a positive integer"))?;
    Ok(Json(s.ledger.audit().entry(position).await?))
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
