//! `kokuho-ledger age-out [--through DATE]`.

use crate::app::Builder;
use crate::jobs::age_out;

pub async fn run(through: Option<chrono::NaiveDate>, url: &str) -> anyhow::Result<()> {
    let app = Builder::new(url).build().await?;
    let ledger = app.ledger.clone();
    // The job reads the read models: bring them up to the log first.
    ledger
        .projections()
        .catch_up_lane(crate::projections::Lane::Reads)
        .await?;
    let through = through.unwrap_or_else(|| ledger.clock().today());
    let summary = age_out::run(&ledger, through).await?;
    println!(
        "age-out through {through}: {} recorded, {} already recorded, {} refused",
        summary.recorded,
        summary.already,
        summary.failed.len()
    );
    for (person_id, why) in &summary.failed {
        eprintln!("person {person_id}: {why}");
    }
    ledger.store().close().await;
    anyhow::ensure!(
        summary.failed.is_empty(),
        "{} persons could not be recorded (the others were)",
        summary.failed.len()
    );
    Ok(())
}
