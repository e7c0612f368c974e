//! The coin lifecycle beyond EnKash (SPEC §5): bulk allocation, redemption, reversal, coin value,
//! and what a user can see of their coins.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, Request, State, rejection::QueryRejection};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;

use super::auth::Auth;
use super::coins::IDEMPOTENT_REPLAYED;
use super::error::ApiError;
use super::extract::{Fields, JsonObject, PathParam, parse_user, read_object};
use super::{AppState, Envelope};
use crate::clock::rfc3339;
use crate::domain::{CompanyId, UserId};
use crate::store::{AMOUNT_MINOR_MAX, AllocateCmd, AllocateOk, Applied, CoinValue, RedeemAmount, RedeemCmd, ReverseCmd, StoreError};

/// Items one bulk request may carry (SPEC §5).
pub const BULK_ITEMS_MAX: usize = 1_000;
/// Body limit of the bulk endpoint: 1,000 items of up to ~1 KiB each.
pub const BULK_BODY_BYTES_MAX: usize = 1024 * 1024;
/// History page sizes (SPEC §5).
pub const PAGE_LIMIT_MAX: i64 = 500;
pub const PAGE_LIMIT_DEFAULT: i64 = 50;
/// Largest `minorUnitsPerCoin` accepted.
pub const MINOR_UNITS_PER_COIN_MAX: i64 = 1_000_000_000;

fn with_replay_header<T: Serialize>(applied: Applied<T>) -> Response {
    let mut res = Envelope::ok(applied.receipt).into_response();
    if applied.replayed {
        res.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    res
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkItemResult {
    request_id: Option<String>,
    status: &'static str,
    coins: Option<i64>,
    error_code: Option<&'static str>,
    message: Option<String>,
}

#[derive(Serialize)]
pub struct BulkResult {
    allocated: usize,
    replayed: usize,
    failed: usize,
    results: Vec<BulkItemResult>,
}

impl BulkItemResult {
    fn failed(request_id: Option<String>, e: ApiError) -> Self {
        Self { request_id, status: "FAILED", coins: None, error_code: Some(e.code), message: Some(e.message) }
    }
}

/// `POST /api/v0/enkash-coins/allocate-coins`: each item applied exactly as a single allocation
/// would be, independently; one result per item, in request order.
pub async fn allocate_many(State(state): State<AppState>, auth: Auth, req: Request) -> Result<Json<Envelope<BulkResult>>, ApiError> {
    let body = read_object(req, BULK_BODY_BYTES_MAX).await?;
    let items = match body.get("allocations") {
        Some(Value::Array(items)) if (1..=BULK_ITEMS_MAX).contains(&items.len()) => items,
        _ => return Err(ApiError::validation(format!("allocations must be an array of 1 to {BULK_ITEMS_MAX} items"))),
    };
    let now_ms = state.clock.now_ms();
    // Parse and authorise every item first; only the good ones go to the store, in one call.
    let mut slots: Vec<Result<usize, BulkItemResult>> = Vec::with_capacity(items.len());
    let mut cmds = Vec::with_capacity(items.len());
    for item in items {
        let request_id = item.get("requestId").and_then(Value::as_str).map(str::to_owned);
        let parsed = match item {
            Value::Object(map) => {
                let f = Fields(map);
                (|| -> Result<AllocateCmd, ApiError> {
                    let cmd = AllocateCmd {
                        company: f.company("companyId")?,
                        event: f.event("event")?,
                        request_id: f.request_id("requestId")?,
                        user: f.user("userId")?,
                        now_ms,
                    };
                    auth.require_company(&cmd.company)?;
                    Ok(cmd)
                })()
            }
            _ => Err(ApiError::validation("each allocation must be a JSON object")),
        };
        slots.push(match parsed {
            Ok(cmd) => {
                cmds.push(cmd);
                Ok(cmds.len() - 1)
            }
            Err(e) => Err(BulkItemResult::failed(request_id, e)),
        });
    }
    let request_ids: Vec<String> = cmds.iter().map(|c| c.request_id.to_string()).collect();
    let mut outcomes: Vec<Option<Result<AllocateOk, StoreError>>> = state.store.allocate(cmds).await.into_iter().map(Some).collect();
    let mut result = BulkResult { allocated: 0, replayed: 0, failed: 0, results: Vec::with_capacity(slots.len()) };
    for slot in slots {
        let item = match slot {
            Err(failed) => failed,
            Ok(i) => {
                let request_id = Some(request_ids[i].clone());
                match outcomes[i].take() {
                    Some(Ok(AllocateOk::Allocated { coins, .. })) => {
                        BulkItemResult { request_id, status: "ALLOCATED", coins: Some(coins.get()), error_code: None, message: None }
                    }
                    Some(Ok(AllocateOk::Replayed { coins })) => {
                        BulkItemResult { request_id, status: "REPLAYED", coins: Some(coins.get()), error_code: None, message: None }
                    }
                    Some(Err(e)) => BulkItemResult::failed(request_id, e.into()),
                    None => BulkItemResult::failed(request_id, ApiError::internal("bulk allocation lost an item")),
                }
            }
        };
        match item.status {
            "ALLOCATED" => result.allocated += 1,
            "REPLAYED" => result.replayed += 1,
            _ => result.failed += 1,
        }
        result.results.push(item);
    }
    Ok(Envelope::ok(result))
}

/// `POST /api/v0/coins/redeem`
pub async fn redeem(State(state): State<AppState>, auth: Auth, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let f = Fields(&body);
    let company = f.company("companyId")?;
    let user = f.user("userId")?;
    let request_id = f.request_id("requestId")?;
    let present = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    let amount = match (present("coins"), present("amountMinor")) {
        (true, false) => RedeemAmount::Coins(f.amount("coins")?),
        (false, true) => RedeemAmount::Minor(
            body.get("amountMinor")
                .and_then(Value::as_i64)
                .filter(|m| (1..=AMOUNT_MINOR_MAX).contains(m))
                .ok_or_else(|| ApiError::validation(format!("amountMinor must be a whole number of minor units between 1 and {AMOUNT_MINOR_MAX}")))?,
        ),
        _ => return Err(ApiError::validation("exactly one of coins or amountMinor is required")),
    };
    auth.require_company(&company)?;
    let cmd = RedeemCmd { company, user, request_id, amount, now_ms: state.clock.now_ms() };
    Ok(with_replay_header(state.store.redeem(cmd).await?))
}

/// `POST /api/v0/coins/reverse`
pub async fn reverse(State(state): State<AppState>, auth: Auth, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let f = Fields(&body);
    let cmd = ReverseCmd {
        company: f.company("companyId")?,
        request_id: f.request_id("requestId")?,
        original: f.request_id("originalRequestId")?,
        now_ms: state.clock.now_ms(),
    };
    auth.require_company(&cmd.company)?;
    Ok(with_replay_header(state.store.reverse(cmd).await?))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoinValueView {
    company_id: Option<String>,
    currency: String,
    minor_units_per_coin: i64,
}

impl From<CoinValue> for CoinValueView {
    fn from(v: CoinValue) -> Self {
        Self { company_id: v.company.map(|c| c.to_string()), currency: v.currency, minor_units_per_coin: v.minor_units_per_coin }
    }
}

/// `PUT /api/v0/coins/coin-value`: a company's own value, or (`companyId: null`, admin) the default.
pub async fn put_coin_value(State(state): State<AppState>, auth: Auth, JsonObject(body): JsonObject) -> Result<Json<Envelope<CoinValueView>>, ApiError> {
    let f = Fields(&body);
    let company = match body.get("companyId") {
        None | Some(Value::Null) => None,
        Some(_) => Some(f.company("companyId")?),
    };
    let currency = match body.get("currency") {
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c.clone(),
        _ => return Err(ApiError::validation("currency must be a three-letter ISO 4217 code such as INR")),
    };
    let minor = body
        .get("minorUnitsPerCoin")
        .and_then(Value::as_i64)
        .filter(|n| (1..=MINOR_UNITS_PER_COIN_MAX).contains(n))
        .ok_or_else(|| ApiError::validation(format!("minorUnitsPerCoin must be a whole number between 1 and {MINOR_UNITS_PER_COIN_MAX}")))?;
    match &company {
        Some(c) => auth.require_company(c)?,
        None => auth.require_admin("set the default coin value")?,
    }
    let value = CoinValue { company, currency, minor_units_per_coin: minor };
    state.store.set_coin_value(value.clone(), &auth.0.client_id, state.clock.now_ms()).await?;
    Ok(Envelope::ok(value.into()))
}

/// `GET /api/v0/coins/coin-value?companyId=`: the value in force (the default without companyId).
pub async fn get_coin_value(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Envelope<CoinValueView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::validation(format!("bad query string: {e}")))?;
    let company = q
        .get("companyId")
        .map(|c| CompanyId::parse(c).map_err(|_| ApiError::validation(format!("companyId must be {}", CompanyId::RULE))))
        .transpose()?;
    if let Some(c) = &company {
        auth.require_company(c)?;
    }
    let mut value = state.store.coin_value(company.as_ref()).await?;
    // Report the company asked about, even when the value in force is the default.
    value.company = company.or(value.company);
    Ok(Envelope::ok(value.into()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringView {
    coins: i64,
    expires_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    user_id: String,
    company_id: String,
    balance: i64,
    lifetime_earned: i64,
    lifetime_redeemed: i64,
    lifetime_expired: i64,
    expiring_soon: Vec<ExpiringView>,
}

/// The user's company if the caller may see this user; unknown and hidden users look the same.
async fn visible_user(state: &AppState, auth: &Auth, user: &UserId, now_ms: i64) -> Result<(), ApiError> {
    let not_found = || ApiError::not_found("USER_NOT_FOUND", format!("userId {user} not found"));
    let found = state.store.balance(user, now_ms).await?.ok_or_else(not_found)?;
    if !auth.0.can_act_for(&found.company) {
        return Err(not_found());
    }
    // Write any EXPIRE entries that are due, so history, summary and balance agree.
    state.store.settle_expired(user, now_ms).await?;
    Ok(())
}

/// `GET /api/v0/coins/users/{userId}`
pub async fn user(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Result<Json<Envelope<UserView>>, ApiError> {
    let user = parse_user("userId", &raw)?;
    let now_ms = state.clock.now_ms();
    visible_user(&state, &auth, &user, now_ms).await?;
    let s = state.store.user_summary(&user, now_ms).await?.ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", format!("userId {user} not found")))?;
    Ok(Envelope::ok(UserView {
        user_id: s.user.to_string(),
        company_id: s.company.to_string(),
        balance: s.balance,
        lifetime_earned: s.lifetime_earned,
        lifetime_redeemed: s.lifetime_redeemed,
        lifetime_expired: s.lifetime_expired,
        expiring_soon: s.expiring_soon.into_iter().map(|(coins, at)| ExpiringView { coins, expires_at: rfc3339(at) }).collect(),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    entry_id: i64,
    #[serde(rename = "type")]
    kind: String,
    coins: i64,
    balance_after: i64,
    event: Option<String>,
    request_id: Option<String>,
    coin_config_id: Option<String>,
    created_at: String,
    expires_at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageView {
    entries: Vec<EntryView>,
    next_cursor: Option<String>,
}

fn encode_cursor(entry_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("e{entry_id}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix('e')?.parse().ok().filter(|n: &i64| *n > 0)
}

/// `GET /api/v0/coins/transactions?userId=&limit=&cursor=`: newest first, keyset-paginated by
/// entry id, so pages stay stable while new entries arrive.
pub async fn transactions(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Envelope<PageView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::validation(format!("bad query string: {e}")))?;
    let user = parse_user("userId", q.get("userId").ok_or_else(|| ApiError::validation("userId is required"))?)?;
    let limit = match q.get("limit") {
        None => PAGE_LIMIT_DEFAULT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=PAGE_LIMIT_MAX).contains(n))
            .ok_or_else(|| ApiError::validation(format!("limit must be a whole number between 1 and {PAGE_LIMIT_MAX}")))?,
    };
    let before = q
        .get("cursor")
        .map(|c| decode_cursor(c).ok_or_else(|| ApiError::validation("cursor is not one this API issued")))
        .transpose()?;
    let now_ms = state.clock.now_ms();
    visible_user(&state, &auth, &user, now_ms).await?;
    let mut entries = state.store.transactions(&user, before, limit + 1).await?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_cursor = if more { entries.last().map(|e| encode_cursor(e.entry_id)) } else { None };
    let entries = entries
        .into_iter()
        .map(|e| EntryView {
            entry_id: e.entry_id,
            kind: e.kind,
            coins: e.coins,
            balance_after: e.balance_after,
            event: e.event,
            request_id: e.request_id,
            coin_config_id: e.coin_config_id,
            created_at: rfc3339(e.created_at_ms),
            expires_at: e.expires_at_ms.map(rfc3339),
        })
        .collect();
    Ok(Envelope::ok(PageView { entries, next_cursor }))
}
