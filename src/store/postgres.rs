//! PostgreSQL's fast path: a whole batch in one autocommit statement, so the log head lock is
//! held for one round trip and the commit.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::append::{plan, Outcome, Row};
use super::recent::Recent;
use super::side::{Boarding, Rider, SideLog, SideSql};
use super::sql::{pg_rows, pg_rows_numbered, Singles};
use super::{commit_instant, corrupt, AppendRequest, Json, StoreError, StoredEvent, VaultEntry};

/// Rows as column arrays, unnested in step by `INSERT … SELECT`: one statement whatever the
/// number of rows.
#[derive(Default)]
struct Columns {
    types: Vec<String>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl From<Vec<Row>> for Columns {
    fn from(rows: Vec<Row>) -> Self {
        let mut c = Columns::default();
        for r in rows {
            c.types.push(r.aggregate_type);
            c.ids.push(r.aggregate_id);
            c.sequences.push(r.sequence);
            c.event_types.push(r.event_type);
            c.versions.push(r.event_version);
            c.payloads.push(r.payload);
            c.metadata.push(r.metadata);
        }
        c
    }
}

impl Columns {
    /// The rows as the log holds them once committed: positions follow `base` in row order.
    fn into_events(self, base: i64, recorded_at: DateTime<Utc>) -> Vec<StoredEvent> {
        self.types
            .into_iter()
            .zip(self.ids)
            .zip(self.sequences)
            .zip(self.event_types)
            .zip(self.versions)
            .zip(self.payloads)
            .zip(self.metadata)
            .enumerate()
            .map(|(i, ((((((t, id), sequence), et), ev), p), m))| StoredEvent {
                position: base + 1 + i as i64,
                aggregate_type: t,
                aggregate_id: id,
                sequence,
                event_type: et,
                event_version: ev,
                payload: Json::stored(p),
                metadata: Json::stored(m),
                recorded_at,
            })
            .collect()
    }
}

/// Vault entries of a batch, positions relative to the batch.
#[derive(Default)]
struct VaultColumns {
    commitments: Vec<String>,
    person_ids: Vec<String>,
    nonces: Vec<Vec<u8>>,
    sealed: Vec<Vec<u8>>,
    blind_indexes: Vec<String>,
    positions: Vec<i64>,
}

impl From<&Vec<(VaultEntry, i64)>> for VaultColumns {
    fn from(entries: &Vec<(VaultEntry, i64)>) -> Self {
        let mut c = VaultColumns::default();
        for (e, position) in entries {
            c.commitments.push(e.commitment.clone());
            c.person_ids.push(e.person_id.clone());
            c.nonces.push(e.nonce.clone());
            c.sealed.push(e.sealed.clone());
            c.blind_indexes.push(e.blind_index.clone());
            c.positions.push(*position);
        }
        c
    }
}

/// The common case in one autocommit statement: the head row is locked and advanced,
/// positions are the head plus the row's ordinal, and the rows go in with their idempotency
/// records, vault entries and card-sequence moves (a used key is a primary-key violation: the
/// careful path then answers it). A guard checks that every continued stream ends where its
/// request expects (rows only ever get added, so a stale snapshot can only make it fail, never
/// pass wrongly); when it fails nothing is updated or inserted and `None` sends the batch to
/// the careful path. A sequence taken meanwhile is a primary-key violation: the statement,
/// head update included, is undone.
///
/// With a side log, the requests' riders board it and go in with the events: its head is
/// moved first (only from where this process last left it), and the log head moves only if
/// it did, so either both logs take the batch or neither does. A side head moved by another
/// process sends the batch once more without riders.
pub(super) async fn fast_append(
    pool: &Singles,
    requests: &[AppendRequest],
    side: Option<&dyn SideLog>,
    recent: &Arc<Recent>,
) -> Result<Option<Vec<Outcome>>, StoreError> {
    // Each stream is where its first request in the batch expects it; the plan chains later
    // requests of the same stream from there, and the guard checks only those first
    // expectations against the table.
    let mut heads: HashMap<(String, String), i64> = HashMap::new();
    let (mut gt, mut gi, mut gs) = (Vec::new(), Vec::new(), Vec::new());
    for (t, i, s) in requests.iter().flat_map(|r| r.streams()) {
        if let std::collections::hash_map::Entry::Vacant(v) = heads.entry((t.to_owned(), i.to_owned())) {
            v.insert(s);
            if s > 0 {
                gt.push(t.to_owned());
                gi.push(i.to_owned());
                gs.push(s);
            }
        }
    }
    let now = commit_instant(DateTime::<Utc>::UNIX_EPOCH);
    let plan = plan(requests, heads, HashMap::new(), 0, now)?;
    if plan.outcomes.iter().any(|o| o.is_err()) || plan.rows.is_empty() {
        return Ok(None);
    }
    let riders: Vec<Rider> = requests.iter().filter_map(|r| r.rider.clone()).collect();
    let boarding = match side {
        Some(side) if !riders.is_empty() => side.board(riders).await,
        _ => None,
    };
    let n = plan.rows.len() as i64;
    let c = Columns::from(plan.rows);
    let v = VaultColumns::from(&plan.vault);
    let (mut keys, mut fingerprints, mut key_first, mut key_last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (claim, first, last) in &plan.keys {
        keys.push(claim.key.clone());
        fingerprints.push(claim.fingerprint.clone());
        key_first.push(*first);
        key_last.push(*last);
    }
    let (mut card_symbols, mut card_widths, mut card_numbers) = (Vec::new(), Vec::new(), Vec::new());
    for ((symbol, width), number) in &plan.cards {
        card_symbols.push(symbol.clone());
        card_widths.push(*width);
        card_numbers.push(*number);
    }
    let sql = statement(boarding.as_ref());
    let q = sqlx::query(&sql)
        .bind(&c.types)
        .bind(&c.ids)
        .bind(&c.sequences)
        .bind(&c.event_types)
        .bind(&c.versions)
        .bind(&c.payloads)
        .bind(now)
        .bind(n)
        .bind(&gt)
        .bind(&gi)
        .bind(&gs)
        .bind(&c.metadata)
        .bind(&keys)
        .bind(&fingerprints)
        .bind(&key_first)
        .bind(&key_last)
        .bind(&v.commitments)
        .bind(&v.person_ids)
        .bind(&v.nonces)
        .bind(&v.sealed)
        .bind(&v.blind_indexes)
        .bind(&v.positions)
        .bind(&card_symbols)
        .bind(&card_widths)
        .bind(&card_numbers);
    let q = match &boarding {
        None => q,
        Some(b) => b.rows.bind(q),
    };
    let row = async {
        let mut lease = pool.lease().await?;
        let row = q.fetch_optional(lease.conn()).await;
        lease.settle(row)
    }
    .await;
    let row = match row {
        Ok(row) => row,
        Err(e) => {
            if let Some(b) = boarding {
                b.settle(false);
            }
            return Err(e);
        }
    };
    let Some(row) = row else {
        return match boarding {
            // The side head had moved (or a stream had): once more, the events alone.
            Some(b) => {
                b.settle(false);
                Box::pin(fast_append(pool, requests, None, recent)).await
            }
            None => Ok(None),
        };
    };
    let rode = boarding.is_some();
    if let Some(b) = boarding {
        b.settle(true);
    }
    let (base, micros): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| corrupt("recorded_at"))?;
    // The statement committed: its rows are the log's from `base` on.
    recent.committed(c.into_events(base, at));
    Ok(Some(
        plan.outcomes
            .into_iter()
            .zip(requests)
            .map(|(o, r)| {
                o.map(|mut a| {
                    for e in &mut a.events {
                        e.position += base;
                    }
                    a.recorded_at = at;
                    a.rider_written = rode && r.rider.is_some();
                    a
                })
            })
            .collect(),
    ))
}

/// Where the batch statement reads its rows from: the same for every batch, so built once.
struct RowSources {
    guard: String,
    events: String,
    keys: String,
    vault: String,
    cards: String,
}

static ROW_SOURCES: LazyLock<RowSources> = LazyLock::new(|| RowSources {
    guard: pg_rows(&[("$9::text[]", "t"), ("$10::text[]", "i"), ("$11::bigint[]", "s")]),
    // The ordinal walks in step with the arrays: positions follow the rows' order.
    events: pg_rows_numbered(
        &[
            ("$1::text[]", "t"),
            ("$2::text[]", "i"),
            ("$3::bigint[]", "s"),
            ("$4::text[]", "et"),
            ("$5::text[]", "ev"),
            ("$6::text[]", "p"),
            ("$12::text[]", "m"),
        ],
        "o",
    ),
    keys: pg_rows(&[
        ("$13::text[]", "key"),
        ("$14::text[]", "fp"),
        ("$15::bigint[]", "f"),
        ("$16::bigint[]", "l"),
    ]),
    vault: pg_rows(&[
        ("$17::text[]", "c"),
        ("$18::text[]", "p"),
        ("$19::bytea[]", "n"),
        ("$20::bytea[]", "x"),
        ("$21::text[]", "b"),
        ("$22::bigint[]", "pos"),
    ]),
    cards: pg_rows(&[("$23::text[]", "s"), ("$24::bigint[]", "w"), ("$25::bigint[]", "n")]),
});

/// The fast path's statement; with a boarding, its side head (moved only if the guard holds)
/// and inserts, parameters from `$26` on.
fn statement(boarding: Option<&Boarding>) -> String {
    let SideSql {
        head: side_head,
        inserts: side_inserts,
        checks: side_checks,
    } = boarding
        .map(|b| b.rows.sql(26, "(SELECT ok FROM guard)"))
        .unwrap_or_default();
    let side_gate = if boarding.is_some() {
        " AND EXISTS (SELECT 1 FROM side_head)"
    } else {
        ""
    };
    let RowSources {
        guard: guard_rows,
        events: event_rows,
        keys: key_rows,
        vault: vault_rows,
        cards: card_rows,
    } = &*ROW_SOURCES;
    format!(
        "WITH guard AS (\
           SELECT count(*) = cardinality($9::text[]) AS ok FROM events e \
           JOIN {guard_rows} AS g \
             ON e.aggregate_type = g.t AND e.aggregate_id = g.i AND e.sequence = g.s), \
         {side_head}\
         head AS (\
           UPDATE log_head SET last_position = last_position + $8, last_recorded_at = greatest(last_recorded_at, $7) \
           WHERE id AND (SELECT ok FROM guard){side_gate} \
           RETURNING last_position - $8 AS base, last_recorded_at AS at), \
         inserted AS (\
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, recorded_at) \
           SELECT u.t, u.i, u.s, u.et, u.ev, u.p::json, u.m::json, head.base + u.o, head.at \
           FROM {event_rows} AS u, head \
           RETURNING 1), \
         keys AS (\
           INSERT INTO idempotency_keys (key, fingerprint, response, position, created_at) \
           SELECT k.key, k.fp, json_build_object('first_position', head.base + k.f, 'last_position', head.base + k.l), \
             head.base + k.l, head.at \
           FROM {key_rows} AS k, head \
           RETURNING 1), \
         vault AS (\
           INSERT INTO my_numbers (commitment, person_id, nonce, sealed, blind_index, position, created_at) \
           SELECT v.c, v.p, v.n, v.x, v.b, head.base + v.pos, head.at \
           FROM {vault_rows} AS v, head \
           RETURNING 1), \
         cards AS (\
           INSERT INTO card_sequence (symbol, width, last) \
           SELECT c.s, c.w, c.n FROM {card_rows} AS c, head \
           ON CONFLICT (symbol, width) DO UPDATE SET last = greatest(card_sequence.last, excluded.last) \
           RETURNING 1){side_inserts} \
         SELECT head.base, (extract(epoch FROM head.at) * 1000000)::bigint FROM head \
         WHERE (SELECT count(*) FROM inserted) = $8 \
           AND (SELECT count(*) FROM keys) = cardinality($13::text[]) \
           AND (SELECT count(*) FROM vault) = cardinality($17::text[]) \
           AND (SELECT count(*) FROM cards) = cardinality($23::text[]){side_checks}"
    )
}
