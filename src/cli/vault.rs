//! `kokuho-ledger vault keygen`: the My Number vault's key.

use std::path::PathBuf;

use clap::Subcommand;

use crate::vault::Vault;

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Create a new vault key (64 hex digits, mode 0600). Keep it secret and backed up: the
    /// stored My Numbers cannot be read without it.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(command: VaultCommand) -> anyhow::Result<()> {
    match command {
        VaultCommand::Keygen { out } => {
            Vault::create_key_file(&out)?;
            eprintln!(
                "wrote {} (keep it secret and backed up; set KOKUHO_VAULT_KEY_FILE to its path)",
                out.display()
            );
            Ok(())
        }
    }
}
