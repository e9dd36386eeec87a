//! The peer every append figure is reported next to: postgres-es 0.5, the framework the ledger
//! is built on, used as its documentation shows — one aggregate, one event per command, its
//! own tables (`pges_events`), no global order — on the same server, in the same run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS pges_events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
    event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE IF NOT EXISTS pges_snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";

/// A registration carrying the same payload as the ledger's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    payload: serde_json::Value,
}

impl DomainEvent for Registered {
    fn event_type(&self) -> String {
        "registered".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("already registered")]
pub struct AlreadyRegistered;

#[derive(Default, Serialize, Deserialize)]
pub struct PeerPerson {
    registered: bool,
}

impl Aggregate for PeerPerson {
    const TYPE: &'static str = "person";
    type Command = serde_json::Value;
    type Event = Registered;
    type Error = AlreadyRegistered;
    type Services = ();

    async fn handle(&mut self, payload: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        if self.registered {
            return Err(AlreadyRegistered);
        }
        sink.write(Registered { payload }, self).await;
        Ok(())
    }

    fn apply(&mut self, _: Self::Event) {
        self.registered = true;
    }
}

/// Commands per second from `clients` concurrent clients for `seconds`, each a new aggregate.
pub async fn postgres_es_rate(
    pool: &PgPool,
    payload: &serde_json::Value,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    sqlx::raw_sql(TABLES).execute(pool).await?;
    let repo = PostgresEventRepository::new(pool.clone()).with_tables("pges_events", "pges_snapshots");
    let store = cqrs_es::persist::PersistedEventStore::<_, PeerPerson>::new_event_store(repo);
    let cqrs = Arc::new(cqrs_es::CqrsFramework::new(store, vec![], ()));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (cqrs, done, stop, payload) = (cqrs.clone(), done.clone(), stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                cqrs.execute(&format!("pges-{c}-{i}"), payload.clone())
                    .await
                    .expect("postgres-es command");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
