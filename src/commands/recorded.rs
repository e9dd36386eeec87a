//! The answer to a recorded command (api.md "Record a person's event"): the event's own
//! sequence and position, and what the ledger recorded with it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::{AppendedEvent, StoredEvent};

/// An event the ledger recorded as a consequence of the request's event, in the same commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consequence {
    pub stream: String,
    pub stream_id: String,
    pub sequence: i64,
    pub position: i64,
    #[serde(rename = "type")]
    pub event_type: String,
}

/// An accepted (or replayed) command.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub stream: String,
    pub stream_id: String,
    /// The recorded event's own place in its stream and in the log.
    pub sequence: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub consequences: Vec<Consequence>,
    /// The highest position the request wrote (what a read of all its effects waits for).
    pub last_position: i64,
    /// Answered from the Idempotency-Key record: nothing new was written.
    pub replayed: bool,
    /// The request's access record committed with its events (see `access::ride`).
    pub access_recorded: bool,
}

impl Recorded {
    /// From the events a request wrote, in position order: its own event first.
    pub fn new(events: &[AppendedEvent], recorded_at: DateTime<Utc>, replayed: bool) -> Option<Self> {
        let (own, rest) = events.split_first()?;
        Some(Self {
            stream: own.aggregate_type.clone(),
            stream_id: own.aggregate_id.clone(),
            sequence: own.sequence,
            position: own.position,
            recorded_at,
            consequences: rest
                .iter()
                .map(|e| Consequence {
                    stream: e.aggregate_type.clone(),
                    stream_id: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    position: e.position,
                    event_type: e.event_type.clone(),
                })
                .collect(),
            last_position: events.last().map_or(own.position, |e| e.position),
            replayed,
            access_recorded: false,
        })
    }

    /// A replay's answer, from the events the first request wrote (read back from the log).
    pub fn replayed(events: &[StoredEvent]) -> Option<Self> {
        let recorded_at = events.first()?.recorded_at;
        let appended: Vec<AppendedEvent> = events
            .iter()
            .map(|e| AppendedEvent {
                aggregate_type: e.aggregate_type.clone(),
                aggregate_id: e.aggregate_id.clone(),
                sequence: e.sequence,
                position: e.position,
                event_type: e.event_type.clone(),
            })
            .collect();
        Self::new(&appended, recorded_at, true)
    }
}
