//! Person and household endpoints.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use super::{context, ApiError, AppState};
use crate::domain::input::parse_date;
use crate::domain::{HouseholdId, PersonId};
use crate::ledger::{CardBranchesView, EligibilityView, HouseholdView, PersonView, Read, Recorded, TimelineView};
use crate::store::format_instant;

fn body_json(body: Result<Bytes, BytesRejection>) -> Result<(Bytes, Value), ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body exceeds 1 MiB",
            )
        } else {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        }
    })?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    Ok((bytes, value))
}

pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|_| ApiError::bad_request("invalid_path", "the path could not be decoded"))
}

pub(super) fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|_| ApiError::bad_request("invalid_query", "the query string could not be decoded"))
}

fn as_of(q: &HashMap<String, String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.get("as_of")
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_as_of",
                        "as_of must be an RFC 3339 instant, e.g. 2026-11-25T10:00:00+09:00",
                    )
                })
        })
        .transpose()
}

/// `as_of` and read-your-writes: `min_position` (query) or the `X-Min-Position` header, the
/// `position` a write of the caller answered with.
fn read(q: &HashMap<String, String>, headers: &HeaderMap) -> Result<Read, ApiError> {
    let raw = q
        .get("min_position")
        .map(String::as_str)
        .or_else(|| headers.get("x-min-position").and_then(|v| v.to_str().ok()));
    let min_position = raw
        .map(|v| {
            v.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_min_position",
                    "min_position must be a log position (an integer ≥ 0)",
                )
            })
        })
        .transpose()?;
    Ok(Read {
        as_of: as_of(q)?,
        min_position,
    })
}

fn created(id_field: &str, r: Recorded) -> Response {
    let body = json!({
        id_field: r.appended.aggregate_id,
        "sequence": r.appended.last_sequence,
        "position": r.appended.last_position,
        "recorded_at": format_instant(&r.appended.recorded_at),
    });
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    if r.replayed {
        res.headers_mut()
            .insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    res
}

pub async fn record_person_event(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let (bytes, value) = body_json(body)?;
    let person_id = PersonId::parse(&id)?;
    let ctx = context(&headers, uri.path(), &bytes)?;
    let r = s.ledger.record_person_event(&person_id, &value, &ctx).await?;
    Ok(created("person_id", r))
}

pub async fn record_household_event(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let (bytes, value) = body_json(body)?;
    let household_id = HouseholdId::parse(&id)?;
    let ctx = context(&headers, uri.path(), &bytes)?;
    let r = s.ledger.record_household_event(&household_id, &value, &ctx).await?;
    Ok(created("household_id", r))
}

pub async fn person(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<PersonView>, ApiError> {
    let (id, q) = (path(id)?, query(q)?);
    Ok(Json(
        s.ledger.person(&PersonId::parse(&id)?, &read(&q, &headers)?).await?,
    ))
}

pub async fn timeline(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<TimelineView>, ApiError> {
    let (id, q) = (path(id)?, query(q)?);
    Ok(Json(
        s.ledger.timeline(&PersonId::parse(&id)?, &read(&q, &headers)?).await?,
    ))
}

pub async fn eligibility(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<EligibilityView>, ApiError> {
    let (id, q) = (path(id)?, query(q)?);
    let on: Option<NaiveDate> = q
        .get("on")
        .map(|d| parse_date("on", d).map_err(|_| ApiError::bad_request("invalid_on", "on must be a date YYYY-MM-DD")))
        .transpose()?;
    Ok(Json(
        s.ledger
            .eligibility(&PersonId::parse(&id)?, on, &read(&q, &headers)?)
            .await?,
    ))
}

pub async fn household(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<HouseholdView>, ApiError> {
    let (id, q) = (path(id)?, query(q)?);
    let household_id = HouseholdId::parse(&id)?;
    Ok(Json(
        s.ledger.household_view(&household_id, &read(&q, &headers)?).await?,
    ))
}

pub async fn card_branches(
    State(s): State<AppState>,
    card: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<CardBranchesView>, ApiError> {
    let (symbol, number) = path(card)?;
    let q = query(q)?;
    let symbol = crate::domain::CardSymbol::parse(&symbol)?;
    let number = crate::domain::CardNumber::parse(&number)?;
    let r = read(&q, &headers)?;
    Ok(Json(
        s.ledger.card_branches(symbol.as_str(), number.as_str(), &r).await?,
    ))
}

/// `GET /v1/feed?after=&limit=&wait=` (feed.md).
pub async fn feed(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let after = int_param(&q, "after", Some(0), 0, i64::MAX, "invalid_after")?;
    let limit = int_param(&q, "limit", Some(100), 1, 1000, "invalid_limit")?;
    let wait = int_param(&q, "wait", Some(0), 0, 30, "invalid_wait")?;
    let wait = std::time::Duration::from_secs(wait as u64);
    if s.ledger.feed_needs_values() {
        return Ok(Json(s.ledger.feed(after, limit, wait).await?).into_response());
    }
    // The records as stored, spliced into the page: nothing parsed and serialized again.
    let page = s.ledger.feed_text(after, limit, wait).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], page.to_json()).into_response())
}

/// An integer query parameter in `min..=max`; without `default`, required.
pub(super) fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: Option<i64>,
    min: i64,
    max: i64,
    code: &'static str,
) -> Result<i64, ApiError> {
    let range = || ApiError::bad_request(code, format!("{name} must be an integer from {min} to {max}"));
    match q.get(name) {
        None => default.ok_or_else(|| ApiError::bad_request(code, format!("{name} is required"))),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(range),
    }
}
