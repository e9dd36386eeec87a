//! What a cause emits: each touched household's group as the log stands after the cause,
//! compared with what the household's records last said, numbered at the feed's next positions.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::slice::{prefix, Folds, Slice, Unit};
use super::{Feed, Last};
use crate::domain::feed::{group, Change, HouseholdRecord, IndividualRecord, Member};
use crate::domain::PersonId;
use crate::projections::ProjectionError;
use crate::store::format_instant;

/// A household's group: the household record and (person id, record) in group order.
type Group = (HouseholdRecord, Vec<(String, IndividualRecord)>);

/// One issued feed record, as stored.
pub(super) struct Issued {
    pub(super) position: i64,
    pub(super) cause_position: i64,
    pub(super) kind: &'static str,
    pub(super) household_id: String,
    pub(super) person_id: Option<String>,
    /// The record's JSON: its fields, then position, cause_position, kind, (change,)
    /// recorded_at.
    pub(super) text: String,
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
                return Err(ProjectionError::corrupt(format!(
                    "person {id}: stored history does not derive: {e}"
                )));
            }
        }
        let mut folded = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((_, person, Ok(derived))) = folds.persons.get(id.as_str()) {
                if !prefix(slice.persons.get(id), upto).is_empty() {
                    let pid = PersonId::parse(id).map_err(|e| ProjectionError::corrupt(e.message))?;
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
    pub(super) fn generate(
        &self,
        units: &[Unit],
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

impl Feed {
    /// The group a cause makes for one household, numbered from `next`, with the household's
    /// new state; None when it has no card or nothing changed against `last`.
    fn emit(
        &self,
        slice: &Slice,
        folds: &mut Folds,
        unit: &Unit,
        household_id: &str,
        last: &Last,
        next: &mut i64,
    ) -> Result<Option<(Vec<Issued>, Last)>, ProjectionError> {
        let Some((household, individuals)) = self.group_at(slice, folds, household_id, unit.upto)? else {
            return Ok(None);
        };
        let mut now: Vec<(String, String)> = Vec::with_capacity(individuals.len() + 1);
        now.push((
            String::new(),
            serde_json::to_string(&household).map_err(ProjectionError::corrupt)?,
        ));
        for (pid, r) in &individuals {
            now.push((pid.clone(), serde_json::to_string(r).map_err(ProjectionError::corrupt)?));
        }
        if now.len() == last.len() && now.iter().all(|(k, v)| last.get(k) == Some(v)) {
            return Ok(None);
        }
        let before = |pid: &str| -> Result<Option<IndividualRecord>, ProjectionError> {
            last.get(pid)
                .map(|s| serde_json::from_str(s))
                .transpose()
                .map_err(ProjectionError::corrupt)
        };
        let recorded_at = json!(format_instant(&unit.recorded_at));
        let mut records = Vec::with_capacity(individuals.len() + 2);
        let mut issue = |kind: &'static str, person_id: Option<String>, json: String, change: Option<Change>| {
            let mut fields = vec![
                ("position", json!(*next)),
                ("cause_position", json!(unit.position)),
                ("kind", json!(kind)),
            ];
            if let Some(c) = change {
                fields.push(("change", json!(c)));
            }
            fields.push(("recorded_at", recorded_at.clone()));
            records.push(Issued {
                position: *next,
                cause_position: unit.position,
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
                None => serde_json::to_string(&r).map_err(ProjectionError::corrupt)?,
            };
            issue("individual", Some(pid), json, Some(change));
        }
        Ok(Some((records, now.into_iter().collect())))
    }
}
