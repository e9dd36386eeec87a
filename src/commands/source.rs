//! Where a decision reads the streams it needs: the store as it stands (the API), or a batch's
//! view — the store plus what the batch's earlier commands decided and has not written yet
//! (`import`). Both run the same decision code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cqrs_es::Aggregate;
use tokio::sync::OwnedMutexGuard;

use super::locks::{StreamGuard, StreamLocks};
use crate::codec::fold;
use crate::domain::{CardNumber, CardSymbol, Directory, Household, HouseholdId, Person, PersonId, ServiceError};
use crate::store::sql::{Db, Dialect, Ty, Val};
use crate::store::{Store, StoreError};

/// The household a card symbol and number was assigned to (the log's unique index on card
/// numbers answers it, also for numbers the read models have not caught up with).
pub async fn card_holder(db: &Db, symbol: &str, number: &str) -> Result<Option<String>, StoreError> {
    let sql = match db.dialect() {
        Dialect::Postgres => {
            "SELECT aggregate_id FROM events WHERE event_type = 'card_number_assigned' \
             AND payload ->> 'symbol' = $1 AND payload ->> 'number' = $2"
        }
        Dialect::Sqlite => {
            "SELECT aggregate_id FROM events WHERE event_type = 'card_number_assigned' \
             AND json_extract(payload, '$.symbol') = $1 AND json_extract(payload, '$.number') = $2"
        }
    };
    Ok(db
        .fetch(sql, &[Val::text(symbol), Val::text(number)], &[Ty::Text])
        .await?
        .into_iter()
        .next()
        .and_then(|mut r| r.swap_remove(0).into_text()))
}

/// Every card number of `symbol` and `width` digits above `last` (what a sequence at `last`
/// must skip): typed-in numbers ahead of the sequence, usually none.
async fn cards_above(db: &Db, symbol: &str, width: usize, last: i64) -> Result<HashMap<String, String>, StoreError> {
    let (number, sym) = match db.dialect() {
        Dialect::Postgres => ("payload ->> 'number'", "payload ->> 'symbol'"),
        Dialect::Sqlite => ("json_extract(payload, '$.number')", "json_extract(payload, '$.symbol')"),
    };
    let sql = format!(
        "SELECT {number}, aggregate_id FROM events WHERE event_type = 'card_number_assigned' \
         AND {sym} = $1 AND length({number}) = $2 AND {number} > $3"
    );
    let floor = format!("{:0width$}", last.max(0));
    Ok(db
        .fetch(
            &sql,
            &[Val::text(symbol), Val::int(width as i64), Val::text(floor)],
            &[Ty::Text, Ty::Text],
        )
        .await?
        .into_iter()
        .map(|r| {
            let mut it = r.into_iter();
            let n = it.next().and_then(Val::into_text).unwrap_or_default();
            let h = it.next().and_then(Val::into_text).unwrap_or_default();
            (n, h)
        })
        .collect())
}

/// A sequence's numbers held above its stored last one, read once per batch.
struct Held {
    last: i64,
    numbers: HashMap<String, String>,
}

/// An aggregate as folded from its stream, with the stream's last sequence.
#[derive(Clone, Debug, Default)]
pub struct Folded<A> {
    pub aggregate: A,
    pub sequence: i64,
}

#[async_trait::async_trait]
pub trait Source: Send + Sync {
    async fn person(&self, id: &PersonId) -> Result<Folded<Person>, StoreError>;
    async fn household(&self, id: &HouseholdId) -> Result<Folded<Household>, StoreError>;
    /// The last number the deployment's card sequence (symbol, width) has issued.
    async fn card_sequence(&self, symbol: &CardSymbol, width: usize) -> Result<i64, StoreError>;
    /// The household holding a card number, if any.
    async fn card_holder(&self, symbol: &CardSymbol, number: &CardNumber) -> Result<Option<HouseholdId>, StoreError>;
    /// Serialises commands on a household's stream in this process until the append is
    /// answered; None where the caller already holds every stream it touches (a batch).
    async fn lock_household(&self, id: &HouseholdId) -> Option<StreamGuard>;
    /// Serialises card-number issuance in this process until the append is answered; None in
    /// a batch, which takes its numbers in order itself.
    async fn lock_cards(&self) -> Option<OwnedMutexGuard<()>>;
}

/// Household rules that read other streams read them from the decision's source.
pub struct SourceDirectory(pub Arc<dyn Source>);

#[async_trait::async_trait]
impl Directory for SourceDirectory {
    async fn person(&self, id: &PersonId) -> Result<Option<Person>, ServiceError> {
        let p = self.0.person(id).await.map_err(ServiceError::new)?;
        Ok((p.sequence > 0).then_some(p.aggregate))
    }
    async fn card_holder(&self, symbol: &CardSymbol, number: &CardNumber) -> Result<Option<HouseholdId>, ServiceError> {
        self.0.card_holder(symbol, number).await.map_err(ServiceError::new)
    }
}

async fn load<A: Aggregate>(store: &Store, id: &str) -> Result<Folded<A>, StoreError> {
    let events = store.load_stream(A::TYPE, id, None).await?;
    Ok(Folded {
        sequence: events.len() as i64,
        aggregate: fold::<A>(&events)?,
    })
}

/// The store as it stands.
pub struct StoreSource {
    pub store: Store,
    pub locks: StreamLocks,
    pub cards: Arc<tokio::sync::Mutex<()>>,
}

#[async_trait::async_trait]
impl Source for StoreSource {
    async fn person(&self, id: &PersonId) -> Result<Folded<Person>, StoreError> {
        load(&self.store, id.as_str()).await
    }
    async fn household(&self, id: &HouseholdId) -> Result<Folded<Household>, StoreError> {
        load(&self.store, id.as_str()).await
    }
    async fn card_sequence(&self, symbol: &CardSymbol, width: usize) -> Result<i64, StoreError> {
        self.store.card_sequence(symbol.as_str(), width).await
    }
    async fn card_holder(&self, symbol: &CardSymbol, number: &CardNumber) -> Result<Option<HouseholdId>, StoreError> {
        Ok(card_holder(self.store.db(), symbol.as_str(), number.as_str())
            .await?
            .and_then(|h| HouseholdId::parse(&h).ok()))
    }
    async fn lock_household(&self, id: &HouseholdId) -> Option<StreamGuard> {
        Some(self.locks.lock(format!("{}/{id}", Household::TYPE)).await)
    }
    async fn lock_cards(&self) -> Option<OwnedMutexGuard<()>> {
        Some(self.cards.clone().lock_owned().await)
    }
}

/// A batch's view: streams read from the store once, then advanced by the batch's own
/// decisions (which are written together at the end, or not at all).
pub struct BatchSource {
    store: Store,
    persons: Mutex<HashMap<PersonId, Folded<Person>>>,
    households: Mutex<HashMap<HouseholdId, Folded<Household>>>,
    cards: Mutex<HashMap<(CardSymbol, CardNumber), HouseholdId>>,
    /// Each sequence's last number: as stored when first asked, then as the batch took them.
    sequences: Mutex<HashMap<(CardSymbol, usize), i64>>,
    /// Per sequence, the numbers held above its stored last one (so checking a number the
    /// sequence offers costs no query).
    held: tokio::sync::Mutex<HashMap<(CardSymbol, usize), Held>>,
}

fn group<A: Aggregate>(events: Vec<crate::store::StoredEvent>) -> Result<Vec<(String, Folded<A>)>, StoreError> {
    let mut out: Vec<(String, Vec<crate::store::StoredEvent>)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((id, v)) if *id == e.aggregate_id => v.push(e),
            _ => out.push((e.aggregate_id.clone(), vec![e])),
        }
    }
    out.into_iter()
        .map(|(id, events)| {
            Ok((
                id,
                Folded {
                    sequence: events.len() as i64,
                    aggregate: fold::<A>(&events)?,
                },
            ))
        })
        .collect()
}

impl BatchSource {
    /// Reads the given streams in bulk (and, for the persons, the households they belong to).
    pub async fn prefetch(store: &Store, persons: &[String], households: &[String]) -> Result<Self, StoreError> {
        let mut person_map = HashMap::new();
        let mut household_ids: Vec<String> = households.to_vec();
        for (id, folded) in group::<Person>(store.load_streams(Person::TYPE, persons).await?)? {
            // A rejoin without a household in its event (e.g. leaving employee insurance) is
            // issued in the household the person lives in.
            if let Ok(derived) = folded.aggregate.derive() {
                household_ids.extend(derived.household_ids().into_iter().map(|h| h.to_string()));
            }
            person_map.insert(PersonId::parse(&id).map_err(crate::store::corrupt)?, folded);
        }
        household_ids.sort();
        household_ids.dedup();
        let mut household_map = HashMap::new();
        for (id, folded) in group::<Household>(store.load_streams(Household::TYPE, &household_ids).await?)? {
            household_map.insert(HouseholdId::parse(&id).map_err(crate::store::corrupt)?, folded);
        }
        // What the store does not hold is new: no need to ask again.
        for id in persons {
            if let Ok(id) = PersonId::parse(id) {
                person_map.entry(id).or_default();
            }
        }
        for id in &household_ids {
            if let Ok(id) = HouseholdId::parse(id) {
                household_map.entry(id).or_default();
            }
        }
        Ok(Self {
            store: store.clone(),
            persons: Mutex::new(person_map),
            households: Mutex::new(household_map),
            cards: Mutex::default(),
            sequences: Mutex::default(),
            held: tokio::sync::Mutex::default(),
        })
    }

    /// The person's state after a decision of the batch.
    pub fn set_person(&self, id: &PersonId, folded: Folded<Person>) {
        self.persons.lock().expect("batch").insert(id.clone(), folded);
    }

    /// A household's state after a decision of the batch.
    pub fn set_household(&self, id: &HouseholdId, folded: Folded<Household>) {
        if let Some((symbol, number)) = folded.aggregate.card() {
            self.cards.lock().expect("batch").insert((symbol, number), id.clone());
        }
        self.households.lock().expect("batch").insert(id.clone(), folded);
    }

    /// A card number the batch took from the sequence (after reading it with
    /// [`Source::card_sequence`]).
    pub fn took_card(&self, symbol: &CardSymbol, width: usize, number: i64) {
        let mut s = self.sequences.lock().expect("batch");
        let top = s.entry((symbol.clone(), width)).or_insert(number);
        *top = (*top).max(number);
    }
}

#[async_trait::async_trait]
impl Source for BatchSource {
    async fn person(&self, id: &PersonId) -> Result<Folded<Person>, StoreError> {
        if let Some(p) = self.persons.lock().expect("batch").get(id) {
            return Ok(p.clone());
        }
        let p: Folded<Person> = load(&self.store, id.as_str()).await?;
        self.persons.lock().expect("batch").insert(id.clone(), p.clone());
        Ok(p)
    }
    async fn household(&self, id: &HouseholdId) -> Result<Folded<Household>, StoreError> {
        if let Some(h) = self.households.lock().expect("batch").get(id) {
            return Ok(h.clone());
        }
        let h: Folded<Household> = load(&self.store, id.as_str()).await?;
        self.households.lock().expect("batch").insert(id.clone(), h.clone());
        Ok(h)
    }
    async fn card_sequence(&self, symbol: &CardSymbol, width: usize) -> Result<i64, StoreError> {
        let key = (symbol.clone(), width);
        if let Some(n) = self.sequences.lock().expect("batch").get(&key) {
            return Ok(*n);
        }
        let stored = self.store.card_sequence(symbol.as_str(), width).await?;
        let mut s = self.sequences.lock().expect("batch");
        let n = s.entry(key).or_insert(stored);
        *n = (*n).max(stored);
        Ok(*n)
    }
    async fn card_holder(&self, symbol: &CardSymbol, number: &CardNumber) -> Result<Option<HouseholdId>, StoreError> {
        if let Some(h) = self.cards.lock().expect("batch").get(&(symbol.clone(), number.clone())) {
            return Ok(Some(h.clone()));
        }
        let width = number.as_str().len();
        if let Ok(n) = number.as_str().parse::<i64>() {
            let mut held = self.held.lock().await;
            let key = (symbol.clone(), width);
            if !held.contains_key(&key) {
                let last = self.store.card_sequence(symbol.as_str(), width).await?;
                let numbers = cards_above(self.store.db(), symbol.as_str(), width, last).await?;
                held.insert(key.clone(), Held { last, numbers });
            }
            let h = &held[&key];
            if n > h.last {
                return Ok(h
                    .numbers
                    .get(number.as_str())
                    .and_then(|id| HouseholdId::parse(id).ok()));
            }
        }
        Ok(card_holder(self.store.db(), symbol.as_str(), number.as_str())
            .await?
            .and_then(|h| HouseholdId::parse(&h).ok()))
    }
    async fn lock_household(&self, _: &HouseholdId) -> Option<StreamGuard> {
        None
    }
    async fn lock_cards(&self) -> Option<OwnedMutexGuard<()>> {
        None
    }
}
