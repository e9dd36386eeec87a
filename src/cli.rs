//! The command line: one binary, `kokuho-ledger`, with subcommands (api.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{self, DEFAULT_DATABASE_URL};
use crate::clock::SystemClock;
use crate::settings::Settings;
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "kokuho-ledger",
    version,
    about = "Event-sourced NHI eligibility history ledger"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (embedded SQLite by default).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "KOKUHO_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// postgres://… or sqlite://path; default: ./kokuho-ledger.db.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Record `late_elderly_age_reached` for everyone insured up to a 75th birthday on or before
    /// DATE (default: today). Idempotent.
    AgeOut {
        #[arg(long, value_parser = parse_day)]
        through: Option<chrono::NaiveDate>,
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Rebuild every projection from position 1 (issued card and branch numbers are events in
    /// the log: they come back unchanged). Stop the service first, or it serves partial
    /// projections while this runs.
    Rebuild {
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// The change feed.
    Feed {
        #[command(subcommand)]
        command: FeedCommand,
    },
    /// The audit trail: signing key, verification, export for auditors (audit.md).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Bulk-load events from a JSON Lines file (validated whole before anything is written).
    Import {
        /// One event body per line, plus `person_id` or `household_id`.
        file: PathBuf,
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Events per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
        /// Actor recorded in the events' metadata.
        #[arg(long, default_value = "import")]
        actor: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FeedCommand {
    /// Write the records after a position as the two CSV files FILE.household.csv and
    /// FILE.individual.csv; prints the last position written (the next run's --after).
    Export {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        out: PathBuf,
        /// At most this many records (the next run goes on from the printed position).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum, default_value = "utf-8")]
        encoding: crate::feed_export::Encoding,
        /// Write 〓 for a character the encoding cannot represent (listed on stderr) instead
        /// of failing.
        #[arg(long)]
        replace_unmappable: bool,
        /// Only csv (feed.md).
        #[arg(long, default_value = "csv", value_parser = ["csv"])]
        format: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
}

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
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
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
        #[arg(long)]
        out: PathBuf,
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
}

fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    crate::domain::input::parse_date("--through", s).map_err(|e| e.message)
}

fn url(u: Option<String>) -> String {
    u.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command line; the exit code follows api.md (0 ok, 1 failed, 2 bad usage).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, database_url } => serve(&listen, &url(database_url)).await,
        Command::Migrate { database_url } => {
            let store = Store::connect(&url(database_url)).await?;
            tracing::info!(head = store.head().await?, "migrations applied");
            Ok(())
        }
        Command::AgeOut { through, database_url } => {
            let opened = app::open(&url(database_url), Settings::from_env()?, Arc::new(SystemClock), None).await?;
            let through = through.unwrap_or_else(|| opened.ledger.clock().today());
            let summary = opened.ledger.age_out(through).await?;
            println!(
                "age-out through {through}: {} recorded, {} already recorded, {} not insured, {} not yet 75",
                summary.recorded, summary.already, summary.not_insured, summary.not_yet
            );
            Ok(())
        }
        Command::Rebuild { database_url } => {
            let store = Store::connect(&url(database_url)).await?;
            let projections = crate::projections::Projections::new(store.clone())
                .with_insurer_number(&Settings::from_env()?.insurer_number);
            let head = store.head().await?;
            let rebuilt = projections.rebuildable_names();
            let pb = crate::import::bar((head.max(0) as u64) * rebuilt.len() as u64, "rebuilding");
            let summary = projections.rebuild(|n| pb.inc(n)).await?;
            pb.finish_and_clear();
            println!(
                "rebuilt {} from {} events in {:.1} s ({:.0} events/s per projection)",
                rebuilt.join(", "),
                summary.events,
                summary.seconds,
                (summary.events as f64 * summary.projections.len() as f64) / summary.seconds.max(1e-9)
            );
            for (table, rows) in &summary.rows {
                println!("  {table}: {rows} rows");
            }
            for (name, position) in &summary.projections {
                println!("  checkpoint {name}: {position}");
            }
            store.close().await;
            if summary.feed.differences.is_empty() {
                println!(
                    "feed: {} records verified against the log, identical",
                    summary.feed.checked
                );
                Ok(())
            } else {
                for d in &summary.feed.differences {
                    eprintln!("feed difference: {d}");
                }
                anyhow::bail!("the stored feed differs from a recomputation from the log (never rewritten)")
            }
        }
        Command::Feed {
            command:
                FeedCommand::Export {
                    after,
                    out,
                    limit,
                    encoding,
                    replace_unmappable,
                    format: _,
                    database_url,
                },
        } => {
            anyhow::ensure!(after >= 0, "--after must be a feed position (≥ 0)");
            let store = Store::connect(&url(database_url)).await?;
            let result = crate::feed_export::export(&store, after, limit, &out, encoding, replace_unmappable).await;
            store.close().await;
            let exported = result?;
            for r in &exported.replaced {
                eprintln!(
                    "replaced U+{:04X} with 〓 in record {}, field {}",
                    r.character as u32, r.position, r.field
                );
            }
            eprintln!(
                "wrote {} records to {} and {}",
                exported.records,
                exported.household_file.display(),
                exported.individual_file.display()
            );
            println!("{}", exported.last_position);
            Ok(())
        }
        Command::Audit { command } => audit(command).await,
        Command::Import {
            file,
            database_url,
            batch_size,
            actor,
        } => {
            let settings = Settings::from_env()?;
            let summary = crate::import::run(&file, &url(database_url), settings, batch_size.max(1), &actor).await?;
            println!("{summary}");
            Ok(())
        }
    }
}

async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    use crate::audit::{keys, verify};
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
            database_url,
            public_key,
            from_checkpoint,
        } => {
            let url = url(database_url);
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
            let store = Store::connect_without_migrating(&url).await?;
            let total = store.head().await?.max(0) as u64;
            let pb = crate::import::bar(total, "verifying");
            let report = verify::verify(&store, &trusted, start, |n| pb.inc(n)).await;
            pb.finish_and_clear();
            store.close().await;
            let report = report?;
            if let Some(f) = &report.failure {
                anyhow::bail!("audit verification FAILED at position {}: {}", f.position, f.what);
            }
            println!(
                "audit trail intact: {} entries recomputed, {} signed checkpoints verified (latest covers {}), {} stream events in sequence; trusted key {key}",
                report.entries,
                report.checkpoints,
                report.latest_checkpoint.map_or("nothing".to_owned(), |s| format!("1..{s}")),
                report.stream_events
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
        AuditCommand::Export { out, database_url } => {
            let url = url(database_url);
            let store = Store::connect_without_migrating(&url).await?;
            let db = crate::projections::db::Db::new(&store);
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
            let result = crate::audit::export::export(&store, &out, &origin, &public_key).await;
            store.close().await;
            let exported = result?;
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

async fn serve(listen: &str, url: &str) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    // Refuse to start without the checkpoint key rather than run with an unsigned trail.
    let signer = app::audit_signer(url, &settings)?;
    let opened = app::open(url, settings, Arc::new(SystemClock), Some(signer)).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, database = ?opened.ledger.store().kind(), "serving");
    let router = crate::http::router(opened.ledger.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = opened.ledger.projections().spawn(stopped);
    let daily = tokio::spawn(age_out_daily(opened.ledger.clone()));
    let store = opened.ledger.store().clone();
    drop(opened.ledger);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // The daily job holds the ledger too: stop it so the writer can drain.
    daily.abort();
    let _ = daily.await;
    // Projections commit batch by batch: stopping between batches loses nothing.
    let _ = stop.send(true);
    let _ = runner.await;
    // The router (and with it the last writer handle) is gone: the writer drains and stops.
    if tokio::time::timeout(Duration::from_secs(30), opened.writer_task)
        .await
        .is_err()
    {
        tracing::warn!("the writer did not drain within 30 s");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The daily 75th-birthday job of `serve`: at start (catching up), then shortly after each
/// midnight in Tokyo.
async fn age_out_daily(ledger: Arc<crate::ledger::Ledger>) {
    loop {
        let today = ledger.clock().today();
        let wait = match ledger.age_out(today).await {
            Ok(_) => {
                let now = ledger.clock().now();
                let next = (today + chrono::Days::new(1))
                    .and_hms_opt(0, 5, 0)
                    .expect("valid time")
                    .and_local_timezone(crate::clock::tokyo())
                    .single()
                    .expect("a fixed offset has one local time");
                (next.with_timezone(&chrono::Utc) - now)
                    .to_std()
                    .unwrap_or(Duration::from_secs(60))
            }
            Err(e) => {
                tracing::error!(error = %e, "age-out failed; retrying in 10 minutes");
                Duration::from_secs(600)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
