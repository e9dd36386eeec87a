//! Staff console sessions (console.md): a signed-in principal behind a random cookie value,
//! ended by sign-out or after an idle period (離席時にはログアウト). Only the value's SHA-256 is
//! stored; each session carries its own CSRF token for the forms.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AccessError, Principal, Role, RoleTable, Source};
use crate::store::sql::{json_array, Db, Ty, Val};

/// Idle period after which a session ends (default 15 minutes, `KOKUHO_CONSOLE_IDLE_SECONDS`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(15 * 60);

/// How stale a session's last-seen time may get before a request writes it again.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(10);

/// A live session as the console uses it.
#[derive(Clone, Debug)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
}

/// Why a cookie does not open a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Unknown,
    SignedOut,
    Idle,
}

pub struct SessionStore {
    db: Db,
    idle: Duration,
}

/// A fresh random value (256 bits, URL-safe).
pub fn random_value() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Token => "token",
        Source::Oidc => "oidc",
        Source::Os => "os",
    }
}

fn parse_source(s: &str) -> Source {
    match s {
        "oidc" => Source::Oidc,
        "os" => Source::Os,
        _ => Source::Token,
    }
}

impl SessionStore {
    pub fn new(db: Db, idle: Duration) -> Self {
        Self { db, idle }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Opens a session for `principal`; returns the cookie value (the only time it exists
    /// outside the browser).
    pub async fn open(&self, principal: &Principal, terminal: &str, now: DateTime<Utc>) -> Result<String, AccessError> {
        let value = random_value();
        let roles = principal.role_names();
        let param = self.db.dialect().json_param(3);
        self.db
            .execute(
                &format!(
                    "INSERT INTO console_sessions (id_hash, principal, roles, source, csrf, terminal, created_at, last_seen_at) \
                     VALUES ($1, $2, {param}, $4, $5, $6, $7, $7)"
                ),
                &[
                    Val::text(hash(&value)),
                    Val::text(&principal.id),
                    json_array(&roles),
                    Val::text(source_name(principal.source)),
                    Val::text(random_value()),
                    Val::text(terminal),
                    Val::Instant(Some(now)),
                ],
            )
            .await?;
        Ok(value)
    }

    /// The session behind a cookie value, its idle clock restarted; or why there is none. A
    /// session idle too long is ended here, so it cannot come back.
    pub async fn touch(
        &self,
        value: &str,
        table: &RoleTable,
        now: DateTime<Utc>,
    ) -> Result<Result<Session, Closed>, AccessError> {
        if value.len() > 64 {
            return Ok(Err(Closed::Unknown));
        }
        let key = hash(value);
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT principal, {}, source, csrf, created_at, last_seen_at, ended_at FROM console_sessions WHERE id_hash = $1",
                    self.db.dialect().json_text("roles")
                ),
                &[Val::text(&key)],
                &[Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Instant, Ty::Instant, Ty::Instant],
            )
            .await?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(Err(Closed::Unknown));
        };
        if r[6].as_instant().is_some() {
            return Ok(Err(Closed::SignedOut));
        }
        let last_seen = r[5].as_instant().unwrap_or(now);
        let idle = chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        if now - last_seen >= idle {
            self.end(&key, now).await?;
            return Ok(Err(Closed::Idle));
        }
        // The idle clock restarts at most every TOUCH_EVERY: a page view is then one read,
        // not a read and a write (the idle period is honoured within that much).
        if now - last_seen >= TOUCH_EVERY {
            self.db
                .execute(
                    "UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND ended_at IS NULL",
                    &[Val::text(&key), Val::Instant(Some(now))],
                )
                .await?;
        }
        let names: Vec<String> = serde_json::from_str(r[1].as_text().unwrap_or("[]")).unwrap_or_default();
        let roles: Vec<Role> = names.iter().filter_map(|n| Role::parse(n).ok()).collect();
        let source = parse_source(r[2].as_text().unwrap_or_default());
        Ok(Ok(Session {
            principal: Principal::new(r[0].as_text().unwrap_or_default().to_owned(), roles, table, source),
            csrf: r[3].as_text().unwrap_or_default().to_owned(),
            created_at: r[4].as_instant().unwrap_or(now),
        }))
    }

    /// Ends the session behind a cookie value (sign-out).
    pub async fn sign_out(&self, value: &str, now: DateTime<Utc>) -> Result<(), AccessError> {
        self.end(&hash(value), now).await
    }

    async fn end(&self, key: &str, now: DateTime<Utc>) -> Result<(), AccessError> {
        self.db
            .execute(
                "UPDATE console_sessions SET ended_at = $2 WHERE id_hash = $1 AND ended_at IS NULL",
                &[Val::text(key), Val::Instant(Some(now))],
            )
            .await?;
        Ok(())
    }

    /// Remembers an OpenID Connect sign-in in flight (its state, PKCE verifier and nonce).
    pub async fn begin_sign_in(
        &self,
        state: &str,
        verifier: &str,
        nonce: &str,
        next: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AccessError> {
        self.db
            .execute(
                "INSERT INTO console_sign_ins (state_hash, pkce_verifier, nonce, next, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Val::text(hash(state)),
                    Val::text(verifier),
                    Val::text(nonce),
                    Val::text(next),
                    Val::Instant(Some(now)),
                ],
            )
            .await?;
        Ok(())
    }

    /// Takes a sign-in in flight by its state, once; one older than 10 minutes is gone.
    /// Returns (PKCE verifier, nonce, next).
    pub async fn take_sign_in(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, String, String)>, AccessError> {
        let key = hash(state);
        let mut tx = self.db.begin().await?;
        let rows = tx
            .fetch(
                &format!(
                    "SELECT pkce_verifier, nonce, next, created_at FROM console_sign_ins WHERE state_hash = $1{}",
                    tx.dialect().for_update()
                ),
                &[Val::text(&key)],
                &[Ty::Text, Ty::Text, Ty::Text, Ty::Instant],
            )
            .await?;
        tx.execute("DELETE FROM console_sign_ins WHERE state_hash = $1", &[Val::text(&key)])
            .await?;
        // Abandoned sign-ins do not accumulate.
        tx.execute(
            "DELETE FROM console_sign_ins WHERE created_at < $1",
            &[Val::Instant(Some(now - chrono::Duration::minutes(10)))],
        )
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().next().and_then(|r| {
            let fresh = r[3]
                .as_instant()
                .is_some_and(|t| now - t < chrono::Duration::minutes(10));
            fresh.then(|| {
                (
                    r[0].as_text().unwrap_or_default().to_owned(),
                    r[1].as_text().unwrap_or_default().to_owned(),
                    r[2].as_text().unwrap_or_default().to_owned(),
                )
            })
        }))
    }
}

/// Constant-time comparison of a submitted CSRF token with the session's.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && !a.is_empty() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_comparison() {
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("abc", "ab"));
        assert!(!csrf_matches("", ""));
    }
}
