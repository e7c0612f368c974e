//! Writing the ledger: allocation (single and bulk, exactly-once), redemption and
//! reversal. A replay answers what the first request answered, with `Idempotent-Replayed: true`.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::{BULK_BODY_BYTES_MAX, Json};
use super::wire::coins::{
    ALLOCATED, ActivateRequest, ActivateView, AdjustRequest, AdjustView, AllocateRequest, BulkAllocateRequest, BulkItemResult, BulkResult, BulkStatus,
    RedeemRequest, RedeemView, ReverseRequest, ReverseView, SimulateRequest, SimulatedOperation, SimulationView,
};
use super::wire::{Envelope, ErrorEnvelope};
use crate::domain::allocate::{AllocateCmd, AllocateOk};
use crate::domain::redeem::RedeemCmd;
use crate::metrics::{self, Movement};
use crate::store::Applied;
#[allow(unused_imports)]
use serde_json::json;

pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

fn answer<T: Serialize>(payload: T, replayed: bool) -> Response {
    let mut res = axum::Json(Envelope::ok(payload)).into_response();
    if replayed {
        res.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    res
}

fn command(body: AllocateRequest, now_ms: i64) -> AllocateCmd {
    let purchase = body.purchase();
    AllocateCmd { company: body.company_id, user: body.user_id, event: body.event, request_id: body.request_id, purchase, now_ms }
}

/// Credits a user the coins an event earns, exactly once per requestId — and, when the body names
/// an `orderId`, once per purchase: a retry of the same order under a new requestId (same user,
/// same `amountMinor`) replays the first and becomes its alias. A PERCENT configuration earns on
/// `amountMinor`; an allocation that earns 0 coins is recorded (state ZERO) and answered as usual.
#[utoipa::path(post, path = "/api/v0/enkash-coins/allocate-coin", tag = "coins",
    request_body(content = AllocateRequest, example = json!({"companyId":"CEK0TCW2W8","event":"REFERRAL_EVENT","requestId":"COIN_REQ1234567","userId":"EKQZVMQK"})),
    responses(
        (status = 200, description = "Credited, or (with `Idempotent-Replayed: true`) credited before by the same request", body = Envelope<String>,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
         example = json!({"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"})),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "COIN_CONFIG_NOT_FOUND: no active configuration for the company and event", body = ErrorEnvelope),
        (status = 409, description = "REQUEST_ID_CONFLICT, ORDER_ID_CONFLICT, USER_COMPANY_MISMATCH, LIMIT_REACHED or BALANCE_OVERFLOW; nothing was credited", body = ErrorEnvelope),
    ))]
pub async fn allocate(State(state): State<AppState>, auth: Auth, Json(body): Json<AllocateRequest>) -> Result<Response, ApiError> {
    auth.require_company(&body.company_id)?;
    let outcome =
        state.store.allocate(vec![command(body, state.clock.now_ms())]).await.pop().ok_or_else(|| ApiError::internal("allocate returned no result"))?;
    let outcome = outcome?;
    if let AllocateOk::Allocated { coins, .. } = outcome {
        metrics::moved(Movement::Allocated, 1, coins.get().unsigned_abs());
    }
    Ok(answer(ALLOCATED, matches!(outcome, AllocateOk::Replayed { .. })))
}
/// Allocates up to 1,000 items, each exactly as a single allocation would be.
#[utoipa::path(post, path = "/api/v0/enkash-coins/allocate-coins", tag = "coins",
    request_body(content = BulkAllocateRequest, description = "1 to 1,000 items; the body may be up to 1 MiB",
        example = json!({"allocations":[{"companyId":"CEK0TCW2W8","event":"REFERRAL_EVENT","requestId":"COIN_REQ1","userId":"EKQZVMQK"},{"companyId":"CEK0TCW2W8","event":"REFERRAL_EVENT","requestId":"COIN_REQ2","userId":"EK6CYE6K"}]})),
    responses((status = 200, description = "One result per item, in request order; a failed item carries the code a single allocation would have answered (FORBIDDEN, VALIDATION_FAILED, COIN_CONFIG_NOT_FOUND, REQUEST_ID_CONFLICT, ORDER_ID_CONFLICT, USER_COMPANY_MISMATCH, LIMIT_REACHED, BALANCE_OVERFLOW, UNAVAILABLE); an item that earned nothing is ALLOCATED with 0 coins", body = Envelope<BulkResult>)))]
pub async fn allocate_many(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<BulkAllocateRequest, BULK_BODY_BYTES_MAX>,
) -> Result<axum::Json<Envelope<BulkResult>>, ApiError> {
    let now_ms = state.clock.now_ms();
    let failed = |request_id: Option<String>, e: ApiError| BulkItemResult {
        request_id,
        status: BulkStatus::Failed,
        coins: None,
        error_code: Some(e.code.as_str()),
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
                    Some(Ok(AllocateOk::Allocated { coins, .. })) => {
                        metrics::moved(Movement::Allocated, 1, coins.get().unsigned_abs());
                        done(BulkStatus::Allocated, coins)
                    }
                    Some(Ok(AllocateOk::Zero)) => done(BulkStatus::Allocated, crate::domain::Coins::ZERO),
                    Some(Ok(AllocateOk::Replayed { coins })) => done(BulkStatus::Replayed, coins),
                    Some(Err(e)) => failed(request_id, e.into()),
                    None => failed(request_id, ApiError::internal("bulk allocation lost an item")),
                }
            }
        };
        match item.status {
            BulkStatus::Allocated => result.allocated += 1,
            BulkStatus::Replayed => result.replayed += 1,
            BulkStatus::Failed => result.failed += 1,
        }
        result.results.push(item);
    }
    Ok(axum::Json(Envelope::ok(result)))
}

/// Spends a user's coins, soonest-expiring first, exactly once per requestId.
#[utoipa::path(post, path = "/api/v0/coins/redeem", tag = "coins",
    request_body(content = RedeemRequest, example = json!({"companyId":"SHOP","userId":"ASHA","requestId":"SPEND-1","coins":30})),
    responses(
        (status = 200, description = "Debited, or (with `Idempotent-Replayed: true`) the first answer again", body = Envelope<RedeemView>,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
         example = json!({"payload":{"requestId":"SPEND-1","coins":30,"currency":"INR","amountMinor":3000,"balance":70},"response_code":0,"response_message":"Success"})),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "USER_NOT_FOUND: never credited, or another company's", body = ErrorEnvelope),
        (status = 409, description = "REQUEST_ID_CONFLICT, INSUFFICIENT_BALANCE or LIMIT_REACHED (an amount too large); nothing was debited", body = ErrorEnvelope),
    ))]
pub async fn redeem(State(state): State<AppState>, auth: Auth, Json(body): Json<RedeemRequest>) -> Result<Response, ApiError> {
    auth.require_company(&body.company_id)?;
    let amount = body.amount();
    let cmd = RedeemCmd { company: body.company_id, user: body.user_id, request_id: body.request_id, amount, now_ms: state.clock.now_ms() };
    let Applied { receipt, replayed, expired } = state.store.redeem(cmd).await?;
    metrics::moved(Movement::Expired, expired.lots, expired.coins);
    if !replayed {
        metrics::moved(Movement::Redeemed, 1, receipt.coins.unsigned_abs());
    }
    Ok(answer(RedeemView::from(receipt), replayed))
}

/// Returns an allocation or a redemption: all that remains of it, or part of it (some coins, or
/// for a purchase what a refund of part of its value takes back), each part exactly once on its
/// own request id.
#[utoipa::path(post, path = "/api/v0/coins/reverse", tag = "coins",
    request_body(content = ReverseRequest, examples(
        ("whole" = (summary = "All that remains", value = json!({"companyId":"SHOP","requestId":"RETURN-1","originalRequestId":"SPEND-1"}))),
        ("refund" = (summary = "A partial refund of a purchase, by order", value = json!({"companyId":"SHOP","requestId":"RETURN-2","orderId":"ORD-1","event":"PURCHASE","amountMinor":25000}))),
        ("capped" = (summary = "Some coins, taking what the user still has", value = json!({"companyId":"SHOP","requestId":"RETURN-3","originalRequestId":"BUY-1","coins":30,"onShortfall":"CAP"}))),
    )),
    responses(
        (status = 200, description = "Returned, or (with `Idempotent-Replayed: true`) the first answer again", body = Envelope<ReverseView>,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
         example = json!({"payload":{"requestId":"RETURN-2","originalRequestId":"BUY-1","kind":"REVERSE","coins":-25,"coinsShort":0,"shortAmountMinor":0,
                          "coinsRemaining":75,"amountRefundedMinor":25000,"balance":75,"pendingBalance":0},"response_code":0,"response_message":"Success"})),
        (status = 400, description = "VALIDATION_FAILED: a field is malformed, or the original or the part is asked for two ways", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such originalRequestId (or order of the event) in the company", body = ErrorEnvelope),
        (status = 409, description = "REQUEST_ID_CONFLICT, ALREADY_REVERSED, NOT_REVERSIBLE, REVERSAL_EXCEEDS_REMAINING, AMOUNT_NOT_RECORDED or \
                                      INSUFFICIENT_BALANCE (with onShortfall REJECT); nothing was changed", body = ErrorEnvelope),
    ))]
pub async fn reverse(State(state): State<AppState>, auth: Auth, Json(body): Json<ReverseRequest>) -> Result<Response, ApiError> {
    let (view, replayed) = reversed(&state, &auth, body).await?;
    Ok(answer(view, replayed))
}

/// A return as the API makes it, for its handler and the dashboard: what it did, and whether it
/// was a replay.
pub async fn reversed(state: &AppState, auth: &Auth, body: ReverseRequest) -> Result<(ReverseView, bool), ApiError> {
    auth.require_company(&body.company_id)?;
    let cmd = body.command(state.clock.now_ms()).map_err(ApiError::validation)?;
    let Applied { receipt, replayed, expired } = state.store.reverse(cmd).await?;
    metrics::moved(Movement::Expired, expired.lots, expired.coins);
    if !replayed {
        metrics::moved(Movement::Reversed, 1, receipt.coins.unsigned_abs());
    }
    Ok((ReverseView::from(receipt), replayed))
}

/// Adds coins to a user (a goodwill credit, a balance imported with its original expiry) or takes
/// them (soonest-expiring first), with a reason; the acting client is recorded. Exactly-once per
/// requestId, and returned through `/coins/reverse` like an allocation (a credit) or a redemption
/// (a debit).
#[utoipa::path(post, path = "/api/v0/coins/adjust", tag = "coins",
    request_body(content = AdjustRequest, examples(
        ("goodwill" = (summary = "A goodwill credit, expiring in a year", value = json!({"companyId":"SHOP","userId":"ASHA","requestId":"ADJ-1","coins":200,"reason":"Late delivery of order 1042","validityDays":365}))),
        ("import" = (summary = "A balance imported with its original expiry", value = json!({"companyId":"SHOP","userId":"ASHA","requestId":"IMPORT-ASHA-1","coins":1250,"reason":"Imported from the old programme","expiresAt":"2027-03-31T23:59:59Z"}))),
        ("claw-back" = (summary = "Coins taken back, as many as the user has", value = json!({"companyId":"SHOP","userId":"ASHA","requestId":"ADJ-2","coins":-500,"reason":"Fraudulent order 2231","onShortfall":"CAP"}))),
    )),
    responses(
        (status = 200, description = "Adjusted, or (with `Idempotent-Replayed: true`) the first answer again", body = Envelope<AdjustView>,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
         example = json!({"payload":{"requestId":"ADJ-1","userId":"ASHA","coins":200,"coinsShort":0,"reason":"Late delivery of order 1042","activatesAt":null,
                          "expiresAt":"2027-12-05T10:00:00.000Z","balance":200,"pendingBalance":0},"response_code":0,"response_message":"Success"})),
        (status = 400, description = "VALIDATION_FAILED: a field is malformed, or fields that do not fit together (an expiry or hold on a debit, validityDays with expiresAt...)", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "USER_NOT_FOUND: a debit of a user never credited, or another company's", body = ErrorEnvelope),
        (status = 409, description = "REQUEST_ID_CONFLICT, USER_COMPANY_MISMATCH (a credit of another company's user), or INSUFFICIENT_BALANCE (a debit with onShortfall REJECT); nothing was changed", body = ErrorEnvelope),
    ))]
pub async fn adjust(State(state): State<AppState>, auth: Auth, Json(body): Json<AdjustRequest>) -> Result<Response, ApiError> {
    let (view, replayed) = adjusted(&state, &auth, body).await?;
    Ok(answer(view, replayed))
}

/// An adjustment as the API makes it, for its handler and the dashboard: what it did, and whether
/// it was a replay.
pub async fn adjusted(state: &AppState, auth: &Auth, body: AdjustRequest) -> Result<(AdjustView, bool), ApiError> {
    auth.require_company(&body.company_id)?;
    let cmd = body.command(&auth.0.client_id, state.clock.now_ms()).map_err(ApiError::validation)?;
    let Applied { receipt, replayed, expired } = state.store.adjust(cmd).await?;
    metrics::moved(Movement::Expired, expired.lots, expired.coins);
    if !replayed {
        metrics::moved(Movement::Adjusted, 1, receipt.coins.unsigned_abs());
    }
    Ok((AdjustView::from(receipt), replayed))
}

/// What an allocation or a return would do, now or at `at`, decided by the same rules and code as
/// the real call, and writing nothing at all (no claim, no cap use, no user, no event). Business
/// refusals are answered 200 with `outcome: REFUSE` and the `errorCode` the real call would give;
/// a malformed body is 400 as usual. The real call with the same requestId afterwards applies.
#[utoipa::path(post, path = "/api/v0/coins/simulate", tag = "coins",
    request_body(content = SimulateRequest, examples(
        ("purchase" = (summary = "What would this purchase earn?", value = json!({"operation":"ALLOCATE","companyId":"SHOP","event":"PURCHASE","requestId":"TILL-9","userId":"ASHA","orderId":"ORD-9","amountMinor":49999}))),
        ("refund" = (summary = "What would this refund take back?", value = json!({"operation":"REVERSE","companyId":"SHOP","requestId":"RET-9","orderId":"ORD-1","event":"PURCHASE","amountMinor":25000}))),
    )),
    responses(
        (status = 200, description = "The simulated outcome (nothing was written)", body = Envelope<SimulationView>,
         example = json!({"payload":{"outcome":"ALLOCATE","coins":9,"baseCoins":9,"state":"ACTIVE","activatesAt":null,"expiresAt":"2027-12-05T10:00:00.000Z",
                          "coinConfigId":"WCC100001","calculation":{"amountType":"PERCENT","amountMinor":49999,"rateBps":200,"minorUnitsPerCoin":100,
                          "multiplierBps":10000,"exact":"9.9998","rounding":"FLOOR","cappedBy":null,"amount":null,"minAmountMinor":null,"maxCoinsPerAllocation":null,"campaignId":null,"campaignBps":null,"campaignBonusCoins":null,
                          "tierCode":null,"tierBps":null},
                          "tierBefore":null,"tierAfter":null,"balanceAfter":109,"pendingAfter":0,"errorCode":null,"message":null},
                          "response_code":0,"response_message":"Success"})),
        (status = 400, description = "VALIDATION_FAILED: an unknown operation, a malformed field, or `at` in the past", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn simulate(State(state): State<AppState>, auth: Auth, Json(body): Json<SimulateRequest>) -> Result<Response, ApiError> {
    auth.require_company(body.company())?;
    let operation = match body.operation {
        SimulatedOperation::Allocate(_) => "ALLOCATE",
        SimulatedOperation::Reverse(_) => "REVERSE",
    };
    let cmd = body.command(state.clock.now_ms()).map_err(ApiError::validation)?;
    let simulation = state.store.simulate(cmd).await?;
    let view = SimulationView::of(simulation, operation, |r| {
        let e = ApiError::from(r);
        (e.code.as_str(), e.message)
    });
    Ok(answer(view, false))
}

/// Makes a held allocation spendable now, before its `activatesAt`; exactly-once on its own
/// request id. Its expiry clock starts now.
#[utoipa::path(post, path = "/api/v0/coins/activate", tag = "coins",
    request_body(content = ActivateRequest, example = json!({"companyId":"SHOP","requestId":"ACT-1","originalRequestId":"BUY-1"})),
    responses(
        (status = 200, description = "Activated, or already active (`alreadyActive: true`, nothing written), or (with `Idempotent-Replayed: true`) the first answer again",
         body = Envelope<ActivateView>,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
         example = json!({"payload":{"requestId":"ACT-1","originalRequestId":"BUY-1","alreadyActive":false,"coins":100,"activatedAt":"2026-12-05T10:00:00.000Z",
                          "expiresAt":"2027-12-05T10:00:00.000Z","balance":100,"pendingBalance":0},"response_code":0,"response_message":"Success"})),
        (status = 400, description = "VALIDATION_FAILED: a field is malformed, or the allocation is named two ways", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such allocation (or order of the event) in the company", body = ErrorEnvelope),
        (status = 409, description = "REQUEST_ID_CONFLICT, or ALREADY_REVERSED (canceled or reversed: it cannot be activated); nothing was changed", body = ErrorEnvelope),
    ))]
pub async fn activate(State(state): State<AppState>, auth: Auth, Json(body): Json<ActivateRequest>) -> Result<Response, ApiError> {
    auth.require_company(&body.company_id)?;
    let cmd = body.command(state.clock.now_ms()).map_err(ApiError::validation)?;
    let Applied { receipt, replayed, expired } = state.store.activate(cmd).await?;
    metrics::moved(Movement::Expired, expired.lots, expired.coins);
    Ok(answer(ActivateView::from(receipt), replayed))
}
