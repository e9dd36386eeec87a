//! 異動入力: a form per event type, a confirmation step, and the commit. The form's values
//! become the API's event body (`console::forms`), parsed and checked by the same code; a
//! refusal is shown in Japanese next to its field with everything typed kept. The confirmation
//! page carries a one-time key: the commit is an idempotent write under it, so a double submit
//! records once and both submits land on the same result.

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde_json::Value;

use super::{form, render, Nav, PageResult};
use crate::access::sessions::random_value;
use crate::commands::Command;
use crate::console::forms::{self, Field, Kind, Stream, COMMON, REPLACEMENT};
use crate::console::labels;
use crate::domain::input::{parse_household_event, parse_person_event};
use crate::domain::{HouseholdId, PersonId};
use crate::error::LedgerError;
use crate::http::extract::Params;
use crate::http::guard::{Caller, Touched};
use crate::http::{ApiError, AppState};
use crate::reads::views::TimelineView;
use crate::reads::{Read, TimelineQuery};
use crate::request::RequestContext;

pub struct FieldView {
    name: String,
    label: &'static str,
    /// `date`, `text`, `select`.
    input: &'static str,
    options: Vec<(String, String)>,
    value: String,
    error: String,
    required: bool,
}

/// What a form is about: the event type and its stream, and for a correction its target.
struct Subject {
    event_type: String,
    person_id: Option<PersonId>,
    household_id: Option<HouseholdId>,
    target: Option<i64>,
    target_type: Option<String>,
}

#[derive(Template)]
#[template(path = "console/record.html")]
struct RecordPage {
    nav: Nav,
    event_type: String,
    type_label: &'static str,
    person_id: String,
    household_id: String,
    target: String,
    fields: Vec<FieldView>,
    replacement: Vec<FieldView>,
    /// A refusal not tied to one field.
    form_error: String,
    /// The correction's target is still to be chosen.
    choose_target: bool,
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    nav: Nav,
    type_label: &'static str,
    person_id: String,
    household_id: String,
    rows: Vec<(String, String)>,
    hidden: Vec<(String, String)>,
}

fn today(s: &AppState) -> String {
    s.ledger.clock().today().to_string()
}

/// The person's timeline (for the correction target chooser and the target's type).
async fn timeline(s: &AppState, person_id: &PersonId) -> Result<TimelineView, LedgerError> {
    s.ledger
        .ask(
            &TimelineQuery {
                person_id: person_id.clone(),
            },
            &Read::default(),
        )
        .await
}

fn target_options(t: &TimelineView, event_type: &str) -> Vec<(String, String)> {
    t.events
        .iter()
        .filter(|e| e.status == crate::domain::person::EventStatus::InForce)
        .filter(|e| !matches!(e.event_type.as_str(), "corrected" | "rescinded"))
        .filter(|e| !(event_type == "rescinded" && e.event_type == "registered"))
        .map(|e| {
            (
                e.sequence.to_string(),
                format!(
                    "#{} {} {}",
                    e.sequence,
                    labels::event_type(&e.event_type),
                    e.effective_date.map(|d| d.to_string()).unwrap_or_default()
                ),
            )
        })
        .collect()
}

fn field_view(f: &Field, prefix: &str, values: &BTreeMap<String, String>, targets: &[(String, String)]) -> FieldView {
    let name = format!("{prefix}{}", f.name);
    let (input, options) = match f.kind {
        Kind::Date => ("date", vec![]),
        Kind::Choice(c) => (
            "select",
            c.iter().map(|(v, l)| ((*v).to_owned(), (*l).to_owned())).collect(),
        ),
        Kind::Target => ("select", targets.to_vec()),
        Kind::Text | Kind::PersonId | Kind::HouseholdId => ("text", vec![]),
    };
    FieldView {
        value: values.get(&name).cloned().unwrap_or_default(),
        name,
        label: f.label,
        input,
        options,
        error: String::new(),
        required: f.required,
    }
}

/// Reads what the form is about from its parameters (GET) or fields (POST).
async fn subject(s: &AppState, get: impl Fn(&str) -> Option<String>) -> Result<Subject, ApiError> {
    let event_type = get("type").unwrap_or_default();
    let stream = forms::stream_of(&event_type)
        .ok_or_else(|| ApiError::bad_request("unknown_event_type", "choose the kind of change to record"))?;
    let person_id = get("person_id")
        .filter(|p| !p.is_empty())
        .map(|p| PersonId::parse(&p))
        .transpose()?;
    let household_id = get("household_id")
        .filter(|h| !h.is_empty())
        .map(|h| HouseholdId::parse(&h))
        .transpose()?;
    match stream {
        Stream::Person if person_id.is_none() => {
            return Err(ApiError::bad_request("missing_field", "person_id is required"))
        }
        Stream::Household if household_id.is_none() => {
            return Err(ApiError::bad_request("missing_field", "household_id is required"))
        }
        _ => {}
    }
    let target = get("target")
        .filter(|t| !t.is_empty())
        .and_then(|t| t.parse::<i64>().ok());
    let mut target_type = None;
    if event_type == "corrected" {
        if let (Some(p), Some(seq)) = (&person_id, target) {
            let t = timeline(s, p).await?;
            target_type = t
                .events
                .iter()
                .find(|e| e.sequence == seq)
                .map(|e| e.event_type.clone());
            if target_type.is_none() {
                return Err(ApiError::bad_request(
                    "target_not_found",
                    "no such event of this person",
                ));
            }
        }
    }
    Ok(Subject {
        event_type,
        person_id,
        household_id,
        target,
        target_type,
    })
}

/// The field whose value a name or kana refusal is about (the ledger's message says what
/// was wrong, not in which of the name fields).
fn offending(code: &str, values: &BTreeMap<String, String>, names: &[&str]) -> Option<String> {
    use crate::domain::ids::{Kana, Name};
    names
        .iter()
        .find(|n| {
            let v = values.get(**n).map_or("", |v| v.trim());
            // Real names are optional; a name and its kana are required.
            let optional = n.contains("real_name");
            match code {
                "invalid_kana" if n.ends_with("name_kana") => (!v.is_empty() || !optional) && Kana::parse(v).is_err(),
                "invalid_name" if n.ends_with("name") => (!v.is_empty() || !optional) && Name::parse(v).is_err(),
                _ => false,
            }
        })
        .map(|n| (*n).to_owned())
}

/// The form of a subject with `values` and the refusal `error` (code, message) placed.
async fn form_page(
    s: &AppState,
    caller: &Caller,
    sub: &Subject,
    values: &BTreeMap<String, String>,
    error: Option<(&str, &str)>,
) -> Result<RecordPage, ApiError> {
    let targets = match (&sub.person_id, sub.event_type.as_str()) {
        (Some(p), "corrected" | "rescinded") => target_options(&timeline(s, p).await?, &sub.event_type),
        _ => vec![],
    };
    let mut fields: Vec<FieldView> = COMMON
        .iter()
        .chain(forms::fields(&sub.event_type).iter())
        .map(|f| field_view(f, "", values, &targets))
        .collect();
    let mut replacement: Vec<FieldView> = match &sub.target_type {
        Some(t) => COMMON
            .iter()
            .chain(forms::fields(t).iter())
            .map(|f| field_view(f, REPLACEMENT, values, &targets))
            .collect(),
        None => vec![],
    };
    if let Some(f) = fields.iter_mut().find(|f| f.name == "target_sequence") {
        if f.value.is_empty() {
            f.value = sub.target.map(|t| t.to_string()).unwrap_or_default();
        }
    }
    let mut form_error = String::new();
    if let Some((code, message)) = error {
        let names: Vec<String> = fields
            .iter()
            .chain(replacement.iter())
            .map(|f| f.name.clone())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (mut field, japanese) = labels::refusal(code, message, &names);
        if field.is_none() {
            field = offending(code, values, &names);
        }
        match field.and_then(|n| fields.iter_mut().chain(replacement.iter_mut()).find(|f| f.name == n)) {
            Some(f) => f.error = japanese,
            None => form_error = japanese,
        }
    }
    Ok(RecordPage {
        nav: Nav::of(caller),
        type_label: labels::event_type(&sub.event_type),
        event_type: sub.event_type.clone(),
        person_id: sub.person_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        household_id: sub.household_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        target: sub.target.map(|t| t.to_string()).unwrap_or_default(),
        choose_target: sub.event_type == "corrected" && sub.target_type.is_none(),
        fields,
        replacement,
        form_error,
    })
}

/// `GET /console/record?type=&person_id=|household_id=[&target=]`: an empty form (異動日 and
/// 届出日 today; a correction starts from its target's values).
pub async fn form_get(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut params: Params,
) -> PageResult {
    let mut taken = BTreeMap::new();
    for k in ["type", "person_id", "household_id", "target"] {
        if let Some(v) = params.take(k) {
            taken.insert(k, v);
        }
    }
    params.finish()?;
    let sub = subject(&s, |k| taken.get(k).cloned()).await?;
    let mut values = BTreeMap::new();
    values.insert("effective_date".to_owned(), today(&s));
    values.insert("reported_date".to_owned(), today(&s));
    if let (Some(p), Some(seq), Some(_)) = (&sub.person_id, sub.target, &sub.target_type) {
        if let Some(e) = timeline(&s, p).await?.events.iter().find(|e| e.sequence == seq) {
            values.extend(forms::values_of(&e.body, REPLACEMENT));
        }
    }
    let page = form_page(&s, &caller, &sub, &values, None).await?;
    let persons = sub.person_id.iter().map(ToString::to_string);
    Ok(Touched::persons(persons).on(render(&page)))
}

/// The event body of a posted form, and the command it stands for (or the refusal).
fn command(
    s: &AppState,
    sub: &Subject,
    values: &BTreeMap<String, String>,
) -> Result<(Value, Command), crate::domain::InputError> {
    let body = forms::body(&sub.event_type, sub.target_type.as_deref(), values);
    let today = s.ledger.clock().today();
    let command = match (&sub.person_id, &sub.household_id, forms::stream_of(&sub.event_type)) {
        (Some(p), _, Some(Stream::Person)) => Command::Person {
            person_id: p.clone(),
            input: parse_person_event(&body, today)?,
        },
        (_, Some(h), _) => Command::Household {
            household_id: h.clone(),
            event: parse_household_event(&body, today)?,
        },
        _ => return Err(crate::domain::InputError::new("missing_field", "person_id is required")),
    };
    Ok((body, command))
}

/// Prefix of the fields that say what a posted form is about (its event type, stream and
/// target): apart from the event's own fields, some of which share their names (`person_id`
/// of a household head change, `household_id` of a move-in).
const ROUTING: &str = "form.";

/// The form's own values (what the staff member typed), without the routing fields.
fn typed(mut f: BTreeMap<String, String>) -> BTreeMap<String, String> {
    f.retain(|k, _| !k.starts_with(ROUTING) && k != "nonce" && k != "edit");
    f
}

async fn refused(
    s: &AppState,
    caller: &Caller,
    sub: &Subject,
    values: &BTreeMap<String, String>,
    status: StatusCode,
    code: &str,
    message: &str,
) -> PageResult {
    let page = form_page(s, caller, sub, values, Some((code, message))).await?;
    let mut res = render(&page);
    *res.status_mut() = status;
    Ok(Touched::persons(sub.person_id.iter().map(ToString::to_string)).on(res))
}

/// `POST /console/record/confirm`: parsed like the API's body; a malformed one goes back to
/// the form, a well-formed one to the confirmation page.
pub async fn confirm(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> PageResult {
    let f = form(&caller, &body)?;
    let sub = subject(&s, |k| f.get(&format!("{ROUTING}{k}")).cloned()).await?;
    let edit = f.contains_key("edit");
    let values = typed(f);
    if edit {
        let page = form_page(&s, &caller, &sub, &values, None).await?;
        return Ok(Touched::persons(sub.person_id.iter().map(ToString::to_string)).on(render(&page)));
    }
    if let Err(e) = command(&s, &sub, &values) {
        return refused(&s, &caller, &sub, &values, StatusCode::BAD_REQUEST, e.code, &e.message).await;
    }
    let labels_of = |prefix: &str, ty: &str| {
        COMMON
            .iter()
            .chain(forms::fields(ty).iter())
            .map(|f| (format!("{prefix}{}", f.name), *f))
            .collect::<Vec<_>>()
    };
    let mut all = labels_of("", &sub.event_type);
    if let Some(t) = &sub.target_type {
        all.extend(labels_of(REPLACEMENT, t));
    }
    let rows = all
        .iter()
        .filter_map(|(name, field)| {
            let v = values.get(name).filter(|v| !v.trim().is_empty())?;
            let shown = match field.kind {
                Kind::Choice(c) => c
                    .iter()
                    .find(|(k, _)| k == v)
                    .map_or(v.clone(), |(_, l)| (*l).to_owned()),
                Kind::Target => format!("#{v}"),
                _ => v.clone(),
            };
            let label = if name.starts_with(REPLACEMENT) {
                format!("訂正後の{}", field.label)
            } else {
                field.label.to_owned()
            };
            Some((label, shown))
        })
        .collect();
    let mut hidden: Vec<(String, String)> = values.into_iter().collect();
    hidden.push((format!("{ROUTING}type"), sub.event_type.clone()));
    if let Some(p) = &sub.person_id {
        hidden.push((format!("{ROUTING}person_id"), p.to_string()));
    }
    if let Some(h) = &sub.household_id {
        hidden.push((format!("{ROUTING}household_id"), h.to_string()));
    }
    if let Some(t) = sub.target {
        hidden.push((format!("{ROUTING}target"), t.to_string()));
    }
    hidden.push(("nonce".into(), random_value()));
    let page = ConfirmPage {
        nav: Nav::of(&caller),
        type_label: labels::event_type(&sub.event_type),
        person_id: sub.person_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        household_id: sub.household_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        rows,
        hidden,
    };
    Ok(Touched::persons(sub.person_id.iter().map(ToString::to_string)).on(render(&page)))
}

/// `POST /console/record`: the commit, idempotent under the confirmation page's one-time key.
pub async fn commit(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> PageResult {
    let f = form(&caller, &body)?;
    let nonce = f
        .get("nonce")
        .filter(|n| (20..=64).contains(&n.len()))
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing_field", "the confirmation step's key is missing"))?;
    let sub = subject(&s, |k| f.get(&format!("{ROUTING}{k}")).cloned()).await?;
    let values = typed(f);
    let (event_body, command) = match command(&s, &sub, &values) {
        Ok(c) => c,
        Err(e) => return refused(&s, &caller, &sub, &values, StatusCode::BAD_REQUEST, e.code, &e.message).await,
    };
    let bytes = serde_json::to_vec(&event_body).map_err(|e| LedgerError::Internal(e.to_string()))?;
    let ctx = RequestContext {
        idempotency_key: Some(format!("console:{nonce}")),
        fingerprint: Some(
            s.ledger
                .vault()
                .fingerprint(&[caller.principal.id.as_bytes(), b"/console/record", &bytes]),
        ),
        ..caller.context()
    };
    let mut persons = crate::access::record::named_persons(&event_body);
    persons.extend(sub.person_id.iter().map(ToString::to_string));
    match s.ledger.record(&command, &ctx).await {
        Ok(r) => {
            persons.extend(
                r.consequences
                    .iter()
                    .filter(|c| c.stream == "person")
                    .map(|c| c.stream_id.clone()),
            );
            let to = match (&sub.person_id, &sub.household_id) {
                (Some(p), _) if forms::stream_of(&sub.event_type) == Some(Stream::Person) => {
                    format!("/console/persons/{p}?recorded={}", r.sequence)
                }
                (_, Some(h)) => format!("/console/households/{h}"),
                _ => "/console/search".into(),
            };
            Ok(Touched::persons(persons).on(Redirect::to(&to)))
        }
        Err(e) => {
            let e = ApiError::from(e);
            if matches!(
                e.status,
                StatusCode::BAD_REQUEST
                    | StatusCode::UNPROCESSABLE_ENTITY
                    | StatusCode::CONFLICT
                    | StatusCode::NOT_FOUND
            ) {
                let res = refused(&s, &caller, &sub, &values, e.status, e.code, &e.message).await?;
                Ok(retouch(res, persons))
            } else {
                Err(e.into())
            }
        }
    }
}

fn retouch(mut res: Response, persons: Vec<String>) -> Response {
    res.extensions_mut().remove::<Touched>();
    Touched::persons(persons).on(res.into_response())
}
