//! The domain: identifiers, events, aggregates and the eligibility rules. Free of HTTP and SQL.

pub mod age;
pub mod error;
pub mod event;
pub mod feed;
pub mod history;
pub mod household;
pub mod ids;
pub mod input;
pub mod issuance;
pub mod person;

#[cfg(test)]
mod tests;

pub use error::{CommandError, DomainError, InputError, ServiceError};
pub use event::{HouseholdEvent, HouseholdFact, PersonEvent, PersonFact, Place, Registration};
pub use household::{Directory, Household, HouseholdServices, RecordHouseholdEvent};
pub use ids::{Branch, CardNumber, CardSymbol, HouseholdId, InsurerNumber, Kana, MyNumber, Name, PersonId, Sex};
pub use person::{Person, PersonServices, RecordPersonEvent};
