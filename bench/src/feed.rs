//! The change feed: generation during and after an import, paging over TCP against the same
//! pages by SQL, the long-poll wake-up, and the CSV export in Shift_JIS against UTF-8.

use std::time::{Duration, Instant};

use kokuho_ledger::domain::PersonId;
use kokuho_ledger::feed::export::{export, Encoding};
use kokuho_ledger::projections::feed::{feed_head, feed_records};
use kokuho_ledger::request::RequestContext;
use serde_json::json;

use crate::support::{import, ledger, percentiles, person_id, serve, write_import_file, Conn};

async fn feed_position(p: &kokuho_ledger::projections::Projections) -> anyhow::Result<i64> {
    Ok(p.status()
        .await?
        .into_iter()
        .find(|s| s.name == "feed")
        .map_or(0, |s| s.position))
}

pub async fn run(url: &str, persons: usize, export_records: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    // The feed consumer runs (as in `serve`) while the import writes the log.
    let app = ledger(url, None).await?;
    let ledger = app.ledger.clone();
    let store = ledger.store().clone();
    let p = ledger.projections().clone();
    let started = Instant::now();
    let summary = import(&ledger, &file).await?;
    let import_secs = started.elapsed().as_secs_f64();
    let head = store.head().await?;
    let at_import_end = feed_position(&p).await?;
    println!("import: {summary}");
    loop {
        if feed_position(&p).await? >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let db = store.db().clone();
    let records = feed_head(&db).await?;
    println!(
        "feed during the import of {head} events ({import_secs:.1} s): the feed consumer applied {at_import_end} events ({:.0} events/s); caught up {:.1} s after the import ended; overall {:.0} events/s and {:.0} feed records/s ({records} records)",
        at_import_end as f64 / import_secs,
        total_secs - import_secs,
        head as f64 / total_secs,
        records as f64 / total_secs,
    );

    // Reading the whole feed over TCP, limit=1000, one consumer (baseline: the same pages by SQL).
    let started = Instant::now();
    let mut after = 0;
    loop {
        let page = feed_records(&db, after, 1000).await?;
        if page.len() < 1000 {
            break;
        }
        after += 1000;
    }
    let sql_rate = records as f64 / started.elapsed().as_secs_f64();
    let addr = serve(&app).await?;
    let mut conn = Conn::open(&addr).await?;
    let started = Instant::now();
    let (mut after, mut bytes, mut pages) = (0i64, 0usize, 0usize);
    while after < records {
        let (status, len) = conn.get(&format!("/v1/feed?after={after}&limit=1000")).await?;
        anyhow::ensure!(status == 200, "status {status}");
        after = (after + 1000).min(records);
        bytes += len;
        pages += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "GET /v1/feed?limit=1000 over TCP, whole feed: {pages} pages, {:.0} records/s, {:.0} MB/s; \
         the same pages by bare SQL: {sql_rate:.0} records/s; ratio {:.2}",
        records as f64 / secs,
        bytes as f64 / secs / 1e6,
        records as f64 / secs / sql_rate
    );

    // Long-poll wake-up: a consumer waits at the head with wait=30; a command whose group
    // changes the feed is appended; time from its acknowledgement to the consumer's answer
    // (an upper bound of the time from the record's commit).
    let mut waits = Vec::new();
    for i in 0..40usize {
        let head = feed_head(&db).await?;
        let addr = addr.clone();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let consumer = tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let _ = ready.send(());
            let (status, _) = conn.get(&format!("/v1/feed?after={head}&limit=10&wait=30")).await?;
            anyhow::ensure!(status == 200, "status {status}");
            Ok::<_, anyhow::Error>(Instant::now())
        });
        is_ready.await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pid = PersonId::parse(&person_id(i))?;
        let body = json!({"type": "name_changed", "effective_date": "2020-02-02", "name": format!("山田 {i}"), "name_kana": "ヤマダ　ハナコ"});
        ledger
            .record_person_event(&pid, &body, &RequestContext::default())
            .await?;
        let acknowledged = Instant::now();
        let answered = consumer.await??;
        waits.push(answered.saturating_duration_since(acknowledged));
    }
    let (p50, p99, max) = percentiles(waits);
    println!(
        "long-poll wait=30, append acknowledged → consumer answered: p50 {p50:?}, p99 {p99:?}, max {max:?} (40 runs)"
    );

    // Export: the same records to Shift_JIS and to UTF-8 (the same bytes with no transcoding).
    let limit = export_records.min(records as usize);
    let mut rates = Vec::new();
    for (label, encoding) in [
        ("UTF-8 (no encoding)", Encoding::Utf8),
        ("Shift_JIS", Encoding::ShiftJis),
        ("UTF-8 (no encoding)", Encoding::Utf8),
        ("Shift_JIS", Encoding::ShiftJis),
    ] {
        let out = dir.path().join(format!("export-{label}"));
        let started = Instant::now();
        let e = export(&store, 0, Some(limit), &out, encoding, false).await?;
        let secs = started.elapsed().as_secs_f64();
        let size = std::fs::metadata(&e.household_file)?.len() + std::fs::metadata(&e.individual_file)?.len();
        println!(
            "export {label}: {} records in {secs:.2} s, {:.0} records/s, {:.1} MB",
            e.records,
            e.records as f64 / secs,
            size as f64 / 1e6
        );
        rates.push((encoding, e.records as f64 / secs));
        std::fs::remove_file(&e.household_file)?;
        std::fs::remove_file(&e.individual_file)?;
    }
    let best = |enc| {
        rates
            .iter()
            .filter(|(e, _)| *e == enc)
            .map(|(_, r)| *r)
            .fold(0.0, f64::max)
    };
    println!(
        "export ratio Shift_JIS / UTF-8 (best of two each): {:.2}",
        best(Encoding::ShiftJis) / best(Encoding::Utf8)
    );
    store.close().await;
    Ok(())
}
