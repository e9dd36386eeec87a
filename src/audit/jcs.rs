//! RFC 8785 JSON Canonicalization Scheme, for the values the ledger stores: objects with keys
//! sorted by UTF-16 code units, no insignificant whitespace, strings escaped as ECMAScript
//! `JSON.stringify` does, integers in plain decimal. audit.md allows no floating-point numbers,
//! so a number that is not an integer in the I-JSON safe range is an error, never a guess.

use serde_json::Value;

/// Largest integer RFC 8785 (via I-JSON) represents exactly: 2^53 − 1.
const MAX_SAFE: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("the number {0} is not an integer of at most 53 bits (audit entries hold no floats)")]
    Number(String),
    #[error("not JSON: {0}")]
    Json(String),
}

/// The canonical form of `v`.
pub fn to_vec(v: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out)?;
    Ok(out)
}

/// Appends the canonical form of `v` to `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| utf16_cmp(a.0, b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE {
            out.extend_from_slice(u.to_string().as_bytes());
            return Ok(());
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE {
            out.extend_from_slice(i.to_string().as_bytes());
            return Ok(());
        }
    }
    Err(CanonicalError::Number(n.to_string()))
}

/// Property names sort by their UTF-16 code units (RFC 8785 §3.2.3). UTF-8 byte order agrees
/// except between supplementary characters and U+E000–U+FFFF, so bytes decide unless both
/// names hold a non-ASCII character.
pub fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() || b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A JSON string as ECMAScript serializes it: `"` and `\` escaped, the short escapes for
/// backspace, tab, line feed, form feed and carriage return, `\u00xx` (lowercase) for the
/// other control characters, everything else as is (UTF-8).
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A JSON value borrowed from its text where it can be: what [`write_text`] sorts and writes
/// without building a `serde_json::Value` (the verifier canonicalizes a million entries).
enum Node<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// In text order; a repeated name keeps its last value, as `serde_json::Value` does.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

use std::borrow::Cow;

impl<'de> serde::Deserialize<'de> for Node<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node<'de>, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
                Ok(Node::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
                Ok(Node::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
                Ok(Node::UInt(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Node<'de>, E> {
                Ok(Node::Float(n))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
                Ok(Node::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
                Ok(Node::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
                Ok(Node::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = seq.next_element()? {
                    items.push(x);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
                let mut entries: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    let v = map.next_value()?;
                    match entries.iter_mut().find(|(e, _)| *e == k) {
                        Some(e) => e.1 = v,
                        None => entries.push((k, v)),
                    }
                }
                Ok(Node::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

fn write_node(n: &Node<'_>, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match n {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Int(i) => write_number(&serde_json::Number::from(*i), out)?,
        Node::UInt(u) => write_number(&serde_json::Number::from(*u), out)?,
        Node::Float(f) => return Err(CanonicalError::Number(f.to_string())),
        Node::Str(s) => write_str(s, out),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(item, out)?;
            }
            out.push(b']');
        }
        Node::Object(entries) => {
            let mut sorted: Vec<&(Cow<'_, str>, Node<'_>)> = entries.iter().collect();
            sorted.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_node(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Appends the canonical form of the JSON `text`: the same bytes as [`write`] of the value it
/// parses to, without building that value.
pub fn write_text(text: &str, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let node: Node<'_> = serde_json::from_str(text).map_err(|e| CanonicalError::Json(e.to_string()))?;
    write_node(&node, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn keys_sorted_whitespace_removed() {
        let v: Value = serde_json::from_str(r#"{ "b" : [1, 2, {"z":null,"a":true}], "a": "x" }"#).unwrap();
        assert_eq!(canon(v), r#"{"a":"x","b":[1,2,{"a":true,"z":null}]}"#);
    }

    #[test]
    fn strings_escape_as_ecmascript_does() {
        // RFC 8785 §3.2.2.2: only these escapes; non-ASCII, '/' and DEL stay as they are.
        let v = json!("\u{20ac}$\u{000f}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/\u{7f}𠮷");
        assert_eq!(canon(v), "\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\u{7f}𠮷\"");
        assert_eq!(
            canon(json!("\u{8}\u{9}\u{c}\u{d}\u{0}\u{1f}")),
            r#""\b\t\f\r\u0000\u001f""#
        );
    }

    #[test]
    fn property_order_is_by_utf16_code_units() {
        // The sorting example of RFC 8785 §3.2.3 (its values replaced by their rank).
        let v = json!({
            "\u{20ac}": 5, "\r": 1, "\u{fb33}": 7, "1": 2, "\u{1f600}": 6, "\u{0080}": 3, "\u{00f6}": 4
        });
        // In UTF-8 byte order U+1F600 would sort after U+FB33; in UTF-16 it comes before.
        assert_eq!(
            canon(v),
            "{\"\\r\":1,\"1\":2,\"\u{80}\":3,\"\u{f6}\":4,\"\u{20ac}\":5,\"\u{1f600}\":6,\"\u{fb33}\":7}"
        );
    }

    #[test]
    fn integers_only() {
        assert_eq!(
            canon(json!([0, -1, 9007199254740991i64, -9007199254740991i64])),
            "[0,-1,9007199254740991,-9007199254740991]"
        );
        for bad in [
            json!(1.5),
            json!(9007199254740992u64),
            json!(-9007199254740992i64),
            json!(1e3),
        ] {
            assert!(to_vec(&bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
            "\\PC{0,8}|[\u{0}-\u{1f}\"\\\\𠮷€\u{fb33}😀]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z€😀\u{fb33}]{0,3}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn text_and_value_canonicalize_alike(v in json_value()) {
            let mut from_text = Vec::new();
            write_text(&v.to_string(), &mut from_text).unwrap();
            prop_assert_eq!(from_text, to_vec(&v).unwrap());
        }
    }

    #[test]
    fn escaped_text_and_floats() {
        let mut out = Vec::new();
        write_text(r#"{"b":"\u00e9\n","a":[1,-2]}"#, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":[1,-2],\"b\":\"é\\n\"}");
        assert!(write_text("[1.5]", &mut Vec::new()).is_err());
        assert!(write_text("{", &mut Vec::new()).is_err());
    }
}
