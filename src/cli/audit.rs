//! `kokuho-ledger audit keygen | verify | export` (audit.md).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::{progress, Database};
use crate::app;
use crate::audit::{keys, verify};
use crate::settings::Settings;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Create a new Ed25519 checkpoint key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute every leaf hash, the chain and the Merkle roots from the stored events and
    /// check them against the stored hashes and the signed checkpoints. Exit 0 when intact,
    /// 1 naming the first failing position.
    Verify {
        #[command(flatten)]
        database: Database,
        /// The trusted public key (base64); default: the deployment's configured key.
        #[arg(long)]
        public_key: Option<String>,
        /// A checkpoint the auditor already trusts (JSON, as GET /v1/audit/checkpoint answers):
        /// verify only what came after it, and the consistency proof to it.
        #[arg(long)]
        from_checkpoint: Option<PathBuf>,
    },
    /// Write the audit export (JSON Lines: header, entries, checkpoints).
    Export {
        /// The JSON Lines file to write (replaced only when the export is complete).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        database: Database,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Keygen { out } => {
            let signer = keys::Signer::create(&out)?;
            eprintln!(
                "wrote {} (keep it secret; set KOKUHO_AUDIT_KEY_FILE to its path)",
                out.display()
            );
            println!("{}", signer.public_key());
            Ok(())
        }
        AuditCommand::Verify {
            database,
            public_key,
            from_checkpoint,
        } => {
            let url = database.url();
            let key = match public_key {
                Some(k) => k,
                None => app::configured_audit_key(&url, &Settings::from_env()?)?
                    .map(|s| s.public_key())
                    .context("no trusted public key: pass --public-key, or configure the deployment's audit key")?,
            };
            let trusted = keys::parse_public_key(&key)?;
            let start = match from_checkpoint {
                None => verify::Start::Genesis,
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    verify::Start::Trusted(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{}: not a signed checkpoint", path.display()))?,
                    )
                }
            };
            let trusted_size = match &start {
                verify::Start::Trusted(c) => Some(c.checkpoint.size),
                verify::Start::Genesis => None,
            };
            let store = Store::connect_without_migrating(&url).await?;
            let total = store.head().await?.max(0) as u64;
            let pb = progress::bar(total, "verifying");
            let report = verify::verify(&store, &trusted, start, |n| pb.inc(n)).await;
            pb.finish_and_clear();
            store.close().await;
            let report = report?;
            if let Some(f) = &report.failure {
                anyhow::bail!("audit verification FAILED at position {}: {}", f.position, f.what);
            }
            let covered = match (report.latest_checkpoint, trusted_size) {
                (Some(s), _) => format!("the latest covers 1..{s}"),
                (None, Some(t)) => format!("none signed after the trusted checkpoint, which covers 1..{t}"),
                (None, None) => "none signed yet".to_owned(),
            };
            let from = match trusted_size {
                Some(t) => format!(" after the trusted checkpoint (size {t}, consistent with the latest)"),
                None => String::new(),
            };
            println!(
                "audit trail intact: {} entries recomputed{from}, {} signed checkpoints verified ({covered}), {} stream events in sequence; trusted key {key}",
                report.entries, report.checkpoints, report.stream_events
            );
            if report.uncovered > 0 {
                println!(
                    "  {} chained entries after the latest checkpoint (signed within seconds while serve runs)",
                    report.uncovered
                );
            }
            if report.unchained > 0 {
                println!(
                    "  {} events not chained yet (serve chains them as it runs)",
                    report.unchained
                );
            }
            Ok(())
        }
        AuditCommand::Export { out, database } => {
            let url = database.url();
            let store = Store::connect_without_migrating(&url).await?;
            let db = store.db().clone();
            let (origin, public_key) = match crate::audit::store::latest_checkpoint(&db).await? {
                Some(c) => (c.signed.checkpoint.origin, c.public_key),
                None => {
                    let settings = Settings::from_env()?;
                    let key = app::configured_audit_key(&url, &settings)?
                        .map(|s| s.public_key())
                        .context("no checkpoint is stored and no audit key is configured")?;
                    (settings.log_origin, key)
                }
            };
            let result = crate::exports::audit(&store, &out, &origin, &public_key).await;
            let recorded = super::record_export(&db, "audit export", &result).await;
            store.close().await;
            let (exported, _) = result?;
            recorded?;
            println!(
                "wrote {}: {} entries, {} checkpoints",
                out.display(),
                exported.entries,
                exported.checkpoints
            );
            Ok(())
        }
    }
}
