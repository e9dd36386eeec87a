//! Exports with their send ledger (送付記録, access.md): the feed files and the audit export,
//! each written, hashed (SHA-256 per file) and described with the range it covers and the
//! persons it carries, for the access record of whoever asked (the command line or the HTTP
//! forms).

use std::io::Read as _;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::feed::export::{Encoding, Exported as FeedExported};
use crate::store::sql::{Ty, Val};
use crate::store::Store;

/// The largest feed position an export may continue after: the send ledger records `after`
/// in the access record, whose canonical JSON (RFC 8785) holds integers up to 2^53 − 1 only.
pub const MAX_AFTER: i64 = (1 << 53) - 1;

/// What was sent: the `export` field of the access record, and the persons in it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub export: Value,
    pub persons: Vec<String>,
}

/// Lowercase hex SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn file_entry(path: &Path) -> anyhow::Result<Value> {
    Ok(json!({
        "name": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        "sha256": file_sha256(path)?,
    }))
}

/// The feed files after `after` (feed.md "File export") and their send ledger.
pub async fn feed(
    store: &Store,
    after: i64,
    limit: Option<usize>,
    out: &Path,
    encoding: Encoding,
    replace: bool,
) -> anyhow::Result<(FeedExported, Sent)> {
    let exported = crate::feed::export::export(store, after, limit, out, encoding, replace).await?;
    let persons = feed_persons(store, after, exported.last_position).await?;
    let export = json!({
        "what": "feed",
        "after": after,
        "last_position": exported.last_position,
        "records": exported.records,
        "encoding": encoding.name(),
        "files": [file_entry(&exported.household_file)?, file_entry(&exported.individual_file)?],
    });
    Ok((exported, Sent { export, persons }))
}

/// Every person the feed records in `(after, through]` name.
async fn feed_persons(store: &Store, after: i64, through: i64) -> anyhow::Result<Vec<String>> {
    let db = store.db();
    let rows = db
        .fetch(
            "SELECT kind, person_id, record FROM feed_records WHERE position > $1 AND position <= $2",
            &[Val::int(after), Val::int(through)],
            &[Ty::Text, Ty::Text, Ty::Text],
        )
        .await?;
    let mut persons = Vec::new();
    for r in rows {
        if let Some(p) = r[1].as_text() {
            persons.push(p.to_owned());
        }
        if r[0].as_text() == Some("household") {
            let record: Value = serde_json::from_str(r[2].as_text().unwrap_or("{}"))?;
            for key in ["nhi_head_person_id", "deemed_head_person_id"] {
                if let Some(p) = record[key].as_str() {
                    persons.push(p.to_owned());
                }
            }
        }
    }
    persons.sort();
    persons.dedup();
    Ok(persons)
}

/// The audit export (audit.md "Export") and its send ledger: the entries carry every event,
/// so every person whose stream is in the range.
pub async fn audit(
    store: &Store,
    out: &Path,
    origin: &str,
    public_key: &str,
) -> anyhow::Result<(crate::audit::export::Exported, Sent)> {
    let exported = crate::audit::export::export(store, out, origin, public_key).await?;
    let through = exported.entries as i64;
    let rows = store
        .db()
        .fetch(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'person' AND position <= $1",
            &[Val::int(through)],
            &[Ty::Text],
        )
        .await?;
    let persons = rows
        .into_iter()
        .filter_map(|r| r[0].as_text().map(str::to_owned))
        .collect();
    let export = json!({
        "what": "audit",
        "from": if through > 0 { 1 } else { 0 },
        "to": through,
        "checkpoints": exported.checkpoints,
        "files": [file_entry(out)?],
    });
    Ok((exported, Sent { export, persons }))
}
