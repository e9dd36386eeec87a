//! The walk through a person's facts in effective-date order: residence, exclusions and
//! disclosure as state, the order rules of domain.md §7, and same-day facts in an order the
//! state allows.

use chrono::NaiveDate;

use super::{next_day, AcquisitionReason, LossReason};
use crate::domain::error::DomainError;
use crate::domain::event::{PersonEvent, PersonFact, Place, Registration};
use crate::domain::ids::HouseholdId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exclusion {
    EmployeeInsurance,
    Welfare,
    NhiUnion,
    Disability,
    Foreign,
    Age75,
}

impl Exclusion {
    pub(super) const RECORDED: [Exclusion; 5] = [
        Exclusion::EmployeeInsurance,
        Exclusion::Welfare,
        Exclusion::NhiUnion,
        Exclusion::Disability,
        Exclusion::Foreign,
    ];

    pub(super) fn index(self) -> usize {
        self as usize
    }
    /// First excluded day for a start event on `d`.
    pub(super) fn start_day(self, d: NaiveDate) -> NaiveDate {
        match self {
            Exclusion::EmployeeInsurance | Exclusion::Disability => next_day(d),
            _ => d,
        }
    }
    /// First insured-again day for an end event on `d`.
    pub(super) fn end_day(self, d: NaiveDate) -> NaiveDate {
        match self {
            Exclusion::Disability => next_day(d),
            _ => d,
        }
    }
    pub(super) fn loss(self) -> LossReason {
        match self {
            Exclusion::EmployeeInsurance => LossReason::EmployeeInsuranceJoined,
            Exclusion::Welfare => LossReason::WelfareStarted,
            Exclusion::NhiUnion => LossReason::NhiUnionJoined,
            Exclusion::Disability | Exclusion::Age75 => LossReason::LateElderly,
            Exclusion::Foreign => LossReason::ForeignResidentExcluded,
        }
    }
    pub(super) fn acquisition(self) -> AcquisitionReason {
        match self {
            Exclusion::EmployeeInsurance => AcquisitionReason::EmployeeInsuranceLeft,
            Exclusion::Welfare => AcquisitionReason::WelfareEnded,
            Exclusion::NhiUnion => AcquisitionReason::NhiUnionLeft,
            Exclusion::Disability => AcquisitionReason::LateElderlyDisabilityWithdrawn,
            // Age 75 never ends.
            Exclusion::Foreign | Exclusion::Age75 => AcquisitionReason::ForeignResidentIncluded,
        }
    }
}

/// What a fact does to the walk's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Toggle {
    ResidenceStart,
    ResidenceEnd,
    ExclusionStart(Exclusion),
    ExclusionEnd(Exclusion),
    DisclosureStart,
    DisclosureEnd,
    /// Needs the person resident (household_changed).
    WhileResident,
    Neutral,
}

fn toggle(f: &PersonFact) -> Toggle {
    use PersonFact as F;
    match f {
        F::MovedIn { .. } | F::Born { .. } => Toggle::ResidenceStart,
        F::MovedOut { .. } => Toggle::ResidenceEnd,
        F::EmployeeInsuranceJoined => Toggle::ExclusionStart(Exclusion::EmployeeInsurance),
        F::EmployeeInsuranceLeft => Toggle::ExclusionEnd(Exclusion::EmployeeInsurance),
        F::WelfareStarted => Toggle::ExclusionStart(Exclusion::Welfare),
        F::WelfareEnded => Toggle::ExclusionEnd(Exclusion::Welfare),
        F::NhiUnionJoined => Toggle::ExclusionStart(Exclusion::NhiUnion),
        F::NhiUnionLeft => Toggle::ExclusionEnd(Exclusion::NhiUnion),
        F::LateElderlyDisabilityCertified => Toggle::ExclusionStart(Exclusion::Disability),
        F::LateElderlyDisabilityWithdrawn => Toggle::ExclusionEnd(Exclusion::Disability),
        F::ForeignResidentExcluded => Toggle::ExclusionStart(Exclusion::Foreign),
        F::ForeignResidentIncluded => Toggle::ExclusionEnd(Exclusion::Foreign),
        F::DisclosureRestricted => Toggle::DisclosureStart,
        F::DisclosureRestrictionLifted => Toggle::DisclosureEnd,
        F::HouseholdChanged { .. } => Toggle::WhileResident,
        _ => Toggle::Neutral,
    }
}

#[derive(Clone, Debug)]
pub(super) struct Residence {
    pub(super) start: NaiveDate,
    pub(super) end: Option<NaiveDate>,
    pub(super) start_reason: AcquisitionReason,
    pub(super) end_reason: Option<LossReason>,
    /// `qualified_on` carried over by a move-in from the same prefecture.
    pub(super) carried_qualification: Option<NaiveDate>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ExclusionRange {
    pub(super) kind: Exclusion,
    pub(super) start: NaiveDate,
    pub(super) end: Option<NaiveDate>,
}

#[derive(Clone, Default)]
pub(super) struct Walk {
    pub(super) open_residence: Option<Residence>,
    pub(super) residences: Vec<Residence>,
    pub(super) open_exclusions: [Option<NaiveDate>; 5],
    pub(super) exclusions: Vec<ExclusionRange>,
    pub(super) disclosure_from: Option<NaiveDate>,
    pub(super) born_seen: bool,
    /// (from, household) in walk order; each entry lasts until the next or the end of the
    /// residence it lies in.
    pub(super) households: Vec<(NaiveDate, HouseholdId)>,
    pub(super) last_document_collected: Option<NaiveDate>,
}

impl Walk {
    fn possible(&self, t: Toggle) -> bool {
        match t {
            Toggle::ResidenceStart => self.open_residence.is_none(),
            Toggle::ResidenceEnd | Toggle::WhileResident => self.open_residence.is_some(),
            Toggle::ExclusionStart(k) => self.open_exclusions[k.index()].is_none(),
            Toggle::ExclusionEnd(k) => self.open_exclusions[k.index()].is_some(),
            Toggle::DisclosureStart => self.disclosure_from.is_none(),
            Toggle::DisclosureEnd => self.disclosure_from.is_some(),
            Toggle::Neutral => true,
        }
    }

    fn impossible(&self, e: &PersonEvent) -> DomainError {
        let d = e.effective_date;
        let ty = e.fact.type_name();
        let (code, why) = match toggle(&e.fact) {
            Toggle::ResidenceStart => ("already_resident", "the person is already resident"),
            Toggle::ResidenceEnd | Toggle::WhileResident => ("not_resident", "the person is not resident"),
            Toggle::ExclusionStart(_) => (
                "exclusion_already_started",
                "this exclusion has already started and not ended",
            ),
            Toggle::ExclusionEnd(_) => ("exclusion_not_started", "this exclusion has not started"),
            Toggle::DisclosureStart => ("disclosure_already_restricted", "disclosure is already restricted"),
            Toggle::DisclosureEnd => ("disclosure_not_restricted", "disclosure is not restricted"),
            Toggle::Neutral => ("inconsistent_history", "the history is inconsistent"),
        };
        DomainError::new(code, format!("{ty} on {d}: {why} on that day"))
    }

    fn apply(&mut self, e: &PersonEvent, reg: &Registration) -> Result<(), DomainError> {
        use PersonFact as F;
        let d = e.effective_date;
        match &e.fact {
            F::MovedIn {
                from,
                household_id,
                qualified_on,
            } => {
                let carried = match from {
                    Place::SamePrefecture => {
                        let q = qualified_on.unwrap_or(d);
                        if q > d || q < reg.birth_date {
                            return Err(DomainError::new(
                                "invalid_qualified_on",
                                format!("qualified_on {q} must lie between the birth date and the move-in on {d}"),
                            ));
                        }
                        Some(q)
                    }
                    _ => None,
                };
                self.open_residence = Some(Residence {
                    start: d,
                    end: None,
                    start_reason: AcquisitionReason::MovedIn,
                    end_reason: None,
                    carried_qualification: carried,
                });
                self.households.push((d, household_id.clone()));
            }
            F::Born { household_id } => {
                if self.born_seen {
                    return Err(DomainError::new(
                        "already_born",
                        format!("born on {d}: a birth is already recorded"),
                    ));
                }
                if d != reg.birth_date {
                    return Err(DomainError::new(
                        "birth_date_mismatch",
                        format!("born on {d} differs from the registered birth date {}", reg.birth_date),
                    ));
                }
                self.born_seen = true;
                self.open_residence = Some(Residence {
                    start: d,
                    end: None,
                    start_reason: AcquisitionReason::Born,
                    end_reason: None,
                    carried_qualification: None,
                });
                self.households.push((d, household_id.clone()));
            }
            F::MovedOut { to } => {
                let mut r = self.open_residence.take().expect("checked possible");
                let (end, reason) = match to {
                    Place::OtherPrefecture => (d, LossReason::MovedOut),
                    Place::SamePrefecture => (d, LossReason::MovedWithinPrefecture),
                    Place::Abroad => (next_day(d), LossReason::MovedOut),
                };
                r.end = Some(end);
                r.end_reason = Some(reason);
                self.residences.push(r);
            }
            F::HouseholdChanged { household_id } => self.households.push((d, household_id.clone())),
            F::DisclosureRestricted => self.disclosure_from = Some(d),
            F::DisclosureRestrictionLifted => self.disclosure_from = None,
            F::DocumentCollected => self.last_document_collected = Some(d),
            f => match toggle(f) {
                Toggle::ExclusionStart(k) => self.open_exclusions[k.index()] = Some(k.start_day(d)),
                Toggle::ExclusionEnd(k) => {
                    let start = self.open_exclusions[k.index()].take().expect("checked possible");
                    self.exclusions.push(ExclusionRange {
                        kind: k,
                        start,
                        end: Some(k.end_day(d)),
                    });
                }
                _ => {}
            },
        }
        Ok(())
    }
}

/// Facts of one day in an order the state allows: the first possible fact by sequence, and,
/// when that leads to a dead end, another order (a move-out recorded before a household
/// change of the same day must not refuse the change). The first failure met is reported
/// when no order works; the search is bounded (same-day facts are few).
pub(super) const DAY_SEARCH_BUDGET: usize = 5_000;

pub(super) fn walk_day(
    walk: Walk,
    pending: &[&PersonEvent],
    reg: &Registration,
    budget: &mut usize,
) -> Result<Walk, DomainError> {
    if pending.is_empty() {
        return Ok(walk);
    }
    let mut first_error = None;
    for (k, e) in pending.iter().enumerate() {
        if !walk.possible(toggle(&e.fact)) {
            continue;
        }
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let mut next = walk.clone();
        if let Err(err) = next.apply(e, reg) {
            first_error.get_or_insert(err);
            continue;
        }
        let rest: Vec<&PersonEvent> = pending
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, e)| *e)
            .collect();
        match walk_day(next, &rest, reg, budget) {
            Ok(done) => return Ok(done),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| walk.impossible(pending[0])))
}
