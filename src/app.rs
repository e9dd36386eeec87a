//! Assembles a ledger from a database URL and settings.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

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

pub struct Opened {
    pub ledger: Arc<Ledger>,
    pub writer_task: tokio::task::JoinHandle<()>,
}

/// Connects, migrates, opens (or creates) the vault key and starts the group-commit writer.
pub async fn open(url: &str, settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Opened> {
    let store = Store::connect(url)
        .await
        .with_context(|| format!("opening the {:?} database", database_kind(url).ok()))?;
    let key = vault_key_path(url, &settings)?;
    let vault = Vault::open_key_file(&key, true)?;
    let (writer, writer_task) = Writer::spawn(store.clone(), settings.max_batch);
    let ledger = Arc::new(Ledger::new(store, writer, clock, Arc::new(vault), settings));
    Ok(Opened { ledger, writer_task })
}
