//! Answering reads from the read models, consistently (api.md "Consistency of reads").
//!
//! Every query takes one path ([`Reads::ask`]): the position it answers at is decided first —
//! by default every event committed before the request arrived (the log head, read from the
//! database, so writes through other connections and other instances count), or the as-of
//! instant's prefix, or a position the caller names — the read models are awaited up to it
//! (at most 5 s, then 503), and the query runs on the rows valid at that position. Rows valid
//! at a position the projections have passed never change, so the several queries of one
//! answer see one consistent state.

mod cards;
mod household;
pub mod memo;
mod person;
mod search;
pub mod sql;
mod timeline;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};

pub use cards::CardBranches;
pub use household::HouseholdQuery;
pub use memo::{Answers, Resource};
pub use person::PersonQuery;
pub use search::{SearchQuery, SearchView, MAX_RESULTS};
pub use timeline::{EligibilityQuery, TimelineQuery};

use crate::clock::Clock;
use crate::domain::{InputError, PersonId};
use crate::error::LedgerError;
use crate::projections::Projections;
use crate::settings::Settings;
use crate::store::Store;
use memo::Sources;

/// How long a read waits for the projections to reach the position it needs.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// How a read treats writes committed before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Include every event committed before the request arrived (the default).
    #[default]
    Consistent,
    /// Answer from what the read models hold now (`consistency=eventual`, for bulk readers).
    Eventual,
}

/// What a read needs: knowledge as of an instant (None: latest), at least position
/// `min_position`, and whether earlier writes must be included.
#[derive(Clone, Debug, Default)]
pub struct Read {
    pub as_of: Option<DateTime<Utc>>,
    pub min_position: Option<i64>,
    pub consistency: Consistency,
}

/// Where a query runs: the log position its rows are read at, and "today" (Asia/Tokyo).
#[derive(Clone, Copy, Debug)]
pub struct At {
    pub position: i64,
    pub today: NaiveDate,
    /// Whether the caller asked for an earlier instant (messages say "as of that instant").
    pub as_of: bool,
}

/// A read of the read models.
pub trait Query: Sync {
    type Answer: serde::Serialize + Send;
    fn run(&self, reads: &Reads, at: At) -> impl Future<Output = Result<Self::Answer, LedgerError>> + Send;
}

/// The service that answers reads.
pub struct Reads {
    pub(crate) store: Store,
    pub(crate) projections: Arc<Projections>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Arc<Settings>,
    /// Answers given before, given again while the log has not changed them.
    answers: Answers,
}

impl Reads {
    pub fn new(store: Store, projections: Arc<Projections>, clock: Arc<dyn Clock>, settings: Arc<Settings>) -> Self {
        Self {
            answers: Answers::new(settings.read_memory),
            store,
            projections,
            clock,
            settings,
        }
    }

    /// Answers a query at the position `r` calls for.
    pub async fn ask<Q: Query>(&self, query: &Q, r: &Read) -> Result<Q::Answer, LedgerError> {
        query.run(self, self.at(r).await?).await
    }

    /// Where a read runs: the position `r` calls for, and today.
    async fn at(&self, r: &Read) -> Result<At, LedgerError> {
        Ok(At {
            position: self.position(r).await?,
            today: self.clock.today(),
            as_of: r.as_of.is_some(),
        })
    }

    /// A person's timeline as JSON (`GET /v1/persons/{id}/timeline`): from memory while no
    /// event since the kept answer touched the person or a household of its intervals.
    pub async fn timeline_json(&self, query: &TimelineQuery, r: &Read) -> Result<Bytes, LedgerError> {
        self.kept_json(Resource::Timeline, &query.person_id, r, |at| async move {
            let view = query.run(self, at).await?;
            let mut sources = Sources::default();
            view.intervals
                .iter()
                .filter_map(|i| i.household_id.as_deref())
                .for_each(|h| sources.household(h));
            Ok((to_json(&view)?, sources))
        })
        .await
    }

    /// A person as JSON (`GET /v1/persons/{id}`): from memory on the same day while no event
    /// since the kept answer touched the person or a household it names.
    pub async fn person_json(&self, query: &PersonQuery, r: &Read) -> Result<Bytes, LedgerError> {
        self.kept_json(Resource::Person, &query.person_id, r, |at| async move {
            let (view, sources) = query.answer(self, at).await?;
            Ok((to_json(&view)?, sources))
        })
        .await
    }

    /// An answer about a person as JSON: the kept one while it is still the answer, else the
    /// one `work` works out at the read's position, kept with what it was read from.
    async fn kept_json<F, Fut>(
        &self,
        resource: Resource,
        id: &PersonId,
        r: &Read,
        work: F,
    ) -> Result<Bytes, LedgerError>
    where
        F: FnOnce(At) -> Fut,
        Fut: Future<Output = Result<(Vec<u8>, Sources), LedgerError>>,
    {
        let at = self.at(r).await?;
        let changes = self.projections.changes();
        if let Some(json) = self.answers.get(resource, id.as_str(), at.position, at.today, changes) {
            return Ok(json);
        }
        let (json, mut sources) = work(at).await?;
        sources.streams.sort_unstable();
        sources.streams.dedup();
        self.answers.put(resource, id.as_str(), at.position, sources, &json);
        Ok(json.into())
    }

    /// The memory of answers (its counters and size, for metrics).
    pub fn answers(&self) -> &Answers {
        &self.answers
    }

    /// The log position a read answers at, after waiting (at most [`READ_WAIT`]) for the read
    /// models to reach what it needs.
    pub async fn position(&self, r: &Read) -> Result<i64, LedgerError> {
        let mut needed = 0;
        if r.min_position.is_some() || (r.consistency == Consistency::Consistent && r.as_of.is_none()) {
            let head = self.store.head().await?;
            if let Some(p) = r.min_position {
                if p > head {
                    return Err(InputError::new(
                        "invalid_min_position",
                        format!("min_position {p} is beyond the log head ({head})"),
                    )
                    .into());
                }
                needed = p;
            }
            if r.consistency == Consistency::Consistent {
                needed = needed.max(head);
            }
        }
        let at = match r.as_of {
            Some(t) => {
                // The instant's prefix of the log: an as-of answer is complete for it.
                let p = self.store.position_at(t).await?;
                needed = needed.max(p);
                p
            }
            None => i64::MAX,
        };
        let committed = self.projections.committed().await?;
        if needed > committed {
            // Another process may have moved the checkpoints: look now, not at the next poll.
            self.projections.notify();
            self.projections.wait_for(needed, READ_WAIT).await?;
        }
        // Never beyond what every read model has committed.
        Ok(at.min(self.projections.committed().await?))
    }
}

fn to_json(view: &impl serde::Serialize) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(view).map_err(|e| LedgerError::Internal(format!("answer JSON: {e}")))
}

pub(crate) fn person_not_found(person_id: &PersonId, at: At) -> LedgerError {
    LedgerError::not_found(
        "person_not_found",
        format!(
            "no person {person_id}{}",
            if at.as_of { " as of that instant" } else { "" }
        ),
    )
}
