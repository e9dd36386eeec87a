//! Given/when/then tests of the aggregates and the derivation rules of domain.md §3, §6, §7.

use chrono::NaiveDate;
use cqrs_es::test::TestFramework;
use proptest::prelude::*;

use super::error::CommandError;
use super::event::*;
use super::history::{seventy_fifth_birthday, AcquisitionReason as A, Derived, LossReason as L};
use super::ids::*;
use super::person::{Person, PersonServices, RecordPersonEvent};

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

const TODAY: &str = "2026-11-25";

fn services() -> PersonServices {
    PersonServices { today: d(TODAY) }
}

fn ev(date: &str, fact: PersonFact) -> PersonEvent {
    PersonEvent {
        effective_date: d(date),
        reported_date: d(date),
        fact,
    }
}

fn registered(birth: &str) -> PersonEvent {
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

fn hh(s: &str) -> HouseholdId {
    HouseholdId::parse(s).unwrap()
}

fn moved_in(date: &str, from: Place) -> PersonEvent {
    ev(
        date,
        PersonFact::MovedIn {
            from,
            household_id: hh("500"),
            qualified_on: None,
        },
    )
}

fn moved_out(date: &str, to: Place) -> PersonEvent {
    ev(date, PersonFact::MovedOut { to })
}

/// Runs the command through the aggregate (given/when) and returns its outcome.
async fn when(given: Vec<PersonEvent>, event: PersonEvent) -> Result<Vec<PersonEvent>, CommandError> {
    TestFramework::<Person>::with(services())
        .given(given)
        .when_async(RecordPersonEvent { event, system: false })
        .await
        .inspect_result()
}

/// Records `then` on top of `given`, expecting it accepted, and derives the result.
async fn accepted(given: Vec<PersonEvent>, then: PersonEvent) -> Derived {
    let out = when(given.clone(), then.clone()).await.expect("accepted");
    assert_eq!(out, vec![then.clone()]);
    let mut all = given;
    all.push(then);
    Person::from_events(all).derive().unwrap()
}

async fn refused(given: Vec<PersonEvent>, then: PersonEvent) -> &'static str {
    match when(given, then).await {
        Err(CommandError::Rule(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// One resident adult, born 1980, moved in from another prefecture on 2020-01-10.
fn resident() -> Vec<PersonEvent> {
    vec![registered("1980-06-15"), moved_in("2020-01-10", Place::OtherPrefecture)]
}

fn only(derived: &Derived) -> &super::history::Interval {
    assert_eq!(derived.intervals.len(), 1, "{:?}", derived.intervals);
    &derived.intervals[0]
}

// ---- §3, one test per row ----------------------------------------------------------------

#[tokio::test]
async fn moved_in_from_other_prefecture_acquires_on_the_day() {
    let x = accepted(
        vec![registered("1980-06-15")],
        moved_in("2025-04-01", Place::OtherPrefecture),
    )
    .await;
    let i = only(&x);
    assert_eq!(
        (i.from, i.to, i.acquisition, i.qualified_on),
        (
            d("2025-04-01"),
            Some(seventy_fifth_birthday(d("1980-06-15"))),
            A::MovedIn,
            d("2025-04-01")
        )
    );
    assert_eq!(i.loss, Some(L::LateElderly));
    assert_eq!(i.household_id, Some(hh("500")));
}

#[tokio::test]
async fn moved_in_from_abroad_acquires_on_the_day() {
    let x = accepted(vec![registered("1980-06-15")], moved_in("2025-04-01", Place::Abroad)).await;
    assert_eq!(only(&x).from, d("2025-04-01"));
    assert_eq!(only(&x).qualified_on, d("2025-04-01"));
}

#[tokio::test]
async fn moved_in_from_same_prefecture_carries_qualification_over() {
    let carried = ev(
        "2025-04-01",
        PersonFact::MovedIn {
            from: Place::SamePrefecture,
            household_id: hh("500"),
            qualified_on: Some(d("2019-05-01")),
        },
    );
    let x = accepted(vec![registered("1980-06-15")], carried).await;
    assert_eq!(
        (only(&x).from, only(&x).qualified_on),
        (d("2025-04-01"), d("2019-05-01"))
    );
    // Without the field the qualification counts from the move-in.
    let x = accepted(
        vec![registered("1980-06-15")],
        moved_in("2025-04-01", Place::SamePrefecture),
    )
    .await;
    assert_eq!(only(&x).qualified_on, d("2025-04-01"));
}

#[tokio::test]
async fn born_is_insured_from_the_birth_date() {
    let x = accepted(
        vec![registered("2025-08-03")],
        ev(
            "2025-08-03",
            PersonFact::Born {
                household_id: hh("500"),
            },
        ),
    )
    .await;
    assert_eq!(
        (only(&x).from, only(&x).acquisition, only(&x).qualified_on),
        (d("2025-08-03"), A::Born, d("2025-08-03"))
    );
}

#[tokio::test]
async fn moved_out_to_other_prefecture_loses_on_the_day() {
    let x = accepted(resident(), moved_out("2025-05-15", Place::OtherPrefecture)).await;
    let i = only(&x);
    assert_eq!(
        (i.to, i.loss, i.disqualified_on),
        (Some(d("2025-05-15")), Some(L::MovedOut), Some(d("2025-05-15")))
    );
    assert_eq!(i.loss.unwrap().code(), Some("99"));
    assert_eq!(x.runs[0].applied_to(), Some(d("2025-05-14")));
}

#[tokio::test]
async fn moved_out_within_prefecture_ends_application_not_qualification() {
    let x = accepted(resident(), moved_out("2025-05-15", Place::SamePrefecture)).await;
    let i = only(&x);
    assert_eq!(
        (i.to, i.loss, i.disqualified_on),
        (Some(d("2025-05-15")), Some(L::MovedWithinPrefecture), None)
    );
    assert_eq!(i.loss.unwrap().code(), None);
    assert_eq!(
        x.runs[0].applied_to(),
        Some(d("2025-05-14")),
        "applied_to is the day before"
    );
    assert_eq!(x.runs[0].disqualified_on(), None);
}

#[tokio::test]
async fn moved_out_abroad_loses_the_next_day() {
    let x = accepted(resident(), moved_out("2025-05-15", Place::Abroad)).await;
    assert_eq!((only(&x).to, only(&x).loss), (Some(d("2025-05-16")), Some(L::MovedOut)));
    assert_eq!(only(&x).disqualified_on, Some(d("2025-05-16")));
}

#[tokio::test]
async fn died_loses_the_next_day() {
    let x = accepted(resident(), ev("2025-03-31", PersonFact::Died)).await;
    assert_eq!((only(&x).to, only(&x).loss), (Some(d("2025-04-01")), Some(L::Died)));
    assert_eq!(only(&x).loss.unwrap().code(), Some("01"));
}

#[tokio::test]
async fn employee_insurance_joined_loses_the_next_day() {
    let x = accepted(resident(), ev("2025-04-01", PersonFact::EmployeeInsuranceJoined)).await;
    assert_eq!(
        (only(&x).to, only(&x).loss),
        (Some(d("2025-04-02")), Some(L::EmployeeInsuranceJoined))
    );
    assert_eq!(only(&x).loss.unwrap().code(), Some("03"));
}

#[tokio::test]
async fn employee_insurance_left_acquires_on_the_loss_date() {
    let mut given = resident();
    given.push(ev("2025-04-01", PersonFact::EmployeeInsuranceJoined));
    let x = accepted(given, ev("2025-10-01", PersonFact::EmployeeInsuranceLeft)).await;
    assert_eq!(x.intervals.len(), 2);
    let i = &x.intervals[1];
    assert_eq!(
        (i.from, i.acquisition, i.qualified_on),
        (d("2025-10-01"), A::EmployeeInsuranceLeft, d("2025-10-01"))
    );
}

#[tokio::test]
async fn welfare_started_loses_the_same_day_and_ended_acquires() {
    let x = accepted(resident(), ev("2025-06-10", PersonFact::WelfareStarted)).await;
    assert_eq!(
        (only(&x).to, only(&x).loss),
        (Some(d("2025-06-10")), Some(L::WelfareStarted))
    );
    assert_eq!(only(&x).loss.unwrap().code(), Some("02"));
    let mut given = resident();
    given.push(ev("2025-06-10", PersonFact::WelfareStarted));
    let x = accepted(given, ev("2026-01-05", PersonFact::WelfareEnded)).await;
    assert_eq!(
        (x.intervals[1].from, x.intervals[1].acquisition),
        (d("2026-01-05"), A::WelfareEnded)
    );
}

#[tokio::test]
async fn nhi_union_joined_and_left() {
    let x = accepted(resident(), ev("2025-06-10", PersonFact::NhiUnionJoined)).await;
    assert_eq!(
        (only(&x).to, only(&x).loss),
        (Some(d("2025-06-10")), Some(L::NhiUnionJoined))
    );
    assert_eq!(only(&x).loss.unwrap().code(), Some("03"));
    let mut given = resident();
    given.push(ev("2025-06-10", PersonFact::NhiUnionJoined));
    let x = accepted(given, ev("2025-09-01", PersonFact::NhiUnionLeft)).await;
    assert_eq!(
        (x.intervals[1].from, x.intervals[1].acquisition),
        (d("2025-09-01"), A::NhiUnionLeft)
    );
}

#[tokio::test]
async fn late_elderly_disability_certified_next_day_and_withdrawn_next_day() {
    let mut given = vec![registered("1955-06-15"), moved_in("2020-01-10", Place::OtherPrefecture)];
    let x = accepted(
        given.clone(),
        ev("2025-06-10", PersonFact::LateElderlyDisabilityCertified),
    )
    .await;
    assert_eq!(
        (only(&x).to, only(&x).loss),
        (Some(d("2025-06-11")), Some(L::LateElderly))
    );
    assert_eq!(only(&x).loss.unwrap().code(), Some("03"));
    given.push(ev("2025-06-10", PersonFact::LateElderlyDisabilityCertified));
    let x = accepted(given, ev("2025-08-20", PersonFact::LateElderlyDisabilityWithdrawn)).await;
    assert_eq!(
        (x.intervals[1].from, x.intervals[1].acquisition),
        (d("2025-08-21"), A::LateElderlyDisabilityWithdrawn)
    );
}

#[tokio::test]
async fn foreign_resident_excluded_and_included() {
    let x = accepted(resident(), ev("2025-06-10", PersonFact::ForeignResidentExcluded)).await;
    assert_eq!(
        (only(&x).to, only(&x).loss),
        (Some(d("2025-06-10")), Some(L::ForeignResidentExcluded))
    );
    assert_eq!(only(&x).loss.unwrap().code(), Some("99"));
    let mut given = resident();
    given.push(ev("2025-06-10", PersonFact::ForeignResidentExcluded));
    let x = accepted(given, ev("2025-07-01", PersonFact::ForeignResidentIncluded)).await;
    assert_eq!(
        (x.intervals[1].from, x.intervals[1].acquisition),
        (d("2025-07-01"), A::ForeignResidentIncluded)
    );
}

#[tokio::test]
async fn seventy_fifth_birthday_including_29_february() {
    assert_eq!(seventy_fifth_birthday(d("1951-02-28")), d("2026-02-28"));
    assert_eq!(seventy_fifth_birthday(d("1952-02-29")), d("2027-03-01"));
    assert_eq!(seventy_fifth_birthday(d("1948-02-29")), d("2023-03-01"));
    assert_eq!(seventy_fifth_birthday(d("1950-12-31")), d("2025-12-31"));
    let x = accepted(
        vec![registered("1951-02-28")],
        moved_in("2020-01-10", Place::OtherPrefecture),
    )
    .await;
    assert_eq!(
        (only(&x).to, only(&x).loss),
        (Some(d("2026-02-28")), Some(L::LateElderly))
    );
    assert_eq!(only(&x).disqualified_on, Some(d("2026-02-28")));
    assert!(x.runs[0].loss_by_age);
    // An earlier recorded loss is not "by age".
    let given = vec![
        registered("1951-02-28"),
        moved_in("2020-01-10", Place::OtherPrefecture),
        ev("2025-06-01", PersonFact::EmployeeInsuranceJoined),
    ];
    let y = Person::from_events(given).derive().unwrap();
    assert!(!y.runs[0].loss_by_age);
    let x = accepted(
        vec![registered("1952-02-29")],
        moved_in("2020-01-10", Place::OtherPrefecture),
    )
    .await;
    assert_eq!(only(&x).to, Some(d("2027-03-01")));
    // Moving in after the 75th birthday never makes the person insured.
    let x = accepted(
        vec![registered("1940-01-01")],
        moved_in("2020-01-10", Place::OtherPrefecture),
    )
    .await;
    assert!(x.intervals.is_empty());
}

#[tokio::test]
async fn exclusion_may_start_before_residence() {
    let given = vec![
        registered("1980-06-15"),
        ev("2018-04-01", PersonFact::EmployeeInsuranceJoined),
    ];
    let x = accepted(given.clone(), moved_in("2020-01-10", Place::OtherPrefecture)).await;
    assert!(x.intervals.is_empty(), "never insured while employed");
    let mut given = given;
    given.push(moved_in("2020-01-10", Place::OtherPrefecture));
    let x = accepted(given, ev("2021-03-01", PersonFact::EmployeeInsuranceLeft)).await;
    assert_eq!(
        (only(&x).from, only(&x).acquisition),
        (d("2021-03-01"), A::EmployeeInsuranceLeft)
    );
}

#[tokio::test]
async fn same_day_losses_follow_the_tie_order() {
    // Employee insurance from 03-31 excludes from 04-01; death on 03-31 loses on 04-01: died wins.
    let mut given = resident();
    given.push(ev("2025-03-31", PersonFact::EmployeeInsuranceJoined));
    let x = accepted(given, ev("2025-03-31", PersonFact::Died)).await;
    assert_eq!((only(&x).to, only(&x).loss), (Some(d("2025-04-01")), Some(L::Died)));
    // Welfare and a move-out to another prefecture on the same day: welfare wins.
    let mut given = resident();
    given.push(moved_out("2025-05-15", Place::OtherPrefecture));
    let x = accepted(given, ev("2025-05-15", PersonFact::WelfareStarted)).await;
    assert_eq!(only(&x).loss, Some(L::WelfareStarted));
}

#[tokio::test]
async fn same_day_acquisitions_prefer_moved_in() {
    let given = vec![
        registered("1980-06-15"),
        ev("2018-04-01", PersonFact::EmployeeInsuranceJoined),
    ];
    let mut all = given.clone();
    all.push(ev("2020-01-10", PersonFact::EmployeeInsuranceLeft));
    let x = accepted(all, moved_in("2020-01-10", Place::OtherPrefecture)).await;
    assert_eq!(only(&x).acquisition, A::MovedIn);
}

#[tokio::test]
async fn leaving_and_joining_employee_insurance_the_same_day_in_any_recording_order() {
    let mut given = resident();
    given.push(ev("2024-04-01", PersonFact::EmployeeInsuranceJoined));
    // The new job's insurance starts on the old one's loss date: recorded first, then the leave.
    given.push(ev("2025-04-01", PersonFact::EmployeeInsuranceJoined));
    let x = accepted(given, ev("2025-04-01", PersonFact::EmployeeInsuranceLeft)).await;
    // Insured on the one overlap day only (loss date of the old = start of the new, excluded from the next day).
    assert_eq!(x.intervals.len(), 2);
    assert_eq!(
        (x.intervals[1].from, x.intervals[1].to),
        (d("2025-04-01"), Some(d("2025-04-02")))
    );
}

#[tokio::test]
async fn household_change_splits_an_insured_interval() {
    let x = accepted(
        resident(),
        ev(
            "2023-02-01",
            PersonFact::HouseholdChanged {
                household_id: hh("777"),
            },
        ),
    )
    .await;
    assert_eq!(x.intervals.len(), 2);
    let (a, b) = (&x.intervals[0], &x.intervals[1]);
    assert_eq!(
        (a.to, a.loss, a.disqualified_on, a.household_id.clone()),
        (Some(d("2023-02-01")), Some(L::HouseholdChanged), None, Some(hh("500")))
    );
    assert_eq!(
        (b.from, b.acquisition, b.qualified_on, b.household_id.clone()),
        (d("2023-02-01"), A::HouseholdChanged, d("2020-01-10"), Some(hh("777")))
    );
    assert_eq!(x.runs.len(), 1, "one application period");
}

#[tokio::test]
async fn non_eligibility_facts_change_nothing() {
    let base = Person::from_events(resident()).derive().unwrap();
    for fact in [PersonFact::DisclosureRestricted, PersonFact::DocumentCollected] {
        let x = accepted(resident(), ev("2024-01-01", fact)).await;
        assert_eq!(x.intervals, base.intervals);
    }
}

// ---- §6 corrections ----------------------------------------------------------------------

#[tokio::test]
async fn a_correction_moves_a_death_date() {
    let mut given = resident();
    given.push(ev("2025-03-31", PersonFact::Died));
    let fix = ev(
        TODAY,
        PersonFact::Corrected {
            target_sequence: 3,
            replacement: Box::new(ev("2025-02-14", PersonFact::Died)),
        },
    );
    let x = accepted(given.clone(), fix).await;
    assert_eq!((only(&x).to, only(&x).loss), (Some(d("2025-02-15")), Some(L::Died)));
    // As known before the correction: the original date.
    let before = Person::from_events(given).derive().unwrap();
    assert_eq!(only(&before).to, Some(d("2025-04-01")));
}

#[tokio::test]
async fn a_rescinded_move_out_restores_coverage() {
    let mut given = resident();
    given.push(moved_out("2025-05-15", Place::OtherPrefecture));
    let x = accepted(
        given,
        ev(
            TODAY,
            PersonFact::Rescinded {
                target_sequence: 3,
                reason: "filed in error".into(),
            },
        ),
    )
    .await;
    assert_eq!(
        only(&x).loss,
        Some(L::LateElderly),
        "open until the 75th birthday again"
    );
}

#[tokio::test]
async fn a_correction_is_validated_against_the_whole_history() {
    let mut given = resident();
    given.push(moved_out("2025-05-15", Place::OtherPrefecture));
    // Moving the move-in after the move-out makes the history impossible.
    let bad = ev(
        TODAY,
        PersonFact::Corrected {
            target_sequence: 2,
            replacement: Box::new(moved_in("2025-06-01", Place::OtherPrefecture)),
        },
    );
    assert_eq!(refused(given.clone(), bad).await, "not_resident");
    // Rescinding the move-in leaves a move-out of a non-resident.
    let bad = ev(
        TODAY,
        PersonFact::Rescinded {
            target_sequence: 2,
            reason: "x".into(),
        },
    );
    assert_eq!(refused(given, bad).await, "not_resident");
}

#[tokio::test]
async fn correction_targets_are_checked() {
    let mut given = resident();
    let corr = |t: u64, r: PersonEvent| {
        ev(
            TODAY,
            PersonFact::Corrected {
                target_sequence: t,
                replacement: Box::new(r),
            },
        )
    };
    assert_eq!(
        refused(given.clone(), corr(9, moved_in("2020-01-11", Place::OtherPrefecture))).await,
        "target_not_found"
    );
    assert_eq!(
        refused(given.clone(), corr(2, ev("2020-01-11", PersonFact::Died))).await,
        "replacement_type_mismatch"
    );
    assert_eq!(
        refused(
            given.clone(),
            ev(
                TODAY,
                PersonFact::Rescinded {
                    target_sequence: 1,
                    reason: "x".into()
                }
            )
        )
        .await,
        "cannot_rescind_registration"
    );
    given.push(ev(
        TODAY,
        PersonFact::Rescinded {
            target_sequence: 2,
            reason: "x".into(),
        },
    ));
    assert_eq!(
        refused(given.clone(), corr(3, moved_in("2020-01-11", Place::OtherPrefecture))).await,
        "target_is_correction"
    );
    assert_eq!(
        refused(given.clone(), corr(2, moved_in("2020-01-11", Place::OtherPrefecture))).await,
        "target_rescinded"
    );
    assert_eq!(
        refused(
            given,
            ev(
                TODAY,
                PersonFact::Rescinded {
                    target_sequence: 2,
                    reason: "again".into()
                }
            )
        )
        .await,
        "target_rescinded"
    );
}

#[tokio::test]
async fn a_corrected_birth_date_revalidates_everything() {
    let given = resident();
    let mut reg = registered("1980-06-15");
    if let PersonFact::Registered(r) = &mut reg.fact {
        r.birth_date = d("2021-01-01");
    }
    let fix = ev(
        TODAY,
        PersonFact::Corrected {
            target_sequence: 1,
            replacement: Box::new(reg),
        },
    );
    assert_eq!(
        refused(given, fix).await,
        "before_birth",
        "the move-in would precede the birth"
    );
}

#[tokio::test]
async fn retroactive_insert_is_checked_in_effective_date_order() {
    let mut given = resident();
    given.push(moved_out("2024-05-15", Place::OtherPrefecture));
    // A death before the move-out, recorded later, makes the move-out an event after death.
    assert_eq!(
        refused(given.clone(), ev("2023-01-01", PersonFact::Died)).await,
        "after_death"
    );
    // A welfare period inside the residence, recorded late, is fine.
    given.push(ev("2022-01-01", PersonFact::WelfareStarted));
    let x = accepted(given, ev("2022-06-01", PersonFact::WelfareEnded)).await;
    assert_eq!(x.intervals.len(), 2);
    assert_eq!(x.intervals[0].to, Some(d("2022-01-01")));
    assert_eq!(x.intervals[1].from, d("2022-06-01"));
}

// ---- §7 refusals -------------------------------------------------------------------------

#[tokio::test]
async fn registration_rules() {
    assert_eq!(
        refused(vec![], moved_in("2020-01-10", Place::Abroad)).await,
        "person_not_registered"
    );
    assert_eq!(
        refused(resident(), registered("1980-06-15")).await,
        "already_registered"
    );
    let mut early = registered("1980-06-15");
    early.effective_date = d("1970-01-01");
    early.reported_date = d("2000-01-01");
    assert_eq!(refused(vec![], early).await, "before_birth");
    assert_eq!(refused(vec![], registered("2027-01-01")).await, "future_date");
}

#[tokio::test]
async fn residence_rules() {
    assert_eq!(
        refused(resident(), moved_in("2021-01-01", Place::Abroad)).await,
        "already_resident"
    );
    assert_eq!(
        refused(vec![registered("1980-06-15")], moved_out("2021-01-01", Place::Abroad)).await,
        "not_resident"
    );
    assert_eq!(
        refused(resident(), ev("2021-01-01", PersonFact::Born { household_id: hh("1") })).await,
        "already_resident"
    );
    let baby = vec![registered("2025-08-03")];
    assert_eq!(
        refused(
            baby.clone(),
            ev("2025-08-04", PersonFact::Born { household_id: hh("1") })
        )
        .await,
        "birth_date_mismatch"
    );
    assert_eq!(
        refused(
            vec![registered("1980-06-15")],
            ev("2021-01-01", PersonFact::HouseholdChanged { household_id: hh("9") })
        )
        .await,
        "not_resident"
    );
    let mut twice = baby;
    twice.push(ev("2025-08-03", PersonFact::Born { household_id: hh("1") }));
    twice.push(moved_out("2025-09-01", Place::Abroad));
    assert_eq!(
        refused(twice, ev("2025-09-10", PersonFact::Born { household_id: hh("1") })).await,
        "already_born"
    );
}

#[tokio::test]
async fn death_rules() {
    let mut dead = resident();
    dead.push(ev("2025-03-31", PersonFact::Died));
    assert_eq!(
        refused(dead.clone(), ev("2025-04-01", PersonFact::WelfareStarted)).await,
        "after_death"
    );
    assert_eq!(
        refused(dead.clone(), ev("2025-01-01", PersonFact::Died)).await,
        "already_dead"
    );
    // On the death day itself an event is still possible.
    accepted(dead, ev("2025-03-31", PersonFact::DocumentCollected)).await;
}

#[tokio::test]
async fn exclusion_rules() {
    let mut given = resident();
    given.push(ev("2024-01-01", PersonFact::WelfareStarted));
    assert_eq!(
        refused(given.clone(), ev("2024-02-01", PersonFact::WelfareStarted)).await,
        "exclusion_already_started"
    );
    assert_eq!(
        refused(resident(), ev("2024-02-01", PersonFact::WelfareEnded)).await,
        "exclusion_not_started"
    );
    assert_eq!(
        refused(resident(), ev("2024-02-01", PersonFact::EmployeeInsuranceLeft)).await,
        "exclusion_not_started"
    );
    assert_eq!(
        refused(resident(), ev("2024-02-01", PersonFact::NhiUnionLeft)).await,
        "exclusion_not_started"
    );
    assert_eq!(
        refused(resident(), ev("2024-02-01", PersonFact::LateElderlyDisabilityWithdrawn)).await,
        "exclusion_not_started"
    );
    assert_eq!(
        refused(resident(), ev("2024-02-01", PersonFact::ForeignResidentIncluded)).await,
        "exclusion_not_started"
    );
    assert_eq!(
        refused(resident(), ev("2024-02-01", PersonFact::DisclosureRestrictionLifted)).await,
        "disclosure_not_restricted"
    );
    // A retroactive end before the start is an end without a start.
    assert_eq!(
        refused(given, ev("2023-06-01", PersonFact::WelfareEnded)).await,
        "exclusion_not_started"
    );
}

#[tokio::test]
async fn date_rules() {
    assert_eq!(
        refused(resident(), ev("1979-01-01", PersonFact::WelfareStarted)).await,
        "before_birth"
    );
    assert_eq!(
        refused(resident(), ev("2026-11-26", PersonFact::WelfareStarted)).await,
        "future_date"
    );
    let mut late_report = ev("2025-01-01", PersonFact::WelfareStarted);
    late_report.reported_date = d("2026-11-26");
    assert_eq!(refused(resident(), late_report).await, "reported_date_in_future");
    let mut early_report = ev("2025-01-10", PersonFact::WelfareStarted);
    early_report.reported_date = d("2025-01-09");
    assert_eq!(refused(resident(), early_report).await, "reported_before_effective");
    // A move-out may be pre-filed up to 31 days ahead, reported before it happens.
    let mut prefiled = moved_out("2026-12-26", Place::OtherPrefecture);
    prefiled.reported_date = d(TODAY);
    let x = accepted(resident(), prefiled.clone()).await;
    assert_eq!(only(&x).to, Some(d("2026-12-26")), "a known future loss shows as `to`");
    prefiled.effective_date = d("2026-12-27");
    assert_eq!(refused(resident(), prefiled).await, "future_date");
    let q = ev(
        "2025-04-01",
        PersonFact::MovedIn {
            from: Place::SamePrefecture,
            household_id: hh("1"),
            qualified_on: Some(d("2025-05-01")),
        },
    );
    assert_eq!(refused(vec![registered("1980-06-15")], q).await, "invalid_qualified_on");
}

async fn as_system(given: Vec<PersonEvent>, event: PersonEvent) -> Result<Vec<PersonEvent>, CommandError> {
    TestFramework::<Person>::with(services())
        .given(given)
        .when_async(RecordPersonEvent { event, system: true })
        .await
        .inspect_result()
}

#[tokio::test]
async fn system_events_are_refused_from_staff() {
    let elder = vec![registered("1951-06-01"), moved_in("2020-01-10", Place::OtherPrefecture)];
    assert_eq!(
        refused(elder.clone(), ev("2026-06-01", PersonFact::LateElderlyAgeReached)).await,
        "system_event_only"
    );
    let reached = ev("2026-06-01", PersonFact::LateElderlyAgeReached);
    assert_eq!(
        as_system(elder.clone(), reached.clone()).await.unwrap(),
        vec![reached.clone()]
    );
    // Once, and only on the 75th birthday itself.
    let code = |r: Result<Vec<PersonEvent>, CommandError>| match r {
        Err(CommandError::Rule(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut twice = elder.clone();
    twice.push(reached.clone());
    assert_eq!(code(as_system(twice, reached).await), "age_reached_already_recorded");
    let wrong_day = ev("2026-06-02", PersonFact::LateElderlyAgeReached);
    assert_eq!(code(as_system(elder.clone(), wrong_day).await), "not_75th_birthday");
    // The event confirms the derived loss; the intervals do not change.
    let before = Person::from_events(elder.clone()).derive().unwrap();
    let mut after = elder;
    after.push(ev("2026-06-01", PersonFact::LateElderlyAgeReached));
    assert_eq!(Person::from_events(after).derive().unwrap().intervals, before.intervals);
}

// ---- input parsing (400) -----------------------------------------------------------------

mod input {
    use super::super::input::{parse_household_event, parse_person_event};
    use super::*;
    use serde_json::json;

    fn code(v: serde_json::Value) -> &'static str {
        parse_person_event(&v, d(TODAY)).unwrap_err().code
    }

    #[test]
    fn every_malformed_class_has_its_code() {
        let reg = json!({"type": "registered", "effective_date": "2020-01-01", "name": "山田 太郎",
            "name_kana": "ﾔﾏﾀﾞ ﾀﾛｳ", "birth_date": "1980-06-15", "sex": "1"});
        let ok = parse_person_event(&reg, d(TODAY)).unwrap();
        match ok.event.fact {
            PersonFact::Registered(r) => {
                assert_eq!(r.name_kana.as_str(), "ヤマダ　タロウ");
                assert!(r.sex_on_back);
            }
            _ => unreachable!(),
        }
        assert_eq!(ok.event.reported_date, d(TODAY), "reported date defaults to today");
        let with = |k: &str, v: serde_json::Value| {
            let mut o = reg.clone();
            o[k] = v;
            o
        };
        assert_eq!(code(json!([1])), "invalid_body");
        assert_eq!(code(json!({"effective_date": "2020-01-01"})), "missing_field");
        assert_eq!(
            code(json!({"type": "teleported", "effective_date": "2020-01-01"})),
            "unknown_event_type"
        );
        assert_eq!(code(with("colour", json!("red"))), "unknown_field");
        assert_eq!(code(with("birth_date", json!("1980/06/15"))), "invalid_date");
        assert_eq!(code(with("birth_date", json!("1980-6-15"))), "invalid_date");
        assert_eq!(code(with("birth_date", json!("1980-02-30"))), "invalid_date");
        assert_eq!(code(with("sex", json!("3"))), "invalid_sex");
        assert_eq!(code(with("sex", json!(1))), "invalid_field");
        assert_eq!(code(with("my_number", json!("123456789019"))), "invalid_my_number");
        assert_eq!(code(with("name_kana", json!("やまだ"))), "invalid_kana");
        assert_eq!(code(with("name", json!(""))), "invalid_name");
        assert_eq!(code(with("sex_on_back", json!("yes"))), "invalid_field");
        assert_eq!(
            code(json!({"type": "moved_in", "effective_date": "2020-01-01", "from": "abroad", "household_id": "12x"})),
            "invalid_household_id"
        );
        assert_eq!(
            code(json!({"type": "moved_in", "effective_date": "2020-01-01", "from": "mars", "household_id": "1"})),
            "invalid_field"
        );
        assert_eq!(
            code(
                json!({"type": "moved_in", "effective_date": "2020-01-01", "from": "abroad", "household_id": "1", "qualified_on": "2019-01-01"})
            ),
            "field_not_allowed"
        );
        assert_eq!(
            code(json!({"type": "corrected", "target_sequence": 0, "replacement": {}})),
            "invalid_field"
        );
        assert_eq!(
            code(
                json!({"type": "corrected", "target_sequence": 2, "replacement": {"type": "died", "effective_date": "2020-01-01", "x": 1}})
            ),
            "unknown_field"
        );
        assert_eq!(
            code(
                json!({"type": "corrected", "target_sequence": 2, "replacement": {"type": "rescinded", "target_sequence": 1, "reason": "r"}})
            ),
            "invalid_field"
        );
        let hcode = |v| parse_household_event(&v, d(TODAY)).unwrap_err().code;
        assert_eq!(
            hcode(json!({"type": "household_head_changed", "effective_date": "2020-01-01", "person_id": "abc"})),
            "invalid_person_id"
        );
        assert_eq!(
            hcode(json!({"type": "moved_in", "effective_date": "2020-01-01"})),
            "unknown_event_type"
        );
        assert_eq!(
            hcode(
                json!({"type": "card_number_assigned", "effective_date": "2020-01-01", "symbol": "a b", "number": "1"})
            ),
            "invalid_card_symbol"
        );
    }

    #[test]
    fn my_number_is_kept_out_of_the_event() {
        let reg = json!({"type": "registered", "effective_date": "2020-01-01", "name": "𠮷野 花子",
            "name_kana": "ヨシノ　ハナコ", "birth_date": "1980-06-15", "sex": "2", "my_number": "123456789018"});
        let p = parse_person_event(&reg, d(TODAY)).unwrap();
        assert!(p.my_number.is_some());
        let stored = serde_json::to_string(&p.event).unwrap();
        assert!(!stored.contains("123456789018"));
        assert!(stored.contains("𠮷野 花子"));
    }
}

// ---- properties over random valid histories ----------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    In(Place),
    Out(Place),
    Toggle(usize),
    Household,
    Die,
}

fn history_strategy() -> impl Strategy<Value = Vec<PersonEvent>> {
    let step = prop_oneof![
        3 => prop_oneof![Just(Place::OtherPrefecture), Just(Place::SamePrefecture), Just(Place::Abroad)].prop_map(Step::In),
        2 => prop_oneof![Just(Place::OtherPrefecture), Just(Place::SamePrefecture), Just(Place::Abroad)].prop_map(Step::Out),
        4 => (0usize..5).prop_map(Step::Toggle),
        1 => Just(Step::Household),
        1 => Just(Step::Die),
    ];
    (
        1940i32..2015,
        1u32..13,
        1u32..29,
        prop::collection::vec((step, 1u64..900), 1..25),
    )
        .prop_map(|(y, m, day, steps)| {
            let birth = NaiveDate::from_ymd_opt(y, m, day).unwrap();
            let mut events = vec![registered(&birth.to_string())];
            let mut date = birth;
            let mut resident = false;
            let mut active = [false; 5];
            let mut hh_counter = 0;
            let today = d(TODAY);
            let toggles = [
                (PersonFact::EmployeeInsuranceJoined, PersonFact::EmployeeInsuranceLeft),
                (PersonFact::WelfareStarted, PersonFact::WelfareEnded),
                (PersonFact::NhiUnionJoined, PersonFact::NhiUnionLeft),
                (
                    PersonFact::LateElderlyDisabilityCertified,
                    PersonFact::LateElderlyDisabilityWithdrawn,
                ),
                (PersonFact::ForeignResidentExcluded, PersonFact::ForeignResidentIncluded),
            ];
            for (step, gap) in steps {
                date = date + chrono::Days::new(gap);
                if date > today {
                    break;
                }
                let fact = match step {
                    Step::In(p) if !resident => {
                        resident = true;
                        hh_counter += 1;
                        PersonFact::MovedIn {
                            from: p,
                            household_id: hh(&hh_counter.to_string()),
                            qualified_on: None,
                        }
                    }
                    Step::Out(p) if resident => {
                        resident = false;
                        PersonFact::MovedOut { to: p }
                    }
                    Step::Toggle(k) => {
                        active[k] = !active[k];
                        if active[k] {
                            toggles[k].0.clone()
                        } else {
                            toggles[k].1.clone()
                        }
                    }
                    Step::Household if resident => {
                        hh_counter += 1;
                        PersonFact::HouseholdChanged {
                            household_id: hh(&hh_counter.to_string()),
                        }
                    }
                    Step::Die => {
                        events.push(PersonEvent {
                            effective_date: date,
                            reported_date: date,
                            fact: PersonFact::Died,
                        });
                        break;
                    }
                    _ => continue,
                };
                events.push(PersonEvent {
                    effective_date: date,
                    reported_date: date,
                    fact,
                });
            }
            events
        })
}

type Effect = Box<dyn Fn(&mut bool, &mut [bool; 5])>;

/// Independent day-by-day oracle of §3 for one day: resident, alive and not excluded.
fn oracle_insured(events: &[PersonEvent], day: NaiveDate) -> bool {
    let birth = match &events[0].fact {
        PersonFact::Registered(r) => r.birth_date,
        _ => unreachable!(),
    };
    let mut resident = false;
    let mut excluded = [false; 5];
    for e in &events[1..] {
        let next = e.effective_date.succ_opt().unwrap();
        // Each fact takes effect on its boundary day per the table of §3.
        let (boundary, apply): (NaiveDate, Effect) = match &e.fact {
            PersonFact::MovedIn { .. } | PersonFact::Born { .. } => (e.effective_date, Box::new(|r, _| *r = true)),
            PersonFact::MovedOut { to: Place::Abroad } => (next, Box::new(|r, _| *r = false)),
            PersonFact::MovedOut { .. } => (e.effective_date, Box::new(|r, _| *r = false)),
            PersonFact::Died => (
                next,
                Box::new(|r, x| {
                    *r = false;
                    x[0] = true;
                }),
            ),
            PersonFact::EmployeeInsuranceJoined => (next, Box::new(|_, x| x[0] = true)),
            PersonFact::EmployeeInsuranceLeft => (e.effective_date, Box::new(|_, x| x[0] = false)),
            PersonFact::WelfareStarted => (e.effective_date, Box::new(|_, x| x[1] = true)),
            PersonFact::WelfareEnded => (e.effective_date, Box::new(|_, x| x[1] = false)),
            PersonFact::NhiUnionJoined => (e.effective_date, Box::new(|_, x| x[2] = true)),
            PersonFact::NhiUnionLeft => (e.effective_date, Box::new(|_, x| x[2] = false)),
            PersonFact::LateElderlyDisabilityCertified => (next, Box::new(|_, x| x[3] = true)),
            PersonFact::LateElderlyDisabilityWithdrawn => (next, Box::new(|_, x| x[3] = false)),
            PersonFact::ForeignResidentExcluded => (e.effective_date, Box::new(|_, x| x[4] = true)),
            PersonFact::ForeignResidentIncluded => (e.effective_date, Box::new(|_, x| x[4] = false)),
            _ => continue,
        };
        if boundary <= day {
            apply(&mut resident, &mut excluded);
        }
    }
    // Death also ends everything after it: the generator stops at death, so "excluded[0] = true"
    // above stands for "not alive" and is never undone.
    resident && !excluded.iter().any(|x| *x) && day < seventy_fifth_birthday(birth)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn derived_intervals_are_well_formed(events in history_strategy()) {
        let x = Person::from_events(events.clone()).derive().unwrap();
        for w in x.intervals.windows(2) {
            prop_assert!(w[0].to.is_some_and(|t| t <= w[1].from), "sorted and disjoint: {:?}", x.intervals);
        }
        for i in &x.intervals {
            prop_assert!(i.to.is_none_or(|t| i.from < t));
            prop_assert_eq!(i.to.is_some(), i.loss.is_some(), "closed intervals have a loss reason");
            prop_assert!(i.household_id.is_some());
        }
    }

    #[test]
    fn derivation_agrees_with_a_day_by_day_oracle(events in history_strategy(), probes in prop::collection::vec(0u64..40000, 30)) {
        let x = Person::from_events(events.clone()).derive().unwrap();
        let birth = match &events[0].fact { PersonFact::Registered(r) => r.birth_date, _ => unreachable!() };
        let mut days: Vec<NaiveDate> = probes.into_iter().map(|p| birth + chrono::Days::new(p)).collect();
        // Boundaries are where rules bite: probe every fact's day and its neighbours.
        for e in &events {
            for delta in [-1i64, 0, 1, 2] {
                days.push(e.effective_date + chrono::Duration::days(delta));
            }
        }
        days.push(seventy_fifth_birthday(birth));
        days.push(seventy_fifth_birthday(birth).pred_opt().unwrap());
        for day in days {
            prop_assert_eq!(x.insured_on(day), oracle_insured(&events, day), "day {}", day);
        }
    }

    #[test]
    fn recording_order_does_not_change_the_intervals(events in history_strategy(), seed in any::<u64>()) {
        let x = Person::from_events(events.clone()).derive().unwrap();
        // The same facts recorded in another order (retroactively): sequences differ, dates do not.
        let mut rest = events[1..].to_vec();
        let n = rest.len();
        let mut s = seed;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rest.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut shuffled = vec![events[0].clone()];
        shuffled.extend(rest);
        let y = Person::from_events(shuffled).derive().unwrap();
        prop_assert_eq!(x.intervals, y.intervals);
    }

    #[test]
    fn each_valid_history_is_accepted_event_by_event(events in history_strategy()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for k in 1..events.len() {
            let out = rt.block_on(when(events[..k].to_vec(), events[k].clone()));
            prop_assert!(out.is_ok(), "event {} refused: {:?}", k + 1, out);
        }
    }
}

fn renamed(date: &str, name: &str, kana: &str, real: Option<&str>) -> PersonEvent {
    ev(
        date,
        PersonFact::NameChanged(NameChange {
            name: Name::parse(name).unwrap(),
            name_kana: Kana::parse(kana).unwrap(),
            real_name: real.map(|r| Name::parse(r).unwrap()),
            real_name_kana: None,
        }),
    )
}

#[test]
fn name_changes_apply_in_effective_date_order() {
    let person = Person::from_events(vec![
        registered("1980-01-01"),
        renamed("2024-05-01", "佐藤 太郎", "サトウ　タロウ", Some("山田 太郎")),
        // Recorded later but effective earlier: the 2024-05-01 change stays in force.
        renamed("2023-01-01", "田中 太郎", "タナカ　タロウ", None),
    ]);
    let reg = person.registration().unwrap();
    assert_eq!(reg.name.as_str(), "佐藤 太郎");
    assert_eq!(reg.name_kana.as_str(), "サトウ　タロウ");
    assert_eq!(reg.real_name.as_ref().map(|n| n.as_str()), Some("山田 太郎"));

    // A rescinded change falls away; the registered name comes back.
    let mut events = person.events().to_vec();
    events.truncate(2);
    events.push(ev(
        "2024-06-01",
        PersonFact::Rescinded {
            target_sequence: 2,
            reason: "wrong person".into(),
        },
    ));
    let reg = Person::from_events(events).registration().unwrap();
    assert_eq!(reg.name.as_str(), "山田 太郎");
    assert_eq!(reg.real_name, None);
}
