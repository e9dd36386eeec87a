//! The ledger: the services every door uses (commands, reads, the feed, the audit trail), on
//! one store, one group-commit writer and one set of projection runners. This is where the
//! parts are composed; each service lives in its own module.

use std::sync::Arc;

use serde_json::Value;

use crate::audit::keys::Signer;
use crate::audit::Audit;
use crate::clock::Clock;
use crate::commands::{Command, Commands, Recorded};
use crate::domain::input::{parse_household_event, parse_person_event};
use crate::domain::{HouseholdId, PersonId};
use crate::error::LedgerError;
use crate::feed::Feed;
use crate::projections::{Projection, Projections};
use crate::reads::{PersonQuery, Query, Read, Reads, TimelineQuery};
use crate::request::RequestContext;
use crate::settings::Settings;
use crate::store::writer::Writer;
use crate::store::Store;
use crate::vault::Vault;

pub struct Ledger {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
    vault: Arc<Vault>,
    projections: Arc<Projections>,
    pub commands: Commands,
    pub reads: Reads,
    pub feed: Feed,
}

/// The projections of a deployment: the read models, the change feed and, with a signing key,
/// the audit chainer.
pub fn projections(store: &Store, settings: &Settings, audit: Option<Arc<Signer>>) -> Projections {
    let mut all: Vec<Box<dyn Projection>> = vec![
        Box::new(crate::projections::persons::Persons),
        Box::new(crate::projections::households::Households),
        Box::new(crate::projections::feed::Feed {
            insurer_number: settings.insurer_number.to_string(),
        }),
    ];
    if let Some(signer) = audit {
        all.push(Box::new(crate::audit::chainer::Chainer::new(
            &settings.log_origin,
            signer,
        )));
    }
    Projections::new(store.clone(), all)
}

impl Ledger {
    /// A ledger on `store`; with `audit`, its projections include the audit chainer signing
    /// checkpoints with that key.
    pub fn new(
        store: Store,
        writer: Writer,
        clock: Arc<dyn Clock>,
        vault: Arc<Vault>,
        settings: Settings,
        audit: Option<Arc<Signer>>,
    ) -> Self {
        let settings = Arc::new(settings);
        let projections = Arc::new(projections(&store, &settings, audit));
        Self {
            commands: Commands::new(
                store.clone(),
                writer,
                clock.clone(),
                vault.clone(),
                settings.clone(),
                projections.clone(),
            ),
            reads: Reads::new(store.clone(), projections.clone(), clock.clone(), settings.clone()),
            feed: Feed::new(store.clone(), projections.clone(), vault.clone()),
            store,
            clock,
            settings,
            vault,
            projections,
        }
    }

    /// Records a command.
    pub async fn record(&self, command: &Command, ctx: &RequestContext) -> Result<Recorded, LedgerError> {
        self.commands.execute(command, ctx).await
    }

    /// Parses a person event's JSON body (as the API receives it) and records it.
    pub async fn record_person_event(
        &self,
        person_id: &PersonId,
        body: &Value,
        ctx: &RequestContext,
    ) -> Result<Recorded, LedgerError> {
        let input = parse_person_event(body, self.clock.today())?;
        self.record(
            &Command::Person {
                person_id: person_id.clone(),
                input,
            },
            ctx,
        )
        .await
    }

    /// Parses a household event's JSON body and records it.
    pub async fn record_household_event(
        &self,
        household_id: &HouseholdId,
        body: &Value,
        ctx: &RequestContext,
    ) -> Result<Recorded, LedgerError> {
        let event = parse_household_event(body, self.clock.today())?;
        self.record(
            &Command::Household {
                household_id: household_id.clone(),
                event,
            },
            ctx,
        )
        .await
    }

    /// Answers a query (consistently, unless `r` opts out).
    pub async fn ask<Q: Query>(&self, query: &Q, r: &Read) -> Result<Q::Answer, LedgerError> {
        self.reads.ask(query, r).await
    }

    /// A person's timeline as the JSON the API answers with (kept in memory while it stays
    /// the answer).
    pub async fn timeline_json(&self, query: &TimelineQuery, r: &Read) -> Result<bytes::Bytes, LedgerError> {
        self.reads.timeline_json(query, r).await
    }

    /// A person as the JSON the API answers with (kept in memory while it stays the answer).
    pub async fn person_json(&self, query: &PersonQuery, r: &Read) -> Result<bytes::Bytes, LedgerError> {
        self.reads.person_json(query, r).await
    }

    /// The reads' service (its memory of answers, for metrics and tests).
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Reads of the audit trail.
    pub fn audit(&self) -> Audit {
        Audit::new(&self.store)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn projections(&self) -> &Arc<Projections> {
        &self.projections
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }
}
