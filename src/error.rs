//! The application's error, and which error goes where.
//!
//! | source | variant | HTTP |
//! |---|---|---|
//! | malformed input (`domain::InputError`) | `Input` | 400 with its code |
//! | a rule of the history (`domain::DomainError`) | `Rule` | 422 with its code |
//! | unknown person, household, card | `NotFound` | 404 |
//! | a My Number erased | `Gone` | 410 |
//! | `If-Match` or the stream moved under a retry loop | `Conflict`, `ConflictPersisted` | 409 |
//! | projections behind the position a read needs | `Lagging` | 503 `projection_lagging` |
//! | the database unreachable or failing (`store::StoreError`, or a `domain::ServiceError` a rule met) | `Store`, `Service` | 500, logged once at the door |
//! | a broken invariant of the ledger itself | `Internal` | 500, logged once at the door |
//!
//! Internal details are logged where the error leaves the application (the HTTP door or the
//! command line), never sent to a client.

use crate::domain::{CommandError, DomainError, InputError, ServiceError};
use crate::projections::Lagging;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    #[error("expected sequence {expected}, the stream is at {actual}")]
    Conflict { expected: i64, actual: i64 },
    #[error("other writers kept changing the stream")]
    ConflictPersisted,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Lagging(#[from] Lagging),
    #[error("internal error: {0}")]
    Internal(String),
}

impl LedgerError {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        LedgerError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// The code of a refusal by a rule, if this is one.
    pub fn rule_code(&self) -> Option<&'static str> {
        match self {
            LedgerError::Rule(r) => Some(r.code),
            _ => None,
        }
    }
}

impl From<CommandError> for LedgerError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rule(r) => LedgerError::Rule(r),
            CommandError::Service(s) => LedgerError::Service(s),
        }
    }
}
