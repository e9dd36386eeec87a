//! `POST /v1/persons/search` (対象者検索): persons by kana or name prefix, birth date,
//! household, or a set of ids (what a My Number's blind index found). Never a My Number.

use chrono::NaiveDate;
use serde::Serialize;

use super::sql;
use super::{At, Query, Reads};
use crate::domain::HouseholdId;
use crate::error::LedgerError;
use crate::store::sql::{json_array, Dialect, Ty, Val};

/// At most this many results; `truncated` says there were more.
pub const MAX_RESULTS: usize = 50;

/// The criteria, all of which a result meets (at least one is given).
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    /// Prefix of the kana name without spaces ([`crate::domain::Kana::search_key`]).
    pub name_kana: Option<String>,
    /// Prefix of the name.
    pub name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// Members of the household today.
    pub household_id: Option<HouseholdId>,
    /// Only these persons.
    pub person_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SearchResult {
    pub person_id: String,
    pub name: String,
    pub name_kana: String,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub household_id: Option<String>,
    pub insured: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SearchView {
    pub results: Vec<SearchResult>,
    pub truncated: bool,
}

/// `column` starts with parameter `$n`: a range in code-point order, which an index on the
/// column answers on both backends (`$n+1` is the prefix followed by the last code point).
fn prefix(d: Dialect, column: &str, n: usize) -> String {
    let c = match d {
        Dialect::Postgres => format!("({column} COLLATE \"C\")"),
        Dialect::Sqlite => column.to_owned(),
    };
    format!("{c} >= ${n} AND {c} < ${}", n + 1)
}

fn prefix_args(p: &str) -> [Val; 2] {
    [Val::text(p), Val::text(format!("{p}\u{10FFFF}"))]
}

impl Query for SearchQuery {
    type Answer = SearchView;

    async fn run(&self, reads: &Reads, at: At) -> Result<SearchView, LedgerError> {
        let db = reads.store.db();
        let d = db.dialect();
        // The read models' latest rows: what the ledger knows now (the person page then reads
        // the chosen person consistently).
        let mut conditions = vec!["known_to IS NULL".to_owned()];
        let mut args: Vec<Val> = Vec::new();
        if let Some(k) = &self.name_kana {
            conditions.push(prefix(d, "name_kana_key", args.len() + 1));
            args.extend(prefix_args(k));
        }
        if let Some(n) = &self.name {
            conditions.push(prefix(d, "name", args.len() + 1));
            args.extend(prefix_args(n));
        }
        if let Some(b) = self.birth_date {
            args.push(Val::text(b.to_string()));
            conditions.push(format!("birth_date = ${}", args.len()));
        }
        let mut ids = self.person_ids.clone();
        if let Some(h) = &self.household_id {
            let members = sql::members(db, h.as_str(), Some(at.today), at.position).await?;
            ids = Some(match ids {
                Some(list) => list.into_iter().filter(|p| members.contains(p)).collect(),
                None => members,
            });
        }
        if let Some(list) = &ids {
            args.push(json_array(list));
            conditions.push(d.in_json_array("person_id", args.len()));
        }
        args.push(Val::int(MAX_RESULTS as i64 + 1));
        let rows = db
            .fetch(
                &format!(
                    "SELECT person_id, name, name_kana, birth_date, sex FROM proj_person WHERE {} \
                     ORDER BY name_kana_key, length(person_id), person_id LIMIT ${}",
                    conditions.join(" AND "),
                    args.len()
                ),
                &args,
                &[Ty::Text; 5],
            )
            .await?;
        let truncated = rows.len() > MAX_RESULTS;
        let mut results = Vec::with_capacity(rows.len().min(MAX_RESULTS));
        for r in rows.into_iter().take(MAX_RESULTS) {
            let person_id = r[0].as_text().unwrap_or_default().to_owned();
            let household_id = sql::memberships(db, &person_id, at.position)
                .await?
                .into_iter()
                .find(|m| m.from <= at.today && m.to.is_none_or(|t| at.today < t))
                .map(|m| m.household_id);
            let insured = sql::periods(db, false, &person_id, at.position)
                .await?
                .iter()
                .any(|p| p.contains(at.today));
            results.push(SearchResult {
                person_id,
                name: r[1].as_text().unwrap_or_default().to_owned(),
                name_kana: r[2].as_text().unwrap_or_default().to_owned(),
                birth_date: r[3]
                    .as_text()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| crate::store::corrupt("proj_person birth_date"))?,
                sex: r[4].as_text().unwrap_or_default().to_owned(),
                household_id,
                insured,
            });
        }
        Ok(SearchView { results, truncated })
    }
}
