//! `GET /v1/feed?after=&limit=&wait=` (feed.md).

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};

use super::extract::Params;
use super::guard::{Caller, Touched};
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::{AccessKind, Permission};

pub fn routes() -> Vec<Route> {
    vec![Route::new(
        Method::GET,
        "/v1/feed",
        &[Permission::ReadFeed],
        AccessKind::Inquiry,
        || get(feed),
    )]
}

/// Every person a page's records name goes into the access record; `my_number` is added for a
/// consumer whose roles grant it (the intermediate-server channel).
async fn feed(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut params: Params,
) -> Result<Response, ApiError> {
    let after = params.int("after", Some(0), 0, i64::MAX, "invalid_after")?;
    let limit = params.int("limit", Some(100), 1, 1000, "invalid_limit")?;
    let wait = params.int("wait", Some(0), 0, 30, "invalid_wait")?;
    params.finish()?;
    let wait = std::time::Duration::from_secs(wait as u64);
    let page = s.ledger.feed.page_text(after, limit, wait).await?;
    let mut touched = Touched::persons(page.persons());
    if caller.principal.may(Permission::MyNumber) {
        let (page, revealed) = s.ledger.feed.with_my_numbers(&page).await?;
        touched.my_number = revealed;
        return Ok(touched.on(Json(page)));
    }
    // The records as stored, spliced into the page: nothing parsed and serialized again.
    Ok(touched.on(([(axum::http::header::CONTENT_TYPE, "application/json")], page.to_json()).into_response()))
}
