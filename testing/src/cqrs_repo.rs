//! cqrs-es's repository interface over the ledger's log, so a `CqrsFramework` in event-store
//! mode can run on the same tables (positions and commit instants are assigned as for every
//! other append): the tests' proof that the log keeps cqrs-es's shape.

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use cqrs_es::Aggregate;
use kokuho_ledger::store::{AppendRequest, NewEvent, Rejection, Store, StoreError, StoredEvent};
use serde_json::Value;

/// The ledger's log as a cqrs-es repository.
#[derive(Clone)]
pub struct LogRepository(pub Store);

fn serialized(e: StoredEvent) -> Result<SerializedEvent, PersistenceError> {
    Ok(SerializedEvent {
        payload: e.payload.value().map_err(failure)?,
        metadata: e.metadata.value().map_err(failure)?,
        aggregate_id: e.aggregate_id,
        sequence: e.sequence as usize,
        aggregate_type: e.aggregate_type,
        event_type: e.event_type,
        event_version: e.event_version,
    })
}

fn failure(e: StoreError) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

impl PersistedEventRepository for LogRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.0.load_stream(A::TYPE, aggregate_id, None).await.map_err(failure)?;
        events.into_iter().map(serialized).collect()
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(events.into_iter().filter(|e| e.sequence > last_sequence).collect())
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        // Event-store mode only: snapshots are never written (engineering-notes.md).
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "snapshots are not supported: use event-store mode".into(),
            ));
        }
        let Some(first) = events.first() else { return Ok(()) };
        let request = AppendRequest {
            events: events
                .iter()
                .map(|e| NewEvent {
                    event_type: e.event_type.clone(),
                    event_version: e.event_version.clone(),
                    payload: e.payload.clone(),
                    metadata: e.metadata.clone(),
                })
                .collect(),
            ..AppendRequest::new(
                &first.aggregate_type,
                &first.aggregate_id,
                first.sequence as i64 - 1,
                Vec::new(),
            )
        };
        match self.0.append_batch(&[request]).await.map_err(failure)?.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(Rejection::Conflict { .. })) => Err(PersistenceError::OptimisticLockError),
            Some(Err(other)) => Err(PersistenceError::UnknownError(format!("{other:?}").into())),
            None => Err(PersistenceError::UnknownError("no outcome".into())),
        }
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(replay(events))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        // In global log order, unlike postgres-es (which orders by stream sequence).
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.0.read_log(after, 10_000).await.map_err(failure)?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for e in page.into_iter().filter(|e| e.aggregate_type == A::TYPE) {
                all.push(serialized(e)?);
            }
        }
        Ok(replay(all))
    }
}

fn replay(events: Vec<SerializedEvent>) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    tokio::spawn(async move {
        for e in events {
            if feed.push(Ok(e)).await.is_err() {
                break;
            }
        }
    });
    stream
}
