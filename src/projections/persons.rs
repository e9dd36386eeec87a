//! The `persons` projection: each person's attributes, ward application periods (runs),
//! timeline intervals and household memberships, versioned by knowledge time.
//!
//! For every person event at position P the person's rows are derived from the stream up to
//! P (corrections included, exactly as the ledger derives them); a table whose rows changed
//! gets a new version from P and its previous version ends at P. Versions are keyed by the
//! position of the event that caused them, so the tables are the same however the log was cut
//! into batches: incremental runs and a rebuild produce identical rows.

use std::collections::HashMap;

use cqrs_es::Aggregate;

use super::{prepared, Prepared, Projection, ProjectionError};
use crate::codec::{decode, fold};
use crate::domain::Person;
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

/// Everything the tables hold for one person as of one log prefix, table by table.
fn derive_rows(person: &Person) -> Result<[Rows; 4], ProjectionError> {
    let derived = person
        .derive()
        .map_err(|e| ProjectionError::Corrupt(format!("stored history does not derive: {e}")))?;
    let Some(reg) = person.registration() else {
        // An unregistered stream cannot be written through the ledger; nothing to show.
        return Ok(Default::default());
    };
    let date = |d: Option<chrono::NaiveDate>| Val::opt_text(d);
    let attrs = vec![vec![
        Val::text(reg.name.as_str()),
        Val::text(reg.name_kana.as_str()),
        Val::opt_text(reg.real_name.as_ref().map(|n| n.as_str())),
        Val::opt_text(reg.real_name_kana.as_ref().map(|n| n.as_str())),
        Val::text(reg.birth_date.to_string()),
        Val::text(reg.sex.code()),
        Val::Bool(reg.sex_on_back),
        date(derived.death),
        date(derived.disclosure_restricted_from),
        date(person.age_reached_in_force().first().map(|(_, d)| *d)),
        Val::text(reg.name_kana.search_key()),
    ]];
    let runs = derived
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let period = Period {
                from: r.from,
                to: r.to,
                acquisition: r.acquisition,
                loss: r.loss,
                qualified_on: r.qualified_on,
                disqualified_on: r.disqualified_on(),
            };
            period.row(i, Val::Bool(r.loss_by_age))
        })
        .collect();
    let intervals = derived
        .intervals
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let period = Period {
                from: r.from,
                to: r.to,
                acquisition: r.acquisition,
                loss: r.loss,
                qualified_on: r.qualified_on,
                disqualified_on: r.disqualified_on,
            };
            period.row(i, Val::opt_text(r.household_id.as_ref()))
        })
        .collect();
    let memberships = derived
        .memberships
        .iter()
        .enumerate()
        .map(|(i, m)| {
            vec![
                Val::Int(Some(i as i64)),
                Val::text(m.household_id.as_str()),
                Val::text(m.from.to_string()),
                date(m.to),
            ]
        })
        .collect();
    Ok([attrs, runs, intervals, memberships])
}

/// What runs and intervals have in common: their first columns.
struct Period {
    from: chrono::NaiveDate,
    to: Option<chrono::NaiveDate>,
    acquisition: crate::domain::history::AcquisitionReason,
    loss: Option<crate::domain::history::LossReason>,
    qualified_on: chrono::NaiveDate,
    disqualified_on: Option<chrono::NaiveDate>,
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

/// Where a table's open version of one person lives while a batch is applied.
#[derive(Clone, Copy)]
enum Open {
    None,
    /// In the database, from an earlier batch.
    Stored,
    /// Rows `start..end` of this batch's inserts.
    Pending(usize, usize),
}

pub struct Persons;

#[async_trait::async_trait]
impl Projection for Persons {
    fn name(&self) -> &'static str {
        NAME
    }

    /// 2: memberships end with residence (move-out, death); `age_reached_on`.
    /// 3: `name_kana_key` for search.
    fn version(&self) -> i64 {
        3
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
}

impl Persons {
    async fn write(&self, tx: &mut Tx, mut plan: Plan) -> Result<(), ProjectionError> {
        for (t, (table, cols)) in self.tables().into_iter().enumerate() {
            // Close first: the new open versions must not be closed with them.
            tx.close_versions(table, "person_id", &plan.closes[t]).await?;
            tx.insert(table, &cols, std::mem::take(&mut plan.inserts[t])).await?;
        }
        Ok(())
    }
}

/// A batch's rows, worked out from the log alone: per table, the stored open versions to close
/// (person, position) and the versions to insert.
#[derive(Default)]
struct Plan {
    inserts: [Rows; 4],
    closes: [Vec<(String, i64)>; 4],
}

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
    let Plan { inserts, closes } = &mut out;
    for id in order {
        let stream = earlier.remove(id).unwrap_or_default();
        // Each event is deserialised once and applied once; rows are derived per event.
        let mut person = fold::<Person>(&stream)?;
        let mut previous: [Rows; 4] = if stream.is_empty() {
            Default::default()
        } else {
            derive_rows(&person)?
        };
        let mut open: [Open; 4] = std::array::from_fn(|t| {
            if previous[t].is_empty() {
                Open::None
            } else {
                Open::Stored
            }
        });
        for e in &mine[id] {
            person.apply(decode::<Person>(e)?);
            let current = derive_rows(&person)?;
            for t in 0..4 {
                if current[t] == previous[t] {
                    continue;
                }
                match open[t] {
                    Open::Stored => closes[t].push((id.to_owned(), e.position)),
                    Open::Pending(start, end) => {
                        for row in &mut inserts[t][start..end] {
                            row[2] = Val::Int(Some(e.position));
                        }
                    }
                    Open::None => {}
                }
                let start = inserts[t].len();
                for data in &current[t] {
                    let mut row = vec![Val::text(id), Val::Int(Some(e.position)), Val::Int(None)];
                    row.extend(data.iter().cloned());
                    inserts[t].push(row);
                }
                open[t] = if current[t].is_empty() {
                    Open::None
                } else {
                    Open::Pending(start, inserts[t].len())
                };
            }
            previous = current;
        }
    }
    Ok(out)
}
