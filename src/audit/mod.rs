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

use crate::projections::db::Db;
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
            db: Db::new(store),
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
