//! Rows of another hash-chained log that commit in the same statement as a batch's events: a
//! write's access record rides with its event, so the write waits for one commit instead of
//! two. The store knows only rows and a guarded one-row head; the log that owns them (the
//! access log) numbers and chains them, and learns from [`Boarding::settle`] whether they
//! were written.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use sqlx::Row as _;

use super::sql::{bind_pg_rows, pg_unnest, PgQuery, Singles, Ty, Val};
use super::StoreError;

/// What one request carries for the side log (the log's owner knows its type).
#[derive(Clone)]
pub struct Rider(pub Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Rider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rider")
    }
}

/// Rows of one table of the side log.
pub struct SideInsert {
    pub table: &'static str,
    pub cols: &'static [(&'static str, Ty)],
    pub rows: Vec<Vec<Val>>,
}

/// Rows of a side log chained after its head: written only by a statement that moves the
/// head table's one row (`id = 1` of `last_id`, `last_hash`) from `expected` to `next`, and
/// not at all when the head is no longer at `expected` (another process wrote since).
pub struct SideRows {
    pub head_table: &'static str,
    pub expected: (i64, Vec<u8>),
    pub next: (i64, Vec<u8>),
    pub inserts: Vec<SideInsert>,
}

/// The parts a statement carrying side rows is made of (see [`SideRows::sql`]); empty
/// without side rows.
#[derive(Default)]
pub(super) struct SideSql {
    /// `side_head AS (…), `: the guarded head move.
    pub head: String,
    /// `, side0 AS (…), side1 AS (…)`: the inserts, made only where the head moved.
    pub inserts: String,
    /// ` AND (SELECT count(*) FROM side0) = n …`: every row went in.
    pub checks: String,
}

impl SideRows {
    /// The statement parts, parameters from `$first` on (bound by [`Self::bind`]); the head
    /// moves only if `gate` (an SQL condition) holds.
    pub(super) fn sql(&self, first: usize, gate: &str) -> SideSql {
        let head = format!(
            "side_head AS (\
               UPDATE {} SET last_id = ${}, last_hash = ${} \
               WHERE id = 1 AND last_id = ${} AND last_hash = ${} AND {gate} RETURNING 1), ",
            self.head_table,
            first,
            first + 1,
            first + 2,
            first + 3
        );
        let (mut inserts, mut checks) = (String::new(), String::new());
        let mut param = first + 4;
        for (k, insert) in self.inserts.iter().enumerate() {
            let names = insert.cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
            inserts += &format!(
                ", side{k} AS (INSERT INTO {} ({names}) {}, side_head RETURNING 1)",
                insert.table,
                pg_unnest(insert.cols, param)
            );
            checks += &format!(" AND (SELECT count(*) FROM side{k}) = {}", insert.rows.len());
            param += insert.cols.len();
        }
        SideSql { head, inserts, checks }
    }

    /// Binds the parameters of [`Self::sql`].
    pub(super) fn bind<'q>(&self, q: PgQuery<'q>) -> PgQuery<'q> {
        let mut q = q
            .bind(self.next.0)
            .bind(self.next.1.clone())
            .bind(self.expected.0)
            .bind(self.expected.1.clone());
        for insert in &self.inserts {
            q = bind_pg_rows(q, insert.cols, insert.rows.clone());
        }
        q
    }

    /// Writes the rows by themselves in one autocommit statement. `Ok(false)`: the head had
    /// moved, nothing was written.
    pub async fn write(&self, pool: &Singles) -> Result<bool, StoreError> {
        let SideSql { head, inserts, .. } = self.sql(1, "true");
        let sql = format!(
            "WITH {}{inserts} SELECT count(*) FROM side_head",
            head.trim_end_matches(", ")
        );
        let mut lease = pool.lease().await?;
        let row = self.bind(sqlx::query(&sql)).fetch_one(lease.conn()).await;
        let moved: i64 = lease.settle(row)?.try_get(0)?;
        Ok(moved == 1)
    }
}

/// A batch's riders numbered and chained after the side log's head as this process knows it.
/// The owner holds that head until the boarding is settled, so nothing else chains from it
/// meanwhile; a boarding dropped unsettled counts as not written.
pub struct Boarding {
    pub rows: SideRows,
    settle: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Boarding {
    pub fn new(rows: SideRows, settle: impl FnOnce(bool) + Send + 'static) -> Self {
        Self {
            rows,
            settle: Some(Box::new(settle)),
        }
    }

    /// Tells the owner whether the rows committed.
    pub fn settle(mut self, written: bool) {
        if let Some(f) = self.settle.take() {
            f(written);
        }
    }
}

impl Drop for Boarding {
    fn drop(&mut self) {
        if let Some(f) = self.settle.take() {
            f(false);
        }
    }
}

/// The owner of a side log, as the writer sees it.
#[async_trait::async_trait]
pub trait SideLog: Send + Sync {
    /// Numbers and chains one batch's riders, in order. None: this process does not know the
    /// side log's head now (the riders are then written by their owner's own path).
    async fn board(&self, riders: Vec<Rider>) -> Option<Boarding>;
}
