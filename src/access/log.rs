//! Reading the access log: queries for auditors, verification of the chain, and the purge of
//! records past their five years.

use chrono::{DateTime, Months, NaiveDate, Utc};

use super::record::{AccessKind, AccessRecord};
use super::AccessError;
use crate::audit::merkle::{Hash, CHAIN_START};
use crate::clock::tokyo_midnight;
use crate::store::sql::{Db, Ty, Val};
use crate::store::{corrupt, StoreError};

const COLS: &str = "id, at, actor, roles, terminal, screen, kind, persons, outcome, my_number, restricted, request_id, path, export, chain_hash";
const TYS: [Ty; 15] = [
    Ty::Int,
    Ty::Instant,
    Ty::Text,
    Ty::Json,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Json,
    Ty::Int,
    Ty::Bool,
    Ty::Bool,
    Ty::Text,
    Ty::Text,
    Ty::Json,
    Ty::Bytes,
];

fn json_strings(v: &Val, what: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(v.as_text().unwrap_or("[]")).map_err(|e| corrupt(format!("access record {what}: {e}")))
}

/// A stored record and the chain hash stored with it.
fn record_of(r: &[Val]) -> Result<(AccessRecord, Vec<u8>), StoreError> {
    let kind = r[6].as_text().unwrap_or_default();
    let record = AccessRecord {
        id: r[0].as_int().unwrap_or(0),
        at: r[1].as_instant().ok_or_else(|| corrupt("access record without time"))?,
        actor: r[2].as_text().unwrap_or_default().to_owned(),
        roles: json_strings(&r[3], "roles")?,
        terminal: r[4].as_text().unwrap_or_default().to_owned(),
        screen: r[5].as_text().unwrap_or_default().to_owned(),
        kind: AccessKind::parse(kind).ok_or_else(|| corrupt(format!("access record kind {kind:?}")))?,
        persons: json_strings(&r[7], "persons")?,
        outcome: r[8].as_int().unwrap_or(0) as u16,
        my_number: r[9].as_bool(),
        restricted: r[10].as_bool(),
        request_id: r[11].as_text().unwrap_or_default().to_owned(),
        path: r[12].as_text().map(str::to_owned),
        export: r[13]
            .as_text()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("access record export: {e}")))?,
    };
    Ok((record, r[14].as_bytes().unwrap_or_default().to_vec()))
}

/// What an auditor asks for: `GET /v1/access-records`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub person_id: Option<String>,
    pub actor: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Records with ids above this.
    pub after: i64,
    pub limit: i64,
}

/// Records matching the filter, oldest first.
pub async fn list(db: &Db, f: &Filter) -> Result<Vec<AccessRecord>, StoreError> {
    let mut conditions = vec!["id > $1".to_owned()];
    let mut args = vec![Val::int(f.after)];
    let arg = |v: Val, args: &mut Vec<Val>| {
        args.push(v);
        args.len()
    };
    if let Some(p) = &f.person_id {
        let n = arg(Val::text(p.clone()), &mut args);
        conditions.push(format!(
            "id IN (SELECT record_id FROM access_record_persons WHERE person_id = ${n})"
        ));
    }
    if let Some(a) = &f.actor {
        let n = arg(Val::text(a.clone()), &mut args);
        conditions.push(format!("actor = ${n}"));
    }
    if let Some(t) = f.from {
        let n = arg(Val::Instant(Some(t)), &mut args);
        conditions.push(format!("at >= ${n}"));
    }
    if let Some(t) = f.to {
        let n = arg(Val::Instant(Some(t)), &mut args);
        conditions.push(format!("at < ${n}"));
    }
    let n = arg(Val::int(f.limit), &mut args);
    let select = select_cols(db);
    let rows = db
        .fetch(
            &format!(
                "SELECT {select} FROM access_records WHERE {} ORDER BY id LIMIT ${n}",
                conditions.join(" AND ")
            ),
            &args,
            &TYS,
        )
        .await?;
    rows.iter().map(|r| record_of(r).map(|(rec, _)| rec)).collect()
}

/// The latest record of a kind (the status page's last export).
pub async fn last_of_kind(db: &Db, kind: super::AccessKind) -> Result<Option<AccessRecord>, StoreError> {
    let select = select_cols(db);
    let rows = db
        .fetch(
            &format!("SELECT {select} FROM access_records WHERE kind = $1 ORDER BY id DESC LIMIT 1"),
            &[Val::text(kind.as_str())],
            &TYS,
        )
        .await?;
    rows.first().map(|r| record_of(r).map(|(rec, _)| rec)).transpose()
}

fn select_cols(db: &Db) -> String {
    let d = db.dialect();
    COLS.replace("roles", &d.json_text("roles"))
        .replace("persons", &d.json_text("persons"))
        .replace("export", &d.json_text("export"))
}

/// The outcome of `access verify`.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: i64,
    /// The last record's id (0 when the log is empty).
    pub last_id: i64,
    /// Lowercase hex chain hash after the last record.
    pub head: String,
    /// Where the remaining log starts after purges (0: never purged).
    pub purged_through: i64,
}

/// The first place where the access log does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("access record {id}: {reason}")]
    Broken { id: i64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PAGE: i64 = 5000;

/// Recomputes the chain from the latest purge marker (or the start) through the head:
/// gapless ids, every record's hash, the person index, and the head row.
pub async fn verify(db: &Db) -> Result<Verified, VerifyError> {
    let marker = db
        .fetch(
            "SELECT through_id, through_hash FROM access_purges ORDER BY through_id DESC LIMIT 1",
            &[],
            &[Ty::Int, Ty::Bytes],
        )
        .await?;
    let (mut last_id, mut hash): (i64, Hash) = match marker.into_iter().next() {
        Some(m) => (
            m[0].as_int().unwrap_or(0),
            m[1].as_bytes()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("purge marker hash is not 32 bytes"))?,
        ),
        None => (0, CHAIN_START),
    };
    let purged_through = last_id;
    let broken = |id: i64, reason: &str| VerifyError::Broken {
        id,
        reason: reason.to_owned(),
    };
    // The head is read first: records committed while this runs are beyond it and not
    // checked, so a live log verifies.
    let head = db
        .fetch(
            "SELECT last_id, last_hash FROM access_head WHERE id = 1",
            &[],
            &[Ty::Int, Ty::Bytes],
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| corrupt("access_head has no row"))?;
    let head_id = head[0].as_int().unwrap_or(0);
    let head_hash = head[1].as_bytes().unwrap_or_default().to_vec();
    let select = select_cols(db);
    let mut records = 0;
    while last_id < head_id {
        let rows = db
            .fetch(
                &format!("SELECT {select} FROM access_records WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3"),
                &[Val::int(last_id), Val::int(head_id), Val::int(PAGE)],
                &TYS,
            )
            .await?;
        if rows.is_empty() {
            return Err(broken(last_id + 1, "missing (the log ends before its head)"));
        }
        let first = last_id + 1;
        let index = person_index(db, first, first + rows.len() as i64 - 1).await?;
        for r in &rows {
            let (record, stored) = record_of(r)?;
            if record.id != last_id + 1 {
                return Err(broken(last_id + 1, "missing (ids are not consecutive)"));
            }
            hash = record.chain(&hash);
            if stored != hash {
                return Err(broken(record.id, "its hash does not match its content and chain"));
            }
            let mut persons = record.persons.clone();
            persons.sort();
            let indexed = index.get(&record.id).cloned().unwrap_or_default();
            if indexed != persons {
                return Err(broken(record.id, "the person index does not match the record"));
            }
            last_id = record.id;
            records += 1;
        }
    }
    if last_id != head_id || (head_id > purged_through && head_hash != hash.to_vec()) {
        return Err(broken(head_id, "the head row does not match the last record"));
    }
    Ok(Verified {
        records,
        last_id,
        head: hex::encode(hash),
        purged_through,
    })
}

async fn person_index(db: &Db, from: i64, to: i64) -> Result<std::collections::HashMap<i64, Vec<String>>, StoreError> {
    let rows = db
        .fetch(
            "SELECT record_id, person_id FROM access_record_persons WHERE record_id BETWEEN $1 AND $2 ORDER BY record_id, person_id",
            &[Val::int(from), Val::int(to)],
            &[Ty::Int, Ty::Text],
        )
        .await?;
    let mut map: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    for r in rows {
        map.entry(r[0].as_int().unwrap_or(0))
            .or_default()
            .push(r[1].as_text().unwrap_or_default().to_owned());
    }
    for v in map.values_mut() {
        v.sort();
    }
    Ok(map)
}

/// What `access purge` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Purged {
    pub removed: i64,
    /// The last purged id: the remaining log starts after it.
    pub through_id: i64,
}

/// Removes the records from before `before` (midnight Asia/Tokyo) when `before` is at least
/// five years before `today`, leaving a marker with the chain hash at the cut.
pub async fn purge(
    db: &Db,
    before: NaiveDate,
    today: NaiveDate,
    now: DateTime<Utc>,
    actor: &str,
) -> Result<Purged, AccessError> {
    let limit = today
        .checked_sub_months(Months::new(60))
        .ok_or_else(|| AccessError::Invalid("date out of range".into()))?;
    if before > limit {
        return Err(AccessError::Invalid(format!(
            "access records are kept five years: --before must be {limit} or earlier"
        )));
    }
    let cutoff = tokyo_midnight(before);
    let mut tx = db.begin().await?;
    let purged = tx
        .fetch_int("SELECT coalesce(max(through_id), 0) FROM access_purges", &[])
        .await?;
    let first_kept = tx
        .fetch(
            "SELECT min(id) FROM access_records WHERE at >= $1",
            &[Val::Instant(Some(cutoff))],
            &[Ty::Int],
        )
        .await?
        .into_iter()
        .next()
        .and_then(|r| r[0].as_int());
    let through = match first_kept {
        Some(id) => id - 1,
        None => {
            tx.fetch_int("SELECT last_id FROM access_head WHERE id = 1", &[])
                .await?
        }
    };
    if through <= purged {
        return Ok(Purged {
            removed: 0,
            through_id: purged,
        });
    }
    let hash = tx
        .fetch(
            "SELECT chain_hash FROM access_records WHERE id = $1",
            &[Val::int(through)],
            &[Ty::Bytes],
        )
        .await?
        .into_iter()
        .next()
        .and_then(|r| r[0].as_bytes().map(<[u8]>::to_vec))
        .ok_or_else(|| AccessError::Store(corrupt(format!("access record {through} is missing"))))?;
    tx.execute(
        "INSERT INTO access_purges (through_id, through_hash, before, at, actor) VALUES ($1, $2, $3, $4, $5)",
        &[
            Val::int(through),
            Val::Bytes(Some(hash)),
            Val::text(before.to_string()),
            Val::Instant(Some(now)),
            Val::text(actor),
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM access_record_persons WHERE record_id <= $1",
        &[Val::int(through)],
    )
    .await?;
    let removed = tx
        .execute("DELETE FROM access_records WHERE id <= $1", &[Val::int(through)])
        .await?;
    tx.commit().await?;
    Ok(Purged {
        removed: removed as i64,
        through_id: through,
    })
}

/// Every (actor, at, person) of the records in `[from, to)`: what the bulk-access check
/// counts.
pub async fn accesses(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>, String)>, StoreError> {
    let rows = db
        .fetch(
            "SELECT r.actor, r.at, p.person_id FROM access_records r \
             JOIN access_record_persons p ON p.record_id = r.id \
             WHERE r.at >= $1 AND r.at < $2",
            &[Val::Instant(Some(from)), Val::Instant(Some(to))],
            &[Ty::Text, Ty::Instant, Ty::Text],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r[0].as_text()?.to_owned(),
                r[1].as_instant()?,
                r[2].as_text()?.to_owned(),
            ))
        })
        .collect())
}
