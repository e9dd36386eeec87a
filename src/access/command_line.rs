//! Commands run on the server's host record themselves (access.md): the principal is
//! `os:<user>@<host>` — the operating system authenticated the user — the terminal is the
//! host, and the screen names the subcommand.

use chrono::Utc;
use serde_json::Value;

use super::{AccessError, AccessKind, AccessRecord, Recorder};
use crate::store::sql::Db;

/// `os:<user>@<host>` of this process.
pub fn os_actor() -> String {
    format!("os:{}@{}", user(), host())
}

fn user() -> String {
    whoami::fallible::username().unwrap_or_else(|_| "unknown".into())
}

/// This host's name (the terminal of records written by processes on it).
pub fn host() -> String {
    whoami::fallible::hostname().unwrap_or_else(|_| "unknown".into())
}

/// The access log as one command line run writes to it.
pub struct CommandLine {
    recorder: Recorder,
    task: tokio::task::JoinHandle<()>,
    actor: String,
    terminal: String,
    /// The subcommand, as the records' screen (`cli import`).
    screen: String,
    request_id: String,
}

impl CommandLine {
    pub fn start(db: &Db, subcommand: &str) -> Self {
        let (recorder, task) = Recorder::spawn(db.clone());
        Self {
            recorder,
            task,
            actor: os_actor(),
            terminal: host(),
            screen: format!("cli {subcommand}"),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// A record of this run, to be completed and passed to [`CommandLine::record`].
    pub fn record_of(&self, kind: AccessKind) -> AccessRecord {
        let mut r = AccessRecord::new(Utc::now(), &self.actor, kind, self.screen.clone());
        r.terminal = self.terminal.clone();
        r.request_id = self.request_id.clone();
        r
    }

    /// Writes a record durably.
    pub async fn record(&self, record: AccessRecord) -> Result<i64, AccessError> {
        self.recorder.record(record).await
    }

    /// Records what the run touched: `outcome` 200 when it succeeded, 500 when it failed.
    pub async fn touched(
        &self,
        kind: AccessKind,
        persons: Vec<String>,
        ok: bool,
        export: Option<Value>,
    ) -> Result<i64, AccessError> {
        let mut r = self.record_of(kind);
        r.set_persons(persons);
        r.outcome = if ok { 200 } else { 500 };
        r.export = export;
        self.record(r).await
    }

    /// A handle for work that records as it goes (import batches).
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Waits for the writer to finish what was queued.
    pub async fn finish(self) {
        drop(self.recorder);
        let _ = self.task.await;
    }
}
