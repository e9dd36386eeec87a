//! `kokuho-ledger rebuild`: every read model again from position 1, then the permanent
//! projections (the feed) verified against a recomputation from the log (never rewritten).

use super::progress;
use crate::access::command_line::CommandLine;
use crate::access::AccessKind;
use crate::settings::Settings;
use crate::store::Store;
use crate::{app, ledger};

pub async fn run(url: &str) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    app::check_settings(url, &settings)?;
    let store = Store::connect(url).await?;
    let projections = ledger::projections(&store, &settings, None);
    let head = store.head().await?;
    let rebuilt = projections.rebuildable_names();
    let pb = progress::bar((head.max(0) as u64) * rebuilt.len() as u64, "rebuilding");
    let summary = projections.rebuild(|n| pb.inc(n)).await;
    pb.finish_and_clear();
    // A rebuild reads every person's history but shows none of it: recorded without a list
    // of persons.
    let cli = CommandLine::start(store.db(), "rebuild");
    let recorded = cli
        .touched(AccessKind::Inquiry, Vec::new(), summary.is_ok(), None)
        .await;
    cli.finish().await;
    store.close().await;
    recorded?;
    let summary = summary?;
    println!(
        "rebuilt {} from {} events in {:.1} s ({:.0} events/s); feed check {:.1} s",
        rebuilt.join(", "),
        summary.events,
        summary.build_seconds,
        summary.events as f64 / summary.build_seconds.max(1e-9),
        summary.seconds - summary.build_seconds,
    );
    for (table, rows) in &summary.rows {
        println!("  {table}: {rows} rows");
    }
    for (name, position) in &summary.projections {
        println!("  checkpoint {name}: {position}");
    }
    let mut identical = true;
    for v in &summary.verified {
        if v.differences.is_empty() {
            println!("{}: {} records verified against the log, identical", v.name, v.checked);
        } else {
            identical = false;
            for d in &v.differences {
                eprintln!("{} difference: {d}", v.name);
            }
        }
    }
    anyhow::ensure!(
        identical,
        "the stored feed differs from a recomputation from the log (never rewritten)"
    );
    Ok(())
}
