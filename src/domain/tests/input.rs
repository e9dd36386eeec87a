//! Input parsing: every malformed class answered 400 with its code.

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
        hcode(json!({"type": "card_number_assigned", "effective_date": "2020-01-01", "symbol": "a b", "number": "1"})),
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
