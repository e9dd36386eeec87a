//! Request rate limits per principal (access.md, api.md): over its burst a principal gets 429
//! `rate_limited` with `Retry-After` and an access record like every refusal; another
//! principal is served meanwhile; after the refill the first is served again.

use kokuho_testing as common;

use std::time::Duration;

use common::api::{code, Api};
use common::{ledger_on_with, on_both, test_settings, Kind, TestDb};
use kokuho_ledger::access::Role;
use kokuho_ledger::http::rate::RateLimit;
use kokuho_ledger::settings::Settings;

const BURST: u32 = 5;

async fn api(kind: Kind) -> Api {
    let settings = Settings {
        rate_limit: RateLimit {
            per_second: 2,
            burst: BURST,
        },
        ..test_settings()
    };
    Api::with(ledger_on_with(TestDb::new(kind).await, true, settings).await).await
}

on_both!(
    a_principal_over_its_burst_is_refused_until_the_refill,
    |kind| async move {
        let api = api(kind).await;
        let other = api.token("other-consumer", &[Role::FeedConsumer]).await;
        for i in 0..BURST {
            let r = api.get_now("/v1/feed").await;
            assert_eq!(r.status, 200, "request {i} of the burst");
        }
        let refused = api.get_with("/v1/feed", &[("x-request-id", "over-the-limit")]).await;
        assert_eq!(refused.status, 429);
        assert_eq!(code(&refused), "rate_limited");
        let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=1).contains(&retry), "Retry-After {retry}");

        // Another principal at the same time is unaffected.
        let r = api.get_as(&other, "/v1/feed").await;
        assert_eq!(r.status, 200);

        // The console answers a page, still 429.
        let page = api.get_now("/console/search").await;
        assert_eq!(page.status, 429);
        assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(page.headers.contains_key("retry-after"));

        // The refusal has its access record, naming the principal.
        let records = api.access_records().await;
        let record = records
            .iter()
            .find(|r| r.request_id == "over-the-limit")
            .expect("the refused request's record");
        assert_eq!(record.outcome, 429);
        assert_eq!(record.actor, api.name);

        // After Retry-After the bucket has refilled.
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let r = api.get_now("/v1/feed").await;
        assert_eq!(r.status, 200);
        api.t.db.cleanup().await;
    }
);

/// 0 would refuse every request: `serve` refuses to start instead.
#[test]
fn a_zero_limit_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    for var in ["KOKUHO_RATE_LIMIT_PER_SECOND", "KOKUHO_RATE_LIMIT_BURST"] {
        let mut child = std::process::Command::new(&*common::process::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
            .env("KOKUHO_INSURER_NUMBER", "131999")
            .env(var, "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("serve started with {var}=0");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{stderr}");
    }
}
