//! Queries of the read models' tables as known at log position `at` (`i64::MAX`: latest).

use chrono::NaiveDate;

use crate::store::sql::{Db, Ty, Val};
use crate::store::{event_columns, stored_event, StoreError, StoredEvent, EVENT_TYS};

/// The version of a bitemporal row that holds at position `$2`.
const KNOWN_AT: &str = "known_from <= $2 AND (known_to IS NULL OR known_to > $2)";

fn date(v: &Val) -> Result<Option<NaiveDate>, StoreError> {
    v.as_text()
        .map(|s| s.parse::<NaiveDate>())
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("projection date: {e}")))
}

fn req_date(v: &Val) -> Result<NaiveDate, StoreError> {
    date(v)?.ok_or_else(|| StoreError::Corrupt("projection date missing".into()))
}

fn text(v: &Val) -> String {
    v.as_text().unwrap_or_default().to_owned()
}

fn opt_text(v: &Val) -> Option<String> {
    v.as_text().map(str::to_owned)
}

#[derive(Clone, Debug, PartialEq)]
pub struct PersonRow {
    pub name: String,
    pub name_kana: String,
    pub real_name: Option<String>,
    pub real_name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub sex_on_back: bool,
    pub deceased_on: Option<NaiveDate>,
    pub disclosure_restricted_from: Option<NaiveDate>,
    /// The person's last sequence in the log prefix the row describes.
    pub last_sequence: i64,
}

/// A ward application period (a run) or a timeline interval (`household_id` set).
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodRow {
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
    pub acquisition_reason: String,
    pub loss_reason: Option<String>,
    pub loss_code: Option<String>,
    pub qualified_on: NaiveDate,
    pub disqualified_on: Option<NaiveDate>,
    pub loss_by_age: bool,
    pub household_id: Option<String>,
}

impl PeriodRow {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && self.to.is_none_or(|t| d < t)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MembershipRow {
    pub household_id: String,
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FactRow {
    pub position: i64,
    pub kind: String,
    pub effective_date: NaiveDate,
    pub person_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CardRow {
    pub household_id: String,
    pub symbol: String,
    pub number: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BranchRow {
    pub branch: String,
    pub person_id: String,
    pub position: i64,
}

pub async fn person(db: &Db, id: &str, at: i64) -> Result<Option<PersonRow>, StoreError> {
    let sql = format!(
        "SELECT name, name_kana, real_name, real_name_kana, birth_date, sex, deceased_on, \
         disclosure_restricted_from, sex_on_back, \
         (SELECT coalesce(max(e.sequence), 0) FROM events e \
          WHERE e.aggregate_type = 'person' AND e.aggregate_id = $1 AND e.position <= $2) \
         FROM proj_person WHERE person_id = $1 AND {KNOWN_AT}"
    );
    use Ty::*;
    let rows = db
        .fetch(
            &sql,
            &[Val::text(id), Val::Int(Some(at))],
            &[Text, Text, Text, Text, Text, Text, Text, Text, Bool, Int],
        )
        .await?;
    rows.first()
        .map(|r| person_row(r, r[8].as_bool(), r[9].as_int().unwrap_or(0)))
        .transpose()
}

/// A person's attributes from their eight text columns (name … disclosure_restricted_from).
fn person_row(r: &[Val], sex_on_back: bool, last_sequence: i64) -> Result<PersonRow, StoreError> {
    Ok(PersonRow {
        name: text(&r[0]),
        name_kana: text(&r[1]),
        real_name: opt_text(&r[2]),
        real_name_kana: opt_text(&r[3]),
        birth_date: req_date(&r[4])?,
        sex: text(&r[5]),
        sex_on_back,
        deceased_on: date(&r[6])?,
        disclosure_restricted_from: date(&r[7])?,
        last_sequence,
    })
}

/// Ward application periods (`proj_run`) or timeline intervals (`proj_interval`), oldest first.
pub async fn periods(db: &Db, intervals: bool, id: &str, at: i64) -> Result<Vec<PeriodRow>, StoreError> {
    let (table, last) = if intervals {
        ("proj_interval", "household_id")
    } else {
        ("proj_run", "loss_by_age")
    };
    let sql = format!(
        "SELECT from_date, to_date, acquisition_reason, loss_reason, loss_code, qualified_on, disqualified_on, {last} \
         FROM {table} WHERE person_id = $1 AND {KNOWN_AT} ORDER BY ordinal"
    );
    use Ty::*;
    let last_ty = if intervals { Text } else { Bool };
    db.fetch(
        &sql,
        &[Val::text(id), Val::Int(Some(at))],
        &[Text, Text, Text, Text, Text, Text, Text, last_ty],
    )
    .await?
    .iter()
    .map(|r| {
        if intervals {
            period(r, false, opt_text(&r[7]))
        } else {
            period(r, r[7].as_bool(), None)
        }
    })
    .collect()
}

fn period(r: &[Val], loss_by_age: bool, household_id: Option<String>) -> Result<PeriodRow, StoreError> {
    Ok(PeriodRow {
        from: req_date(&r[0])?,
        to: date(&r[1])?,
        acquisition_reason: text(&r[2]),
        loss_reason: opt_text(&r[3]),
        loss_code: opt_text(&r[4]),
        qualified_on: req_date(&r[5])?,
        disqualified_on: date(&r[6])?,
        loss_by_age,
        household_id,
    })
}

/// A person's (`$1`) timeline intervals at `$2` with their household's card symbol and number
/// and the person's branch there: the columns and rows after `SELECT`. Correlated lookups, not
/// joins: each is a primary-key or index probe whatever the planner's statistics say (a join
/// planned before ANALYZE scanned the card table per read).
const INTERVALS_WITH_CARDS: &str = "i.from_date, i.to_date, i.acquisition_reason, i.loss_reason, i.loss_code, \
     i.qualified_on, i.disqualified_on, i.household_id, \
     (SELECT c.symbol FROM proj_card c WHERE c.household_id = i.household_id AND c.position <= $2), \
     (SELECT c.number FROM proj_card c WHERE c.household_id = i.household_id AND c.position <= $2), \
     (SELECT b.branch FROM proj_branch b \
      WHERE b.household_id = i.household_id AND b.person_id = $1 AND b.position <= $2) \
     FROM proj_interval i \
     WHERE i.person_id = $1 AND i.known_from <= $2 AND (i.known_to IS NULL OR i.known_to > $2)";

/// A household's card as an interval shows it, with the person's branch under it.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalCardRow {
    pub symbol: String,
    pub number: String,
    pub branch: Option<String>,
}

/// Timeline intervals, oldest first, each with its household's card and the person's branch
/// there as known at `at`: one query for what a timeline shows of the read models.
pub async fn intervals_with_cards(
    db: &Db,
    id: &str,
    at: i64,
) -> Result<Vec<(PeriodRow, Option<IntervalCardRow>)>, StoreError> {
    let sql = format!("SELECT {INTERVALS_WITH_CARDS} ORDER BY i.ordinal");
    use Ty::*;
    db.fetch(
        &sql,
        &[Val::text(id), Val::Int(Some(at))],
        &[Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, Text],
    )
    .await?
    .iter()
    .map(|r| interval_with_card(r))
    .collect()
}

/// What a timeline reads at `at`: the person's events up to that position (sequence order)
/// and the intervals with their cards, in one statement — the events' columns, then the
/// interval's, each branch padding the other's with NULLs: one round trip and one snapshot.
pub async fn timeline_record(
    db: &Db,
    id: &str,
    at: i64,
) -> Result<(Vec<StoredEvent>, Vec<(PeriodRow, Option<IntervalCardRow>)>), StoreError> {
    let events = event_columns(db.dialect());
    let sql = format!(
        "SELECT CAST(0 AS BIGINT), sequence, {events}, \
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
         FROM events WHERE aggregate_type = 'person' AND aggregate_id = $1 AND position <= $2 \
         UNION ALL \
         SELECT CAST(1 AS BIGINT), i.ordinal, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
          {INTERVALS_WITH_CARDS} \
         ORDER BY 1, 2"
    );
    use Ty::*;
    let mut tys = vec![Int, Int];
    tys.extend(EVENT_TYS);
    tys.extend([Text; 11]);
    let rows = db.fetch(&sql, &[Val::text(id), Val::Int(Some(at))], &tys).await?;
    let (mut stream, mut intervals) = (Vec::new(), Vec::new());
    for mut r in rows {
        if r[0].as_int() == Some(0) {
            r.truncate(2 + EVENT_TYS.len());
            stream.push(stored_event(r.split_off(2))?);
        } else {
            intervals.push(interval_with_card(&r[2 + EVENT_TYS.len()..])?);
        }
    }
    Ok((stream, intervals))
}

/// An interval (period columns, household id) followed by its card's symbol and number and
/// the person's branch.
fn interval_with_card(r: &[Val]) -> Result<(PeriodRow, Option<IntervalCardRow>), StoreError> {
    let card = r[8].as_text().map(|symbol| IntervalCardRow {
        symbol: symbol.to_owned(),
        number: text(&r[9]),
        branch: opt_text(&r[10]),
    });
    Ok((period(r, false, opt_text(&r[7]))?, card))
}

pub async fn memberships(db: &Db, id: &str, at: i64) -> Result<Vec<MembershipRow>, StoreError> {
    let sql = format!(
        "SELECT household_id, from_date, to_date FROM proj_membership WHERE person_id = $1 AND {KNOWN_AT} ORDER BY ordinal"
    );
    db.fetch(
        &sql,
        &[Val::text(id), Val::Int(Some(at))],
        &[Ty::Text, Ty::Text, Ty::Text],
    )
    .await?
    .iter()
    .map(|r| membership(r))
    .collect()
}

fn membership(r: &[Val]) -> Result<MembershipRow, StoreError> {
    Ok(MembershipRow {
        household_id: text(&r[0]),
        from: req_date(&r[1])?,
        to: date(&r[2])?,
    })
}

/// Everything the person view reads of the read models at `at`, in one statement: the
/// attributes (with the last sequence), ward periods, memberships and intervals with their
/// cards.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonRecord {
    pub person: PersonRow,
    pub runs: Vec<PeriodRow>,
    pub memberships: Vec<MembershipRow>,
    pub intervals: Vec<(PeriodRow, Option<IntervalCardRow>)>,
}

/// The person's rows of four tables as one `UNION ALL`, each branch tagged by its first
/// column and padded to shared columns (kind, ordinal, flag, sequence, eleven texts): one
/// round trip and one snapshot instead of four.
pub async fn person_record(db: &Db, id: &str, at: i64) -> Result<Option<PersonRecord>, StoreError> {
    let sql = format!(
        "SELECT CAST(0 AS BIGINT), CAST(0 AS BIGINT), sex_on_back, \
          (SELECT coalesce(max(e.sequence), 0) FROM events e \
           WHERE e.aggregate_type = 'person' AND e.aggregate_id = $1 AND e.position <= $2), \
          name, name_kana, real_name, real_name_kana, birth_date, sex, deceased_on, \
          disclosure_restricted_from, NULL, NULL, NULL \
         FROM proj_person WHERE person_id = $1 AND {KNOWN_AT} \
         UNION ALL \
         SELECT CAST(1 AS BIGINT), ordinal, loss_by_age, NULL, from_date, to_date, acquisition_reason, \
          loss_reason, loss_code, qualified_on, disqualified_on, NULL, NULL, NULL, NULL \
         FROM proj_run WHERE person_id = $1 AND {KNOWN_AT} \
         UNION ALL \
         SELECT CAST(2 AS BIGINT), ordinal, FALSE, NULL, household_id, from_date, to_date, \
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
         FROM proj_membership WHERE person_id = $1 AND {KNOWN_AT} \
         UNION ALL \
         SELECT CAST(3 AS BIGINT), i.ordinal, FALSE, NULL, {INTERVALS_WITH_CARDS} \
         ORDER BY 1, 2"
    );
    use Ty::*;
    let mut tys = vec![Int, Int, Bool, Int];
    tys.extend([Text; 11]);
    let rows = db.fetch(&sql, &[Val::text(id), Val::Int(Some(at))], &tys).await?;
    let mut person = None;
    let (mut runs, mut memberships, mut intervals) = (Vec::new(), Vec::new(), Vec::new());
    for r in &rows {
        let t = &r[4..];
        match r[0].as_int() {
            Some(0) => person = Some(person_row(t, r[2].as_bool(), r[3].as_int().unwrap_or(0))?),
            Some(1) => runs.push(period(t, r[2].as_bool(), None)?),
            Some(2) => memberships.push(membership(t)?),
            _ => intervals.push(interval_with_card(t)?),
        }
    }
    Ok(person.map(|person| PersonRecord {
        person,
        runs,
        memberships,
        intervals,
    }))
}

/// Persons whose membership of the household covers `day`; with `day` None, everyone ever a
/// member.
pub async fn members(db: &Db, household_id: &str, day: Option<NaiveDate>, at: i64) -> Result<Vec<String>, StoreError> {
    let mut args = vec![Val::text(household_id), Val::Int(Some(at))];
    let mut sql = format!("SELECT DISTINCT person_id FROM proj_membership WHERE household_id = $1 AND {KNOWN_AT}");
    if let Some(d) = day {
        sql.push_str(" AND from_date <= $3 AND (to_date IS NULL OR to_date > $3)");
        args.push(Val::text(d.to_string()));
    }
    sql.push_str(" ORDER BY person_id");
    Ok(db
        .fetch(&sql, &args, &[Ty::Text])
        .await?
        .iter()
        .map(|r| text(&r[0]))
        .collect())
}

/// Register-head and NHI-head facts in log order.
pub async fn household_facts(db: &Db, household_id: &str, at: i64) -> Result<Vec<FactRow>, StoreError> {
    db.fetch(
        "SELECT position, kind, effective_date, person_id FROM proj_household_fact \
         WHERE household_id = $1 AND position <= $2 ORDER BY position",
        &[Val::text(household_id), Val::Int(Some(at))],
        &[Ty::Int, Ty::Text, Ty::Text, Ty::Text],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(FactRow {
            position: r[0].as_int().unwrap_or(0),
            kind: text(&r[1]),
            effective_date: req_date(&r[2])?,
            person_id: opt_text(&r[3]),
        })
    })
    .collect()
}

/// The fact in force on `day` among those of `kinds`: the last by effective date, same-day
/// facts in log order (as the household aggregate decides).
pub fn in_force_on<'a>(facts: &'a [FactRow], kinds: &[&str], day: NaiveDate) -> Option<&'a FactRow> {
    let mut relevant: Vec<&FactRow> = facts
        .iter()
        .filter(|f| kinds.contains(&f.kind.as_str()) && f.effective_date <= day)
        .collect();
    relevant.sort_by_key(|f| (f.effective_date, f.position));
    relevant.pop()
}

fn card_row(r: &[Val]) -> CardRow {
    CardRow {
        household_id: text(&r[0]),
        symbol: text(&r[1]),
        number: text(&r[2]),
    }
}

pub async fn card_of(db: &Db, household_id: &str, at: i64) -> Result<Option<CardRow>, StoreError> {
    Ok(db
        .fetch(
            "SELECT household_id, symbol, number FROM proj_card WHERE household_id = $1 AND position <= $2",
            &[Val::text(household_id), Val::Int(Some(at))],
            &[Ty::Text, Ty::Text, Ty::Text],
        )
        .await?
        .first()
        .map(|r| card_row(r)))
}

/// A household's card and a person's branch under it, in one query.
pub async fn card_and_branch(
    db: &Db,
    household_id: &str,
    person_id: &str,
    at: i64,
) -> Result<Option<(CardRow, Option<String>)>, StoreError> {
    Ok(db
        .fetch(
            "SELECT c.household_id, c.symbol, c.number, b.branch FROM proj_card c \
             LEFT JOIN proj_branch b ON b.household_id = c.household_id AND b.person_id = $2 AND b.position <= $3 \
             WHERE c.household_id = $1 AND c.position <= $3",
            &[Val::text(household_id), Val::text(person_id), Val::Int(Some(at))],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Text],
        )
        .await?
        .first()
        .map(|r| (card_row(r), opt_text(&r[3]))))
}

pub async fn card_by_number(db: &Db, symbol: &str, number: &str, at: i64) -> Result<Option<CardRow>, StoreError> {
    Ok(db
        .fetch(
            "SELECT household_id, symbol, number FROM proj_card WHERE symbol = $1 AND number = $2 AND position <= $3",
            &[Val::text(symbol), Val::text(number), Val::int(at)],
            &[Ty::Text, Ty::Text, Ty::Text],
        )
        .await?
        .first()
        .map(|r| card_row(r)))
}

/// Branch numbers issued under a card, in branch order.
pub async fn branches(db: &Db, symbol: &str, number: &str, at: i64) -> Result<Vec<BranchRow>, StoreError> {
    Ok(db
        .fetch(
            "SELECT branch, person_id, position FROM proj_branch \
             WHERE symbol = $1 AND number = $2 AND position <= $3 ORDER BY branch",
            &[Val::text(symbol), Val::text(number), Val::Int(Some(at))],
            &[Ty::Text, Ty::Text, Ty::Int],
        )
        .await?
        .iter()
        .map(|r| BranchRow {
            branch: text(&r[0]),
            person_id: text(&r[1]),
            position: r[2].as_int().unwrap_or(0),
        })
        .collect())
}

pub async fn branch_of(db: &Db, household_id: &str, person_id: &str, at: i64) -> Result<Option<String>, StoreError> {
    Ok(db
        .fetch(
            "SELECT branch FROM proj_branch WHERE household_id = $1 AND person_id = $2 AND position <= $3",
            &[Val::text(household_id), Val::text(person_id), Val::Int(Some(at))],
            &[Ty::Text],
        )
        .await?
        .first()
        .map(|r| text(&r[0])))
}
