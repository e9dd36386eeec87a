//! Group commit: concurrent appends are gathered into one transaction, so the cost of a commit
//! (one fsync under the log head lock) is shared by every request waiting at that moment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    preparing: Arc<AtomicUsize>,
}

/// A command being prepared (stream loaded, rules checked) that will probably submit an append
/// soon: the writer waits briefly for such commands before it commits, so concurrent commands
/// share one commit instead of queueing behind each other's.
pub struct Ticket {
    preparing: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.preparing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The longest a batch waits for commands still being prepared.
const GATHER_WINDOW: Duration = Duration::from_millis(2);

impl Writer {
    /// Starts the writer task; `max_batch` bounds the requests committed together.
    pub fn spawn(store: Store, max_batch: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(max_batch * 4);
        let preparing = Arc::new(AtomicUsize::new(0));
        let waiting = preparing.clone();
        let handle = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                let deadline = tokio::time::Instant::now() + GATHER_WINDOW;
                while jobs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) if waiting.load(Ordering::SeqCst) > 0 => {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(Some(j)) => jobs.push(j),
                                _ => break,
                            }
                        }
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
                                    .add((a.last_position - a.first_position + 1) as u64);
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
        (Self { tx, preparing }, handle)
    }

    /// Announces a command that is about to prepare an append.
    pub fn ticket(&self) -> Ticket {
        self.preparing.fetch_add(1, Ordering::SeqCst);
        Ticket {
            preparing: self.preparing.clone(),
        }
    }

    /// Submits an append. The ticket, if any, is given back first: the batch need not wait for
    /// a command that is already in the queue.
    pub async fn append(&self, ticket: Option<Ticket>, request: AppendRequest) -> Result<Outcome, StoreError> {
        drop(ticket);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?.map_err(StoreError::Batch)
    }
}
