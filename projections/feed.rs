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

use super::db::{Tx, Ty, Val};
use super::{Projection, ProjectionError};
use crate::domain::feed::{group, Change, IndividualRecord, Member};
use crate::domain::{Household, Person, PersonId};
use crate::ledger::fold;
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

/// A household event the ledger recorded as the consequence of a person event.
fn is_consequence(e: &StoredEvent) -> bool {
    e.aggregate_type == Household::TYPE
        && matches!(e.event_type.as_str(), "card_number_assigned" | "branch_number_issued")
        && e.metadata.get("actor").and_then(Value::as_str) == Some("system")
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

/// A household's group: the household record as JSON and (person id, record) in group order.
type Group = (Value, Vec<(String, IndividualRecord)>);

/// What a batch emits: records (JSON, household, person) and the households whose state moved.
type Emitted = (Vec<(Value, String, Option<String>)>, BTreeSet<String>);

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
        for (cause, upto) in units {
            let households = touched(&slice, cause, upto)?;
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
        for (household, person) in store.household_person_ids(&all).await? {
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
        household_id: &str,
        upto: i64,
    ) -> Result<Option<Group>, ProjectionError> {
        let household = fold::<Household>(prefix(slice.households.get(household_id), upto)).map_err(corrupt)?;
        if household.card().is_none() {
            return Ok(None);
        }
        let mut folded = Vec::new();
        for id in slice.members.get(household_id).into_iter().flatten() {
            let events = prefix(slice.persons.get(id), upto);
            if events.is_empty() {
                continue;
            }
            let person = fold::<Person>(events).map_err(corrupt)?;
            let derived = person
                .derive()
                .map_err(|e| corrupt(format!("person {id}: stored history does not derive: {e}")))?;
            let pid = PersonId::parse(id).map_err(|e| corrupt(e.message))?;
            folded.push((pid, person, derived));
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
        let h = serde_json::to_value(h).map_err(corrupt)?;
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
        for unit in units {
            for household_id in &unit.households {
                let last = state.entry(household_id.clone()).or_default();
                let Some((group, now)) = self.emit(slice, unit, household_id, last, next)? else {
                    continue;
                };
                *last = now.into_iter().collect();
                moved.insert(household_id.clone());
                records.extend(group.into_iter().map(|(r, p)| (r, household_id.clone(), p)));
            }
        }
        Ok((records, moved))
    }
}

/// Households whose group a cause may change.
fn touched(slice: &Slice, cause: &StoredEvent, upto: i64) -> Result<BTreeSet<String>, ProjectionError> {
    let mut out = BTreeSet::new();
    if cause.aggregate_type == Household::TYPE {
        out.insert(cause.aggregate_id.clone());
        return Ok(out);
    }
    // The person's households before and after the cause (a correction may take one away).
    let stream = slice.persons.get(&cause.aggregate_id);
    for bound in [cause.position - 1, upto] {
        let events = prefix(stream, bound);
        if events.is_empty() {
            continue;
        }
        let person = fold::<Person>(events).map_err(corrupt)?;
        if let Ok(derived) = person.derive() {
            out.extend(derived.households.iter().map(|(_, h)| h.to_string()));
        }
    }
    Ok(out)
}

/// A list of ids as one JSON parameter (PostgreSQL `json_array_elements_text`, SQLite
/// `json_each`): one statement whatever the number.
fn id_list(tx: &Tx, ids: &BTreeSet<String>) -> (String, Val) {
    let list = if tx.is_postgres() {
        "SELECT json_array_elements_text($1::json)"
    } else {
        "SELECT value FROM json_each($1)"
    };
    (
        list.to_owned(),
        Val::text(serde_json::to_string(ids).unwrap_or_default()),
    )
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

    fn serves_reads(&self) -> bool {
        false
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
        let (list, ids) = id_list(tx, &touched);
        let mut state: HashMap<String, Last> = HashMap::new();
        for r in tx
            .fetch(
                &format!("SELECT household_id, person_id, record FROM feed_last WHERE household_id IN ({list})"),
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
            .map(|(record, household_id, person_id)| {
                vec![
                    Val::Int(record["position"].as_i64()),
                    Val::Int(record["cause_position"].as_i64()),
                    Val::text(record["kind"].as_str().unwrap_or_default()),
                    Val::Text(Some(household_id)),
                    Val::Text(person_id),
                    Val::text(record.to_string()),
                ]
            })
            .collect();
        tx.insert("feed_records", &RECORD_COLS, rows).await?;
        if moved.is_empty() {
            return Ok(());
        }
        // What the households' records say now, for the next comparison.
        let (list, ids) = id_list(tx, &moved);
        tx.execute(&format!("DELETE FROM feed_last WHERE household_id IN ({list})"), &[ids])
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
    #[allow(clippy::type_complexity)]
    fn emit(
        &self,
        slice: &Slice,
        unit: &Unit<'_>,
        household_id: &str,
        last: &Last,
        next: &mut i64,
    ) -> Result<Option<(Vec<(Value, Option<String>)>, Vec<(String, String)>)>, ProjectionError> {
        let cause = unit.cause;
        let Some((household, individuals)) = self.group_at(slice, household_id, unit.upto)? else {
            return Ok(None);
        };
        let mut now: Vec<(String, String)> = vec![(String::new(), household.to_string())];
        for (pid, r) in &individuals {
            now.push((pid.clone(), serde_json::to_string(r).map_err(corrupt)?));
        }
        if now.len() == last.len() && now.iter().all(|(k, v)| last.get(k) == Some(v)) {
            return Ok(None);
        }
        let recorded_at = format_instant(&cause.recorded_at);
        let mut records = Vec::with_capacity(individuals.len() + 2);
        let mut record = household;
        record["position"] = json!(*next);
        record["cause_position"] = json!(cause.position);
        record["kind"] = json!("household");
        record["recorded_at"] = json!(recorded_at);
        records.push((record, None));
        *next += 1;
        let before = |pid: &str| -> Result<Option<IndividualRecord>, ProjectionError> {
            last.get(pid)
                .map(|s| serde_json::from_str(s))
                .transpose()
                .map_err(corrupt)
        };
        // Members the household's records showed who are no longer in the group get one last
        // record without a period (they are not kept in `now`, so it is said once).
        let mut all: Vec<(String, IndividualRecord)> = individuals;
        for pid in last.keys().filter(|k| !k.is_empty()) {
            if !all.iter().any(|(p, _)| p == pid) {
                if let Some(b) = before(pid)? {
                    all.push((pid.clone(), b.withdrawn()));
                }
            }
        }
        all.sort_by(|(_, a), (_, b)| a.group_order().cmp(&b.group_order()));
        for (pid, r) in &all {
            let before = before(pid)?;
            let mut record = serde_json::to_value(r).map_err(corrupt)?;
            record["position"] = json!(*next);
            record["cause_position"] = json!(cause.position);
            record["kind"] = json!("individual");
            record["change"] = json!(Change::between(before.as_ref(), r));
            record["recorded_at"] = json!(recorded_at);
            records.push((record, Some(pid.clone())));
            *next += 1;
        }
        Ok(Some((records, now)))
    }

    /// Recomputes the feed from position 1 of the log up to the feed's checkpoint, in memory,
    /// and compares it record by record with the stored feed (which is never rewritten).
    pub async fn verify(&self, store: &Store, upto: i64) -> Result<Verification, ProjectionError> {
        let db = super::db::Db::new(store);
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
            let stored = super::read::feed_records(&db, first - 1, next - first).await?;
            for (i, (expected, _, _)) in records.into_iter().enumerate() {
                let position = first + i as i64;
                let stored: Option<Value> = stored
                    .get(i)
                    .map(|s| serde_json::from_str(s))
                    .transpose()
                    .map_err(corrupt)?;
                checked += 1;
                if stored.as_ref() != Some(&expected) && differences.len() < 20 {
                    differences.push(format!(
                        "position {position}: stored {} but the log gives {expected}",
                        stored.map_or("nothing".to_owned(), |v| v.to_string())
                    ));
                }
            }
            after = last_event;
        }
        let stored_head = super::read::feed_head(&db).await?;
        if stored_head != next - 1 && differences.len() < 20 {
            differences.push(format!(
                "the stored feed ends at position {stored_head}, the recomputation at {}",
                next - 1
            ));
        }
        Ok(Verification { checked, differences })
    }
}

/// The outcome of [`Feed::verify`]: identical when `differences` is empty.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub checked: u64,
    pub differences: Vec<String>,
}
