//! What stops or delays the relay. A transient error (NATS unreachable, a timed-out
//! acknowledgement, the database busy) is retried from the stream's last message; a permanent
//! one (the stream holds something other than the ledger's record, or is configured so that
//! messages could be lost) stops the relay with an error an operator must act on.

use std::time::Duration;

use crate::access::AccessError;
use crate::error::LedgerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The stream's last message for the subject is not the ledger's record at its position:
    /// someone else published to the subject (or the stream belongs to another ledger).
    #[error(
        "stream {stream}, subject {subject}: the message at stream sequence {stream_sequence} is not the ledger's feed record{}: {reason}; \
         nothing more is published (see docs/operations.md, \"A stream that disagrees with the ledger\")",
        position.map(|p| format!(" at position {p}")).unwrap_or_default()
    )]
    Diverged {
        stream: String,
        subject: String,
        stream_sequence: u64,
        position: Option<i64>,
        reason: String,
    },
    /// The stream holds positions the ledger has not issued: another ledger's database, or a
    /// database restored from an older backup.
    #[error(
        "stream {stream}, subject {subject}: the stream already holds position {position} but the ledger's feed ends at {head} \
         (another ledger's stream, or a database older than the stream); nothing more is published"
    )]
    AheadOfLedger {
        stream: String,
        subject: String,
        position: i64,
        head: i64,
    },
    /// A feed record of another insurer number than the one the subject names.
    #[error("feed record {position} carries insurer number {found}, but the relay publishes for {expected} (KOKUHO_INSURER_NUMBER)")]
    OtherInsurer {
        position: i64,
        found: String,
        expected: String,
    },
    /// An existing stream whose configuration could lose or reorder records.
    #[error("stream {stream}: {reason}")]
    StreamConfig { stream: String, reason: String },
    /// A stored feed record that cannot be read (never expected).
    #[error("feed record after position {after} cannot be read: {reason}")]
    Record { after: i64, reason: String },
    /// NATS did not answer or refused for a reason worth retrying.
    #[error("NATS: {0}")]
    Nats(String),
    #[error("the ledger's database: {0}")]
    Store(#[from] StoreError),
    #[error("the ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Publishing personal data without its access record is not allowed (access.md).
    #[error("the access record of a published batch: {0}")]
    Unrecorded(#[from] AccessError),
    /// A one-off run (`feed publish`) gives up after this long without progress.
    #[error("no progress for {:.0} s, last error: {last}", .waited.as_secs_f64())]
    GaveUp { waited: Duration, last: String },
}

impl RelayError {
    /// Worth retrying (after re-reading the stream's last message); otherwise the relay stops.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RelayError::Nats(_) | RelayError::Store(_) | RelayError::Ledger(_) | RelayError::Unrecorded(_)
        )
    }

    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        RelayError::Nats(e.to_string())
    }
}
