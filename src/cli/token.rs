//! `kokuho-ledger token create|list|revoke` (access.md): local bearer tokens, one named
//! principal each.

use clap::Subcommand;

use super::Database;
use crate::access::command_line::os_actor;
use crate::access::tokens::TokenStore;
use crate::access::Role;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once (the last line of stdout) and only its hash is kept.
    Create {
        /// The principal's name: the actor of everything done with the token.
        #[arg(long)]
        name: String,
        /// A role (inquiry, clerk, auditor, feed_consumer, exporter, admin, my_number); repeat
        /// for several.
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// Days until the token stops working (default: until revoked).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_days: Option<u32>,
        #[command(flatten)]
        database: Database,
    },
    /// List the tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        database: Database,
    },
    /// Revoke a token by name (a running server stops accepting it within 2 seconds).
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        database: Database,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).map_err(|e| e.to_string())
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            roles,
            expires_days,
            database,
        } => {
            let store = Store::connect(&database.url()).await?;
            let tokens = TokenStore::new(store.db().clone());
            let token = tokens
                .create(&name, &roles, expires_days, &os_actor(), chrono::Utc::now())
                .await;
            store.close().await;
            let token = token?;
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            eprintln!(
                "created token {name} ({}); it is shown once: keep it secret",
                roles.join(", ")
            );
            println!("{token}");
            Ok(())
        }
        TokenCommand::List { database } => {
            let store = Store::connect(&database.url()).await?;
            let list = TokenStore::new(store.db().clone()).list().await;
            store.close().await;
            for t in list? {
                let state = match (&t.revoked_at, &t.expires_at) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) => format!("expires {at}"),
                    (None, None) => "active".into(),
                };
                println!(
                    "{}\t{}\tcreated {} by {}\t{state}",
                    t.name,
                    t.roles.join(","),
                    t.created_at,
                    t.created_by
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { name, database } => {
            let store = Store::connect(&database.url()).await?;
            let result = TokenStore::new(store.db().clone())
                .revoke(&name, chrono::Utc::now())
                .await;
            store.close().await;
            result?;
            eprintln!("revoked token {name}");
            Ok(())
        }
    }
}
