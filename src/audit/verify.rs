//! `kokuho-ledger audit verify`: recomputes every leaf hash, the chain and the Merkle roots at
//! every stored checkpoint from the stored events, compares them with the stored hashes and
//! the signed checkpoints, checks every signature under the trusted key and every stream's
//! sequence continuity. It streams the log in pages (memory does not grow with the log) and
//! names the first position that fails.

use std::future::Future;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use tokio::sync::mpsc;

use super::checkpoint::SignedCheckpoint;
use super::merkle::{self, decomposition, Frontier, Hash, CHAIN_START};
use super::store::{self, Row, StoredCheckpoint};
use super::{entry, Audit};
use crate::store::sql::{Db, Ty, Val};
use crate::store::{Store, StoreError, StoredEvent};

const PAGE: i64 = 10_000;

/// The first thing that failed, at a log position (for a checkpoint: its size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub position: i64,
    pub what: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Entries recomputed (after the trusted checkpoint, with `--from-checkpoint`).
    pub entries: u64,
    pub checkpoints: u64,
    /// Events after the chained part of the log (not yet chained; nothing to compare).
    pub unchained: u64,
    /// Events checked for stream continuity.
    pub stream_events: u64,
    /// The latest checkpoint verified, and how many chained entries it leaves uncovered.
    pub latest_checkpoint: Option<u64>,
    pub uncovered: u64,
    pub failure: Option<Failure>,
}

/// Where verification starts: from nothing, or from a checkpoint the auditor already trusts.
pub enum Start {
    Genesis,
    Trusted(SignedCheckpoint),
}

fn fail(position: i64, what: impl Into<String>) -> Option<Failure> {
    Some(Failure {
        position,
        what: what.into(),
    })
}

/// Pages of a keyset-paginated read, fetched ahead by one page (bounded memory).
fn pages<T, F, Fut>(fetch: F, key: fn(&T) -> i64, after: i64) -> mpsc::Receiver<Result<Vec<T>, StoreError>>
where
    T: Send + 'static,
    F: Fn(i64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<T>, StoreError>> + Send,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let page = fetch(after).await;
            let last = match &page {
                Ok(p) => p.last().map(key),
                Err(_) => None,
            };
            let done = page.as_ref().map_or(true, |p| (p.len() as i64) < PAGE);
            if tx.send(page).await.is_err() || done {
                break;
            }
            match last {
                Some(l) => after = l,
                None => break,
            }
        }
    });
    rx
}

/// Leaf hashes of pages of raw events, computed on blocking threads (two per page, so
/// hashing keeps up with reading): (position, leaf hash or why the entry has none).
type Leaves = Vec<(i64, Result<Hash, String>)>;

fn leaf_hashes(
    mut raw: mpsc::Receiver<Result<Vec<StoredEvent>, StoreError>>,
) -> mpsc::Receiver<Result<Leaves, StoreError>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(page) = raw.recv().await {
            let hashed = match page {
                Ok(page) => tokio::task::spawn_blocking(move || hash_page(&page))
                    .await
                    .map_err(|e| StoreError::Corrupt(e.to_string())),
                Err(e) => Err(e),
            };
            if tx.send(hashed).await.is_err() {
                break;
            }
        }
    });
    rx
}

fn hash_page(page: &[StoredEvent]) -> Leaves {
    let hash = |events: &[StoredEvent]| -> Leaves {
        let mut buf = Vec::with_capacity(1024);
        events
            .iter()
            .map(|e| {
                let leaf = entry::canonical(e, &mut buf)
                    .map(|()| merkle::leaf_hash(&buf))
                    .map_err(|err| err.to_string());
                (e.position, leaf)
            })
            .collect()
    };
    let (a, b) = page.split_at(page.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| hash(b));
        let mut out = hash(a);
        out.extend(second.join().expect("hashing thread"));
        out
    })
}

/// Items of `pages` one at a time.
struct Items<T> {
    rx: mpsc::Receiver<Result<Vec<T>, StoreError>>,
    page: std::vec::IntoIter<T>,
    done: bool,
}

impl<T> Items<T> {
    fn new(rx: mpsc::Receiver<Result<Vec<T>, StoreError>>) -> Self {
        Self {
            rx,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
    async fn next(&mut self) -> Result<Option<T>, StoreError> {
        loop {
            if let Some(x) = self.page.next() {
                return Ok(Some(x));
            }
            if self.done {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(page) => {
                    let page = page?;
                    if page.is_empty() {
                        self.done = true;
                    }
                    self.page = page.into_iter();
                }
                None => self.done = true,
            }
        }
    }
}

/// A lookahead of one item.
struct Peek<T> {
    items: Items<T>,
    head: Option<T>,
}

impl<T> Peek<T> {
    async fn new(mut items: Items<T>) -> Result<Self, StoreError> {
        let head = items.next().await?;
        Ok(Self { items, head })
    }
    async fn take(&mut self) -> Result<Option<T>, StoreError> {
        let head = self.head.take();
        self.head = self.items.next().await?;
        Ok(head)
    }
}

/// Verifies the stored log, chain and checkpoints against `key`; `progress` counts events.
pub async fn verify(
    store: &Store,
    key: &VerifyingKey,
    start: Start,
    progress: impl Fn(u64),
) -> Result<Report, StoreError> {
    let db = store.db().clone();
    let mut report = Report::default();
    let (from, mut frontier, mut chain, trusted) = match start {
        Start::Genesis => (0i64, Frontier::new(), CHAIN_START, None),
        Start::Trusted(c) => {
            let size = c.checkpoint.size as i64;
            if !c.verifies(key) {
                report.failure = fail(
                    size,
                    "the trusted checkpoint's signature does not verify under the trusted key",
                );
                return Ok(report);
            }
            match resume(&db, &c).await? {
                Ok((frontier, chain)) => (size, frontier, chain, Some(c)),
                Err(what) => {
                    report.failure = fail(size, what);
                    return Ok(report);
                }
            }
        }
    };
    // What the walk covers is fixed first, in the order things are written (checkpoints after
    // their entries, entries after their events): a row chained or a checkpoint signed while
    // the walk runs lies beyond these bounds and is neither read nor taken for a mismatch.
    let bounds = Bounds {
        checkpoints: store::latest_size(&db).await?,
        entries: store::chained_size(&db).await?,
        events: store.head().await?,
    };
    let streams = tokio::spawn(stream_continuity(db.clone(), from, bounds.events));
    report.failure = walk(
        store,
        &db,
        key,
        from,
        bounds,
        &mut frontier,
        &mut chain,
        &mut report,
        &progress,
    )
    .await?;
    if report.failure.is_none() {
        if let Some(c) = &trusted {
            report.failure = consistency_to_latest(store, &db, c).await?;
        }
    }
    let (stream_events, stream_failure) = streams.await.map_err(|e| StoreError::Corrupt(e.to_string()))??;
    report.stream_events = stream_events;
    // The first failing position of either pass.
    if let Some(s) = stream_failure {
        if report.failure.as_ref().is_none_or(|f| s.position < f.position) {
            report.failure = Some(s);
        }
    }
    Ok(report)
}

/// The chain and frontier at a trusted checkpoint, from the stored hashes, checked against it.
async fn resume(db: &Db, c: &SignedCheckpoint) -> Result<Result<(Frontier, Hash), String>, StoreError> {
    let size = c.checkpoint.size;
    let parts = decomposition(size);
    let mut wanted = parts.clone();
    wanted.push((0, size - 1));
    let rows = store::read_rows(db, &wanted).await?;
    let nodes: Option<Vec<Hash>> = parts.iter().map(|(l, i)| store::subtree(&rows, *l, *i)).collect();
    let (Some(nodes), Some(row)) = (nodes, rows.get(&(size as i64))) else {
        return Ok(Err(format!(
            "the stored audit trail does not reach the trusted checkpoint's size {size}"
        )));
    };
    let frontier = Frontier::from_nodes(size, nodes).expect("one node per set bit");
    if hex::encode(frontier.root()) != c.checkpoint.root || hex::encode(row.chain) != c.checkpoint.chain_head {
        return Ok(Err(format!(
            "the stored hashes at size {size} do not match the trusted checkpoint (the log up to it was rewritten)"
        )));
    }
    Ok(Ok((frontier, row.chain)))
}

/// The last checkpoint, audit entry and event a verification covers.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    checkpoints: i64,
    entries: i64,
    events: i64,
}

/// A page cut at `bound` (pages are in key order).
fn upto<T>(mut page: Vec<T>, key: fn(&T) -> i64, bound: i64) -> Vec<T> {
    page.truncate(page.partition_point(|x| key(x) <= bound));
    page
}

#[allow(clippy::too_many_arguments)]
async fn walk(
    store: &Store,
    db: &Db,
    key: &VerifyingKey,
    from: i64,
    bounds: Bounds,
    frontier: &mut Frontier,
    chain: &mut Hash,
    report: &mut Report,
    progress: &impl Fn(u64),
) -> Result<Option<Failure>, StoreError> {
    let events = {
        let store = store.clone();
        pages(
            move |after| {
                let store = store.clone();
                async move { Ok(upto(store.read_log(after, PAGE).await?, |e| e.position, bounds.events)) }
            },
            |e: &StoredEvent| e.position,
            from,
        )
    };
    let events = leaf_hashes(events);
    let rows = {
        let db = db.clone();
        pages(
            move |after| {
                let db = db.clone();
                async move {
                    Ok(upto(
                        store::rows_after(&db, after, PAGE).await?,
                        |r| r.0,
                        bounds.entries,
                    ))
                }
            },
            |r: &(i64, Row)| r.0,
            from,
        )
    };
    let checkpoints = {
        let db = db.clone();
        pages(
            move |after| {
                let db = db.clone();
                async move {
                    Ok(upto(
                        store::checkpoints_after(&db, after, PAGE).await?,
                        |c| c.signed.checkpoint.size as i64,
                        bounds.checkpoints,
                    ))
                }
            },
            |c: &StoredCheckpoint| c.signed.checkpoint.size as i64,
            from,
        )
    };
    let mut events = Items::new(events);
    let mut rows = Peek::new(Items::new(rows)).await?;
    let mut checkpoints = Peek::new(Items::new(checkpoints)).await?;
    let mut done = Vec::new();
    let mut expected = from + 1;
    let mut counted = 0u64;
    let mut unchained_from: Option<i64> = None;
    while let Some((position, leaf)) = events.next().await? {
        if position != expected {
            return Ok(if position > expected {
                fail(
                    expected,
                    format!("no event at position {expected}: the log has a gap (an event was deleted)"),
                )
            } else {
                fail(position, format!("position {position} appears twice in the log"))
            });
        }
        expected += 1;
        counted += 1;
        if counted % 4096 == 0 {
            progress(4096);
        }
        let leaf = match leaf {
            Ok(h) => h,
            Err(err) => return Ok(fail(position, format!("the event cannot be canonicalized: {err}"))),
        };
        let next = merkle::chain_next(chain, &leaf);
        done.clear();
        frontier.push(leaf, &mut done);
        *chain = next;
        let row = match rows.head.as_ref() {
            Some((p, _)) if *p == position => rows.take().await?.map(|(_, r)| r),
            Some((p, _)) if *p < position => {
                return Ok(fail(*p, format!("audit entry {p} has no event in the log")));
            }
            _ => None,
        };
        match row {
            Some(r) => {
                if let Some(u) = unchained_from {
                    return Ok(fail(
                        u,
                        format!("no audit entry at position {u}, yet later positions are chained"),
                    ));
                }
                if r.leaf != leaf {
                    return Ok(fail(
                        position,
                        "the leaf hash differs from the chained one: the stored event was changed after it was \
                         chained (payload, metadata, type, stream, order or recorded_at)",
                    ));
                }
                if r.chain != *chain {
                    return Ok(fail(position, "the chain hash differs from the stored chain"));
                }
                if r.subtrees != done.concat() {
                    return Ok(fail(
                        position,
                        "the stored Merkle subtree hashes differ from the recomputed ones",
                    ));
                }
                report.entries += 1;
            }
            None => {
                unchained_from.get_or_insert(position);
                report.unchained += 1;
            }
        }
        while let Some(c) = checkpoints.head.as_ref() {
            if c.signed.checkpoint.size as i64 != position {
                break;
            }
            let c = checkpoints.take().await?.expect("peeked");
            if let Some(f) = check_checkpoint(&c.signed, key, frontier, chain, unchained_from) {
                return Ok(Some(f));
            }
            report.checkpoints += 1;
            report.latest_checkpoint = Some(c.signed.checkpoint.size);
        }
        if let Some(c) = checkpoints.head.as_ref() {
            if (c.signed.checkpoint.size as i64) < position {
                let size = c.signed.checkpoint.size as i64;
                return Ok(fail(size, format!("checkpoint of size {size} is out of order")));
            }
        }
    }
    progress(counted % 4096);
    if let Some((p, _)) = rows.head.as_ref() {
        return Ok(fail(
            *p,
            format!(
                "audit entry {p} has no event in the log (the log ends at {})",
                expected - 1
            ),
        ));
    }
    if let Some(c) = checkpoints.head.as_ref() {
        let size = c.signed.checkpoint.size as i64;
        return Ok(fail(
            size,
            format!(
                "checkpoint of size {size} lies beyond the end of the log ({})",
                expected - 1
            ),
        ));
    }
    let chained = (expected - 1) - report.unchained as i64;
    report.uncovered = (chained - report.latest_checkpoint.map_or(from, |s| s as i64)).max(0) as u64;
    Ok(None)
}

fn check_checkpoint(
    c: &SignedCheckpoint,
    key: &VerifyingKey,
    frontier: &Frontier,
    chain: &Hash,
    unchained_from: Option<i64>,
) -> Option<Failure> {
    let size = c.checkpoint.size as i64;
    if let Some(u) = unchained_from {
        return fail(
            u,
            format!("checkpoint of size {size} covers position {u}, which has no audit entry"),
        );
    }
    if !c.verifies(key) {
        return fail(
            size,
            format!("the signature of the checkpoint of size {size} does not verify under the trusted key"),
        );
    }
    let root = hex::encode(frontier.root());
    if root != c.checkpoint.root || hex::encode(chain) != c.checkpoint.chain_head {
        return fail(
            size,
            format!(
                "the signed checkpoint of size {size} does not match the log: root({size}) recomputes to {root}, the \
                 checkpoint says {} (an entry up to {size} was rewritten together with its chain)",
                c.checkpoint.root
            ),
        );
    }
    None
}

/// The consistency proof from the trusted checkpoint to the latest stored one, from the stored
/// subtrees, checked against both signed roots.
async fn consistency_to_latest(
    store: &Store,
    db: &Db,
    trusted: &SignedCheckpoint,
) -> Result<Option<Failure>, StoreError> {
    let Some(latest) = store::latest_checkpoint(db).await? else {
        return Ok(None);
    };
    let (m, n) = (trusted.checkpoint.size, latest.signed.checkpoint.size);
    if n < m {
        return Ok(fail(
            m as i64,
            format!("the latest stored checkpoint ({n}) is older than the trusted one ({m})"),
        ));
    }
    let proof = match Audit::new(store).consistency(m as i64, n as i64).await {
        Ok(p) => p,
        Err(super::AuditError::Store(e)) => return Err(e),
        Err(e) => return Ok(fail(n as i64, format!("no consistency proof from {m} to {n}: {e}"))),
    };
    let parse = |s: &str| -> Option<Hash> { hex::decode(s).ok()?.try_into().ok() };
    let path: Option<Vec<Hash>> = proof.path.iter().map(|s| parse(s)).collect();
    let ok = match (
        path,
        parse(&trusted.checkpoint.root),
        parse(&latest.signed.checkpoint.root),
    ) {
        (Some(path), Some(a), Some(b)) => merkle::verify_consistency(m, n, &a, &b, &path),
        _ => false,
    };
    Ok((!ok).then(|| Failure {
        position: n as i64,
        what: format!(
            "the consistency proof from the trusted checkpoint {m} to the latest checkpoint {n} does not verify"
        ),
    }))
}

/// Every stream's sequences are 1..k without gaps, in increasing log positions. The database
/// walks the streams (a window over the primary key's order) and returns only the first
/// break, so nothing is held per stream on this side and the event rows are not sent twice.
/// Breaks at or before `from` (vouched for by a trusted checkpoint) are not reported.
async fn stream_continuity(db: Db, from: i64, upto: i64) -> Result<(u64, Option<Failure>), StoreError> {
    let count = db
        .fetch(
            "SELECT count(*) FROM events WHERE position <= $1",
            &[Val::int(upto)],
            &[Ty::Int],
        )
        .await?
        .first()
        .and_then(|r| r[0].as_int())
        .unwrap_or(0);
    let first = db
        .fetch(
            "SELECT position, aggregate_type, aggregate_id, sequence, prev_sequence, prev_position FROM ( \
               SELECT position, aggregate_type, aggregate_id, sequence, \
                      lag(sequence) OVER w AS prev_sequence, lag(position) OVER w AS prev_position \
                 FROM events WHERE position <= $2 \
                 WINDOW w AS (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence)) s \
             WHERE position > $1 AND (sequence <> coalesce(prev_sequence, 0) + 1 OR position <= prev_position) \
             ORDER BY position LIMIT 1",
            &[Val::Int(Some(from)), Val::int(upto)],
            &[Ty::Int, Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Int],
        )
        .await?;
    let failure = first.first().map(|r| {
        let (pos, t, id, seq) = (
            r[0].as_int().unwrap_or(0),
            r[1].as_text().unwrap_or_default(),
            r[2].as_text().unwrap_or_default(),
            r[3].as_int().unwrap_or(0),
        );
        let what = match (r[4].as_int(), r[5].as_int()) {
            (None, _) => format!("stream {t}/{id} starts at sequence {seq}, not 1"),
            (Some(prev), Some(prev_pos)) if seq == prev + 1 => {
                format!("stream {t}/{id}: sequence {seq} is at position {pos}, before sequence {prev} at {prev_pos}")
            }
            (Some(prev), _) => format!("stream {t}/{id}: sequence {seq} follows {prev} (a gap)"),
        };
        Failure { position: pos, what }
    });
    Ok((count.max(0) as u64, failure))
}
