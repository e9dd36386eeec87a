//! SQLite side of the event log (the embedded default).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, SqlitePool};

use super::{
    commit_instant, corrupt, format_instant, plan, AppendRequest, IdempotencyRecord, Outcome, RawEvent, StoreError,
    StoredEvent, VaultEntry,
};

type VaultRow = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);

const SELECT_EVENT: &str =
    "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at FROM events";

fn parse_instant(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(corrupt)
}

fn raw_event(row: SqliteRow) -> Result<RawEvent, StoreError> {
    let recorded_at: String = row.try_get(8)?;
    Ok(RawEvent {
        position: row.try_get(0)?,
        aggregate_type: row.try_get(1)?,
        aggregate_id: row.try_get(2)?,
        sequence: row.try_get(3)?,
        event_type: row.try_get(4)?,
        event_version: row.try_get(5)?,
        payload: row.try_get(6)?,
        metadata: row.try_get(7)?,
        recorded_at: parse_instant(&recorded_at)?,
    })
}

fn event(row: SqliteRow) -> Result<StoredEvent, StoreError> {
    raw_event(row)?.parse()
}

pub(super) async fn append(pool: &SqlitePool, requests: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
    // IMMEDIATE takes the write lock now, so the reads below are authoritative.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (last_position, last_recorded_at): (i64, String) =
        sqlx::query_as("SELECT last_position, last_recorded_at FROM log_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
    let recorded_at = commit_instant(parse_instant(&last_recorded_at)?);
    let stamp = format_instant(&recorded_at);

    let mut heads = HashMap::new();
    for (t, i, _) in requests.iter().flat_map(|r| r.streams()) {
        let key = (t.to_owned(), i.to_owned());
        if heads.contains_key(&key) {
            continue;
        }
        let head: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2")
                .bind(t)
                .bind(i)
                .fetch_one(&mut *tx)
                .await?;
        heads.insert(key, head.unwrap_or(0));
    }
    let mut used = HashMap::new();
    for claim in requests.iter().filter_map(|r| r.idempotency.as_ref()) {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT fingerprint, response FROM idempotency_keys WHERE key = ?1")
                .bind(&claim.key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((fingerprint, response)) = row {
            used.insert(
                claim.key.clone(),
                IdempotencyRecord {
                    fingerprint,
                    response: serde_json::from_str(&response).map_err(corrupt)?,
                },
            );
        }
    }

    let plan = plan(requests, heads, used, last_position, recorded_at)?;
    for r in &plan.rows {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&r.aggregate_type)
        .bind(&r.aggregate_id)
        .bind(r.sequence)
        .bind(&r.event_type)
        .bind(&r.event_version)
        .bind(&r.payload)
        .bind(&r.metadata)
        .bind(r.position)
        .bind(&stamp)
        .execute(&mut *tx)
        .await?;
    }
    for (v, position) in &plan.vault {
        sqlx::query(
            "INSERT INTO my_number_vault (commitment, person_id, salt, nonce, ciphertext, position, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (commitment) DO NOTHING",
        )
        .bind(&v.commitment)
        .bind(&v.person_id)
        .bind(&v.salt)
        .bind(&v.nonce)
        .bind(&v.ciphertext)
        .bind(position)
        .bind(&stamp)
        .execute(&mut *tx)
        .await?;
    }
    for (claim, appended) in &plan.keys {
        sqlx::query("INSERT INTO idempotency_keys (key, fingerprint, response, position, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(&claim.key)
            .bind(&claim.fingerprint)
            .bind(serde_json::to_string(appended).map_err(corrupt)?)
            .bind(appended.last_position)
            .bind(&stamp)
            .execute(&mut *tx)
            .await?;
    }
    if plan.last_position != last_position {
        sqlx::query("UPDATE log_head SET last_position = ?1, last_recorded_at = ?2 WHERE id = 1")
            .bind(plan.last_position)
            .bind(&stamp)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(plan.outcomes)
}

pub(super) async fn load_stream(
    pool: &SqlitePool,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!("{SELECT_EVENT} WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND (?3 IS NULL OR recorded_at <= ?3) ORDER BY sequence");
    sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(as_of.map(|t| format_instant(&t)))
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(event)
        .collect()
}

pub(super) async fn load_streams(
    pool: &SqlitePool,
    aggregate_type: &str,
    ids: &[String],
    before: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    // json_each keeps the statement one parameter wide whatever the number of ids.
    let sql = format!(
        "{SELECT_EVENT} WHERE aggregate_type = ?1 AND aggregate_id IN (SELECT value FROM json_each(?2)) \
         AND position < ?3 ORDER BY aggregate_id, sequence"
    );
    let ids = serde_json::to_string(ids).map_err(corrupt)?;
    sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(ids)
        .bind(before)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(event)
        .collect()
}

pub(super) async fn position_at(pool: &SqlitePool, at: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events WHERE recorded_at <= ?1")
            .bind(at)
            .fetch_one(pool)
            .await?,
    )
}

pub(super) async fn read_log_raw(pool: &SqlitePool, after: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
    let sql = format!("{SELECT_EVENT} WHERE position > ?1 ORDER BY position LIMIT ?2");
    sqlx::query(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(raw_event)
        .collect()
}

pub(super) async fn household_person_ids(
    pool: &SqlitePool,
    household_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let ids = serde_json::to_string(household_ids).map_err(corrupt)?;
    Ok(sqlx::query_as(
        "SELECT DISTINCT coalesce(json_extract(payload, '$.household_id'), json_extract(payload, '$.replacement.household_id')) AS h, \
                aggregate_id FROM events WHERE aggregate_type = 'person' \
         AND coalesce(json_extract(payload, '$.household_id'), json_extract(payload, '$.replacement.household_id')) \
             IN (SELECT value FROM json_each(?1)) ORDER BY 1, 2",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn age_out_candidates(pool: &SqlitePool, born_on_or_before: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT e.aggregate_id FROM events e \
         WHERE e.aggregate_type = 'person' AND e.event_type IN ('registered', 'corrected') \
           AND coalesce(json_extract(e.payload, '$.birth_date'), json_extract(e.payload, '$.replacement.birth_date')) <= ?1 \
           AND NOT EXISTS (SELECT 1 FROM events x WHERE x.aggregate_type = 'person' \
                           AND x.aggregate_id = e.aggregate_id AND x.event_type = 'late_elderly_age_reached') \
         ORDER BY 1",
    )
    .bind(born_on_or_before)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn card_holder(pool: &SqlitePool, symbol: &str, number: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE event_type = 'card_number_assigned' \
         AND json_extract(payload, '$.symbol') = ?1 AND json_extract(payload, '$.number') = ?2",
    )
    .bind(symbol)
    .bind(number)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn max_card_number(pool: &SqlitePool, symbol: &str, width: i64) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT json_extract(payload, '$.number') FROM events WHERE event_type = 'card_number_assigned' \
         AND json_extract(payload, '$.symbol') = ?1 AND length(json_extract(payload, '$.number')) = ?2 \
         ORDER BY json_extract(payload, '$.number') DESC LIMIT 1",
    )
    .bind(symbol)
    .bind(width)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn idempotency(pool: &SqlitePool, key: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT fingerprint, response FROM idempotency_keys WHERE key = ?1")
            .bind(key)
            .fetch_optional(pool)
            .await?,
    )
}

pub(super) async fn vault_entry(pool: &SqlitePool, commitment: &str) -> Result<Option<VaultEntry>, StoreError> {
    let row: Option<VaultRow> = sqlx::query_as(
        "SELECT commitment, person_id, salt, nonce, ciphertext FROM my_number_vault WHERE commitment = ?1",
    )
    .bind(commitment)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(commitment, person_id, salt, nonce, ciphertext)| VaultEntry {
        commitment,
        person_id,
        salt,
        nonce,
        ciphertext,
    }))
}
