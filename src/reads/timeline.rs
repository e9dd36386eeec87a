//! `GET /v1/persons/{id}/timeline` and `/eligibility`: insured intervals from the read model;
//! the timeline's events are the person's stream itself, cut at the position the intervals
//! describe.

use chrono::NaiveDate;
use serde_json::Value;

use super::sql::{self, IntervalCardRow, PeriodRow};
use super::views::{EligibilityView, EventView, IntervalCard, IntervalView, TimelineView};
use super::{person_not_found, At, Query, Reads};
use crate::codec::{flags, fold};
use crate::domain::person::LATE_REPORT_DAYS;
use crate::domain::{Person, PersonId};
use crate::error::LedgerError;
use crate::store::format_instant;

/// `GET /v1/persons/{person_id}/timeline`.
pub struct TimelineQuery {
    pub person_id: PersonId,
}

/// `GET /v1/persons/{person_id}/eligibility?on=` (None: today).
pub struct EligibilityQuery {
    pub person_id: PersonId,
    pub on: Option<NaiveDate>,
}

impl Query for TimelineQuery {
    type Answer = TimelineView;
    async fn run(&self, reads: &Reads, at: At) -> Result<TimelineView, LedgerError> {
        // The log prefix the read model's rows describe, and the intervals: one statement.
        let (stored, intervals) = sql::timeline_record(reads.store.db(), self.person_id.as_str(), at.position).await?;
        // A stream begins with its registration: empty at this position, no person yet.
        if stored.is_empty() {
            return Err(person_not_found(&self.person_id, at));
        }
        let person = fold::<Person>(&stored)?;
        let (statuses, _) = person.statuses();
        let events = stored
            .iter()
            .zip(statuses)
            .map(|(e, status)| {
                let body = e.payload.value()?;
                let date = |f: &str| body.get(f).and_then(Value::as_str).and_then(|s| s.parse::<NaiveDate>().ok());
                let (effective_date, reported_date) = (date("effective_date"), date("reported_date"));
                let late_report = matches!((effective_date, reported_date), (Some(eff), Some(rep)) if (rep - eff).num_days() > LATE_REPORT_DAYS);
                Ok(EventView {
                    sequence: e.sequence,
                    position: e.position,
                    event_type: e.event_type.clone(),
                    effective_date,
                    reported_date,
                    recorded_at: format_instant(&e.recorded_at),
                    late_report,
                    status,
                    recorded_by: flags(e)?.actor.unwrap_or_default().into_owned(),
                    body,
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        Ok(TimelineView {
            person_id: self.person_id.to_string(),
            intervals: intervals.into_iter().map(interval_view).collect(),
            events,
        })
    }
}

impl Query for EligibilityQuery {
    type Answer = EligibilityView;
    async fn run(&self, reads: &Reads, at: At) -> Result<EligibilityView, LedgerError> {
        let on = self.on.unwrap_or(at.today);
        let db = reads.store.db();
        let id = self.person_id.as_str();
        if sql::person(db, id, at.position).await?.is_none() {
            return Err(person_not_found(&self.person_id, at));
        }
        let interval = sql::intervals_with_cards(db, id, at.position)
            .await?
            .into_iter()
            .filter(|(i, _)| i.contains(on))
            .map(interval_view)
            .next_back();
        Ok(EligibilityView {
            person_id: self.person_id.to_string(),
            on,
            insured: interval.is_some(),
            interval,
        })
    }
}

/// An interval as the API shows it, with its household's card and the person's branch.
fn interval_view((i, card): (PeriodRow, Option<IntervalCardRow>)) -> IntervalView {
    IntervalView {
        from: i.from,
        to: i.to,
        acquisition_reason: i.acquisition_reason,
        loss_reason: i.loss_reason,
        loss_code: i.loss_code,
        qualified_on: i.qualified_on,
        disqualified_on: i.disqualified_on,
        applied_to: i.to.and_then(|t| t.pred_opt()),
        household_id: i.household_id,
        card: card.map(|c| IntervalCard {
            symbol: c.symbol,
            number: c.number,
            branch: c.branch,
        }),
    }
}
