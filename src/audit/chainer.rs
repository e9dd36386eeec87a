//! The audit chainer: a durable consumer of the log (like the projections, in its own runner
//! lane) that gives every event its leaf hash, chain hash and completed Merkle subtrees, and
//! signs checkpoints. Its rows and its position commit in one transaction, so an event is
//! chained exactly once; an event waits at most one runner wake-up (at once for this
//! process's appends, the poll interval for other writers') before it is chained.
//!
//! Checkpoints: at every size that is a multiple of [`CHECKPOINT_EVERY`] (inside the batch
//! that reaches it), and for the tail once its oldest entry is [`CHECKPOINT_DELAY`] old — so
//! no two checkpoints are more than 1,000 entries apart and an idle ledger's latest checkpoint
//! covers everything within seconds (audit.md asks for 10 s).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::keys::Signer;
use super::merkle::{decomposition, Frontier, Hash, CHAIN_START};
use super::{entry, store};
use crate::projections::{Lane, Prepared, Projection, ProjectionError};
use crate::store::sql::{Db, Tx, Ty, Val};
use crate::store::{format_instant, Store, StoredEvent};

pub const NAME: &str = "audit";
/// audit.md: a checkpoint at least every 1,000 entries.
pub const CHECKPOINT_EVERY: i64 = 1000;
/// How old the oldest uncovered entry may get before the tail is checkpointed.
pub const CHECKPOINT_DELAY: Duration = Duration::from_secs(1);

const ENTRY_COLS: [(&str, Ty); 4] = [
    ("position", Ty::Int),
    ("leaf_hash", Ty::Bytes),
    ("chain_hash", Ty::Bytes),
    ("subtrees", Ty::Bytes),
];

/// The chain and the tree's right edge after some number of entries.
#[derive(Clone, Debug)]
struct State {
    chain: Hash,
    frontier: Frontier,
}

pub struct Chainer {
    origin: String,
    signer: Arc<Signer>,
    /// The state at the last size this process chained or loaded. The state at a size is a
    /// function of the (immutable) log, so it stays true even if its transaction failed.
    state: Mutex<Option<State>>,
    /// The latest checkpoint size this process knows of (spares idle ticks their queries).
    covered: AtomicI64,
}

impl Chainer {
    pub fn new(origin: &str, signer: Arc<Signer>) -> Self {
        Self {
            origin: origin.to_owned(),
            signer,
            state: Mutex::new(None),
            covered: AtomicI64::new(-1),
        }
    }

    fn cached(&self, size: i64) -> Option<State> {
        let cached = self.state.lock().expect("audit state lock");
        cached.as_ref().filter(|s| s.frontier.size() as i64 == size).cloned()
    }

    /// The state after `size` entries: cached, or read back from the stored subtrees.
    async fn state_at(&self, tx: &mut Tx, size: i64) -> Result<State, ProjectionError> {
        if let Some(s) = self.cached(size) {
            return Ok(s);
        }
        let state = if size == 0 {
            State {
                chain: CHAIN_START,
                frontier: Frontier::new(),
            }
        } else {
            let parts = decomposition(size as u64);
            let mut wanted: Vec<(u32, u64)> = parts.clone();
            wanted.push((0, size as u64 - 1));
            let rows = store::fetch_rows(tx, &wanted).await?;
            let nodes = parts
                .iter()
                .map(|(level, index)| {
                    store::subtree(&rows, *level, *index).ok_or_else(|| {
                        ProjectionError::corrupt(format!(
                            "audit entry for subtree ({level}, {index}) of size {size} is missing"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let chain = rows
                .get(&size)
                .map(|r| r.chain)
                .ok_or_else(|| ProjectionError::corrupt(format!("audit entry {size} is missing")))?;
            State {
                chain,
                frontier: Frontier::from_nodes(size as u64, nodes)
                    .ok_or_else(|| ProjectionError::corrupt("frontier"))?,
            }
        };
        Ok(state)
    }

    fn sign(&self, state: &State) -> SignedCheckpoint {
        SignedCheckpoint::sign(
            Checkpoint {
                origin: self.origin.clone(),
                size: state.frontier.size(),
                root: hex::encode(state.frontier.root()),
                chain_head: hex::encode(state.chain),
                timestamp: format_instant(&Utc::now()),
            },
            &self.signer,
        )
    }

    async fn insert_checkpoints(&self, tx: &mut Tx, checkpoints: &[SignedCheckpoint]) -> Result<(), ProjectionError> {
        for c in checkpoints {
            // Another process may have signed this size first: its checkpoint stands.
            tx.execute(
                "INSERT INTO audit_checkpoints (size, origin, root, chain_head, timestamp, signature, public_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (size) DO NOTHING",
                &[
                    Val::Int(Some(c.checkpoint.size as i64)),
                    Val::text(&c.checkpoint.origin),
                    Val::text(&c.checkpoint.root),
                    Val::text(&c.checkpoint.chain_head),
                    Val::text(&c.checkpoint.timestamp),
                    Val::text(&c.signature),
                    Val::text(self.signer.public_key()),
                ],
            )
            .await?;
        }
        if let Some(last) = checkpoints.last() {
            self.covered.fetch_max(last.checkpoint.size as i64, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Projection for Chainer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> Vec<(&'static str, Vec<(&'static str, Ty)>)> {
        vec![("audit_entries", ENTRY_COLS.to_vec())]
    }

    fn rebuildable(&self) -> bool {
        false
    }

    fn lane(&self) -> Lane {
        Lane::Audit
    }

    async fn apply(&self, _: &Store, tx: &mut Tx, batch: &[StoredEvent], _: Prepared) -> Result<(), ProjectionError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let mut state = self.state_at(tx, first.position - 1).await?;
        let mut rows = Vec::with_capacity(batch.len());
        let mut checkpoints = Vec::new();
        let (mut buf, mut done) = (Vec::with_capacity(1024), Vec::new());
        for e in batch {
            if e.position != state.frontier.size() as i64 + 1 {
                return Err(ProjectionError::corrupt(format!(
                    "the log jumps from position {} to {}",
                    state.frontier.size(),
                    e.position
                )));
            }
            let (leaf, chain) = entry::hashes(e, &state.chain, &mut buf)
                .map_err(|err| ProjectionError::corrupt(format!("position {}: {err}", e.position)))?;
            done.clear();
            state.frontier.push(leaf, &mut done);
            state.chain = chain;
            rows.push(vec![
                Val::Int(Some(e.position)),
                Val::Bytes(Some(leaf.to_vec())),
                Val::Bytes(Some(chain.to_vec())),
                Val::Bytes(Some(done.concat())),
            ]);
            if e.position % CHECKPOINT_EVERY == 0 {
                checkpoints.push(self.sign(&state));
            }
        }
        tx.insert("audit_entries", &ENTRY_COLS, rows).await?;
        self.insert_checkpoints(tx, &checkpoints).await?;
        *self.state.lock().expect("audit state lock") = Some(state);
        Ok(())
    }

    /// Signs the tail once its oldest uncovered entry is [`CHECKPOINT_DELAY`] old.
    async fn tick(&self, store: &Store, db: &Db, chained: i64) -> Result<(), ProjectionError> {
        if chained <= self.covered.load(Ordering::SeqCst) {
            return Ok(());
        }
        let latest = store::latest_size(db).await?;
        self.covered.fetch_max(latest, Ordering::SeqCst);
        if chained <= latest {
            return Ok(());
        }
        let Some(oldest) = store.read_log(latest, 1).await?.into_iter().next() else {
            return Ok(());
        };
        let age = (Utc::now() - oldest.recorded_at).to_std().unwrap_or_default();
        if age < CHECKPOINT_DELAY {
            return Ok(());
        }
        let mut tx = db.begin().await?;
        // The chainer's position cannot move while this holds its row.
        let lock = if tx.is_postgres() {
            "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE"
        } else {
            "SELECT position FROM projection_checkpoints WHERE name = $1"
        };
        let size = tx
            .fetch(lock, &[Val::text(NAME)], &[Ty::Int])
            .await?
            .first()
            .and_then(|r| r[0].as_int())
            .unwrap_or(0);
        if size <= latest {
            return Ok(());
        }
        let state = self.state_at(&mut tx, size).await?;
        self.insert_checkpoints(&mut tx, &[self.sign(&state)]).await?;
        tx.commit().await?;
        Ok(())
    }
}
