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

/// Errors a command handler can return: a rule violation, or a failure of a service it asked
/// (e.g. reading another aggregate), which is not the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("service failure: {0}")]
    Service(String),
}

impl CommandError {
    pub fn rule(code: &'static str, message: impl fmt::Display) -> Self {
        CommandError::Rule(DomainError::new(code, message.to_string()))
    }
}
