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

mod emit;
mod slice;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::ahead::Cursor;
use super::{prepared, Prepared, Projection, ProjectionError, Verification};
use crate::store::sql::{self, Db, Tx, Ty, Val};
use crate::store::{Store, StoredEvent};
use slice::Plan;

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
fn is_consequence(e: &StoredEvent) -> Result<bool, crate::store::StoreError> {
    crate::codec::is_consequence(e)
}

#[derive(Clone)]
pub struct Feed {
    pub insurer_number: String,
}

/// `household_id` is one of `ids`, with the ids as one JSON parameter: one statement whatever
/// their number.
fn household_in(tx: &Tx, ids: &BTreeSet<String>) -> (String, Val) {
    let ids: Vec<&String> = ids.iter().collect();
    (tx.dialect().in_json_array("household_id", 1), sql::json_array(&ids))
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

    async fn prepare(&self, store: &Store, batch: &[StoredEvent]) -> Result<Prepared, ProjectionError> {
        Ok(Box::new(self.plan(store, batch).await?))
    }

    async fn apply(&self, _: &Store, tx: &mut Tx, _: &[StoredEvent], work: Prepared) -> Result<(), ProjectionError> {
        self.write(tx, prepared(work, NAME)?).await
    }
}

impl Feed {
    /// Numbers and stores the records a planned batch emits against what each household's
    /// records last said, in the batch's transaction.
    async fn write(&self, tx: &mut Tx, plan: Plan) -> Result<(), ProjectionError> {
        let Plan { units, slice } = plan;
        let head = tx
            .fetch("SELECT coalesce(max(position), 0) FROM feed_records", &[], &[Ty::Int])
            .await?;
        let mut next = head.first().and_then(|r| r[0].as_int()).unwrap_or(0) + 1;
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

/// Events per batch of a verification.
const VERIFY_BATCH: i64 = 10_000;

/// What a household's records last said: person id ('' for the household record) → JSON.
type Last = HashMap<String, String>;

impl Feed {
    /// Recomputes the feed from position 1 of the log up to the feed's checkpoint, in memory,
    /// and compares it record by record with the stored feed (which is never rewritten).
    pub async fn verify_against_log(&self, store: &Store, upto: i64) -> Result<Verification, ProjectionError> {
        let db = store.db();
        let mut state: HashMap<String, Last> = HashMap::new();
        let mut next = 1;
        let mut after = 0;
        let mut differences = Vec::new();
        let mut checked = 0u64;
        // The next batch is read and planned while this one is generated and compared. The
        // log is gapless, so a limit of `upto - after` stops exactly at `upto`.
        let me: Arc<dyn Projection> = Arc::new(self.clone());
        let mut cursor = Cursor::database_only();
        let read = |cursor: &mut Cursor, after: i64| {
            let limit = VERIFY_BATCH.min(upto - after);
            cursor.start(store, after, limit, 1, vec![(0, after, me.clone())]);
        };
        read(&mut cursor, after);
        while after < upto {
            let Some(mut batch) = cursor.take(after).await? else {
                break;
            };
            let Some(last_event) = batch.events.last().map(|e| e.position) else {
                break;
            };
            if last_event < upto {
                read(&mut cursor, last_event);
            }
            let Plan { units, slice } = match batch.take(0, after) {
                Some(work) => prepared(work, NAME)?,
                None => self.plan(store, &batch.events).await?,
            };
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

/// As [`feed_records`], each with its position (the feed tail's read).
pub async fn feed_records_at(db: &Db, after: i64, limit: i64) -> Result<Vec<(i64, String)>, crate::store::StoreError> {
    Ok(db
        .fetch(
            "SELECT position, record FROM feed_records WHERE position > $1 ORDER BY position LIMIT $2",
            &[Val::int(after), Val::int(limit)],
            &[Ty::Int, Ty::Text],
        )
        .await?
        .into_iter()
        .map(|mut r| {
            let text = r.swap_remove(1).into_text().unwrap_or_default();
            (r[0].as_int().unwrap_or(0), text)
        })
        .collect())
}

/// The highest feed position issued (0: none).
pub async fn feed_head(db: &Db) -> Result<i64, crate::store::StoreError> {
    db.fetch_int("SELECT coalesce(max(position), 0) FROM feed_records", &[])
        .await
}
