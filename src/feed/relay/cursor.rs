//! Where the stream ends for the relay's subject: its last message, checked against the
//! ledger before anything is published after it.

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};

use super::message::{msg_id, same_record, Head, MSG_ID_HEADER, POSITION_HEADER};
use super::RelayError;
use crate::projections::feed::{feed_head, feed_records};
use crate::store::sql::Db;

/// The last record the stream holds for the subject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Its feed position (0: the subject is empty).
    pub position: i64,
    /// Its stream sequence: the next message's expected last subject sequence.
    pub sequence: u64,
}

/// Reads the subject's last message and checks it: published by a relay (position header,
/// message id of this insurer), a position the ledger has issued, and the ledger's record at
/// that position. Anything else stops the relay rather than publish past a record that is not
/// the ledger's.
pub async fn read(
    stream: &Stream,
    stream_name: &str,
    subject: &str,
    insurer: &str,
    db: &Db,
) -> Result<Cursor, RelayError> {
    let message = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Cursor::default()),
        Err(e) => return Err(RelayError::nats(format!("reading the last message of {subject}: {e}"))),
    };
    let diverged = |position: Option<i64>, reason: String| RelayError::Diverged {
        stream: stream_name.to_owned(),
        subject: subject.to_owned(),
        stream_sequence: message.sequence,
        position,
        reason,
    };
    let position = message
        .headers
        .get(POSITION_HEADER)
        .and_then(|v| v.as_str().parse::<i64>().ok())
        .filter(|p| *p >= 1)
        .ok_or_else(|| {
            diverged(
                None,
                format!("it has no {POSITION_HEADER} header (not published by the relay)"),
            )
        })?;
    let id = message.headers.get(MSG_ID_HEADER).map(|v| v.as_str().to_owned());
    let expected_id = msg_id(insurer, position);
    if id.as_deref() != Some(expected_id.as_str()) {
        return Err(diverged(
            Some(position),
            format!("its {MSG_ID_HEADER} is {id:?}, the relay's would be {expected_id:?}"),
        ));
    }
    let head = feed_head(db).await?;
    if position > head {
        return Err(RelayError::AheadOfLedger {
            stream: stream_name.to_owned(),
            subject: subject.to_owned(),
            position,
            head,
        });
    }
    let record = feed_records(db, position - 1, 1)
        .await?
        .pop()
        .filter(|r| Head::of(r).is_ok_and(|h| h.position == position))
        .ok_or_else(|| RelayError::Record {
            after: position - 1,
            reason: format!("position {position} is below the feed head {head} but cannot be read"),
        })?;
    if !same_record(&message.payload, &record) {
        return Err(diverged(
            Some(position),
            "its body differs from the ledger's record at that position".into(),
        ));
    }
    Ok(Cursor {
        position,
        sequence: message.sequence,
    })
}
