//! Reading coins: the balance, a user's summary and history, and the coin value.
//! Another company's user reads exactly like a user never credited.

use axum::Json as JsonResponse;
use axum::extract::State;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Json, PathParam, Query};
use super::wire::coins::{BalanceQuery, CoinValueQuery, CoinValueRequest, CoinValueView};
use super::wire::users::{PageLinkView, PageView, TransactionsQuery, UserView, encode_cursor};
use super::wire::{Envelope, ErrorEnvelope, FromField};
use crate::domain::redeem::CoinValue;
use crate::domain::{Refusal, UserId};
#[allow(unused_imports)]
use serde_json::json;

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// A user's balance (`0` for a user never credited, or another company's).
#[utoipa::path(get, path = "/api/v0/coins/balance", tag = "coins", params(BalanceQuery),
    responses((status = 200, description = "The balance in coins; expired coins never count", body = Envelope<i64>,
        example = json!({"payload":0,"response_code":0,"response_message":"Success"}))))]
pub async fn balance(State(state): State<AppState>, auth: Auth, Query(q): Query<BalanceQuery>) -> Answer<i64> {
    let found = state.store.balance(&q.user_id, state.clock.now_ms()).await?;
    let coins = found.filter(|b| auth.0.can_act_for(&b.company)).map_or(0, |b| b.balance);
    Ok(JsonResponse(Envelope::ok(coins)))
}

/// Refuses users the caller may not see (exactly like unknown ones), then writes any `EXPIRE`
/// entries that are due, so history, summary and balance agree.
async fn visible_user(state: &AppState, auth: &Auth, user: &UserId, now_ms: i64) -> Result<(), ApiError> {
    let not_found = || ApiError::from(Refusal::UserNotFound(user.clone()));
    let found = state.store.balance(user, now_ms).await?.ok_or_else(not_found)?;
    if !auth.0.can_act_for(&found.company) {
        return Err(not_found());
    }
    let expired = state.store.settle_expired(user, now_ms).await?;
    crate::metrics::moved(crate::metrics::Movement::Expired, expired.lots, expired.coins);
    Ok(())
}

/// A user's balance, lifetime figures and coins expiring soon.
#[utoipa::path(get, path = "/api/v0/coins/users/{userId}", tag = "users",
    params(("userId" = UserId, Path)),
    responses(
        (status = 200, description = "Balance, lifetime figures, coins expiring within 30 days, held coins and the status tier", body = Envelope<UserView>),
        (status = 404, description = "USER_NOT_FOUND: never credited, or another company's", body = ErrorEnvelope),
    ))]
pub async fn user(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<UserView> {
    let user = UserId::from_field("userId", Some(&serde_json::Value::String(raw))).map_err(ApiError::validation)?;
    let now_ms = state.clock.now_ms();
    visible_user(&state, &auth, &user, now_ms).await?;
    let summary = state.store.user_summary(&user, now_ms).await?.ok_or_else(|| ApiError::from(Refusal::UserNotFound(user.clone())))?;
    let tier = state.store.member_tier(&summary.company, &user, now_ms).await?;
    Ok(JsonResponse(Envelope::ok(UserView { tier: tier.map(Into::into), ..UserView::from(summary) })))
}
/// A user's ledger, newest first, keyset-paginated.
#[utoipa::path(get, path = "/api/v0/coins/transactions", tag = "users", params(TransactionsQuery),
    responses(
        (status = 200, description = "A page of the user's ledger, newest first", body = Envelope<PageView>),
        (status = 404, description = "USER_NOT_FOUND: never credited, or another company's", body = ErrorEnvelope),
    ))]
pub async fn transactions(State(state): State<AppState>, auth: Auth, Query(q): Query<TransactionsQuery>) -> Answer<PageView> {
    let now_ms = state.clock.now_ms();
    visible_user(&state, &auth, &q.user_id, now_ms).await?;
    let mut entries = state.store.transactions(&q.user_id, q.before_entry_id, q.limit + 1).await?;
    let more = entries.len() as i64 > q.limit;
    entries.truncate(q.limit as usize);
    let next_cursor = if more { entries.last().map(|e| encode_cursor(e.entry_id)) } else { None };
    Ok(JsonResponse(Envelope::ok(PageView { entries: entries.into_iter().map(Into::into).collect(), next_cursor })))
}
/// Sets what one coin is worth, for a company or (admin) for all.
#[utoipa::path(put, path = "/api/v0/coins/coin-value", tag = "coins",
    request_body(content = CoinValueRequest, example = json!({"companyId":"SHOP","currency":"INR","minorUnitsPerCoin":25})),
    responses(
        (status = 200, description = "The value set", body = Envelope<CoinValueView>),
        (status = 403, description = "FORBIDDEN: another company, or the default by a non-admin", body = ErrorEnvelope),
    ))]
pub async fn put_coin_value(State(state): State<AppState>, auth: Auth, Json(body): Json<CoinValueRequest>) -> Answer<CoinValueView> {
    match &body.company_id.0 {
        Some(c) => auth.require_company(c)?,
        None => auth.require_admin("set the default coin value")?,
    }
    let value = CoinValue { company: body.company_id.0, currency: body.currency.0, minor_units_per_coin: body.minor_units_per_coin.0 };
    state.store.set_coin_value(value.clone(), &auth.0.client_id, state.clock.now_ms()).await?;
    Ok(JsonResponse(Envelope::ok(value.into())))
}
/// The coin value in force for a company (or the default).
#[utoipa::path(get, path = "/api/v0/coins/coin-value", tag = "coins", params(CoinValueQuery),
    responses(
        (status = 200, description = "The value in force (default INR, 100 minor units per coin)", body = Envelope<CoinValueView>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn get_coin_value(State(state): State<AppState>, auth: Auth, Query(q): Query<CoinValueQuery>) -> Answer<CoinValueView> {
    if let Some(c) = &q.company_id {
        auth.require_company(c)?;
    }
    let mut value = state.store.coin_value(q.company_id.as_ref()).await?;
    // Report the company asked about, even when the value in force is the default.
    value.company = q.company_id.or(value.company);
    Ok(JsonResponse(Envelope::ok(value.into())))
}

/// Longest `Host` header used to build a member link (without `COINS_PUBLIC_URL`).
const HOST_CHARS_MAX: usize = 255;

/// Where links point: `COINS_PUBLIC_URL`, else this request's `Host` over plain HTTP.
fn public_base(state: &AppState, headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    if let Some(base) = &state.settings.public_url {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let sane = !host.is_empty() && host.len() <= HOST_CHARS_MAX && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !sane {
        return Err(ApiError::validation("the Host header cannot be used in a link; set COINS_PUBLIC_URL on the server"));
    }
    Ok(format!("http://{host}"))
}

/// A short-lived link to the user's own read-only page: balance, its value, coins expiring soon,
/// recent history. No login; it expires (`COINS_MEMBER_LINK_TTL_SECS`, default 15 minutes) and
/// grants nothing else.
#[utoipa::path(post, path = "/api/v0/coins/users/{userId}/page-link", tag = "users",
    params(("userId" = UserId, Path)),
    responses(
        (status = 200, description = "The link and when it expires", body = Envelope<PageLinkView>),
        (status = 404, description = "USER_NOT_FOUND: never credited, or another company's", body = ErrorEnvelope),
        (status = 503, description = "KEY_NOT_CONFIGURED: the server has no COINS_SECRET_KEY", body = ErrorEnvelope),
    ))]
pub async fn page_link(State(state): State<AppState>, auth: Auth, headers: axum::http::HeaderMap, PathParam(raw): PathParam) -> Answer<PageLinkView> {
    let user = UserId::from_field("userId", Some(&serde_json::Value::String(raw))).map_err(ApiError::validation)?;
    let key = super::webhooks::key(&state)?;
    let now_ms = state.clock.now_ms();
    let found = state.store.balance(&user, now_ms).await?.filter(|b| auth.0.can_act_for(&b.company));
    let company = found.ok_or_else(|| ApiError::from(Refusal::UserNotFound(user.clone())))?.company;
    let expires = now_ms + state.settings.member_link_ttl_secs * 1000;
    let token = crate::keys::sign_link(key, &user, &company, expires);
    let url = format!("{}/member/{token}", public_base(&state, &headers)?);
    Ok(JsonResponse(Envelope::ok(PageLinkView { url, expires_at: crate::clock::rfc3339(expires) })))
}
