//! PostgreSQL side of the event log.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Executor as _, PgConnection, PgPool, Postgres, Row as _};

use super::{
    commit_instant, plan, AppendRequest, IdempotencyRecord, Outcome, RawEvent, StoreError, StoredEvent, VaultEntry,
};

/// Rows as column arrays, for `INSERT … SELECT FROM UNNEST(…)`: one statement whatever the
/// number of rows.
struct Columns {
    types: Vec<String>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    positions: Vec<i64>,
}

impl From<Vec<super::Row>> for Columns {
    fn from(rows: Vec<super::Row>) -> Self {
        let mut c = Columns {
            types: Vec::with_capacity(rows.len()),
            ids: Vec::with_capacity(rows.len()),
            sequences: Vec::with_capacity(rows.len()),
            event_types: Vec::with_capacity(rows.len()),
            versions: Vec::with_capacity(rows.len()),
            payloads: Vec::with_capacity(rows.len()),
            metadata: Vec::with_capacity(rows.len()),
            positions: Vec::with_capacity(rows.len()),
        };
        for r in rows {
            c.types.push(r.aggregate_type);
            c.ids.push(r.aggregate_id);
            c.sequences.push(r.sequence);
            c.event_types.push(r.event_type);
            c.versions.push(r.event_version);
            c.payloads.push(r.payload);
            c.metadata.push(r.metadata);
            c.positions.push(r.position);
        }
        c
    }
}

/// Idempotency records of a batch, positions relative to the batch.
#[derive(Default)]
struct KeyColumns {
    keys: Vec<String>,
    fingerprints: Vec<String>,
    types: Vec<String>,
    ids: Vec<String>,
    first_sequences: Vec<i64>,
    last_sequences: Vec<i64>,
    first_positions: Vec<i64>,
    last_positions: Vec<i64>,
}

impl From<&Vec<(super::IdempotencyClaim, super::Appended)>> for KeyColumns {
    fn from(keys: &Vec<(super::IdempotencyClaim, super::Appended)>) -> Self {
        let mut c = KeyColumns::default();
        for (claim, a) in keys {
            c.keys.push(claim.key.clone());
            c.fingerprints.push(claim.fingerprint.clone());
            c.types.push(a.aggregate_type.clone());
            c.ids.push(a.aggregate_id.clone());
            c.first_sequences.push(a.first_sequence);
            c.last_sequences.push(a.last_sequence);
            c.first_positions.push(a.first_position);
            c.last_positions.push(a.last_position);
        }
        c
    }
}

/// Vault entries of a batch, positions relative to the batch.
#[derive(Default)]
struct VaultColumns {
    commitments: Vec<String>,
    person_ids: Vec<String>,
    salts: Vec<Vec<u8>>,
    nonces: Vec<Vec<u8>>,
    ciphertexts: Vec<Vec<u8>>,
    positions: Vec<i64>,
}

impl From<&Vec<(VaultEntry, i64)>> for VaultColumns {
    fn from(entries: &Vec<(VaultEntry, i64)>) -> Self {
        let mut c = VaultColumns::default();
        for (e, position) in entries {
            c.commitments.push(e.commitment.clone());
            c.person_ids.push(e.person_id.clone());
            c.salts.push(e.salt.clone());
            c.nonces.push(e.nonce.clone());
            c.ciphertexts.push(e.ciphertext.clone());
            c.positions.push(*position);
        }
        c
    }
}

type VaultRow = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);

const SELECT_EVENT: &str = "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
     payload::text AS payload, metadata::text AS metadata, recorded_at FROM events";

fn raw_event(row: PgRow) -> Result<RawEvent, StoreError> {
    Ok(RawEvent {
        position: row.try_get(0)?,
        aggregate_type: row.try_get(1)?,
        aggregate_id: row.try_get(2)?,
        sequence: row.try_get(3)?,
        event_type: row.try_get(4)?,
        event_version: row.try_get(5)?,
        payload: row.try_get(6)?,
        metadata: row.try_get(7)?,
        recorded_at: row.try_get(8)?,
    })
}

fn event(row: PgRow) -> Result<StoredEvent, StoreError> {
    raw_event(row)?.parse()
}

pub(super) async fn append(pool: &PgPool, requests: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
    match fast_append(pool, requests).await {
        Ok(Some(outcomes)) => return Ok(outcomes),
        // A stale expectation, a used Idempotency-Key or a uniqueness rule: nothing was
        // written; decide request by request on the careful path.
        Ok(None) => {}
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {}
        Err(other) => return Err(other),
    }
    let conn = pool.acquire().await?;
    // Run to the end even if the caller goes away: the connection must not return to the pool
    // inside a transaction. (The copy is paid only on this rare path.)
    tokio::spawn(append_owned(conn, requests.to_vec()))
        .await
        .map_err(|e| StoreError::Batch(e.to_string()))?
}

async fn append_owned(
    mut conn: PoolConnection<Postgres>,
    requests: Vec<AppendRequest>,
) -> Result<Vec<Outcome>, StoreError> {
    let result = append_in(&mut conn, &requests).await;
    if result.is_err() && conn.execute("ROLLBACK").await.is_err() {
        conn.close_on_drop();
    }
    result
}

/// The common case in one autocommit statement, so the log lock is held for one round trip and
/// the commit: the head row is locked and advanced, positions are the head plus the row's
/// ordinal, and the rows go in with their idempotency records and vault entries (a used key is a
/// primary-key violation: the careful path then answers it). A guard checks that every continued stream ends where its request
/// expects (rows only ever get added, so a stale snapshot can only make it fail, never pass
/// wrongly); when it fails nothing is updated or inserted and `None` sends the batch to the
/// careful path. A sequence taken meanwhile is a primary-key violation: the statement, head
/// update included, is undone.
async fn fast_append(pool: &PgPool, requests: &[AppendRequest]) -> Result<Option<Vec<Outcome>>, StoreError> {
    // Each stream is where its first request in the batch expects it; the plan chains later
    // requests of the same stream from there, and the guard checks only those first
    // expectations against the table.
    let mut heads: HashMap<(String, String), i64> = HashMap::new();
    let (mut gt, mut gi, mut gs) = (Vec::new(), Vec::new(), Vec::new());
    for (t, i, s) in requests.iter().flat_map(|r| r.streams()) {
        if let std::collections::hash_map::Entry::Vacant(v) = heads.entry((t.to_owned(), i.to_owned())) {
            v.insert(s);
            if s > 0 {
                gt.push(t.to_owned());
                gi.push(i.to_owned());
                gs.push(s);
            }
        }
    }
    let now = commit_instant(DateTime::<Utc>::UNIX_EPOCH);
    let plan = plan(requests, heads, HashMap::new(), 0, now)?;
    if plan.outcomes.iter().any(|o| o.is_err()) || plan.rows.is_empty() {
        return Ok(None);
    }
    let n = plan.rows.len() as i64;
    let c = Columns::from(plan.rows);
    let k = KeyColumns::from(&plan.keys);
    let v = VaultColumns::from(&plan.vault);
    let row: Option<(i64, i64)> = sqlx::query_as(
        "WITH guard AS (\
           SELECT count(*) = cardinality($10::text[]) AS ok FROM events e \
           JOIN UNNEST($10::text[], $11::text[], $12::bigint[]) AS g(t, i, s) \
             ON e.aggregate_type = g.t AND e.aggregate_id = g.i AND e.sequence = g.s), \
         head AS (\
           UPDATE log_head SET last_position = last_position + $9, last_recorded_at = greatest(last_recorded_at, $8) \
           WHERE id AND (SELECT ok FROM guard) \
           RETURNING last_position - $9 AS base, last_recorded_at AS at), \
         inserted AS (\
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, recorded_at) \
           SELECT u.t, u.i, u.s, u.et, u.ev, u.p::json, u.m::json, head.base + u.o, head.at \
           FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) \
             WITH ORDINALITY AS u(t, i, s, et, ev, p, m, o), head \
           RETURNING 1), \
         keys AS (\
           INSERT INTO idempotency_keys (key, fingerprint, response, position, created_at) \
           SELECT k.key, k.fp, json_build_object('aggregate_type', k.t, 'aggregate_id', k.i, \
             'first_sequence', k.fs, 'last_sequence', k.ls, 'first_position', head.base + k.fpos, \
             'last_position', head.base + k.lpos, \
             'recorded_at', to_char(head.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), \
             head.base + k.lpos, head.at \
           FROM UNNEST($13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[]) \
             AS k(key, fp, t, i, fs, ls, fpos, lpos), head \
           RETURNING 1), \
         vault AS (\
           INSERT INTO my_number_vault (commitment, person_id, salt, nonce, ciphertext, position, created_at) \
           SELECT v.c, v.p, v.s, v.n, v.x, head.base + v.pos, head.at \
           FROM UNNEST($21::text[], $22::text[], $23::bytea[], $24::bytea[], $25::bytea[], $26::bigint[]) \
             AS v(c, p, s, n, x, pos), head \
           RETURNING 1) \
         SELECT head.base, (extract(epoch FROM head.at) * 1000000)::bigint FROM head \
         WHERE (SELECT count(*) FROM inserted) = $9 \
           AND (SELECT count(*) FROM keys) = cardinality($13::text[]) \
           AND (SELECT count(*) FROM vault) = cardinality($21::text[])",
    )
    .bind(&c.types)
    .bind(&c.ids)
    .bind(&c.sequences)
    .bind(&c.event_types)
    .bind(&c.versions)
    .bind(&c.payloads)
    .bind(&c.metadata)
    .bind(now)
    .bind(n)
    .bind(&gt)
    .bind(&gi)
    .bind(&gs)
    .bind(&k.keys)
    .bind(&k.fingerprints)
    .bind(&k.types)
    .bind(&k.ids)
    .bind(&k.first_sequences)
    .bind(&k.last_sequences)
    .bind(&k.first_positions)
    .bind(&k.last_positions)
    .bind(&v.commitments)
    .bind(&v.person_ids)
    .bind(&v.salts)
    .bind(&v.nonces)
    .bind(&v.ciphertexts)
    .bind(&v.positions)
    .fetch_optional(pool)
    .await?;
    let Some((base, micros)) = row else { return Ok(None) };
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| super::corrupt("recorded_at"))?;
    Ok(Some(
        plan.outcomes
            .into_iter()
            .map(|o| {
                o.map(|mut a| {
                    a.first_position += base;
                    a.last_position += base;
                    a.recorded_at = at;
                    a
                })
            })
            .collect(),
    ))
}

/// One transaction; round trips are what a commit costs here, so BEGIN travels with the lock
/// and the log-head update with the insert.
async fn append_in(tx: &mut PgConnection, requests: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
    // The log head lock: held until commit, it orders every writer.
    // A query without arguments goes out as one simple-protocol message: both statements, one
    // round trip.
    let rows = tx
        .fetch_all(
            "BEGIN; SELECT last_position, (extract(epoch FROM last_recorded_at) * 1000000)::bigint \
             FROM log_head WHERE id FOR UPDATE",
        )
        .await?;
    let row = rows.first().ok_or_else(|| super::corrupt("log_head row missing"))?;
    let last_position: i64 = row.try_get(0)?;
    let last_micros: i64 = row.try_get(1)?;
    let last_recorded_at =
        DateTime::<Utc>::from_timestamp_micros(last_micros).ok_or_else(|| super::corrupt("log_head instant"))?;
    let recorded_at = commit_instant(last_recorded_at);

    let mut types = Vec::new();
    let mut ids = Vec::new();
    for (t, i, _) in requests.iter().flat_map(|r| r.streams()) {
        types.push(t.to_owned());
        ids.push(i.to_owned());
    }
    let heads: HashMap<(String, String), i64> = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT e.aggregate_type, e.aggregate_id, max(e.sequence) FROM events e \
         JOIN (SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[])) AS s(t, i) \
           ON e.aggregate_type = s.t AND e.aggregate_id = s.i \
         GROUP BY e.aggregate_type, e.aggregate_id",
    )
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(t, i, s)| ((t, i), s))
    .collect();

    let claimed: Vec<String> = requests
        .iter()
        .filter_map(|r| r.idempotency.as_ref().map(|c| c.key.clone()))
        .collect();
    let mut used = HashMap::new();
    if !claimed.is_empty() {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT key, fingerprint, response::text FROM idempotency_keys WHERE key = ANY($1)")
                .bind(&claimed)
                .fetch_all(&mut *tx)
                .await?;
        for (key, fingerprint, response) in rows {
            let response = serde_json::from_str(&response).map_err(super::corrupt)?;
            used.insert(key, IdempotencyRecord { fingerprint, response });
        }
    }

    let plan = plan(requests, heads, used, last_position, recorded_at)?;
    if !plan.rows.is_empty() {
        let c = Columns::from(plan.rows);
        sqlx::query(
            "WITH inserted AS (\
               INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, recorded_at) \
               SELECT t, i, s, et, ev, p::json, m::json, pos, $9 \
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]) \
                 AS u(t, i, s, et, ev, p, m, pos) \
               RETURNING 1) \
             UPDATE log_head SET last_position = $10, last_recorded_at = $9 WHERE id",
        )
        .bind(&c.types)
        .bind(&c.ids)
        .bind(&c.sequences)
        .bind(&c.event_types)
        .bind(&c.versions)
        .bind(&c.payloads)
        .bind(&c.metadata)
        .bind(&c.positions)
        .bind(recorded_at)
        .bind(plan.last_position)
        .execute(&mut *tx)
        .await?;
    }
    for (v, position) in &plan.vault {
        sqlx::query(
            "INSERT INTO my_number_vault (commitment, person_id, salt, nonce, ciphertext, position, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (commitment) DO NOTHING",
        )
        .bind(&v.commitment)
        .bind(&v.person_id)
        .bind(&v.salt)
        .bind(&v.nonce)
        .bind(&v.ciphertext)
        .bind(position)
        .bind(recorded_at)
        .execute(&mut *tx)
        .await?;
    }
    for (claim, appended) in &plan.keys {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, response, position, created_at) VALUES ($1, $2, $3::json, $4, $5)",
        )
        .bind(&claim.key)
        .bind(&claim.fingerprint)
        .bind(serde_json::to_string(appended).map_err(super::corrupt)?)
        .bind(appended.last_position)
        .bind(recorded_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.execute("COMMIT").await?;
    Ok(plan.outcomes)
}

pub(super) async fn load_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "{SELECT_EVENT} WHERE aggregate_type = $1 AND aggregate_id = $2 AND ($3::timestamptz IS NULL OR recorded_at <= $3) ORDER BY sequence"
    );
    sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(as_of)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(event)
        .collect()
}

pub(super) async fn load_streams(
    pool: &PgPool,
    aggregate_type: &str,
    ids: &[String],
    before: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "{SELECT_EVENT} WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND position < $3 \
         ORDER BY aggregate_id, sequence"
    );
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

pub(super) async fn position_at(pool: &PgPool, at: DateTime<Utc>) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(position), 0)::bigint FROM events WHERE recorded_at <= $1")
            .bind(at)
            .fetch_one(pool)
            .await?,
    )
}

pub(super) async fn read_log_raw(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
    let sql = format!("{SELECT_EVENT} WHERE position > $1 ORDER BY position LIMIT $2");
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
    pool: &PgPool,
    household_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT COALESCE(payload ->> 'household_id', payload -> 'replacement' ->> 'household_id') AS h, \
                aggregate_id FROM events WHERE aggregate_type = 'person' \
         AND COALESCE(payload ->> 'household_id', payload -> 'replacement' ->> 'household_id') = ANY($1) \
         ORDER BY 1, 2",
    )
    .bind(household_ids)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn age_out_candidates(pool: &PgPool, born_on_or_before: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT e.aggregate_id FROM events e \
         WHERE e.aggregate_type = 'person' AND e.event_type IN ('registered', 'corrected') \
           AND COALESCE(e.payload ->> 'birth_date', e.payload -> 'replacement' ->> 'birth_date') <= $1 \
           AND NOT EXISTS (SELECT 1 FROM events x WHERE x.aggregate_type = 'person' \
                           AND x.aggregate_id = e.aggregate_id AND x.event_type = 'late_elderly_age_reached') \
         ORDER BY 1",
    )
    .bind(born_on_or_before)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn card_holder(pool: &PgPool, symbol: &str, number: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE event_type = 'card_number_assigned' \
         AND payload ->> 'symbol' = $1 AND payload ->> 'number' = $2",
    )
    .bind(symbol)
    .bind(number)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn max_card_number(pool: &PgPool, symbol: &str, width: i64) -> Result<Option<String>, StoreError> {
    // Same width: lexical order is numeric order, and the card-number index serves it.
    Ok(sqlx::query_scalar(
        "SELECT payload ->> 'number' FROM events WHERE event_type = 'card_number_assigned' \
         AND payload ->> 'symbol' = $1 AND length(payload ->> 'number') = $2 \
         ORDER BY payload ->> 'number' DESC LIMIT 1",
    )
    .bind(symbol)
    .bind(width)
    .fetch_optional(pool)
    .await?)
}

pub(super) async fn idempotency(pool: &PgPool, key: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT fingerprint, response::text FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?,
    )
}

pub(super) async fn vault_entry(pool: &PgPool, commitment: &str) -> Result<Option<VaultEntry>, StoreError> {
    let row: Option<VaultRow> = sqlx::query_as(
        "SELECT commitment, person_id, salt, nonce, ciphertext FROM my_number_vault WHERE commitment = $1",
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
