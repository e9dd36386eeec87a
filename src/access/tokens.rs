//! Local bearer tokens (access.md): one named principal each, for the embedded default and
//! for systems. Only the SHA-256 of a token is stored (a token is 256 random bits: a fast hash
//! cannot be searched); the token itself is shown once, when created.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AccessError, Role};
use crate::store::format_instant;
use crate::store::sql::{json_array, Db, Ty, Val};

/// How long an authenticated token is believed without asking the database again: a token
/// revoked by `token revoke` (another process) stops working within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Every token starts with this, so that leaked ones are recognisable (secret scanners).
const PREFIX: &str = "kl_";

/// A stored token, as `token list` shows it (never the token).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    name: String,
    roles: Vec<Role>,
    expires_at: Option<DateTime<Utc>>,
}

pub struct TokenStore {
    db: Db,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A token name is the actor of everything done with it: a plain identifier, never one of the
/// ledger's own actors.
pub fn check_name(name: &str) -> Result<(), AccessError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if !ok {
        return Err(AccessError::Invalid(
            "a token name is 1–64 characters: letters, digits, '.', '_', '-', '@', starting with a letter or digit"
                .into(),
        ));
    }
    if matches!(name, "system" | "anonymous") {
        return Err(AccessError::Invalid(format!(
            "{name:?} is reserved for the ledger itself"
        )));
    }
    Ok(())
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl TokenStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Creates a token and returns it (the only time it exists outside the client).
    pub async fn create(
        &self,
        name: &str,
        roles: &[Role],
        expires_days: Option<u32>,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<String, AccessError> {
        check_name(name)?;
        if roles.is_empty() {
            return Err(AccessError::Invalid("a token needs at least one role".into()));
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let expires_at = expires_days.map(|d| now + chrono::Duration::days(i64::from(d)));
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let mut tx = self.db.begin().await?;
        // A name is never reused, even after revocation: it stays one principal in the records.
        let taken = tx
            .fetch_int("SELECT count(*) FROM access_tokens WHERE name = $1", &[Val::text(name)])
            .await?;
        if taken > 0 {
            return Err(AccessError::Conflict(format!(
                "a token named {name:?} exists or existed; choose another name"
            )));
        }
        let roles_param = tx.dialect().json_param(3);
        tx.execute(
            &format!(
                "INSERT INTO access_tokens (name, token_hash, roles, created_at, created_by, expires_at) \
                 VALUES ($1, $2, {roles_param}, $4, $5, $6)"
            ),
            &[
                Val::text(name),
                Val::text(hash(&token)),
                json_array(&names),
                Val::Instant(Some(now)),
                Val::text(created_by),
                Val::Instant(expires_at),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    pub async fn list(&self) -> Result<Vec<TokenInfo>, AccessError> {
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT name, {}, created_at, created_by, expires_at, revoked_at FROM access_tokens ORDER BY name",
                    self.db.dialect().json_text("roles")
                ),
                &[],
                &[Ty::Text, Ty::Text, Ty::Instant, Ty::Text, Ty::Instant, Ty::Instant],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TokenInfo {
                name: r[0].as_text().unwrap_or_default().to_owned(),
                roles: serde_json::from_str(r[1].as_text().unwrap_or("[]")).unwrap_or_default(),
                created_at: r[2].as_instant().map(|t| format_instant(&t)).unwrap_or_default(),
                created_by: r[3].as_text().unwrap_or_default().to_owned(),
                expires_at: r[4].as_instant().map(|t| format_instant(&t)),
                revoked_at: r[5].as_instant().map(|t| format_instant(&t)),
            })
            .collect())
    }

    /// Revokes a token by name.
    pub async fn revoke(&self, name: &str, now: DateTime<Utc>) -> Result<(), AccessError> {
        let n = self
            .db
            .execute(
                "UPDATE access_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[Val::text(name), Val::Instant(Some(now))],
            )
            .await?;
        if n == 0 {
            return Err(AccessError::NotFound(format!("no active token named {name:?}")));
        }
        self.cache.lock().expect("cache lock").clear();
        Ok(())
    }

    /// The principal a token stands for, or why it does not authenticate.
    pub async fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<(String, Vec<Role>), AccessError> {
        if !token.starts_with(PREFIX) || token.len() > 128 {
            return Err(AccessError::Unauthenticated("not a token of this ledger".into()));
        }
        let key = hash(token);
        let cached = self.cache.lock().expect("cache lock").get(&key).cloned();
        let entry = match cached.filter(|c| c.at.elapsed() < CACHE_TTL) {
            Some(c) => c,
            None => {
                let Some(c) = self.load(&key).await? else {
                    self.cache.lock().expect("cache lock").remove(&key);
                    return Err(AccessError::Unauthenticated("unknown or revoked token".into()));
                };
                let mut cache = self.cache.lock().expect("cache lock");
                // Bounded: a flood of distinct tokens must not grow memory.
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(key, c.clone());
                c
            }
        };
        if entry.expires_at.is_some_and(|e| e <= now) {
            return Err(AccessError::Unauthenticated("the token has expired".into()));
        }
        Ok((entry.name, entry.roles))
    }

    async fn load(&self, key: &str) -> Result<Option<Cached>, AccessError> {
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT name, {}, expires_at FROM access_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
                    self.db.dialect().json_text("roles")
                ),
                &[Val::text(key)],
                &[Ty::Text, Ty::Text, Ty::Instant],
            )
            .await?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let names: Vec<String> = serde_json::from_str(r[1].as_text().unwrap_or("[]"))
            .map_err(|e| AccessError::Store(crate::store::corrupt(format!("token roles: {e}"))))?;
        // A role the table no longer knows grants nothing (a downgrade must not lock out).
        let roles = names.iter().filter_map(|n| Role::parse(n).ok()).collect();
        Ok(Some(Cached {
            at: Instant::now(),
            name: r[0].as_text().unwrap_or_default().to_owned(),
            roles,
            expires_at: r[2].as_instant(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_identifiers() {
        for ok in ["premium-system", "clerk.tanaka", "a", "feed@kokuho"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "system",
            "anonymous",
            "os:root@host",
            "has space",
            "-lead",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
