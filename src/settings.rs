//! Deployment settings, from the environment (documented in the README).

use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Settings {
    /// 保険者番号: six digits.
    pub insurer_number: String,
    /// The card symbol (記号) of this deployment.
    pub card_symbol: String,
    /// The audit log's origin name (signed checkpoints name it).
    pub log_origin: String,
    /// Where the My Number vault key lives; default beside the SQLite file, or
    /// `./kokuho-ledger.vault.key` for PostgreSQL.
    pub vault_key_file: Option<PathBuf>,
    /// Requests committed together by the group-commit writer.
    pub max_batch: usize,
    /// Digits of a card number issued from the sequence (zero-padded).
    pub card_number_width: usize,
    /// The audit checkpoint key (PKCS#8 PEM file): required with PostgreSQL; the embedded
    /// default creates one beside its database file.
    pub audit_key_file: Option<PathBuf>,
    /// The same key given inline (`KOKUHO_AUDIT_KEY`, PEM), for secret stores that pass
    /// environment variables rather than files.
    pub audit_key: Option<Secret>,
    /// Whether `GET /v1/feed` adds `my_number` to individual records (feed.md: only for a
    /// consumer allowed to see it; until access control exists, all feed consumers). Off by
    /// default.
    pub feed_my_number: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            insurer_number: "000000".into(),
            card_symbol: "1".into(),
            log_origin: "kokuho-ledger.local".into(),
            vault_key_file: None,
            max_batch: 256,
            card_number_width: 8,
            feed_my_number: false,
            audit_key_file: None,
            audit_key: None,
        }
    }
}

impl Settings {
    /// Reads `KOKUHO_INSURER_NUMBER`, `KOKUHO_CARD_SYMBOL`, `KOKUHO_LOG_ORIGIN`,
    /// `KOKUHO_VAULT_KEY_FILE`, `KOKUHO_MAX_BATCH`, `KOKUHO_CARD_NUMBER_WIDTH`,
    /// `KOKUHO_FEED_MY_NUMBER`, `KOKUHO_AUDIT_KEY_FILE`, `KOKUHO_AUDIT_KEY`.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut s = Self::default();
        if let Ok(v) = std::env::var("KOKUHO_INSURER_NUMBER") {
            anyhow::ensure!(
                v.len() == 6 && v.bytes().all(|b| b.is_ascii_digit()),
                "KOKUHO_INSURER_NUMBER must be 6 digits"
            );
            s.insurer_number = v;
        }
        if let Ok(v) = std::env::var("KOKUHO_CARD_SYMBOL") {
            crate::domain::CardSymbol::parse(&v).map_err(|e| anyhow::anyhow!("KOKUHO_CARD_SYMBOL: {}", e.message))?;
            s.card_symbol = v;
        }
        if let Ok(v) = std::env::var("KOKUHO_LOG_ORIGIN") {
            anyhow::ensure!(!v.trim().is_empty(), "KOKUHO_LOG_ORIGIN must not be empty");
            s.log_origin = v;
        }
        if let Ok(v) = std::env::var("KOKUHO_VAULT_KEY_FILE") {
            s.vault_key_file = Some(PathBuf::from(v));
        }
        if let Ok(v) = std::env::var("KOKUHO_MAX_BATCH") {
            s.max_batch = v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_MAX_BATCH must be a positive integer"))?;
        }
        if let Ok(v) = std::env::var("KOKUHO_CARD_NUMBER_WIDTH") {
            s.card_number_width = v
                .parse()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_CARD_NUMBER_WIDTH must be 1 to 16"))?;
        }
        if let Ok(v) = std::env::var("KOKUHO_AUDIT_KEY_FILE") {
            s.audit_key_file = Some(PathBuf::from(v));
        }
        if let Ok(v) = std::env::var("KOKUHO_AUDIT_KEY") {
            anyhow::ensure!(!v.trim().is_empty(), "KOKUHO_AUDIT_KEY must not be empty");
            s.audit_key = Some(Secret(v));
        }
        if let Ok(v) = std::env::var("KOKUHO_FEED_MY_NUMBER") {
            s.feed_my_number = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => anyhow::bail!("KOKUHO_FEED_MY_NUMBER must be true or false"),
            };
        }
        Ok(s)
    }
}

/// A secret setting: never printed (its Debug form is redacted).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}
