//! `kokuho-ledger backup --out FILE` (operations.md "Backups"): the embedded SQLite database,
//! online, recorded in the access log as an export with its SHA-256.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::backup::{self, BackupError};
use crate::settings::Settings;
use crate::store::{database_kind, sqlite_path, DatabaseKind, Store};

pub async fn run(out: &Path, url: &str) -> anyhow::Result<()> {
    // Refused before connecting: nothing to learn from the server.
    if database_kind(url)? == DatabaseKind::Postgres {
        return Err(BackupError::Postgres.into());
    }
    let path = sqlite_path(url).context("an sqlite://path URL")?;
    // Connecting would create an empty database: a typo must not back up nothing.
    anyhow::ensure!(Path::new(path).exists(), "no database at {path}");
    let store = Store::connect_without_migrating(url).await?;
    let db = store.db().clone();
    let result = backup::sqlite(&store, out).await;
    let recorded = super::record_export(&db, "backup", &result).await;
    store.close().await;
    let (done, _) = result?;
    recorded?;
    println!(
        "wrote {}: positions 1..{}, {} bytes, sha256 {}",
        out.display(),
        done.head,
        done.bytes,
        done.sha256
    );
    // The keys are deliberately not copied: a backup medium holding the sealed My Numbers and
    // the key that opens them protects neither.
    let settings = Settings::from_env()?;
    println!("the keys are not in the backup; keep a copy of each, stored apart from it:");
    println!(
        "  My Number vault key (without it a restore cannot open My Numbers): {}",
        key_source(
            path,
            "vault.key",
            settings.vault_key.is_some(),
            "KOKUHO_VAULT_KEY",
            settings.vault_key_file.as_deref()
        )
    );
    println!(
        "  audit checkpoint key: {}",
        key_source(
            path,
            "audit.key",
            settings.audit_key.is_some(),
            "KOKUHO_AUDIT_KEY",
            settings.audit_key_file.as_deref()
        )
    );
    Ok(())
}

/// Where the deployment's key comes from, as `app::vault` and `app::audit_signer` look.
fn key_source(db: &str, suffix: &str, inline: bool, var: &str, file: Option<&Path>) -> String {
    if inline {
        format!("inline in {var}")
    } else if let Some(f) = file {
        f.display().to_string()
    } else {
        PathBuf::from(format!("{db}.{suffix}")).display().to_string()
    }
}
