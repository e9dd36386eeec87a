//! One access record (アクセス記録) and its hash: the record's JSON, canonical per RFC 8785,
//! hashed like an audit leaf and chained like the event log (audit.md): `leaf =
//! SHA-256(0x00 ‖ canonical(record))`, `chain(n) = SHA-256(chain(n−1) ‖ leaf(n))`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::audit::jcs;
use crate::audit::merkle::{chain_next, leaf_hash, Hash};
use crate::store::format_instant;

/// アクセス区分.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// 照会.
    Inquiry,
    /// 異動.
    Update,
    /// 出力.
    Export,
    SignIn,
    SignOut,
}

impl AccessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Inquiry => "inquiry",
            AccessKind::Update => "update",
            AccessKind::Export => "export",
            AccessKind::SignIn => "sign_in",
            AccessKind::SignOut => "sign_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AccessKind::Inquiry,
            AccessKind::Update,
            AccessKind::Export,
            AccessKind::SignIn,
            AccessKind::SignOut,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A record. `id` is 0 until the recorder assigns its place in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRecord {
    pub id: i64,
    /// Microsecond precision (what both backends store).
    pub at: DateTime<Utc>,
    pub actor: String,
    pub roles: Vec<String>,
    pub terminal: String,
    pub screen: String,
    pub kind: AccessKind,
    /// Sorted, without duplicates.
    pub persons: Vec<String>,
    pub outcome: u16,
    pub my_number: bool,
    pub restricted: bool,
    pub request_id: String,
    /// The request's path (ids only) or the command line's subcommand: what exactly was asked.
    pub path: Option<String>,
    /// The send ledger (送付記録) of an export: the range written and each file's SHA-256.
    pub export: Option<Value>,
}

/// The head of the access log: the last record's id and the chain hash after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub last_id: i64,
    pub last_hash: Hash,
}

/// Numbers and chains `records` after `head`: each record's chain hash, and the new head.
pub fn chain_from(head: Head, records: &mut [AccessRecord]) -> (Vec<Hash>, Head) {
    let (mut last_id, mut last_hash) = (head.last_id, head.last_hash);
    let mut hashes = Vec::with_capacity(records.len());
    for r in records.iter_mut() {
        last_id += 1;
        r.id = last_id;
        last_hash = r.chain(&last_hash);
        hashes.push(last_hash);
    }
    (hashes, Head { last_id, last_hash })
}

/// Truncates an instant to microseconds, as stored.
pub fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

impl AccessRecord {
    /// A record with the fields every record needs; the rest at their defaults.
    pub fn new(at: DateTime<Utc>, actor: &str, kind: AccessKind, screen: impl Into<String>) -> Self {
        Self {
            id: 0,
            at: micros(at),
            actor: actor.to_owned(),
            roles: Vec::new(),
            terminal: String::new(),
            screen: screen.into(),
            kind,
            persons: Vec::new(),
            outcome: 200,
            my_number: false,
            restricted: false,
            request_id: String::new(),
            path: None,
            export: None,
        }
    }

    pub fn set_persons(&mut self, mut persons: Vec<String>) {
        persons.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        persons.dedup();
        self.persons = persons;
    }

    /// The record as the API answers it and as it is hashed.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "at": format_instant(&self.at),
            "actor": self.actor,
            "roles": self.roles,
            "terminal": self.terminal,
            "screen": self.screen,
            "kind": self.kind.as_str(),
            "persons": self.persons,
            "outcome": self.outcome,
            "my_number": self.my_number,
            "restricted": self.restricted,
            "request_id": self.request_id,
            "path": self.path,
            "export": self.export,
        })
    }

    /// `leaf_hash` of the record's canonical JSON.
    pub fn leaf(&self) -> Hash {
        let bytes = jcs::to_vec(&self.to_json()).expect("a record holds no floating-point numbers");
        leaf_hash(&bytes)
    }

    /// The chain hash after this record.
    pub fn chain(&self, previous: &Hash) -> Hash {
        chain_next(previous, &self.leaf())
    }
}

/// Person ids a JSON value names (`person_id`, `head_person_id`, … at any depth): the persons
/// a request body changes or an audit entry shows.
pub fn named_persons(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k.ends_with("person_id") && crate::domain::PersonId::parse(s).is_ok() => {
                        out.push(s.clone())
                    }
                    other => out.extend(named_persons(other)),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| out.extend(named_persons(v))),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_hash() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T01:02:03.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = AccessRecord::new(at, "clerk1", AccessKind::Inquiry, "GET /v1/persons/{person_id}");
        r.id = 7;
        r.set_persons(vec!["12".into(), "3".into(), "12".into()]);
        assert_eq!(r.persons, ["3", "12"]);
        assert_eq!(format_instant(&r.at), "2026-12-02T01:02:03.123456Z");
        let base = r.chain(&[0; 32]);
        type Change = Box<dyn Fn(&mut AccessRecord)>;
        let changes: Vec<Change> = vec![
            Box::new(|r| r.id = 8),
            Box::new(|r| r.actor = "clerk2".into()),
            Box::new(|r| r.roles = vec!["clerk".into()]),
            Box::new(|r| r.terminal = "10.0.0.1".into()),
            Box::new(|r| r.screen = "x".into()),
            Box::new(|r| r.kind = AccessKind::Update),
            Box::new(|r| r.persons.pop().map(|_| ()).unwrap_or(())),
            Box::new(|r| r.outcome = 404),
            Box::new(|r| r.my_number = true),
            Box::new(|r| r.restricted = true),
            Box::new(|r| r.request_id = "r".into()),
            Box::new(|r| r.path = Some("/".into())),
            Box::new(|r| r.export = Some(json!({}))),
            Box::new(|r| r.at += chrono::Duration::microseconds(1)),
        ];
        for change in changes {
            let mut c = r.clone();
            change(&mut c);
            assert_ne!(c.chain(&[0; 32]), base, "{c:?}");
        }
        assert_ne!(r.chain(&[1; 32]), base, "the previous hash is chained in");
    }
}
