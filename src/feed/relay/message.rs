//! One feed record as a JetStream message: subject, headers and body, and the check that a
//! stored message is the ledger's record.

use serde::Deserialize;
use serde_json::Value;

/// The feed position, repeated beside the body so a consumer can resume without parsing it.
pub const POSITION_HEADER: &str = "Kokuho-Feed-Position";
/// JetStream's de-duplication header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// `<insurer number>:<position>`: unique per record across every insurer sharing a stream.
pub fn msg_id(insurer_number: &str, position: i64) -> String {
    format!("{insurer_number}:{position}")
}

/// What the relay reads of a stored record: its position and insurer number (nothing
/// personal).
#[derive(Deserialize)]
pub struct Head {
    pub position: i64,
    pub insurer_number: String,
}

impl Head {
    pub fn of(record: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(record)
    }
}

/// Whether a stored message body is the ledger's record: equal as JSON once `my_number` is
/// set aside (it is added at publication when the stream is the intermediate-server channel,
/// and a number erased since would otherwise look like a different record).
pub fn same_record(stored: &[u8], ledger_record: &str) -> bool {
    let (Ok(mut a), Ok(mut b)) = (
        serde_json::from_slice::<Value>(stored),
        serde_json::from_str::<Value>(ledger_record),
    ) else {
        return false;
    };
    for v in [&mut a, &mut b] {
        if let Some(o) = v.as_object_mut() {
            o.remove("my_number");
        }
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_the_same_with_or_without_its_my_number() {
        let record = r#"{"position":3,"kind":"individual","person_id":"1"}"#;
        assert!(same_record(record.as_bytes(), record));
        assert!(same_record(
            br#"{"position":3,"kind":"individual","person_id":"1","my_number":"123456789018"}"#,
            record
        ));
        assert!(!same_record(
            br#"{"position":3,"kind":"individual","person_id":"2"}"#,
            record
        ));
        assert!(!same_record(b"not json", record));
        assert_eq!(msg_id("131999", 7), "131999:7");
        let head = Head::of(r#"{"position":3,"cause_position":2,"insurer_number":"131999"}"#).unwrap();
        assert_eq!((head.position, head.insurer_number.as_str()), (3, "131999"));
    }
}
