//! Audit entries (audit.md): one per committed event, in log order, and their hashes.

use serde_json::{json, Value};

use super::jcs::{self, CanonicalError};
use super::merkle::{chain_next, leaf_hash, Hash};
use crate::store::{format_instant, StoredEvent};

/// The entry of a stored event, as an auditor reads it.
pub fn entry(e: &StoredEvent) -> Value {
    json!({
        "position": e.position,
        "stream": e.aggregate_type,
        "stream_id": e.aggregate_id,
        "sequence": e.sequence,
        "type": e.event_type,
        "version": e.event_version,
        "payload": e.payload,
        "metadata": e.metadata,
        "recorded_at": format_instant(&e.recorded_at),
    })
}

/// The fields of an entry other than its payload and metadata.
struct Head<'a> {
    position: i64,
    recorded_at: &'a chrono::DateTime<chrono::Utc>,
    sequence: i64,
    stream: &'a str,
    stream_id: &'a str,
    event_type: &'a str,
    version: &'a str,
}

/// The [`Head`] of a stored event, parsed or raw (the same field names).
macro_rules! head {
    ($e:expr) => {
        Head {
            position: $e.position,
            recorded_at: &$e.recorded_at,
            sequence: $e.sequence,
            stream: &$e.aggregate_type,
            stream_id: &$e.aggregate_id,
            event_type: &$e.event_type,
            version: &$e.event_version,
        }
    };
}

/// The entry in RFC 8785 form, written field by field in sorted key order.
fn write_entry(
    out: &mut Vec<u8>,
    h: Head<'_>,
    metadata: impl FnOnce(&mut Vec<u8>) -> Result<(), CanonicalError>,
    payload: impl FnOnce(&mut Vec<u8>) -> Result<(), CanonicalError>,
) -> Result<(), CanonicalError> {
    out.clear();
    out.extend_from_slice(b"{\"metadata\":");
    metadata(out)?;
    out.extend_from_slice(b",\"payload\":");
    payload(out)?;
    out.extend_from_slice(b",\"position\":");
    out.extend_from_slice(h.position.to_string().as_bytes());
    out.extend_from_slice(b",\"recorded_at\":");
    jcs::write_str(&format_instant(h.recorded_at), out);
    out.extend_from_slice(b",\"sequence\":");
    out.extend_from_slice(h.sequence.to_string().as_bytes());
    out.extend_from_slice(b",\"stream\":");
    jcs::write_str(h.stream, out);
    out.extend_from_slice(b",\"stream_id\":");
    jcs::write_str(h.stream_id, out);
    out.extend_from_slice(b",\"type\":");
    jcs::write_str(h.event_type, out);
    out.extend_from_slice(b",\"version\":");
    jcs::write_str(h.version, out);
    out.push(b'}');
    Ok(())
}

/// `canonical(p)`: what `jcs::to_vec(&entry(e))` gives, without building the entry first (the
/// payload and metadata canonicalised from their stored text).
pub fn canonical(e: &StoredEvent, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    write_entry(
        out,
        head!(e),
        |o| jcs::write_text(e.metadata.as_str(), o),
        |o| jcs::write_text(e.payload.as_str(), o),
    )
}

/// `leaf_hash(p)` of a stored event; `buf` is scratch space reused across calls.
pub fn leaf_of(e: &StoredEvent, buf: &mut Vec<u8>) -> Result<Hash, CanonicalError> {
    canonical(e, buf)?;
    Ok(leaf_hash(buf))
}

/// Leaf and chain hash of the event after `previous` in the chain.
pub fn hashes(e: &StoredEvent, previous: &Hash, buf: &mut Vec<u8>) -> Result<(Hash, Hash), CanonicalError> {
    let leaf = leaf_of(e, buf)?;
    Ok((leaf, chain_next(previous, &leaf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Json;

    #[test]
    fn the_direct_canonical_form_is_rfc_8785_of_the_entry() {
        let e = StoredEvent {
            position: 17,
            aggregate_type: "person".into(),
            aggregate_id: "100000000001".into(),
            sequence: 3,
            event_type: "moved_in".into(),
            event_version: "1".into(),
            // Stored text in another key order and spacing than the canonical form.
            payload: Json::stored(
                r#"{"type": "moved_in", "household_id": "2", "effective_date": "2025-04-01", "from": "abroad", "note": "𠮷\n\"", "n": -4}"#.into(),
            ),
            metadata: Json::of(&json!({"request_id": "r", "actor": "窓口", "reported_date": "2025-04-02"})),
            recorded_at: chrono::DateTime::parse_from_rfc3339("2026-11-25T01:02:03.123456Z")
                .unwrap()
                .into(),
        };
        let mut direct = Vec::new();
        canonical(&e, &mut direct).unwrap();
        assert_eq!(direct, jcs::to_vec(&entry(&e)).unwrap());
        let text = String::from_utf8(direct).unwrap();
        assert!(text.starts_with(r#"{"metadata":{"actor":"窓口","reported_date":"2025-04-02","request_id":"r"},"payload":{"effective_date""#), "{text}");
        assert!(text.ends_with(r#","position":17,"recorded_at":"2026-11-25T01:02:03.123456Z","sequence":3,"stream":"person","stream_id":"100000000001","type":"moved_in","version":"1"}"#), "{text}");
    }
}
