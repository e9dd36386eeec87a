//! `GET /v1/persons/{id}`: the person today (Asia/Tokyo), as known at a position.

use super::memo::Sources;
use super::sql;
use super::views::{CardView, PersonView};
use super::{person_not_found, At, Query, Reads};
use crate::domain::{HouseholdId, Person, PersonId};
use crate::error::LedgerError;
use crate::projections::MEMBERS;
use crate::store::corrupt;
use cqrs_es::Aggregate;

/// `GET /v1/persons/{person_id}`.
pub struct PersonQuery {
    pub person_id: PersonId,
}

impl Query for PersonQuery {
    type Answer = PersonView;
    async fn run(&self, reads: &Reads, at: At) -> Result<PersonView, LedgerError> {
        Ok(self.answer(reads, at).await?.0)
    }
}

impl PersonQuery {
    /// The view, and what it was read from besides the person's own stream.
    pub(super) async fn answer(&self, reads: &Reads, at: At) -> Result<(PersonView, Sources), LedgerError> {
        let (today, position) = (at.today, at.position);
        let db = reads.store.db();
        let id = self.person_id.as_str();
        // One statement for the person's four tables (the view's hot path).
        let sql::PersonRecord {
            person: row,
            runs,
            memberships,
            intervals,
        } = sql::person_record(db, id, position)
            .await?
            .ok_or_else(|| person_not_found(&self.person_id, at))?;
        let current = runs.iter().find(|r| r.contains(today));
        // Not insured today: show the last period, so staff see since when and why it ended.
        let shown = current.or_else(|| runs.iter().rev().find(|r| r.from <= today));
        // A loss only derived from age and not reached yet is no end of the current period:
        // it is announced when the birthday arrives (feed.md), and shown apart here.
        let pending_age_loss = current.filter(|r| r.loss_by_age).and_then(|r| r.to);
        let ended = shown.filter(|_| pending_age_loss.is_none());
        // The household the person belongs to today (none after moving out or dying).
        let household_id = memberships
            .into_iter()
            .find(|m| m.from <= today && m.to.is_none_or(|t| today < t))
            .map(|m| m.household_id);
        // The card of the period shown (under which card they are, or were last, insured);
        // without one, the card of today's household.
        let shown_interval = shown.and_then(|s| {
            intervals
                .iter()
                .rev()
                .find(|(i, _)| i.from >= s.from && i.from <= today && s.to.is_none_or(|t| i.from < t))
                .filter(|(i, _)| i.household_id.is_some())
        });
        let card_view = |symbol: String, number: String, branch: Option<String>| CardView {
            insurer_number: reads.settings.insurer_number.to_string(),
            symbol,
            number,
            branch,
        };
        let card = match (shown_interval, &household_id) {
            // The interval's row already carries its household's card and branch.
            (Some((_, card)), _) => card.clone().map(|c| card_view(c.symbol, c.number, c.branch)),
            (None, Some(h)) => sql::card_and_branch(db, h, id, position)
                .await?
                .map(|(c, branch)| card_view(c.symbol, c.number, branch)),
            (None, None) => None,
        };
        let mut sources = Sources {
            today: Some(today),
            ..Sources::default()
        };
        intervals
            .iter()
            .filter_map(|(i, _)| i.household_id.as_deref())
            .chain(household_id.as_deref())
            .for_each(|h| sources.household(h));
        // Only an uninsured register head can be a deemed head; the household's rule decides.
        let mut deemed_head = false;
        if let (None, Some(h)) = (current, &household_id) {
            let hid = HouseholdId::parse(h).map_err(|e| corrupt(format!("stored household id: {e}")))?;
            // That rule reads the household's list of members and their intervals too.
            sources.streams.push((MEMBERS, h.clone()));
            if let Some(v) = reads.household_view(&hid, today, position).await? {
                deemed_head = v.deemed_head && v.head_person_id.as_deref() == Some(id);
                let members = v.members.into_iter().map(|m| (Person::TYPE, m.person_id));
                sources.streams.extend(members);
            }
        }
        let view = PersonView {
            person_id: self.person_id.to_string(),
            name: row.name,
            name_kana: row.name_kana,
            real_name: row.real_name,
            real_name_kana: row.real_name_kana,
            birth_date: row.birth_date,
            sex: row.sex,
            sex_on_back: row.sex_on_back,
            household_id,
            insured: current.is_some(),
            qualified_on: shown.map(|r| r.qualified_on),
            disqualified_on: ended.and_then(|r| r.disqualified_on),
            applied_from: shown.map(|r| r.from),
            applied_to: ended.and_then(|r| r.to).and_then(|t| t.pred_opt()),
            loss_reason: ended.and_then(|r| r.loss_reason.clone()),
            loss_code: ended.and_then(|r| r.loss_code.clone()),
            card,
            late_elderly_on: pending_age_loss,
            deemed_head,
            disclosure_restricted: row.disclosure_restricted_from.is_some_and(|d| d <= today),
            deceased_on: row.deceased_on,
            last_sequence: row.last_sequence as u64,
            today,
        };
        Ok((view, sources))
    }
}
