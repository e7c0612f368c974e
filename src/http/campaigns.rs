//! Bonus campaigns: create, list, read, change and delete. Scoped like everything else: another
//! company's campaign reads exactly like one that does not exist.

use axum::Json as JsonResponse;
use axum::extract::State;
#[allow(unused_imports)]
use serde_json::json;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Json, PathParam, Query};
use super::wire::campaigns::{CampaignQuery, CampaignView, CreateCampaignRequest, PatchCampaignRequest};
use super::wire::{Envelope, ErrorEnvelope};
use crate::domain::Refusal;
use crate::domain::campaigns::{Campaign, CampaignId};

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// Campaigns one company may hold, ended ones included (a bound on what each allocation reads).
pub const CAMPAIGNS_PER_COMPANY_MAX: usize = 1_000;

/// The campaign the path names, if the caller may see it.
async fn visible(state: &AppState, auth: &Auth, raw: &str) -> Result<Campaign, ApiError> {
    let missing = || ApiError::from(Refusal::CampaignNotFound(raw.to_owned()));
    let id = CampaignId::parse(raw).ok_or_else(missing)?;
    let campaign = state.store.campaign(id).await?.ok_or_else(missing)?;
    if !auth.0.can_act_for(&campaign.company) {
        return Err(missing());
    }
    Ok(campaign)
}

/// Starts a bonus campaign: inside `[startsAt, endsAt)`, allocations of its events earn its
/// multiplier or its fixed bonus, as part of the same credit. When several campaigns apply, an
/// allocation gets the one that gives it the most coins (then the highest multiplier, then the
/// newest); a campaign whose per-user limit is used up gives way to the next.
#[utoipa::path(post, path = "/api/v0/coins/campaigns", tag = "campaigns", operation_id = "createCampaign",
    request_body(content = CreateCampaignRequest, example = json!({"companyId":"SHOP","name":"Launch week: double coins","events":["PURCHASE"],
        "startsAt":"2026-12-07T00:00:00Z","endsAt":"2026-12-14T00:00:00Z","multiplierBps":20000,"maxTriggersPerUser":3})),
    responses(
        (status = 200, description = "The campaign", body = Envelope<CampaignView>),
        (status = 400, description = "VALIDATION_FAILED: a field out of range, both or neither of multiplierBps and bonusCoins, endsAt not after startsAt or not in the future", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 409, description = "LIMIT_REACHED: the company holds 1,000 campaigns", body = ErrorEnvelope),
    ))]
pub async fn create(State(state): State<AppState>, auth: Auth, Json(body): Json<CreateCampaignRequest>) -> Answer<CampaignView> {
    auth.require_company(&body.company_id)?;
    let now = state.clock.now_ms();
    let (company, terms) = body.terms(now).map_err(ApiError::validation)?;
    if state.store.campaigns(&company).await?.len() >= CAMPAIGNS_PER_COMPANY_MAX {
        return Err(ApiError::new(
            super::error::ErrorCode::LimitReached,
            format!("company {company} holds {CAMPAIGNS_PER_COMPANY_MAX} campaigns, the most allowed"),
        ));
    }
    let campaign = state.store.create_campaign(&company, terms, &auth.0.client_id, now).await?;
    Ok(JsonResponse(Envelope::ok(CampaignView::of(&campaign, now))))
}

/// The company's campaigns, newest first.
#[utoipa::path(get, path = "/api/v0/coins/campaigns", tag = "campaigns", operation_id = "listCampaigns", params(CampaignQuery),
    responses(
        (status = 200, description = "Newest first", body = Envelope<Vec<CampaignView>>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn list(State(state): State<AppState>, auth: Auth, Query(q): Query<CampaignQuery>) -> Answer<Vec<CampaignView>> {
    auth.require_company(&q.company_id)?;
    let now = state.clock.now_ms();
    let all = state.store.campaigns(&q.company_id).await?;
    Ok(JsonResponse(Envelope::ok(all.iter().map(|c| CampaignView::of(c, now)).collect())))
}

/// Reads a campaign.
#[utoipa::path(get, path = "/api/v0/coins/campaigns/{campaignId}", tag = "campaigns", operation_id = "getCampaign",
    params(("campaignId" = String, Path, example = "CMP100001")),
    responses(
        (status = 200, description = "The campaign", body = Envelope<CampaignView>),
        (status = 404, description = "CAMPAIGN_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
    ))]
pub async fn get(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<CampaignView> {
    let campaign = visible(&state, &auth, &raw).await?;
    Ok(JsonResponse(Envelope::ok(CampaignView::of(&campaign, state.clock.now_ms()))))
}

/// Changes a campaign. Until 5 seconds before it starts any field may change (a new `startsAt` at
/// least 5 seconds ahead); after that, only `endsAt`, moved earlier: ending it early, at the
/// soonest 5 seconds from now (an earlier or past `endsAt` is moved there), the time every server
/// process needs to see the change.
#[utoipa::path(patch, path = "/api/v0/coins/campaigns/{campaignId}", tag = "campaigns", operation_id = "changeCampaign",
    params(("campaignId" = String, Path, example = "CMP100001")),
    request_body(content = PatchCampaignRequest, example = json!({"endsAt":"2026-12-10T00:00:00Z"})),
    responses(
        (status = 200, description = "The campaign as changed", body = Envelope<CampaignView>),
        (status = 400, description = "VALIDATION_FAILED", body = ErrorEnvelope),
        (status = 404, description = "CAMPAIGN_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
        (status = 409, description = "CAMPAIGN_STARTED: it has started (or starts within 5 seconds) and the change is not an earlier end", body = ErrorEnvelope),
    ))]
pub async fn patch(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam, Json(body): Json<PatchCampaignRequest>) -> Answer<CampaignView> {
    let campaign = visible(&state, &auth, &raw).await?;
    let patch = body.patch().map_err(ApiError::validation)?;
    let now = state.clock.now_ms();
    let campaign = state.store.update_campaign(campaign.id, patch, &auth.0.client_id, now).await?;
    Ok(JsonResponse(Envelope::ok(CampaignView::of(&campaign, now))))
}

/// Deletes a campaign that starts more than 5 seconds from now (one that has started is ended
/// early with `PATCH endsAt`).
#[utoipa::path(delete, path = "/api/v0/coins/campaigns/{campaignId}", tag = "campaigns", operation_id = "deleteCampaign",
    params(("campaignId" = String, Path, example = "CMP100001")),
    responses(
        (status = 200, description = "Deleted: the campaign as it was", body = Envelope<CampaignView>),
        (status = 404, description = "CAMPAIGN_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
        (status = 409, description = "CAMPAIGN_STARTED: it has started, or starts within 5 seconds", body = ErrorEnvelope),
    ))]
pub async fn delete(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<CampaignView> {
    let campaign = visible(&state, &auth, &raw).await?;
    let now = state.clock.now_ms();
    state.store.delete_campaign(campaign.id, now).await?;
    Ok(JsonResponse(Envelope::ok(CampaignView::of(&campaign, now))))
}
