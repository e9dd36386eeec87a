//! `kokuho-ledger access verify|purge` (access.md): the access log's chain, and the removal of
//! records past their five years.

use clap::Subcommand;

use super::Database;
use crate::access::command_line::os_actor;
use crate::access::log;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Recompute the access log's hash chain from its start (or the last purge marker) to its
    /// head. Exit 0 when intact, 1 naming the first broken record.
    Verify {
        #[command(flatten)]
        database: Database,
    },
    /// Remove the records from before DATE (Asia/Tokyo), which must be at least five years
    /// ago; a marker keeps the rest verifiable.
    Purge {
        /// YYYY-MM-DD, at least five years before today.
        #[arg(long, value_parser = super::parse_date_arg)]
        before: chrono::NaiveDate,
        #[command(flatten)]
        database: Database,
    },
}

pub async fn run(command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Verify { database } => {
            let store = Store::connect(&database.url()).await?;
            let result = log::verify(store.db()).await;
            store.close().await;
            let v = result?;
            println!(
                "access log intact: {} records verified through id {} (purged through {}), head {}",
                v.records, v.last_id, v.purged_through, v.head
            );
            Ok(())
        }
        AccessCommand::Purge { before, database } => {
            let store = Store::connect(&database.url()).await?;
            let now = chrono::Utc::now();
            let today = crate::clock::tokyo_date(now);
            let result = log::purge(store.db(), before, today, now, &os_actor()).await;
            store.close().await;
            let p = result?;
            println!(
                "purged {} access records from before {before}; the log now starts after record {}",
                p.removed, p.through_id
            );
            Ok(())
        }
    }
}
