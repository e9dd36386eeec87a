//! A write's access record rides with its event: on PostgreSQL the event writer commits it in
//! the event's own statement (one commit instead of two), chained from the head this process
//! knows, which the recorder and the writer share. Where it cannot ride (SQLite, a head moved
//! by another process, a batch the fast path refuses), the record is written by the recorder
//! as every other record is, after the response is decided.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::record::Head;
use super::recorder::{chained, restricted_among};
use super::AccessRecord;
use crate::store::side::{Boarding, Rider, SideLog};
use crate::store::sql::Db;
use crate::store::StoreError;

/// The access log's head as this process last wrote it (None: not known; the recorder's
/// careful path reads it under its lock and learns it again).
#[derive(Debug, Default)]
pub struct Chain {
    pub(super) head: Arc<Mutex<Option<Head>>>,
}

#[async_trait::async_trait]
impl SideLog for Chain {
    async fn board(&self, riders: Vec<Rider>) -> Option<Boarding> {
        let mut records: Vec<AccessRecord> = riders
            .iter()
            .filter_map(|r| r.0.downcast_ref::<AccessRecord>().cloned())
            .collect();
        if records.len() != riders.len() {
            return None;
        }
        let mut known = self.head.clone().lock_owned().await;
        let (next, rows) = chained((*known)?, &mut records);
        // The head is held until settled: the recorder's next batch chains after these.
        Some(Boarding::new(rows, move |written| *known = written.then_some(next)))
    }
}

/// A write's record, completed before its append: the persons its consequences add, the
/// outcome it will answer with (`201`), and whether any of its persons is under a disclosure
/// restriction. `own`: the stream's person and its flag from its own history (this write
/// included); the read models answer for every other person, as for any record.
pub async fn rider(
    db: &Db,
    mut record: AccessRecord,
    consequences: impl IntoIterator<Item = String>,
    own: Option<(String, bool)>,
) -> Result<Rider, StoreError> {
    let mut persons = std::mem::take(&mut record.persons);
    persons.extend(consequences);
    record.set_persons(persons);
    let (own_id, own_restricted) = own.unzip();
    let others: Vec<String> = record
        .persons
        .iter()
        .filter(|p| own_id.as_ref() != Some(*p))
        .cloned()
        .collect();
    record.restricted = own_restricted == Some(true) || !restricted_among(db, others).await?.is_empty();
    record.outcome = 201;
    Ok(Rider(Arc::new(record)))
}
