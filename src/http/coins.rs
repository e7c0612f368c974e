//! Earning and reading coins: `allocate-coin` (SPEC §4, exactly-once) and `balance`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Fields, JsonObject, parse_user};
use super::{AppState, Envelope};
use crate::store::{AllocateCmd, AllocateOk};

/// EnKash's success payload for an allocation, byte for byte.
pub const ALLOCATED: &str = "Successfully allocated enkash Coins";

pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub async fn allocate(State(state): State<AppState>, auth: Auth, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let f = Fields(&body);
    let cmd = AllocateCmd {
        company: f.company("companyId")?,
        event: f.event("event")?,
        request_id: f.request_id("requestId")?,
        user: f.user("userId")?,
        now_ms: state.clock.now_ms(),
    };
    auth.require_company(&cmd.company)?;
    let outcome = state.store.allocate(vec![cmd]).await.pop().ok_or_else(|| ApiError::internal("allocate returned no result"))?;
    let mut res = Envelope::ok(ALLOCATED).into_response();
    if let AllocateOk::Replayed { .. } = outcome? {
        res.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    Ok(res)
}

pub async fn balance(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Envelope<i64>>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::validation(format!("bad query string: {e}")))?;
    let raw = params.get("userId").ok_or_else(|| ApiError::validation("userId is required"))?;
    let user = parse_user("userId", raw)?;
    let found = state.store.balance(&user, state.clock.now_ms()).await?;
    // Another company's user reads as never credited: scoping must not reveal who exists.
    let coins = found.filter(|b| auth.0.can_act_for(&b.company)).map_or(0, |b| b.balance.get());
    Ok(Envelope::ok(coins))
}
