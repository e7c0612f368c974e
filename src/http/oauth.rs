//! `POST /oauth/token` (RFC 6749): client_credentials, password and refresh_token grants.
//!
//! Errors use RFC 6749 §5.2 bodies, not the API envelope. Failed client or user authentications
//! count towards a lockout (`domain::lockout`); while locked, even the right secret is refused
//! with "locked". The form is limited to [`BODY_BYTES_MAX`] like every other body.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::FailureCause;
use super::extract::{BODY_BYTES_MAX, read_body};
use super::wire::oauth::{Credential, GrantType, OAuthErrorBody, OAuthErrorKind, TokenForm, TokenFormSchema, TokenResponse, basic_credentials};
use crate::crypto;
use crate::store::error::chain;
use crate::store::{AuthSubject, ClientRecord, StoreError, TokenKind, TokenRecord};

/// Refresh tokens live 30 days; each is single use and replaced at every refresh.
pub const REFRESH_TTL_MS: i64 = 30 * 86_400_000;

#[derive(Debug)]
pub struct OAuthError {
    kind: OAuthErrorKind,
    description: String,
    cause: Option<String>,
    /// 413 and 429 keep their HTTP meaning under the OAuth body.
    status: Option<StatusCode>,
    retry_after_secs: Option<u64>,
}

impl OAuthError {
    fn new(kind: OAuthErrorKind, description: impl Into<String>) -> Self {
        Self { kind, description: description.into(), cause: None, status: None, retry_after_secs: None }
    }
    fn rate_limited(secs: u64) -> Self {
        Self {
            status: Some(StatusCode::TOO_MANY_REQUESTS),
            retry_after_secs: Some(secs),
            ..Self::new(OAuthErrorKind::SlowDown, format!("too many token requests; retry after {secs} s"))
        }
    }
    fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorKind::InvalidRequest, d)
    }
    fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorKind::InvalidClient, d)
    }
    fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorKind::InvalidGrant, d)
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        let (kind, description) = if e.is_transient() {
            (OAuthErrorKind::TemporarilyUnavailable, "the service is temporarily unavailable; retry shortly")
        } else {
            (OAuthErrorKind::ServerError, "internal error")
        };
        let retry_after_secs = e.is_transient().then_some(1);
        Self { kind, description: description.into(), cause: Some(chain(&e)), status: None, retry_after_secs }
    }
}

impl OAuthError {
    fn status(&self) -> StatusCode {
        self.status.unwrap_or(match self.kind {
            OAuthErrorKind::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorKind::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            OAuthErrorKind::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        })
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&OAuthErrorBody { error: self.kind.as_str(), error_description: &self.description }).unwrap_or_default();
        let mut res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        let headers = res.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"coins\""));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(cause) = self.cause {
            res.extensions_mut().insert(FailureCause(cause));
        }
        res
    }
}

/// The credentials a client presented: HTTP Basic, else `client_id`/`client_secret` fields.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Result<(Credential, Credential), OAuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return basic_credentials(value.as_bytes()).map_err(OAuthError::invalid_client);
    }
    match (&form.client_id, &form.client_secret) {
        (Some(id), Some(secret)) => Ok((Credential::plain(id.clone()), Credential::plain(secret.clone()))),
        _ => Err(OAuthError::invalid_client("client authentication is required (HTTP Basic or client_id and client_secret)")),
    }
}

/// Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
async fn verify_slow(secrets: Vec<String>, hash: String) -> bool {
    tokio::task::spawn_blocking(move || secrets.iter().any(|s| crypto::verify_secret(s, &hash))).await.unwrap_or(false)
}

async fn authenticate_client(state: &AppState, id: &Credential, secret: &Credential) -> Result<ClientRecord, OAuthError> {
    let now_ms = state.clock.now_ms();
    let mut found = None;
    for reading in id.readings() {
        if let Some(client) = state.store.get_client(reading).await?.filter(|c| c.revoked_at_ms.is_none()) {
            found = Some(client);
            break;
        }
    }
    let secrets: Vec<String> = secret.readings().map(str::to_owned).collect();
    let Some(client) = found else {
        // An unknown id costs the same Argon2 time as a wrong secret: no oracle for valid ids.
        verify_slow(secrets, crypto::dummy_hash().to_owned()).await;
        return Err(OAuthError::invalid_client("unknown client or wrong secret"));
    };
    // Reserve the attempt before the slow check, so parallel guesses cannot all be checked
    // against a row that still reads unlocked: at most the lockout maximum per lock period.
    let subject = AuthSubject::Client(&client.client_id);
    let locked = client.lock.is_locked(now_ms) || !state.store.reserve_auth_attempt(subject, now_ms, state.settings.lockout).await?;
    if locked {
        return Err(OAuthError::invalid_client("the client is locked after repeated failed authentications; try again later"));
    }
    if !verify_slow(secrets, client.secret_hash.clone()).await {
        tracing::info!(client_id = %client.client_id, "client authentication failed");
        return Err(OAuthError::invalid_client("unknown client or wrong secret"));
    }
    state.store.record_auth_success(subject).await?;
    Ok(client)
}

async fn authenticate_user(state: &AppState, client_id: &str, username: &str, password: &str) -> Result<(), OAuthError> {
    let now_ms = state.clock.now_ms();
    let Some(user) = state.store.get_password_user(client_id, username).await? else {
        verify_slow(vec![password.to_owned()], crypto::dummy_hash().to_owned()).await;
        return Err(OAuthError::invalid_grant("unknown username or wrong password"));
    };
    let who = AuthSubject::PasswordUser { client_id, username };
    let locked = user.lock.is_locked(now_ms) || !state.store.reserve_auth_attempt(who, now_ms, state.settings.lockout).await?;
    if locked {
        return Err(OAuthError::invalid_grant("the user is locked after repeated failed authentications; try again later"));
    }
    if !verify_slow(vec![password.to_owned()], user.password_hash.clone()).await {
        tracing::info!(client_id, "password grant authentication failed");
        return Err(OAuthError::invalid_grant("unknown username or wrong password"));
    }
    state.store.record_auth_success(who).await?;
    Ok(())
}
/// Issues access and refresh tokens.
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    description = "OAuth 2.0 token endpoint (RFC 6749): `client_credentials` (recommended), `password` (EnKash's), `refresh_token`. Answers RFC 6749 bodies, not the envelope.",
    request_body(content = TokenFormSchema, content_type = "application/x-www-form-urlencoded"),
    security((), ("basic" = [])),
    responses(
        (status = 200, description = "Tokens (192 random bits each; the refresh token is single use)", body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant or unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client: unknown client, wrong secret, or locked after repeated failures (the description then says \"locked\")", body = OAuthErrorBody),
        (status = 413, description = "invalid_request: the form is over 64 KiB", body = OAuthErrorBody),
        (status = 429, description = "slow_down: too many token requests for this client id or address", body = OAuthErrorBody, headers(("Retry-After" = u64))),
        (status = 500, description = "server_error", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable: the database is away", body = OAuthErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn token(State(state): State<AppState>, req: Request) -> Response {
    match issue(&state, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn read_form(req: Request) -> Result<(HeaderMap, TokenForm), OAuthError> {
    let headers = req.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    let bytes = read_body(req, BODY_BYTES_MAX).await.map_err(|e| OAuthError { status: Some(e.status), ..OAuthError::invalid_request(e.message) })?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let form = TokenForm::from_pairs(pairs).map_err(|(kind, description)| OAuthError::new(kind, description))?;
    Ok((headers, form))
}

async fn issue(state: &AppState, req: Request) -> Result<Response, OAuthError> {
    let address = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (headers, form) = read_form(req).await?;
    let (id, secret) = client_credentials(&headers, &form)?;
    // Before any Argon2 work: per presented client id and per source address.
    state.limits.check_token(&id.raw, address).map_err(|secs| {
        crate::metrics::rate_limited("token");
        OAuthError::rate_limited(secs)
    })?;
    let client = authenticate_client(state, &id, &secret).await?;

    let username = match form.grant_type {
        GrantType::ClientCredentials => None,
        GrantType::Password => {
            let username = form.username.as_deref().ok_or_else(|| OAuthError::invalid_request("username is required"))?;
            let password = form.password.as_deref().ok_or_else(|| OAuthError::invalid_request("password is required"))?;
            authenticate_user(state, &client.client_id, username, password).await?;
            Some(username.to_owned())
        }
        GrantType::RefreshToken => {
            let refresh = form.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            // Only this client's token is used up: another client's is refused and left intact.
            let record = state
                .store
                .consume_refresh_token(&crypto::token_hash(refresh), &client.client_id, state.clock.now_ms())
                .await?
                .ok_or_else(|| OAuthError::invalid_grant("the refresh token is invalid, expired, already used or not this client's"))?;
            record.username
        }
    };

    let (access, refresh) = issue_tokens(state, &client.client_id, username.clone(), true).await?;
    tracing::debug!(client_id = %client.client_id, grant = ?form.grant_type, user = username.is_some(), "tokens issued");
    let ttl_secs = state.settings.token_ttl_secs;
    let body =
        TokenResponse { access_token: access, token_type: "bearer", refresh_token: refresh.unwrap_or_default(), expires_in: ttl_secs, scope: "read write" };
    let mut res = axum::Json(body).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}

/// Stores and returns a new access token (the settings' lifetime) and, when asked, a refresh token.
async fn issue_tokens(state: &AppState, client_id: &str, username: Option<String>, with_refresh: bool) -> Result<(String, Option<String>), StoreError> {
    let now_ms = state.clock.now_ms();
    let access = crypto::random_token::<{ crypto::TOKEN_BYTES }>();
    let refresh = with_refresh.then(crypto::random_token::<{ crypto::TOKEN_BYTES }>);
    let record = |token: &str, kind, ttl_ms| TokenRecord {
        token_hash: crypto::token_hash(token),
        kind,
        client_id: client_id.to_owned(),
        username: username.clone(),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + ttl_ms,
    };
    let mut records = vec![record(&access, TokenKind::Access, state.settings.token_ttl_secs * 1000)];
    records.extend(refresh.as_deref().map(|r| record(r, TokenKind::Refresh, REFRESH_TTL_MS)));
    state.store.insert_tokens(records).await?;
    Ok((access, refresh))
}

/// Why a dashboard sign-in was refused, in the token endpoint's words.
#[derive(Debug)]
pub struct SignInRefused {
    pub message: String,
    /// 401 for credentials refused; a rate limit, a body too large or our own failure keep their
    /// own status.
    pub status: StatusCode,
    pub retry_after_secs: Option<u64>,
    /// A 5xx cause, for the log.
    pub cause: Option<String>,
}

impl From<OAuthError> for SignInRefused {
    fn from(e: OAuthError) -> Self {
        let status = match e.status() {
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::PAYLOAD_TOO_LARGE => s,
            _ => StatusCode::UNAUTHORIZED,
        };
        Self { message: e.description, status, retry_after_secs: e.retry_after_secs, cause: e.cause }
    }
}

/// Signs a person in to the dashboard: the client's credentials, and a password-grant user's
/// when given, checked exactly as the token endpoint checks them (rate limits, lockout, Argon2);
/// an access token for the session (no refresh token: signing in again starts a new session).
pub async fn sign_in(
    state: &AppState,
    client_id: &str,
    secret: &str,
    user: Option<(&str, &str)>,
    address: Option<std::net::IpAddr>,
) -> Result<String, SignInRefused> {
    state.limits.check_token(client_id, address).map_err(|secs| {
        crate::metrics::rate_limited("token");
        OAuthError::rate_limited(secs)
    })?;
    let client = authenticate_client(state, &Credential::plain(client_id.to_owned()), &Credential::plain(secret.to_owned())).await?;
    let username = match user {
        Some((username, password)) => {
            authenticate_user(state, &client.client_id, username, password).await?;
            Some(username.to_owned())
        }
        None => None,
    };
    let (access, _) = issue_tokens(state, &client.client_id, username, false).await.map_err(OAuthError::from)?;
    Ok(access)
}
