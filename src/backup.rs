//! Online backup of the embedded SQLite default (operations.md "Backups"): one consistent
//! snapshot written to a new file while `serve` keeps running, with its send ledger — a
//! backup carries every person's data, so it is an export like any other (access.md).
//! PostgreSQL deployments back up with `pg_dump`, which is consistent by itself.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::exports::{file_sha256, Sent};
use crate::store::sql::Db;
use crate::store::{DatabaseKind, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "`backup` copies the embedded SQLite database; a PostgreSQL ledger is backed up with \
         `pg_dump -Fc` and restored with `pg_restore` (docs/operations.md, \"Backups\")"
    )]
    Postgres,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What a backup holds.
#[derive(Clone, Debug)]
pub struct Backup {
    /// The log's head in the copy: a restore continues at `head + 1`.
    pub head: i64,
    pub bytes: u64,
    pub sha256: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the backup to `out`, replacing it only once the copy is complete and on disk (a
/// failed run never leaves a truncated file under the name of last night's good one).
pub async fn sqlite(store: &Store, out: &Path) -> Result<(Backup, Sent), BackupError> {
    if store.kind() == DatabaseKind::Postgres {
        return Err(BackupError::Postgres);
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = dir.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()));
    let result = write(store.db(), &partial, out, &dir).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

async fn write(db: &Db, partial: &Path, out: &Path, dir: &Path) -> Result<(Backup, Sent), BackupError> {
    let partial_str = partial.to_str().ok_or_else(|| BackupError::Io {
        path: partial.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
    })?;
    db.sqlite_vacuum_into(partial_str)
        .await
        .ok_or(BackupError::Postgres)??;
    // What the copy holds is read from the copy itself, not from the live file, which has
    // moved on since.
    let (head, persons) = contents(partial).await?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Personal data: readable by the service's user only, like the database.
        std::fs::set_permissions(partial, std::fs::Permissions::from_mode(0o600)).map_err(io(partial))?;
        std::fs::File::open(partial)
            .and_then(|f| f.sync_all())
            .map_err(io(partial))?;
    }
    std::fs::rename(partial, out).map_err(io(out))?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    let sha256 = file_sha256(out).map_err(io(out))?;
    let export = json!({
        "what": "backup",
        "from": if head > 0 { 1 } else { 0 },
        "to": head,
        "files": [{
            "name": out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            "sha256": sha256,
        }],
    });
    Ok((Backup { head, bytes, sha256 }, Sent { export, persons }))
}

/// The head and the persons of a finished copy, opened read-only and immutable (no WAL or
/// lock files are made beside it, and its bytes stay those that are hashed).
async fn contents(path: &Path) -> Result<(i64, Vec<String>), BackupError> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions as _, Connection as _, Row as _};
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true)
        .connect()
        .await
        .map_err(StoreError::from)?;
    let head: i64 = sqlx::query("SELECT last_position FROM log_head")
        .fetch_optional(&mut conn)
        .await
        .map_err(StoreError::from)?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let persons =
        sqlx::query("SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'person' ORDER BY aggregate_id")
            .fetch_all(&mut conn)
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
    let _ = conn.close().await;
    Ok((head, persons))
}
