//! §3: one test per row of the table, the tie orders, household splits.

use super::*;

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
