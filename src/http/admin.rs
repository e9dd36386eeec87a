//! Administration (role `admin`, which reaches no personal data): local tokens and the role
//! table in force.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::extract::{json_body, path, Params};
use super::guard::Caller;
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::{AccessError, AccessKind, Permission, Role};

pub fn routes() -> Vec<Route> {
    let admin = &[Permission::Admin];
    vec![
        Route::new(Method::GET, "/v1/tokens", admin, AccessKind::Inquiry, || get(list)),
        Route::new(Method::POST, "/v1/tokens", admin, AccessKind::Update, || post(create)),
        Route::new(Method::DELETE, "/v1/tokens/{name}", admin, AccessKind::Update, || {
            delete(revoke)
        }),
        Route::new(Method::GET, "/v1/role-table", admin, AccessKind::Inquiry, || {
            get(role_table)
        }),
    ]
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Invalid(m) => ApiError::bad_request("invalid_token_request", m),
            AccessError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "token_not_found", m),
            AccessError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "token_name_taken", m),
            AccessError::Store(e) => crate::error::LedgerError::Store(e).into(),
            other => crate::error::LedgerError::Internal(other.to_string()).into(),
        }
    }
}

async fn list(State(s): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    params.finish()?;
    Ok(Json(json!({"tokens": s.access.tokens.list().await?})))
}

/// `POST /v1/tokens` `{"name", "roles": [...], "expires_days"}` → 201 with the token, shown
/// this once.
async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    params.finish()?;
    let (_, v) = json_body(body)?;
    let invalid = |m: &str| ApiError::bad_request("invalid_token_request", m.to_owned());
    let map = v.as_object().ok_or_else(|| invalid("the body must be a JSON object"))?;
    if let Some(k) = map
        .keys()
        .find(|k| !["name", "roles", "expires_days"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request("unknown_field", format!("unknown field {k}")));
    }
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("name is required"))?;
    let roles = map
        .get("roles")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("roles is required: a list of role names"))?
        .iter()
        .map(|r| {
            r.as_str()
                .ok_or_else(|| AccessError::Invalid("roles must be strings".into()))
                .and_then(Role::parse)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let expires_days = match map.get("expires_days") {
        None | Some(Value::Null) => None,
        // `30.0` is the integer 30: JSON (and the JSON Schema `integer`) do not tell them apart.
        Some(v) => Some(
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && (1.0..=3650.0).contains(f))
                        .map(|f| f as u64)
                })
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| invalid("expires_days must be an integer from 1 to 3650"))? as u32,
        ),
    };
    let now = s.ledger.clock().now();
    let token = s
        .access
        .tokens
        .create(name, &roles, expires_days, &caller.principal.id, now)
        .await?;
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "roles": roles, "token": token})),
    )
        .into_response())
}

async fn revoke(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<StatusCode, ApiError> {
    params.finish()?;
    let name = path(name)?;
    s.access.tokens.revoke(&name, s.ledger.clock().now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn role_table(State(s): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    params.finish()?;
    Ok(Json(s.access.roles.to_json()))
}
