//! Errors of the domain: malformed input (400) and refusals by a rule of the history (422).

use std::fmt;

/// Malformed input: syntax, identifiers, formats, unknown fields. Answered 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InputError {
    pub code: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A well-formed event refused by a rule of domain.md §7. Answered 422.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub code: &'static str,
    pub message: String,
}

impl DomainError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A service a command handler asked (e.g. to read another aggregate) failed: not the
/// caller's fault, and not a rule.
#[derive(Debug, thiserror::Error)]
#[error("service failure: {0}")]
pub struct ServiceError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl ServiceError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

/// Errors a command handler can return: a rule violation, or a failure of a service it asked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl CommandError {
    pub fn rule(code: &'static str, message: impl fmt::Display) -> Self {
        CommandError::Rule(DomainError::new(code, message.to_string()))
    }
}
