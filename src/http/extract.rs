//! The door's parsing: query parameters, read options, request metadata, JSON bodies and path
//! identifiers become typed values here, and whatever is malformed is answered 400 before the
//! application sees it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::guard::Caller;
use super::ApiError;
use crate::domain::input::parse_date;
use crate::reads::{Consistency, Read};
use crate::request::RequestContext;
use crate::vault::Vault;

/// The query string as name/value pairs, taken one by one by the handler; whatever is left
/// unknown is refused (a misspelt parameter must not be silently ignored).
pub struct Params {
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|_| ApiError::bad_request("invalid_query", "the query string could not be decoded"))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("query parameter {name} is given more than once"),
                ));
            }
        }
        Ok(Self {
            pairs,
            known: Vec::new(),
        })
    }
}

impl Params {
    /// Parameters given as pairs (a page re-reading some of its own).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self {
            pairs,
            known: Vec::new(),
        }
    }

    /// Takes parameter `name` (it is known to this endpoint from now on).
    pub fn take(&mut self, name: &'static str) -> Option<String> {
        self.known.push(name);
        let i = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.swap_remove(i).1)
    }

    /// An integer parameter in `min..=max`; without `default`, required.
    pub fn int(
        &mut self,
        name: &'static str,
        default: Option<i64>,
        min: i64,
        max: i64,
        code: &'static str,
    ) -> Result<i64, ApiError> {
        match self.take(name) {
            None => default.ok_or_else(|| ApiError::bad_request(code, format!("{name} is required"))),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ApiError::bad_request(code, format!("{name} must be an integer from {min} to {max}"))),
        }
    }

    /// A `YYYY-MM-DD` parameter.
    pub fn date(&mut self, name: &'static str, code: &'static str) -> Result<Option<NaiveDate>, ApiError> {
        self.take(name)
            .map(|d| parse_date(name, &d).map_err(|e| ApiError::bad_request(code, e.message)))
            .transpose()
    }

    /// The read options of api.md "Consistency of reads": `as_of`, `min_position` (or
    /// `X-Min-Position`), `consistency` (or `X-Consistency`).
    pub fn read(&mut self, headers: &HeaderMap) -> Result<Read, ApiError> {
        let as_of = self.take("as_of").map(|s| as_of(&s)).transpose()?;
        // The query parameter wins over its header, but a malformed header is refused all the
        // same: nothing the client sent is silently ignored.
        let position = |v: String| {
            v.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_min_position",
                    "min_position must be a log position (an integer ≥ 0)",
                )
            })
        };
        let header_position = header_text(headers, "x-min-position", "invalid_min_position")?
            .map(position)
            .transpose()?;
        let min_position = self.take("min_position").map(position).transpose()?.or(header_position);
        let consistency = |v: String| match v.as_str() {
            "consistent" => Ok(Consistency::Consistent),
            "eventual" => Ok(Consistency::Eventual),
            _ => Err(ApiError::bad_request(
                "invalid_consistency",
                "consistency must be consistent or eventual",
            )),
        };
        let header_consistency = header_text(headers, "x-consistency", "invalid_consistency")?
            .map(consistency)
            .transpose()?;
        let consistency = self
            .take("consistency")
            .map(consistency)
            .transpose()?
            .or(header_consistency)
            .unwrap_or(Consistency::Consistent);
        Ok(Read {
            as_of,
            min_position,
            consistency,
        })
    }

    /// Refuses parameters the endpoint does not take.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => Err(ApiError::bad_request(
                "unknown_parameter",
                if self.known.is_empty() {
                    format!("unknown query parameter {name}: this endpoint takes none")
                } else {
                    format!(
                        "unknown query parameter {name}: this endpoint takes {}",
                        self.known.join(", ")
                    )
                },
            )),
        }
    }
}

/// A header's text; one that is not visible ASCII is refused with `code`, not taken as absent.
fn header_text(headers: &HeaderMap, name: &str, code: &'static str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request(code, format!("{name} must be visible ASCII")))
        })
        .transpose()
}

/// An RFC 3339 instant. A `+` of the offset that arrived as a space (an unencoded `+` in a
/// query string means a space) is read as the `+` it was. An instant past the year 9999 in UTC
/// (`9999-12-31T23:00:00-05:00`) is after every recorded event, as is the last microsecond of
/// 9999, which it becomes: the stores compare instants with four-digit years.
pub fn as_of(s: &str) -> Result<DateTime<Utc>, ApiError> {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    let last = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc());
    parse(s)
        .or_else(|e| match s.rfind(' ') {
            Some(i) if s[..i].contains('T') => parse(&format!("{}+{}", &s[..i], &s[i + 1..])),
            _ => Err(e),
        })
        .map(|t| last.map_or(t, |last| t.min(last)))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_as_of",
                "as_of must be an RFC 3339 instant, e.g. 2026-11-25T01:00:00Z or 2026-11-25T10:00:00%2B09:00",
            )
        })
}

fn header<'a>(headers: &'a HeaderMap, name: &str, code: &'static str, max: usize) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad_request(code, format!("{name} must be visible ASCII")))?;
            if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(ApiError::bad_request(
                    code,
                    format!("{name} must be 1 to {max} visible ASCII characters"),
                ));
            }
            Ok(Some(s))
        }
    }
}

/// The request context of a write: the caller's identity (the actor is the principal, never a
/// header), `Idempotency-Key` with its keyed fingerprint (the actor, path and body: the same
/// key from another principal or for another request is a conflict, and the body, which may
/// hold a My Number, is never hashed without the vault's key), and `If-Match`.
pub fn context(
    caller: &Caller,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    vault: &Vault,
) -> Result<RequestContext, ApiError> {
    let idempotency_key = header(headers, "idempotency-key", "invalid_idempotency_key", 255)?.map(str::to_owned);
    let if_match = header(headers, "if-match", "invalid_if_match", 32)?
        .map(if_match)
        .transpose()?;
    let fingerprint = idempotency_key
        .as_ref()
        .map(|_| vault.fingerprint(&[caller.principal.id.as_bytes(), path.as_bytes(), body]));
    Ok(RequestContext {
        idempotency_key,
        fingerprint,
        if_match,
        ..caller.context()
    })
}

/// `"N"`, `N` or weak `W/"N"`, with at most 18 digits (so that it is an i64).
fn if_match(v: &str) -> Result<i64, ApiError> {
    let v = v.strip_prefix("W/").unwrap_or(v);
    let digits = v.strip_prefix('"').and_then(|d| d.strip_suffix('"')).unwrap_or(v);
    Some(digits)
        .filter(|d| (1..=18).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_if_match",
                "If-Match must be a sequence number of at most 18 digits, e.g. \"3\"",
            )
        })
}

/// A request body read under the size limit and parsed as JSON.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<(Bytes, Value), ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body exceeds 1 MiB",
            )
        } else if super::serve::timed_out(&r) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive within the server's body timeout",
            )
        } else {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        }
    })?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    Ok((bytes, value))
}

/// Path parameters, percent-decoded.
pub fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|_| ApiError::bad_request("invalid_path", "the path could not be decoded"))
}
