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

impl Feed {
    /// Households whose group a cause may change.
    async fn touched(
        &self,
        store: &Store,
        cause: &StoredEvent,
        upto: i64,
    ) -> Result<BTreeSet<String>, ProjectionError> {
        let mut out = BTreeSet::new();
        if cause.aggregate_type == Household::TYPE {
            out.insert(cause.aggregate_id.clone());
            return Ok(out);
        }
        // The person's households before and after the cause (a correction may take one away).
        let stream = store.load_stream(Person::TYPE, &cause.aggregate_id, None).await?;
        for bound in [cause.position - 1, upto] {
            let prefix: Vec<StoredEvent> = stream.iter().filter(|e| e.position <= bound).cloned().collect();
            if prefix.is_empty() {
                continue;
            }
            let person = fold::<Person>(&prefix).map_err(corrupt)?;
            if let Ok(derived) = person.derive() {
                out.extend(derived.households.iter().map(|(_, h)| h.to_string()));
            }
        }
        Ok(out)
    }

    /// The group of `household_id` as the log stands at `upto`, with its records as JSON.
    async fn group_at(
        &self,
        store: &Store,
        household_id: &str,
        upto: i64,
    ) -> Result<Option<(Value, Vec<(String, IndividualRecord)>)>, ProjectionError> {
        let mut household_events = store.load_stream(Household::TYPE, household_id, None).await?;
        household_events.retain(|e| e.position <= upto);
        let household = fold::<Household>(&household_events).map_err(corrupt)?;
        if household.card().is_none() {
            return Ok(None);
        }
        let mut folded = Vec::new();
        for id in store.household_person_ids(household_id).await? {
            let mut events = store.load_stream(Person::TYPE, &id, None).await?;
            events.retain(|e| e.position <= upto);
            if events.is_empty() {
                continue;
            }
            let person = fold::<Person>(&events).map_err(corrupt)?;
            let derived = person
                .derive()
                .map_err(|e| corrupt(format!("person {id}: stored history does not derive: {e}")))?;
            let pid = PersonId::parse(&id).map_err(|e| corrupt(e.message))?;
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
        let mut rows = Vec::new();
        for (cause, upto) in units(store, batch).await? {
            for household_id in self.touched(store, cause, upto).await? {
                let last: Last = tx
                    .fetch(
                        "SELECT person_id, record FROM feed_last WHERE household_id = $1",
                        &[Val::text(&household_id)],
                        &[Ty::Text, Ty::Text],
                    )
                    .await?
                    .into_iter()
                    .map(|r| {
                        (
                            r[0].as_text().unwrap_or_default().to_owned(),
                            r[1].as_text().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                let Some((records, now)) = self.emit(store, cause, upto, &household_id, &last, &mut next).await? else {
                    continue;
                };
                for (record, person_id) in records {
                    rows.push(vec![
                        Val::Int(record["position"].as_i64()),
                        Val::Int(Some(cause.position)),
                        Val::text(record["kind"].as_str().unwrap_or_default()),
                        Val::text(&household_id),
                        Val::Text(person_id),
                        Val::text(record.to_string()),
                    ]);
                }
                // What the household's records say now, for the next comparison.
                tx.execute(
                    "DELETE FROM feed_last WHERE household_id = $1",
                    &[Val::text(&household_id)],
                )
                .await?;
                let state: Vec<Vec<Val>> = now
                    .into_iter()
                    .map(|(k, v)| vec![Val::text(&household_id), Val::text(k), Val::text(v)])
                    .collect();
                tx.insert(
                    "feed_last",
                    &[
                        ("household_id", Ty::Text),
                        ("person_id", Ty::Text),
                        ("record", Ty::Text),
                    ],
                    state,
                )
                .await?;
            }
        }
        tx.insert("feed_records", &RECORD_COLS, rows).await?;
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
    async fn emit(
        &self,
        store: &Store,
        cause: &StoredEvent,
        upto: i64,
        household_id: &str,
        last: &Last,
        next: &mut i64,
    ) -> Result<Option<(Vec<(Value, Option<String>)>, Vec<(String, String)>)>, ProjectionError> {
        let Some((household, individuals)) = self.group_at(store, household_id, upto).await? else {
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
        let mut records = Vec::with_capacity(individuals.len() + 1);
        let mut record = household;
        record["position"] = json!(*next);
        record["cause_position"] = json!(cause.position);
        record["kind"] = json!("household");
        record["recorded_at"] = json!(recorded_at);
        records.push((record, None));
        *next += 1;
        for (pid, r) in &individuals {
            let before: Option<IndividualRecord> = last
                .get(pid)
                .map(|s| serde_json::from_str(s))
                .transpose()
                .map_err(corrupt)?;
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
            for (cause, unit_end) in units(store, &batch).await? {
                for household_id in self.touched(store, cause, unit_end).await? {
                    let last = state.entry(household_id.clone()).or_default();
                    let Some((records, now)) = self
                        .emit(store, cause, unit_end, &household_id, last, &mut next)
                        .await?
                    else {
                        continue;
                    };
                    *last = now.into_iter().collect();
                    for (expected, _) in records {
                        let position = expected["position"].as_i64().unwrap_or(0);
                        let stored = super::read::feed_records(&db, position - 1, 1).await?;
                        let stored: Option<Value> = stored
                            .first()
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
