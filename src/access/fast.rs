//! PostgreSQL's fast path for a batch of access records: one autocommit statement instead of
//! a seven-round-trip transaction. The recorder chains the records from the head it last
//! wrote; the statement moves the head only if it is still there (another process may have
//! written since), and inserts the records only if it moved. Otherwise nothing is written and
//! the recorder takes its careful path, which reads the head under its lock.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::AccessRecord;
use crate::audit::merkle::Hash;
use crate::store::StoreError;

/// The head of the access log as this process last wrote or read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub last_id: i64,
    pub last_hash: Hash,
}

/// Numbers and chains `records` after `head`: each record's chain hash, and the new head.
pub fn chain(head: Head, records: &mut [AccessRecord]) -> (Vec<Hash>, Head) {
    let (mut last_id, mut last_hash) = (head.last_id, head.last_hash);
    let mut hashes = Vec::with_capacity(records.len());
    for r in records.iter_mut() {
        last_id += 1;
        r.id = last_id;
        last_hash = r.chain(&last_hash);
        hashes.push(last_hash);
    }
    (hashes, Head { last_id, last_hash })
}

#[derive(Default)]
struct Columns {
    ids: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    actors: Vec<String>,
    roles: Vec<String>,
    terminals: Vec<String>,
    screens: Vec<String>,
    kinds: Vec<String>,
    persons: Vec<String>,
    outcomes: Vec<i64>,
    my_numbers: Vec<bool>,
    restricted: Vec<bool>,
    request_ids: Vec<String>,
    paths: Vec<Option<String>>,
    exports: Vec<Option<String>>,
    hashes: Vec<Vec<u8>>,
    person_ids: Vec<String>,
    person_records: Vec<i64>,
}

/// Writes records already chained from `expected` (see [`chain`]) in one statement, which
/// commits before it returns. `Ok(false)`: the head had moved, nothing was written.
pub async fn write(
    pool: &PgPool,
    expected: Head,
    records: &[AccessRecord],
    chain_hashes: &[Hash],
) -> Result<bool, StoreError> {
    let mut c = Columns::default();
    for (r, hash) in records.iter().zip(chain_hashes) {
        c.ids.push(r.id);
        c.ats.push(r.at);
        c.actors.push(r.actor.clone());
        c.roles
            .push(serde_json::to_string(&r.roles).map_err(crate::store::corrupt)?);
        c.terminals.push(r.terminal.clone());
        c.screens.push(r.screen.clone());
        c.kinds.push(r.kind.as_str().to_owned());
        c.persons
            .push(serde_json::to_string(&r.persons).map_err(crate::store::corrupt)?);
        c.outcomes.push(i64::from(r.outcome));
        c.my_numbers.push(r.my_number);
        c.restricted.push(r.restricted);
        c.request_ids.push(r.request_id.clone());
        c.paths.push(r.path.clone());
        c.exports.push(r.export.as_ref().map(|v| v.to_string()));
        c.hashes.push(hash.to_vec());
        for p in &r.persons {
            c.person_ids.push(p.clone());
            c.person_records.push(r.id);
        }
    }
    let (Some(last), Some(last_hash)) = (records.last(), chain_hashes.last()) else {
        return Ok(true);
    };
    let moved: Option<i64> = sqlx::query_scalar(
        "WITH head AS (\
           UPDATE access_head SET last_id = $1, last_hash = $2 \
           WHERE id = 1 AND last_id = $3 AND last_hash = $4 RETURNING 1), \
         records AS (\
           INSERT INTO access_records (id, at, actor, roles, terminal, screen, kind, persons, outcome, \
             my_number, restricted, request_id, path, export, chain_hash) \
           SELECT u.id, u.at, u.actor, u.roles::json, u.terminal, u.screen, u.kind, u.persons::json, u.outcome, \
             u.my_number, u.restricted, u.request_id, u.path, u.export::json, u.chain_hash \
           FROM UNNEST($5::bigint[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], \
             $11::text[], $12::text[], $13::bigint[], $14::bool[], $15::bool[], $16::text[], $17::text[], \
             $18::text[], $19::bytea[]) \
             AS u(id, at, actor, roles, terminal, screen, kind, persons, outcome, my_number, restricted, \
               request_id, path, export, chain_hash), head \
           RETURNING 1), \
         persons AS (\
           INSERT INTO access_record_persons (person_id, record_id) \
           SELECT p.person_id, p.record_id FROM UNNEST($20::text[], $21::bigint[]) AS p(person_id, record_id), head \
           RETURNING 1) \
         SELECT count(*) FROM head \
         WHERE (SELECT count(*) FROM records) = cardinality($5::bigint[]) \
           AND (SELECT count(*) FROM persons) = cardinality($20::text[])",
    )
    .bind(last.id)
    .bind(last_hash.to_vec())
    .bind(expected.last_id)
    .bind(expected.last_hash.to_vec())
    .bind(&c.ids)
    .bind(&c.ats)
    .bind(&c.actors)
    .bind(&c.roles)
    .bind(&c.terminals)
    .bind(&c.screens)
    .bind(&c.kinds)
    .bind(&c.persons)
    .bind(&c.outcomes)
    .bind(&c.my_numbers)
    .bind(&c.restricted)
    .bind(&c.request_ids)
    .bind(&c.paths)
    .bind(&c.exports)
    .bind(&c.hashes)
    .bind(&c.person_ids)
    .bind(&c.person_records)
    .fetch_optional(pool)
    .await?;
    Ok(moved == Some(1))
}

/// Whether a failure is PostgreSQL refusing a write because the database was made read-only
/// (SQLSTATE 25006): the careful path's explicit `BEGIN READ WRITE` still records.
pub fn read_only(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => d.code().as_deref() == Some("25006"),
        _ => false,
    }
}
