//! Assembles a ledger from a database URL and settings.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::audit::keys::Signer;
use crate::clock::Clock;
use crate::ledger::Ledger;
use crate::settings::Settings;
use crate::store::writer::Writer;
use crate::store::{database_kind, sqlite_path, DatabaseKind, Store};
use crate::vault::Vault;

/// The embedded default: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./kokuho-ledger.db";

/// Where the My Number vault key lives: configured, or beside the SQLite file, or in the
/// working directory for PostgreSQL.
pub fn vault_key_path(url: &str, settings: &Settings) -> anyhow::Result<PathBuf> {
    if let Some(p) = &settings.vault_key_file {
        return Ok(p.clone());
    }
    Ok(match database_kind(url)? {
        DatabaseKind::Sqlite => PathBuf::from(format!("{}.vault.key", sqlite_path(url).unwrap_or("kokuho-ledger.db"))),
        DatabaseKind::Postgres => PathBuf::from("kokuho-ledger.vault.key"),
    })
}

/// Where the embedded default keeps its audit key: beside the SQLite file.
fn default_audit_key_path(url: &str) -> Option<PathBuf> {
    match database_kind(url).ok()? {
        DatabaseKind::Sqlite => Some(PathBuf::from(format!(
            "{}.audit.key",
            sqlite_path(url).unwrap_or("kokuho-ledger.db")
        ))),
        DatabaseKind::Postgres => None,
    }
}

/// The deployment's configured checkpoint key, if there is one (never creates a key): inline,
/// by path, or the embedded default's file when it exists.
pub fn configured_audit_key(url: &str, settings: &Settings) -> anyhow::Result<Option<Signer>> {
    if let Some(pem) = &settings.audit_key {
        return Ok(Some(Signer::from_pem(&pem.0, "KOKUHO_AUDIT_KEY")?));
    }
    if let Some(path) = &settings.audit_key_file {
        return Ok(Some(Signer::load(path).with_context(|| {
            "KOKUHO_AUDIT_KEY_FILE: create a key with `kokuho-ledger audit keygen --out PATH`"
        })?));
    }
    match default_audit_key_path(url) {
        Some(path) if path.exists() => Ok(Some(Signer::load(&path)?)),
        _ => Ok(None),
    }
}

/// The key `serve` signs checkpoints with. PostgreSQL deployments must configure one; the
/// embedded default creates its key file on first start (mode 0600) and reuses it.
pub fn audit_signer(url: &str, settings: &Settings) -> anyhow::Result<Arc<Signer>> {
    if let Some(signer) = configured_audit_key(url, settings)? {
        return Ok(Arc::new(signer));
    }
    let Some(path) = default_audit_key_path(url) else {
        anyhow::bail!(
            "no audit signing key: a PostgreSQL deployment must set KOKUHO_AUDIT_KEY_FILE (or KOKUHO_AUDIT_KEY); \
             create a key with `kokuho-ledger audit keygen --out PATH`"
        );
    };
    let (signer, created) = Signer::load_or_create(&path)?;
    if created {
        tracing::info!(path = %path.display(), public_key = %signer.public_key(), "created the audit checkpoint key");
    }
    Ok(Arc::new(signer))
}

/// Refuses a key other than the one that signed the stored checkpoints: a deployment keeps
/// one key, or its auditors could no longer tie old and new checkpoints together.
pub async fn check_audit_key(store: &Store, signer: &Signer) -> anyhow::Result<()> {
    let db = crate::projections::db::Db::new(store);
    if let Some(latest) = crate::audit::store::latest_checkpoint(&db).await? {
        anyhow::ensure!(
            latest.public_key == signer.public_key(),
            "the configured audit key ({}) is not the key that signed the stored checkpoints ({}, up to size {})",
            signer.public_key(),
            latest.public_key,
            latest.signed.checkpoint.size
        );
    }
    Ok(())
}

pub struct Opened {
    pub ledger: Arc<Ledger>,
    pub writer_task: tokio::task::JoinHandle<()>,
}

/// Connects, migrates, opens (or creates) the vault key and starts the group-commit writer;
/// with a signer, the ledger's projections include the audit chainer.
pub async fn open(
    url: &str,
    settings: Settings,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<Signer>>,
) -> anyhow::Result<Opened> {
    let store = Store::connect(url)
        .await
        .with_context(|| format!("opening the {:?} database", database_kind(url).ok()))?;
    let key = vault_key_path(url, &settings)?;
    let vault = Vault::open_key_file(&key, true)?;
    let (writer, writer_task) = Writer::spawn(store.clone(), settings.max_batch);
    let mut ledger = Ledger::new(store, writer, clock, Arc::new(vault), settings);
    if let Some(signer) = audit {
        check_audit_key(ledger.store(), &signer).await?;
        ledger = ledger.with_audit(signer);
    }
    let ledger = Arc::new(ledger);
    Ok(Opened { ledger, writer_task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;

    #[test]
    fn the_audit_key_comes_inline_by_path_or_beside_the_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::generate();
        let inline = Settings {
            audit_key: Some(Secret(signer.to_pem())),
            ..Settings::default()
        };
        let pg = "postgres://x@localhost/db";
        assert_eq!(
            configured_audit_key(pg, &inline).unwrap().unwrap().public_key(),
            signer.public_key()
        );
        let path = dir.path().join("k.pem");
        let on_disk = Signer::create(&path).unwrap();
        let by_path = Settings {
            audit_key_file: Some(path),
            ..Settings::default()
        };
        assert_eq!(audit_signer(pg, &by_path).unwrap().public_key(), on_disk.public_key());
        // PostgreSQL without a key: refused, never created.
        assert!(configured_audit_key(pg, &Settings::default()).unwrap().is_none());
        let refused = audit_signer(pg, &Settings::default()).unwrap_err().to_string();
        assert!(refused.contains("KOKUHO_AUDIT_KEY_FILE"), "{refused}");
        // The embedded default creates its key beside the database file once, then reuses it.
        let sqlite = format!("sqlite://{}", dir.path().join("l.db").display());
        let first = audit_signer(&sqlite, &Settings::default()).unwrap();
        assert!(dir.path().join("l.db.audit.key").exists());
        assert_eq!(
            audit_signer(&sqlite, &Settings::default()).unwrap().public_key(),
            first.public_key()
        );
        assert!(
            format!("{inline:?}").contains("Secret(…)"),
            "the inline key is never printed"
        );
    }
}
