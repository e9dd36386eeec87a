//! Given/when/then tests of the aggregates and the derivation rules of domain.md §3, §6, §7,
//! one file per section, with the helpers they share here.

mod corrections;
mod derivation;
mod input;
mod properties;
mod refusals;

use chrono::NaiveDate;
use cqrs_es::test::TestFramework;
use proptest::prelude::*;

use super::error::CommandError;
use super::event::*;
use super::history::{seventy_fifth_birthday, AcquisitionReason as A, Derived, LossReason as L};
use super::ids::*;
use super::person::{Person, PersonServices, RecordPersonEvent};

pub(super) fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

const TODAY: &str = "2026-11-25";

pub(super) fn services() -> PersonServices {
    PersonServices { today: d(TODAY) }
}

pub(super) fn ev(date: &str, fact: PersonFact) -> PersonEvent {
    PersonEvent {
        effective_date: d(date),
        reported_date: d(date),
        fact,
    }
}

pub(super) fn registered(birth: &str) -> PersonEvent {
    PersonEvent {
        effective_date: d(birth).max(d("2000-01-01")).min(d(TODAY)),
        reported_date: d(birth).max(d("2000-01-01")).min(d(TODAY)),
        fact: PersonFact::Registered(Registration {
            name: Name::parse("山田 太郎").unwrap(),
            name_kana: Kana::parse("ヤマダ　タロウ").unwrap(),
            real_name: None,
            real_name_kana: None,
            birth_date: d(birth),
            sex: Sex::Male,
            sex_on_back: true,
            my_number_commitment: None,
        }),
    }
}

pub(super) fn hh(s: &str) -> HouseholdId {
    HouseholdId::parse(s).unwrap()
}

pub(super) fn moved_in(date: &str, from: Place) -> PersonEvent {
    ev(
        date,
        PersonFact::MovedIn {
            from,
            household_id: hh("500"),
            qualified_on: None,
        },
    )
}

pub(super) fn moved_out(date: &str, to: Place) -> PersonEvent {
    ev(date, PersonFact::MovedOut { to })
}

/// Runs the command through the aggregate (given/when) and returns its outcome.
pub(super) async fn when(given: Vec<PersonEvent>, event: PersonEvent) -> Result<Vec<PersonEvent>, CommandError> {
    TestFramework::<Person>::with(services())
        .given(given)
        .when_async(RecordPersonEvent { event, system: false })
        .await
        .inspect_result()
}

/// Records `then` on top of `given`, expecting it accepted, and derives the result.
pub(super) async fn accepted(given: Vec<PersonEvent>, then: PersonEvent) -> Derived {
    let out = when(given.clone(), then.clone()).await.expect("accepted");
    assert_eq!(out, vec![then.clone()]);
    let mut all = given;
    all.push(then);
    Person::from_events(all).derive().unwrap()
}

pub(super) async fn refused(given: Vec<PersonEvent>, then: PersonEvent) -> &'static str {
    match when(given, then).await {
        Err(CommandError::Rule(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// One resident adult, born 1980, moved in from another prefecture on 2020-01-10.
pub(super) fn resident() -> Vec<PersonEvent> {
    vec![registered("1980-06-15"), moved_in("2020-01-10", Place::OtherPrefecture)]
}

pub(super) fn only(derived: &Derived) -> &super::history::Interval {
    assert_eq!(derived.intervals.len(), 1, "{:?}", derived.intervals);
    &derived.intervals[0]
}
