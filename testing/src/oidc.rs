//! An OpenID Connect issuer inside the test suite: a discovery document and a JWKS served on
//! a free local port, with an Ed25519 key the test generates, and JWTs signed by it (or by
//! another key, or tampered with) for the checks of access.md.

use std::net::SocketAddr;

use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub struct TestIssuer {
    /// `http://127.0.0.1:PORT` — the `iss` of its tokens.
    pub issuer: String,
    pub key: SigningKey,
    pub kid: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn jwk(key: &SigningKey, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())})
}

impl TestIssuer {
    pub async fn start() -> Self {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let kid = "test-key-1".to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
        });
        let keys = json!({"keys": [jwk(&key, &kid)]});
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(keys) }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            issuer,
            key,
            kid,
            server,
        }
    }

    /// Claims of a valid token for `sub` with `groups`, for audience `aud`, valid 10 minutes.
    pub fn claims(&self, sub: &str, groups: &[&str], aud: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.issuer, "sub": sub, "aud": aud, "groups": groups, "iat": now, "exp": now + 600})
    }

    /// Signs `claims` with this issuer's key.
    pub fn sign(&self, claims: &Value) -> String {
        sign_with(&self.key, &self.kid, claims)
    }
}

/// Signs `claims` (EdDSA) with `key` under key id `kid`.
pub fn sign_with(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}
