//! Household endpoints: record an event, read the household, the branches of a card.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::{path, Params};
use super::persons::record;
use super::{ApiError, AppState};
use crate::commands::Command;
use crate::domain::input::parse_household_event;
use crate::domain::{CardNumber, CardSymbol, HouseholdId};
use crate::reads::views::{CardBranchesView, HouseholdView};
use crate::reads::{CardBranches, HouseholdQuery};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/households/{household_id}/events", post(record_event))
        .route("/v1/households/{household_id}", get(household))
        .route("/v1/cards/{symbol}/{number}/branches", get(card_branches))
}

fn household_id(p: Result<Path<String>, PathRejection>) -> Result<HouseholdId, ApiError> {
    Ok(HouseholdId::parse(&path(p)?)?)
}

async fn record_event(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let household_id = household_id(id)?;
    record(&s, params, &uri, &headers, body, "household_id", |body, today| {
        Ok(Command::Household {
            household_id,
            event: parse_household_event(body, today)?,
        })
    })
    .await
}

async fn household(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Json<HouseholdView>, ApiError> {
    let household_id = household_id(id)?;
    let read = params.read(&headers)?;
    params.finish()?;
    Ok(Json(s.ledger.ask(&HouseholdQuery { household_id }, &read).await?))
}

async fn card_branches(
    State(s): State<AppState>,
    card: Result<Path<(String, String)>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Json<CardBranchesView>, ApiError> {
    let (symbol, number) = path(card)?;
    let query = CardBranches {
        symbol: CardSymbol::parse(&symbol)?,
        number: CardNumber::parse(&number)?,
    };
    let read = params.read(&headers)?;
    params.finish()?;
    Ok(Json(s.ledger.ask(&query, &read).await?))
}
