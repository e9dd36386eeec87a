//! Publishing records to NATS discloses personal data to every consumer of the stream: each
//! batch is an export (出力) in the access log, written durably *before* the batch is
//! published, naming every person its records carry, the range, the stream and subject, and
//! whether My Numbers went with it. The principal is the operating-system user who runs the
//! relay (`os:<user>@<host>`, as for command lines); the screen names the lane.

use chrono::Utc;
use serde_json::json;

use crate::access::command_line::{host, os_actor};
use crate::access::{AccessKind, AccessRecord, Recorder};

use super::RelayError;

pub struct Disclosure {
    recorder: Recorder,
    actor: String,
    terminal: String,
    /// `cli feed publish` or `serve nats relay`.
    screen: String,
    request_id: String,
}

/// One batch about to be published.
pub struct Batch<'a> {
    pub stream: &'a str,
    pub subject: &'a str,
    pub after: i64,
    pub last_position: i64,
    pub records: usize,
    pub persons: Vec<String>,
    pub my_number: bool,
}

impl Disclosure {
    pub fn new(recorder: Recorder, screen: &str) -> Self {
        Self {
            recorder,
            actor: os_actor(),
            terminal: host(),
            screen: screen.to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Writes the batch's access record; returns its id.
    pub async fn record(&self, batch: Batch<'_>) -> Result<i64, RelayError> {
        let mut r = AccessRecord::new(Utc::now(), &self.actor, AccessKind::Export, self.screen.clone());
        r.terminal = self.terminal.clone();
        r.request_id = self.request_id.clone();
        r.path = Some(format!("nats://{}/{}", batch.stream, batch.subject));
        r.set_persons(batch.persons);
        r.my_number = batch.my_number;
        r.export = Some(json!({
            "what": "feed",
            "to": "nats",
            "stream": batch.stream,
            "subject": batch.subject,
            "after": batch.after,
            "last_position": batch.last_position,
            "records": batch.records,
            "my_number": batch.my_number,
        }));
        Ok(self.recorder.record(r).await?)
    }
}
