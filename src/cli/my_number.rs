//! `kokuho-ledger my-number erase` (access.md): erase sealed My Numbers, their secrets and
//! their index entries; the commitments in the log stay and can no longer be linked to any
//! number, so the audit trail still verifies.

use clap::{ArgGroup, Subcommand};

use super::Database;
use crate::access::command_line::CommandLine;
use crate::access::AccessKind;
use crate::clock::tokyo_midnight;
use crate::domain::PersonId;
use crate::store::Store;
use crate::vault::numbers;

#[derive(Subcommand, Debug)]
pub enum MyNumberCommand {
    /// Erase one person's My Number, or every number stored before a date.
    #[command(group(ArgGroup::new("which").required(true).args(["person", "registered_before"])))]
    Erase {
        /// The person (宛名番号) whose number goes.
        #[arg(long, value_parser = parse_person)]
        person: Option<PersonId>,
        /// Every number stored before this day (YYYY-MM-DD, Asia/Tokyo).
        #[arg(long, value_parser = super::parse_date_arg)]
        registered_before: Option<chrono::NaiveDate>,
        #[command(flatten)]
        database: Database,
    },
}

fn parse_person(s: &str) -> Result<PersonId, String> {
    PersonId::parse(s).map_err(|e| e.message)
}

pub async fn run(command: MyNumberCommand) -> anyhow::Result<()> {
    let MyNumberCommand::Erase {
        person,
        registered_before,
        database,
    } = command;
    let store = Store::connect(&database.url()).await?;
    let result = match (&person, registered_before) {
        (Some(p), _) => {
            numbers::erase_person(store.db(), p)
                .await
                .map(|n| if n > 0 { vec![p.to_string()] } else { Vec::new() })
        }
        (None, Some(day)) => numbers::erase_stored_before(store.db(), tokyo_midnight(day)).await,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let cli = CommandLine::start(store.db(), "my-number erase");
    let recorded = match &result {
        Ok(persons) => cli.touched(AccessKind::Update, persons.clone(), true, None).await,
        Err(_) => cli.touched(AccessKind::Update, Vec::new(), false, None).await,
    };
    cli.finish().await;
    store.close().await;
    let erased = result?;
    recorded?;
    println!("erased the My Numbers of {} persons", erased.len());
    Ok(())
}
