//! The change forms (異動入力): which fields each event type takes, and the event body a
//! filled form stands for. The body goes through the same parsing and rules as the API's, so a
//! form can record nothing the API would refuse.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::domain::event::{HOUSEHOLD_EVENT_TYPES, PERSON_EVENT_TYPES};

/// Which stream a form writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Person,
    Household,
}

/// How a field is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Date,
    Text,
    /// A choice among (value, label).
    Choice(&'static [(&'static str, &'static str)]),
    /// A person id (宛名番号).
    PersonId,
    HouseholdId,
    /// An event of the person (the target of a correction or rescission).
    Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The event body's field name.
    pub name: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn f(name: &'static str, label: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        label,
        kind,
        required,
    }
}

const PLACES: &[(&str, &str)] = &[
    ("other_prefecture", "他都道府県"),
    ("same_prefecture", "都道府県内の他市区町村"),
    ("abroad", "国外"),
];

/// 異動日 and 届出日: every event has them.
pub const COMMON: [Field; 2] = [
    f("effective_date", "異動日", Kind::Date, true),
    f("reported_date", "届出日", Kind::Date, true),
];

/// Event types the console has no form for: `registered` comes from the resident-register
/// intake (and is the one event that carries a My Number), `late_elderly_age_reached` from the
/// ledger itself, card and branch numbers from issuance.
const NOT_FROM_STAFF: [&str; 4] = [
    "registered",
    "late_elderly_age_reached",
    "card_number_assigned",
    "branch_number_issued",
];

/// The person event types the console records (domain.md's order).
pub fn person_types() -> impl Iterator<Item = &'static str> {
    PERSON_EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| !NOT_FROM_STAFF.contains(t))
}

/// The household event types the console records.
pub fn household_types() -> impl Iterator<Item = &'static str> {
    HOUSEHOLD_EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| !NOT_FROM_STAFF.contains(t))
}

pub fn stream_of(event_type: &str) -> Option<Stream> {
    if person_types().any(|t| t == event_type) {
        Some(Stream::Person)
    } else if household_types().any(|t| t == event_type) {
        Some(Stream::Household)
    } else {
        None
    }
}

/// The fields of an event type besides the common two (and, for a correction, besides the
/// replacement's, which are the target's type's).
pub fn fields(event_type: &str) -> Vec<Field> {
    match event_type {
        "moved_in" => vec![
            f("from", "転入元", Kind::Choice(PLACES), true),
            f("household_id", "世帯番号", Kind::HouseholdId, true),
            f("qualified_on", "資格取得日（県内転入の引継ぎ）", Kind::Date, false),
        ],
        "moved_out" => vec![f("to", "転出先", Kind::Choice(PLACES), true)],
        "born" | "household_changed" => vec![f("household_id", "世帯番号", Kind::HouseholdId, true)],
        "name_changed" => vec![
            f("name", "氏名", Kind::Text, true),
            f("name_kana", "カナ氏名", Kind::Text, true),
            f("real_name", "本名（通称名の場合）", Kind::Text, false),
            f("real_name_kana", "本名カナ", Kind::Text, false),
        ],
        "corrected" => vec![f("target_sequence", "訂正する異動", Kind::Target, true)],
        "rescinded" => vec![
            f("target_sequence", "取り消す異動", Kind::Target, true),
            f("reason", "取消理由", Kind::Text, false),
        ],
        "household_head_changed" => vec![f("person_id", "新しい世帯主（宛名番号）", Kind::PersonId, true)],
        "nhi_head_designated" => vec![f("person_id", "国保世帯主とする方（宛名番号）", Kind::PersonId, true)],
        _ => vec![],
    }
}

/// Prefix of a correction's replacement fields in the form.
pub const REPLACEMENT: &str = "replacement.";

/// Every form field name of an event type (a correction: its own and the replacement's).
pub fn form_names(event_type: &str, target_type: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = COMMON
        .iter()
        .chain(fields(event_type).iter())
        .map(|f| f.name.to_owned())
        .collect();
    if let Some(t) = target_type.filter(|_| event_type == "corrected") {
        names.extend(
            COMMON
                .iter()
                .chain(fields(t).iter())
                .map(|f| format!("{REPLACEMENT}{}", f.name)),
        );
    }
    names
}

/// The event body a filled form stands for. Empty optional fields are left out (the API's
/// "absent"); a correction's replacement is the target's type with the `replacement.` fields.
pub fn body(event_type: &str, target_type: Option<&str>, form: &BTreeMap<String, String>) -> Value {
    let get = |k: &str| form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let fill = |ty: &str, prefix: &str| {
        let mut m = Map::new();
        m.insert("type".into(), json!(ty));
        for field in COMMON.iter().chain(fields(ty).iter()) {
            if let Some(v) = get(&format!("{prefix}{}", field.name)) {
                let value = match field.kind {
                    // A sequence number, as the API takes it; a non-number stays text and is
                    // refused by the parser like any malformed field.
                    Kind::Target => v.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(v)),
                    _ => json!(v),
                };
                m.insert(field.name.into(), value);
            }
        }
        m
    };
    let mut m = fill(event_type, "");
    if event_type == "corrected" {
        if let Some(t) = target_type {
            m.insert("replacement".into(), Value::Object(fill(t, REPLACEMENT)));
        }
    }
    Value::Object(m)
}

/// The form values of an existing event body (a correction starts from its target's values).
pub fn values_of(body: &Value, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = body.as_object() {
        for (k, v) in m {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if k != "type" && k != "my_number_commitment" {
                out.insert(format!("{prefix}{k}"), text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_move_out_and_a_correction() {
        let b = body(
            "moved_out",
            None,
            &form(&[
                ("effective_date", "2026-11-01"),
                ("reported_date", "2026-11-02"),
                ("to", "abroad"),
                ("qualified_on", ""),
            ]),
        );
        assert_eq!(
            b,
            json!({"type": "moved_out", "effective_date": "2026-11-01", "reported_date": "2026-11-02", "to": "abroad"})
        );
        let b = body(
            "corrected",
            Some("moved_out"),
            &form(&[
                ("effective_date", "2026-11-05"),
                ("reported_date", "2026-11-05"),
                ("target_sequence", "3"),
                ("replacement.effective_date", "2026-10-20"),
                ("replacement.reported_date", "2026-11-02"),
                ("replacement.to", "other_prefecture"),
            ]),
        );
        assert_eq!(b["target_sequence"], json!(3));
        assert_eq!(
            b["replacement"],
            json!({"type": "moved_out", "effective_date": "2026-10-20", "reported_date": "2026-11-02", "to": "other_prefecture"})
        );
        assert!(form_names("corrected", Some("moved_out")).contains(&"replacement.to".to_owned()));
        assert_eq!(stream_of("nhi_head_designated"), Some(Stream::Household));
        assert_eq!(stream_of("registered"), None);
        assert_eq!(stream_of("card_number_assigned"), None);
        // console.md's list: 19 kinds of change, correction and rescission.
        assert_eq!(person_types().count(), 21);
    }
}
