//! The audit trail: append throughput with and without the chainer (alternating, fresh
//! databases); the chaining rate; `audit verify` (rate, peak memory) against a bare read of the
//! same rows, on half the log and on all of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kokuho_ledger::app::Builder;
use kokuho_ledger::audit::chainer::Chainer;
use kokuho_ledger::audit::keys::Signer;
use kokuho_ledger::projections::Projections;
use kokuho_ledger::store::Store;
use kokuho_testing::TestDb;

use crate::support::{command_rate, import, ledger, product_binary, settings, timed, write_import_file};

/// Single-event commands from `clients` for `seconds` on a fresh database (events/s).
async fn append_rate(admin: &str, clients: usize, seconds: u64, audit: bool) -> anyhow::Result<f64> {
    let db = TestDb::postgres_at(admin, "kl_bench").await;
    let signer = audit.then(|| Arc::new(Signer::generate()));
    let app = ledger(&db.url, signer).await?;
    let ledger = app.ledger.clone();
    let store = ledger.store().clone();
    let rate = command_rate(&ledger, clients, seconds, false).await?;
    if audit {
        // Everything appended was chained meanwhile (or is at the next wake-up).
        let head = store.head().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ledger.audit().size().await? < head && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "    chained {} of {head} events within 30 s of the end",
            ledger.audit().size().await?
        );
    }
    store.close().await;
    drop(ledger);
    db.cleanup().await;
    Ok(rate)
}

/// Reads every event and audit row in pages, as the verifier does, without hashing (rows/s).
async fn bare_read(store: &Store) -> anyhow::Result<(i64, f64)> {
    let db = store.db().clone();
    let started = Instant::now();
    let (mut after, mut rows) = (0i64, 0i64);
    loop {
        let (events, audit) = tokio::try_join!(
            store.read_log(after, 10_000),
            kokuho_ledger::audit::store::rows_after(&db, after, 10_000)
        )?;
        rows += events.len() as i64;
        match events.last() {
            Some(e) => after = e.position,
            None => break,
        }
        std::hint::black_box(audit);
    }
    Ok((rows, rows as f64 / started.elapsed().as_secs_f64()))
}

/// `kokuho-ledger audit verify` as its own process: (seconds, peak resident KiB).
fn verify_process(url: &str, public_key: &str) -> anyhow::Result<(f64, u64)> {
    let (secs, rss, _) = timed(std::process::Command::new(product_binary()?).args([
        "audit",
        "verify",
        "--database-url",
        url,
        "--public-key",
        public_key,
    ]))?;
    Ok((secs, rss))
}

pub async fn run(admin: &str, url: &str, persons: usize, clients: usize, seconds: u64) -> anyhow::Result<()> {
    // Appends with and without the chainer, alternating, each on a fresh database.
    let mut rates: [Vec<f64>; 2] = Default::default();
    for _ in 0..2 {
        for audit in [false, true] {
            let rate = append_rate(admin, clients, seconds, audit).await?;
            println!(
                "  appends, {clients} clients, {seconds} s, chainer {}: {rate:.0} events/s",
                if audit { "on" } else { "off" }
            );
            rates[audit as usize].push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "appends with the chainer / without (mean of two each): {:.0} / {:.0} events/s, ratio {:.2}",
        mean(&rates[1]),
        mean(&rates[0]),
        mean(&rates[1]) / mean(&rates[0])
    );

    // The log in two halves: chain, read bare, verify — at half and at full size.
    let dir = tempfile::tempdir()?;
    let signer = Arc::new(Signer::generate());
    // Imported without the chainer (it runs apart below, to be timed on its own).
    let app = Builder::new(url).settings(settings()).build().await?;
    let store = app.ledger.store().clone();
    for (n, range) in [(1, 0..persons / 2), (2, persons / 2..persons)] {
        let file = dir.path().join(format!("part{n}.jsonl"));
        write_import_file(&file, range)?;
        import(&app.ledger, &file).await?;
        let head = store.head().await?;
        let chainer = Projections::new(
            store.clone(),
            vec![Box::new(Chainer::new("bench.kokuho-ledger", signer.clone()))],
        );
        chainer.load_checkpoints().await?;
        let before = chainer.position();
        let started = Instant::now();
        chainer.catch_up().await?;
        let chain_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        chainer.tick_all().await?;
        println!(
            "log of {head} events: chained {} entries in {chain_secs:.1} s ({:.0} entries/s)",
            head - before.max(0),
            (head - before.max(0)) as f64 / chain_secs
        );
        let (rows, bare) = bare_read(&store).await?;
        let (secs, rss) = verify_process(url, &signer.public_key())?;
        println!(
            "  bare sequential read of the same rows: {rows} rows, {bare:.0} rows/s; audit verify (own process): {secs:.1} s, {:.0} entries/s, ratio {:.2}, peak RSS {:.1} MiB",
            head as f64 / secs,
            head as f64 / secs / bare,
            rss as f64 / 1024.0
        );
    }
    store.close().await;
    Ok(())
}
