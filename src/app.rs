//! Building the application from a database URL and settings: the one builder `serve`,
//! `import`, `rebuild`, `age-out`, the tests and the benchmarks share. It opens the store
//! (migrating it), the keys the deployment is configured with, the group-commit writer and the
//! ledger's services.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::access::oidc::OidcVerifier;
use crate::access::sessions::SessionStore;
use crate::access::tokens::TokenStore;
use crate::access::{Access, Recorder};
use crate::audit::keys::Signer;
use crate::clock::{Clock, SystemClock};
use crate::ledger::Ledger;
use crate::settings::Settings;
use crate::store::writer::Writer;
use crate::store::{database_kind, sqlite_path, DatabaseKind, Store};
use crate::vault::Vault;

/// The embedded default: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./kokuho-ledger.db";

/// A key file the embedded default keeps beside its database file (`<db>.<suffix>`).
fn beside_sqlite(url: &str, suffix: &str) -> Option<PathBuf> {
    match database_kind(url).ok()? {
        DatabaseKind::Sqlite => Some(PathBuf::from(format!(
            "{}.{suffix}",
            sqlite_path(url).unwrap_or("kokuho-ledger.db")
        ))),
        DatabaseKind::Postgres => None,
    }
}

/// The deployment's My Number vault key: inline, by path (which must exist), or the embedded
/// default's file beside its database (created on first start, mode 0600). PostgreSQL
/// deployments must configure it: two processes must never seal numbers under two keys.
pub fn vault(url: &str, settings: &Settings) -> anyhow::Result<Vault> {
    if let Some(hex) = &settings.vault_key {
        return Ok(Vault::from_hex(&hex.0, "KOKUHO_VAULT_KEY")?);
    }
    if let Some(path) = &settings.vault_key_file {
        return Vault::load_key_file(path).with_context(|| {
            "KOKUHO_VAULT_KEY_FILE: create a key with `kokuho-ledger vault keygen --out PATH` (and keep it backed up)"
        });
    }
    let Some(path) = beside_sqlite(url, "vault.key") else {
        anyhow::bail!(
            "no My Number vault key: a PostgreSQL deployment must set KOKUHO_VAULT_KEY_FILE (or KOKUHO_VAULT_KEY); \
             create a key with `kokuho-ledger vault keygen --out PATH`"
        );
    };
    let (vault, created) = Vault::open_or_create_key_file(&path)?;
    if created {
        tracing::info!(path = %path.display(), "created the My Number vault key");
    }
    Ok(vault)
}

/// Refuses a vault key that cannot open the numbers already sealed (a deployment keeps one
/// key), after moving entries of the old plain-salt table into the sealed one.
pub async fn check_vault_key(store: &Store, vault: &Vault) -> anyhow::Result<()> {
    let moved = crate::vault::numbers::move_plain_salts(store.db(), vault).await?;
    if moved > 0 {
        tracing::info!(entries = moved, "sealed the salts of My Number entries stored before");
    }
    anyhow::ensure!(
        crate::vault::numbers::key_opens_stored(store.db(), vault).await?,
        "the configured My Number vault key does not open the numbers already stored: \
         configure the key this ledger was started with"
    );
    Ok(())
}

/// Refuses settings a deployment cannot run with: on PostgreSQL the insurer number must be set
/// (feed records carry it for good); the embedded default only warns. Every command that
/// writes (serve, import, age-out, rebuild) checks this first.
pub fn check_settings(url: &str, settings: &Settings) -> anyhow::Result<()> {
    if settings.insurer_number.is_placeholder() {
        match database_kind(url)? {
            DatabaseKind::Postgres => anyhow::bail!(
                "KOKUHO_INSURER_NUMBER is not set: a PostgreSQL deployment must name its insurer number (保険者番号, six digits)"
            ),
            DatabaseKind::Sqlite => tracing::warn!(
                "KOKUHO_INSURER_NUMBER is not set: feed records carry the placeholder 000000 (set it before sending anything)"
            ),
        }
    }
    Ok(())
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
    match beside_sqlite(url, "audit.key") {
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
    let Some(path) = beside_sqlite(url, "audit.key") else {
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
    if let Some(latest) = crate::audit::store::latest_checkpoint(store.db()).await? {
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

/// A running application: the ledger and the writer task that drains when the last handle to
/// the ledger is dropped.
pub struct Application {
    pub ledger: Arc<Ledger>,
    pub writer_task: tokio::task::JoinHandle<()>,
    /// Identity, roles and the access log's writer.
    pub access: Arc<Access>,
    /// The access log's writer: it stops when the last [`Access`] is dropped, after writing
    /// what was queued.
    pub access_task: tokio::task::JoinHandle<()>,
}

impl Application {
    /// The HTTP service over this application.
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.ledger.clone(), self.access.clone())
    }
}

/// What an application is built from; `Builder::new(url)` takes the environment's settings,
/// the system clock and the configured vault key unless told otherwise.
pub struct Builder {
    url: String,
    settings: Option<Settings>,
    clock: Arc<dyn Clock>,
    vault: Option<Vault>,
    audit: Option<Arc<Signer>>,
}

impl Builder {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            settings: None,
            clock: Arc::new(SystemClock),
            vault: None,
            audit: None,
        }
    }
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// A vault instead of the configured key (tests).
    pub fn vault(mut self, vault: Vault) -> Self {
        self.vault = Some(vault);
        self
    }
    /// The checkpoint key: the ledger's projections then include the audit chainer.
    pub fn audit(mut self, signer: Arc<Signer>) -> Self {
        self.audit = Some(signer);
        self
    }

    /// Connects (migrating the database), opens the keys and starts the writer.
    pub async fn build(self) -> anyhow::Result<Application> {
        let settings = match self.settings {
            Some(s) => s,
            None => Settings::from_env()?,
        };
        let kind = database_kind(&self.url)?;
        let vault = match self.vault {
            Some(v) => v,
            None => vault(&self.url, &settings)?,
        };
        let store = Store::connect(&self.url)
            .await
            .with_context(|| format!("opening the {kind:?} database"))?;
        check_vault_key(&store, &vault).await?;
        if let Some(signer) = &self.audit {
            check_audit_key(&store, signer).await?;
        }
        let (recorder, access_task) = Recorder::spawn(store.db().clone());
        // Writes' access records commit with their events where they can.
        let (writer, writer_task) = Writer::spawn(store.clone(), settings.max_batch, recorder.side());
        let access = Access {
            roles: settings.role_table.clone(),
            tokens: TokenStore::new(store.db().clone()),
            oidc: settings.oidc.clone().map(OidcVerifier::new),
            recorder,
            proxies: settings.trusted_proxies.clone(),
            unusual: settings.unusual.clone(),
            sessions: SessionStore::new(store.db().clone(), settings.console_idle),
        };
        let ledger = Ledger::new(store, writer, self.clock, Arc::new(vault), settings, self.audit);
        Ok(Application {
            ledger: Arc::new(ledger),
            writer_task,
            access: Arc::new(access),
            access_task,
        })
    }
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

    #[test]
    fn the_vault_key_is_required_with_postgres_and_kept_beside_the_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let pg = "postgres://x@localhost/db";
        let refused = vault(pg, &Settings::default()).err().unwrap().to_string();
        assert!(refused.contains("KOKUHO_VAULT_KEY_FILE"), "{refused}");
        assert!(
            !std::path::Path::new("kokuho-ledger.vault.key").exists(),
            "nothing created in the working directory"
        );
        // A configured file must exist: a missing one is refused, never created.
        let missing = Settings {
            vault_key_file: Some(dir.path().join("absent.key")),
            ..Settings::default()
        };
        assert!(vault(pg, &missing).is_err());
        assert!(!dir.path().join("absent.key").exists());
        let path = dir.path().join("v.key");
        Vault::create_key_file(&path).unwrap();
        let configured = Settings {
            vault_key_file: Some(path),
            ..Settings::default()
        };
        assert!(vault(pg, &configured).is_ok());
        let inline = Settings {
            vault_key: Some(Secret("11".repeat(32))),
            ..Settings::default()
        };
        assert!(vault(pg, &inline).is_ok());
        let sqlite = format!("sqlite://{}", dir.path().join("l.db").display());
        vault(&sqlite, &Settings::default()).unwrap();
        assert!(dir.path().join("l.db.vault.key").exists());
    }
}
