//! Person endpoints: record an event, read the person, the timeline, eligibility on a day.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::extract::{context, json_body, path, Params};
use super::{ApiError, AppState};
use crate::commands::{Command, Recorded};
use crate::domain::input::parse_person_event;
use crate::domain::PersonId;
use crate::reads::views::{EligibilityView, PersonView, TimelineView};
use crate::reads::{EligibilityQuery, PersonQuery, TimelineQuery};
use crate::store::format_instant;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/persons/{person_id}/events", post(record_event))
        .route("/v1/persons/{person_id}", get(person))
        .route("/v1/persons/{person_id}/timeline", get(timeline))
        .route("/v1/persons/{person_id}/eligibility", get(eligibility))
}

/// 201 with the recorded event's own sequence and position, and its consequences (api.md).
pub(super) fn created(id_field: &str, r: Recorded) -> Response {
    let body = json!({
        id_field: r.stream_id,
        "sequence": r.sequence,
        "position": r.position,
        "recorded_at": format_instant(&r.recorded_at),
        "consequences": r.consequences,
        "last_position": r.last_position,
    });
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    if r.replayed {
        res.headers_mut()
            .insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    res
}

fn person_id(p: Result<Path<String>, PathRejection>) -> Result<PersonId, ApiError> {
    Ok(PersonId::parse(&path(p)?)?)
}

async fn record_event(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let person_id = person_id(id)?;
    record(&s, params, &uri, &headers, body, "person_id", |body, today| {
        Ok(Command::Person {
            person_id,
            input: parse_person_event(body, today)?,
        })
    })
    .await
}

/// A write: the body parsed under the size limit, the request metadata read, the command
/// built by `command` from the body and today, recorded, answered 201.
pub(super) async fn record(
    s: &AppState,
    params: Params,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    id_field: &str,
    command: impl FnOnce(&serde_json::Value, chrono::NaiveDate) -> Result<Command, ApiError>,
) -> Result<Response, ApiError> {
    params.finish()?;
    let (bytes, value) = json_body(body)?;
    let ctx = context(headers, uri.path(), &bytes, s.ledger.vault())?;
    let command = command(&value, s.ledger.clock().today())?;
    let r = s.ledger.record(&command, &ctx).await?;
    Ok(created(id_field, r))
}

async fn person(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Json<PersonView>, ApiError> {
    let person_id = person_id(id)?;
    let read = params.read(&headers)?;
    params.finish()?;
    Ok(Json(s.ledger.ask(&PersonQuery { person_id }, &read).await?))
}

async fn timeline(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Json<TimelineView>, ApiError> {
    let person_id = person_id(id)?;
    let read = params.read(&headers)?;
    params.finish()?;
    Ok(Json(s.ledger.ask(&TimelineQuery { person_id }, &read).await?))
}

async fn eligibility(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Json<EligibilityView>, ApiError> {
    let person_id = person_id(id)?;
    let on = params.date("on", "invalid_on")?;
    let read = params.read(&headers)?;
    params.finish()?;
    Ok(Json(s.ledger.ask(&EligibilityQuery { person_id, on }, &read).await?))
}
