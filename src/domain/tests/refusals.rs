//! §7: every refusal with its code; system events only from the ledger.

use super::*;

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
