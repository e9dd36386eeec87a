//! From the walk's ranges to periods: the insured runs with their reasons (domain.md §3, the
//! tie orders), household memberships, and the runs split at household changes.

use chrono::NaiveDate;

use super::walk::{Exclusion, ExclusionRange, Residence};
use super::{AcquisitionReason, Interval, LossReason, Membership, Run};
use crate::domain::ids::HouseholdId;

fn within(start: NaiveDate, end: Option<NaiveDate>, d: NaiveDate) -> bool {
    start <= d && end.is_none_or(|e| d < e)
}

pub(super) fn insured_runs(
    residences: &[Residence],
    exclusions: &[ExclusionRange],
    alive_until: Option<NaiveDate>,
) -> Vec<Run> {
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

/// Memberships from the walk's household entries: each lasts until the next entry, the end of
/// the residence it lies in, or the day after death.
pub(super) fn memberships(
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

pub(super) fn split_by_household(runs: &[Run], memberships: &[Membership]) -> Vec<Interval> {
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
