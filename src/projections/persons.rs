//! The `persons` projection: each person's attributes, ward application periods (runs),
//! timeline intervals and household memberships, versioned by knowledge time.
//!
//! For every person event at position P the person's rows are derived from the stream up to
//! P (corrections included, exactly as the ledger derives them) and compared row by row (by
//! ordinal) with those before P: a changed or vanished row ends at P, a changed or new row
//! starts at P, an unchanged one keeps its version. Versions are keyed by the
//! position of the event that caused them, so the tables are the same however the log was cut
//! into batches: incremental runs and a rebuild produce identical rows.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use cqrs_es::Aggregate;

use super::{prepared, Prepared, Projection, ProjectionError, MEMBERS};
use crate::codec::{decode, fold};
use crate::domain::{HouseholdId, Kana, Name, Person, Sex};
use crate::store::sql::{Tx, Ty, Val};
use crate::store::{Store, StoredEvent};

pub const NAME: &str = "persons";

/// The columns runs and intervals share (see [`Period`]); each table adds one after them.
const PERIOD_COLS: [(&str, Ty); 8] = [
    ("ordinal", Ty::Int),
    ("from_date", Ty::Text),
    ("to_date", Ty::Text),
    ("acquisition_reason", Ty::Text),
    ("loss_reason", Ty::Text),
    ("loss_code", Ty::Text),
    ("qualified_on", Ty::Text),
    ("disqualified_on", Ty::Text),
];

/// The versioned tables and their data columns (each also has `person_id`, `known_from`,
/// `known_to` first), in the order of [`derive_rows`].
pub fn tables() -> [(&'static str, Vec<(&'static str, Ty)>); 4] {
    let period = |last: (&'static str, Ty)| PERIOD_COLS.iter().copied().chain([last]).collect();
    [
        (
            "proj_person",
            vec![
                ("name", Ty::Text),
                ("name_kana", Ty::Text),
                ("real_name", Ty::Text),
                ("real_name_kana", Ty::Text),
                ("birth_date", Ty::Text),
                ("sex", Ty::Text),
                ("sex_on_back", Ty::Bool),
                ("deceased_on", Ty::Text),
                ("disclosure_restricted_from", Ty::Text),
                ("age_reached_on", Ty::Text),
                ("name_kana_key", Ty::Text),
            ],
        ),
        ("proj_run", period(("loss_by_age", Ty::Bool))),
        ("proj_interval", period(("household_id", Ty::Text))),
        (
            "proj_membership",
            vec![
                ("ordinal", Ty::Int),
                ("household_id", Ty::Text),
                ("from_date", Ty::Text),
                ("to_date", Ty::Text),
            ],
        ),
    ]
}

const KEY_COLS: [(&str, Ty); 3] = [("person_id", Ty::Text), ("known_from", Ty::Int), ("known_to", Ty::Int)];

type Rows = Vec<Vec<Val>>;

/// One row of a person's tables, typed: compared per event, turned into column values only
/// when it is written (most events change few rows).
#[derive(Clone, PartialEq)]
enum Row {
    Attributes(Box<Attributes>),
    Run(Period, bool),
    Interval(Period, Option<HouseholdId>),
    Membership(HouseholdId, NaiveDate, Option<NaiveDate>),
}

/// `proj_person`'s data: only what it shows, so an unshown change (a My Number commitment)
/// makes no new version.
#[derive(Clone, PartialEq)]
struct Attributes {
    name: Name,
    name_kana: Kana,
    real_name: Option<Name>,
    real_name_kana: Option<Kana>,
    birth_date: NaiveDate,
    sex: Sex,
    sex_on_back: bool,
    deceased_on: Option<NaiveDate>,
    disclosure_restricted_from: Option<NaiveDate>,
    age_reached_on: Option<NaiveDate>,
}

impl Row {
    /// The row's data columns as [`tables`] lists them; `ordinal` for the tables that have one.
    fn values(&self, ordinal: usize) -> Vec<Val> {
        match self {
            Row::Attributes(a) => vec![
                Val::text(a.name.as_str()),
                Val::text(a.name_kana.as_str()),
                Val::opt_text(a.real_name.as_ref().map(|n| n.as_str())),
                Val::opt_text(a.real_name_kana.as_ref().map(|n| n.as_str())),
                Val::text(a.birth_date.to_string()),
                Val::text(a.sex.code()),
                Val::Bool(a.sex_on_back),
                Val::opt_text(a.deceased_on),
                Val::opt_text(a.disclosure_restricted_from),
                Val::opt_text(a.age_reached_on),
                Val::text(a.name_kana.search_key()),
            ],
            Row::Run(period, loss_by_age) => period.row(ordinal, Val::Bool(*loss_by_age)),
            Row::Interval(period, household) => period.row(ordinal, Val::opt_text(household.as_ref())),
            Row::Membership(household, from, to) => vec![
                Val::Int(Some(ordinal as i64)),
                Val::text(household.as_str()),
                Val::text(from.to_string()),
                Val::opt_text(*to),
            ],
        }
    }
}

/// Everything the tables hold for one person as of one log prefix, table by table.
fn derive_rows(person: &Person) -> Result<[Vec<Row>; 4], ProjectionError> {
    let derived = person
        .derive()
        .map_err(|e| ProjectionError::Corrupt(format!("stored history does not derive: {e}")))?;
    let Some(reg) = person.registration() else {
        // An unregistered stream cannot be written through the ledger; nothing to show.
        return Ok(Default::default());
    };
    let attributes = Row::Attributes(Box::new(Attributes {
        name: reg.name.clone(),
        name_kana: reg.name_kana.clone(),
        real_name: reg.real_name.clone(),
        real_name_kana: reg.real_name_kana.clone(),
        birth_date: reg.birth_date,
        sex: reg.sex,
        sex_on_back: reg.sex_on_back,
        deceased_on: derived.death,
        disclosure_restricted_from: derived.disclosure_restricted_from,
        age_reached_on: person.age_reached_in_force().first().map(|(_, d)| *d),
    }));
    let runs = derived
        .runs
        .iter()
        .map(|r| {
            let period = Period {
                from: r.from,
                to: r.to,
                acquisition: r.acquisition,
                loss: r.loss,
                qualified_on: r.qualified_on,
                disqualified_on: r.disqualified_on(),
            };
            Row::Run(period, r.loss_by_age)
        })
        .collect();
    let intervals = derived
        .intervals
        .into_iter()
        .map(|r| {
            let period = Period {
                from: r.from,
                to: r.to,
                acquisition: r.acquisition,
                loss: r.loss,
                qualified_on: r.qualified_on,
                disqualified_on: r.disqualified_on,
            };
            Row::Interval(period, r.household_id)
        })
        .collect();
    let memberships = derived
        .memberships
        .into_iter()
        .map(|m| Row::Membership(m.household_id, m.from, m.to))
        .collect();
    Ok([vec![attributes], runs, intervals, memberships])
}

/// What runs and intervals have in common: their first columns.
#[derive(Clone, PartialEq)]
struct Period {
    from: NaiveDate,
    to: Option<NaiveDate>,
    acquisition: crate::domain::history::AcquisitionReason,
    loss: Option<crate::domain::history::LossReason>,
    qualified_on: NaiveDate,
    disqualified_on: Option<NaiveDate>,
}

impl Period {
    /// The row at `ordinal`, ending with the table's own last column.
    fn row(&self, ordinal: usize, last: Val) -> Vec<Val> {
        vec![
            Val::Int(Some(ordinal as i64)),
            Val::text(self.from.to_string()),
            Val::opt_text(self.to),
            Val::text(self.acquisition.as_str()),
            Val::opt_text(self.loss.map(|l| l.as_str())),
            Val::opt_text(self.loss.and_then(|l| l.code())),
            Val::text(self.qualified_on.to_string()),
            Val::opt_text(self.disqualified_on),
            last,
        ]
    }
}

/// Where one open row of a person lives while a batch is applied.
#[derive(Clone, Copy)]
enum Open {
    /// In the database, from an earlier batch.
    Stored,
    /// Row `i` of this batch's inserts.
    Pending(usize),
}

pub struct Persons;

#[async_trait::async_trait]
impl Projection for Persons {
    fn name(&self) -> &'static str {
        NAME
    }

    /// 2: memberships end with residence (move-out, death); `age_reached_on`.
    /// 3: `name_kana_key` for search.
    /// 4: a run, interval or membership row lives until that row changes, not the whole table.
    fn version(&self) -> i64 {
        4
    }

    fn tables(&self) -> Vec<(&'static str, Vec<(&'static str, Ty)>)> {
        tables()
            .into_iter()
            .map(|(t, cols)| (t, KEY_COLS.iter().copied().chain(cols).collect()))
            .collect()
    }

    async fn prepare(&self, store: &Store, batch: &[StoredEvent]) -> Result<Prepared, ProjectionError> {
        Ok(Box::new(plan(store, batch).await?))
    }

    async fn apply(&self, _: &Store, tx: &mut Tx, _: &[StoredEvent], work: Prepared) -> Result<(), ProjectionError> {
        self.write(tx, prepared(work, NAME)?).await
    }

    fn touches(&self, work: &Prepared) -> Vec<(&'static str, String)> {
        work.downcast_ref::<Plan>()
            .map(|p| p.members_of.iter().map(|h| (MEMBERS, h.clone())).collect())
            .unwrap_or_default()
    }
}

impl Persons {
    async fn write(&self, tx: &mut Tx, mut plan: Plan) -> Result<(), ProjectionError> {
        for (t, (table, cols)) in self.tables().into_iter().enumerate() {
            // Close first: the new open versions must not be closed with them.
            if t == ATTRIBUTES {
                let whole: Vec<(String, i64)> = plan.closes[t].drain(..).map(|(id, _, p)| (id, p)).collect();
                tx.close_versions(table, "person_id", &whole).await?;
            } else {
                tx.close_rows(table, "person_id", &plan.closes[t]).await?;
            }
            tx.insert(table, &cols, std::mem::take(&mut plan.inserts[t])).await?;
        }
        Ok(())
    }
}

/// The index of `proj_person` in [`tables`]: one row per version, no ordinal.
const ATTRIBUTES: usize = 0;

/// A batch's rows, worked out from the log alone: per table, the stored open rows to close
/// (person, ordinal, position) and the rows to insert.
#[derive(Default)]
struct Plan {
    inserts: [Rows; 4],
    closes: [Vec<(String, i64, i64)>; 4],
    /// Households whose membership rows the batch changes (their lists of members).
    members_of: BTreeSet<String>,
}

/// The index of `proj_membership` in [`tables`].
const MEMBERSHIPS: usize = 3;

/// Derives a batch's versions from the persons' streams up to each of their events.
async fn plan(store: &Store, batch: &[StoredEvent]) -> Result<Plan, ProjectionError> {
    let mut order: Vec<&str> = Vec::new();
    let mut mine: HashMap<&str, Vec<&StoredEvent>> = HashMap::new();
    for e in batch.iter().filter(|e| e.aggregate_type == Person::TYPE) {
        mine.entry(&e.aggregate_id)
            .or_insert_with(|| {
                order.push(&e.aggregate_id);
                Vec::new()
            })
            .push(e);
    }
    let mut out = Plan::default();
    let Some(first) = batch.first() else { return Ok(out) };
    let ids: Vec<String> = order.iter().map(|s| (*s).to_owned()).collect();
    // Earlier events of these persons: immutable, so read outside the transaction.
    let mut earlier: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    for e in store.load_streams_before(Person::TYPE, &ids, first.position).await? {
        earlier.entry(e.aggregate_id.clone()).or_default().push(e);
    }
    let Plan {
        inserts,
        closes,
        members_of,
    } = &mut out;
    for id in order {
        let stream = earlier.remove(id).unwrap_or_default();
        // Each event is deserialised once and applied once; rows are derived per event.
        let mut person = fold::<Person>(&stream)?;
        let mut previous: [Vec<Row>; 4] = if stream.is_empty() {
            Default::default()
        } else {
            derive_rows(&person)?
        };
        // Row i of a table's open rows lives where open[t][i] says.
        let mut open: [Vec<Open>; 4] = std::array::from_fn(|t| vec![Open::Stored; previous[t].len()]);
        for e in &mine[id] {
            person.apply(decode::<Person>(e)?);
            let current = derive_rows(&person)?;
            for t in 0..4 {
                if current[t] == previous[t] {
                    continue;
                }
                if t == MEMBERSHIPS {
                    // Every household named before or after: a superset of those whose
                    // members changed, which is all a reader needs.
                    for row in previous[t].iter().chain(&current[t]) {
                        if let Row::Membership(h, ..) = row {
                            members_of.insert(h.as_str().to_owned());
                        }
                    }
                }
                // Row by row: a period that did not change keeps its version, so a new event
                // writes the rows it changed, not the person's whole history again. Rows
                // compare with their ordinal (the first column of every table but
                // `proj_person`, whose single row is closed whole).
                for (i, row) in previous[t].iter().enumerate() {
                    if current[t].get(i) == Some(row) {
                        continue;
                    }
                    match open[t][i] {
                        Open::Stored => closes[t].push((id.to_owned(), i as i64, e.position)),
                        Open::Pending(k) => inserts[t][k][2] = Val::Int(Some(e.position)),
                    }
                }
                let mut now = Vec::with_capacity(current[t].len());
                for (i, data) in current[t].iter().enumerate() {
                    if previous[t].get(i) == Some(data) {
                        now.push(open[t][i]);
                        continue;
                    }
                    now.push(Open::Pending(inserts[t].len()));
                    let mut row = vec![Val::text(id), Val::Int(Some(e.position)), Val::Int(None)];
                    row.extend(data.values(i));
                    inserts[t].push(row);
                }
                open[t] = now;
            }
            previous = current;
        }
    }
    Ok(out)
}
