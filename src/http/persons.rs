//! Person endpoints: record an event, read the person, the timeline, eligibility on a day,
//! search, and the My Number reveal.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::json;

use super::extract::{context, json_body, path, Params};
use super::guard::{Caller, Touched};
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::{AccessKind, Permission};
use crate::commands::{Command, Recorded};
use crate::domain::input::{parse_person_event, parse_search};
use crate::domain::PersonId;
use crate::error::LedgerError;
use crate::reads::{EligibilityQuery, PersonQuery, Read, SearchQuery, TimelineQuery};
use crate::store::format_instant;
use crate::vault::numbers::{held, Held};

pub fn routes() -> Vec<Route> {
    use Permission::*;
    vec![
        Route::new(
            Method::POST,
            "/v1/persons/{person_id}/events",
            &[RecordEvents],
            AccessKind::Update,
            || post(record_event),
        ),
        Route::new(
            Method::GET,
            "/v1/persons/{person_id}",
            &[ReadPersons],
            AccessKind::Inquiry,
            || get(person),
        ),
        Route::new(
            Method::GET,
            "/v1/persons/{person_id}/timeline",
            &[ReadPersons],
            AccessKind::Inquiry,
            || get(timeline),
        ),
        Route::new(
            Method::GET,
            "/v1/persons/{person_id}/eligibility",
            &[ReadPersons],
            AccessKind::Inquiry,
            || get(eligibility),
        ),
        Route::new(
            Method::POST,
            "/v1/persons/search",
            &[ReadPersons],
            AccessKind::Inquiry,
            || post(search),
        ),
        Route::new(
            Method::GET,
            "/v1/persons/{person_id}/my-number",
            &[ReadPersons, MyNumber],
            AccessKind::Inquiry,
            || get(my_number),
        ),
    ]
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
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let person_id = person_id(id)?;
    record(&s, &caller, params, &uri, &headers, body, "person_id", |body, today| {
        Ok(Command::Person {
            person_id,
            input: parse_person_event(body, today)?,
        })
    })
    .await
}

/// A write: the body parsed under the size limit, the request metadata read, the command
/// built by `command` from the body and today, recorded, answered 201. The persons changed
/// (the stream's own and those of its consequences, and any person the body names) go into
/// the access record.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record(
    s: &AppState,
    caller: &Caller,
    params: Params,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    id_field: &str,
    command: impl FnOnce(&serde_json::Value, chrono::NaiveDate) -> Result<Command, ApiError>,
) -> Result<Response, ApiError> {
    params.finish()?;
    let (bytes, value) = json_body(body)?;
    let mut ctx = context(caller, headers, uri.path(), &bytes, s.ledger.vault())?;
    let command = command(&value, s.ledger.clock().today())?;
    let mut persons = crate::access::record::named_persons(&value);
    if let Command::Person { person_id, .. } = &command {
        persons.push(person_id.to_string());
    }
    // The record may commit with the events (one commit instead of two).
    ctx.access = caller.record.clone().map(|mut record| {
        record.set_persons(persons.clone());
        record
    });
    let r = s.ledger.record(&command, &ctx).await?;
    persons.extend(
        r.consequences
            .iter()
            .filter(|c| c.stream == "person")
            .map(|c| c.stream_id.clone()),
    );
    let mut touched = Touched::persons(persons);
    touched.recorded = r.access_recorded.then_some(StatusCode::CREATED.as_u16());
    Ok(touched.on(created(id_field, r)))
}

/// A read of one person's data: the person goes into the access record when answered.
async fn read_person<Q: crate::reads::Query>(
    s: &AppState,
    person_id: &PersonId,
    query: &Q,
    read: &Read,
) -> Result<Response, ApiError> {
    let answer = s.ledger.ask(query, read).await?;
    Ok(Touched::persons([person_id.to_string()]).on(Json(answer)))
}

async fn person(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let person_id = person_id(id)?;
    let read = params.read(&headers)?;
    params.finish()?;
    let query = PersonQuery {
        person_id: person_id.clone(),
    };
    json_of_person(&person_id, s.ledger.person_json(&query, &read).await?)
}

async fn timeline(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let person_id = person_id(id)?;
    let read = params.read(&headers)?;
    params.finish()?;
    let query = TimelineQuery {
        person_id: person_id.clone(),
    };
    json_of_person(&person_id, s.ledger.timeline_json(&query, &read).await?)
}

/// A read of one person's data answered as JSON already written: the person goes into the
/// access record.
fn json_of_person(person_id: &PersonId, json: Bytes) -> Result<Response, ApiError> {
    let body = ([(axum::http::header::CONTENT_TYPE, "application/json")], json);
    Ok(Touched::persons([person_id.to_string()]).on(body))
}

async fn eligibility(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let person_id = person_id(id)?;
    let on = params.date("on", "invalid_on")?;
    let read = params.read(&headers)?;
    params.finish()?;
    let query = EligibilityQuery {
        person_id: person_id.clone(),
        on,
    };
    read_person(&s, &person_id, &query, &read).await
}

/// `POST /v1/persons/search`: every result goes into the access record; a search by My
/// Number needs the `my_number` permission and is flagged.
async fn search(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    params.finish()?;
    let (_, value) = json_body(body)?;
    let input = parse_search(&value)?;
    let by_number = input.my_number.is_some();
    if by_number && !caller.principal.may(Permission::MyNumber) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "searching by My Number needs the my_number role",
        ));
    }
    let person_ids = match &input.my_number {
        Some(n) => Some(
            crate::vault::numbers::persons_with(s.ledger.store().db(), s.ledger.vault(), n)
                .await
                .map_err(LedgerError::from)?,
        ),
        None => None,
    };
    let query = SearchQuery {
        name_kana: input.name_kana,
        name: input.name,
        birth_date: input.birth_date,
        household_id: input.household_id,
        person_ids,
    };
    let view = s.ledger.ask(&query, &Read::default()).await?;
    let mut touched = Touched::persons(view.results.iter().map(|r| r.person_id.clone()));
    touched.my_number = by_number;
    Ok(touched.on(Json(view)))
}

/// `GET /v1/persons/{person_id}/my-number`: the one response that carries a My Number.
async fn my_number(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let person_id = person_id(id)?;
    params.finish()?;
    let held = held(s.ledger.store(), s.ledger.vault(), person_id.as_str(), None).await?;
    let touched = Touched {
        persons: vec![person_id.to_string()],
        my_number: true,
        export: None,
        recorded: None,
    };
    let number = match held {
        None => {
            return Err(
                LedgerError::not_found("person_not_found", format!("person {person_id} is not registered")).into(),
            )
        }
        Some(Held::None) => {
            return Err(LedgerError::not_found(
                "no_my_number",
                format!("person {person_id} has no My Number on record"),
            )
            .into())
        }
        Some(Held::Erased) => {
            return Err(LedgerError::Gone {
                code: "my_number_erased",
                message: format!("the My Number of person {person_id} has been erased"),
            }
            .into())
        }
        Some(Held::Number(n)) => n,
    };
    Ok(touched.on(Json(json!({
        "person_id": person_id.to_string(),
        "my_number": number.expose(),
    }))))
}
