//! Sign-in and sign-out (console.md, access.md): a local sign-in with a token on deployments
//! without an identity provider, OpenID Connect (authorization code + PKCE, the `oauth2`
//! crate; the ID token checked like the API's JWTs) where one is configured. Each sign-in,
//! accepted or refused, is an access record of kind `sign_in`; sign-out one of `sign_out`.

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::{render, ConsoleError, PageResult};
use crate::access::sessions::{csrf_matches, random_value};
use crate::access::{AccessError, AccessKind, AccessRecord, Principal, Source};
use crate::http::extract::Params;
use crate::http::guard::{cookie, secure, session_cookie_name, Caller, Origin};
use crate::http::{ApiError, AppState};

/// The sign-in form's own CSRF cookie (there is no session yet to bind a token to).
const SIGN_IN_COOKIE: &str = "kokuho_sign_in";

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    next: String,
    csrf: String,
    notice: &'static str,
    error: &'static str,
    oidc: bool,
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') && n.len() <= 300)
        .unwrap_or("/console/search")
        .to_owned()
}

fn cookie_header(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are URL-safe base64")
}

fn sign_in_form(s: &AppState, next: String, notice: &'static str, error: &'static str, status: StatusCode) -> Response {
    let csrf = random_value();
    let mut res = render(&SignInPage {
        next,
        csrf: csrf.clone(),
        notice,
        error,
        oidc: s.access.oidc.is_some(),
    });
    *res.status_mut() = status;
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SIGN_IN_COOKIE, &csrf, Some(1800), secure(s)),
    );
    res
}

/// `GET /console/sign-in[?next=&reason=]`.
pub async fn sign_in_page(State(s): State<AppState>, mut params: Params) -> PageResult {
    let next = safe_next(params.take("next").as_deref());
    let notice = match params.take("reason").as_deref() {
        Some("idle") => "一定時間操作がなかったため、サインアウトしました。もう一度サインインしてください。",
        Some("signed_out") => "サインアウトしました。",
        _ => "",
    };
    params.finish()?;
    Ok(sign_in_form(&s, next, notice, "", StatusCode::OK))
}

/// Writes a `sign_in` record (the sign-in routes are open, so the guard does not).
async fn record_sign_in(
    s: &AppState,
    origin: &Origin,
    principal: Option<&Principal>,
    outcome: StatusCode,
) -> Result<(), ConsoleError> {
    let mut r = AccessRecord::new(
        s.ledger.clock().now(),
        principal.map_or("anonymous", |p| p.id.as_str()),
        AccessKind::SignIn,
        "サインイン",
    );
    r.roles = principal.map(Principal::role_names).unwrap_or_default();
    r.terminal = origin.terminal.clone();
    r.request_id = origin.request_id.clone();
    r.path = Some("/console/sign-in".into());
    r.outcome = outcome.as_u16();
    s.access
        .recorder
        .record(r)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "sign-in record not written");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "access_log_unavailable",
                "the access log cannot be written",
            )
            .into()
        })
        .map(|_| ())
}

/// Opens a session and sends the browser on.
async fn open_session(s: &AppState, origin: &Origin, principal: &Principal, next: &str) -> PageResult {
    let value = s
        .access
        .sessions
        .open(principal, &origin.terminal, s.ledger.clock().now())
        .await?;
    record_sign_in(s, origin, Some(principal), StatusCode::SEE_OTHER).await?;
    tracing::info!(principal = %principal.id, request_id = %origin.request_id, "console sign-in");
    let mut res = Redirect::to(next).into_response();
    let secure = secure(s);
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(session_cookie_name(secure), &value, None, secure),
    );
    res.headers_mut()
        .append(header::SET_COOKIE, cookie_header(SIGN_IN_COOKIE, "", Some(0), secure));
    Ok(res)
}

/// `POST /console/sign-in`: the local sign-in with a token (`kokuho-ledger token create`).
pub async fn sign_in_local(
    State(s): State<AppState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| ApiError::bad_request("invalid_form", "the form could not be decoded"))?;
    let next = safe_next(form.get("next").map(String::as_str));
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if !csrf_matches(expected, form.get("csrf").map(String::as_str).unwrap_or_default()) {
        return Ok(sign_in_form(
            &s,
            next,
            "",
            "画面の有効期限が切れました。もう一度サインインしてください。",
            // A stale or forged form: refused like any malformed request.
            StatusCode::BAD_REQUEST,
        ));
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let refused = |s: &AppState, next: String| {
        sign_in_form(
            s,
            next,
            "",
            "トークンが正しくないか、有効期限が切れています。",
            StatusCode::UNAUTHORIZED,
        )
    };
    match s.access.authenticate(token, s.ledger.clock().now()).await {
        Ok(principal) => open_session(&s, &origin, &principal, &next).await,
        Err(AccessError::Unavailable(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_provider_unavailable",
            "the identity provider cannot be reached",
        )
        .into()),
        Err(e) => {
            tracing::info!(reason = %e, request_id = %origin.request_id, "console sign-in refused");
            record_sign_in(&s, &origin, None, StatusCode::UNAUTHORIZED).await?;
            Ok(refused(&s, next))
        }
    }
}

/// `POST /console/sign-out`.
pub async fn sign_out(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> PageResult {
    super::form(&caller, &body)?;
    let secure = secure(&s);
    if let Some(session) = &caller.session {
        s.access
            .sessions
            .sign_out(&session.cookie, s.ledger.clock().now())
            .await?;
    }
    let mut res = Redirect::to("/console/sign-in?reason=signed_out").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(session_cookie_name(secure), "", Some(0), secure),
    );
    Ok(res)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct IdTokenFields {
    id_token: String,
}
impl oauth2::ExtraTokenFields for IdTokenFields {}

type OidcClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenFields, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn unavailable(what: impl std::fmt::Display) -> ConsoleError {
    tracing::warn!(error = %what, "OpenID Connect sign-in failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "identity_provider_unavailable",
        "the identity provider cannot be reached",
    )
    .into()
}

/// The OAuth client of the console from the discovery document.
async fn client(s: &AppState, headers: &HeaderMap) -> Result<OidcClient, ConsoleError> {
    let oidc = s.access.oidc.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "oidc_not_configured",
            "no identity provider is configured",
        )
    })?;
    let d = oidc.discovery().await?;
    let (Some(auth), Some(token)) = (d.authorization_endpoint, d.token_endpoint) else {
        return Err(unavailable(
            "the discovery document lacks the authorization or token endpoint",
        ));
    };
    // The redirect URI registered with the provider: from the public URL, or (development)
    // from the Host the browser used.
    let base = match &s.ledger.settings().public_url {
        Some(u) => u.clone(),
        None => format!(
            "http://{}",
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1")
        ),
    };
    let mut c = oauth2::Client::new(ClientId::new(oidc.config.client_id.clone()))
        .set_auth_uri(AuthUrl::new(auth).map_err(unavailable)?)
        .set_token_uri(TokenUrl::new(token).map_err(unavailable)?)
        .set_redirect_uri(RedirectUrl::new(format!("{base}/console/callback")).map_err(unavailable)?);
    if let Some(secret) = &oidc.config.client_secret {
        c = c.set_client_secret(ClientSecret::new(secret.0.clone()));
    }
    Ok(c)
}

/// `GET /console/sign-in/oidc[?next=]`: to the identity provider, with PKCE, state and nonce.
pub async fn sign_in_oidc(State(s): State<AppState>, headers: HeaderMap, mut params: Params) -> PageResult {
    let next = safe_next(params.take("next").as_deref());
    params.finish()?;
    let client = client(&s, &headers).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = random_value();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("openid".into()))
        .add_extra_param("nonce", &nonce)
        .set_pkce_challenge(challenge)
        .url();
    s.access
        .sessions
        .begin_sign_in(state.secret(), verifier.secret(), &nonce, &next, s.ledger.clock().now())
        .await?;
    Ok(Redirect::to(url.as_str()).into_response())
}

/// `GET /console/callback?code=&state=`: the code exchanged (with the PKCE verifier) for an
/// ID token, checked against the issuer's keys, the nonce and the client id.
pub async fn callback(
    State(s): State<AppState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    mut params: Params,
) -> PageResult {
    let code = params.take("code");
    let state = params.take("state").unwrap_or_default();
    let error = params.take("error");
    // Providers add their own parameters (session_state, iss, scope): not the ledger's to refuse.
    let _ = (
        params.take("session_state"),
        params.take("iss"),
        params.take("scope"),
        params.take("error_description"),
    );
    let now = s.ledger.clock().now();
    let Some((verifier, nonce, next)) = s.access.sessions.take_sign_in(&state, now).await? else {
        // Not a sign-in this ledger started (or one taken already, or too old).
        record_sign_in(&s, &origin, None, StatusCode::BAD_REQUEST).await?;
        return Ok(sign_in_form(
            &s,
            safe_next(None),
            "",
            "サインインの有効期限が切れました。もう一度お試しください。",
            StatusCode::BAD_REQUEST,
        ));
    };
    let Some(code) = code.filter(|_| error.is_none()) else {
        record_sign_in(&s, &origin, None, StatusCode::UNAUTHORIZED).await?;
        return Ok(sign_in_form(
            &s,
            next,
            "",
            "サインインが取り消されました。",
            StatusCode::UNAUTHORIZED,
        ));
    };
    let client = client(&s, &headers).await?;
    let http = oauth2::reqwest::ClientBuilder::new()
        // The token endpoint must answer itself (no redirects: RFC 6749 §10.12 advice).
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(unavailable)?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&http)
        .await
        .map_err(unavailable)?;
    let oidc = s.access.oidc.as_ref().expect("client() checked it");
    match oidc.verify_id_token(&token.extra_fields().id_token, &nonce).await {
        Ok(staff) => {
            let principal = Principal::new(staff.id, staff.roles, &s.access.roles, Source::Oidc);
            open_session(&s, &origin, &principal, &next).await
        }
        Err(e) => {
            tracing::info!(reason = %e, request_id = %origin.request_id, "OpenID Connect ID token refused");
            record_sign_in(&s, &origin, None, StatusCode::UNAUTHORIZED).await?;
            Ok(sign_in_form(
                &s,
                next,
                "",
                "サインインできませんでした。",
                StatusCode::UNAUTHORIZED,
            ))
        }
    }
}
