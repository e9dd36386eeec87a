//! The reading screens: 対象者検索 (search), 資格履歴照会 (a person, with the timeline chart),
//! 世帯照会 (a household), 個人番号表示 (the explicit My Number reveal) and 運用状況 (status).

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::{form, render, Nav, PageResult};
use crate::clock::tokyo;
use crate::console::chart::{self, Chart};
use crate::console::forms::{household_types, person_types};
use crate::console::{labels, wareki};
use crate::domain::input::parse_search;
use crate::domain::{HouseholdId, PersonId};
use crate::error::LedgerError;
use crate::http::extract::{as_of, path, Params};
use crate::http::guard::{Caller, Touched};
use crate::http::{ApiError, AppState};
use crate::reads::views::{HouseholdView, PersonView, TimelineView};
use crate::reads::{HouseholdQuery, PersonQuery, Read, SearchQuery, TimelineQuery};
use crate::vault::numbers::{held, Held};

/// An instant shown to staff: Tokyo time, to the second.
pub fn local_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&tokyo()).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn local_text(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| local_time(&t.with_timezone(&Utc)))
        .unwrap_or_else(|_| rfc3339.to_owned())
}

// ---------------------------------------------------------------- search

#[derive(Default)]
pub struct SearchForm {
    name_kana: String,
    birth_date: String,
    person_id: String,
    household_id: String,
}

pub struct ResultRow {
    person_id: String,
    name: String,
    name_kana: String,
    birth_date: String,
    sex: &'static str,
    household_id: String,
    insured: bool,
}

#[derive(Template)]
#[template(path = "console/search.html")]
struct SearchPage {
    nav: Nav,
    form: SearchForm,
    searched: bool,
    results: Vec<ResultRow>,
    truncated: bool,
    error: String,
}

/// `GET /console/search`: the empty form (a search sends names, so it is a POST: no
/// personal data in URLs).
pub async fn search_page(Extension(caller): Extension<Caller>, params: Params) -> PageResult {
    params.finish()?;
    Ok(render(&SearchPage {
        nav: Nav::of(&caller),
        form: SearchForm::default(),
        searched: false,
        results: vec![],
        truncated: false,
        error: String::new(),
    }))
}

/// `POST /console/search`: by 宛名番号 straight to the person; otherwise the API's search.
pub async fn search(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> PageResult {
    let f = form(&caller, &body)?;
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let sf = SearchForm {
        name_kana: get("name_kana"),
        birth_date: get("birth_date"),
        person_id: get("person_id"),
        household_id: get("household_id"),
    };
    if !sf.person_id.is_empty() {
        let id = PersonId::parse(&sf.person_id);
        if let Ok(id) = id {
            return Ok(Redirect::to(&format!("/console/persons/{id}")).into_response());
        }
    }
    let mut body = serde_json::Map::new();
    for (k, v) in [
        ("name_kana", &sf.name_kana),
        ("birth_date", &sf.birth_date),
        ("household_id", &sf.household_id),
    ] {
        if !v.is_empty() {
            body.insert(k.into(), serde_json::json!(v));
        }
    }
    let page = |results, truncated, error: String, sf| {
        render(&SearchPage {
            nav: Nav::of(&caller),
            form: sf,
            searched: true,
            results,
            truncated,
            error,
        })
    };
    if !sf.person_id.is_empty() {
        let mut res = page(vec![], false, "宛名番号は1〜15桁の数字で入力してください".into(), sf);
        *res.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(res);
    }
    let input = match parse_search(&serde_json::Value::Object(body)) {
        Ok(i) => i,
        Err(e) => {
            let (_, message) = labels::refusal(e.code, &e.message, &[]);
            let message = if e.code == "empty_search" {
                "カナ氏名・生年月日・世帯番号・宛名番号のいずれかを入力してください".to_owned()
            } else {
                message
            };
            let mut res = page(vec![], false, message, sf);
            *res.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(res);
        }
    };
    let query = SearchQuery {
        name_kana: input.name_kana,
        name: input.name,
        birth_date: input.birth_date,
        household_id: input.household_id,
        person_ids: None,
    };
    let view = s.ledger.ask(&query, &Read::default()).await?;
    let touched = Touched::persons(view.results.iter().map(|r| r.person_id.clone()));
    let rows = view
        .results
        .into_iter()
        .map(|r| ResultRow {
            person_id: r.person_id,
            name: r.name,
            name_kana: r.name_kana,
            birth_date: wareki::both(r.birth_date),
            sex: labels::sex(&r.sex),
            household_id: r.household_id.unwrap_or_default(),
            insured: r.insured,
        })
        .collect();
    Ok(touched.on(page(rows, view.truncated, String::new(), sf)))
}

// ---------------------------------------------------------------- person

pub struct EventRow {
    sequence: i64,
    label: &'static str,
    event_type: String,
    effective: String,
    reported: String,
    status: &'static str,
    status_label: &'static str,
    recorded_at: String,
    recorded_by: String,
    late: bool,
    corrected_by: Option<i64>,
    target: Option<i64>,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/person.html")]
struct PersonPage {
    nav: Nav,
    p: PersonView,
    birth: String,
    sex: &'static str,
    badge: &'static str,
    badge_class: &'static str,
    badge_detail: String,
    chart: Chart,
    events: Vec<EventRow>,
    as_of: String,
    as_of_local: String,
    historical: bool,
    person_types: Vec<(&'static str, &'static str)>,
    household_types: Vec<(&'static str, &'static str)>,
    recorded: String,
}

/// `as_of` (RFC 3339) or `as_of_local` (the as-of control: `YYYY-MM-DDTHH:MM` Tokyo time).
fn read_as_of(params: &mut Params) -> Result<Option<DateTime<Utc>>, ApiError> {
    if let Some(t) = params.take("as_of").filter(|t| !t.is_empty()) {
        return as_of(&t).map(Some);
    }
    match params.take("as_of_local").filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M")
            .or_else(|_| NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S"))
            .ok()
            .and_then(|n| n.and_local_timezone(tokyo()).single())
            .map(|t| Some(t.with_timezone(&Utc)))
            .ok_or_else(|| ApiError::bad_request("invalid_as_of", "as_of_local must be YYYY-MM-DDTHH:MM")),
    }
}

fn detail(body: &serde_json::Value) -> String {
    let text = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    match body.get("type").and_then(|t| t.as_str()).unwrap_or_default() {
        "moved_in" => format!(
            "転入元: {} / 世帯 {}",
            labels::place(text("from")),
            text("household_id")
        ),
        "moved_out" => format!("転出先: {}", labels::place(text("to"))),
        "born" | "household_changed" => format!("世帯 {}", text("household_id")),
        "name_changed" => "氏名変更".into(),
        "corrected" => format!(
            "対象 #{}",
            body.get("target_sequence").map(|v| v.to_string()).unwrap_or_default()
        ),
        "rescinded" => format!(
            "対象 #{} {}",
            body.get("target_sequence").map(|v| v.to_string()).unwrap_or_default(),
            text("reason")
        ),
        _ => String::new(),
    }
}

fn event_rows(t: &TimelineView, chart: &Chart) -> Vec<EventRow> {
    t.events
        .iter()
        .map(|e| {
            let status = match e.status {
                crate::domain::person::EventStatus::InForce => "in_force",
                crate::domain::person::EventStatus::Corrected => "corrected",
                crate::domain::person::EventStatus::Rescinded => "rescinded",
            };
            EventRow {
                sequence: e.sequence,
                label: labels::event_type(&e.event_type),
                event_type: e.event_type.clone(),
                effective: e.effective_date.map(wareki::both).unwrap_or_default(),
                reported: e.reported_date.map(|d| d.to_string()).unwrap_or_default(),
                status,
                status_label: labels::status(status),
                recorded_at: local_text(&e.recorded_at),
                recorded_by: e.recorded_by.clone(),
                late: e.late_report,
                corrected_by: chart
                    .markers
                    .iter()
                    .find(|m| m.sequence == e.sequence)
                    .and_then(|m| m.corrected_by),
                target: matches!(e.event_type.as_str(), "corrected" | "rescinded")
                    .then(|| e.body.get("target_sequence").and_then(|v| v.as_i64()))
                    .flatten(),
                detail: detail(&e.body),
            }
        })
        .collect()
}

/// The status badge: 加入中 / 喪失 (with reason and date) / 未加入.
fn badge(p: &PersonView) -> (&'static str, &'static str, String) {
    if p.insured {
        let mut d = format!("{} から", p.applied_from.map(wareki::both).unwrap_or_default());
        if let Some(to) = p.applied_to {
            d.push_str(&format!("（{} まで）", wareki::both(to)));
        }
        ("加入中", "insured", d)
    } else if let Some(reason) = &p.loss_reason {
        let on = p.disqualified_on.or(p.applied_to.and_then(|d| d.succ_opt()));
        (
            "喪失",
            "lost",
            format!(
                "{}（{}）",
                labels::loss(reason),
                on.map(wareki::both).unwrap_or_default()
            ),
        )
    } else {
        ("未加入", "none", String::new())
    }
}

/// `GET /console/persons/{person_id}[?as_of=|as_of_local=]`.
pub async fn person(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    mut params: Params,
) -> PageResult {
    let person_id = PersonId::parse(&path(id)?)?;
    let as_of = read_as_of(&mut params)?;
    let recorded = params.take("recorded").unwrap_or_default();
    params.finish()?;
    let read = Read {
        as_of,
        ..Read::default()
    };
    // One position for both answers: the chart and the header describe the same state.
    let position = s.ledger.reads.position(&read).await?;
    let at = Read {
        as_of,
        min_position: Some(position),
        // Already consistent: `position` includes every write before the request.
        consistency: crate::reads::Consistency::Eventual,
    };
    let p = s
        .ledger
        .ask(
            &PersonQuery {
                person_id: person_id.clone(),
            },
            &at,
        )
        .await?;
    let t = s
        .ledger
        .ask(
            &TimelineQuery {
                person_id: person_id.clone(),
            },
            &at,
        )
        .await?;
    let chart = chart::chart(&t, p.today, p.late_elderly_on, Some(p.birth_date));
    let events = event_rows(&t, &chart);
    let (badge, badge_class, badge_detail) = badge(&p);
    let page = PersonPage {
        nav: Nav::of(&caller),
        birth: wareki::both(p.birth_date),
        sex: labels::sex(&p.sex),
        badge,
        badge_class,
        badge_detail,
        chart,
        events,
        as_of: as_of.map(|t| crate::store::format_instant(&t)).unwrap_or_default(),
        as_of_local: as_of
            .map(|t| t.with_timezone(&tokyo()).format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default(),
        historical: as_of.is_some(),
        person_types: person_types().map(|t| (t, labels::event_type(t))).collect(),
        household_types: household_types().map(|t| (t, labels::event_type(t))).collect(),
        recorded: recorded.chars().filter(char::is_ascii_digit).take(18).collect(),
        p,
    };
    Ok(Touched::persons([person_id.to_string()]).on(render(&page)))
}

// ---------------------------------------------------------------- household

pub struct MemberRow {
    person_id: String,
    name: String,
    name_kana: String,
    insured: bool,
    branch: String,
    register_head: bool,
    nhi_head: bool,
}

#[derive(Template)]
#[template(path = "console/household.html")]
struct HouseholdPage {
    nav: Nav,
    h: HouseholdView,
    members: Vec<MemberRow>,
    today: String,
}

/// `GET /console/households/{household_id}`: every member goes into the access record.
pub async fn household(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
) -> PageResult {
    let household_id = HouseholdId::parse(&path(id)?)?;
    params.finish()?;
    let h = s.ledger.ask(&HouseholdQuery { household_id }, &Read::default()).await?;
    let at = Read {
        min_position: Some(s.ledger.reads.position(&Read::default()).await?),
        ..Read::default()
    };
    let mut members = Vec::with_capacity(h.members.len());
    for m in &h.members {
        let pid = PersonId::parse(&m.person_id)?;
        let p = s.ledger.ask(&PersonQuery { person_id: pid }, &at).await?;
        members.push(MemberRow {
            register_head: h.head_person_id.as_deref() == Some(m.person_id.as_str()),
            nhi_head: h.nhi_head_person_id.as_deref() == Some(m.person_id.as_str()),
            person_id: m.person_id.clone(),
            name: p.name,
            name_kana: p.name_kana,
            insured: m.insured,
            branch: m.branch.clone().unwrap_or_default(),
        });
    }
    let touched = Touched::persons(h.members.iter().map(|m| m.person_id.clone()));
    let page = HouseholdPage {
        nav: Nav::of(&caller),
        today: wareki::both(h.today),
        members,
        h,
    };
    Ok(touched.on(render(&page)))
}

// ---------------------------------------------------------------- My Number reveal

#[derive(Template)]
#[template(path = "console/my_number.html")]
struct MyNumberPage {
    nav: Nav,
    person_id: String,
    number: String,
    message: &'static str,
}

/// `POST /console/persons/{person_id}/my-number` (`my_number` role): the one page that shows
/// a My Number, on an explicit request that is recorded with `my_number: true`.
pub async fn my_number(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> PageResult {
    let person_id = PersonId::parse(&path(id)?)?;
    form(&caller, &body)?;
    let found = held(s.ledger.store(), s.ledger.vault(), person_id.as_str(), None).await?;
    let (number, message, status) = match found {
        None => {
            return Err(
                LedgerError::not_found("person_not_found", format!("person {person_id} is not registered")).into(),
            )
        }
        Some(Held::None) => (String::new(), "個人番号は登録されていません。", StatusCode::NOT_FOUND),
        Some(Held::Erased) => (String::new(), "個人番号は消去されています。", StatusCode::GONE),
        Some(Held::Number(n)) => (n.expose().to_owned(), "", StatusCode::OK),
    };
    let mut res = render(&MyNumberPage {
        nav: Nav::of(&caller),
        person_id: person_id.to_string(),
        number,
        message,
    });
    *res.status_mut() = status;
    let touched = Touched {
        persons: vec![person_id.to_string()],
        my_number: true,
        export: None,
        recorded: None,
    };
    Ok(touched.on(res))
}

// ---------------------------------------------------------------- status

pub struct ProjectionRow {
    name: &'static str,
    position: i64,
    lag_events: i64,
    lag_seconds: String,
}

#[derive(Template)]
#[template(path = "console/status.html")]
struct StatusPage {
    nav: Nav,
    log_head: i64,
    projections: Vec<ProjectionRow>,
    checkpoint: Option<(u64, String, String)>,
    last_export: Option<(String, String, String)>,
    now: String,
}

/// `GET /console/status` (運用状況): log head, projection and feed lag, the latest signed
/// checkpoint, the last export. Nothing personal.
pub async fn status(State(s): State<AppState>, Extension(caller): Extension<Caller>, params: Params) -> PageResult {
    params.finish()?;
    let db = s.ledger.store().db();
    let log_head = s.ledger.store().head().await.map_err(LedgerError::from)?;
    let projections = s
        .ledger
        .projections()
        .status()
        .await
        .map_err(LedgerError::from)?
        .into_iter()
        .map(|p| ProjectionRow {
            name: p.name,
            position: p.position,
            lag_events: p.lag_events,
            lag_seconds: format!("{:.1}", p.lag_seconds),
        })
        .collect();
    let checkpoint = crate::audit::Audit::new(s.ledger.store())
        .checkpoint()
        .await
        .map_err(|e| LedgerError::Internal(e.to_string()))?
        .map(|c| {
            (
                c.signed.checkpoint.size,
                local_text(&c.signed.checkpoint.timestamp),
                c.signed.checkpoint.root.clone(),
            )
        });
    let last_export = crate::access::log::last_of_kind(db, crate::access::AccessKind::Export)
        .await
        .map_err(LedgerError::from)?
        .map(|r| (local_time(&r.at), r.actor, r.screen));
    Ok(render(&StatusPage {
        nav: Nav::of(&caller),
        log_head,
        projections,
        checkpoint,
        last_export,
        now: local_time(&s.ledger.clock().now()),
    }))
}
