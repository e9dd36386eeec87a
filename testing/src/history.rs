//! The reference history of a generated person, shared by the benchmarks (as import lines) and
//! the soak (recorded one event at a time): a registration, a move in, employment, welfare, a
//! name change, a document and a DV restriction lifted again — a valid history.

use serde_json::{json, Value};

/// A registration body for person number `i`.
pub fn registration(i: usize) -> Value {
    json!({"type": "registered", "effective_date": "2000-01-01", "reported_date": "2000-01-05",
        "name": "山田 太郎", "name_kana": "ヤマダ　タロウ", "birth_date": format!("19{:02}-0{}-1{}", 45 + i % 40, 1 + i % 9, i % 10),
        "sex": if i % 2 == 0 { "1" } else { "2" }})
}

/// The ten events of person number `i`, moving into `household`.
pub fn person_events(i: usize, household: &str) -> Vec<Value> {
    let ev = |ty: &str, date: &str| json!({"type": ty, "effective_date": date, "reported_date": date});
    let mut moved = ev("moved_in", "2001-04-01");
    moved["from"] = json!("other_prefecture");
    moved["household_id"] = json!(household);
    let mut renamed = ev("name_changed", "2015-02-02");
    renamed["name"] = json!("山田 花子");
    renamed["name_kana"] = json!("ヤマダ　ハナコ");
    vec![
        registration(i),
        moved,
        ev("employee_insurance_joined", "2005-04-01"),
        ev("employee_insurance_left", "2008-10-01"),
        ev("welfare_started", "2012-06-10"),
        ev("welfare_ended", "2013-01-05"),
        renamed,
        ev("document_collected", "2016-03-03"),
        ev("disclosure_restricted", "2018-01-01"),
        ev("disclosure_restriction_lifted", "2019-01-01"),
    ]
}
