//! The change feed (feed.md): a durable consumer of the log that appends permanent, gapless
//! records. Its checkpoint, its records and what each record last said (`feed_last`, to detect
//! changes and no-ops) are written in one transaction, like the other projections; unlike
//! them it is never emptied by a rebuild: issued records are permanent.
//!
//! A cause is an event of the log; the card and branch numbers the ledger records in the same
//! append as a join (household events by actor `system`) belong to that cause: the group is
//! evaluated after them and they cause nothing on their own. For each household the cause
//! touches, the group is built from the log up to that point ([`crate::domain::feed::group`]);
//! it is emitted when any record differs from what the household's records last said.

use std::collections::{BTreeSet, HashMap};

use cqrs_es::Aggregate;
use serde_json::{json, Value};

use super::{Projection, ProjectionError, Verification};
use crate::codec::decode;
use crate::domain::feed::{group, Change, HouseholdRecord, IndividualRecord, Member};
use crate::domain::history::Derived;
use crate::domain::{Household, Person, PersonId};
use crate::store::sql::{self, Db, Tx, Ty, Val};
use crate::store::{format_instant, Store, StoredEvent};

pub const NAME: &str = "feed";

const RECORD_COLS: [(&str, Ty); 6] = [
    ("position", Ty::Int),
    ("cause_position", Ty::Int),
    ("kind", Ty::Text),
    ("household_id", Ty::Text),
    ("person_id", Ty::Text),
    ("record", Ty::Text),
];

/// An event the ledger recorded as the consequence of the event before it, in the same append.
fn is_consequence(e: &StoredEvent) -> bool {
    e.is_consequence()
}

fn corrupt(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Corrupt(e.to_string())
}

pub struct Feed {
    pub insurer_number: String,
}

/// One cause of a batch: the event, the last position of its consequences, and the
/// households whose group it may change.
struct Unit<'a> {
    cause: &'a StoredEvent,
    upto: i64,
    households: BTreeSet<String>,
}

/// The part of the log a batch's causes need, read in a few bulk queries (not per cause):
/// the streams of the causing persons, of the touched households and of all their members,
/// up to the batch's last consequence.
#[derive(Default)]
struct Slice {
    persons: HashMap<String, Vec<StoredEvent>>,
    households: HashMap<String, Vec<StoredEvent>>,
    members: HashMap<String, Vec<String>>,
}

fn by_stream(events: Vec<StoredEvent>, into: &mut HashMap<String, Vec<StoredEvent>>) {
    for e in events {
        into.entry(e.aggregate_id.clone()).or_default().push(e);
    }
}

fn prefix(events: Option<&Vec<StoredEvent>>, upto: i64) -> &[StoredEvent] {
    let events = events.map_or(&[][..], Vec::as_slice);
    &events[..events.partition_point(|e| e.position <= upto)]
}

/// Streams folded as far as a batch's causes have needed them. Causes come in log order, so
/// each stream is folded once per pass, event by event, not again from its start per cause.
/// A person folded over their first `.0` events, with the derivation of that history.
type FoldedPerson = (usize, Person, Result<Derived, String>);

#[derive(Default)]
struct Folds {
    persons: HashMap<String, FoldedPerson>,
    households: HashMap<String, (usize, Household)>,
}

/// Brings a folded stream to `events` (a prefix of the stream); whether it moved.
fn advance<A: Aggregate>(
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
    fn person(&mut self, slice: &Slice, id: &str, upto: i64) -> Result<Option<&FoldedPerson>, ProjectionError> {
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

    fn household(&mut self, slice: &Slice, id: &str, upto: i64) -> Result<&Household, ProjectionError> {
        let events = prefix(slice.households.get(id), upto);
        let (applied, household) = self.households.entry(id.to_owned()).or_default();
        advance(applied, household, events)?;
        Ok(household)
    }
}

/// A household's group: the household record and (person id, record) in group order.
type Group = (HouseholdRecord, Vec<(String, IndividualRecord)>);

/// One issued feed record, as stored.
struct Issued {
    position: i64,
    cause_position: i64,
    kind: &'static str,
    household_id: String,
    person_id: Option<String>,
    /// The record's JSON: its fields, then position, cause_position, kind, (change,)
    /// recorded_at.
    text: String,
}

/// What a batch emits: the records and the households whose state moved.
type Emitted = (Vec<Issued>, BTreeSet<String>);

/// A record's JSON with the feed's own fields appended (serialized once, never re-parsed).
fn with_fields(mut json: String, fields: &[(&str, Value)]) -> String {
    json.pop(); // the closing brace
    for (k, v) in fields {
        json.push_str(",\"");
        json.push_str(k);
        json.push_str("\":");
        json.push_str(&v.to_string());
    }
    json.push('}');
    json
}

impl Feed {
    /// The batch's causes, their touched households and the log slice to evaluate them on.
    async fn plan<'a>(
        &self,
        store: &Store,
        batch: &'a [StoredEvent],
    ) -> Result<(Vec<Unit<'a>>, Slice), ProjectionError> {
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
                cause,
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
        Ok((planned, slice))
    }

    /// The group of `household_id` as the log stands at `upto`, with its records as JSON.
    fn group_at(
        &self,
        slice: &Slice,
        folds: &mut Folds,
        household_id: &str,
        upto: i64,
    ) -> Result<Option<Group>, ProjectionError> {
        let household = folds.household(slice, household_id, upto)?.clone();
        if household.card().is_none() {
            return Ok(None);
        }
        let ids = slice.members.get(household_id).map_or(&[][..], Vec::as_slice);
        for id in ids {
            if let Some((_, _, Err(e))) = folds.person(slice, id, upto)? {
                return Err(corrupt(format!("person {id}: stored history does not derive: {e}")));
            }
        }
        let mut folded = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((_, person, Ok(derived))) = folds.persons.get(id.as_str()) {
                if !prefix(slice.persons.get(id), upto).is_empty() {
                    let pid = PersonId::parse(id).map_err(|e| corrupt(e.message))?;
                    folded.push((pid, person, derived));
                }
            }
        }
        let members: Vec<Member<'_>> = folded
            .iter()
            .map(|(person_id, person, derived)| Member {
                person_id,
                person,
                derived,
            })
            .collect();
        let Some((h, individuals)) = group(&self.insurer_number, household_id, &household, &members) else {
            return Ok(None);
        };
        Ok(Some((
            h,
            individuals.into_iter().map(|r| (r.person_id.clone(), r)).collect(),
        )))
    }

    /// Every record the planned causes emit, numbered from `next`, against (and updating) what
    /// each household's records last said.
    fn generate(
        &self,
        units: &[Unit<'_>],
        slice: &Slice,
        state: &mut HashMap<String, Last>,
        next: &mut i64,
    ) -> Result<Emitted, ProjectionError> {
        let mut records = Vec::new();
        let mut moved = BTreeSet::new();
        let mut folds = Folds::default();
        for unit in units {
            for household_id in &unit.households {
                let last = state.entry(household_id.clone()).or_default();
                let Some((group, now)) = self.emit(slice, &mut folds, unit, household_id, last, next)? else {
                    continue;
                };
                *last = now;
                moved.insert(household_id.clone());
                records.extend(group);
            }
        }
        Ok((records, moved))
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

/// `household_id` is one of `ids`, with the ids as one JSON parameter: one statement whatever
/// their number.
fn household_in(tx: &Tx, ids: &BTreeSet<String>) -> (String, Val) {
    let ids: Vec<&String> = ids.iter().collect();
    (tx.dialect().in_json_array("household_id", 1), sql::json_array(&ids))
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

#[async_trait::async_trait]
impl Projection for Feed {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> Vec<(&'static str, Vec<(&'static str, Ty)>)> {
        vec![("feed_records", RECORD_COLS.to_vec())]
    }

    fn rebuildable(&self) -> bool {
        false
    }

    fn lane(&self) -> super::Lane {
        super::Lane::Feed
    }

    async fn verify(&self, store: &Store, upto: i64) -> Result<Option<Verification>, ProjectionError> {
        self.verify_against_log(store, upto).await.map(Some)
    }

    async fn apply(&self, store: &Store, tx: &mut Tx, batch: &[StoredEvent]) -> Result<(), ProjectionError> {
        let head = tx
            .fetch("SELECT coalesce(max(position), 0) FROM feed_records", &[], &[Ty::Int])
            .await?;
        let mut next = head.first().and_then(|r| r[0].as_int()).unwrap_or(0) + 1;
        let (units, slice) = self.plan(store, batch).await?;
        let touched: BTreeSet<String> = units.iter().flat_map(|u| u.households.iter().cloned()).collect();
        if touched.is_empty() {
            return Ok(());
        }
        // What the touched households' records last said, read once for the batch.
        let (predicate, ids) = household_in(tx, &touched);
        let mut state: HashMap<String, Last> = HashMap::new();
        for r in tx
            .fetch(
                &format!("SELECT household_id, person_id, record FROM feed_last WHERE {predicate}"),
                &[ids],
                &[Ty::Text, Ty::Text, Ty::Text],
            )
            .await?
        {
            let text = |i: usize| r[i].as_text().unwrap_or_default().to_owned();
            state.entry(text(0)).or_default().insert(text(1), text(2));
        }
        let (records, moved) = self.generate(&units, &slice, &mut state, &mut next)?;
        let rows: Vec<Vec<Val>> = records
            .into_iter()
            .map(|r| {
                vec![
                    Val::Int(Some(r.position)),
                    Val::Int(Some(r.cause_position)),
                    Val::text(r.kind),
                    Val::Text(Some(r.household_id)),
                    Val::Text(r.person_id),
                    Val::Text(Some(r.text)),
                ]
            })
            .collect();
        tx.insert("feed_records", &RECORD_COLS, rows).await?;
        if moved.is_empty() {
            return Ok(());
        }
        // What the households' records say now, for the next comparison.
        let (predicate, ids) = household_in(tx, &moved);
        tx.execute(&format!("DELETE FROM feed_last WHERE {predicate}"), &[ids])
            .await?;
        let last: Vec<Vec<Val>> = moved
            .iter()
            .flat_map(|h| {
                state
                    .get(h)
                    .into_iter()
                    .flatten()
                    .map(move |(k, v)| vec![Val::text(h), Val::text(k), Val::text(v)])
            })
            .collect();
        tx.insert(
            "feed_last",
            &[
                ("household_id", Ty::Text),
                ("person_id", Ty::Text),
                ("record", Ty::Text),
            ],
            last,
        )
        .await?;
        Ok(())
    }
}

/// What a household's records last said: person id ('' for the household record) → JSON.
type Last = HashMap<String, String>;

/// The causes of a batch, each with the last position of its consequences (which follow it in
/// the log, in the same append, perhaps past the batch).
async fn units<'a>(store: &Store, batch: &'a [StoredEvent]) -> Result<Vec<(&'a StoredEvent, i64)>, ProjectionError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let cause = &batch[i];
        i += 1;
        if is_consequence(cause) {
            continue;
        }
        let mut upto = cause.position;
        while i < batch.len() && is_consequence(&batch[i]) {
            upto = batch[i].position;
            i += 1;
        }
        if i == batch.len() {
            for e in store.read_log(upto, 16).await? {
                if !is_consequence(&e) {
                    break;
                }
                upto = e.position;
            }
        }
        out.push((cause, upto));
    }
    Ok(out)
}

impl Feed {
    /// The group a cause makes for one household, numbered from `next`, with the household's
    /// new state; None when it has no card or nothing changed against `last`.
    fn emit(
        &self,
        slice: &Slice,
        folds: &mut Folds,
        unit: &Unit<'_>,
        household_id: &str,
        last: &Last,
        next: &mut i64,
    ) -> Result<Option<(Vec<Issued>, Last)>, ProjectionError> {
        let cause = unit.cause;
        let Some((household, individuals)) = self.group_at(slice, folds, household_id, unit.upto)? else {
            return Ok(None);
        };
        let mut now: Vec<(String, String)> = Vec::with_capacity(individuals.len() + 1);
        now.push((String::new(), serde_json::to_string(&household).map_err(corrupt)?));
        for (pid, r) in &individuals {
            now.push((pid.clone(), serde_json::to_string(r).map_err(corrupt)?));
        }
        if now.len() == last.len() && now.iter().all(|(k, v)| last.get(k) == Some(v)) {
            return Ok(None);
        }
        let before = |pid: &str| -> Result<Option<IndividualRecord>, ProjectionError> {
            last.get(pid)
                .map(|s| serde_json::from_str(s))
                .transpose()
                .map_err(corrupt)
        };
        let recorded_at = json!(format_instant(&cause.recorded_at));
        let mut records = Vec::with_capacity(individuals.len() + 2);
        let mut issue = |kind: &'static str, person_id: Option<String>, json: String, change: Option<Change>| {
            let mut fields = vec![
                ("position", json!(*next)),
                ("cause_position", json!(cause.position)),
                ("kind", json!(kind)),
            ];
            if let Some(c) = change {
                fields.push(("change", json!(c)));
            }
            fields.push(("recorded_at", recorded_at.clone()));
            records.push(Issued {
                position: *next,
                cause_position: cause.position,
                kind,
                household_id: household_id.to_owned(),
                person_id,
                text: with_fields(json, &fields),
            });
            *next += 1;
        };
        issue("household", None, now[0].1.clone(), None);
        // Members the household's records showed who are no longer in the group get one last
        // record without a period (they are not kept in `now`, so it is said once).
        let mut all: Vec<(String, IndividualRecord, Option<String>)> = individuals
            .into_iter()
            .zip(now.iter().skip(1))
            .map(|((pid, r), (_, json))| (pid, r, Some(json.clone())))
            .collect();
        for pid in last.keys().filter(|k| !k.is_empty()) {
            if !all.iter().any(|(p, _, _)| p == pid) {
                if let Some(b) = before(pid)? {
                    all.push((pid.clone(), b.withdrawn(), None));
                }
            }
        }
        all.sort_by(|(_, a, _), (_, b, _)| a.group_order().cmp(&b.group_order()));
        for (pid, r, json) in all {
            let change = Change::between(before(&pid)?.as_ref(), &r);
            let json = match json {
                Some(j) => j,
                None => serde_json::to_string(&r).map_err(corrupt)?,
            };
            issue("individual", Some(pid), json, Some(change));
        }
        Ok(Some((records, now.into_iter().collect())))
    }

    /// Recomputes the feed from position 1 of the log up to the feed's checkpoint, in memory,
    /// and compares it record by record with the stored feed (which is never rewritten).
    pub async fn verify_against_log(&self, store: &Store, upto: i64) -> Result<Verification, ProjectionError> {
        let db = store.db();
        let mut state: HashMap<String, Last> = HashMap::new();
        let mut next = 1;
        let mut after = 0;
        let mut differences = Vec::new();
        let mut checked = 0u64;
        while after < upto {
            let mut batch = store.read_log(after, 10_000).await?;
            batch.retain(|e| e.position <= upto);
            let Some(last_event) = batch.last().map(|e| e.position) else {
                break;
            };
            let (units, slice) = self.plan(store, &batch).await?;
            let first = next;
            let (records, _) = self.generate(&units, &slice, &mut state, &mut next)?;
            let stored = feed_records(db, first - 1, next - first).await?;
            for (i, expected) in records.into_iter().enumerate() {
                let stored = stored.get(i);
                checked += 1;
                // Byte for byte: an issued record is never rewritten.
                if stored != Some(&expected.text) && differences.len() < 20 {
                    differences.push(format!(
                        "position {}: stored {} but the log gives {}",
                        expected.position,
                        stored.map_or("nothing", String::as_str),
                        expected.text
                    ));
                }
            }
            after = last_event;
        }
        let stored_head = feed_head(db).await?;
        if stored_head != next - 1 && differences.len() < 20 {
            differences.push(format!(
                "the stored feed ends at position {stored_head}, the recomputation at {}",
                next - 1
            ));
        }
        Ok(Verification {
            name: NAME,
            checked,
            differences,
        })
    }
}

/// Feed records after `after`, at most `limit`, in position order (their stored JSON).
pub async fn feed_records(db: &Db, after: i64, limit: i64) -> Result<Vec<String>, crate::store::StoreError> {
    Ok(db
        .fetch(
            "SELECT record FROM feed_records WHERE position > $1 ORDER BY position LIMIT $2",
            &[Val::int(after), Val::int(limit)],
            &[Ty::Text],
        )
        .await?
        .into_iter()
        .map(|mut r| r.swap_remove(0).into_text().unwrap_or_default())
        .collect())
}

/// The highest feed position issued (0: none).
pub async fn feed_head(db: &Db) -> Result<i64, crate::store::StoreError> {
    db.fetch_int("SELECT coalesce(max(position), 0) FROM feed_records", &[])
        .await
}
