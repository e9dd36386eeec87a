//! The vault's table (`my_numbers`): find a sealed number by commitment, a person by blind
//! index, erase, and move entries of the old plain-salt table (`my_number_vault`) in.

use chrono::{DateTime, Utc};

use super::Vault;
use crate::codec::fold;
use crate::domain::{MyNumber, Person, PersonId};
use crate::error::LedgerError;
use crate::store::sql::{Db, Dialect, Ty, Val};
use crate::store::{Store, StoreError, VaultEntry};

/// A person's My Number as the vault holds it.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// The registration in force names none.
    None,
    /// Named by a commitment whose sealed entry was erased.
    Erased,
    Number(MyNumber),
}

/// The My Number of the registration in force (as of log position `up_to`, or now); None when
/// the person is not registered.
pub async fn held(
    store: &Store,
    vault: &Vault,
    person_id: &str,
    up_to: Option<i64>,
) -> Result<Option<Held>, LedgerError> {
    use cqrs_es::Aggregate as _;
    let mut stream = store.load_stream(Person::TYPE, person_id, None).await?;
    if let Some(p) = up_to {
        stream.retain(|e| e.position <= p);
    }
    if stream.is_empty() {
        return Ok(None);
    }
    let Some(registration) = fold::<Person>(&stream)?.registration() else {
        return Ok(None);
    };
    let Some(commitment) = registration.my_number_commitment else {
        return Ok(Some(Held::None));
    };
    let Some(e) = entry(store.db(), &commitment).await? else {
        return Ok(Some(Held::Erased));
    };
    let number = vault
        .open(&e)
        .map_err(|e| LedgerError::Internal(format!("vault: {e}")))?;
    Ok(Some(Held::Number(number)))
}

const ENTRY_COLS: &str = "commitment, person_id, nonce, sealed, blind_index";
const ENTRY_TYS: [Ty; 5] = [Ty::Text, Ty::Text, Ty::Bytes, Ty::Bytes, Ty::Text];

fn entry_of(row: Vec<Val>) -> VaultEntry {
    let mut it = row.into_iter();
    let mut next = || it.next().unwrap_or(Val::Bytes(None));
    VaultEntry {
        commitment: next().into_text().unwrap_or_default(),
        person_id: next().into_text().unwrap_or_default(),
        nonce: next().into_bytes().unwrap_or_default(),
        sealed: next().into_bytes().unwrap_or_default(),
        blind_index: next().into_text().unwrap_or_default(),
    }
}

/// The sealed number a commitment stands for; None once erased (or never stored).
pub async fn entry(db: &Db, commitment: &str) -> Result<Option<VaultEntry>, StoreError> {
    let rows = db
        .fetch(
            &format!("SELECT {ENTRY_COLS} FROM my_numbers WHERE commitment = $1"),
            &[Val::text(commitment)],
            &ENTRY_TYS,
        )
        .await?;
    Ok(rows.into_iter().next().map(entry_of))
}

/// The persons whose stored number has this blind index (normally one).
pub async fn persons_with(db: &Db, vault: &Vault, my_number: &MyNumber) -> Result<Vec<String>, StoreError> {
    let rows = db
        .fetch(
            "SELECT DISTINCT person_id FROM my_numbers WHERE blind_index = $1 ORDER BY person_id",
            &[Val::text(vault.blind_index(my_number))],
            &[Ty::Text],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r[0].as_text().map(str::to_owned))
        .collect())
}

/// Erases a person's numbers (every commitment they were registered with); returns how many
/// entries went.
pub async fn erase_person(db: &Db, person_id: &PersonId) -> Result<u64, StoreError> {
    let n = db
        .execute(
            "DELETE FROM my_numbers WHERE person_id = $1",
            &[Val::text(person_id.as_str())],
        )
        .await?;
    scrub(db).await?;
    Ok(n)
}

/// Erases every number stored before `before`; returns the persons whose numbers went.
pub async fn erase_stored_before(db: &Db, before: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
    let mut tx = db.begin().await?;
    let rows = tx
        .fetch(
            "SELECT DISTINCT person_id FROM my_numbers WHERE created_at < $1 ORDER BY person_id",
            &[Val::Instant(Some(before))],
            &[Ty::Text],
        )
        .await?;
    tx.execute(
        "DELETE FROM my_numbers WHERE created_at < $1",
        &[Val::Instant(Some(before))],
    )
    .await?;
    tx.commit().await?;
    scrub(db).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r[0].as_text().map(str::to_owned))
        .collect())
}

/// Leaves no copy of erased entries in the database files: PostgreSQL rewrites the table
/// (dead tuples would keep the sealed bytes until their space is reused); SQLite overwrites
/// freed content already (`secure_delete`) and its write-ahead log is checkpointed and
/// truncated.
async fn scrub(db: &Db) -> Result<(), StoreError> {
    match db.dialect() {
        Dialect::Postgres => db.maintain("VACUUM FULL my_numbers").await,
        Dialect::Sqlite => db.maintain("PRAGMA wal_checkpoint(TRUNCATE)").await,
    }
}

/// Moves the entries of the old table, whose salt sat in plain text beside the commitment,
/// into `my_numbers` with the salt sealed; one transaction, idempotent. Returns how many
/// moved. Numbers recorded before this change had their commitment and salt readable by
/// anyone with the database: whoever held a copy (a backup) can still test guesses against
/// those commitments; this closes it for the database from now on.
pub async fn move_plain_salts(db: &Db, vault: &Vault) -> Result<usize, MoveError> {
    let mut tx = db.begin().await?;
    let rows = tx
        .fetch(
            "SELECT commitment, person_id, salt, nonce, ciphertext, position, created_at FROM my_number_vault ORDER BY position",
            &[],
            &[Ty::Text, Ty::Text, Ty::Bytes, Ty::Bytes, Ty::Bytes, Ty::Int, Ty::Instant],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut moved = Vec::with_capacity(rows.len());
    for r in &rows {
        let commitment = r[0].as_text().unwrap_or_default();
        let person = PersonId::parse(r[1].as_text().unwrap_or_default())
            .map_err(|_| MoveError::Corrupt(commitment.to_owned()))?;
        let salt = r[2].as_bytes().unwrap_or_default();
        let number = vault
            .open_plain_salt(
                commitment,
                salt,
                r[3].as_bytes().unwrap_or_default(),
                r[4].as_bytes().unwrap_or_default(),
            )
            .map_err(|_| MoveError::WrongKey)?;
        let e = vault.seal_with_salt(&person, &number, salt);
        moved.push(vec![
            Val::Text(Some(e.commitment)),
            Val::Text(Some(e.person_id)),
            Val::Bytes(Some(e.nonce)),
            Val::Bytes(Some(e.sealed)),
            Val::Text(Some(e.blind_index)),
            r[5].clone(),
            r[6].clone(),
        ]);
    }
    let n = moved.len();
    tx.insert_with(
        "my_numbers",
        &[
            ("commitment", Ty::Text),
            ("person_id", Ty::Text),
            ("nonce", Ty::Bytes),
            ("sealed", Ty::Bytes),
            ("blind_index", Ty::Text),
            ("position", Ty::Int),
            ("created_at", Ty::Instant),
        ],
        moved,
        "ON CONFLICT (commitment) DO NOTHING",
    )
    .await?;
    tx.execute("DELETE FROM my_number_vault", &[]).await?;
    tx.commit().await?;
    scrub(db).await?;
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the configured My Number vault key does not open the numbers already stored: configure the key this ledger was started with"
    )]
    WrongKey,
    #[error("a stored My Number entry ({0}) names no valid person")]
    Corrupt(String),
}

/// Whether the vault key opens the numbers already sealed (a deployment keeps one key).
pub async fn key_opens_stored(db: &Db, vault: &Vault) -> Result<bool, StoreError> {
    let rows = db
        .fetch(
            &format!("SELECT {ENTRY_COLS} FROM my_numbers ORDER BY position LIMIT 1"),
            &[],
            &ENTRY_TYS,
        )
        .await?;
    Ok(match rows.into_iter().next() {
        Some(r) => vault.open(&entry_of(r)).is_ok(),
        None => true,
    })
}
