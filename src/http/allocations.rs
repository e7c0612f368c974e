//! Allocation records: what one allocation earned, from what, and what became of it.

use axum::Json as JsonResponse;
use axum::extract::State;

use super::AppState;
use super::auth::Auth;
use super::error::{ApiError, ErrorCode};
use super::extract::{PathParam, Query};
use super::wire::allocations::{AllocationQuery, AllocationView, OrderQuery};
use super::wire::{Envelope, ErrorEnvelope, FromField};
use crate::domain::RequestId;
use crate::domain::allocation::AllocationState;
use crate::metrics::{self, Movement};
use crate::store::AllocationRecord;

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// A held allocation whose hold has ended is active on this read already: its activation (and
/// anything else due for the user) is written first, as the sweeper would write it.
fn activation_due(state: &AppState, record: &Option<AllocationRecord>) -> Option<crate::domain::UserId> {
    let r = record.as_ref()?;
    let due = r.state == AllocationState::Pending && r.activates_at_ms.is_some_and(|at| at <= state.clock.now_ms());
    due.then(|| r.user.clone())
}

async fn settle(state: &AppState, user: &crate::domain::UserId) -> Result<(), ApiError> {
    let expired = state.store.settle_expired(user, state.clock.now_ms()).await?;
    metrics::moved(Movement::Expired, expired.lots, expired.coins);
    Ok(())
}

fn found(record: Option<AllocationRecord>, what: String) -> Answer<AllocationView> {
    let record = record.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no allocation {what}")))?;
    Ok(JsonResponse(Envelope::ok(AllocationView::from(record))))
}

/// An allocation's record, by its requestId or one of its aliases.
#[utoipa::path(get, path = "/api/v0/coins/allocations/{requestId}", tag = "coins",
    params(("requestId" = RequestId, Path), AllocationQuery),
    responses(
        (status = 200, description = "The record", body = Envelope<AllocationView>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no allocation with this requestId in the company", body = ErrorEnvelope),
    ))]
pub async fn by_request(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam, Query(q): Query<AllocationQuery>) -> Answer<AllocationView> {
    let request_id = RequestId::from_field("requestId", Some(&serde_json::Value::String(raw))).map_err(ApiError::validation)?;
    auth.require_company(&q.company_id)?;
    let mut record = state.store.allocation(&q.company_id, &request_id).await?;
    if let Some(user) = activation_due(&state, &record) {
        settle(&state, &user).await?;
        record = state.store.allocation(&q.company_id, &request_id).await?;
    }
    found(record, format!("with requestId {request_id} in company {}", q.company_id))
}

/// The record of an order's live allocation, else of its latest one.
#[utoipa::path(get, path = "/api/v0/coins/allocations", tag = "coins", params(OrderQuery),
    responses(
        (status = 200, description = "The record", body = Envelope<AllocationView>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no allocation for this order and event in the company", body = ErrorEnvelope),
    ))]
pub async fn by_order(State(state): State<AppState>, auth: Auth, Query(q): Query<OrderQuery>) -> Answer<AllocationView> {
    auth.require_company(&q.company_id)?;
    let mut record = state.store.allocation_by_order(&q.company_id, &q.event, &q.order_id).await?;
    if let Some(user) = activation_due(&state, &record) {
        settle(&state, &user).await?;
        record = state.store.allocation_by_order(&q.company_id, &q.event, &q.order_id).await?;
    }
    found(record, format!("for orderId {} of event {} in company {}", q.order_id, q.event, q.company_id))
}
