//! Properties over random valid histories, against an independent day-by-day oracle of §3;
//! name changes.

use super::*;

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
