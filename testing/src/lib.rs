//! Test support for kokuho-ledger, shared by its tests and its benchmarks: a fresh database
//! per test, on the real PostgreSQL server named by `DATABASE_URL` (never skipped: an
//! unreachable server fails the test) or a temporary SQLite file; ledgers with a fixed clock;
//! an HTTP client of the router.

pub mod api;
pub mod cqrs_repo;
pub mod history;
pub mod load;
pub mod nats;
pub mod oidc;
pub mod pg;
pub mod process;
pub mod soak;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kokuho_ledger::access::Access;
use kokuho_ledger::app::Builder;
use kokuho_ledger::clock::FixedClock;
use kokuho_ledger::domain::InsurerNumber;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::settings::Settings;
use kokuho_ledger::store::Store;
use kokuho_ledger::vault::Vault;
use sqlx::Connection;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// "Today" of the tests: 2026-11-25, noon in Tokyo.
pub fn test_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T03:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub enum Kind {
    Postgres,
    Sqlite,
}

pub struct TestDb {
    pub url: String,
    pg_admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

impl TestDb {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Postgres => Self::postgres_at(&pg_admin_url(), "kl_test").await,
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
                TestDb {
                    url,
                    pg_admin: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// A fresh database named `<prefix>_<random>` on the PostgreSQL server of `admin`.
    pub async fn postgres_at(admin: &str, prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL is required: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        TestDb {
            url: with_database(admin, &name),
            pg_admin: Some((admin.to_owned(), name)),
            _dir: None,
        }
    }

    /// The same database for another ledger ("another process"); only the original cleans up.
    /// A database at `url` that the test looks after itself (nothing is dropped).
    pub fn at(url: String) -> TestDb {
        TestDb {
            url,
            pg_admin: None,
            _dir: None,
        }
    }

    pub fn share(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            pg_admin: None,
            _dir: None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg_admin.is_some()
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    /// Ends every server connection to this PostgreSQL database but the caller's
    /// (`pg_terminate_backend`, as an administrator or a failover would); how many it ended.
    pub async fn end_connections(&self) -> i64 {
        let (admin, name) = self.pg_admin.as_ref().expect("a PostgreSQL test database");
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
        let ended = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        ended
    }

    /// Drops the PostgreSQL database (the SQLite directory goes with the value).
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg_admin {
            let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

pub struct TestLedger {
    /// Stops the projection runners when sent `true` or dropped.
    pub stop_projections: tokio::sync::watch::Sender<bool>,
    pub db: TestDb,
    pub ledger: Arc<Ledger>,
    /// Identity, roles and the access log of the ledger's HTTP service.
    pub access: Arc<Access>,
    pub store: Store,
    pub clock: Arc<FixedClock>,
}

/// The settings of the tests' deployment (insurer 131999). Tests drive one token as fast as
/// the machine goes, so their rate limit is generous; the rate-limit tests set their own.
pub fn test_settings() -> Settings {
    Settings {
        insurer_number: InsurerNumber::parse("131999").unwrap(),
        rate_limit: kokuho_ledger::http::rate::RateLimit {
            per_second: GENEROUS_RATE,
            burst: GENEROUS_RATE,
        },
        ..Settings::default()
    }
}

/// The tests' rate limit per principal (requests a second, and burst).
pub const GENEROUS_RATE: u32 = 1_000_000;

/// A ledger with its projection runners going, as `serve` has.
pub async fn ledger(kind: Kind) -> TestLedger {
    ledger_with(kind, true).await
}

/// A ledger; with `run_projections` false, nothing applies the log to the projections unless
/// the test drives them.
pub async fn ledger_with(kind: Kind, run_projections: bool) -> TestLedger {
    let db = TestDb::new(kind).await;
    ledger_on(db, run_projections).await
}

/// Another ledger (another "process") on an existing database.
pub async fn ledger_on(db: TestDb, run_projections: bool) -> TestLedger {
    ledger_on_with(db, run_projections, test_settings()).await
}

/// As [`ledger_on`], with other settings.
pub async fn ledger_on_with(db: TestDb, run_projections: bool, settings: Settings) -> TestLedger {
    ledger_full(db, run_projections, settings, None).await
}

/// A ledger whose projections include the audit chainer, signing with `signer`.
pub async fn audited_ledger_on(
    db: TestDb,
    run_projections: bool,
    signer: Arc<kokuho_ledger::audit::keys::Signer>,
) -> TestLedger {
    let settings = Settings {
        log_origin: "test.kokuho-ledger".into(),
        ..test_settings()
    };
    ledger_full(db, run_projections, settings, Some(signer)).await
}

async fn ledger_full(
    db: TestDb,
    run_projections: bool,
    settings: Settings,
    signer: Option<Arc<kokuho_ledger::audit::keys::Signer>>,
) -> TestLedger {
    let clock = Arc::new(FixedClock::new(test_now()));
    let mut builder = Builder::new(&db.url)
        .settings(Settings {
            max_batch: 64,
            ..settings
        })
        .clock(clock.clone())
        .vault(Vault::from_key([42; 32]));
    if let Some(signer) = signer {
        builder = builder.audit(signer);
    }
    let app = builder.build().await.expect("the ledger opens");
    let (ledger, access) = (app.ledger, app.access);
    let store = ledger.store().clone();
    let (stop_projections, stopped) = tokio::sync::watch::channel(false);
    if run_projections {
        ledger.projections().spawn(stopped.clone());
        ledger.feed.spawn_tail(stopped);
    }
    TestLedger {
        stop_projections,
        db,
        ledger,
        access,
        store,
        clock,
    }
}

/// Defines one test per backend: `name::postgres` and `name::sqlite`.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                ($body)($crate::Kind::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                ($body)($crate::Kind::Sqlite).await
            }
        }
    };
}
