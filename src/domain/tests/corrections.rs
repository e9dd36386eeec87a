//! §6: corrections and rescissions, validated against the whole history.

use super::*;

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
