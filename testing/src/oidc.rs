//! An OpenID Connect issuer inside the test suite: a discovery document and a JWKS served on
//! a free local port, with an Ed25519 key the test generates, and JWTs signed by it (or by
//! another key, or tampered with) for the checks of access.md. It also signs staff in
//! (authorization code + PKCE): `/authorize` approves the staff member the test named at once,
//! and `/token` checks the client, the redirect URI and the PKCE verifier before it issues an
//! ID token with the sign-in's nonce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};

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
    logins: Arc<Mutex<Logins>>,
    server: tokio::task::JoinHandle<()>,
}

/// The sign-in side: who `/authorize` approves, and the codes it handed out.
#[derive(Default)]
struct Logins {
    /// The staff member (sub, groups) the next authorization approves.
    staff: Option<(String, Vec<String>)>,
    /// The client id and secret the token endpoint accepts.
    client: (String, String),
    /// Issue ID tokens with a nonce other than the one asked for.
    wrong_nonce: bool,
    codes: HashMap<String, Grant>,
    /// Token requests refused (a wrong verifier, client or redirect).
    pub refused: usize,
}

struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    sub: String,
    groups: Vec<String>,
}

#[derive(Clone)]
struct IssuerState {
    issuer: String,
    key: SigningKey,
    kid: String,
    logins: Arc<Mutex<Logins>>,
}

async fn authorize(State(s): State<IssuerState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut logins = s.logins.lock().unwrap();
    let Some((sub, groups)) = logins.staff.clone() else {
        return (StatusCode::FORBIDDEN, "no staff member signs in").into_response();
    };
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("client_id") == Some(&logins.client.0)
        && q.get("scope").is_some_and(|s| s.split(' ').any(|x| x == "openid"));
    let (Some(challenge), Some(state), Some(redirect), Some(nonce)) = (
        q.get("code_challenge"),
        q.get("state"),
        q.get("redirect_uri"),
        q.get("nonce"),
    ) else {
        return (StatusCode::BAD_REQUEST, "incomplete authorization request").into_response();
    };
    if !ok {
        return (StatusCode::BAD_REQUEST, "not an OpenID Connect code + PKCE request").into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    logins.codes.insert(
        code.clone(),
        Grant {
            challenge: challenge.clone(),
            nonce: nonce.clone(),
            redirect_uri: redirect.clone(),
            sub,
            groups,
        },
    );
    let to = format!(
        "{redirect}?{}",
        serde_urlencoded::to_string([("code", code.as_str()), ("state", state.as_str())]).unwrap()
    );
    Redirect::to(&to).into_response()
}

async fn token(State(s): State<IssuerState>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let mut logins = s.logins.lock().unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", logins.client.0, logins.client.1))
    );
    let client_ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(basic.as_str());
    let grant = form.get("code").and_then(|c| logins.codes.remove(c));
    let verified = grant.as_ref().is_some_and(|g| {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == g.challenge
            && form.get("redirect_uri") == Some(&g.redirect_uri)
            && form.get("grant_type").map(String::as_str) == Some("authorization_code")
    });
    let (Some(g), true, true) = (grant, client_ok, verified) else {
        logins.refused += 1;
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))).into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let nonce = if logins.wrong_nonce {
        "another".to_owned()
    } else {
        g.nonce
    };
    let claims = json!({"iss": s.issuer, "sub": g.sub, "aud": logins.client.0, "groups": g.groups,
                        "nonce": nonce, "iat": now, "exp": now + 600});
    let id_token = sign_with(&s.key, &s.kid, &claims);
    axum::Json(json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 600, "id_token": id_token}))
        .into_response()
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
        let logins = Arc::new(Mutex::new(Logins::default()));
        let state = IssuerState {
            issuer: issuer.clone(),
            key: key.clone(),
            kid: kid.clone(),
            logins: logins.clone(),
        };
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(keys) }))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            issuer,
            key,
            kid,
            logins,
            server,
        }
    }

    /// The console's client registration: the client id and secret the token endpoint takes.
    pub fn register_client(&self, id: &str, secret: &str) {
        self.logins.lock().unwrap().client = (id.to_owned(), secret.to_owned());
    }

    /// The staff member the next sign-ins approve.
    pub fn sign_in_as(&self, sub: &str, groups: &[&str]) {
        self.logins.lock().unwrap().staff = Some((sub.to_owned(), groups.iter().map(|g| (*g).to_owned()).collect()));
    }

    /// Issue ID tokens whose nonce is not the sign-in's (a replayed or injected token).
    pub fn use_wrong_nonce(&self, wrong: bool) {
        self.logins.lock().unwrap().wrong_nonce = wrong;
    }

    /// Token requests refused so far.
    pub fn refused(&self) -> usize {
        self.logins.lock().unwrap().refused
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
