//! `kokuho-ledger feed export` and `feed publish`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::Database;
use crate::app::{self, Builder};
use crate::feed::relay::{Disclosure, Relay, Until};
use crate::settings::Settings;
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
    /// Publish the feed to NATS JetStream up to the feed head, then exit: each record once, in
    /// position order, on <prefix>.<insurer number> (the lane `serve` runs with KOKUHO_NATS_URL);
    /// prints the last position the stream holds.
    Publish {
        /// NATS server(s), comma-separated (nats://host:4222).
        #[arg(long, env = "KOKUHO_NATS_URL")]
        nats_url: Option<String>,
        /// Give up (exit 1) after this many seconds without a record stored.
        #[arg(long, default_value_t = 120)]
        give_up_after: u64,
        #[command(flatten)]
        database: Database,
    },
}

pub async fn run(command: FeedCommand) -> anyhow::Result<()> {
    match command {
        FeedCommand::Publish {
            nats_url,
            give_up_after,
            database,
        } => publish(nats_url, give_up_after, &database.url()).await,
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
            let recorded = super::record_export(store.db(), "feed export", &result).await;
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

/// `feed publish`: the relay of `serve`, run once up to the feed head.
async fn publish(nats_url: Option<String>, give_up_after: u64, url: &str) -> anyhow::Result<()> {
    let mut settings = Settings::from_env()?;
    app::check_settings(url, &settings)?;
    settings.nats.url = nats_url.or(settings.nats.url.take());
    anyhow::ensure!(
        settings.nats.url.is_some(),
        "no NATS server: give --nats-url or KOKUHO_NATS_URL"
    );
    let config = settings.nats.clone();
    let app = Builder::new(url).settings(settings).build().await?;
    // Each batch's access record (an export to the stream's consumers) is written before
    // the batch is published.
    let disclosure = Disclosure::new(app.access.recorder.clone(), "cli feed publish");
    let relay = Relay::new(app.ledger.clone(), config, disclosure)?.give_up_after(Duration::from_secs(give_up_after));
    let result = relay.run(Until::Head).await;
    drop(relay);
    let store = app.ledger.store().clone();
    drop(app.ledger);
    drop(app.access);
    let _ = app.writer_task.await;
    let _ = app.access_task.await;
    store.close().await;
    let outcome = result?;
    eprintln!(
        "published {} records ({} acknowledged as duplicates, {} re-synchronisations); the stream holds the feed up to position {}",
        outcome.published, outcome.duplicates, outcome.resyncs, outcome.position
    );
    println!("{}", outcome.position);
    Ok(())
}
