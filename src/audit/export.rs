//! `kokuho-ledger audit export --out FILE`: the audit trail as JSON Lines (audit.md) — a header,
//! one line per chained entry in position order, then every stored checkpoint, oldest first.
//! Streamed page by page; written to a temporary file and renamed, so a failed export leaves
//! nothing half-written behind.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use super::{entry, store};
use crate::store::Store;

const PAGE: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub entries: u64,
    pub checkpoints: u64,
}

/// Writes the export of everything chained; the header names `origin` and `public_key`.
pub async fn export(store: &Store, out: &Path, origin: &str, public_key: &str) -> anyhow::Result<Exported> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let db = store.db().clone();
    let header = json!({"format": "kokuho-ledger-audit/1", "origin": origin, "public_key": public_key});
    writeln!(w, "{header}")?;
    let chained = store::chained_size(&db).await?;
    let (mut after, mut entries) = (0i64, 0u64);
    let mut canonical = Vec::with_capacity(1024);
    while after < chained {
        let limit = PAGE.min(chained - after);
        let (events, rows) = tokio::try_join!(store.read_log(after, limit), store::rows_after(&db, after, limit))?;
        for (i, e) in events.iter().enumerate() {
            let expected = after + i as i64 + 1;
            anyhow::ensure!(
                e.position == expected,
                "no event at position {expected}, which is chained: run `kokuho-ledger audit verify`"
            );
            let (p, row) = rows
                .get(i)
                .with_context(|| format!("audit entry {expected} is missing: run `kokuho-ledger audit verify`"))?;
            anyhow::ensure!(
                *p == expected,
                "audit entry {expected} is missing: run `kokuho-ledger audit verify`"
            );
            entry::canonical(e, &mut canonical).with_context(|| format!("position {expected}"))?;
            w.write_all(b"{\"entry\":")?;
            w.write_all(&canonical)?;
            writeln!(
                w,
                ",\"leaf_hash\":\"{}\",\"chain_hash\":\"{}\"}}",
                hex::encode(row.leaf),
                hex::encode(row.chain)
            )?;
        }
        anyhow::ensure!(!events.is_empty(), "the log ends before the chained size {chained}");
        after += events.len() as i64;
        entries += events.len() as u64;
    }
    // Checkpoints signed while the entries were written may cover more than was exported:
    // only those within the exported entries go in.
    let (mut after, mut checkpoints) = (0i64, 0u64);
    loop {
        let mut page = store::checkpoints_after(&db, after, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        page.retain(|c| c.signed.checkpoint.size as i64 <= chained);
        for c in &page {
            serde_json::to_writer(
                &mut w,
                &json!({"checkpoint": c.signed.checkpoint, "signature": c.signed.signature}),
            )?;
            w.write_all(b"\n")?;
        }
        checkpoints += page.len() as u64;
        match page.last() {
            Some(c) if full => after = c.signed.checkpoint.size as i64,
            _ => break,
        }
    }
    w.flush()?;
    drop(w);
    tmp.as_file().sync_all()?;
    tmp.persist(out).with_context(|| format!("writing {}", out.display()))?;
    Ok(Exported { entries, checkpoints })
}
