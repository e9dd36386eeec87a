//! `kokuho-ledger import FILE`.

use std::path::Path;

use super::progress;
use crate::access::command_line::CommandLine;
use crate::access::AccessKind;
use crate::app::{self, Builder};
use crate::import::{self, Options};
use crate::settings::Settings;

pub async fn run(file: &Path, url: &str, batch_lines: usize) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    app::check_settings(url, &settings)?;
    // With the deployment's checkpoint key the import chains what it writes too, so `serve`
    // starts with nothing to catch up.
    let audit = app::configured_audit_key(url, &settings)?.map(std::sync::Arc::new);
    let mut builder = Builder::new(url).settings(settings);
    if let Some(signer) = audit {
        builder = builder.audit(signer);
    }
    let app = builder.build().await?;
    let ledger = app.ledger.clone();
    // The projections run beside the writes, as in `serve`.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = ledger.projections().spawn(stopped);
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let pb = progress::bytes(size, "importing");
    // The events' actor and the access records' principal: the host's user.
    let cli = CommandLine::start(ledger.store().db(), "import");
    let options = Options {
        batch_lines,
        actor: cli.actor().to_owned(),
        access: Some((cli.recorder(), cli.record_of(AccessKind::Update))),
    };
    let report = import::run(&ledger, file, &options, |n| pb.set_position(n)).await;
    drop(options);
    cli.finish().await;
    pb.finish_and_clear();
    let report = report?;
    println!("{report}");
    // Reads after the import answer at once: the projections catch up before it ends.
    let head = ledger.store().head().await?;
    let behind = (head - ledger.projections().position()).max(0) as u64;
    let pb = progress::bar(behind, "projecting");
    let start = ledger.projections().position();
    let caught_up = async {
        loop {
            let at = ledger.projections().position();
            pb.set_position((at - start).max(0) as u64);
            if at >= head {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    caught_up.await;
    pb.finish_and_clear();
    let _ = stop.send(true);
    let _ = runner.await;
    ledger.store().close().await;
    if let Some(f) = &report.failure {
        anyhow::bail!(
            "line {}: {}; nothing of line {} or after was written (lines 1–{} are in the ledger): \
             correct it and run the same file again",
            f.line,
            f.error,
            f.line,
            report.in_ledger_through
        );
    }
    Ok(())
}
