//! The NATS JetStream relay: publishes every feed record, in position order, exactly once, to
//! `<prefix>.<insurer number>` on a JetStream stream — a lane of `serve` (`KOKUHO_NATS_URL`)
//! or a one-off `kokuho-ledger feed publish` that stops at the feed head.
//!
//! Exactly once, by construction rather than by bookkeeping in the ledger:
//!
//! - The stream itself is the relay's checkpoint. On start, and after anything unexpected, the
//!   relay reads the stream's last message for its subject, checks that it is the ledger's
//!   record at the position it names (body and message id), and goes on after it ([`cursor`]).
//! - Each message carries `Nats-Expected-Last-Subject-Sequence`: the stream sequence of the
//!   previous record, as the server acknowledged it. The server stores a message only directly
//!   after its predecessor, so nothing is ever stored out of order, twice, or past a gap, even
//!   by a retry delivered late after a reconnect. A refusal re-synchronises from the stream.
//! - Each message carries `Nats-Msg-Id: <insurer number>:<position>`: a retry inside the
//!   stream's duplicate window is acknowledged as a duplicate instead of being refused.
//! - Messages go one at a time, each acknowledged before the next: the expected sequence of a
//!   message is the *acknowledged* sequence of its predecessor. Pipelining would need predicted
//!   sequences, which the server can confirm for the wrong message when another subject or
//!   publisher shares the stream (see docs/feed.md).
//!
//! The relay only reads `feed_records` (and the vault, for the intermediate-server channel): it
//! never takes a lock an append waits for.

pub mod config;
pub mod cursor;
pub mod disclosure;
pub mod error;
pub mod message;
pub mod status;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream::Stream};
use bytes::Bytes;
use tokio::sync::watch;

pub use config::RelayConfig;
pub use cursor::Cursor;
pub use disclosure::Disclosure;
pub use error::RelayError;
pub use status::{RelayStatus, State};

use crate::feed::FeedText;
use crate::ledger::Ledger;
use message::{msg_id, Head, POSITION_HEADER};

/// How long a request or an acknowledgement may take before it is retried.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the serve lane waits for a new record before looking again.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the relay runs.
pub enum Until {
    /// Up to the feed head as found when the feed has nothing more (`feed publish`).
    Head,
    /// Until the value turns true (the lane of `serve`).
    Stopped(watch::Receiver<bool>),
}

impl Until {
    fn stopped(&self) -> bool {
        matches!(self, Until::Stopped(rx) if *rx.borrow())
    }

    /// Sleeps, or returns early when asked to stop.
    async fn pause(&mut self, d: Duration) {
        match self {
            Until::Head => tokio::time::sleep(d).await,
            Until::Stopped(rx) => {
                let _ = tokio::time::timeout(d, rx.wait_for(|s| *s)).await;
            }
        }
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The position the stream holds last for the subject.
    pub position: i64,
    /// Messages stored by this run.
    pub published: u64,
    /// Retries the server acknowledged as duplicates.
    pub duplicates: u64,
    /// Refusals that made the relay re-read the stream.
    pub resyncs: u64,
}

pub struct Relay {
    ledger: Arc<Ledger>,
    config: RelayConfig,
    url: String,
    insurer: String,
    subject: String,
    disclosure: Disclosure,
    status: &'static RelayStatus,
    /// A one-off run gives up after this long without progress; the lane never does.
    give_up_after: Option<Duration>,
}

/// Why one message was not stored.
enum Failed {
    /// The subject's last sequence is not the one expected: re-read the stream.
    Refused,
    Error(RelayError),
}

impl Relay {
    /// A relay for the ledger's insurer number. `config.url` must be set.
    pub fn new(ledger: Arc<Ledger>, config: RelayConfig, disclosure: Disclosure) -> Result<Self, RelayError> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| RelayError::Nats("no NATS URL (KOKUHO_NATS_URL or --nats-url)".into()))?;
        let insurer = ledger.settings().insurer_number.as_str().to_owned();
        Ok(Self {
            subject: config.subject(&insurer),
            ledger,
            config,
            url,
            insurer,
            disclosure,
            status: status::global(),
            give_up_after: None,
        })
    }

    pub fn give_up_after(mut self, d: Duration) -> Self {
        self.give_up_after = Some(d);
        self
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Publishes until `until`; transient failures are retried from the stream's last
    /// message, a permanent one is returned (and shown in `/readyz` and `/metrics`).
    pub async fn run(&self, mut until: Until) -> Result<Outcome, RelayError> {
        let mut outcome = Outcome::default();
        let mut client: Option<async_nats::Client> = None;
        let mut backoff = MIN_BACKOFF;
        let mut progress_at = Instant::now();
        self.status.set_state(State::Starting);
        loop {
            let before = outcome.published;
            let result = self.session(&mut client, &mut until, &mut outcome).await;
            if outcome.published > before {
                progress_at = Instant::now();
                backoff = MIN_BACKOFF;
            }
            match result {
                Ok(()) => return Ok(outcome),
                Err(e) if e.is_transient() => {
                    if let Some(limit) = self.give_up_after {
                        if progress_at.elapsed() > limit {
                            let e = RelayError::GaveUp {
                                waited: progress_at.elapsed(),
                                last: e.to_string(),
                            };
                            self.status.failed(State::Stopped, &e.to_string());
                            return Err(e);
                        }
                    }
                    self.status.failed(State::Retrying, &e.to_string());
                    self.status.retries_total.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, position = outcome.position, "feed relay: retrying");
                    until.pause(backoff).await;
                    if until.stopped() {
                        return Ok(outcome);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.status.failed(State::Stopped, &e.to_string());
                    tracing::error!(error = %e, "feed relay stopped");
                    return Err(e);
                }
            }
        }
    }

    async fn connect(&self) -> Result<async_nats::Client, RelayError> {
        async_nats::ConnectOptions::new()
            .name("kokuho-ledger feed relay")
            .connection_timeout(ACK_TIMEOUT)
            .reconnect_delay_callback(|attempts| {
                (MIN_BACKOFF * 2u32.saturating_pow(attempts.min(6) as u32)).min(Duration::from_secs(2))
            })
            .connect(self.url.as_str())
            .await
            .map_err(|e| RelayError::nats(format!("connecting to {}: {e}", redact(&self.url))))
    }

    /// One connection's worth of publishing: check the stream, find where it ends, go on.
    async fn session(
        &self,
        client: &mut Option<async_nats::Client>,
        until: &mut Until,
        outcome: &mut Outcome,
    ) -> Result<(), RelayError> {
        let connection = match client {
            Some(c) => c.clone(),
            None => {
                let c = self.connect().await?;
                tracing::info!(server = %redact(&self.url), stream = %self.config.stream, subject = %self.subject, "feed relay connected");
                *client = Some(c.clone());
                c
            }
        };
        let mut js = jetstream::new(connection);
        js.set_timeout(ACK_TIMEOUT);
        let stream = stream::ensure(&js, &self.config, &self.subject).await?;
        let mut cursor = self.resync(&stream).await?;
        outcome.position = cursor.position;
        self.status.set_state(State::Running);
        loop {
            if until.stopped() {
                return Ok(());
            }
            let page = self.next_page(cursor.position, until).await?;
            let Some(page) = page else { return Ok(()) };
            let (positions, records) = self.contiguous(cursor.position, page)?;
            if records.is_empty() {
                // The next position is not visible yet (a later one committed first): look
                // again shortly rather than skip it.
                until.pause(Duration::from_millis(20)).await;
                continue;
            }
            let (bodies, revealed, persons) = self.render(records).await?;
            self.disclosure
                .record(disclosure::Batch {
                    stream: &self.config.stream,
                    subject: &self.subject,
                    after: cursor.position,
                    last_position: *positions.last().expect("not empty"),
                    records: positions.len(),
                    persons,
                    my_number: revealed,
                })
                .await?;
            for (position, body) in positions.into_iter().zip(bodies) {
                match self.publish(&js, position, body, cursor.sequence).await {
                    Ok((sequence, duplicate)) => {
                        cursor = Cursor { position, sequence };
                        outcome.position = position;
                        outcome.published += 1;
                        self.status.published(position);
                        self.status.published_total.inc();
                        if duplicate {
                            outcome.duplicates += 1;
                            self.status.duplicates_total.inc();
                        }
                    }
                    Err(Failed::Refused) => {
                        // Something is stored after the message we know of (our own earlier
                        // attempt whose acknowledgement was lost, or another publisher): the
                        // stream says where it ends, and whether that is the ledger's record.
                        outcome.resyncs += 1;
                        self.status.resyncs_total.inc();
                        cursor = self.resync(&stream).await?;
                        tracing::info!(
                            position = cursor.position,
                            stream_sequence = cursor.sequence,
                            "feed relay re-synchronised from the stream"
                        );
                        outcome.position = cursor.position;
                        self.status.published(cursor.position);
                        break;
                    }
                    Err(Failed::Error(e)) => return Err(e),
                }
            }
        }
    }

    /// The records after `after`; None when a one-off run has reached the head or the lane is
    /// asked to stop.
    async fn next_page(&self, after: i64, until: &mut Until) -> Result<Option<FeedText>, RelayError> {
        let feed = &self.ledger.feed;
        match until {
            Until::Head => {
                let page = feed.page_text(after, self.config.batch, Duration::ZERO).await?;
                Ok((!page.records.is_empty()).then_some(page))
            }
            Until::Stopped(rx) => {
                let rx = rx.clone();
                let mut stop = rx.clone();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => Ok(None),
                    page = feed.page_text(after, self.config.batch, FOLLOW_WAIT) => Ok(Some(page?)),
                }
            }
        }
    }

    /// The page's records that directly follow `after`, with their positions: a position not
    /// yet visible (a later one committed first) ends the run of records rather than being
    /// skipped. Each record must carry the relay's insurer number.
    fn contiguous(&self, after: i64, page: FeedText) -> Result<(Vec<i64>, Vec<String>), RelayError> {
        let mut positions = Vec::with_capacity(page.records.len());
        let mut records = Vec::with_capacity(page.records.len());
        for record in page.records {
            // The error's kind and column only: serde's message may quote the record's text.
            let head = Head::of(&record).map_err(|e| RelayError::Record {
                after,
                reason: format!("not a feed record ({:?} error at column {})", e.classify(), e.column()),
            })?;
            if head.position != after + 1 + positions.len() as i64 {
                break;
            }
            if head.insurer_number != self.insurer {
                return Err(RelayError::OtherInsurer {
                    position: head.position,
                    found: head.insurer_number,
                    expected: self.insurer.clone(),
                });
            }
            positions.push(head.position);
            records.push(record);
        }
        Ok((positions, records))
    }

    /// The bodies exactly as `GET /v1/feed` serves the records: the stored text, or — on the
    /// intermediate-server channel — the record with `my_number` serialized as the HTTP page
    /// does. Also whether a number was added, and the persons named.
    async fn render(&self, records: Vec<String>) -> Result<(Vec<Bytes>, bool, Vec<String>), RelayError> {
        let text = FeedText {
            records,
            next_after: 0,
            head: 0,
        };
        let persons = text.persons();
        if !self.config.my_number {
            return Ok((text.records.into_iter().map(Bytes::from).collect(), false, persons));
        }
        let (page, revealed) = self.ledger.feed.with_my_numbers(&text).await?;
        let bodies = page
            .records
            .iter()
            .map(|r| serde_json::to_vec(r).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RelayError::Record {
                after: 0,
                reason: format!("cannot be serialized ({:?})", e.classify()),
            })?;
        Ok((bodies, revealed, persons))
    }

    async fn publish(
        &self,
        js: &jetstream::Context,
        position: i64,
        body: Bytes,
        expected: u64,
    ) -> Result<(u64, bool), Failed> {
        let message = PublishMessage::build()
            .payload(body)
            .message_id(msg_id(&self.insurer, position))
            .expected_last_subject_sequence(expected)
            .header(POSITION_HEADER, position.to_string());
        let failed = |e: async_nats::jetstream::context::PublishError| match e.kind() {
            PublishErrorKind::WrongLastSequence => Failed::Refused,
            _ => Failed::Error(RelayError::nats(format!("publishing position {position}: {e}"))),
        };
        let ack = js.send_publish(self.subject.clone(), message).await.map_err(failed)?;
        let ack = ack.await.map_err(failed)?;
        Ok((ack.sequence, ack.duplicate))
    }

    /// Where the stream ends for the subject, checked against the ledger.
    async fn resync(&self, stream: &Stream) -> Result<Cursor, RelayError> {
        cursor::read(
            stream,
            &self.config.stream,
            &self.subject,
            &self.insurer,
            self.ledger.store().db(),
        )
        .await
    }
}

/// The URL without a password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_not_logged() {
        assert_eq!(super::redact("nats://u:p@host:4222"), "nats://***@host:4222");
        assert_eq!(super::redact("nats://host:4222"), "nats://host:4222");
    }
}
