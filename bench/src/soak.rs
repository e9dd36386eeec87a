//! `ledger-bench soak`: the soak driver of kokuho-testing (a real `serve` process under mixed
//! load, its resident memory sampled) for as long as asked; prints every sample, throughput
//! per kind, every outcome, and the memory check after the given warm-up.

use std::time::Duration;

use kokuho_testing::soak::{run as soak, Config};
use kokuho_testing::TestDb;

pub async fn run(db: &TestDb, minutes: u64, sample_seconds: u64, warm_up_seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::new(Duration::from_secs(minutes * 60), Duration::from_secs(sample_seconds));
    // One verify every ten minutes or so, at least one.
    cfg.verifies = (minutes as usize / 10).max(1);
    println!(
        "soak: {minutes} min; {} appenders, {} readers, {} feed consumers, pause {} ms; RSS every {sample_seconds} s",
        cfg.appenders,
        cfg.readers,
        cfg.feed_consumers,
        cfg.pause.as_millis()
    );
    let report = soak(db, dir.path(), &cfg).await?;
    print!("{}", report.summary(sample_seconds as f64));
    let g = report.growth(Duration::from_secs(warm_up_seconds));
    println!(
        "memory after {warm_up_seconds} s of warm-up: max of the first third {:.1} MiB, of the last third {:.1} MiB, limit {:.1} MiB: {}",
        g.first_max_kib as f64 / 1024.0,
        g.last_max_kib as f64 / 1024.0,
        g.limit_kib as f64 / 1024.0,
        if g.ok() { "no growth" } else { "GROWS" }
    );
    let unexpected = report.unexpected();
    println!("unexpected outcomes: {}", unexpected.len());
    anyhow::ensure!(unexpected.is_empty(), "unexpected outcomes: {unexpected:?}");
    Ok(())
}
