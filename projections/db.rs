//! The little SQL the projections need, on either backend: typed values, one transaction
//! type, bulk inserts (UNNEST on PostgreSQL, a prepared statement per row on SQLite) and
//! typed reads. Queries are written once with `$n` placeholders (SQLite gets `?n`).

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Postgres, Row as _, Sqlite, SqlitePool, Transaction};

use crate::store::{Store, StoreError};

/// A column value. Dates are ISO `YYYY-MM-DD` text on both backends (their order is the
/// dates' order); booleans are `boolean` on PostgreSQL and 0/1 on SQLite.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Bytes(Option<Vec<u8>>),
}

impl Val {
    pub fn text(s: impl Into<String>) -> Self {
        Val::Text(Some(s.into()))
    }
    pub fn opt_text<T: ToString>(s: Option<T>) -> Self {
        Val::Text(s.map(|s| s.to_string()))
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Val::Text(t) => t.as_deref(),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => *i,
            _ => None,
        }
    }
    pub fn as_bool(&self) -> bool {
        matches!(self, Val::Bool(true))
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Bytes(b) => b.as_deref(),
            _ => None,
        }
    }
}

/// Column types, for reads and for PostgreSQL's typed arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Text,
    Int,
    Bool,
    Bytes,
}

impl Ty {
    fn pg_array(self) -> &'static str {
        match self {
            Ty::Text => "text[]",
            Ty::Int => "bigint[]",
            Ty::Bool => "boolean[]",
            Ty::Bytes => "bytea[]",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite { write: SqlitePool, read: SqlitePool },
}

impl Db {
    pub fn new(store: &Store) -> Self {
        match (store.pg_pool(), store.sqlite_pools()) {
            (Some(p), _) => Db::Postgres(p.clone()),
            (None, Some((write, read))) => Db::Sqlite {
                write: write.clone(),
                read: read.clone(),
            },
            (None, None) => unreachable!("a store has one backend"),
        }
    }

    /// A write transaction. On SQLite it takes the database's write lock at once.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub async fn fetch(&self, sql: &str, args: &[Val], tys: &[Ty]) -> Result<Vec<Vec<Val>>, StoreError> {
        match self {
            Db::Postgres(p) => {
                let rows = bind_pg(sqlx::query(sql), args).fetch_all(p).await?;
                rows.iter().map(|r| read_pg(r, tys)).collect()
            }
            Db::Sqlite { read, .. } => {
                let sql = sqlite_sql(sql);
                let rows = bind_sqlite(sqlx::query(&sql), args).fetch_all(read).await?;
                rows.iter().map(|r| read_sqlite(r, tys)).collect()
            }
        }
    }

    pub async fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = tx.execute(sql, args).await?;
        tx.commit().await?;
        Ok(n)
    }
}

pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    pub async fn execute(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        Ok(match self {
            Tx::Postgres(tx) => bind_pg(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Sqlite(tx) => {
                let sql = sqlite_sql(sql);
                bind_sqlite(sqlx::query(&sql), args)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    pub async fn fetch(&mut self, sql: &str, args: &[Val], tys: &[Ty]) -> Result<Vec<Vec<Val>>, StoreError> {
        match self {
            Tx::Postgres(tx) => {
                let rows = bind_pg(sqlx::query(sql), args).fetch_all(&mut **tx).await?;
                rows.iter().map(|r| read_pg(r, tys)).collect()
            }
            Tx::Sqlite(tx) => {
                let sql = sqlite_sql(sql);
                let rows = bind_sqlite(sqlx::query(&sql), args).fetch_all(&mut **tx).await?;
                rows.iter().map(|r| read_sqlite(r, tys)).collect()
            }
        }
    }

    /// Inserts rows of `(name, type)` columns: one statement on PostgreSQL.
    pub async fn insert(&mut self, table: &str, cols: &[(&str, Ty)], rows: Vec<Vec<Val>>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let names = cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        match self {
            Tx::Postgres(tx) => {
                let arrays = cols
                    .iter()
                    .enumerate()
                    .map(|(i, (_, t))| format!("${}::{}", i + 1, t.pg_array()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("INSERT INTO {table} ({names}) SELECT * FROM UNNEST({arrays})");
                // Rows to column arrays, moving the values (no copies of the text).
                let mut texts: Vec<Vec<Option<String>>> = vec![Vec::new(); cols.len()];
                let mut ints: Vec<Vec<Option<i64>>> = vec![Vec::new(); cols.len()];
                let mut bools: Vec<Vec<bool>> = vec![Vec::new(); cols.len()];
                let mut bytes: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); cols.len()];
                for row in rows {
                    for (i, v) in row.into_iter().enumerate() {
                        match v {
                            Val::Text(t) => texts[i].push(t),
                            Val::Int(n) => ints[i].push(n),
                            Val::Bool(b) => bools[i].push(b),
                            Val::Bytes(b) => bytes[i].push(b),
                        }
                    }
                }
                let mut q = sqlx::query(&sql);
                for (i, (_, t)) in cols.iter().enumerate() {
                    q = match t {
                        Ty::Text => q.bind(std::mem::take(&mut texts[i])),
                        Ty::Int => q.bind(std::mem::take(&mut ints[i])),
                        Ty::Bool => q.bind(std::mem::take(&mut bools[i])),
                        Ty::Bytes => q.bind(std::mem::take(&mut bytes[i])),
                    };
                }
                q.execute(&mut **tx).await?;
            }
            Tx::Sqlite(tx) => {
                let marks = (1..=cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let sql = format!("INSERT INTO {table} ({names}) VALUES ({marks})");
                for r in &rows {
                    bind_sqlite(sqlx::query(&sql), r).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    /// Ends the open versions (`known_to IS NULL`) of the given keys at the given positions.
    pub async fn close_versions(&mut self, table: &str, key: &str, closes: &[(String, i64)]) -> Result<(), StoreError> {
        if closes.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Postgres(tx) => {
                let sql = format!(
                    "UPDATE {table} t SET known_to = u.p FROM UNNEST($1::text[], $2::bigint[]) AS u(k, p) \
                     WHERE t.{key} = u.k AND t.known_to IS NULL"
                );
                let (keys, positions): (Vec<String>, Vec<i64>) = closes.iter().cloned().unzip();
                sqlx::query(&sql).bind(keys).bind(positions).execute(&mut **tx).await?;
            }
            Tx::Sqlite(tx) => {
                let sql = format!("UPDATE {table} SET known_to = ?2 WHERE {key} = ?1 AND known_to IS NULL");
                for (k, p) in closes {
                    sqlx::query(&sql).bind(k).bind(p).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// `$1` → `?1`: SQLite's numbered parameters.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_pg<'q>(mut q: PgQuery<'q>, args: &'q [Val]) -> PgQuery<'q> {
    for a in args {
        q = match a {
            Val::Text(t) => q.bind(t.as_deref()),
            Val::Int(i) => q.bind(*i),
            Val::Bool(b) => q.bind(*b),
            Val::Bytes(b) => q.bind(b.as_deref()),
        };
    }
    q
}

fn bind_sqlite<'q>(mut q: SqliteQuery<'q>, args: &'q [Val]) -> SqliteQuery<'q> {
    for a in args {
        q = match a {
            Val::Text(t) => q.bind(t.as_deref()),
            Val::Int(i) => q.bind(*i),
            Val::Bool(b) => q.bind(*b),
            Val::Bytes(b) => q.bind(b.as_deref()),
        };
    }
    q
}

fn read_pg(row: &PgRow, tys: &[Ty]) -> Result<Vec<Val>, StoreError> {
    tys.iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(match t {
                Ty::Text => Val::Text(row.try_get(i)?),
                Ty::Int => Val::Int(row.try_get(i)?),
                Ty::Bool => Val::Bool(row.try_get::<Option<bool>, _>(i)?.unwrap_or(false)),
                Ty::Bytes => Val::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}

fn read_sqlite(row: &SqliteRow, tys: &[Ty]) -> Result<Vec<Val>, StoreError> {
    tys.iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(match t {
                Ty::Text => Val::Text(row.try_get(i)?),
                Ty::Int => Val::Int(row.try_get(i)?),
                Ty::Bool => Val::Bool(row.try_get::<Option<bool>, _>(i)?.unwrap_or(false)),
                Ty::Bytes => Val::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}
