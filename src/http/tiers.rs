//! Status tiers: a company's scheme (set up or replaced, read, removed) and members' manual
//! floors. A member's tier is shown with the user (`GET /api/v0/coins/users/{userId}`).

use axum::Json as JsonResponse;
use axum::extract::State;
#[allow(unused_imports)]
use serde_json::json;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Json, PathParam, Query};
use super::wire::tiers::{MemberTierView, PutTierFloorRequest, PutTiersRequest, TierSchemeView, TiersQuery};
use super::wire::{Envelope, ErrorEnvelope, FromField};
use crate::domain::{CompanyId, Refusal, UserId};
use crate::store::tiers::StoredScheme;

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// Sets up or replaces the company's tier scheme. Members are placed at once: setting a scheme
/// up counts every credit the company ever made, and every member whose qualifying coins reach a
/// tier above the first is upgraded (`tier.upgraded`, cause `SCHEME_CHANGE`). A replaced scheme
/// upgrades members who now reach a higher tier; one who is in a tier the new scheme no longer
/// has is placed by their qualifying coins. Nobody else moves down before their `tierExpiresAt`.
/// The whole company is placed in one transaction: on a large one, set the scheme up before
/// launch.
#[utoipa::path(put, path = "/api/v0/coins/tiers", tag = "tiers", operation_id = "putTiers",
    request_body(content = PutTiersRequest, example = json!({"companyId":"SHOP","basis":"ROLLING","windowDays":365,"retentionDays":365,"downgrade":"ONE_DOWN",
        "tiers":[{"code":"BRONZE","name":"Bronze","threshold":0,"earnMultiplierBps":10000},{"code":"SILVER","name":"Silver","threshold":1000,"earnMultiplierBps":12500},
        {"code":"GOLD","name":"Gold","threshold":5000,"earnMultiplierBps":15000}]})),
    responses(
        (status = 200, description = "The scheme as stored", body = Envelope<TierSchemeView>),
        (status = 400, description = "VALIDATION_FAILED: a field out of range, thresholds not starting at 0 and increasing, a code used twice, windowDays with LIFETIME or without ROLLING", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn put(State(state): State<AppState>, auth: Auth, Json(body): Json<PutTiersRequest>) -> Answer<TierSchemeView> {
    auth.require_company(&body.company_id)?;
    let (company, scheme) = body.scheme().map_err(ApiError::validation)?;
    let now = state.clock.now_ms();
    state.store.put_tiers(&company, scheme.clone(), &auth.0.client_id, now).await?;
    Ok(JsonResponse(Envelope::ok(TierSchemeView::of(&company, &StoredScheme { scheme, updated_at: now }))))
}

/// The company's tier scheme.
#[utoipa::path(get, path = "/api/v0/coins/tiers", tag = "tiers", operation_id = "getTiers", params(TiersQuery),
    responses(
        (status = 200, description = "The scheme", body = Envelope<TierSchemeView>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "TIERS_NOT_CONFIGURED: the company has no scheme", body = ErrorEnvelope),
    ))]
pub async fn get(State(state): State<AppState>, auth: Auth, Query(q): Query<TiersQuery>) -> Answer<TierSchemeView> {
    let stored = visible(&state, &auth, &q.company_id).await?;
    Ok(JsonResponse(Envelope::ok(TierSchemeView::of(&q.company_id, &stored))))
}

/// The company's scheme, if the caller may act for the company.
async fn visible(state: &AppState, auth: &Auth, company: &CompanyId) -> Result<StoredScheme, ApiError> {
    auth.require_company(company)?;
    Ok(state.store.tiers(company).await?.ok_or_else(|| Refusal::TiersNotConfigured(company.clone()))?)
}

/// Removes the company's tier scheme: members keep no tier, allocations earn no tier multiplier,
/// and the qualifying coins counted for it are dropped (a scheme set up again counts the history
/// afresh). The tier changes already reported stay in the members' history.
#[utoipa::path(delete, path = "/api/v0/coins/tiers", tag = "tiers", operation_id = "deleteTiers", params(TiersQuery),
    responses(
        (status = 200, description = "Removed: the scheme as it was", body = Envelope<TierSchemeView>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "TIERS_NOT_CONFIGURED: the company has no scheme", body = ErrorEnvelope),
    ))]
pub async fn delete(State(state): State<AppState>, auth: Auth, Query(q): Query<TiersQuery>) -> Answer<TierSchemeView> {
    let stored = visible(&state, &auth, &q.company_id).await?;
    state.store.delete_tiers(&q.company_id).await?;
    Ok(JsonResponse(Envelope::ok(TierSchemeView::of(&q.company_id, &stored))))
}

/// Sets a member's manual floor: a tier they never fall below, with a reason (a status match, a
/// VIP). A floor above their tier places them in it at once (`tier.upgraded`, cause
/// `MANUAL_FLOOR`). `tierCode: null` removes the floor; the member then moves down, if at all,
/// only at their next evaluation. A member never credited is opened in the company, as a credit
/// would.
#[utoipa::path(put, path = "/api/v0/coins/users/{userId}/tier", tag = "tiers", operation_id = "putTierFloor",
    params(("userId" = UserId, Path)),
    request_body(content = PutTierFloorRequest, example = json!({"companyId":"SHOP","tierCode":"GOLD","reason":"Matched their Gold status at a partner airline"})),
    responses(
        (status = 200, description = "The member's tier after it", body = Envelope<MemberTierView>),
        (status = 400, description = "VALIDATION_FAILED: a malformed or unknown tier code, or a floor without a reason", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 404, description = "TIERS_NOT_CONFIGURED: the company has no scheme", body = ErrorEnvelope),
        (status = 409, description = "USER_COMPANY_MISMATCH: the user belongs to another company", body = ErrorEnvelope),
    ))]
pub async fn put_floor(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam, Json(body): Json<PutTierFloorRequest>) -> Answer<MemberTierView> {
    let user = UserId::from_field("userId", Some(&serde_json::Value::String(raw))).map_err(ApiError::validation)?;
    auth.require_company(&body.company_id)?;
    // A floor needs a reason; removing one keeps none.
    let reason = body.tier_code.0.as_ref().and(body.reason.map(|r| r.0));
    if body.tier_code.0.is_some() && reason.is_none() {
        return Err(ApiError::validation("reason is required with a tierCode"));
    }
    let tier = state.store.set_tier_floor(&body.company_id, &user, body.tier_code.0, reason, state.clock.now_ms()).await?;
    Ok(JsonResponse(Envelope::ok(MemberTierView::from(tier))))
}
