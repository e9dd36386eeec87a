//! The hash-chained, Merkle-tree audit trail of audit.md: canonical entries (RFC 8785), RFC
//! 9162 leaf and node hashes, a linear SHA-256 chain, Ed25519-signed checkpoints, proofs,
//! verification and the JSON Lines export for auditors.

pub mod chainer;
pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod jcs;
pub mod keys;
pub mod merkle;
pub mod store;
pub mod verify;

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::store::sql::Db;
use crate::store::{Store, StoreError};
use merkle::{Hash, Nodes as _, Wanted};
use store::StoredCheckpoint;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{1}")]
    NotFound(&'static str, String),
}

/// `GET /v1/audit/entries/{position}`.
#[derive(Debug, Serialize)]
pub struct EntryView {
    pub entry: Value,
    pub leaf_hash: String,
    pub chain_hash: String,
}

/// `GET /v1/audit/proof/inclusion`.
#[derive(Debug, Serialize)]
pub struct InclusionProof {
    pub position: i64,
    pub size: i64,
    pub leaf_hash: String,
    pub path: Vec<String>,
    pub root: String,
}

/// `GET /v1/audit/proof/consistency`.
#[derive(Debug, Serialize)]
pub struct ConsistencyProof {
    pub from: i64,
    pub to: i64,
    pub path: Vec<String>,
    pub from_root: String,
    pub to_root: String,
}

/// Reads of the audit trail: entries, checkpoints and proofs from the stored hashes.
pub struct Audit {
    store: Store,
    db: Db,
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

impl Audit {
    pub fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            db: store.db().clone(),
        }
    }

    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        Ok(store::latest_checkpoint(&self.db).await?)
    }

    /// Entries 1..=n are chained.
    pub async fn size(&self) -> Result<i64, AuditError> {
        Ok(store::chained_size(&self.db).await?)
    }

    pub async fn entry(&self, position: i64) -> Result<EntryView, AuditError> {
        let chained = self.size().await?;
        if position < 1 || position > chained {
            return Err(AuditError::NotFound(
                "entry_not_found",
                format!("no audit entry {position}: the chain holds entries 1 to {chained}"),
            ));
        }
        let event = self
            .store
            .read_log(position - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.position == position)
            .ok_or_else(|| StoreError::Corrupt(format!("audit entry {position} has no event")))?;
        let rows = store::read_rows(&self.db, &[(0, position as u64 - 1)]).await?;
        let row = rows
            .get(&position)
            .ok_or_else(|| StoreError::Corrupt(format!("audit entry {position} is missing")))?;
        Ok(EntryView {
            entry: entry::entry(&event),
            leaf_hash: hex::encode(row.leaf),
            chain_hash: hex::encode(row.chain),
        })
    }

    /// Checks `1 ≤ low ≤ high ≤ chained size` for a proof's two numbers.
    async fn bounds(&self, low: (&str, i64), high: (&str, i64)) -> Result<(), AuditError> {
        if low.1 < 1 || low.1 > high.1 {
            return Err(AuditError::BadRequest(
                "invalid_proof_request",
                format!("need 1 ≤ {} ≤ {}, got {} and {}", low.0, high.0, low.1, high.1),
            ));
        }
        let chained = self.size().await?;
        if high.1 > chained {
            return Err(AuditError::NotFound(
                "beyond_log",
                format!("{} {} is beyond the chained log (size {chained})", high.0, high.1),
            ));
        }
        Ok(())
    }

    /// Runs a proof computation twice: dry, to learn the subtrees it reads, then on them.
    async fn with_nodes<T>(&self, compute: impl Fn(&mut dyn FnMut(u32, u64) -> Hash) -> T) -> Result<T, AuditError> {
        let mut wanted = Wanted::default();
        compute(&mut |l, i| wanted.perfect(l, i));
        let rows = store::read_rows(&self.db, &wanted.0).await?;
        let mut nodes = HashMap::with_capacity(wanted.0.len());
        for (l, i) in wanted.0 {
            let h = store::subtree(&rows, l, i)
                .ok_or_else(|| StoreError::Corrupt(format!("audit subtree ({l}, {i}) is missing")))?;
            nodes.insert((l, i), h);
        }
        Ok(compute(&mut |l, i| nodes[&(l, i)]))
    }

    pub async fn inclusion(&self, position: i64, size: i64) -> Result<InclusionProof, AuditError> {
        self.bounds(("position", position), ("size", size)).await?;
        let (m, n) = (position as u64 - 1, size as u64);
        let (leaf, path, root) = self
            .with_nodes(|get| {
                let mut src = Fn2Nodes(get);
                (
                    src.perfect(0, m),
                    merkle::inclusion_path(&mut src, m, n),
                    merkle::root(&mut src, n),
                )
            })
            .await?;
        Ok(InclusionProof {
            position,
            size,
            leaf_hash: hex::encode(leaf),
            path: hexes(&path),
            root: hex::encode(root),
        })
    }

    pub async fn consistency(&self, from: i64, to: i64) -> Result<ConsistencyProof, AuditError> {
        self.bounds(("from", from), ("to", to)).await?;
        let (m, n) = (from as u64, to as u64);
        let (path, from_root, to_root) = self
            .with_nodes(|get| {
                let mut src = Fn2Nodes(get);
                (
                    merkle::consistency_path(&mut src, m, n),
                    merkle::root(&mut src, m),
                    merkle::root(&mut src, n),
                )
            })
            .await?;
        Ok(ConsistencyProof {
            from,
            to,
            path: hexes(&path),
            from_root: hex::encode(from_root),
            to_root: hex::encode(to_root),
        })
    }
}

/// A closure as a node source.
struct Fn2Nodes<'a>(&'a mut dyn FnMut(u32, u64) -> Hash);

impl merkle::Nodes for Fn2Nodes<'_> {
    fn perfect(&mut self, level: u32, index: u64) -> Hash {
        (self.0)(level, index)
    }
}

/// The worked example of docs/audit.md: a three-entry log, every hash of it, a checkpoint signed
/// with a published test key, and the export `docs/audit-example.jsonl` (which the Python
/// verifier checks in tests/audit.rs). Run with `--nocapture` to print the values the guide
/// quotes; `KOKUHO_UPDATE_GOLDEN=1` rewrites the export after a deliberate change.
#[cfg(test)]
mod worked_example {
    use super::checkpoint::{Checkpoint, SignedCheckpoint};
    use super::keys::Signer;
    use super::merkle::{self, Frontier};
    use super::*;
    use crate::store::{Json, StoredEvent};
    use serde_json::json;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    fn log() -> Vec<StoredEvent> {
        let e = |position, stream: &str, id: &str, sequence, ty: &str, payload: Value, metadata: Value, t: &str| {
            StoredEvent {
                position,
                aggregate_type: stream.into(),
                aggregate_id: id.into(),
                sequence,
                event_type: ty.into(),
                event_version: "1".into(),
                payload: Json::of(&payload),
                metadata: Json::of(&metadata),
                recorded_at: at(t),
            }
        };
        vec![
            e(
                1,
                "person",
                "100000000001",
                1,
                "registered",
                json!({"effective_date": "2025-04-01", "reported_date": "2025-04-01", "type": "registered",
                     "name": "山田 太郎", "name_kana": "ヤマダ　タロウ", "birth_date": "1980-06-15", "sex": "1", "sex_on_back": true,
                     "my_number_commitment": "3f0c6b2a9d1e4c5b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291"}),
                json!({"actor": "clerk-07", "request_id": "r-1", "reported_date": "2025-04-01"}),
                "2025-04-01T01:02:03.000001Z",
            ),
            e(
                2,
                "person",
                "100000000001",
                2,
                "moved_in",
                json!({"effective_date": "2025-04-01", "reported_date": "2025-04-01", "type": "moved_in",
                     "from": "other_prefecture", "household_id": "200000000001"}),
                json!({"actor": "clerk-07", "request_id": "r-2", "reported_date": "2025-04-01"}),
                "2025-04-01T01:02:04.000002Z",
            ),
            e(
                3,
                "household",
                "200000000001",
                1,
                "card_number_assigned",
                json!({"effective_date": "2025-04-01", "reported_date": "2025-04-01", "type": "card_number_assigned",
                     "symbol": "1", "number": "00000001"}),
                json!({"actor": "system", "request_id": "r-2", "reported_date": "2025-04-01"}),
                "2025-04-01T01:02:04.000002Z",
            ),
        ]
    }

    #[test]
    fn the_documented_example_holds() {
        let signer = Signer::from_seed([7; 32]);
        let mut chain = merkle::CHAIN_START;
        let mut frontier = Frontier::new();
        let mut leaves = Vec::new();
        let mut lines = vec![json!({"format": "kokuho-ledger-audit/1", "origin": "example.kokuho-ledger", "public_key": signer.public_key()}).to_string()];
        let mut buf = Vec::new();
        for e in log() {
            entry::canonical(&e, &mut buf).unwrap();
            let leaf = merkle::leaf_hash(&buf);
            chain = merkle::chain_next(&chain, &leaf);
            frontier.push(leaf, &mut Vec::new());
            leaves.push(leaf);
            let text = String::from_utf8(buf.clone()).unwrap();
            println!(
                "canonical({}) = {text}\nleaf_hash({0}) = {}\nchain_hash({0}) = {}\nroot({0}) = {}\n",
                e.position,
                hex::encode(leaf),
                hex::encode(chain),
                hex::encode(frontier.root())
            );
            lines.push(format!(
                "{{\"entry\":{text},\"leaf_hash\":\"{}\",\"chain_hash\":\"{}\"}}",
                hex::encode(leaf),
                hex::encode(chain)
            ));
        }
        let checkpoint = Checkpoint {
            origin: "example.kokuho-ledger".into(),
            size: 3,
            root: hex::encode(frontier.root()),
            chain_head: hex::encode(chain),
            timestamp: "2025-04-01T01:02:05.000000Z".into(),
        };
        let signed = SignedCheckpoint::sign(checkpoint, &signer);
        println!(
            "canonical(checkpoint) = {}\nsignature = {}\npublic_key = {}",
            String::from_utf8(signed.checkpoint.canonical()).unwrap(),
            signed.signature,
            signer.public_key()
        );
        lines.push(json!({"checkpoint": signed.checkpoint, "signature": signed.signature}).to_string());
        // The proofs the guide walks through, from the perfect subtrees.
        let mut nodes: std::collections::HashMap<(u32, u64), merkle::Hash> = std::collections::HashMap::new();
        nodes.insert((0, 0), leaves[0]);
        nodes.insert((0, 1), leaves[1]);
        nodes.insert((0, 2), leaves[2]);
        nodes.insert((1, 0), merkle::node_hash(&leaves[0], &leaves[1]));
        let inclusion: Vec<String> = merkle::inclusion_path(&mut nodes, 0, 3)
            .iter()
            .map(hex::encode)
            .collect();
        let consistency: Vec<String> = merkle::consistency_path(&mut nodes, 2, 3)
            .iter()
            .map(hex::encode)
            .collect();
        println!("inclusion(position 1, size 3) = {inclusion:?}\nconsistency(2, 3) = {consistency:?}");
        assert_eq!(inclusion, vec![hex::encode(leaves[1]), hex::encode(leaves[2])]);
        assert_eq!(consistency, vec![hex::encode(leaves[2])]);

        let export = lines.join("\n") + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audit-example.jsonl");
        if std::env::var_os("KOKUHO_UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &export).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            export,
            "docs/audit-example.jsonl is what the example computes"
        );
    }
}
