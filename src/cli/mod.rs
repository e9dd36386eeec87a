//! The command line: one binary, `kokuho-ledger`, with subcommands (api.md). One file per
//! subcommand; this one parses and dispatches.

mod access;
mod age_out;
mod audit;
mod backup;
mod feed;
mod import;
mod my_number;
mod progress;
mod rebuild;
mod serve;
mod token;
mod vault;

use std::path::PathBuf;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::app::DEFAULT_DATABASE_URL;
use crate::settings::environment_help;
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "kokuho-ledger",
    version,
    about = "Event-sourced NHI eligibility history ledger (国民健康保険 資格履歴)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the ledger's database is.
#[derive(Args, Debug, Clone)]
pub struct Database {
    /// postgres://user@host/db or sqlite://path [default: sqlite://./kokuho-ledger.db]
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl Database {
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (the embedded SQLite file by default; migrates at start).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "KOKUHO_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        database: Database,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: Database,
    },
    /// Bulk-load events from a JSON Lines file, in batches written whole or not at all;
    /// running the same file again after a failure finishes the load without duplicates.
    Import {
        /// One event body per line, plus `person_id` or `household_id`.
        file: PathBuf,
        #[command(flatten)]
        database: Database,
        /// Lines per batch (one transaction each).
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
    },
    /// Record `late_elderly_age_reached` for everyone whose loss on their 75th birthday is due
    /// on or before DATE (default: today). Idempotent; exit 1 when a person was refused.
    AgeOut {
        /// The last birthday to record (YYYY-MM-DD), not after today.
        #[arg(long, value_parser = parse_day)]
        through: Option<chrono::NaiveDate>,
        #[command(flatten)]
        database: Database,
    },
    /// Rebuild every read model from position 1 and verify the stored feed against the log
    /// (issued card and branch numbers are events: they come back unchanged). Stop the
    /// service first, or it serves partial read models while this runs.
    Rebuild {
        #[command(flatten)]
        database: Database,
    },
    /// Back up the embedded SQLite database online, while `serve` runs, into FILE (a
    /// PostgreSQL ledger is backed up with pg_dump). The keys are not copied: keep them apart.
    Backup {
        /// The backup file (replaced only once the new copy is complete).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        database: Database,
    },
    /// The change feed.
    Feed {
        #[command(subcommand)]
        command: feed::FeedCommand,
    },
    /// The audit trail: signing key, verification, export for auditors (audit.md).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The My Number vault's key.
    Vault {
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
    /// Local bearer tokens: create, list, revoke (access.md).
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// The access log (アクセス記録): verify its chain, purge records past five years.
    Access {
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// My Numbers in the vault: erasure.
    MyNumber {
        #[command(subcommand)]
        command: my_number::MyNumberCommand,
    },
}

fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    crate::domain::input::parse_date("--through", s).map_err(|e| e.message)
}

/// A `YYYY-MM-DD` option.
fn parse_date_arg(s: &str) -> Result<chrono::NaiveDate, String> {
    crate::domain::input::parse_date("the date", s).map_err(|e| e.message)
}

/// Parses the command line, with the environment variables listed in `--help`. Exits with 2
/// on bad usage (clap's own code).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The command line with the environment variables after every command's help.
pub fn command() -> clap::Command {
    fn with_environment(c: clap::Command, text: &str) -> clap::Command {
        c.after_help(text.to_owned())
            .mut_subcommands(|s| with_environment(s, text))
    }
    with_environment(Cli::command(), &environment_help())
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
        Command::Serve { listen, database } => serve::run(&listen, &database.url()).await,
        Command::Migrate { database } => {
            let store = Store::connect(&database.url()).await?;
            println!("migrations applied; the log holds {} events", store.head().await?);
            store.close().await;
            Ok(())
        }
        Command::Import {
            file,
            database,
            batch_size,
        } => import::run(&file, &database.url(), batch_size as usize).await,
        Command::AgeOut { through, database } => age_out::run(through, &database.url()).await,
        Command::Rebuild { database } => rebuild::run(&database.url()).await,
        Command::Backup { out, database } => backup::run(&out, &database.url()).await,
        Command::Feed { command } => feed::run(command).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Vault { command } => vault::run(command),
        Command::Token { command } => token::run(command).await,
        Command::Access { command } => access::run(command).await,
        Command::MyNumber { command } => my_number::run(command).await,
    }
}

/// Records an export's send ledger (access.md 送付記録) for the command line's run: what was
/// sent when it succeeded, a failed export touching nobody when it did not. The record is
/// written before the run reports anything.
async fn record_export<T, E>(
    db: &crate::store::sql::Db,
    subcommand: &str,
    result: &Result<(T, crate::exports::Sent), E>,
) -> Result<i64, crate::access::AccessError> {
    use crate::access::AccessKind;
    let cli = crate::access::command_line::CommandLine::start(db, subcommand);
    let recorded = match result {
        Ok((_, sent)) => {
            cli.touched(
                AccessKind::Export,
                sent.persons.clone(),
                true,
                Some(sent.export.clone()),
            )
            .await
        }
        Err(_) => cli.touched(AccessKind::Export, Vec::new(), false, None).await,
    };
    cli.finish().await;
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed_and_every_option_is_described() {
        let command = Cli::command();
        command.clone().debug_assert();
        fn undescribed(c: &clap::Command, path: &str, out: &mut Vec<String>) {
            for a in c.get_arguments() {
                if a.get_id() != "help" && a.get_id() != "version" && a.get_help().is_none() {
                    out.push(format!("{path} --{}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() {
                    out.push(format!("{path} {}", s.get_name()));
                }
                undescribed(s, &format!("{path} {}", s.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undescribed(&command, "kokuho-ledger", &mut missing);
        assert!(missing.is_empty(), "without a description: {missing:?}");
        let help = super::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_help()
            .to_string();
        for var in [
            "KOKUHO_INSURER_NUMBER",
            "KOKUHO_VAULT_KEY_FILE",
            "KOKUHO_AUDIT_KEY_FILE",
            "DATABASE_URL",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }
}
