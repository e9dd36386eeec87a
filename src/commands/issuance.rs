//! Card and branch numbers (domain.md §5) as consequences of a person's event: what the
//! person's new history calls for, as events of the households concerned, appended in the same
//! transaction. Card numbers come from the deployment's sequence (its own state, moved by the
//! append that takes a number); a number somebody typed in (`card_number_assigned`) is skipped,
//! never a reason to stop.

use std::sync::Arc;

use cqrs_es::Aggregate;

use super::aggregate::decide;
use super::locks::StreamGuard;
use super::source::{Folded, Source, SourceDirectory};
use crate::codec::Origin;
use crate::domain::history::Derived;
use crate::domain::issuance;
use crate::domain::{
    CardNumber, CardSymbol, DomainError, Household, HouseholdId, HouseholdServices, PersonId, RecordHouseholdEvent,
};
use crate::error::LedgerError;
use crate::request::RequestContext;
use crate::settings::Settings;
use crate::store::{CardClaim, NewEvent, StreamAppend};

/// What a command causes in other streams: the events, the card numbers taken, the
/// households as they stand after them, and the locks that keep concurrent joins in this
/// process from colliding until the append is answered.
#[derive(Default)]
pub struct Follow {
    pub also: Vec<StreamAppend>,
    pub cards: Vec<CardClaim>,
    pub households: Vec<(HouseholdId, Folded<Household>)>,
    pub(super) guards: Vec<StreamGuard>,
    pub(super) card_guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The household events that give `person_id` (insured there from `first_day`) a branch number
/// in `household`, and the household its card when it has none (`card`, from the sequence);
/// run through the household's own rules and applied to it.
pub(crate) async fn issue_events(
    household: &mut Household,
    household_id: &HouseholdId,
    person_id: &PersonId,
    first_day: chrono::NaiveDate,
    card: Option<(CardSymbol, CardNumber)>,
    services: &HouseholdServices,
    ctx: &RequestContext,
) -> Result<Vec<NewEvent>, LedgerError> {
    let issued = issuance::issue(household, person_id, first_day, services.today, || {
        card.ok_or_else(|| DomainError::new("card_missing", "no card number to issue"))
    })?;
    let mut events = Vec::with_capacity(issued.len());
    for event in issued {
        let reported = event.reported_date;
        let command = RecordHouseholdEvent {
            household_id: household_id.clone(),
            event,
            system: true,
        };
        events.extend(decide(household, command, services, Origin::Consequence(ctx), reported).await??);
    }
    Ok(events)
}

/// How often a card number is chosen again when another process took it in between.
const CARD_RETRIES: usize = 5;

/// The next number of the deployment's card sequence from `n` on, skipping numbers already
/// held (typed in by hand, or taken by another process since the sequence was read).
async fn next_free_card(
    source: &dyn Source,
    settings: &Settings,
    mut n: i64,
) -> Result<(CardNumber, i64), LedgerError> {
    loop {
        let number = issuance::card_number(n.max(0) as u64, settings.card_number_width)?;
        if source.card_holder(&settings.card_symbol, &number).await?.is_none() {
            return Ok((number, n));
        }
        n += 1;
    }
}

/// The card and branch numbers a person's new history calls for (domain.md §5), as events of
/// the households concerned, to be appended with the person's event.
pub(super) async fn issuance(
    source: &Arc<dyn Source>,
    settings: &Settings,
    today: chrono::NaiveDate,
    person_id: &PersonId,
    derived: &Derived,
    ctx: &RequestContext,
) -> Result<Follow, LedgerError> {
    let mut wanted = issuance::insured_households(derived);
    if wanted.is_empty() {
        return Ok(Follow::default());
    }
    // One lock order for everyone: by household id.
    wanted.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let services = HouseholdServices {
        today,
        directory: Arc::new(SourceDirectory(source.clone())),
    };
    let (symbol, width) = (&settings.card_symbol, settings.card_number_width);
    let mut follow = Follow::default();
    // The sequence as this command has advanced it (several households may need a card).
    let mut next_card: Option<i64> = None;
    for (household_id, first_day) in wanted {
        let guard = source.lock_household(&household_id).await;
        let stored = source.household(&household_id).await?;
        if stored.aggregate.card().is_some() && stored.aggregate.branch_of(person_id).is_some() {
            continue;
        }
        let needs_card = stored.aggregate.card().is_none();
        if needs_card && follow.card_guard.is_none() {
            follow.card_guard = source.lock_cards().await;
        }
        let mut household = stored.aggregate.clone();
        let mut attempts = 0;
        let events = loop {
            let mut card = None;
            if needs_card {
                let start = match next_card {
                    Some(n) => n,
                    None => source.card_sequence(symbol, width).await? + 1,
                };
                let (number, n) = next_free_card(source.as_ref(), settings, start).await?;
                next_card = Some(n + 1);
                follow.cards.push(CardClaim {
                    symbol: symbol.to_string(),
                    width: width as i64,
                    number: n,
                });
                card = Some((symbol.clone(), number));
            }
            match issue_events(
                &mut household,
                &household_id,
                person_id,
                first_day,
                card,
                &services,
                ctx,
            )
            .await
            {
                // Another process took the number between the check and the rule: choose again.
                Err(LedgerError::Rule(e))
                    if needs_card && e.code == "card_number_in_use" && attempts < CARD_RETRIES =>
                {
                    attempts += 1;
                    follow.cards.pop();
                    household = stored.aggregate.clone();
                }
                other => break other?,
            }
        };
        follow.also.push(StreamAppend {
            aggregate_type: Household::TYPE.into(),
            aggregate_id: household_id.to_string(),
            expected_sequence: stored.sequence,
            events,
        });
        let sequence = stored.sequence + follow.also.last().map_or(0, |a| a.events.len() as i64);
        follow.households.push((
            household_id,
            Folded {
                aggregate: household,
                sequence,
            },
        ));
        follow.guards.extend(guard);
    }
    Ok(follow)
}
