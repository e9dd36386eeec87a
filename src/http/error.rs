use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::LedgerError;

/// Every error the API answers with: a status, a stable code, a human message, and headers
/// some statuses carry (`Retry-After` on 503).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// The storage cannot serve for now: 503 with what is wrong, so that clients retry and
    /// operators know where to look; the details go to the log.
    pub fn unavailable(err: &crate::store::StoreError) -> Self {
        use crate::store::Unavailable;
        tracing::warn!(error = %err, "storage unavailable");
        match err.unavailable() {
            Some(Unavailable::Storage) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the database refuses writes for now (disk full or read-only); reads go on; retry later",
            )
            .with_header("retry-after", "5"),
            _ => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database does not answer for now; retry",
            )
            .with_header("retry-after", "1"),
        }
    }
    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; the request id identifies it in the server log",
        )
    }
}

impl From<crate::domain::InputError> for ApiError {
    fn from(e: crate::domain::InputError) -> Self {
        Self::bad_request(e.code, e.message)
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Input(i) => Self::bad_request(i.code, i.message),
            LedgerError::Rule(r) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, r.code, r.message),
            LedgerError::NotFound { code, message } => Self::new(StatusCode::NOT_FOUND, code, message),
            LedgerError::Gone { code, message } => Self::new(StatusCode::GONE, code, message),
            LedgerError::Conflict { expected, actual } => Self::new(
                StatusCode::CONFLICT,
                "sequence_conflict",
                format!("expected sequence {expected}, but the stream is at {actual}"),
            ),
            LedgerError::ConflictPersisted => Self::new(
                StatusCode::CONFLICT,
                "sequence_conflict",
                "other writers kept changing this stream; retry",
            ),
            LedgerError::Lagging(l) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "projection_lagging", l.to_string())
                .with_header("retry-after", "1"),
            LedgerError::Store(err) if err.unavailable().is_some() => Self::unavailable(&err),
            // Logged once here, at the boundary; the client gets no internals.
            LedgerError::Store(err) => {
                tracing::error!(error = %err, "storage failure");
                Self::internal()
            }
            LedgerError::Service(err) => {
                tracing::error!(error = %err, "service failure");
                Self::internal()
            }
            LedgerError::Internal(err) => {
                tracing::error!(error = %err, "internal failure");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        for (name, value) in self.headers {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                res.headers_mut().insert(name, v);
            }
        }
        res
    }
}
