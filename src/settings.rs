//! Deployment settings, from the environment (documented in the README and in
//! `kokuho-ledger --help`). Each is parsed once, here; the rest of the ledger holds the parsed
//! types.

use std::path::PathBuf;

use crate::access::oidc::OidcConfig;
use crate::access::terminal::TrustedProxies;
use crate::access::unusual::UnusualRules;
use crate::access::RoleTable;
use crate::domain::{CardSymbol, InsurerNumber};
use crate::feed::relay::RelayConfig;

/// The environment variables the ledger reads, with what each means (for `--help`).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://… or sqlite://path (default sqlite://./kokuho-ledger.db)",
    ),
    ("KOKUHO_LISTEN", "listen address of `serve` (default 127.0.0.1:8080)"),
    (
        "KOKUHO_INSURER_NUMBER",
        "保険者番号, six digits (required with PostgreSQL)",
    ),
    (
        "KOKUHO_CARD_SYMBOL",
        "card symbol (記号) of the numbers the ledger issues (default 1)",
    ),
    ("KOKUHO_CARD_NUMBER_WIDTH", "digits of card numbers (default 8)"),
    (
        "KOKUHO_READ_MEMORY_MIB",
        "memory for person views and timelines answered before, given again until an event changes them (default 256; 0: none)",
    ),
    (
        "KOKUHO_LOG_ORIGIN",
        "the audit log's origin name (default kokuho-ledger.local)",
    ),
    (
        "KOKUHO_VAULT_KEY_FILE",
        "My Number vault key file (required with PostgreSQL)",
    ),
    (
        "KOKUHO_VAULT_KEY",
        "the vault key inline (64 hex digits), instead of a file",
    ),
    (
        "KOKUHO_AUDIT_KEY_FILE",
        "Ed25519 checkpoint key file (required with PostgreSQL)",
    ),
    ("KOKUHO_AUDIT_KEY", "the checkpoint key inline (PEM), instead of a file"),
    (
        "KOKUHO_MAX_BATCH",
        "requests committed together by the group-commit writer (default 256)",
    ),
    (
        "KOKUHO_ROLE_TABLE",
        "role table file (TOML, role = [permissions]); default: access.md's table",
    ),
    (
        "KOKUHO_OIDC_ISSUER",
        "OpenID Connect issuer URL of the staff identity provider",
    ),
    (
        "KOKUHO_OIDC_CLIENT_ID",
        "the ledger's client id at the identity provider",
    ),
    ("KOKUHO_OIDC_CLIENT_SECRET", "its client secret (console sign-in)"),
    (
        "KOKUHO_OIDC_AUDIENCE",
        "the aud API tokens must carry (default: the client id)",
    ),
    ("KOKUHO_OIDC_USER_CLAIM", "claim naming the staff member (default sub)"),
    ("KOKUHO_OIDC_ROLES_CLAIM", "claim listing their groups (default groups)"),
    (
        "KOKUHO_OIDC_ROLE_MAP",
        "group=role pairs, comma-separated (role names map to themselves)",
    ),
    (
        "KOKUHO_TRUSTED_PROXIES",
        "proxies (addresses, networks) whose X-Terminal-Id / X-Forwarded-For name the terminal",
    ),
    (
        "KOKUHO_BUSINESS_HOURS",
        "business hours, Asia/Tokyo, Mon–Fri (default 08:30-17:15)",
    ),
    (
        "KOKUHO_BULK_ACCESS_THRESHOLD",
        "distinct persons per actor and hour above which access is unusual (default 100)",
    ),
    (
        "KOKUHO_CONSOLE_IDLE_SECONDS",
        "staff console sessions end after this many idle seconds (default 900)",
    ),
    (
        "KOKUHO_PUBLIC_URL",
        "the console's public base URL (OIDC redirect URI; https makes cookies Secure)",
    ),
    (
        "KOKUHO_NATS_URL",
        "NATS server(s) of the change feed relay (comma-separated); unset: no relay",
    ),
    (
        "KOKUHO_NATS_STREAM",
        "JetStream stream of the feed (default KOKUHO_FEED)",
    ),
    (
        "KOKUHO_NATS_SUBJECT_PREFIX",
        "records go to <prefix>.<insurer number> (default kokuho.feed)",
    ),
    (
        "KOKUHO_NATS_REPLICAS",
        "replicas of the stream the relay creates (default 1; 3 on a cluster)",
    ),
    (
        "KOKUHO_NATS_DUPLICATE_WINDOW",
        "seconds the stream remembers message ids (default 120)",
    ),
    (
        "KOKUHO_NATS_MY_NUMBER",
        "true: the stream is the intermediate-server channel, records carry my_number",
    ),
    (
        "KOKUHO_HEADER_TIMEOUT_SECONDS",
        "a client must send a request's headers within this (default 10)",
    ),
    (
        "KOKUHO_BODY_TIMEOUT_SECONDS",
        "… and its body within this after the headers (default 60)",
    ),
    (
        "KOKUHO_STORAGE_RESERVE_MB",
        "embedded default: disk space held back for access records when the disk fills (default 64)",
    ),
    (
        "KOKUHO_RATE_LIMIT_PER_SECOND",
        "requests a second per principal before 429 rate_limited (default 300)",
    ),
    (
        "KOKUHO_RATE_LIMIT_BURST",
        "… and how many it may send at once (default 600)",
    ),
    (
        "RUST_LOG",
        "log filter (default info); logs carry ids, never names or My Numbers",
    ),
];

/// The environment section of `--help`.
pub fn environment_help() -> String {
    let mut s = String::from("Environment:\n");
    for (name, what) in ENVIRONMENT {
        s.push_str(&format!("  {name:<26} {what}\n"));
    }
    s
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// 保険者番号.
    pub insurer_number: InsurerNumber,
    /// The card symbol (記号) of the numbers this deployment issues.
    pub card_symbol: CardSymbol,
    /// Digits of a card number (issued from the sequence zero-padded; typed-in ones must match).
    pub card_number_width: usize,
    /// The audit log's origin name (signed checkpoints name it).
    pub log_origin: String,
    /// Where the My Number vault key lives: required with PostgreSQL; the embedded default
    /// keeps it beside its database file.
    pub vault_key_file: Option<PathBuf>,
    /// The same key given inline (`KOKUHO_VAULT_KEY`, 64 hex digits).
    pub vault_key: Option<Secret>,
    /// Requests committed together by the group-commit writer.
    pub max_batch: usize,
    /// The audit checkpoint key (PKCS#8 PEM file): required with PostgreSQL; the embedded
    /// default creates one beside its database file.
    pub audit_key_file: Option<PathBuf>,
    /// The same key given inline (`KOKUHO_AUDIT_KEY`, PEM), for secret stores that pass
    /// environment variables rather than files.
    pub audit_key: Option<Secret>,
    /// The role table (`KOKUHO_ROLE_TABLE`), access.md's defaults when unset.
    pub role_table: RoleTable,
    /// The staff identity provider, when configured.
    pub oidc: Option<OidcConfig>,
    pub trusted_proxies: TrustedProxies,
    pub unusual: UnusualRules,
    /// Console sessions end after this idle period (`KOKUHO_CONSOLE_IDLE_SECONDS`).
    pub console_idle: std::time::Duration,
    /// The console's public base URL (`KOKUHO_PUBLIC_URL`): the OpenID Connect redirect URI
    /// is built from it, and an `https` URL makes the session cookie `Secure`.
    pub public_url: Option<String>,
    /// The change feed relay to NATS JetStream (`KOKUHO_NATS_*`).
    pub nats: RelayConfig,
    /// How long a client may take to send a request (`KOKUHO_*_TIMEOUT_SECONDS`).
    pub timeouts: crate::http::serve::Timeouts,
    /// Requests per principal (`KOKUHO_RATE_LIMIT_*`).
    pub rate_limit: crate::http::rate::RateLimit,
    /// Bytes of answers kept in memory (`KOKUHO_READ_MEMORY_MIB`).
    pub read_memory: u64,
}

/// The default memory for answers kept: a ward of 100,000 persons' timelines and views (about
/// 1.4 and 0.4 KiB each, compressed) fit in it.
pub const READ_MEMORY_MIB: u64 = 256;

impl Default for Settings {
    fn default() -> Self {
        Self {
            insurer_number: InsurerNumber::parse("000000").expect("six digits"),
            card_symbol: CardSymbol::parse("1").expect("a valid symbol"),
            card_number_width: 8,
            log_origin: "kokuho-ledger.local".into(),
            vault_key_file: None,
            vault_key: None,
            max_batch: 256,
            role_table: RoleTable::default(),
            oidc: None,
            trusted_proxies: TrustedProxies::default(),
            unusual: UnusualRules::default(),
            audit_key_file: None,
            audit_key: None,
            console_idle: crate::access::sessions::DEFAULT_IDLE,
            public_url: None,
            nats: RelayConfig::default(),
            timeouts: crate::http::serve::Timeouts::default(),
            rate_limit: crate::http::rate::RateLimit::default(),
            read_memory: READ_MEMORY_MIB << 20,
        }
    }
}

/// Reads one variable; None when unset.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Settings {
    /// Reads the `KOKUHO_*` variables of [`ENVIRONMENT`].
    pub fn from_env() -> anyhow::Result<Self> {
        let mut s = Self::default();
        if let Some(v) = var("KOKUHO_INSURER_NUMBER") {
            s.insurer_number =
                InsurerNumber::parse(&v).map_err(|_| anyhow::anyhow!("KOKUHO_INSURER_NUMBER must be 6 digits"))?;
        }
        if let Some(v) = var("KOKUHO_CARD_SYMBOL") {
            s.card_symbol = CardSymbol::parse(&v).map_err(|e| anyhow::anyhow!("KOKUHO_CARD_SYMBOL: {}", e.message))?;
        }
        if let Some(v) = var("KOKUHO_LOG_ORIGIN") {
            anyhow::ensure!(!v.trim().is_empty(), "KOKUHO_LOG_ORIGIN must not be empty");
            s.log_origin = v;
        }
        if let Some(v) = var("KOKUHO_VAULT_KEY_FILE") {
            s.vault_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("KOKUHO_VAULT_KEY") {
            anyhow::ensure!(!v.trim().is_empty(), "KOKUHO_VAULT_KEY must not be empty");
            s.vault_key = Some(Secret(v));
        }
        if let Some(v) = var("KOKUHO_MAX_BATCH") {
            s.max_batch = v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_MAX_BATCH must be a positive integer"))?;
        }
        if let Some(v) = var("KOKUHO_CARD_NUMBER_WIDTH") {
            s.card_number_width = v
                .parse()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_CARD_NUMBER_WIDTH must be 1 to 16"))?;
        }
        if let Some(v) = var("KOKUHO_AUDIT_KEY_FILE") {
            s.audit_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("KOKUHO_AUDIT_KEY") {
            anyhow::ensure!(!v.trim().is_empty(), "KOKUHO_AUDIT_KEY must not be empty");
            s.audit_key = Some(Secret(v));
        }
        if var("KOKUHO_FEED_MY_NUMBER").is_some() {
            anyhow::bail!(
                "KOKUHO_FEED_MY_NUMBER is no longer read: a feed consumer sees my_number when its credential holds the my_number role \
                 (for the NATS relay's stream, KOKUHO_NATS_MY_NUMBER)"
            );
        }
        if let Some(v) = var("KOKUHO_ROLE_TABLE") {
            s.role_table =
                RoleTable::load(std::path::Path::new(&v)).map_err(|e| anyhow::anyhow!("KOKUHO_ROLE_TABLE: {e}"))?;
        }
        s.oidc = oidc_from_env()?;
        if let Some(v) = var("KOKUHO_TRUSTED_PROXIES") {
            s.trusted_proxies =
                TrustedProxies::parse(&v).map_err(|e| anyhow::anyhow!("KOKUHO_TRUSTED_PROXIES: {e}"))?;
        }
        if let Some(v) = var("KOKUHO_BUSINESS_HOURS") {
            s.unusual
                .parse_hours(&v)
                .map_err(|e| anyhow::anyhow!("KOKUHO_BUSINESS_HOURS: {e}"))?;
        }
        if let Some(v) = var("KOKUHO_BULK_ACCESS_THRESHOLD") {
            s.unusual.bulk_threshold = v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_BULK_ACCESS_THRESHOLD must be a positive integer"))?;
        }
        if let Some(v) = var("KOKUHO_CONSOLE_IDLE_SECONDS") {
            s.console_idle = v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_CONSOLE_IDLE_SECONDS must be 1 to 86400"))?;
        }
        if let Some(v) = var("KOKUHO_PUBLIC_URL") {
            let url = reqwest::Url::parse(&v).map_err(|e| anyhow::anyhow!("KOKUHO_PUBLIC_URL: {e}"))?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https") && url.query().is_none(),
                "KOKUHO_PUBLIC_URL must be an http(s) base URL without a query"
            );
            s.public_url = Some(v.trim_end_matches('/').to_owned());
        }
        s.nats = nats_from_env()?;
        if let Some(v) = var("KOKUHO_HEADER_TIMEOUT_SECONDS") {
            s.timeouts.header_read = seconds("KOKUHO_HEADER_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = var("KOKUHO_BODY_TIMEOUT_SECONDS") {
            s.timeouts.body_read = seconds("KOKUHO_BODY_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = var("KOKUHO_READ_MEMORY_MIB") {
            s.read_memory = v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 1 << 20)
                .map(|n| n << 20)
                .ok_or_else(|| anyhow::anyhow!("KOKUHO_READ_MEMORY_MIB must be 0 to 1048576"))?;
        }
        // Read by the store when it opens the embedded database; refused here, at start.
        crate::store::space::reserve_bytes_from_env().map_err(anyhow::Error::msg)?;
        if let Some(v) = var("KOKUHO_RATE_LIMIT_PER_SECOND") {
            s.rate_limit.per_second = positive("KOKUHO_RATE_LIMIT_PER_SECOND", &v)?;
        }
        if let Some(v) = var("KOKUHO_RATE_LIMIT_BURST") {
            s.rate_limit.burst = positive("KOKUHO_RATE_LIMIT_BURST", &v)?;
        }
        Ok(s)
    }
}

/// A positive count (0 would refuse every request).
fn positive(name: &str, v: &str) -> anyhow::Result<u32> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| anyhow::anyhow!("{name} must be a positive integer"))
}

/// A timeout of 1 to 3600 seconds.
fn seconds(name: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (1..=3600).contains(n))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| anyhow::anyhow!("{name} must be 1 to 3600"))
}

/// The relay's settings; `KOKUHO_NATS_MY_NUMBER` is its own switch (not the removed
/// `KOKUHO_FEED_MY_NUMBER`): an HTTP consumer's credential decides per request, but a stream
/// has no credential per reader, so the deployment names the stream that is the
/// intermediate-server channel.
fn nats_from_env() -> anyhow::Result<RelayConfig> {
    let mut c = RelayConfig {
        url: var("KOKUHO_NATS_URL").filter(|v| !v.trim().is_empty()),
        ..RelayConfig::default()
    };
    if let Some(v) = var("KOKUHO_NATS_STREAM") {
        RelayConfig::check_stream_name(&v).map_err(|e| anyhow::anyhow!("KOKUHO_NATS_STREAM: {e}"))?;
        c.stream = v;
    }
    if let Some(v) = var("KOKUHO_NATS_SUBJECT_PREFIX") {
        RelayConfig::check_subject_prefix(&v).map_err(|e| anyhow::anyhow!("KOKUHO_NATS_SUBJECT_PREFIX: {e}"))?;
        c.subject_prefix = v;
    }
    if let Some(v) = var("KOKUHO_NATS_REPLICAS") {
        c.replicas = v
            .parse()
            .ok()
            .filter(|n| (1..=5).contains(n))
            .ok_or_else(|| anyhow::anyhow!("KOKUHO_NATS_REPLICAS must be 1 to 5"))?;
    }
    if let Some(v) = var("KOKUHO_NATS_DUPLICATE_WINDOW") {
        let secs: u64 = v
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| anyhow::anyhow!("KOKUHO_NATS_DUPLICATE_WINDOW must be a positive number of seconds"))?;
        c.duplicate_window = std::time::Duration::from_secs(secs);
    }
    if let Some(v) = var("KOKUHO_NATS_MY_NUMBER") {
        c.my_number = match v.trim() {
            "true" | "1" => true,
            "false" | "0" | "" => false,
            _ => anyhow::bail!("KOKUHO_NATS_MY_NUMBER must be true or false"),
        };
    }
    Ok(c)
}

/// The identity provider's settings: all of issuer and client id, or none.
fn oidc_from_env() -> anyhow::Result<Option<OidcConfig>> {
    let issuer = var("KOKUHO_OIDC_ISSUER").filter(|v| !v.trim().is_empty());
    let client_id = var("KOKUHO_OIDC_CLIENT_ID").filter(|v| !v.trim().is_empty());
    let (issuer, client_id) = match (issuer, client_id) {
        (Some(i), Some(c)) => (i, c),
        (None, None) => {
            for other in [
                "KOKUHO_OIDC_CLIENT_SECRET",
                "KOKUHO_OIDC_AUDIENCE",
                "KOKUHO_OIDC_USER_CLAIM",
                "KOKUHO_OIDC_ROLES_CLAIM",
                "KOKUHO_OIDC_ROLE_MAP",
            ] {
                anyhow::ensure!(var(other).is_none(), "{other} is set but KOKUHO_OIDC_ISSUER is not");
            }
            return Ok(None);
        }
        _ => anyhow::bail!("KOKUHO_OIDC_ISSUER and KOKUHO_OIDC_CLIENT_ID go together"),
    };
    let url = reqwest::Url::parse(&issuer).map_err(|e| anyhow::anyhow!("KOKUHO_OIDC_ISSUER: {e}"))?;
    anyhow::ensure!(
        url.scheme() == "https" || url.host_str().is_some_and(|h| h == "localhost" || h == "127.0.0.1"),
        "KOKUHO_OIDC_ISSUER must be an https URL (plain http only on localhost)"
    );
    let role_map = match var("KOKUHO_OIDC_ROLE_MAP") {
        Some(v) => OidcConfig::parse_role_map(&v).map_err(|e| anyhow::anyhow!("KOKUHO_OIDC_ROLE_MAP: {e}"))?,
        None => Default::default(),
    };
    Ok(Some(OidcConfig {
        audience: var("KOKUHO_OIDC_AUDIENCE").unwrap_or_else(|| client_id.clone()),
        issuer,
        client_id,
        client_secret: var("KOKUHO_OIDC_CLIENT_SECRET").map(Secret),
        user_claim: var("KOKUHO_OIDC_USER_CLAIM").unwrap_or_else(|| "sub".into()),
        roles_claim: var("KOKUHO_OIDC_ROLES_CLAIM").unwrap_or_else(|| "groups".into()),
        role_map,
    }))
}

/// A secret setting: never printed (its Debug form is redacted).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}
