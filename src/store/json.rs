//! A JSON document of the log (an event's payload or metadata) as the store read it: its text,
//! parsed by each reader into the type that reader needs. A rebuild reads a million payloads;
//! building a `serde_json::Value` tree for each, only to deserialise the domain event from that
//! tree and free it again, was a quarter of the rebuild's CPU.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{corrupt, StoreError};

/// The stored text of a JSON document. PostgreSQL's `json` column checks it on insert and
/// keeps it byte for byte; on SQLite the ledger alone writes it. Text that is not JSON all the
/// same (a tampered file) is reported by every reader as corrupt data, never read as null.
#[derive(Clone, PartialEq, Eq)]
pub struct Json(String);

impl Json {
    /// Text as read from the log.
    pub(crate) fn stored(text: String) -> Self {
        Self(text)
    }

    /// The document of a value (events built in memory: tests, the audit's examples).
    pub fn of(value: &Value) -> Self {
        Self(value.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document as `T`, straight from the text (a `T` that borrows, such as a few fields
    /// read out of a larger document, borrows its strings from the text where it can).
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The document as a generic value.
    pub fn value(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.0).map_err(corrupt)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serialised as the document itself, not as a string holding it.
impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d).map_err(D::Error::custom)?;
        Ok(Self(raw.get().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_reads_as_its_value_and_serialises_as_itself() {
        let v = json!({"type": "moved_in", "note": "𠮷\n\"", "n": -4, "nested": {"a": [1, 2]}});
        let doc = Json::of(&v);
        assert_eq!(doc.value().unwrap(), v);
        assert_eq!(serde_json::to_value(&doc).unwrap(), v);
        assert_eq!(serde_json::to_value(json!({ "payload": doc })).unwrap()["payload"], v);
        let back: Json = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back.value().unwrap(), v);
        #[derive(Deserialize)]
        struct Some<'a> {
            #[serde(rename = "type")]
            ty: &'a str,
        }
        assert_eq!(doc.decode::<Some<'_>>().unwrap().ty, "moved_in");
    }

    #[test]
    fn text_that_is_not_json_is_corrupt_for_every_reader() {
        let doc = Json::stored("{\"type\": ".into());
        assert!(matches!(doc.value(), Err(StoreError::Corrupt(_))));
        assert!(doc.decode::<Value>().is_err());
        assert!(serde_json::to_string(&doc).is_err());
    }
}
