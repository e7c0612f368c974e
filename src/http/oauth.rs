//! `POST /oauth/token` (SPEC §3, RFC 6749): client_credentials, password and refresh_token grants.
//!
//! Errors use RFC 6749 §5.2 bodies, not the API envelope. Failed client or user authentications
//! count towards a lockout; while locked, even the right secret is refused with "locked".

use std::collections::HashMap;

use axum::extract::{Form, State, rejection::FormRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::AppState;
use crate::crypto;
use crate::store::{AuthSubject, ClientRecord, StoreError, TokenKind, TokenRecord};

/// Refresh tokens live 30 days; each is single use and replaced at every refresh.
pub const REFRESH_TTL_MS: i64 = 30 * 86_400_000;

#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

#[derive(Serialize)]
struct OAuthErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self { status, error, description: description.into() }
    }
    fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "token endpoint storage failure");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&OAuthErrorBody { error: self.error, error_description: &self.description }).unwrap_or_default();
        let mut res = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"coins\""));
        }
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    refresh_token: String,
    expires_in: i64,
    scope: &'static str,
}

/// The credentials a client presented: HTTP Basic, else `client_id`/`client_secret` fields.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(String, String), OAuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let encoded = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim())
            .ok_or_else(|| OAuthError::invalid_client("the Authorization header must use the Basic scheme"))?;
        let decoded = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OAuthError::invalid_client("the Basic credentials are not valid base64 UTF-8"))?;
        let (id, secret) = decoded.split_once(':').ok_or_else(|| OAuthError::invalid_client("the Basic credentials must be id:secret"))?;
        return Ok((id.to_owned(), secret.to_owned()));
    }
    match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Ok((id.clone(), secret.clone())),
        _ => Err(OAuthError::invalid_client("client authentication is required (HTTP Basic or client_id and client_secret)")),
    }
}

async fn verify_slow(secret: String, hash: String) -> bool {
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    tokio::task::spawn_blocking(move || crypto::verify_secret(&secret, &hash)).await.unwrap_or(false)
}

async fn authenticate_client(state: &AppState, id: &str, secret: &str) -> Result<ClientRecord, OAuthError> {
    let now_ms = state.clock.now_ms();
    let Some(client) = state.store.get_client(id).await?.filter(|c| c.revoked_at_ms.is_none()) else {
        verify_slow(secret.to_owned(), crypto::dummy_hash().to_owned()).await;
        return Err(OAuthError::invalid_client("unknown client or wrong secret"));
    };
    // Reserve the attempt before the slow check, so parallel guesses cannot all be checked
    // against a row that still reads unlocked: at most the lockout maximum per lock period.
    let locked = client.locked_until_ms.is_some_and(|t| t > now_ms)
        || !state.store.reserve_auth_attempt(AuthSubject::Client(id), now_ms, state.settings.lockout).await?;
    if locked {
        return Err(OAuthError::invalid_client("the client is locked after repeated failed authentications; try again later"));
    }
    if !verify_slow(secret.to_owned(), client.secret_hash.clone()).await {
        tracing::info!(client_id = id, "client authentication failed");
        return Err(OAuthError::invalid_client("unknown client or wrong secret"));
    }
    state.store.record_auth_success(AuthSubject::Client(id)).await?;
    Ok(client)
}

async fn authenticate_user(state: &AppState, client_id: &str, username: &str, password: &str) -> Result<(), OAuthError> {
    let now_ms = state.clock.now_ms();
    let Some(user) = state.store.get_password_user(client_id, username).await? else {
        verify_slow(password.to_owned(), crypto::dummy_hash().to_owned()).await;
        return Err(OAuthError::invalid_grant("unknown username or wrong password"));
    };
    let who = AuthSubject::PasswordUser { client_id, username };
    let locked = user.locked_until_ms.is_some_and(|t| t > now_ms) || !state.store.reserve_auth_attempt(who, now_ms, state.settings.lockout).await?;
    if locked {
        return Err(OAuthError::invalid_grant("the user is locked after repeated failed authentications; try again later"));
    }
    if !verify_slow(password.to_owned(), user.password_hash.clone()).await {
        tracing::info!(client_id, "password grant authentication failed");
        return Err(OAuthError::invalid_grant("unknown username or wrong password"));
    }
    state.store.record_auth_success(who).await?;
    Ok(())
}

pub async fn token(State(state): State<AppState>, headers: HeaderMap, form: Result<Form<Vec<(String, String)>>, FormRejection>) -> Response {
    match issue(&state, &headers, form).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn issue(state: &AppState, headers: &HeaderMap, form: Result<Form<Vec<(String, String)>>, FormRejection>) -> Result<Response, OAuthError> {
    let Form(pairs) = form.map_err(|e| OAuthError::invalid_request(format!("the body must be application/x-www-form-urlencoded: {e}")))?;
    let mut params = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if params.insert(k.clone(), v).is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {k} appears more than once")));
        }
    }
    let grant = params.get("grant_type").cloned().ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !matches!(grant.as_str(), "client_credentials" | "password" | "refresh_token") {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials, password or refresh_token",
        ));
    }
    let (client_id, secret) = client_credentials(headers, &params)?;
    let client = authenticate_client(state, &client_id, &secret).await?;

    let username = match grant.as_str() {
        "client_credentials" => None,
        "password" => {
            let username = params.get("username").ok_or_else(|| OAuthError::invalid_request("username is required"))?;
            let password = params.get("password").ok_or_else(|| OAuthError::invalid_request("password is required"))?;
            authenticate_user(state, &client.client_id, username, password).await?;
            Some(username.clone())
        }
        _ => {
            let refresh = params.get("refresh_token").ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            let now_ms = state.clock.now_ms();
            let record = state
                .store
                .consume_refresh_token(&crypto::token_hash(refresh), now_ms)
                .await?
                .filter(|r| r.client_id == client.client_id)
                .ok_or_else(|| OAuthError::invalid_grant("the refresh token is invalid, expired, already used or not this client's"))?;
            record.username
        }
    };

    let now_ms = state.clock.now_ms();
    let access = crypto::random_token::<{ crypto::TOKEN_BYTES }>();
    let refresh = crypto::random_token::<{ crypto::TOKEN_BYTES }>();
    let ttl_secs = state.settings.token_ttl_secs;
    let record = |token: &str, kind, ttl_ms| TokenRecord {
        token_hash: crypto::token_hash(token),
        kind,
        client_id: client.client_id.clone(),
        username: username.clone(),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + ttl_ms,
    };
    state
        .store
        .insert_tokens(vec![record(&access, TokenKind::Access, ttl_secs * 1000), record(&refresh, TokenKind::Refresh, REFRESH_TTL_MS)])
        .await?;
    let body = TokenResponse { access_token: access, token_type: "bearer", refresh_token: refresh, expires_in: ttl_secs, scope: "read write" };
    let mut res = axum::Json(body).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}
