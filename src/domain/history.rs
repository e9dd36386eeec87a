//! Derivation of eligibility from a person's facts (domain.md §3) and the consistency rules of
//! §7 that concern the order of facts.
//!
//! The facts in force (corrections applied, rescinded facts dropped) are walked in
//! effective-date order. Within one day the walk takes, among the pending facts, the first
//! (by sequence) that is possible in the current state, so facts of one day may be recorded in
//! any order (e.g. leaving one employee insurance and joining the next on the same day).
//! The walk yields residence ranges, exclusion ranges and the death date; the insured days are
//! those resident, alive and not excluded, and the boundaries of the insured runs get their
//! reasons from the ranges that start or end there, ties broken by the orders of §3.

use chrono::{Datelike, Days, NaiveDate};
use serde::Serialize;

use super::error::DomainError;
use super::event::{PersonEvent, PersonFact, Place, Registration};
use super::ids::HouseholdId;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exclusion {
    EmployeeInsurance,
    Welfare,
    NhiUnion,
    Disability,
    Foreign,
    Age75,
}

impl Exclusion {
    const RECORDED: [Exclusion; 5] = [
        Exclusion::EmployeeInsurance,
        Exclusion::Welfare,
        Exclusion::NhiUnion,
        Exclusion::Disability,
        Exclusion::Foreign,
    ];

    fn index(self) -> usize {
        self as usize
    }
    /// First excluded day for a start event on `d`.
    fn start_day(self, d: NaiveDate) -> NaiveDate {
        match self {
            Exclusion::EmployeeInsurance | Exclusion::Disability => next_day(d),
            _ => d,
        }
    }
    /// First insured-again day for an end event on `d`.
    fn end_day(self, d: NaiveDate) -> NaiveDate {
        match self {
            Exclusion::Disability => next_day(d),
            _ => d,
        }
    }
    fn loss(self) -> LossReason {
        match self {
            Exclusion::EmployeeInsurance => LossReason::EmployeeInsuranceJoined,
            Exclusion::Welfare => LossReason::WelfareStarted,
            Exclusion::NhiUnion => LossReason::NhiUnionJoined,
            Exclusion::Disability | Exclusion::Age75 => LossReason::LateElderly,
            Exclusion::Foreign => LossReason::ForeignResidentExcluded,
        }
    }
    fn acquisition(self) -> AcquisitionReason {
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
struct Residence {
    start: NaiveDate,
    end: Option<NaiveDate>,
    start_reason: AcquisitionReason,
    end_reason: Option<LossReason>,
    /// `qualified_on` carried over by a move-in from the same prefecture.
    carried_qualification: Option<NaiveDate>,
}

#[derive(Clone, Copy, Debug)]
struct ExclusionRange {
    kind: Exclusion,
    start: NaiveDate,
    end: Option<NaiveDate>,
}

#[derive(Clone, Default)]
struct Walk {
    open_residence: Option<Residence>,
    residences: Vec<Residence>,
    open_exclusions: [Option<NaiveDate>; 5],
    exclusions: Vec<ExclusionRange>,
    disclosure_from: Option<NaiveDate>,
    born_seen: bool,
    /// (from, household) in walk order; each entry lasts until the next or the end of the
    /// residence it lies in.
    households: Vec<(NaiveDate, HouseholdId)>,
    last_document_collected: Option<NaiveDate>,
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

fn within(start: NaiveDate, end: Option<NaiveDate>, d: NaiveDate) -> bool {
    start <= d && end.is_none_or(|e| d < e)
}

fn insured_runs(residences: &[Residence], exclusions: &[ExclusionRange], alive_until: Option<NaiveDate>) -> Vec<Run> {
    let insured = |d: NaiveDate| {
        residences.iter().any(|r| within(r.start, r.end, d))
            && alive_until.is_none_or(|a| d < a)
            && !exclusions.iter().any(|x| within(x.start, x.end, d))
    };
    let mut bounds: Vec<NaiveDate> = Vec::new();
    for r in residences {
        bounds.push(r.start);
        bounds.extend(r.end);
    }
    for x in exclusions {
        bounds.push(x.start);
        bounds.extend(x.end);
    }
    bounds.extend(alive_until);
    bounds.sort();
    bounds.dedup();

    let mut runs = Vec::new();
    let mut open: Option<NaiveDate> = None;
    for &b in &bounds {
        match (open, insured(b)) {
            (None, true) => open = Some(b),
            (Some(from), false) => {
                runs.push(close_run(from, Some(b), residences, exclusions, alive_until));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(from) = open {
        runs.push(close_run(from, None, residences, exclusions, alive_until));
    }
    runs
}

fn close_run(
    from: NaiveDate,
    to: Option<NaiveDate>,
    residences: &[Residence],
    exclusions: &[ExclusionRange],
    alive_until: Option<NaiveDate>,
) -> Run {
    // Acquisition: the first, in tie order, of the conditions that became true on `from`.
    let mut acq: Option<(AcquisitionReason, Option<NaiveDate>)> = None;
    let mut offer = |reason: AcquisitionReason, carried: Option<NaiveDate>| {
        if acq.is_none_or(|(r, _)| reason < r) {
            acq = Some((reason, carried));
        }
    };
    for r in residences.iter().filter(|r| r.start == from) {
        offer(r.start_reason, r.carried_qualification);
    }
    for x in exclusions.iter().filter(|x| x.end == Some(from)) {
        offer(x.kind.acquisition(), None);
    }
    // A run always starts where some condition became true; moved_in is the safe reading.
    let (acquisition, carried) = acq.unwrap_or((AcquisitionReason::MovedIn, None));

    let by_age = to.is_some_and(|t| {
        exclusions.iter().any(|x| x.kind == Exclusion::Age75 && x.start == t)
            && alive_until != Some(t)
            && !exclusions.iter().any(|x| x.kind != Exclusion::Age75 && x.start == t)
            && !residences.iter().any(|r| r.end == Some(t))
    });
    let loss = to.map(|t| {
        let mut best: Option<LossReason> = None;
        let mut offer = |l: LossReason| {
            if best.is_none_or(|b| l < b) {
                best = Some(l);
            }
        };
        if alive_until == Some(t) {
            offer(LossReason::Died);
        }
        for x in exclusions.iter().filter(|x| x.start == t) {
            offer(x.kind.loss());
        }
        for r in residences.iter().filter(|r| r.end == Some(t)) {
            offer(r.end_reason.unwrap_or(LossReason::MovedOut));
        }
        best.unwrap_or(LossReason::MovedOut)
    });
    Run {
        from,
        to,
        acquisition,
        loss,
        qualified_on: carried.unwrap_or(from),
        loss_by_age: by_age,
    }
}

/// Facts of one day in an order the state allows: the first possible fact by sequence, and,
/// when that leads to a dead end, another order (a move-out recorded before a household
/// change of the same day must not refuse the change). The first failure met is reported
/// when no order works; the search is bounded (same-day facts are few).
const DAY_SEARCH_BUDGET: usize = 5_000;

fn walk_day(walk: Walk, pending: &[&PersonEvent], reg: &Registration, budget: &mut usize) -> Result<Walk, DomainError> {
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

/// Memberships from the walk's household entries: each lasts until the next entry, the end of
/// the residence it lies in, or the day after death.
fn memberships(
    entries: &[(NaiveDate, HouseholdId)],
    residences: &[Residence],
    alive_until: Option<NaiveDate>,
) -> Vec<Membership> {
    let mut out: Vec<Membership> = Vec::new();
    for (i, (from, household_id)) in entries.iter().enumerate() {
        let next = entries.get(i + 1).map(|(d, _)| *d);
        // The residence the entry lies in (a move-in or birth starts one on `from`; a household
        // change happens while resident).
        let residence_end = residences
            .iter()
            .filter(|r| r.start <= *from && r.end.is_none_or(|e| *from < e))
            .map(|r| r.end)
            .next_back()
            .unwrap_or(Some(*from));
        let to = [next, residence_end, alive_until].into_iter().flatten().min();
        if to.is_some_and(|t| t <= *from) {
            continue;
        }
        // A household change to the same household continues the membership.
        if let Some(last) = out.last_mut() {
            if last.household_id == *household_id && last.to == Some(*from) {
                last.to = to;
                continue;
            }
        }
        out.push(Membership {
            household_id: household_id.clone(),
            from: *from,
            to,
        });
    }
    out
}

fn split_by_household(runs: &[Run], memberships: &[Membership]) -> Vec<Interval> {
    let household_on = |d: NaiveDate| {
        memberships
            .iter()
            .find(|m| m.contains(d))
            .map(|m| m.household_id.clone())
    };
    let mut out = Vec::new();
    for run in runs {
        let mut cuts: Vec<NaiveDate> = memberships
            .iter()
            .flat_map(|m| [Some(m.from), m.to])
            .flatten()
            .filter(|d| *d > run.from && run.to.is_none_or(|t| *d < t))
            .collect();
        cuts.sort();
        cuts.dedup();
        let mut from = run.from;
        let mut current = household_on(from);
        let mut acquisition = run.acquisition;
        for cut in cuts {
            let next = household_on(cut);
            if next == current {
                continue;
            }
            out.push(Interval {
                from,
                to: Some(cut),
                acquisition,
                loss: Some(LossReason::HouseholdChanged),
                qualified_on: run.qualified_on,
                disqualified_on: None,
                household_id: current,
            });
            from = cut;
            current = next;
            acquisition = AcquisitionReason::HouseholdChanged;
        }
        out.push(Interval {
            from,
            to: run.to,
            acquisition,
            loss: run.loss,
            qualified_on: run.qualified_on,
            disqualified_on: run.disqualified_on(),
            household_id: current,
        });
    }
    out
}
