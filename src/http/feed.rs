//! `GET /v1/feed?after=&limit=&wait=` (feed.md).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::extract::Params;
use super::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/feed", get(feed))
}

async fn feed(State(s): State<AppState>, mut params: Params) -> Result<Response, ApiError> {
    let after = params.int("after", Some(0), 0, i64::MAX, "invalid_after")?;
    let limit = params.int("limit", Some(100), 1, 1000, "invalid_limit")?;
    let wait = params.int("wait", Some(0), 0, 30, "invalid_wait")?;
    params.finish()?;
    let wait = std::time::Duration::from_secs(wait as u64);
    if s.ledger.settings().feed_my_number {
        return Ok(Json(s.ledger.feed.page(after, limit, wait, true).await?).into_response());
    }
    // The records as stored, spliced into the page: nothing parsed and serialized again.
    let page = s.ledger.feed.page_text(after, limit, wait).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], page.to_json()).into_response())
}
