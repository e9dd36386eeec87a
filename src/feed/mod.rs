//! Serving the change feed (feed.md): pages of issued records by cursor, long-polled, and the
//! CSV export. The records themselves are written by the feed projection
//! (`projections::feed`); here they are only read, byte for byte as stored, with `my_number`
//! added at answer time for a consumer allowed to see it (it is never stored in the feed).

pub mod export;
pub mod relay;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::LedgerError;
use crate::metrics;
use crate::projections::feed::{feed_head, feed_records};
use crate::projections::Projections;
use crate::store::{corrupt, Store};
use crate::vault::Vault;

/// `GET /v1/feed`, with records as values (when something is added per record).
#[derive(Debug, Serialize)]
pub struct FeedPage {
    pub records: Vec<Value>,
    pub next_after: i64,
    pub head: i64,
}

/// A feed page with its records as stored JSON text.
#[derive(Debug)]
pub struct FeedText {
    pub records: Vec<String>,
    pub next_after: i64,
    pub head: i64,
}

impl FeedText {
    /// `{"records": [...], "next_after", "head"}`, the records spliced in as stored.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.records.iter().map(|r| r.len() + 1).sum::<usize>() + 64);
        out.push_str("{\"records\":[");
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r);
        }
        out.push_str(&format!(
            "],\"next_after\":{},\"head\":{}}}",
            self.next_after, self.head
        ));
        out
    }

    /// The person ids the page's records name (the access record's subjects): each individual
    /// record's person, each household record's NHI head and deemed head.
    pub fn persons(&self) -> Vec<String> {
        #[derive(Deserialize)]
        struct Subject {
            person_id: Option<String>,
            nhi_head_person_id: Option<String>,
            deemed_head_person_id: Option<String>,
        }
        let mut out: Vec<String> = self
            .records
            .iter()
            .filter_map(|r| serde_json::from_str::<Subject>(r).ok())
            .flat_map(|s| [s.person_id, s.nhi_head_person_id, s.deemed_head_person_id])
            .flatten()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The feed as its consumers read it.
pub struct Feed {
    store: Store,
    projections: Arc<Projections>,
    vault: Arc<Vault>,
    tail: Arc<tail::Tail>,
}

impl Feed {
    pub fn new(store: Store, projections: Arc<Projections>, vault: Arc<Vault>) -> Self {
        Self {
            tail: Arc::new(tail::Tail::new(store.db().clone())),
            store,
            projections,
            vault,
        }
    }

    /// Starts the shared feed tail (where the projection runners start); it stops with `stop`.
    /// Without it every consumer reads the database itself.
    pub fn spawn_tail(&self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let moved = self
            .projections
            .checkpoint(crate::projections::feed::NAME)
            .unwrap_or_else(|| tokio::sync::watch::channel(0).1);
        self.tail.spawn(moved, stop)
    }

    /// Records after `after` (at most `limit`), each as its stored JSON text; with `wait`,
    /// blocks until there is one or the wait ends. Answered from the shared tail when `after`
    /// is within it, else from the database.
    pub async fn page_text(&self, after: i64, limit: i64, wait: Duration) -> Result<FeedText, LedgerError> {
        let page = match self.tail.page(after, limit, wait).await {
            Some(page) => {
                metrics::global().feed_answers_from_memory.inc();
                page
            }
            None => {
                metrics::global().feed_answers_from_database.inc();
                self.read_page(after, limit, wait).await?
            }
        };
        if !wait.is_zero() {
            metrics::global().feed_long_poll_answers.inc();
        }
        Ok(page)
    }

    /// As [`Self::page_text`], each waiting consumer reading the database: woken by this
    /// process's commits, and looking again every 200 ms for commits of other processes.
    async fn read_page(&self, after: i64, limit: i64, wait: Duration) -> Result<FeedText, LedgerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let db = self.store.db();
        loop {
            let commit = self.projections.next_commit();
            tokio::pin!(commit);
            commit.as_mut().enable();
            let records = feed_records(db, after, limit).await?;
            let now = tokio::time::Instant::now();
            if !records.is_empty() || now >= deadline {
                #[derive(Deserialize)]
                struct Position {
                    position: i64,
                }
                let next_after = match records.last() {
                    Some(r) => serde_json::from_str::<Position>(r).map_err(corrupt)?.position,
                    None => after,
                };
                return Ok(FeedText {
                    records,
                    next_after,
                    head: feed_head(db).await?,
                });
            }
            let pause = (deadline - now).min(Duration::from_millis(200));
            tokio::select! {
                _ = commit => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// A page as values; with `my_numbers`, `my_number` is added to the individual records of
    /// persons who have one (the intermediate-server channel).
    pub async fn page(
        &self,
        after: i64,
        limit: i64,
        wait: Duration,
        my_numbers: bool,
    ) -> Result<FeedPage, LedgerError> {
        let page = self.page_text(after, limit, wait).await?;
        if my_numbers {
            return Ok(self.with_my_numbers(&page).await?.0);
        }
        Ok(FeedPage {
            records: page
                .records
                .iter()
                .map(|r| serde_json::from_str::<Value>(r).map_err(corrupt))
                .collect::<Result<Vec<_>, _>>()?,
            next_after: page.next_after,
            head: page.head,
        })
    }

    /// The page with `my_number` added to the individual records of persons who have one (the
    /// intermediate-server channel); true when at least one number was added.
    pub async fn with_my_numbers(&self, page: &FeedText) -> Result<(FeedPage, bool), LedgerError> {
        let mut records = page
            .records
            .iter()
            .map(|r| serde_json::from_str::<Value>(r).map_err(corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        let revealed = self.add_my_numbers(&mut records).await?;
        Ok((
            FeedPage {
                records,
                next_after: page.next_after,
                head: page.head,
            },
            revealed,
        ))
    }

    /// Adds `my_number` to individual records whose person has one in the vault (the
    /// registration in force as of the record's cause names its commitment).
    async fn add_my_numbers(&self, records: &mut [Value]) -> Result<bool, LedgerError> {
        let mut added = false;
        for r in records.iter_mut().filter(|r| r["kind"] == "individual") {
            let (Some(person_id), Some(cause)) = (r["person_id"].as_str(), r["cause_position"].as_i64()) else {
                continue;
            };
            let held = crate::vault::numbers::held(&self.store, &self.vault, person_id, Some(cause)).await?;
            let Some(crate::vault::numbers::Held::Number(number)) = held else {
                continue;
            };
            r["my_number"] = Value::String(number.expose().to_owned());
            added = true;
        }
        Ok(added)
    }
}
