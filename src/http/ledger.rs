//! Writing the ledger (SPEC §4, §5): allocation (single and bulk, exactly-once), redemption and
//! reversal. A replay answers what the first request answered, with `Idempotent-Replayed: true`.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::Auth;
use super::error::ApiError;
use super::extract::{BULK_BODY_BYTES_MAX, Json};
use super::wire::Envelope;
use super::wire::coins::{ALLOCATED, AllocateRequest, BulkAllocateRequest, BulkItemResult, BulkResult, RedeemRequest, RedeemView, ReverseRequest, ReverseView};
use super::AppState;
use crate::domain::allocate::{AllocateCmd, AllocateOk};
use crate::domain::redeem::RedeemCmd;
use crate::domain::reverse::ReverseCmd;
use crate::store::Applied;

pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

fn answer<T: Serialize>(payload: T, replayed: bool) -> Response {
    let mut res = axum::Json(Envelope::ok(payload)).into_response();
    if replayed {
        res.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    res
}

fn command(body: AllocateRequest, now_ms: i64) -> AllocateCmd {
    AllocateCmd { company: body.company_id, user: body.user_id, event: body.event, request_id: body.request_id, now_ms }
}

/// `POST /api/v0/enkash-coins/allocate-coin`
pub async fn allocate(State(state): State<AppState>, auth: Auth, Json(body): Json<AllocateRequest>) -> Result<Response, ApiError> {
    auth.require_company(&body.company_id)?;
    let outcome = state.store.allocate(vec![command(body, state.clock.now_ms())]).await.pop().ok_or_else(|| ApiError::internal("allocate returned no result"))?;
    Ok(answer(ALLOCATED, matches!(outcome?, AllocateOk::Replayed { .. })))
}

/// `POST /api/v0/enkash-coins/allocate-coins`: each item applied exactly as a single allocation
/// would be, independently; one result per item, in request order.
pub async fn allocate_many(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<BulkAllocateRequest, BULK_BODY_BYTES_MAX>,
) -> Result<axum::Json<Envelope<BulkResult>>, ApiError> {
    let now_ms = state.clock.now_ms();
    let failed = |request_id: Option<String>, e: ApiError| BulkItemResult {
        request_id,
        status: "FAILED",
        coins: None,
        error_code: Some(e.code),
        message: Some(e.message),
    };
    // Read and authorise every item first; only the good ones go to the store, in one call.
    let mut slots: Vec<Result<usize, BulkItemResult>> = Vec::with_capacity(body.allocations.len());
    let mut cmds = Vec::new();
    for item in body.allocations {
        slots.push(match item {
            Err(bad) => Err(failed(bad.request_id, ApiError::validation(bad.message))),
            Ok(req) => match auth.require_company(&req.company_id) {
                Err(e) => Err(failed(Some(req.request_id.to_string()), e)),
                Ok(()) => {
                    cmds.push(command(req, now_ms));
                    Ok(cmds.len() - 1)
                }
            },
        });
    }
    let request_ids: Vec<String> = cmds.iter().map(|c| c.request_id.to_string()).collect();
    let mut outcomes: Vec<_> = state.store.allocate(cmds).await.into_iter().map(Some).collect();
    let mut result = BulkResult { allocated: 0, replayed: 0, failed: 0, results: Vec::with_capacity(slots.len()) };
    for slot in slots {
        let item = match slot {
            Err(item) => item,
            Ok(i) => {
                let request_id = Some(request_ids[i].clone());
                let done = |status, coins: crate::domain::Coins| BulkItemResult {
                    request_id: request_id.clone(),
                    status,
                    coins: Some(coins.get()),
                    error_code: None,
                    message: None,
                };
                match outcomes[i].take() {
                    Some(Ok(AllocateOk::Allocated { coins, .. })) => done("ALLOCATED", coins),
                    Some(Ok(AllocateOk::Replayed { coins })) => done("REPLAYED", coins),
                    Some(Err(e)) => failed(request_id, e.into()),
                    None => failed(request_id, ApiError::internal("bulk allocation lost an item")),
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
    Ok(axum::Json(Envelope::ok(result)))
}

/// `POST /api/v0/coins/redeem`
pub async fn redeem(State(state): State<AppState>, auth: Auth, Json(body): Json<RedeemRequest>) -> Result<Response, ApiError> {
    auth.require_company(&body.company_id)?;
    let amount = body.amount();
    let cmd = RedeemCmd { company: body.company_id, user: body.user_id, request_id: body.request_id, amount, now_ms: state.clock.now_ms() };
    let Applied { receipt, replayed } = state.store.redeem(cmd).await?;
    Ok(answer(RedeemView::from(receipt), replayed))
}

/// `POST /api/v0/coins/reverse`
pub async fn reverse(State(state): State<AppState>, auth: Auth, Json(body): Json<ReverseRequest>) -> Result<Response, ApiError> {
    auth.require_company(&body.company_id)?;
    let cmd = ReverseCmd { company: body.company_id, request_id: body.request_id, original: body.original_request_id, now_ms: state.clock.now_ms() };
    let Applied { receipt, replayed } = state.store.reverse(cmd).await?;
    Ok(answer(ReverseView::from(receipt), replayed))
}
