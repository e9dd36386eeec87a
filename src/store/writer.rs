//! Group commit: concurrent appends are gathered into one transaction, so the cost of a commit
//! (one fsync under the log head lock) is shared by every request waiting at that moment, and
//! by those that usually join it (see [`Usual`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::side::SideLog;
use super::{AppendRequest, Appended, Outcome, Rejection, Store, StoreError};
use crate::metrics;

/// What a batch's failure tells each of its requests (one storage error, shared).
type Shared = Arc<StoreError>;

enum Job {
    /// Committed with whatever else is waiting; its fate is its own.
    One {
        request: AppendRequest,
        reply: oneshot::Sender<Result<Outcome, Shared>>,
    },
    /// Committed alone, all or nothing (an import batch).
    All {
        requests: Vec<AppendRequest>,
        reply: oneshot::Sender<Result<AllOutcome, Shared>>,
    },
}

/// The outcome of an all-or-nothing job: everything appended, or the rejection that stopped it
/// (with the index of its request when known).
pub type AllOutcome = Result<Vec<Appended>, (Option<usize>, Rejection)>;

/// Handle to the writer task. Dropping every handle lets the task finish the queued work and
/// stop, which is how shutdown drains it.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    preparing: Arc<AtomicUsize>,
    /// Requests' riders may be written with their events (a side log was given).
    rides: bool,
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

/// The longest a batch waits for commands still being prepared or usually in it.
const GATHER_WINDOW: Duration = Duration::from_millis(2);

/// How many commands a batch usually carries: an average of the last batches' sizes, each
/// batch weighing 1/8. Commands come in waves: the clients one commit answered come back
/// together, but not all of them have announced a command (a [`Ticket`]) when the writer
/// looks, since each is still on its way back through the network and the HTTP stack. A
/// batch that waits (within the window) for the usual number carries the whole wave, where
/// it used to carry the half that was quick and leave the rest to a commit of its own.
#[derive(Debug)]
struct Usual(f64);

impl Default for Usual {
    fn default() -> Self {
        Self(1.0)
    }
}

impl Usual {
    fn want(&self) -> usize {
        self.0.round().max(1.0) as usize
    }

    /// A batch that waited out the window short of the usual number says the load fell: the
    /// next batches wait only for what came, so a drop costs one window, once.
    fn observe(&mut self, size: usize, timed_out: bool) {
        let size = size as f64;
        if timed_out && size < self.0 {
            self.0 = size;
        } else {
            self.0 += (size - self.0) / 8.0;
        }
    }
}

fn count(outcome: &Outcome) {
    if let Ok(a) = outcome {
        metrics::global().events_appended.add(a.events.len() as u64);
    }
}

impl Writer {
    /// Starts the writer task; `max_batch` bounds the requests committed together. With
    /// `side`, the requests' riders are written to it in their events' statement where the
    /// store can (see [`super::side`]).
    pub fn spawn(
        store: Store,
        max_batch: usize,
        side: Option<Arc<dyn SideLog>>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let rides = side.is_some();
        let (tx, mut rx) = mpsc::channel::<Job>(max_batch * 4);
        let preparing = Arc::new(AtomicUsize::new(0));
        let waiting = preparing.clone();
        let handle = tokio::spawn(async move {
            let mut held: Option<Job> = None;
            let mut usual = Usual::default();
            loop {
                let first = match held.take() {
                    Some(j) => j,
                    None => match rx.recv().await {
                        Some(j) => j,
                        None => break,
                    },
                };
                let (request, reply) = match first {
                    Job::All { requests, reply } => {
                        metrics::global().append_batches.inc();
                        let result = store.append_atomic(&requests).await.map_err(Arc::new);
                        if let Ok(Ok(all)) = &result {
                            metrics::global()
                                .events_appended
                                .add(all.iter().map(|a| a.events.len() as u64).sum());
                        }
                        let _ = reply.send(result);
                        continue;
                    }
                    Job::One { request, reply } => (request, reply),
                };
                let mut requests = vec![request];
                let mut replies = vec![reply];
                let deadline = tokio::time::Instant::now() + GATHER_WINDOW;
                let want = usual.want().min(max_batch);
                let mut timed_out = false;
                while requests.len() < max_batch {
                    let next = match rx.try_recv() {
                        Ok(j) => j,
                        Err(_) if requests.len() < want || waiting.load(Ordering::SeqCst) > 0 => {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(Some(j)) => j,
                                Ok(None) => break,
                                Err(_) => {
                                    timed_out = true;
                                    break;
                                }
                            }
                        }
                        Err(_) => break,
                    };
                    match next {
                        Job::One { request, reply } => {
                            requests.push(request);
                            replies.push(reply);
                        }
                        // Committed on its own, after this batch.
                        all @ Job::All { .. } => {
                            held = Some(all);
                            break;
                        }
                    }
                }
                usual.observe(requests.len(), timed_out);
                metrics::global().append_batches.inc();
                match store.append_riding(&requests, side.as_deref()).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            count(&outcome);
                            // The caller may have gone away; the append stands regardless.
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, requests = replies.len(), "batch append failed");
                        let e = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        (Self { tx, preparing, rides }, handle)
    }

    /// Whether a request's rider may be written with its events.
    pub fn rides(&self) -> bool {
        self.rides
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
            .send(Job::One { request, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?.map_err(StoreError::Batch)
    }

    /// Submits requests that are written all together or not at all, in their own
    /// transaction.
    pub async fn append_all(&self, requests: Vec<AppendRequest>) -> Result<AllOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::All { requests, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?.map_err(StoreError::Batch)
    }
}

#[cfg(test)]
mod tests {
    use super::Usual;

    #[test]
    fn a_batch_waits_for_the_usual_number_until_the_load_falls() {
        let mut usual = Usual::default();
        assert_eq!(usual.want(), 1);
        for _ in 0..40 {
            usual.observe(8, false);
        }
        assert_eq!(usual.want(), 8);
        // One batch short of it because a client was slow (it came within the window, then
        // the next batch was full again): still waiting for about the same.
        usual.observe(7, false);
        assert_eq!(usual.want(), 8);
        // Seven clients left: the batch that waited for them in vain resets the expectation.
        usual.observe(1, true);
        assert_eq!(usual.want(), 1);
        // A batch that timed out at or above the usual number (commands still being prepared)
        // is an ordinary observation.
        usual.observe(3, true);
        assert_eq!(usual.want(), 1);
        for _ in 0..40 {
            usual.observe(4, false);
        }
        assert_eq!(usual.want(), 4);
    }
}
