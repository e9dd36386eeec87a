//! Access records for auditors (access.md): `GET /v1/access-records` and the unusual-access
//! report `GET /v1/access-records/unusual`.

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::extract::{as_of, Params};
use super::guard::Touched;
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::log::{self, Filter};
use crate::access::unusual::bulk;
use crate::access::{AccessKind, Permission};
use crate::clock::tokyo_midnight;
use crate::domain::input::parse_date;
use crate::domain::PersonId;
use crate::error::LedgerError;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/v1/access-records",
            &[Permission::Audit],
            AccessKind::Inquiry,
            || get(records),
        ),
        Route::new(
            Method::GET,
            "/v1/access-records/unusual",
            &[Permission::Audit],
            AccessKind::Inquiry,
            || get(unusual),
        ),
    ]
}

/// An instant (RFC 3339) or a day (`YYYY-MM-DD`, from its start in Asia/Tokyo).
pub(crate) fn instant(
    params: &mut Params,
    name: &'static str,
    code: &'static str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .take(name)
        .map(|v| {
            if v.len() == 10 {
                parse_date(name, &v)
                    .map(tokyo_midnight)
                    .map_err(|e| ApiError::bad_request(code, e.message))
            } else {
                as_of(&v).map_err(|_| {
                    ApiError::bad_request(code, format!("{name} must be an RFC 3339 instant or a date YYYY-MM-DD"))
                })
            }
        })
        .transpose()
}

async fn records(State(s): State<AppState>, mut params: Params) -> Result<Response, ApiError> {
    let person_id = params
        .take("person_id")
        .map(|p| PersonId::parse(&p))
        .transpose()?
        .map(|p| p.to_string());
    let actor = params.take("actor");
    if actor.as_ref().is_some_and(|a| a.is_empty() || a.chars().count() > 200) {
        return Err(ApiError::bad_request("invalid_actor", "actor must be 1–200 characters"));
    }
    let from = instant(&mut params, "from", "invalid_from")?;
    let to = instant(&mut params, "to", "invalid_to")?;
    let after = params.int("after", Some(0), 0, i64::MAX, "invalid_after")?;
    let limit = params.int("limit", Some(100), 1, 1000, "invalid_limit")?;
    params.finish()?;
    let filter = Filter {
        person_id: person_id.clone(),
        actor,
        from,
        to,
        after,
        limit,
    };
    let found = log::list(s.ledger.store().db(), &filter)
        .await
        .map_err(LedgerError::from)?;
    let next_after = found.last().map_or(after, |r| r.id);
    let body = json!({
        "records": found.iter().map(|r| r.to_json()).collect::<Vec<Value>>(),
        "next_after": next_after,
    });
    // An auditor looking up who accessed a resident reads about that resident.
    Ok(Touched::persons(person_id).on(Json(body)))
}

/// The most records the report lists (the bulk findings are always complete).
const REPORT_MAX: usize = 1000;
/// The longest period one report covers.
pub(crate) const REPORT_DAYS: i64 = 31;

async fn unusual(State(s): State<AppState>, mut params: Params) -> Result<Response, ApiError> {
    let now = s.ledger.clock().now();
    let to = instant(&mut params, "to", "invalid_to")?.unwrap_or(now);
    let from = instant(&mut params, "from", "invalid_from")?.unwrap_or(to - chrono::Duration::days(7));
    params.finish()?;
    if from >= to {
        return Err(ApiError::bad_request("invalid_range", "from must be before to"));
    }
    if to - from > chrono::Duration::days(REPORT_DAYS) {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("one report covers at most {REPORT_DAYS} days"),
        ));
    }
    Ok(Json(unusual_report(&s, from, to).await?).into_response())
}

/// The unusual-access report of a period (at most [`REPORT_DAYS`] days): the JSON of
/// `GET /v1/access-records/unusual`, which the console shows as a page.
pub(crate) async fn unusual_report(s: &AppState, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Value, ApiError> {
    let rules = &s.ledger.settings().unusual;
    let db = s.ledger.store().db();
    let mut listed = Vec::new();
    let mut truncated = false;
    let mut after = 0;
    loop {
        let page = log::list(
            db,
            &Filter {
                from: Some(from),
                to: Some(to),
                after,
                limit: 5000,
                ..Default::default()
            },
        )
        .await
        .map_err(LedgerError::from)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in &page {
            let reasons = rules.reasons(r.at);
            if reasons.is_empty() {
                continue;
            }
            if listed.len() == REPORT_MAX {
                truncated = true;
                continue;
            }
            let mut v = r.to_json();
            v["reasons"] = json!(reasons);
            listed.push(v);
        }
    }
    let accesses = log::accesses(db, from, to).await.map_err(LedgerError::from)?;
    let body = json!({
        "from": crate::store::format_instant(&from),
        "to": crate::store::format_instant(&to),
        "business_hours": rules.hours_text(),
        "bulk_threshold": rules.bulk_threshold,
        "records": listed,
        "truncated": truncated,
        "bulk": bulk(&accesses, rules.bulk_threshold),
    });
    Ok(body)
}
