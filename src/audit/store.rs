//! The audit tables: `audit_entries` (per position: leaf hash, chain hash, completed subtrees)
//! and `audit_checkpoints`, on either backend.

use std::collections::HashMap;

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::merkle::Hash;
use crate::store::sql::{Db, Tx, Ty, Val};
use crate::store::{corrupt, StoreError};

/// One stored audit entry's hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub leaf: Hash,
    pub chain: Hash,
    /// Completed perfect subtrees, level 1 up, 32 bytes each.
    pub subtrees: Vec<u8>,
}

/// A stored checkpoint and the key that signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub signed: SignedCheckpoint,
    pub public_key: String,
}

fn hash(v: &Val, what: &str) -> Result<Hash, StoreError> {
    v.as_bytes()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| corrupt(format!("{what} is not 32 bytes")))
}

const ROW_TYS: [Ty; 4] = [Ty::Int, Ty::Bytes, Ty::Bytes, Ty::Bytes];

fn row(r: &[Val]) -> Result<(i64, Row), StoreError> {
    let position = r[0].as_int().ok_or_else(|| corrupt("audit entry without position"))?;
    Ok((
        position,
        Row {
            leaf: hash(&r[1], "leaf_hash")?,
            chain: hash(&r[2], "chain_hash")?,
            subtrees: r[3].as_bytes().unwrap_or_default().to_vec(),
        },
    ))
}

/// The position that stores subtree (level, index): the last leaf it covers.
pub fn position_of(level: u32, index: u64) -> i64 {
    ((index + 1) << level) as i64
}

/// The hash of subtree (level, index) among fetched rows.
pub fn subtree(rows: &HashMap<i64, Row>, level: u32, index: u64) -> Option<Hash> {
    let r = rows.get(&position_of(level, index))?;
    if level == 0 {
        return Some(r.leaf);
    }
    let at = (level as usize - 1) * 32;
    r.subtrees.get(at..at + 32)?.try_into().ok()
}

/// `position` is one of a JSON list of positions (one statement whatever their number; on
/// PostgreSQL through an array, so the primary key is used).
fn positions_sql(postgres: bool, wanted: &[(u32, u64)]) -> (String, Val) {
    let mut positions: Vec<i64> = wanted.iter().map(|(l, i)| position_of(*l, *i)).collect();
    positions.sort_unstable();
    positions.dedup();
    let predicate = if postgres {
        "position = ANY(ARRAY(SELECT json_array_elements_text($1::json)::bigint))"
    } else {
        "position IN (SELECT value FROM json_each($1))"
    };
    (
        format!("SELECT position, leaf_hash, chain_hash, subtrees FROM audit_entries WHERE {predicate}"),
        Val::text(serde_json::to_string(&positions).unwrap_or_default()),
    )
}

fn rows_by_position(rows: Vec<Vec<Val>>) -> Result<HashMap<i64, Row>, StoreError> {
    rows.iter().map(|r| row(r)).collect()
}

/// The rows holding the wanted subtrees, inside a transaction.
pub async fn fetch_rows(tx: &mut Tx, wanted: &[(u32, u64)]) -> Result<HashMap<i64, Row>, StoreError> {
    let (sql, list) = positions_sql(tx.is_postgres(), wanted);
    rows_by_position(tx.fetch(&sql, &[list], &ROW_TYS).await?)
}

/// The rows holding the wanted subtrees.
pub async fn read_rows(db: &Db, wanted: &[(u32, u64)]) -> Result<HashMap<i64, Row>, StoreError> {
    let (sql, list) = positions_sql(matches!(db, Db::Postgres(_)), wanted);
    rows_by_position(db.fetch(&sql, &[list], &ROW_TYS).await?)
}

/// Audit entries after `after`, in position order, at most `limit` (typed straight from the
/// rows: the verifier reads every one).
pub async fn rows_after(db: &Db, after: i64, limit: i64) -> Result<Vec<(i64, Row)>, StoreError> {
    type Raw = (i64, Vec<u8>, Vec<u8>, Vec<u8>);
    let sql = "SELECT position, leaf_hash, chain_hash, subtrees FROM audit_entries WHERE position > $1 ORDER BY position LIMIT $2";
    let rows: Vec<Raw> = match db {
        Db::Postgres(p) => sqlx::query_as(sql).bind(after).bind(limit).fetch_all(&p.pool).await?,
        Db::Sqlite { read, .. } => {
            sqlx::query_as(&sql.replace('$', "?"))
                .bind(after)
                .bind(limit)
                .fetch_all(read)
                .await?
        }
    };
    rows.into_iter()
        .map(|(position, leaf, chain, subtrees)| {
            let hash = |b: Vec<u8>, what: &str| {
                <[u8; 32]>::try_from(b)
                    .map_err(|_| corrupt(format!("{what} of audit entry {position} is not 32 bytes")))
            };
            Ok((
                position,
                Row {
                    leaf: hash(leaf, "leaf_hash")?,
                    chain: hash(chain, "chain_hash")?,
                    subtrees,
                },
            ))
        })
        .collect()
}

/// How many entries are chained (their positions are 1..=n).
pub async fn chained_size(db: &Db) -> Result<i64, StoreError> {
    scalar(db, "SELECT coalesce(max(position), 0) FROM audit_entries").await
}

/// The size of the latest checkpoint (0: none).
pub async fn latest_size(db: &Db) -> Result<i64, StoreError> {
    scalar(db, "SELECT coalesce(max(size), 0) FROM audit_checkpoints").await
}

async fn scalar(db: &Db, sql: &str) -> Result<i64, StoreError> {
    Ok(db
        .fetch(sql, &[], &[Ty::Int])
        .await?
        .first()
        .and_then(|r| r[0].as_int())
        .unwrap_or(0))
}

const CHECKPOINT_SELECT: &str =
    "SELECT size, origin, root, chain_head, timestamp, signature, public_key FROM audit_checkpoints";
const CHECKPOINT_TYS: [Ty; 7] = [Ty::Int, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Text];

fn checkpoint(r: &[Val]) -> Result<StoredCheckpoint, StoreError> {
    let text = |i: usize| r[i].as_text().unwrap_or_default().to_owned();
    let size = r[0].as_int().ok_or_else(|| corrupt("checkpoint without size"))?;
    Ok(StoredCheckpoint {
        signed: SignedCheckpoint {
            checkpoint: Checkpoint {
                origin: text(1),
                size: u64::try_from(size).map_err(corrupt)?,
                root: text(2),
                chain_head: text(3),
                timestamp: text(4),
            },
            signature: text(5),
        },
        public_key: text(6),
    })
}

/// The latest checkpoint.
pub async fn latest_checkpoint(db: &Db) -> Result<Option<StoredCheckpoint>, StoreError> {
    db.fetch(
        &format!("{CHECKPOINT_SELECT} ORDER BY size DESC LIMIT 1"),
        &[],
        &CHECKPOINT_TYS,
    )
    .await?
    .first()
    .map(|r| checkpoint(r))
    .transpose()
}

/// Checkpoints of sizes after `after`, oldest first, at most `limit`.
pub async fn checkpoints_after(db: &Db, after: i64, limit: i64) -> Result<Vec<StoredCheckpoint>, StoreError> {
    db.fetch(
        &format!("{CHECKPOINT_SELECT} WHERE size > $1 ORDER BY size LIMIT $2"),
        &[Val::Int(Some(after)), Val::Int(Some(limit))],
        &CHECKPOINT_TYS,
    )
    .await?
    .iter()
    .map(|r| checkpoint(r))
    .collect()
}
