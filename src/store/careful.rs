//! Writing a batch: PostgreSQL takes its one-statement fast path first ([`super::postgres`]);
//! the careful path here, one transaction written once for both backends, serves SQLite and
//! the PostgreSQL batches the fast path cannot take. Either way positions follow commit order
//! without gaps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::append::{plan, AppendRequest, Appended, Outcome, Rejection, EVENT_COLS};

/// The vault's columns, for bulk inserts.
const VAULT_COLS: [(&str, Ty); 7] = [
    ("commitment", Ty::Text),
    ("person_id", Ty::Text),
    ("nonce", Ty::Bytes),
    ("sealed", Ty::Bytes),
    ("blind_index", Ty::Text),
    ("position", Ty::Int),
    ("created_at", Ty::Instant),
];

/// The Idempotency-Key records' columns.
const KEY_COLS: [(&str, Ty); 5] = [
    ("key", Ty::Text),
    ("fingerprint", Ty::Text),
    ("response", Ty::Json),
    ("position", Ty::Int),
    ("created_at", Ty::Instant),
];
use super::recent::Recent;
use super::side::SideLog;
use super::sql::{Db, Dialect, Tx, Ty, Val};
use super::{commit_instant, corrupt, idempotency_record, StoreError, StoredEvent};

pub(super) async fn append_batch(
    db: &Db,
    requests: &[AppendRequest],
    side: Option<&dyn SideLog>,
    recent: &Arc<Recent>,
) -> Result<Vec<Outcome>, StoreError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    if let Db::Postgres(pg) = db {
        match super::postgres::fast_append(&pg.batches, requests, side, recent).await {
            Ok(Some(outcomes)) => return Ok(outcomes),
            // A stale expectation, a used Idempotency-Key or a uniqueness rule: nothing was
            // written; decide request by request on the careful path.
            Ok(None) => {}
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {}
            Err(other) => return Err(other),
        }
    }
    match careful(db, requests, false, recent).await {
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            let constraint = e.constraint().unwrap_or("unique").to_owned();
            if requests.len() == 1 {
                return Ok(vec![Err(Rejection::Unique(constraint))]);
            }
            // One request broke a uniqueness rule: find it by appending one at a time.
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                out.extend(Box::pin(append_batch(db, std::slice::from_ref(r), None, recent)).await?);
            }
            Ok(out)
        }
        other => other,
    }
}

pub(super) async fn append_atomic(
    db: &Db,
    requests: &[AppendRequest],
    recent: &Arc<Recent>,
) -> Result<Result<Vec<Appended>, (Option<usize>, Rejection)>, StoreError> {
    if requests.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    // The fast path is all or nothing already: one statement that writes everything or nothing.
    if let Db::Postgres(pg) = db {
        match super::postgres::fast_append(&pg.batches, requests, None, recent).await {
            Ok(Some(outcomes)) if outcomes.iter().all(Result::is_ok) => {
                return Ok(Ok(outcomes.into_iter().filter_map(Result::ok).collect()));
            }
            // Nothing was written: the careful path finds which request is refused.
            Ok(_) => {}
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {}
            Err(other) => return Err(other),
        }
    }
    let outcomes = match careful(db, requests, true, recent).await {
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            let constraint = e.constraint().unwrap_or("unique").to_owned();
            return Ok(Err((None, Rejection::Unique(constraint))));
        }
        other => other?,
    };
    let mut appended = Vec::with_capacity(outcomes.len());
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(a) => appended.push(a),
            Err(r) => return Ok(Err((Some(i), r))),
        }
    }
    Ok(Ok(appended))
}

/// One transaction on either backend: lock the head, read the heads of the streams concerned
/// and the keys claimed, plan, write. With `atomic`, a single rejection rolls everything back.
/// The transaction runs to its end in a task of its own, so a caller that goes away never
/// leaves a connection inside a transaction. What it committed goes to `recent`.
async fn careful(
    db: &Db,
    requests: &[AppendRequest],
    atomic: bool,
    recent: &Arc<Recent>,
) -> Result<Vec<Outcome>, StoreError> {
    let db = db.clone();
    let requests = requests.to_vec();
    let recent = recent.clone();
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let (outcomes, events) = careful_in(&mut tx, &requests, atomic).await?;
        if atomic && outcomes.iter().any(|o| o.is_err()) {
            // Dropped uncommitted: nothing of the batch is written.
            return Ok(outcomes);
        }
        tx.commit().await?;
        recent.committed(events);
        Ok(outcomes)
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

/// The outcomes, and the events written as the log will hold them once committed.
async fn careful_in(
    tx: &mut Tx,
    requests: &[AppendRequest],
    atomic: bool,
) -> Result<(Vec<Outcome>, Vec<StoredEvent>), StoreError> {
    let d = tx.dialect();
    // The log head lock: held until commit, it orders every writer.
    let head = tx
        .fetch(
            &format!(
                "SELECT last_position, last_recorded_at FROM log_head WHERE id = true{}",
                d.for_update()
            ),
            &[],
            &[Ty::Int, Ty::Instant],
        )
        .await?;
    let head = head.first().ok_or_else(|| corrupt("log_head row missing"))?;
    let last_position = head[0].as_int().unwrap_or(0);
    let recorded_at = commit_instant(head[1].as_instant().unwrap_or(DateTime::<Utc>::UNIX_EPOCH));

    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, i, _) in requests.iter().flat_map(|r| r.streams()) {
        by_type.entry(t).or_default().push(i);
    }
    let mut heads: HashMap<(String, String), i64> = HashMap::new();
    for (t, ids) in by_type {
        let sql = match d {
            // A backward index lookup per stream, whatever the statistics say (as
            // `super::streams_before_sql`).
            Dialect::Postgres => "SELECT h.id, h.last FROM (SELECT ids.id, \
                 (SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = ids.id) AS last \
                 FROM (SELECT DISTINCT json_array_elements_text($2::json) AS id) AS ids) AS h \
                 WHERE h.last IS NOT NULL"
                .to_owned(),
            Dialect::Sqlite => format!(
                "SELECT aggregate_id, max(sequence) FROM events WHERE aggregate_type = $1 AND {} GROUP BY aggregate_id",
                d.in_json_array("aggregate_id", 2)
            ),
        };
        for r in tx
            .fetch(
                &sql,
                &[Val::text(t), super::sql::json_array(&ids)],
                &[Ty::Text, Ty::Int],
            )
            .await?
        {
            heads.insert(
                (t.to_owned(), r[0].as_text().unwrap_or_default().to_owned()),
                r[1].as_int().unwrap_or(0),
            );
        }
    }

    let claimed: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.idempotency.as_ref().map(|c| c.key.as_str()))
        .collect();
    let mut used = HashMap::new();
    if !claimed.is_empty() {
        let sql = format!(
            "SELECT key, fingerprint, {} FROM idempotency_keys WHERE {}",
            d.json_text("response"),
            d.in_json_array("key", 1)
        );
        for r in tx
            .fetch(
                &sql,
                &[super::sql::json_array(&claimed)],
                &[Ty::Text, Ty::Text, Ty::Json],
            )
            .await?
        {
            let key = r[0].as_text().unwrap_or_default().to_owned();
            let rec = idempotency_record(r[1].as_text().unwrap_or_default(), r[2].as_text().unwrap_or_default())?;
            used.insert(key, rec);
        }
    }

    let plan = plan(requests, heads, used, last_position, recorded_at)?;
    if atomic && plan.outcomes.iter().any(|o| o.is_err()) {
        return Ok((plan.outcomes, Vec::new()));
    }
    let at = Val::Instant(Some(recorded_at));
    let events: Vec<StoredEvent> = plan.rows.into_iter().map(|r| r.stored(0, recorded_at)).collect();
    let rows: Vec<Vec<Val>> = events
        .iter()
        .map(|e| {
            vec![
                Val::text(&e.aggregate_type),
                Val::text(&e.aggregate_id),
                Val::int(e.sequence),
                Val::text(&e.event_type),
                Val::text(&e.event_version),
                Val::Json(Some(e.payload.as_str().to_owned())),
                Val::Json(Some(e.metadata.as_str().to_owned())),
                Val::int(e.position),
                at.clone(),
            ]
        })
        .collect();
    tx.insert("events", &EVENT_COLS, rows).await?;
    let vault: Vec<Vec<Val>> = plan
        .vault
        .into_iter()
        .map(|(v, position)| {
            vec![
                Val::Text(Some(v.commitment)),
                Val::Text(Some(v.person_id)),
                Val::Bytes(Some(v.nonce)),
                Val::Bytes(Some(v.sealed)),
                Val::Text(Some(v.blind_index)),
                Val::int(position),
                at.clone(),
            ]
        })
        .collect();
    tx.insert_with("my_numbers", &VAULT_COLS, vault, "ON CONFLICT (commitment) DO NOTHING")
        .await?;
    let keys: Vec<Vec<Val>> = plan
        .keys
        .into_iter()
        .map(|(claim, first, last)| {
            let response = serde_json::json!({"first_position": first, "last_position": last}).to_string();
            vec![
                Val::Text(Some(claim.key)),
                Val::Text(Some(claim.fingerprint)),
                Val::Json(Some(response)),
                Val::int(last),
                at.clone(),
            ]
        })
        .collect();
    tx.insert("idempotency_keys", &KEY_COLS, keys).await?;
    for ((symbol, width), number) in &plan.cards {
        tx.execute(
            "INSERT INTO card_sequence (symbol, width, last) VALUES ($1, $2, $3) \
             ON CONFLICT (symbol, width) DO UPDATE SET last = CASE WHEN excluded.last > card_sequence.last \
             THEN excluded.last ELSE card_sequence.last END",
            &[Val::text(symbol), Val::int(*width), Val::int(*number)],
        )
        .await?;
    }
    if plan.last_position != last_position {
        tx.execute(
            "UPDATE log_head SET last_position = $1, last_recorded_at = $2 WHERE id = true",
            &[Val::int(plan.last_position), at],
        )
        .await?;
    }
    Ok((plan.outcomes, events))
}
