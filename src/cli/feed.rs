//! `kokuho-ledger feed export`.

use std::path::PathBuf;

use clap::Subcommand;

use super::Database;
use crate::access::command_line::CommandLine;
use crate::access::AccessKind;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum FeedCommand {
    /// Write the records after a position as the two CSV files FILE.household.csv and
    /// FILE.individual.csv; prints the last position written (the next run's --after).
    Export {
        /// The feed position to continue after (0: from the start; at most 2^53 − 1).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=crate::exports::MAX_AFTER))]
        after: i64,
        /// The files' common prefix: FILE.household.csv and FILE.individual.csv.
        #[arg(long)]
        out: PathBuf,
        /// At most this many records (the next run goes on from the printed position).
        #[arg(long)]
        limit: Option<usize>,
        /// utf-8, or shift_jis (Windows-31J).
        #[arg(long, value_enum, default_value = "utf-8")]
        encoding: crate::feed::export::Encoding,
        /// Write 〓 for a character the encoding cannot represent (listed on stderr) instead
        /// of failing.
        #[arg(long)]
        replace_unmappable: bool,
        /// Only csv (feed.md).
        #[arg(long, default_value = "csv", value_parser = ["csv"])]
        format: String,
        #[command(flatten)]
        database: Database,
    },
}

pub async fn run(command: FeedCommand) -> anyhow::Result<()> {
    match command {
        FeedCommand::Export {
            after,
            out,
            limit,
            encoding,
            replace_unmappable,
            format: _,
            database,
        } => {
            let store = Store::connect(&database.url()).await?;
            let result = crate::exports::feed(&store, after, limit, &out, encoding, replace_unmappable).await;
            // The send ledger: the range and each file's SHA-256, recorded before it is reported.
            let cli = CommandLine::start(store.db(), "feed export");
            let recorded = match &result {
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
            store.close().await;
            let (exported, _) = result?;
            recorded?;
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
    }
}
