//! `kokuho-ledger import FILE`: bulk load from JSON Lines.
//!
//! The whole file is parsed and run through the aggregates in memory first (against the
//! streams already stored), so the first invalid line is reported with its number and nothing
//! is written. Then the events are appended in file order, many per transaction.

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{bail, Context as _};
use cqrs_es::Aggregate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::domain::event::{HOUSEHOLD_EVENT_TYPES, PERSON_EVENT_TYPES};
use crate::domain::input::{parse_household_event, parse_person_event};
use crate::domain::issuance;
use crate::domain::{
    CardNumber, CardSymbol, Directory, Household, HouseholdFact, HouseholdId, HouseholdServices, InputError, Person,
    PersonId, PersonServices, RecordHouseholdEvent, RecordPersonEvent,
};
use crate::ledger::{decide, fold, issue_events, prepare_person_event, LedgerError, RequestContext};
use crate::settings::Settings;
use crate::store::{AppendRequest, Rejection, Store, StreamAppend};
use crate::vault::Vault;

enum Target {
    Person(PersonId, crate::domain::input::PersonInput),
    Household(HouseholdId, crate::domain::HouseholdEvent),
}

struct Line {
    number: usize,
    target: Target,
}

fn line_error(number: usize, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("line {number}: {e}; nothing was imported")
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

/// Persons and cards as the import sees them: stored state plus the file so far.
struct MemoryDirectory {
    persons: RwLock<HashMap<PersonId, Person>>,
    cards: RwLock<HashMap<(String, String), HouseholdId>>,
    store: Store,
}

#[async_trait::async_trait]
impl Directory for MemoryDirectory {
    async fn person(&self, id: &PersonId) -> Result<Option<Person>, String> {
        Ok(self.persons.read().expect("lock").get(id).cloned())
    }
    async fn card_holder(&self, symbol: &CardSymbol, number: &CardNumber) -> Result<Option<HouseholdId>, String> {
        let key = (symbol.to_string(), number.to_string());
        if let Some(h) = self.cards.read().expect("lock").get(&key) {
            return Ok(Some(h.clone()));
        }
        let held = self
            .store
            .card_holder(&key.0, &key.1)
            .await
            .map_err(|e| e.to_string())?;
        Ok(held.and_then(|h| HouseholdId::parse(&h).ok()))
    }
}

/// Card and branch numbers for the file's joins, as the ledger issues them for the API
/// (domain.md §5), with the card-number sequence counted in memory.
struct Issuance {
    symbol: CardSymbol,
    width: usize,
    next_card: u64,
}

impl Issuance {
    async fn follow(
        &mut self,
        person_id: &PersonId,
        person: &Person,
        households: &mut HashMap<HouseholdId, Household>,
        services: &HouseholdServices,
        directory: &MemoryDirectory,
        ctx: &RequestContext,
    ) -> Result<Vec<StreamAppend>, LedgerError> {
        let derived = person
            .derive()
            .map_err(|e| LedgerError::Internal(format!("a decided history does not derive: {e}")))?;
        let system = RequestContext {
            actor: "system".into(),
            request_id: ctx.request_id.clone(),
            ..Default::default()
        };
        let mut also = Vec::new();
        for (household_id, first_day) in issuance::insured_households(&derived) {
            let household = households.entry(household_id.clone()).or_default();
            if household.card().is_some() && household.branch_of(person_id).is_some() {
                continue;
            }
            let expected = household.last_sequence() as i64;
            let card = if household.card().is_none() {
                let number = issuance::card_number(self.next_card, self.width)?;
                self.next_card += 1;
                Some((self.symbol.clone(), number))
            } else {
                None
            };
            let taken = card.clone();
            let events = issue_events(household, &household_id, person_id, first_day, card, services, &system).await?;
            if let Some((symbol, number)) = taken {
                // Later lines must see this card as taken.
                directory
                    .cards
                    .write()
                    .expect("lock")
                    .insert((symbol.to_string(), number.to_string()), household_id.clone());
            }
            also.push(StreamAppend {
                aggregate_type: Household::TYPE.into(),
                aggregate_id: household_id.to_string(),
                expected_sequence: expected,
                events,
            });
        }
        Ok(also)
    }
}

/// A progress bar on stderr, drawn only on a terminal.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    // Drawn only on a terminal: indicatif hides itself when stderr is not one.
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

pub async fn run(file: &Path, url: &str, settings: Settings, batch_size: usize, actor: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    let clock = SystemClock;
    let today = clock.today();

    // 1. Parse every line.
    let reader =
        std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let mut lines = Vec::new();
    for (i, text) in reader.lines().enumerate() {
        let number = i + 1;
        let text = text.with_context(|| format!("reading line {number}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let target = parse_line(&text, today).map_err(|e| line_error(number, e))?;
        lines.push(Line { number, target });
    }

    let store = Store::connect(url).await?;
    let vault = Vault::open_key_file(&crate::app::vault_key_path(url, &settings)?, true)?;

    // 2. Load the stored state of every stream the file touches.
    let mut person_ids = HashSet::new();
    let mut household_ids = HashSet::new();
    for l in &lines {
        match &l.target {
            Target::Person(p, input) => {
                person_ids.insert(p.to_string());
                // Households the person joins may get card and branch numbers.
                let v = serde_json::to_value(&input.event)?;
                for h in [
                    v.get("household_id"),
                    v.get("replacement").and_then(|r| r.get("household_id")),
                ]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                {
                    household_ids.insert(h.to_owned());
                }
            }
            Target::Household(h, e) => {
                household_ids.insert(h.to_string());
                if let HouseholdFact::HouseholdHeadChanged { person_id }
                | HouseholdFact::NhiHeadDesignated { person_id } = &e.fact
                {
                    person_ids.insert(person_id.to_string());
                }
            }
        }
    }
    let mut persons: HashMap<PersonId, Person> = HashMap::new();
    for (id, events) in group(
        store
            .load_streams(Person::TYPE, &person_ids.into_iter().collect::<Vec<_>>())
            .await?,
    ) {
        persons.insert(PersonId::parse(&id)?, fold::<Person>(&events)?);
    }
    // Households of the stored persons too: a rejoin without a household in its event (e.g.
    // leaving employee insurance) is issued in the household the person lives in.
    for person in persons.values() {
        if let Ok(derived) = person.derive() {
            household_ids.extend(derived.households.iter().map(|(_, h)| h.to_string()));
        }
    }
    let mut households: HashMap<HouseholdId, Household> = HashMap::new();
    for (id, events) in group(
        store
            .load_streams(Household::TYPE, &household_ids.into_iter().collect::<Vec<_>>())
            .await?,
    ) {
        households.insert(HouseholdId::parse(&id)?, fold::<Household>(&events)?);
    }
    let directory = Arc::new(MemoryDirectory {
        persons: RwLock::new(persons),
        cards: RwLock::default(),
        store: store.clone(),
    });

    // 3. Run every line through its aggregate, in file order.
    let run_id = uuid::Uuid::new_v4();
    let pb = bar(lines.len() as u64, "checking");
    let mut numbers: Vec<usize> = Vec::with_capacity(lines.len());
    let mut requests: Vec<AppendRequest> = Vec::with_capacity(lines.len());
    let person_services = PersonServices { today };
    let issuance = Issuance {
        symbol: CardSymbol::parse(&settings.card_symbol)?,
        width: settings.card_number_width,
        next_card: store
            .max_card_number(&settings.card_symbol, settings.card_number_width)
            .await?
            + 1,
    };
    let mut issuance = issuance;
    let household_services = HouseholdServices {
        today,
        directory: directory.clone(),
    };
    for l in lines {
        let ctx = RequestContext {
            actor: actor.to_owned(),
            request_id: format!("{run_id}:{}", l.number),
            ..Default::default()
        };
        let request = match l.target {
            Target::Person(id, input) => {
                // Taken out of the shared map while its handler runs (the household rules read it).
                let mut person = directory.persons.write().expect("lock").remove(&id).unwrap_or_default();
                let expected = person.last_sequence() as i64;
                let (event, vault_entries) = prepare_person_event(&vault, &id, &person, &input);
                let reported = event.reported_date;
                let command = RecordPersonEvent { event, system: false };
                let events = decide(&mut person, command, &person_services, &ctx, reported)
                    .await?
                    .map_err(|e| line_error(l.number, LedgerError::from(e)))?;
                let also = issuance
                    .follow(&id, &person, &mut households, &household_services, &directory, &ctx)
                    .await
                    .map_err(|e| line_error(l.number, e))?;
                directory.persons.write().expect("lock").insert(id.clone(), person);
                AppendRequest {
                    aggregate_type: Person::TYPE.into(),
                    aggregate_id: id.to_string(),
                    expected_sequence: expected,
                    events,
                    also,
                    vault: vault_entries,
                    idempotency: None,
                }
            }
            Target::Household(id, event) => {
                let household = households.entry(id.clone()).or_default();
                let expected = household.last_sequence() as i64;
                let reported = event.reported_date;
                let card = match &event.fact {
                    HouseholdFact::CardNumberAssigned { symbol, number } => {
                        Some((symbol.to_string(), number.to_string()))
                    }
                    _ => None,
                };
                let command = RecordHouseholdEvent {
                    household_id: id.clone(),
                    event,
                    system: false,
                };
                let events = decide(household, command, &household_services, &ctx, reported)
                    .await?
                    .map_err(|e| line_error(l.number, LedgerError::from(e)))?;
                if let Some(card) = card {
                    // Later lines must see this card as taken.
                    directory.cards.write().expect("lock").insert(card, id.clone());
                }
                AppendRequest {
                    aggregate_type: Household::TYPE.into(),
                    aggregate_id: id.to_string(),
                    expected_sequence: expected,
                    events,
                    also: Vec::new(),
                    vault: Vec::new(),
                    idempotency: None,
                }
            }
        };
        numbers.push(l.number);
        requests.push(request);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let checked = started.elapsed();

    // 4. Write, many events per transaction, in file order.
    let size = |r: &AppendRequest| r.events.len() + r.also.iter().map(|a| a.events.len()).sum::<usize>();
    let total: usize = requests.iter().map(size).sum();
    let pb = bar(total as u64, "writing");
    let write_started = Instant::now();
    let (mut first, mut last) = (None, 0);
    let mut written_lines = 0usize;
    let mut i = 0;
    while i < requests.len() {
        let mut j = i;
        let mut events = 0;
        while j < requests.len() && (events == 0 || events + size(&requests[j]) <= batch_size) {
            events += size(&requests[j]);
            j += 1;
        }
        let outcomes = store.append_batch(&requests[i..j]).await?;
        for (number, outcome) in numbers[i..j].iter().zip(outcomes) {
            match outcome {
                Ok(a) => {
                    first.get_or_insert(a.first_position);
                    last = a.last_position;
                }
                Err(Rejection::Conflict { .. }) => bail!(
                    "line {number}: the stream was changed by another writer during the import; \
                     lines before it in its batch were not written, {written_lines} earlier lines were"
                ),
                Err(other) => {
                    bail!("line {number}: refused while writing: {other:?}; {written_lines} earlier lines were written")
                }
            }
        }
        written_lines += j - i;
        pb.inc(events as u64);
        i = j;
    }
    pb.finish_and_clear();
    let secs = write_started.elapsed().as_secs_f64();
    store.close().await;
    Ok(format!(
        "imported {total} events from {written_lines} lines, positions {}..{last}; checked in {:.1} s, written in {secs:.1} s ({:.0} events/s)",
        first.unwrap_or(0),
        checked.as_secs_f64(),
        total as f64 / secs.max(1e-9)
    ))
}

fn group(events: Vec<crate::store::StoredEvent>) -> Vec<(String, Vec<crate::store::StoredEvent>)> {
    let mut out: Vec<(String, Vec<crate::store::StoredEvent>)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((id, v)) if *id == e.aggregate_id => v.push(e),
            _ => out.push((e.aggregate_id.clone(), vec![e])),
        }
    }
    out
}
