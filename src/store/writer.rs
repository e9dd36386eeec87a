//! Group commit: concurrent appends are gathered into one transaction, so the cost of a commit
//! (one fsync under the log head lock) is shared by every request waiting at that moment.

use tokio::sync::{mpsc, oneshot};

use super::{AppendRequest, Outcome, Store, StoreError};
use crate::metrics;

struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

/// Handle to the writer task. Dropping every handle lets the task finish the queued work and
/// stop, which is how shutdown drains it.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task; `max_batch` bounds the requests committed together.
    pub fn spawn(store: Store, max_batch: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(max_batch * 4);
        let handle = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
                metrics::global().append_batches.inc();
                match store.append_batch(&requests).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            if let Ok(a) = &outcome {
                                metrics::global()
                                    .events_appended
                                    .add((a.last_sequence - a.first_sequence + 1) as u64);
                            }
                            // The caller may have gone away; the append stands regardless.
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, requests = replies.len(), "batch append failed");
                        let msg = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(msg.clone()));
                        }
                    }
                }
            }
        });
        (Self { tx }, handle)
    }

    pub async fn append(&self, request: AppendRequest) -> Result<Outcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?.map_err(StoreError::Batch)
    }
}
