//! アクセス記録確認 (auditor): the access records of a person, a staff member or a period, and
//! the unusual-access report, as pages over the same queries as the API's.

use askama::Template;
use axum::extract::State;
use axum::Extension;
use serde_json::Value;

use super::pages::local_time;
use super::{render, Nav, PageResult};
use crate::access::log::{self, Filter};
use crate::domain::PersonId;
use crate::error::LedgerError;
use crate::http::access_records::{instant, unusual_report, REPORT_DAYS};
use crate::http::extract::Params;
use crate::http::guard::{Caller, Touched};
use crate::http::{ApiError, AppState};

pub struct RecordRow {
    id: i64,
    at: String,
    actor: String,
    roles: String,
    terminal: String,
    screen: String,
    kind: &'static str,
    persons: String,
    outcome: u16,
    my_number: bool,
    restricted: bool,
}

#[derive(Template)]
#[template(path = "console/access.html")]
struct AccessPage {
    nav: Nav,
    person_id: String,
    actor: String,
    from: String,
    to: String,
    rows: Vec<RecordRow>,
    next_after: Option<i64>,
    query: String,
}

fn kind_label(k: &str) -> &'static str {
    match k {
        "inquiry" => "照会",
        "update" => "異動",
        "export" => "出力",
        "sign_in" => "サインイン",
        "sign_out" => "サインアウト",
        _ => "",
    }
}

const PAGE: i64 = 200;

/// `GET /console/access?person_id=&actor=&from=&to=&after=`.
pub async fn records(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut params: Params,
) -> PageResult {
    let text =
        |params: &mut Params, k: &'static str| params.take(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let person_id = text(&mut params, "person_id")
        .map(|p| PersonId::parse(&p))
        .transpose()?
        .map(|p| p.to_string());
    let actor = text(&mut params, "actor");
    if actor.as_ref().is_some_and(|a| a.len() > 200) {
        return Err(ApiError::bad_request("invalid_actor", "actor must be 1–200 characters").into());
    }
    let from_text = text(&mut params, "from").unwrap_or_default();
    let to_text = text(&mut params, "to").unwrap_or_default();
    let mut dates = Params::from_pairs(vec![("from".into(), from_text.clone()), ("to".into(), to_text.clone())]);
    let from = if from_text.is_empty() {
        None
    } else {
        instant(&mut dates, "from", "invalid_from")?
    };
    let to = if to_text.is_empty() {
        None
    } else {
        instant(&mut dates, "to", "invalid_to")?
    };
    let after = params.int("after", Some(0), 0, i64::MAX, "invalid_after")?;
    params.finish()?;
    let found = log::list(
        s.ledger.store().db(),
        &Filter {
            person_id: person_id.clone(),
            actor: actor.clone(),
            from,
            to,
            after,
            limit: PAGE,
        },
    )
    .await
    .map_err(LedgerError::from)?;
    let next_after = (found.len() as i64 == PAGE)
        .then(|| found.last().map(|r| r.id))
        .flatten();
    let rows = found
        .iter()
        .map(|r| RecordRow {
            id: r.id,
            at: local_time(&r.at),
            actor: r.actor.clone(),
            roles: r.roles.join(", "),
            terminal: r.terminal.clone(),
            screen: r.screen.clone(),
            kind: kind_label(r.kind.as_str()),
            persons: r.persons.join(", "),
            outcome: r.outcome,
            my_number: r.my_number,
            restricted: r.restricted,
        })
        .collect();
    let query = serde_urlencoded::to_string([
        ("person_id", person_id.clone().unwrap_or_default()),
        ("actor", actor.clone().unwrap_or_default()),
        ("from", from_text.clone()),
        ("to", to_text.clone()),
    ])
    .unwrap_or_default();
    let page = AccessPage {
        nav: Nav::of(&caller),
        person_id: person_id.clone().unwrap_or_default(),
        actor: actor.unwrap_or_default(),
        from: from_text,
        to: to_text,
        rows,
        next_after,
        query,
    };
    // An auditor looking up who accessed a resident reads about that resident.
    Ok(Touched::persons(person_id).on(render(&page)))
}

pub struct UnusualRow {
    id: i64,
    at: String,
    actor: String,
    screen: String,
    persons: String,
    reasons: String,
}

pub struct BulkRow {
    actor: String,
    window: String,
    persons: String,
}

#[derive(Template)]
#[template(path = "console/unusual.html")]
struct UnusualPage {
    nav: Nav,
    from: String,
    to: String,
    business_hours: String,
    bulk_threshold: String,
    rows: Vec<UnusualRow>,
    bulk: Vec<BulkRow>,
    truncated: bool,
    max_days: i64,
}

fn reason_label(code: &str) -> &'static str {
    match code {
        "outside_business_hours" => "業務時間外",
        "weekend" => "休日（土日）",
        "public_holiday" => "祝日",
        "year_end_closing" => "年末年始",
        _ => "その他",
    }
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /console/access/unusual?from=&to=` (dates; default the last 7 days).
pub async fn unusual(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut params: Params,
) -> PageResult {
    let now = s.ledger.clock().now();
    let from_text = params.take("from").filter(|v| !v.is_empty());
    let to_text = params.take("to").filter(|v| !v.is_empty());
    params.finish()?;
    let mut dates = Params::from_pairs(
        [("from", &from_text), ("to", &to_text)]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
    );
    let to = instant(&mut dates, "to", "invalid_to")?.unwrap_or(now);
    let from = instant(&mut dates, "from", "invalid_from")?.unwrap_or(to - chrono::Duration::days(7));
    if from >= to || to - from > chrono::Duration::days(REPORT_DAYS) {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("from must be before to, at most {REPORT_DAYS} days apart"),
        )
        .into());
    }
    let report = unusual_report(&s, from, to).await?;
    let rows = report["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| UnusualRow {
            id: r["id"].as_i64().unwrap_or_default(),
            at: r["at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| local_time(&t.with_timezone(&chrono::Utc)))
                .unwrap_or_default(),
            actor: r["actor"].as_str().unwrap_or_default().to_owned(),
            screen: r["screen"].as_str().unwrap_or_default().to_owned(),
            persons: texts(&r["persons"]).join(", "),
            reasons: r["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    let code = x.get("code").and_then(Value::as_str).or(x.as_str()).unwrap_or_default();
                    let name = x.get("holiday").and_then(Value::as_str).unwrap_or_default();
                    format!(
                        "{}{}",
                        reason_label(code),
                        if name.is_empty() {
                            String::new()
                        } else {
                            format!("（{name}）")
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("・"),
        })
        .collect();
    let bulk = report["bulk"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| BulkRow {
            actor: b["actor"].as_str().unwrap_or_default().to_owned(),
            window: format!(
                "{} 〜 {}",
                b["from"].as_str().unwrap_or_default(),
                b["to"].as_str().unwrap_or_default()
            ),
            persons: b["persons"].to_string(),
        })
        .collect();
    Ok(render(&UnusualPage {
        nav: Nav::of(&caller),
        from: from_text.unwrap_or_default(),
        to: to_text.unwrap_or_default(),
        business_hours: report["business_hours"].as_str().unwrap_or_default().to_owned(),
        bulk_threshold: report["bulk_threshold"].to_string(),
        truncated: report["truncated"].as_bool().unwrap_or(false),
        rows,
        bulk,
        max_days: REPORT_DAYS,
    }))
}
