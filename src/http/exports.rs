//! The HTTP forms of the exports (role `exporter`): the audit export as JSON Lines and one
//! feed CSV file, each sent with its SHA-256 and leaving the send ledger in its access record.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::Params;
use super::guard::Touched;
use super::routes::Route;
use super::{ApiError, AppState};
use crate::access::{AccessKind, Permission};
use crate::feed::export::Encoding;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/v1/exports/audit",
            &[Permission::Export],
            AccessKind::Export,
            || get(audit),
        ),
        Route::new(
            Method::GET,
            "/v1/exports/feed",
            &[Permission::Export],
            AccessKind::Export,
            || get(feed),
        ),
    ]
}

fn failed(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "export failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "export_failed",
        "the export could not be written; the request id identifies it in the server log",
    )
}

/// A written file as the response body, with its digest; the file is read into memory once
/// (exports are bounded by `limit`, and the audit export by the log) and removed with its
/// directory when this returns.
async fn send(
    path: &std::path::Path,
    content_type: &'static str,
    sha256: &str,
    extra: &[(&'static str, String)],
) -> Result<Response, ApiError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| failed(e.into()))?;
    let mut res = (StatusCode::OK, Body::from(bytes)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(sha256) {
        h.insert("x-content-sha256", v);
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    Ok(res)
}

/// `GET /v1/exports/audit`: everything chained, as `audit export` writes it.
async fn audit(State(s): State<AppState>, params: Params) -> Result<Response, ApiError> {
    params.finish()?;
    let store = s.ledger.store();
    let latest = crate::audit::store::latest_checkpoint(store.db())
        .await
        .map_err(crate::error::LedgerError::from)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_checkpoint",
                "nothing is chained and signed yet: there is nothing to export",
            )
        })?;
    let dir = tempfile::tempdir().map_err(|e| failed(e.into()))?;
    let out = dir.path().join("audit.jsonl");
    let (_, sent) = crate::exports::audit(store, &out, &latest.signed.checkpoint.origin, &latest.public_key)
        .await
        .map_err(failed)?;
    let sha = sent.export["files"][0]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let res = send(&out, "application/jsonl", &sha, &[]).await?;
    Ok(Touched {
        persons: sent.persons,
        my_number: false,
        export: Some(sent.export),
        recorded: None,
    }
    .on(res))
}

/// `GET /v1/exports/feed?after=&file=individual|household[&limit=][&encoding=][&replace_unmappable=]`:
/// one of the two CSV files of feed.md; `X-Last-Position` is the next `after`. The same
/// `after` and `limit` give the other file of the same range.
async fn feed(State(s): State<AppState>, mut params: Params) -> Result<Response, ApiError> {
    let after = params.int("after", Some(0), 0, crate::exports::MAX_AFTER, "invalid_after")?;
    let limit = params.int("limit", Some(100_000), 1, 1_000_000, "invalid_limit")?;
    let file = params.take("file").unwrap_or_default();
    if !matches!(file.as_str(), "individual" | "household") {
        return Err(ApiError::bad_request(
            "invalid_file",
            "file must be individual or household",
        ));
    }
    let encoding = match params.take("encoding") {
        None => Encoding::Utf8,
        Some(e) => Encoding::parse(&e)
            .ok_or_else(|| ApiError::bad_request("invalid_encoding", "encoding must be utf-8 or shift_jis"))?,
    };
    let replace = match params.take("replace_unmappable").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_replace_unmappable",
                "replace_unmappable must be true or false",
            ))
        }
    };
    params.finish()?;
    let dir = tempfile::tempdir().map_err(|e| failed(e.into()))?;
    let out = dir.path().join("feed");
    let (exported, mut sent) =
        crate::exports::feed(s.ledger.store(), after, Some(limit as usize), &out, encoding, replace)
            .await
            .map_err(|e| {
                // An unmappable character names its record and field (feed.md): the client's to fix.
                if e.downcast_ref::<crate::feed::export::UnmappableError>().is_some() {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unmappable_character", e.to_string())
                } else {
                    failed(e)
                }
            })?;
    let (path, index) = if file == "household" {
        (&exported.household_file, 0)
    } else {
        (&exported.individual_file, 1)
    };
    // The record lists the file that was sent, not its sibling that stays on the server.
    let entry = sent.export["files"][index].clone();
    sent.export["files"] = serde_json::json!([entry]);
    let sha = entry["sha256"].as_str().unwrap_or_default().to_owned();
    let content_type = match encoding {
        Encoding::Utf8 => "text/csv; charset=utf-8",
        Encoding::ShiftJis => "text/csv; charset=Shift_JIS",
    };
    let res = send(
        path,
        content_type,
        &sha,
        &[
            ("x-last-position", exported.last_position.to_string()),
            ("x-records", exported.records.to_string()),
        ],
    )
    .await?;
    Ok(Touched {
        persons: sent.persons,
        my_number: false,
        export: Some(sent.export),
        recorded: None,
    }
    .on(res))
}
