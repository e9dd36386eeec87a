//! Audit endpoints (audit.md): the latest signed checkpoint, entries, inclusion and
//! consistency proofs.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::persons::{int_param, path, query};
use super::{ApiError, AppState};
use crate::audit::{AuditError, ConsistencyProof, EntryView, InclusionProof};

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::BadRequest(code, message) => ApiError::bad_request(code, message),
            AuditError::NotFound(code, message) => ApiError::new(StatusCode::NOT_FOUND, code, message),
            AuditError::Store(err) => crate::ledger::LedgerError::Store(err).into(),
        }
    }
}

pub async fn checkpoint(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
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

pub async fn entry(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<EntryView>, ApiError> {
    let raw = path(p)?;
    let position = raw
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_position", "position must be a positive integer"))?;
    Ok(Json(s.ledger.audit().entry(position).await?))
}

pub async fn inclusion(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let q = query(q)?;
    let position = int_param(&q, "position", None, 1, i64::MAX, "invalid_position")?;
    let size = int_param(&q, "size", None, 1, i64::MAX, "invalid_size")?;
    Ok(Json(s.ledger.audit().inclusion(position, size).await?))
}

pub async fn consistency(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let q = query(q)?;
    let from = int_param(&q, "from", None, 1, i64::MAX, "invalid_from")?;
    let to = int_param(&q, "to", None, 1, i64::MAX, "invalid_to")?;
    Ok(Json(s.ledger.audit().consistency(from, to).await?))
}
