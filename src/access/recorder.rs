//! The access log's writer: records from concurrent requests are gathered into one transaction
//! (group commit, like the event log's writer), ids and hashes assigned under the lock of the
//! head row, so that the log stays gapless and chained whichever process writes. A request is
//! answered only after its record's transaction committed.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::record::{chain_from, Head};
use super::ride::Chain;
use super::{AccessError, AccessRecord};
use crate::audit::merkle::Hash;
use crate::store::side::{SideInsert, SideLog, SideRows};
use crate::store::sql::{json_array, Db, Ty, Val};
use crate::store::StoreError;

/// Records committed together at most.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<i64, Arc<StoreError>>>;

/// Handle to the writer task; cloned freely. The task stops when every handle is gone, after
/// writing what was queued.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(AccessRecord, Reply)>,
    /// The chain head this process knows, shared with the event writer when writes' records
    /// ride with their events (PostgreSQL).
    chain: Option<Arc<Chain>>,
}

const PERSON_COLS: [(&str, Ty); 2] = [("person_id", Ty::Text), ("record_id", Ty::Int)];

const RECORD_COLS: [(&str, Ty); 15] = [
    ("id", Ty::Int),
    ("at", Ty::Instant),
    ("actor", Ty::Text),
    ("roles", Ty::Json),
    ("terminal", Ty::Text),
    ("screen", Ty::Text),
    ("kind", Ty::Text),
    ("persons", Ty::Json),
    ("outcome", Ty::Int),
    ("my_number", Ty::Bool),
    ("restricted", Ty::Bool),
    ("request_id", Ty::Text),
    ("path", Ty::Text),
    ("export", Ty::Json),
    ("chain_hash", Ty::Bytes),
];

impl Recorder {
    pub fn spawn(db: Db) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(AccessRecord, Reply)>(MAX_BATCH * 8);
        let chain = Arc::new(Chain::default());
        let known = chain.clone();
        let postgres = matches!(db, Db::Postgres(_));
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (mut records, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                // Nothing else chains from the head while this batch is written.
                let mut known = known.head.lock().await;
                let mut result = write(&db, &mut known, &mut records).await;
                // A full disk releases the storage reserve: then there is room for the records.
                if let Err(e) = &result {
                    if db.note_failure(e) {
                        result = write(&db, &mut known, &mut records).await;
                    }
                }
                drop(known);
                match result {
                    Ok(ids) => {
                        for (reply, id) in replies.into_iter().zip(ids) {
                            let _ = reply.send(Ok(id));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, records = replies.len(), "access records not written");
                        let e = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        let chain = postgres.then_some(chain);
        (Self { tx, chain }, task)
    }

    /// Whether writes' records may ride with their events.
    pub fn rides(&self) -> bool {
        self.chain.is_some()
    }

    /// The access log as a side log of the event writer: a write's record commits in its
    /// event's statement (PostgreSQL only; None where records are not written here).
    pub fn side(&self) -> Option<Arc<dyn SideLog>> {
        self.chain.clone().map(|c| c as Arc<dyn SideLog>)
    }

    /// A recorder that answers at once and writes nothing: only for the benchmark that
    /// measures what access recording costs (the product has no way to turn it off).
    #[cfg(feature = "test-hooks")]
    pub fn discarding() -> Self {
        let (tx, mut rx) = mpsc::channel::<(AccessRecord, Reply)>(MAX_BATCH);
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Ok(0));
            }
        });
        Self { tx, chain: None }
    }

    /// Writes a record durably; returns its id.
    pub async fn record(&self, record: AccessRecord) -> Result<i64, AccessError> {
        // The one free-form part of a record: refused here if its canonical JSON cannot hold it
        // (an integer beyond 2^53 − 1), rather than stopping the writer, and every request
        // after it, when the record is hashed.
        if let Some(e) = record.export.as_ref().and_then(|e| crate::audit::jcs::to_vec(e).err()) {
            return Err(AccessError::Unrecorded(format!(
                "the record's export cannot be hashed: {e}"
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((record, reply))
            .await
            .map_err(|_| AccessError::Unrecorded("the access log writer has stopped".into()))?;
        rx.await
            .map_err(|_| AccessError::Unrecorded("the access log writer has stopped".into()))?
            .map_err(|e| AccessError::Unrecorded(e.to_string()))
    }
}

/// Flags the records that name a person with a DV disclosure restriction (閲覧制限) on record,
/// for review: one query for the whole batch.
async fn mark_restricted(db: &Db, records: &mut [AccessRecord]) -> Result<(), StoreError> {
    let persons: Vec<String> = records.iter().flat_map(|r| r.persons.iter().cloned()).collect();
    let restricted = restricted_among(db, persons).await?;
    for r in records.iter_mut() {
        r.restricted = r.persons.iter().any(|p| restricted.contains(p));
    }
    Ok(())
}

/// Those of `persons` with a DV disclosure restriction in force, as the read models know it.
pub async fn restricted_among(db: &Db, mut persons: Vec<String>) -> Result<HashSet<String>, StoreError> {
    if persons.is_empty() {
        return Ok(HashSet::new());
    }
    persons.sort_unstable();
    persons.dedup();
    let restricted: HashSet<String> = db
        .fetch(
            &format!(
                "SELECT person_id FROM proj_person WHERE known_to IS NULL \
                 AND disclosure_restricted_from IS NOT NULL AND {}",
                db.dialect().in_json_array("person_id", 1)
            ),
            &[json_array(&persons)],
            &[Ty::Text],
        )
        .await?
        .into_iter()
        .filter_map(|r| r[0].as_text().map(str::to_owned))
        .collect();
    Ok(restricted)
}

/// Writes a batch: on PostgreSQL in one statement from the head this task last wrote, else
/// (first batch, another process wrote since, a read-only database, SQLite) in a transaction
/// that reads the head under its lock.
async fn write(db: &Db, known: &mut Option<Head>, records: &mut [AccessRecord]) -> Result<Vec<i64>, StoreError> {
    mark_restricted(db, records).await?;
    if let (Db::Postgres(pg), Some(head)) = (db, *known) {
        let (next, rows) = chained(head, records);
        match rows.write(&pg.batches).await {
            Ok(true) => {
                *known = Some(next);
                return Ok(records.iter().map(|r| r.id).collect());
            }
            Ok(false) => {}
            Err(e) if read_only(&e) => {}
            Err(e) => {
                *known = None;
                return Err(e);
            }
        }
    }
    *known = None;
    let head = careful(db, records).await?;
    if matches!(db, Db::Postgres(_)) {
        *known = Some(head);
    }
    Ok(records.iter().map(|r| r.id).collect())
}

/// One transaction: lock the head, number and chain the records, insert them and their
/// person index, move the head.
async fn careful(db: &Db, records: &mut [AccessRecord]) -> Result<Head, StoreError> {
    // A database made read-only by its operator stops the ledger's changes, not the record of
    // who read it: reads go on only if their records can be written.
    let mut tx = db.begin_read_write().await?;
    let head = tx
        .fetch(
            &format!(
                "SELECT last_id, last_hash FROM access_head WHERE id = 1{}",
                tx.dialect().for_update()
            ),
            &[],
            &[Ty::Int, Ty::Bytes],
        )
        .await?;
    let head = head
        .into_iter()
        .next()
        .ok_or_else(|| crate::store::corrupt("access_head has no row"))?;
    let known = Head {
        last_id: head[0].as_int().unwrap_or(0),
        last_hash: head[1]
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| crate::store::corrupt("access_head hash is not 32 bytes"))?,
    };
    let (hashes, next) = chain_from(known, records);
    let (rows, persons) = rows(records, &hashes);
    tx.insert("access_records", &RECORD_COLS, rows).await?;
    tx.insert("access_record_persons", &PERSON_COLS, persons).await?;
    tx.execute(
        "UPDATE access_head SET last_id = $1, last_hash = $2 WHERE id = 1",
        &[Val::int(next.last_id), Val::Bytes(Some(next.last_hash.to_vec()))],
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// Numbers and chains `records` after `head`: the new head, and the rows that write them
/// only if the stored head is still at `head` (one statement on PostgreSQL, whether alone or
/// with a batch of events: `store::side`).
pub(super) fn chained(head: Head, records: &mut [AccessRecord]) -> (Head, SideRows) {
    let (hashes, next) = chain_from(head, records);
    let (records, persons) = rows(records, &hashes);
    let rows = SideRows {
        head_table: "access_head",
        expected: (head.last_id, head.last_hash.to_vec()),
        next: (next.last_id, next.last_hash.to_vec()),
        inserts: vec![
            SideInsert {
                table: "access_records",
                cols: &RECORD_COLS,
                rows: records,
            },
            SideInsert {
                table: "access_record_persons",
                cols: &PERSON_COLS,
                rows: persons,
            },
        ],
    };
    (next, rows)
}

/// Whether a failure is PostgreSQL refusing a write because the database was made read-only
/// (SQLSTATE 25006): the careful path's explicit `BEGIN READ WRITE` still records.
fn read_only(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => d.code().as_deref() == Some("25006"),
        _ => false,
    }
}

/// The stored rows of chained records (`hashes`: each one's chain hash) and of their person
/// index.
fn rows(records: &[AccessRecord], hashes: &[Hash]) -> (Vec<Vec<Val>>, Vec<Vec<Val>>) {
    let mut rows = Vec::with_capacity(records.len());
    let mut persons = Vec::new();
    for (r, hash) in records.iter().zip(hashes) {
        for p in &r.persons {
            persons.push(vec![Val::text(p.clone()), Val::int(r.id)]);
        }
        rows.push(vec![
            Val::int(r.id),
            Val::Instant(Some(r.at)),
            Val::text(r.actor.clone()),
            json_array(&r.roles),
            Val::text(r.terminal.clone()),
            Val::text(r.screen.clone()),
            Val::text(r.kind.as_str()),
            json_array(&r.persons),
            Val::int(i64::from(r.outcome)),
            Val::Bool(r.my_number),
            Val::Bool(r.restricted),
            Val::text(r.request_id.clone()),
            Val::opt_text(r.path.clone()),
            Val::Json(r.export.as_ref().map(|v| v.to_string())),
            Val::Bytes(Some(hash.to_vec())),
        ]);
    }
    (rows, persons)
}
