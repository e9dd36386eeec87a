//! Golden feed groups: one scenario per event type of domain.md §3–§4 (and the household facts),
//! each the records its last step causes, compared with `tests/golden/feed/NAME.json` on
//! PostgreSQL and SQLite. The files were reviewed by hand against feed.md and domain.md; each
//! carries the reviewer's reading of why those are the right records (`expect`).
//!
//! Every scenario starts from the same household 10: person 1 (国保 一郎, born 1970-04-01,
//! register head) and person 2 (国保 花子, born 1955-06-15), both moved in from another
//! prefecture on 2024-04-01, so the card is 0000000001 with branches 01 and 02. "Today" is
//! 2026-11-25.
//!
//! A changed rule shows up as a diff against a reviewed file. To regenerate after a deliberate
//! change, run with `KOKUHO_UPDATE_GOLDEN=1` and review the diff before committing it.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use common::ledger_with;
use kokuho_ledger::domain::{HouseholdId, PersonId};
use kokuho_ledger::jobs::age_out;
use kokuho_ledger::ledger::Ledger;
use kokuho_ledger::projections::Lane;
use kokuho_ledger::request::RequestContext;
use serde_json::{json, Value};

enum Step {
    Person(&'static str, Value),
    Household(&'static str, Value),
    AgeOut(&'static str),
}
use Step::{AgeOut, Household as H, Person as P};

fn ctx() -> RequestContext {
    RequestContext {
        actor: "golden".into(),
        request_id: "golden".into(),
        ..Default::default()
    }
}

/// Registered on 2020-01-01, or on the birth date for a person born later.
fn registered(name: &str, kana: &str, birth: &str, sex: &str) -> Value {
    let on = birth.max("2020-01-01");
    json!({"type": "registered", "effective_date": on, "reported_date": on,
        "name": name, "name_kana": kana, "birth_date": birth, "sex": sex})
}

fn ev(ty: &str, date: &str) -> Value {
    json!({"type": ty, "effective_date": date, "reported_date": date})
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn base() -> Vec<Step> {
    vec![
        P("1", registered("国保 一郎", "コクホ　イチロウ", "1970-04-01", "1")),
        P("2", registered("国保 花子", "コクホ　ハナコ", "1955-06-15", "2")),
        P(
            "1",
            with(
                ev("moved_in", "2024-04-01"),
                json!({"from": "other_prefecture", "household_id": "10"}),
            ),
        ),
        H(
            "10",
            with(ev("household_head_changed", "2024-04-01"), json!({"person_id": "1"})),
        ),
        P(
            "2",
            with(
                ev("moved_in", "2024-04-01"),
                json!({"from": "other_prefecture", "household_id": "10"}),
            ),
        ),
    ]
}

/// Runs the base and the scenario's steps; returns the last step's body and the records it
/// caused (recorded_at masked: it is the commit instant).
async fn run(kind: common::Kind, steps: Vec<Step>) -> (Value, Vec<Value>) {
    let t = ledger_with(kind, false).await;
    let l: &Ledger = &t.ledger;
    let mut last = (json!(null), 0);
    for step in base().into_iter().chain(steps) {
        last = match step {
            P(id, body) => {
                let r = l
                    .record_person_event(&PersonId::parse(id).unwrap(), &body, &ctx())
                    .await
                    .unwrap_or_else(|e| panic!("person {id} {body}: {e}"));
                (json!({"person_id": id, "event": body}), r.position)
            }
            H(id, body) => {
                let r = l
                    .record_household_event(&HouseholdId::parse(id).unwrap(), &body, &ctx())
                    .await
                    .unwrap_or_else(|e| panic!("household {id} {body}: {e}"));
                (json!({"household_id": id, "event": body}), r.position)
            }
            AgeOut(day) => {
                let before = l.store().head().await.unwrap();
                // The job reads the read models (nothing runs them in this test).
                l.projections().catch_up_lane(Lane::Reads).await.unwrap();
                age_out::run(l, day.parse().unwrap()).await.unwrap();
                (json!({"age_out_through": day}), before + 1)
            }
        };
    }
    l.projections().catch_up().await.unwrap();
    let records = l
        .feed
        .page(0, 1000, std::time::Duration::ZERO, false)
        .await
        .unwrap()
        .records
        .into_iter()
        .filter(|r| r["cause_position"] == last.1)
        .map(|mut r| {
            r["recorded_at"] = json!("<recorded_at>");
            r
        })
        .collect();
    t.db.cleanup().await;
    (last.0, records)
}

async fn check(kind: common::Kind, name: &str, expect: &str, steps: Vec<Step>) {
    let (cause, records) = run(kind, steps).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/feed/{name}.json"));
    let actual = json!({"scenario": name, "expect": expect, "cause": cause, "records": records});
    if std::env::var_os("KOKUHO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate with KOKUHO_UPDATE_GOLDEN=1, then review)",
            path.display()
        )
    });
    let golden: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        golden["records"], actual["records"],
        "{name}: the feed group differs from the reviewed golden file"
    );
    assert_eq!(golden["cause"], actual["cause"], "{name}: the scenario's cause changed");
    assert_eq!(
        golden["expect"], actual["expect"],
        "{name}: the reviewed expectation text changed"
    );
}

macro_rules! golden {
    ($name:ident, $expect:expr, $steps:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                check(common::Kind::Postgres, stringify!($name), $expect, $steps).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                check(common::Kind::Sqlite, stringify!($name), $expect, $steps).await
            }
        }
    };
}

fn newcomer(birth: &str) -> Step {
    P("3", registered("国保 三郎", "コクホ　サブロウ", birth, "1"))
}

// ---- §3: facts that change eligibility ----

golden!(
    moved_in_other_prefecture,
    "acquired: qualified_on = applied_from = D; branch 03; the whole household repeated as changed",
    vec![
        newcomer("1990-01-01"),
        P(
            "3",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "other_prefecture", "household_id": "10"})
            )
        ),
    ]
);

golden!(
    moved_in_abroad,
    "acquired from D as for another prefecture",
    vec![
        newcomer("1990-01-01"),
        P(
            "3",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "abroad", "household_id": "10"})
            )
        ),
    ]
);

golden!(
    moved_in_same_prefecture,
    "acquired: applied_from D, qualified_on carried over (2019-05-01), not re-acquired",
    vec![
        newcomer("1990-01-01"),
        P(
            "3",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "same_prefecture", "household_id": "10", "qualified_on": "2019-05-01"})
            )
        ),
    ]
);

golden!(
    born,
    "acquired on the birth date",
    vec![
        newcomer("2026-10-10"),
        P("3", with(ev("born", "2026-10-10"), json!({"household_id": "10"}))),
    ]
);

golden!(
    moved_out_other_prefecture,
    "lost: disqualified_on = D, applied_to = D-1, loss code 99",
    vec![P(
        "2",
        with(ev("moved_out", "2026-10-01"), json!({"to": "other_prefecture"}))
    )]
);

golden!(
    moved_out_same_prefecture,
    "lost (ward application ends): applied_to = D-1, disqualified_on and loss_code empty",
    vec![P(
        "2",
        with(ev("moved_out", "2026-10-01"), json!({"to": "same_prefecture"}))
    )]
);

golden!(
    moved_out_abroad,
    "lost: last day D, disqualified_on = D+1, applied_to = D, loss code 99",
    vec![P("2", with(ev("moved_out", "2026-10-01"), json!({"to": "abroad"})))]
);

golden!(
    died,
    "lost: disqualified_on = D+1, applied_to = D, loss code 01",
    vec![P("2", ev("died", "2026-10-01"))]
);

golden!(
    employee_insurance_joined,
    "lost: excluded from D+1 (one-day overlap), applied_to = D, loss code 03",
    vec![P("2", ev("employee_insurance_joined", "2026-10-01"))]
);

golden!(
    employee_insurance_left,
    "acquired: a new period from D (the employee-insurance loss date)",
    vec![
        P("2", ev("employee_insurance_joined", "2026-09-01")),
        P("2", ev("employee_insurance_left", "2026-10-01")),
    ]
);

golden!(
    welfare_started,
    "lost: excluded from D itself, applied_to = D-1, loss code 02",
    vec![P("2", ev("welfare_started", "2026-10-01"))]
);

golden!(
    welfare_ended,
    "acquired: insured again from D",
    vec![
        P("2", ev("welfare_started", "2026-09-01")),
        P("2", ev("welfare_ended", "2026-10-01"))
    ]
);

golden!(
    nhi_union_joined,
    "lost: excluded from D, applied_to = D-1, loss code 03",
    vec![P("2", ev("nhi_union_joined", "2026-10-01"))]
);

golden!(
    nhi_union_left,
    "acquired: insured again from D",
    vec![
        P("2", ev("nhi_union_joined", "2026-09-01")),
        P("2", ev("nhi_union_left", "2026-10-01"))
    ]
);

golden!(
    late_elderly_disability_certified,
    "lost: excluded from D+1, applied_to = D, loss code 03 (person 2 is 71)",
    vec![P("2", ev("late_elderly_disability_certified", "2026-10-01"))]
);

golden!(
    late_elderly_disability_withdrawn,
    "acquired: insured again from D+1",
    vec![
        P("2", ev("late_elderly_disability_certified", "2026-09-01")),
        P("2", ev("late_elderly_disability_withdrawn", "2026-10-01")),
    ]
);

golden!(
    late_elderly_age_reached,
    "lost on the 75th birthday (2026-11-20), announced only when the system event is recorded: \
     applied_to 2026-11-19, loss code 03",
    vec![
        newcomer("1951-11-20"),
        P(
            "3",
            with(
                ev("moved_in", "2024-04-01"),
                json!({"from": "other_prefecture", "household_id": "10"})
            )
        ),
        AgeOut("2026-11-25"),
    ]
);

golden!(
    foreign_resident_excluded,
    "lost: excluded from D, applied_to = D-1, loss code 99",
    vec![P("2", ev("foreign_resident_excluded", "2026-10-01"))]
);

golden!(
    foreign_resident_included,
    "acquired: insured again from D",
    vec![
        P("2", ev("foreign_resident_excluded", "2026-09-01")),
        P("2", ev("foreign_resident_included", "2026-10-01")),
    ]
);

// ---- §4: recorded facts that do not change eligibility ----

golden!(
    registered,
    "no group: a registered person is not insured and in no household",
    vec![newcomer("1990-01-01")]
);

golden!(
    name_changed,
    "changed: person 2's name and kana; the others repeated as changed",
    vec![P(
        "2",
        with(
            ev("name_changed", "2026-10-01"),
            json!({"name": "国保 花", "name_kana": "コクホ　ハナ", "real_name": "國保 花", "real_name_kana": "コクホ　ハナ"})
        )
    )]
);

golden!(
    household_changed,
    "person 2 moves within the ward to household 20: a group for household 10 (person 2 no longer \
     a member) and one for household 20 (new card, branch 01, acquired)",
    vec![P(
        "2",
        with(ev("household_changed", "2026-10-01"), json!({"household_id": "20"}))
    )]
);

golden!(
    disclosure_restricted,
    "changed: disclosure_restricted true for person 2",
    vec![P("2", ev("disclosure_restricted", "2026-10-01"))]
);

golden!(
    disclosure_restriction_lifted,
    "changed: disclosure_restricted back to false",
    vec![
        P("2", ev("disclosure_restricted", "2026-09-01")),
        P("2", ev("disclosure_restriction_lifted", "2026-10-01")),
    ]
);

golden!(
    document_collected,
    "changed: document_collected_on = D for person 2",
    vec![P("2", ev("document_collected", "2026-10-01"))]
);

golden!(
    corrected,
    "changed: person 2's move-in corrected to 2024-03-01 moves qualified_on and applied_from",
    vec![P(
        "2",
        json!({"type": "corrected", "effective_date": "2026-10-01", "target_sequence": 2,
            "replacement": {"type": "moved_in", "effective_date": "2024-03-01", "reported_date": "2024-03-01",
                "from": "other_prefecture", "household_id": "10"}})
    )]
);

golden!(
    rescinded,
    "the rescinded welfare start reopens person 2's period: changed (the same period, its end \
     withdrawn), loss code cleared",
    vec![
        P("2", ev("welfare_started", "2026-10-01")),
        P(
            "2",
            json!({"type": "rescinded", "effective_date": "2026-10-05", "target_sequence": 3,
            "reason": "recorded for the wrong person"})
        ),
    ]
);

golden!(
    rescinded_move_in,
    "person 3's move-in is rescinded: household 10's group no longer has them; their last \
     record says lost with no period (branch 03 stays issued, never reused)",
    vec![
        newcomer("1990-01-01"),
        P(
            "3",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "abroad", "household_id": "10"})
            )
        ),
        P(
            "3",
            json!({"type": "rescinded", "effective_date": "2026-10-05", "target_sequence": 2,
                "reason": "moved in to another ward"})
        ),
    ]
);

golden!(
    corrected_household,
    "person 3's move-in named the wrong household and is corrected to household 20: a group for \
     10 (person 3 withdrawn: lost, no period) and one for 20 (new card, branch 01, acquired)",
    vec![
        newcomer("1990-01-01"),
        P(
            "3",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "abroad", "household_id": "10"})
            )
        ),
        P(
            "3",
            json!({"type": "corrected", "effective_date": "2026-10-05", "target_sequence": 2,
                "replacement": {"type": "moved_in", "effective_date": "2026-10-01", "reported_date": "2026-10-01",
                    "from": "abroad", "household_id": "20"}})
        ),
    ]
);

golden!(
    late_report,
    "a move-in reported 2 months late: acquired from the effective date (late_report is a \
     timeline flag, not a feed field)",
    vec![
        newcomer("1990-01-01"),
        P(
            "3",
            json!({"type": "moved_in", "effective_date": "2026-08-01", "reported_date": "2026-10-01",
                "from": "abroad", "household_id": "10"})
        ),
    ]
);

// ---- Household facts ----

golden!(
    household_head_changed,
    "the register head becomes person 2: nhi_head_person_id 2, is_nhi_head moves",
    vec![H(
        "10",
        with(ev("household_head_changed", "2026-10-01"), json!({"person_id": "2"}))
    )]
);

golden!(
    deemed_head_appears,
    "the register head joins employee insurance: lost (code 03) and deemed head (擬制世帯主)",
    vec![P("1", ev("employee_insurance_joined", "2026-10-01"))]
);

golden!(
    nhi_head_designated,
    "with the register head uninsured, person 2 is designated NHI head (施行規則10条の2): \
     nhi_head_person_id 2; person 1 stays the deemed head, as domain.md §1 defines it (the \
     register head, uninsured while another member is insured)",
    vec![
        P("1", ev("employee_insurance_joined", "2026-09-01")),
        H(
            "10",
            with(ev("nhi_head_designated", "2026-10-01"), json!({"person_id": "2"}))
        ),
    ]
);

golden!(
    nhi_head_designation_revoked,
    "the designation is revoked: the uninsured register head is the deemed head again",
    vec![
        P("1", ev("employee_insurance_joined", "2026-09-01")),
        H(
            "10",
            with(ev("nhi_head_designated", "2026-10-01"), json!({"person_id": "2"}))
        ),
        H("10", ev("nhi_head_designation_revoked", "2026-10-15")),
    ]
);

golden!(
    card_number_assigned_explicitly,
    "household 30's card recorded explicitly (symbol 12, number 00004711) is the one its first \
     member joins under, branch 01",
    vec![
        H(
            "30",
            with(
                ev("card_number_assigned", "2026-10-01"),
                json!({"symbol": "12", "number": "00004711"})
            )
        ),
        newcomer("1990-01-01"),
        P(
            "3",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "abroad", "household_id": "30"})
            )
        ),
    ]
);

golden!(
    branch_number_kept_on_rejoining,
    "person 2 leaves abroad and comes back to household 10: acquired again under branch 02 (never \
     reissued, kept on rejoining)",
    vec![
        P("2", with(ev("moved_out", "2026-06-01"), json!({"to": "abroad"}))),
        P(
            "2",
            with(
                ev("moved_in", "2026-10-01"),
                json!({"from": "abroad", "household_id": "10"})
            )
        ),
    ]
);
