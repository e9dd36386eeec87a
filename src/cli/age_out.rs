//! `kokuho-ledger age-out [--through DATE]`.

use crate::access::command_line::CommandLine;
use crate::access::AccessKind;
use crate::app::{self, Builder};
use crate::jobs::age_out;
use crate::settings::Settings;

pub async fn run(through: Option<chrono::NaiveDate>, url: &str) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    app::check_settings(url, &settings)?;
    let app = Builder::new(url).settings(settings).build().await?;
    let ledger = app.ledger.clone();
    // The job reads the read models (consistently): they run beside it, as in `serve`.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = ledger.projections().spawn(stopped);
    let through = through.unwrap_or_else(|| ledger.clock().today());
    let summary = age_out::run(&ledger, through).await?;
    // The job's events are the ledger's own (actor `system`); who ran it is recorded here.
    let cli = CommandLine::start(ledger.store().db(), "age-out");
    cli.touched(
        AccessKind::Update,
        summary.recorded_persons.clone(),
        summary.failed.is_empty(),
        None,
    )
    .await?;
    cli.finish().await;
    println!(
        "age-out through {through}: {} recorded, {} already recorded, {} refused",
        summary.recorded,
        summary.already,
        summary.failed.len()
    );
    for (person_id, why) in &summary.failed {
        eprintln!("person {person_id}: {why}");
    }
    let _ = stop.send(true);
    let _ = runner.await;
    ledger.store().close().await;
    anyhow::ensure!(
        summary.failed.is_empty(),
        "{} persons could not be recorded (the others were)",
        summary.failed.len()
    );
    Ok(())
}
