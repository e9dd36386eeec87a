//! Household endpoints: record an event, read the household, the branches of a card.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json};

use super::extract::{path, Params};
use super::guard::{Caller, Touched};
use super::persons::record;
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::{AccessKind, Permission};
use crate::commands::Command;
use crate::domain::input::parse_household_event;
use crate::domain::{CardNumber, CardSymbol, HouseholdId};
use crate::reads::{CardBranches, HouseholdQuery};

pub fn routes() -> Vec<Route> {
    use Permission::*;
    vec![
        Route::new(
            Method::POST,
            "/v1/households/{household_id}/events",
            &[RecordEvents],
            AccessKind::Update,
            || post(record_event),
        ),
        Route::new(
            Method::GET,
            "/v1/households/{household_id}",
            &[ReadPersons],
            AccessKind::Inquiry,
            || get(household),
        ),
        Route::new(
            Method::GET,
            "/v1/cards/{symbol}/{number}/branches",
            &[ReadPersons],
            AccessKind::Inquiry,
            || get(card_branches),
        ),
    ]
}

fn household_id(p: Result<Path<String>, PathRejection>) -> Result<HouseholdId, ApiError> {
    Ok(HouseholdId::parse(&path(p)?)?)
}

async fn record_event(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let household_id = household_id(id)?;
    record(
        &s,
        &caller,
        params,
        &uri,
        &headers,
        body,
        "household_id",
        |body, today| {
            Ok(Command::Household {
                household_id,
                event: parse_household_event(body, today)?,
            })
        },
    )
    .await
}

async fn household(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let household_id = household_id(id)?;
    let read = params.read(&headers)?;
    params.finish()?;
    let view = s.ledger.ask(&HouseholdQuery { household_id }, &read).await?;
    // A household read shows every member.
    let members = view.members.iter().map(|m| m.person_id.clone());
    Ok(Touched::persons(members).on(Json(view)))
}

async fn card_branches(
    State(s): State<AppState>,
    card: Result<Path<(String, String)>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (symbol, number) = path(card)?;
    let query = CardBranches {
        symbol: CardSymbol::parse(&symbol)?,
        number: CardNumber::parse(&number)?,
    };
    let read = params.read(&headers)?;
    params.finish()?;
    let view = s.ledger.ask(&query, &read).await?;
    let holders = view.branches.iter().map(|b| b.person_id.clone());
    Ok(Touched::persons(holders).on(Json(view)))
}
