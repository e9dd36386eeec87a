//! Derivation of eligibility from a person's facts (domain.md §3) and the consistency rules of
//! §7 that concern the order of facts.
//!
//! The facts in force (corrections applied, rescinded facts dropped) are walked in
//! effective-date order. Within one day the walk takes the facts in an order the state allows
//! — by sequence where it can — so facts of one day may be recorded in any order (e.g. leaving
//! one employee insurance and joining the next on the same day, or a move-out recorded before
//! a household change of that day).
//! The walk yields residence ranges, exclusion ranges and the death date; the insured days are
//! those resident, alive and not excluded, and the boundaries of the insured runs get their
//! reasons from the ranges that start or end there, ties broken by the orders of §3.

use chrono::{Datelike, Days, NaiveDate};
use serde::Serialize;

mod periods;
mod walk;

use super::error::DomainError;
use super::event::{PersonEvent, PersonFact, Registration};
use super::ids::HouseholdId;
use periods::{insured_runs, memberships, split_by_household};
use walk::{walk_day, Exclusion, ExclusionRange, Walk, DAY_SEARCH_BUDGET};

/// Why an insured interval began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcquisitionReason {
    // Declaration order is the tie order of §3: born, moved_in, then ending exclusions.
    Born,
    MovedIn,
    EmployeeInsuranceLeft,
    WelfareEnded,
    NhiUnionLeft,
    LateElderlyDisabilityWithdrawn,
    ForeignResidentIncluded,
    /// Only on the later side of a household split inside one insured period.
    HouseholdChanged,
}

/// Why an insured interval ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    // Declaration order is the tie order of §3.
    Died,
    WelfareStarted,
    EmployeeInsuranceJoined,
    NhiUnionJoined,
    LateElderly,
    ForeignResidentExcluded,
    MovedOut,
    MovedWithinPrefecture,
    /// Only on the earlier side of a household split inside one insured period.
    HouseholdChanged,
}

impl AcquisitionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AcquisitionReason::Born => "born",
            AcquisitionReason::MovedIn => "moved_in",
            AcquisitionReason::EmployeeInsuranceLeft => "employee_insurance_left",
            AcquisitionReason::WelfareEnded => "welfare_ended",
            AcquisitionReason::NhiUnionLeft => "nhi_union_left",
            AcquisitionReason::LateElderlyDisabilityWithdrawn => "late_elderly_disability_withdrawn",
            AcquisitionReason::ForeignResidentIncluded => "foreign_resident_included",
            AcquisitionReason::HouseholdChanged => "household_changed",
        }
    }
}

impl LossReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Died => "died",
            LossReason::WelfareStarted => "welfare_started",
            LossReason::EmployeeInsuranceJoined => "employee_insurance_joined",
            LossReason::NhiUnionJoined => "nhi_union_joined",
            LossReason::LateElderly => "late_elderly",
            LossReason::ForeignResidentExcluded => "foreign_resident_excluded",
            LossReason::MovedOut => "moved_out",
            LossReason::MovedWithinPrefecture => "moved_within_prefecture",
            LossReason::HouseholdChanged => "household_changed",
        }
    }

    /// 資格喪失事由 sent to the intermediate server; none when qualification continues.
    pub fn code(self) -> Option<&'static str> {
        match self {
            LossReason::Died => Some("01"),
            LossReason::WelfareStarted => Some("02"),
            LossReason::EmployeeInsuranceJoined | LossReason::NhiUnionJoined | LossReason::LateElderly => Some("03"),
            LossReason::MovedOut | LossReason::ForeignResidentExcluded => Some("99"),
            LossReason::MovedWithinPrefecture | LossReason::HouseholdChanged => None,
        }
    }

    /// Whether the prefectural qualification ends with the interval.
    pub fn ends_qualification(self) -> bool {
        !matches!(self, LossReason::MovedWithinPrefecture | LossReason::HouseholdChanged)
    }
}

/// One maximal insured period in the ward (a ward application period, 適用期間).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub from: NaiveDate,
    /// Exclusive: the first day not covered.
    pub to: Option<NaiveDate>,
    pub acquisition: AcquisitionReason,
    pub loss: Option<LossReason>,
    pub qualified_on: NaiveDate,
    /// The end is the 75th birthday alone: derived from the birth date, not from a recorded fact.
    pub loss_by_age: bool,
}

impl Run {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && self.to.is_none_or(|t| d < t)
    }
    pub fn disqualified_on(&self) -> Option<NaiveDate> {
        match (self.to, self.loss) {
            (Some(t), Some(l)) if l.ends_qualification() => Some(t),
            _ => None,
        }
    }
    /// 適用終了年月日: the last covered day, inclusive.
    pub fn applied_to(&self) -> Option<NaiveDate> {
        self.to.map(|t| t.pred_opt().expect("date after the minimum"))
    }
}

/// A run split at household changes: the `intervals` of the API timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
    pub acquisition: AcquisitionReason,
    pub loss: Option<LossReason>,
    pub qualified_on: NaiveDate,
    pub disqualified_on: Option<NaiveDate>,
    pub household_id: Option<HouseholdId>,
}

impl Interval {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && self.to.is_none_or(|t| d < t)
    }
}

/// A stretch of days the person belongs to a household of the ward: from the move-in, birth
/// or household change that names it until the next household change, the end of residence
/// (move-out) or the day after death, whichever comes first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub household_id: HouseholdId,
    pub from: NaiveDate,
    /// Exclusive: the first day the person is no longer a member; None while open.
    pub to: Option<NaiveDate>,
}

impl Membership {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && self.to.is_none_or(|t| d < t)
    }
}

/// Everything derived from one person's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub runs: Vec<Run>,
    pub intervals: Vec<Interval>,
    /// Household memberships, oldest first; they never overlap.
    pub memberships: Vec<Membership>,
    pub death: Option<NaiveDate>,
    pub disclosure_restricted_from: Option<NaiveDate>,
    pub last_document_collected: Option<NaiveDate>,
}

impl Derived {
    pub fn run_on(&self, d: NaiveDate) -> Option<&Run> {
        self.runs.iter().find(|r| r.contains(d))
    }
    pub fn interval_on(&self, d: NaiveDate) -> Option<&Interval> {
        self.intervals.iter().find(|i| i.contains(d))
    }
    pub fn insured_on(&self, d: NaiveDate) -> bool {
        self.run_on(d).is_some()
    }
    /// The household the person belongs to on day `d` (none before moving in, after moving
    /// out or dying).
    pub fn household_on(&self, d: NaiveDate) -> Option<&HouseholdId> {
        self.memberships.iter().find(|m| m.contains(d)).map(|m| &m.household_id)
    }
    /// Every household the person ever belonged to, in order of first membership.
    pub fn household_ids(&self) -> Vec<&HouseholdId> {
        let mut out: Vec<&HouseholdId> = Vec::new();
        for m in &self.memberships {
            if !out.contains(&&m.household_id) {
                out.push(&m.household_id);
            }
        }
        out
    }
    /// Whether the loss on the 75th birthday is due: an insured period ends on that day by
    /// age alone (not by death, a move or another exclusion the same day).
    pub fn age_loss_on(&self, birthday: NaiveDate) -> bool {
        self.runs.iter().any(|r| r.loss_by_age && r.to == Some(birthday))
    }
}

/// The 75th birthday; a 29 February birthday falls on 1 March in a common year (§3).
pub fn seventy_fifth_birthday(birth: NaiveDate) -> NaiveDate {
    let year = birth.year() + 75;
    NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(year, 3, 1).expect("1 March exists"))
}

fn next_day(d: NaiveDate) -> NaiveDate {
    d.checked_add_days(Days::new(1)).expect("date within range")
}

/// Validates the facts in force and derives the insured intervals.
///
/// `facts` are the in-force facts other than the registration, each with its sequence, in any
/// order.
pub fn derive(
    reg: &Registration,
    registered_on: NaiveDate,
    facts: &[(u64, PersonEvent)],
) -> Result<Derived, DomainError> {
    if registered_on < reg.birth_date {
        return Err(DomainError::new(
            "before_birth",
            format!(
                "registered on {registered_on}, before the birth date {}",
                reg.birth_date
            ),
        ));
    }
    let mut death = None;
    for (_, e) in facts {
        if matches!(e.fact, PersonFact::Died) {
            if death.is_some() {
                return Err(DomainError::new(
                    "already_dead",
                    format!("died on {}: a death is already recorded", e.effective_date),
                ));
            }
            death = Some(e.effective_date);
        }
    }
    // `late_elderly_age_reached` only confirms a loss derived from the birth date: when a
    // later fact (a death, a corrected birth date) makes it stale, the ledger corrects or
    // rescinds it in the same commit, so it never makes the history inconsistent itself.
    for (_, e) in facts
        .iter()
        .filter(|(_, e)| !matches!(e.fact, PersonFact::LateElderlyAgeReached))
    {
        if e.effective_date < reg.birth_date {
            return Err(DomainError::new(
                "before_birth",
                format!(
                    "{} on {} is before the birth date {}",
                    e.fact.type_name(),
                    e.effective_date,
                    reg.birth_date
                ),
            ));
        }
        if let Some(dd) = death {
            if e.effective_date > dd {
                return Err(DomainError::new(
                    "after_death",
                    format!(
                        "{} on {} is after the death on {dd}",
                        e.fact.type_name(),
                        e.effective_date
                    ),
                ));
            }
        }
    }

    let mut order: Vec<&(u64, PersonEvent)> = facts.iter().collect();
    order.sort_by_key(|(seq, e)| (e.effective_date, *seq));
    let mut walk = Walk::default();
    let mut i = 0;
    while i < order.len() {
        let day = order[i].1.effective_date;
        let mut j = i;
        while j < order.len() && order[j].1.effective_date == day {
            j += 1;
        }
        let pending: Vec<&PersonEvent> = order[i..j].iter().map(|(_, e)| e).collect();
        let mut budget = DAY_SEARCH_BUDGET;
        walk = walk_day(walk, &pending, reg, &mut budget)?;
        i = j;
    }

    let mut residences = walk.residences;
    residences.extend(walk.open_residence);
    let mut exclusions = walk.exclusions;
    for k in Exclusion::RECORDED {
        if let Some(start) = walk.open_exclusions[k.index()] {
            exclusions.push(ExclusionRange {
                kind: k,
                start,
                end: None,
            });
        }
    }
    exclusions.push(ExclusionRange {
        kind: Exclusion::Age75,
        start: seventy_fifth_birthday(reg.birth_date),
        end: None,
    });
    let alive_until = death.map(next_day);

    let runs = insured_runs(&residences, &exclusions, alive_until);
    let memberships = memberships(&walk.households, &residences, alive_until);
    let intervals = split_by_household(&runs, &memberships);
    Ok(Derived {
        runs,
        intervals,
        memberships,
        death,
        disclosure_restricted_from: walk.disclosure_from,
        last_document_collected: walk.last_document_collected,
    })
}
