//! `GET /v1/households/{id}`: members, heads and card on a day (today), as known at a position.

use chrono::NaiveDate;

use super::sql::{self, PeriodRow};
use super::views::{HouseholdCard, HouseholdView, MemberView};
use super::{At, Query, Reads};
use crate::domain::HouseholdId;
use crate::error::LedgerError;

/// `GET /v1/households/{household_id}`.
pub struct HouseholdQuery {
    pub household_id: HouseholdId,
}

impl Query for HouseholdQuery {
    type Answer = HouseholdView;
    async fn run(&self, reads: &Reads, at: At) -> Result<HouseholdView, LedgerError> {
        reads
            .household_view(&self.household_id, at.today, at.position)
            .await?
            .ok_or_else(|| LedgerError::not_found("household_not_found", format!("no household {}", self.household_id)))
    }
}

/// Whether a designation (effective `since`) still holds on `day`: its person has been an
/// insured member of the household every day from `since` to `day` (it lapses the day they
/// move out, die, change household or lose coverage).
fn designation_holds(intervals: &[PeriodRow], household_id: &str, since: NaiveDate, day: NaiveDate) -> bool {
    intervals
        .iter()
        .any(|i| i.household_id.as_deref() == Some(household_id) && i.contains(since) && i.contains(day))
}

impl Reads {
    /// The household on `day` as known at position `at`; None when nothing names it.
    pub(crate) async fn household_view(
        &self,
        household_id: &HouseholdId,
        day: NaiveDate,
        at: i64,
    ) -> Result<Option<HouseholdView>, LedgerError> {
        let db = self.store.db();
        let id = household_id.as_str();
        let facts = sql::household_facts(db, id, at).await?;
        let card = sql::card_of(db, id, at).await?;
        if facts.is_empty() && card.is_none() && sql::members(db, id, None, at).await?.is_empty() {
            return Ok(None);
        }
        let mut members = Vec::new();
        for person_id in sql::members(db, id, Some(day), at).await? {
            let insured = sql::periods(db, true, &person_id, at)
                .await?
                .iter()
                .any(|i| i.contains(day) && i.household_id.as_deref() == Some(id));
            members.push(MemberView {
                branch: sql::branch_of(db, id, &person_id, at).await?,
                person_id,
                insured,
            });
        }
        // The register head named last, while they are a member that day (after moving out or
        // dying they head nothing until the register names a new head).
        let head = sql::in_force_on(&facts, &["head"], day)
            .and_then(|f| f.person_id.clone())
            .filter(|h| members.iter().any(|m| m.person_id == *h));
        let designation = sql::in_force_on(&facts, &["designation", "revocation"], day)
            .filter(|f| f.kind == "designation")
            .and_then(|f| f.person_id.clone().map(|p| (p, f.effective_date)));
        let designated = match designation {
            Some((p, since)) if members.iter().any(|m| m.person_id == p && m.insured) => {
                let intervals = sql::periods(db, true, &p, at).await?;
                designation_holds(&intervals, id, since, day).then_some(p)
            }
            _ => None,
        };
        let insured = |p: &str| members.iter().any(|m| m.person_id == p && m.insured);
        // 擬制世帯主: the register head is not insured while another member is (domain.md §1).
        let deemed_head = head
            .as_deref()
            .is_some_and(|h| !insured(h) && members.iter().any(|m| m.insured && m.person_id != h));
        Ok(Some(HouseholdView {
            household_id: household_id.to_string(),
            nhi_head_person_id: designated.or_else(|| head.clone()),
            head_person_id: head,
            deemed_head,
            card: card.map(|c| HouseholdCard {
                symbol: c.symbol,
                number: c.number,
            }),
            members,
            today: day,
        }))
    }
}
