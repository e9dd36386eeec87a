//! PostgreSQL's fast path for a batch of access records: one autocommit statement instead of
//! a seven-round-trip transaction. The recorder chains the records from the head it last
//! wrote; the statement moves the head only if it is still there (another process may have
//! written since), and inserts the records only if it moved. Otherwise nothing is written and
//! the recorder takes its careful path, which reads the head under its lock.

use sqlx::{PgPool, Row as _};

use super::record::Head;
use crate::store::sql::{bind_pg_rows, pg_unnest, Ty, Val};
use crate::store::StoreError;

/// Writes rows of records chained from `expected` to `next` in one statement, which commits
/// before it returns. `Ok(false)`: the head had moved, nothing was written.
pub async fn write(
    pool: &PgPool,
    (expected, next): (Head, Head),
    (record_cols, records): (&[(&str, Ty)], Vec<Vec<Val>>),
    (person_cols, persons): (&[(&str, Ty)], Vec<Vec<Val>>),
) -> Result<bool, StoreError> {
    let names = |cols: &[(&str, Ty)]| cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "WITH head AS (\
           UPDATE access_head SET last_id = $1, last_hash = $2 \
           WHERE id = 1 AND last_id = $3 AND last_hash = $4 RETURNING 1), \
         records AS (INSERT INTO access_records ({}) {}, head RETURNING 1), \
         persons AS (INSERT INTO access_record_persons ({}) {}, head RETURNING 1) \
         SELECT count(*) FROM head",
        names(record_cols),
        pg_unnest(record_cols, 5),
        names(person_cols),
        pg_unnest(person_cols, 5 + record_cols.len()),
    );
    let q = sqlx::query(&sql)
        .bind(next.last_id)
        .bind(next.last_hash.to_vec())
        .bind(expected.last_id)
        .bind(expected.last_hash.to_vec());
    let q = bind_pg_rows(q, record_cols, records);
    let q = bind_pg_rows(q, person_cols, persons);
    let moved: i64 = q.fetch_one(pool).await?.try_get(0)?;
    Ok(moved == 1)
}

/// Whether a failure is PostgreSQL refusing a write because the database was made read-only
/// (SQLSTATE 25006): the careful path's explicit `BEGIN READ WRITE` still records.
pub fn read_only(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => d.code().as_deref() == Some("25006"),
        _ => false,
    }
}
