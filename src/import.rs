//! `kokuho-ledger import FILE`: bulk load from JSON Lines, through the same command path as the
//! API (the aggregates' rules, one issuance of card and branch numbers, the writer, the stream
//! locks).
//!
//! The file is streamed in batches of lines. Each batch is decided in file order against the
//! store plus the batch's own earlier decisions ([`BatchSource`]) and written in one
//! transaction — all of it or nothing. The first invalid line stops the import: the valid
//! lines before it in its batch are written, that line and everything after are not, and the
//! report says exactly which lines are in the ledger. Every line carries an Idempotency-Key of
//! its own (a keyed hash of its line number and text), so running the same file again after
//! any failure — a corrected line, a conflict, a killed process — skips what is already in the
//! ledger and finishes the load without duplicating a line. Memory holds two batches: the one
//! being written and the next, read ahead ([`read_ahead`]).

use std::collections::HashSet;
use std::io::BufRead as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::Value;

use crate::access::record::{named_persons, AccessRecord};
use crate::access::Recorder;
use crate::commands::source::{BatchSource, Folded, Source};
use crate::commands::Decision;
use crate::domain::event::{HOUSEHOLD_EVENT_TYPES, PERSON_EVENT_TYPES};
use crate::domain::input::{parse_household_event, parse_person_event, PersonInput};
use crate::domain::{HouseholdEvent, HouseholdFact, HouseholdId, InputError, PersonId};
use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::request::RequestContext;
use crate::store::sql::{self, Ty};
use crate::store::{AppendRequest, IdempotencyClaim, Rejection};

enum Target {
    Person(PersonId, PersonInput),
    Household(HouseholdId, HouseholdEvent),
}

struct Line {
    number: usize,
    key: String,
    target: Target,
}

fn parse_line(text: &str, today: chrono::NaiveDate) -> Result<Target, InputError> {
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| InputError::new("invalid_json", format!("not valid JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| InputError::new("invalid_body", "a line must be a JSON object"))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| InputError::new("missing_field", "type is required"))?
        .to_owned();
    let take_id = |obj: &mut serde_json::Map<String, Value>, key: &str| match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(InputError::new("invalid_field", format!("{key} must be a string"))),
        None => Err(InputError::new("missing_field", format!("{key} is required"))),
    };
    if HOUSEHOLD_EVENT_TYPES.contains(&ty.as_str()) {
        let id = HouseholdId::parse(&take_id(obj, "household_id")?)?;
        Ok(Target::Household(id, parse_household_event(&v, today)?))
    } else if PERSON_EVENT_TYPES.contains(&ty.as_str()) {
        let id = PersonId::parse(&take_id(obj, "person_id")?)?;
        Ok(Target::Person(id, parse_person_event(&v, today)?))
    } else {
        Err(InputError::new(
            "unknown_event_type",
            format!("unknown event type {ty:?}"),
        ))
    }
}

/// How an import runs.
#[derive(Clone)]
pub struct Options {
    /// Lines per batch (one transaction each).
    pub batch_lines: usize,
    /// The principal recorded as the events' actor.
    pub actor: String,
    /// Where each written batch leaves its access record (kind `update`, the persons it
    /// changed), completed from this template, right after the batch commits.
    pub access: Option<(Recorder, AccessRecord)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_lines: 5_000,
            actor: "import".into(),
            access: None,
        }
    }
}

/// The persons a batch changes: the person streams it writes and the persons its household
/// events name.
fn batch_persons(requests: &[AppendRequest]) -> Vec<String> {
    let mut persons = Vec::new();
    for r in requests {
        let streams = std::iter::once((&r.aggregate_type, &r.aggregate_id, &r.events))
            .chain(r.also.iter().map(|a| (&a.aggregate_type, &a.aggregate_id, &a.events)));
        for (ty, id, events) in streams {
            if ty == "person" {
                persons.push(id.clone());
            } else {
                persons.extend(events.iter().flat_map(|e| named_persons(&e.payload)));
            }
        }
    }
    persons
}

/// The line that stopped an import, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct LineFailure {
    pub line: usize,
    pub error: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Lines written by this run.
    pub written: usize,
    /// Lines found in the ledger already (written by an earlier run of the same file).
    pub already: usize,
    /// Events written (consequences included).
    pub events: usize,
    /// Positions written by this run.
    pub positions: Option<(i64, i64)>,
    /// Every line up to this one is in the ledger (0: none).
    pub in_ledger_through: usize,
    /// The line that stopped the import; everything from it on is not in the ledger.
    pub failure: Option<LineFailure>,
    pub seconds: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lines written ({} events), {} already in the ledger; lines 1–{} are in the ledger",
            self.written, self.events, self.already, self.in_ledger_through
        )?;
        if let Some((a, b)) = self.positions {
            write!(f, "; positions {a}..{b}")?;
        }
        write!(
            f,
            "; {:.1} s ({:.0} events/s)",
            self.seconds,
            self.events as f64 / self.seconds.max(1e-9)
        )
    }
}

/// How often a batch is decided again when another writer moved one of its streams.
const BATCH_RETRIES: usize = 5;

/// A batch of lines read, parsed and looked up while the batch before it is written.
struct Parsed {
    lines: Vec<Line>,
    /// The keys among them already in the ledger when the batch was read.
    known: HashSet<String>,
    /// The line that could not be parsed: the import stops after this batch.
    stop: Option<LineFailure>,
    /// Bytes read through this batch.
    bytes: u64,
    /// The last line number read.
    number: usize,
    /// The file ends with this batch.
    end: bool,
}

/// Reads, parses and looks up the file's batches in a thread of their own, one batch ahead of
/// the writes (two batches in memory at most). It stops at the end of the file, after a line
/// that does not parse, or when the receiver goes away.
fn read_ahead(
    file: std::fs::File,
    store: crate::store::Store,
    vault: Arc<crate::vault::Vault>,
    today: chrono::NaiveDate,
    batch_lines: usize,
) -> tokio::sync::mpsc::Receiver<anyhow::Result<Parsed>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(file).lines();
        let (mut bytes, mut number) = (0u64, 0usize);
        loop {
            let mut batch: Vec<Line> = Vec::with_capacity(batch_lines);
            let mut stop = None;
            let mut end = false;
            while batch.len() < batch_lines && stop.is_none() {
                let Some(text) = lines.next() else {
                    end = true;
                    break;
                };
                number += 1;
                let text = match text.with_context(|| format!("reading line {number}")) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                bytes += text.len() as u64 + 1;
                if text.trim().is_empty() {
                    continue;
                }
                let key = format!(
                    "import:{}",
                    &vault.fingerprint(&[number.to_string().as_bytes(), text.as_bytes()])[..40]
                );
                match parse_line(&text, today) {
                    Ok(target) => batch.push(Line { number, key, target }),
                    Err(e) => {
                        stop = Some(LineFailure {
                            line: number,
                            error: e.to_string(),
                        })
                    }
                }
            }
            let known = match runtime.block_on(known_keys(store.db(), &batch)) {
                Ok(k) => k,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            let last = end || stop.is_some();
            let parsed = Parsed {
                lines: batch,
                known,
                stop,
                bytes,
                number,
                end,
            };
            if tx.blocking_send(Ok(parsed)).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// Imports `file` into `ledger`; `progress` is told the bytes read so far.
pub async fn run(ledger: &Ledger, file: &Path, options: &Options, progress: impl Fn(u64)) -> anyhow::Result<Report> {
    let started = Instant::now();
    let opened = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut batches = read_ahead(
        opened,
        ledger.store().clone(),
        ledger.vault().clone(),
        ledger.clock().today(),
        options.batch_lines.max(1),
    );
    let mut report = Report::default();
    let mut bytes;
    loop {
        let Some(parsed) = batches.recv().await else {
            anyhow::bail!("reading {} stopped before its end", file.display());
        };
        let parsed = parsed?;
        bytes = parsed.bytes;
        if let Some(last) = parsed.lines.last().map(|l| l.number) {
            match write_batch(ledger, &parsed.lines, parsed.known, options, &mut report).await? {
                Some(failure) => {
                    report.failure = Some(failure);
                    break;
                }
                None => report.in_ledger_through = last,
            }
        }
        progress(bytes);
        if let Some(failure) = parsed.stop {
            report.failure = Some(failure);
            break;
        }
        if parsed.end {
            report.in_ledger_through = parsed.number;
            break;
        }
    }
    if let Some(f) = &report.failure {
        report.in_ledger_through = f.line - 1;
    }
    report.seconds = started.elapsed().as_secs_f64();
    progress(bytes);
    Ok(report)
}

/// The keys of `lines` already in the ledger.
async fn known_keys(db: &crate::store::sql::Db, lines: &[Line]) -> Result<HashSet<String>, LedgerError> {
    let keys: Vec<&str> = lines.iter().map(|l| l.key.as_str()).collect();
    let sql = format!(
        "SELECT key FROM idempotency_keys WHERE {}",
        db.dialect().in_json_array("key", 1)
    );
    let mut known = HashSet::new();
    for chunk in keys.chunks(5000) {
        for r in db.fetch(&sql, &[sql::json_array(chunk)], &[Ty::Text]).await? {
            known.extend(r.into_iter().next().and_then(|v| v.into_text()));
        }
    }
    Ok(known)
}

/// Decides and writes one batch (all of it or nothing, retried when another writer moved one
/// of its streams); the line that stopped it, if one was refused (the lines before it are
/// written).
async fn write_batch(
    ledger: &Ledger,
    lines: &[Line],
    known: HashSet<String>,
    options: &Options,
    report: &mut Report,
) -> anyhow::Result<Option<LineFailure>> {
    let actor = options.actor.as_str();
    let mut read_ahead = Some(known);
    for attempt in 0.. {
        // Looked up again when another writer moved a stream meanwhile.
        let known = match read_ahead.take() {
            Some(known) => known,
            None => known_keys(ledger.store().db(), lines).await?,
        };
        let todo: Vec<&Line> = lines.iter().filter(|l| !known.contains(&l.key)).collect();
        let already = lines.len() - todo.len();
        // The batch's streams stay locked until its append is answered.
        let decided = Instant::now();
        let (requests, failure, _guards) = decide_batch(ledger, &todo, actor).await?;
        let decided = decided.elapsed();
        let written = requests.len();
        if requests.is_empty() {
            report.already += already;
            return Ok(failure);
        }
        let events: usize = requests.iter().map(AppendRequest::size).sum();
        let persons = options.access.as_ref().map(|_| batch_persons(&requests));
        let writing = Instant::now();
        let outcome = ledger.commands.append_all(requests).await?;
        tracing::debug!(
            lines = lines.len(),
            events,
            decide_ms = decided.as_millis() as u64,
            write_ms = writing.elapsed().as_millis() as u64,
            "import batch"
        );
        match outcome {
            Ok(appended) => {
                if let (Some((recorder, template)), Some(persons)) = (&options.access, persons) {
                    let mut record = template.clone();
                    record.at = crate::access::record::micros(chrono::Utc::now());
                    record.set_persons(persons);
                    recorder.record(record).await?;
                }
                report.written += written;
                report.already += already;
                report.events += events;
                if let (Some(first), Some(last)) = (appended.first(), appended.last()) {
                    let (a, b) = (first.first_position(), last.last_position());
                    report.positions = Some(report.positions.map_or((a, b), |(x, _)| (x, b)));
                }
                return Ok(failure);
            }
            Err((_, Rejection::Conflict { .. } | Rejection::Unique(_) | Rejection::KeyUsed(_)))
                if attempt < BATCH_RETRIES =>
            {
                tracing::info!(attempt, "another writer moved a stream of the batch: deciding it again");
            }
            Err((index, rejection)) => {
                let line = index.and_then(|i| todo.get(i)).map_or(0, |l| l.number);
                anyhow::bail!(
                    "the batch with line {line} could not be written after {BATCH_RETRIES} attempts ({rejection:?}); \
                     nothing of it was written: run the import again"
                );
            }
        }
    }
    unreachable!("the loop returns")
}

/// The requests of the lines decided, the first refused line (which ends the batch), and the
/// locks held on the batch's streams.
type Decided = (
    Vec<AppendRequest>,
    Option<LineFailure>,
    Vec<crate::commands::locks::StreamGuard>,
);

/// Decides the lines in file order.
async fn decide_batch(ledger: &Ledger, lines: &[&Line], actor: &str) -> anyhow::Result<Decided> {
    let (mut persons, mut households) = (Vec::new(), Vec::new());
    for l in lines {
        match &l.target {
            Target::Person(p, input) => {
                persons.push(p.to_string());
                // Households the person joins may get card and branch numbers.
                let replacement = match &input.event.fact {
                    crate::domain::PersonFact::Corrected { replacement, .. } => replacement.fact.household(),
                    _ => None,
                };
                households.extend(
                    input
                        .event
                        .fact
                        .household()
                        .into_iter()
                        .chain(replacement)
                        .map(|h| h.to_string()),
                );
            }
            Target::Household(h, e) => {
                households.push(h.to_string());
                if let HouseholdFact::HouseholdHeadChanged { person_id }
                | HouseholdFact::NhiHeadDesignated { person_id } = &e.fact
                {
                    persons.push(person_id.to_string());
                }
            }
        }
    }
    persons.sort();
    persons.dedup();
    households.sort();
    households.dedup();
    // Hold every stream of the batch against this process's own commands (persons first, then
    // households, each in order: the API takes a person, then households in order).
    let mut guards = Vec::with_capacity(persons.len() + households.len());
    for p in &persons {
        guards.push(ledger.commands.locks.lock(format!("person/{p}")).await);
    }
    for h in &households {
        guards.push(ledger.commands.locks.lock(format!("household/{h}")).await);
    }
    let batch = Arc::new(BatchSource::prefetch(ledger.store(), &persons, &households).await?);
    let source: Arc<dyn Source> = batch.clone();
    let run = uuid::Uuid::new_v4();
    let mut requests = Vec::with_capacity(lines.len());
    for l in lines {
        let ctx = RequestContext {
            actor: actor.to_owned(),
            request_id: format!("import:{run}:{}", l.number),
            idempotency_key: Some(l.key.clone()),
            fingerprint: Some(l.key.clone()),
            ..Default::default()
        };
        let decided: Result<(Decision, &str, &str, i64), LedgerError> = match &l.target {
            Target::Person(id, input) => {
                let folded = source.person(id).await?;
                let expected = folded.sequence;
                match ledger
                    .commands
                    .decide_person(&source, id, folded, input, &ctx, false)
                    .await
                {
                    Ok((decision, after)) => {
                        batch.set_person(id, after);
                        Ok((decision, "person", id.as_str(), expected))
                    }
                    Err(e) => Err(e),
                }
            }
            Target::Household(id, event) => {
                let folded = source.household(id).await?;
                let expected = folded.sequence;
                match ledger.commands.decide_household(&source, id, folded, event, &ctx).await {
                    Ok((decision, after)) => {
                        batch.set_household(id, after);
                        Ok((decision, "household", id.as_str(), expected))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let (decision, stream, id, expected) = match decided {
            Ok(d) => d,
            Err(e @ (LedgerError::Rule(_) | LedgerError::Input(_))) => {
                return Ok((
                    requests,
                    Some(LineFailure {
                        line: l.number,
                        error: match &e {
                            LedgerError::Rule(r) => format!("{}: {}", r.code, r.message),
                            LedgerError::Input(i) => format!("{}: {}", i.code, i.message),
                            _ => e.to_string(),
                        },
                    }),
                    guards,
                ))
            }
            Err(e) => return Err(e.into()),
        };
        for (household_id, folded) in &decision.follow.households {
            batch.set_household(household_id, Folded::clone(folded));
        }
        for c in &decision.follow.cards {
            batch.took_card(&ledger.settings().card_symbol, c.width as usize, c.number);
        }
        requests.push(AppendRequest {
            aggregate_type: stream.into(),
            aggregate_id: id.into(),
            expected_sequence: expected,
            events: decision.events,
            also: decision.follow.also,
            vault: decision.vault,
            idempotency: Some(IdempotencyClaim {
                key: l.key.clone(),
                fingerprint: l.key.clone(),
            }),
            cards: decision.follow.cards,
            rider: None,
        });
    }
    Ok((requests, None, guards))
}
