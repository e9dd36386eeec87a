//! `kokuho-ledger serve`: the HTTP service with its projection runners and the daily
//! 75th-birthday job, until SIGTERM or Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;

use crate::app::{self, Builder};
use crate::feed::relay::{Disclosure, Relay, Until};
use crate::jobs::age_out;
use crate::settings::Settings;

pub async fn run(listen: &str, url: &str) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    app::check_settings(url, &settings)?;
    // Refuse to start without the checkpoint key rather than run with an unsigned trail.
    let signer = app::audit_signer(url, &settings)?;
    let nats = settings.nats.clone();
    let timeouts = settings.timeouts;
    let app = Builder::new(url).settings(settings).audit(signer).build().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let router = app.router();
    let ledger = app.ledger;
    let recorder = app.access.recorder.clone();
    drop(app.access);
    tracing::info!(addr = %listener.local_addr()?, database = ?ledger.store().kind(), "serving");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = ledger.projections().spawn(stopped.clone());
    // Long-polled feed consumers wait on the tail: one query per feed commit, not one each.
    let tail = ledger.feed.spawn_tail(stopped.clone());
    // The NATS relay only reads the feed: appends never wait for it.
    let relay = match nats.url {
        Some(_) => {
            let disclosure = Disclosure::new(recorder, "serve nats relay");
            let relay = Relay::new(ledger.clone(), nats, disclosure)?;
            tracing::info!(subject = relay.subject(), "starting the NATS relay");
            Some(tokio::spawn(async move {
                // Its error is logged and shown in /readyz and /metrics; the service goes on.
                let _ = relay.run(Until::Stopped(stopped)).await;
            }))
        }
        None => {
            // The access log's writer stops when its last handle goes.
            drop(recorder);
            None
        }
    };
    let daily = tokio::spawn(age_out::daily(ledger.clone()));
    let store = ledger.store().clone();
    drop(ledger);
    // The peer address is the terminal (端末名) of every access record; slow clients are cut
    // off by the timeouts.
    crate::http::serve::serve(listener, router, timeouts, shutdown_signal()).await?;
    // The daily job holds the ledger too: stop it so the writer can drain.
    daily.abort();
    let _ = daily.await;
    // Projections commit batch by batch: stopping between batches loses nothing.
    let _ = stop.send(true);
    let _ = runner.await;
    let _ = tail.await;
    // The relay holds the ledger (and an access recorder) too: it stops between messages.
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    // The router (and with it the last writer handle) is gone: the writer drains and stops.
    if tokio::time::timeout(Duration::from_secs(30), app.writer_task)
        .await
        .is_err()
    {
        tracing::warn!("the writer did not drain within 30 s");
    }
    // Every answered request's record was written before its answer; this only waits.
    if tokio::time::timeout(Duration::from_secs(30), app.access_task)
        .await
        .is_err()
    {
        tracing::warn!("the access log writer did not stop within 30 s");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}
