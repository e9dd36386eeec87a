//! The part of the log a batch's causes need, read in a few bulk queries, and the streams
//! folded as the causes advance.

use std::collections::{BTreeSet, HashMap};

use cqrs_es::Aggregate;

use super::{is_consequence, Feed};
use crate::codec::decode;
use crate::domain::history::Derived;
use crate::domain::{Household, Person};
use crate::projections::ProjectionError;
use crate::store::sql::{self, Db, Ty};
use crate::store::{Store, StoredEvent};

/// One cause of a batch: the event's position and time, the last position of its
/// consequences, and the households whose group it may change.
pub(super) struct Unit {
    pub(super) position: i64,
    pub(super) recorded_at: chrono::DateTime<chrono::Utc>,
    pub(super) upto: i64,
    pub(super) households: BTreeSet<String>,
}

/// A batch's causes and the log slice to evaluate them on: what the feed works out from the
/// log alone, before its transaction.
pub(super) struct Plan {
    pub(super) units: Vec<Unit>,
    pub(super) slice: Slice,
}

/// The part of the log a batch's causes need, read in a few bulk queries (not per cause):
/// the streams of the causing persons, of the touched households and of all their members,
/// up to the batch's last consequence.
#[derive(Default)]
pub(super) struct Slice {
    pub(super) persons: HashMap<String, Vec<StoredEvent>>,
    pub(super) households: HashMap<String, Vec<StoredEvent>>,
    pub(super) members: HashMap<String, Vec<String>>,
}

pub(super) fn by_stream(events: Vec<StoredEvent>, into: &mut HashMap<String, Vec<StoredEvent>>) {
    for e in events {
        into.entry(e.aggregate_id.clone()).or_default().push(e);
    }
}

pub(super) fn prefix(events: Option<&Vec<StoredEvent>>, upto: i64) -> &[StoredEvent] {
    let events = events.map_or(&[][..], Vec::as_slice);
    &events[..events.partition_point(|e| e.position <= upto)]
}

/// Streams folded as far as a batch's causes have needed them. Causes come in log order, so
/// each stream is folded once per pass, event by event, not again from its start per cause.
/// A person folded over their first `.0` events, with the derivation of that history.
pub(super) type FoldedPerson = (usize, Person, Result<Derived, String>);

#[derive(Default)]
pub(super) struct Folds {
    pub(super) persons: HashMap<String, FoldedPerson>,
    pub(super) households: HashMap<String, (usize, Household)>,
}

/// Brings a folded stream to `events` (a prefix of the stream); whether it moved.
pub(super) fn advance<A: Aggregate>(
    applied: &mut usize,
    aggregate: &mut A,
    events: &[StoredEvent],
) -> Result<bool, ProjectionError> {
    if events.len() < *applied {
        // Asked for an earlier state: fold again from the start.
        (*applied, *aggregate) = (0, A::default());
    }
    if events.len() == *applied {
        return Ok(false);
    }
    for e in &events[*applied..] {
        aggregate.apply(decode::<A>(e)?);
    }
    *applied = events.len();
    Ok(true)
}

impl Folds {
    /// A person as the log stands at `upto`, with their derived history; None before their
    /// first event.
    pub(super) fn person(
        &mut self,
        slice: &Slice,
        id: &str,
        upto: i64,
    ) -> Result<Option<&FoldedPerson>, ProjectionError> {
        let events = prefix(slice.persons.get(id), upto);
        if events.is_empty() {
            return Ok(None);
        }
        let entry = self
            .persons
            .entry(id.to_owned())
            .or_insert_with(|| (0, Person::default(), Err(String::new())));
        let (applied, person, derived) = entry;
        if advance(applied, person, events)? {
            *derived = person.derive().map_err(|e| e.to_string());
        }
        Ok(Some(entry))
    }

    pub(super) fn household(&mut self, slice: &Slice, id: &str, upto: i64) -> Result<&Household, ProjectionError> {
        let events = prefix(slice.households.get(id), upto);
        let (applied, household) = self.households.entry(id.to_owned()).or_default();
        advance(applied, household, events)?;
        Ok(household)
    }
}

impl Feed {
    /// The batch's causes, their touched households and the log slice to evaluate them on.
    pub(super) async fn plan(&self, store: &Store, batch: &[StoredEvent]) -> Result<Plan, ProjectionError> {
        let units = units(store, batch).await?;
        let limit = units.iter().map(|(_, upto)| *upto).max().unwrap_or(0);
        let mut slice = Slice::default();
        let causing: BTreeSet<String> = units
            .iter()
            .filter(|(c, _)| c.aggregate_type == Person::TYPE)
            .map(|(c, _)| c.aggregate_id.clone())
            .collect();
        let causing: Vec<String> = causing.into_iter().collect();
        by_stream(
            store.load_streams_before(Person::TYPE, &causing, limit + 1).await?,
            &mut slice.persons,
        );
        let mut planned = Vec::with_capacity(units.len());
        let mut all = BTreeSet::new();
        let mut folds = Folds::default();
        for (cause, upto) in units {
            let households = touched(&slice, &mut folds, cause, upto)?;
            all.extend(households.iter().cloned());
            planned.push(Unit {
                position: cause.position,
                recorded_at: cause.recorded_at,
                upto,
                households,
            });
        }
        let all: Vec<String> = all.into_iter().collect();
        by_stream(
            store.load_streams_before(Household::TYPE, &all, limit + 1).await?,
            &mut slice.households,
        );
        let mut missing = BTreeSet::new();
        for (household, person) in household_person_ids(store.db(), &all).await? {
            if !slice.persons.contains_key(&person) {
                missing.insert(person.clone());
            }
            slice.members.entry(household).or_default().push(person);
        }
        let missing: Vec<String> = missing.into_iter().collect();
        by_stream(
            store.load_streams_before(Person::TYPE, &missing, limit + 1).await?,
            &mut slice.persons,
        );
        Ok(Plan { units: planned, slice })
    }
}

/// Households whose group a cause may change.
fn touched(
    slice: &Slice,
    folds: &mut Folds,
    cause: &StoredEvent,
    upto: i64,
) -> Result<BTreeSet<String>, ProjectionError> {
    let mut out = BTreeSet::new();
    if cause.aggregate_type == Household::TYPE {
        out.insert(cause.aggregate_id.clone());
        return Ok(out);
    }
    // The person's households before and after the cause (a correction may take one away).
    for bound in [cause.position - 1, upto] {
        if let Some((_, _, Ok(derived))) = folds.person(slice, &cause.aggregate_id, bound)? {
            out.extend(derived.household_ids().into_iter().map(|h| h.to_string()));
        }
    }
    Ok(out)
}

/// (household, person) for every person whose facts (ever) name one of these households:
/// the members a household's group is built from.
async fn household_person_ids(db: &Db, household_ids: &[String]) -> Result<Vec<(String, String)>, ProjectionError> {
    let d = db.dialect();
    let household = match d {
        sql::Dialect::Postgres => "COALESCE(payload ->> 'household_id', payload -> 'replacement' ->> 'household_id')",
        sql::Dialect::Sqlite => {
            "coalesce(json_extract(payload, '$.household_id'), json_extract(payload, '$.replacement.household_id'))"
        }
    };
    let sql = format!(
        "SELECT DISTINCT {household} AS h, aggregate_id FROM events WHERE aggregate_type = 'person' AND {} ORDER BY 1, 2",
        d.in_json_array(household, 1)
    );
    let mut out = Vec::new();
    for chunk in household_ids.chunks(5000) {
        for r in db.fetch(&sql, &[sql::json_array(chunk)], &[Ty::Text, Ty::Text]).await? {
            out.push((
                r[0].as_text().unwrap_or_default().to_owned(),
                r[1].as_text().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(out)
}

/// The causes of a batch, each with the last position of its consequences (which follow it in
/// the log, in the same append, perhaps past the batch).
async fn units<'a>(store: &Store, batch: &'a [StoredEvent]) -> Result<Vec<(&'a StoredEvent, i64)>, ProjectionError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let cause = &batch[i];
        i += 1;
        if is_consequence(cause)? {
            continue;
        }
        let mut upto = cause.position;
        while i < batch.len() && is_consequence(&batch[i])? {
            upto = batch[i].position;
            i += 1;
        }
        if i == batch.len() {
            for e in store.read_log(upto, 16).await? {
                if !is_consequence(&e)? {
                    break;
                }
                upto = e.position;
            }
        }
        out.push((cause, upto));
    }
    Ok(out)
}
