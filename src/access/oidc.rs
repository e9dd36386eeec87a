//! Staff identity from the municipality's OpenID Connect provider: bearer JWTs checked against
//! the issuer's published keys (discovery document → JWKS, cached), with `iss`, `aud`, `exp`
//! (and `nbf` when present). The staff id is a configured claim (`sub` by default); roles come
//! from a configured claim (`groups` by default) mapped through the role map. Signature
//! checking is `jsonwebtoken`'s; nothing here parses a JWT by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::RwLock;

use super::{AccessError, Role};

/// How the ledger trusts the identity provider (from the environment, `KOKUHO_OIDC_*`).
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The issuer URL exactly as the tokens' `iss` names it.
    pub issuer: String,
    /// The `aud` the API's tokens must carry (default: the client id).
    pub audience: String,
    /// The console's client id and secret (authorization code + PKCE).
    pub client_id: String,
    pub client_secret: Option<crate::settings::Secret>,
    /// The claim naming the staff member (default `sub`).
    pub user_claim: String,
    /// The claim listing the staff member's groups (default `groups`).
    pub roles_claim: String,
    /// Group → role; a group that is already a role name maps to itself when not listed.
    pub role_map: BTreeMap<String, Role>,
}

impl OidcConfig {
    /// Parses `group=role,group=role`.
    pub fn parse_role_map(text: &str) -> Result<BTreeMap<String, Role>, AccessError> {
        let mut map = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (group, role) = pair
                .split_once('=')
                .ok_or_else(|| AccessError::Invalid(format!("role map entry {pair:?}: expected group=role")))?;
            map.insert(group.trim().to_owned(), Role::parse(role.trim())?);
        }
        Ok(map)
    }

    fn roles_of(&self, claim: Option<&Value>) -> Vec<Role> {
        let groups: Vec<&str> = match claim {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        groups
            .into_iter()
            .filter_map(|g| self.role_map.get(g).copied().or_else(|| Role::parse(g).ok()))
            .collect()
    }
}

/// The provider's endpoints from its discovery document.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

struct Keys {
    discovery: Discovery,
    set: JwkSet,
    fetched: Instant,
}

/// A verified staff member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staff {
    pub id: String,
    pub roles: Vec<Role>,
}

/// Keys are fetched again after this, and at most this often when a token names a key id
/// the cache does not hold (a rotated key).
const KEYS_TTL: Duration = Duration::from_secs(600);
const REFETCH_GAP: Duration = Duration::from_secs(30);

/// Signature algorithms accepted: asymmetric only (an `HS*` token would be verified with a
/// public key as its secret; `none` is not an algorithm the parser knows).
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub struct OidcVerifier {
    pub config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
}

fn unauthenticated(reason: impl Into<String>) -> AccessError {
    AccessError::Unauthenticated(reason.into())
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with default TLS roots");
        Self {
            config,
            http,
            keys: RwLock::new(None),
        }
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, AccessError> {
        let unavailable = |e: reqwest::Error| AccessError::Unavailable(format!("identity provider {url}: {e}"));
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json::<T>()
            .await
            .map_err(unavailable)
    }

    async fn refresh(&self) -> Result<(), AccessError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.fetch_json(&url).await?;
        if discovery.issuer != self.config.issuer {
            return Err(AccessError::Unavailable(format!(
                "the discovery document names issuer {:?}, not the configured one",
                discovery.issuer
            )));
        }
        let set: JwkSet = self.fetch_json(&discovery.jwks_uri).await?;
        *self.keys.write().await = Some(Keys {
            discovery,
            set,
            fetched: Instant::now(),
        });
        Ok(())
    }

    /// The provider's endpoints (the console signs staff in through them).
    pub async fn discovery(&self) -> Result<Discovery, AccessError> {
        if self.keys.read().await.is_none() {
            self.refresh().await?;
        }
        let keys = self.keys.read().await;
        Ok(keys.as_ref().expect("fetched above").discovery.clone())
    }

    async fn key(&self, kid: Option<&str>) -> Result<Jwk, AccessError> {
        let find = |keys: &Option<Keys>| -> Option<(Option<Jwk>, Instant)> {
            keys.as_ref().map(|k| {
                let jwk = match kid {
                    Some(kid) => k.set.find(kid).cloned(),
                    // Without a key id the set must hold exactly one key.
                    None if k.set.keys.len() == 1 => k.set.keys.first().cloned(),
                    None => None,
                };
                (jwk, k.fetched)
            })
        };
        let found = find(&*self.keys.read().await);
        match found {
            Some((Some(jwk), fetched)) if fetched.elapsed() < KEYS_TTL => return Ok(jwk),
            Some((None, fetched)) if fetched.elapsed() < REFETCH_GAP => {
                return Err(unauthenticated("the token's key is not among the issuer's keys"))
            }
            _ => {}
        }
        self.refresh().await?;
        find(&*self.keys.read().await)
            .and_then(|(jwk, _)| jwk)
            .ok_or_else(|| unauthenticated("the token's key is not among the issuer's keys"))
    }

    /// Verifies a bearer JWT and returns the staff member it names.
    pub async fn verify(&self, token: &str) -> Result<Staff, AccessError> {
        let claims = self.claims(token, &self.config.audience).await?;
        self.staff(&claims)
    }

    /// Verifies the ID token of a console sign-in: issued to the console's client id, with
    /// the nonce of the sign-in that asked for it.
    pub async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Staff, AccessError> {
        let claims = self.claims(token, &self.config.client_id).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(unauthenticated("the ID token's nonce is not the sign-in's"));
        }
        self.staff(&claims)
    }

    async fn claims(&self, token: &str, audience: &str) -> Result<BTreeMap<String, Value>, AccessError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| unauthenticated(format!("malformed JWT: {e}")))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(unauthenticated(format!(
                "JWT algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| unauthenticated(format!("unusable issuer key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<BTreeMap<String, Value>>(token, &key, &validation)
            .map_err(|e| unauthenticated(format!("JWT refused: {e}")))?;
        Ok(data.claims)
    }

    fn staff(&self, claims: &BTreeMap<String, Value>) -> Result<Staff, AccessError> {
        let id = claims
            .get(&self.config.user_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| unauthenticated(format!("the JWT has no {} claim", self.config.user_claim)))?;
        if matches!(id, "system" | "anonymous") || id.starts_with("os:") {
            return Err(unauthenticated("the JWT names one of the ledger's own actors"));
        }
        Ok(Staff {
            id: id.to_owned(),
            roles: self.config.roles_of(claims.get(&self.config.roles_claim)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_map_and_claims() {
        let map = OidcConfig::parse_role_map("kokuho-clerks=clerk, it-audit=auditor").unwrap();
        assert!(OidcConfig::parse_role_map("x=boss").is_err());
        assert!(OidcConfig::parse_role_map("nonsense").is_err());
        let c = OidcConfig {
            issuer: "https://idp".into(),
            audience: "kokuho".into(),
            client_id: "kokuho".into(),
            client_secret: None,
            user_claim: "sub".into(),
            roles_claim: "groups".into(),
            role_map: map,
        };
        let roles = c.roles_of(Some(&serde_json::json!(["kokuho-clerks", "my_number", "all-staff"])));
        assert_eq!(roles, [Role::Clerk, Role::MyNumber]);
        assert_eq!(
            c.roles_of(Some(&serde_json::json!("it-audit inquiry"))),
            [Role::Auditor, Role::Inquiry]
        );
        assert!(c.roles_of(None).is_empty());
    }
}
