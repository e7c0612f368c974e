//! Bearer-token authentication for every API endpoint.
//!
//! Tokens are looked up by their SHA-256. A verified token is cached in this process for at most
//! `AUTH_CACHE_TTL_MS`, so the hot path does not hit the database on every request, while a
//! client revoked from any process (the CLI, another server) loses access within that time,
//! well inside the 30 s the contract allows (README, "Decisions"). Expiry is checked on every use, cached or not.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::crypto;
use crate::domain::Principal;

/// How long a verified token is trusted without asking the database again.
pub const AUTH_CACHE_TTL_MS: i64 = 10_000;
/// Entries kept before the cache is cleared wholesale (cheap bound on memory).
const AUTH_CACHE_ENTRIES_MAX: usize = 100_000;

#[derive(Clone)]
struct Cached {
    principal: Principal,
    token_expires_at_ms: i64,
    cached_at_ms: i64,
}

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, Cached>>,
}

impl TokenCache {
    fn get(&self, hash: &str, now_ms: i64) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(hash).filter(|c| now_ms < c.token_expires_at_ms && now_ms - c.cached_at_ms < AUTH_CACHE_TTL_MS).map(|c| c.principal.clone())
    }

    fn remove(&self, hash: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    fn put(&self, hash: String, entry: Cached) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= AUTH_CACHE_ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(hash, entry);
    }
}

/// The authenticated caller of an API endpoint.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value =
            parts.headers.get(header::AUTHORIZATION).ok_or_else(|| ApiError::unauthenticated("an Authorization: Bearer <access_token> header is required"))?;
        let token = super::wire::oauth::bearer_token(value.as_bytes())
            .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be Bearer <access_token>"))?;
        let principal = principal_of(state, token).await?;
        Auth::noted(parts, state, principal)
    }
}

/// Whose access token this is: from the cache when it was verified recently, else the store.
pub async fn principal_of(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let hash = crypto::token_hash(token);
    let now_ms = state.clock.now_ms();
    let cached = state.tokens.get(&hash, now_ms);
    crate::metrics::cache("token", cached.is_some());
    if let Some(principal) = cached {
        return Ok(principal);
    }
    let (record, client) =
        state.store.lookup_access_token(&hash, now_ms).await?.ok_or_else(|| ApiError::unauthenticated("the access token is invalid, expired or revoked"))?;
    let principal = Principal { client_id: client.client_id, admin: client.admin, companies: client.companies };
    state.tokens.put(hash, Cached { principal: principal.clone(), token_expires_at_ms: record.expires_at_ms, cached_at_ms: now_ms });
    Ok(principal)
}

/// Ends an access token at once, in this process's cache too (other processes' caches drop it
/// within `AUTH_CACHE_TTL_MS`).
pub async fn end_token(state: &AppState, token: &str) -> Result<(), ApiError> {
    let hash = crypto::token_hash(token);
    state.tokens.remove(&hash);
    state.store.expire_access_token(&hash, state.clock.now_ms()).await?;
    Ok(())
}

impl Auth {
    /// The caller, noted for the request's log line, within its rate limit.
    pub fn noted(parts: &Parts, state: &AppState, principal: Principal) -> Result<Self, ApiError> {
        if let Some(slot) = parts.extensions.get::<super::CallerSlot>() {
            let _ = slot.0.set(principal.client_id.clone());
        }
        state.limits.check_client(&principal.client_id).map_err(|secs| {
            crate::metrics::rate_limited("client");
            ApiError::rate_limited(secs)
        })?;
        tracing::debug!(client_id = %principal.client_id, admin = principal.admin, "authenticated");
        Ok(Auth(principal))
    }

    pub fn require_company(&self, company: &crate::domain::CompanyId) -> Result<(), ApiError> {
        if self.0.can_act_for(company) { Ok(()) } else { Err(ApiError::forbidden(format!("this client may not act for companyId {company}"))) }
    }

    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.0.admin { Ok(()) } else { Err(ApiError::forbidden(format!("only admin clients may {what}"))) }
    }
}
