//! Coin configurations: create, read and change, with DEFAULT/CUSTOM scoping.

use axum::Json as JsonResponse;
use axum::extract::State;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Json, PathParam, Query};
use super::wire::configs::{AuditEntryView, CoinConfigView, ConfigListQuery, CreateConfigRequest, CreateConfigSchema, PatchConfigRequest, PatchConfigSchema};
use super::wire::{Envelope, ErrorEnvelope};
use crate::domain::config::ConfigValues;
use crate::domain::{CoinConfig, CoinConfigId, ConfigKind, Refusal};
use crate::store::{ConfigFilter, StoreError};
#[allow(unused_imports)]
use serde_json::json;

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// Who may hold or change a configuration with these values.
fn authorize(auth: &Auth, values: &ConfigValues) -> Result<(), ApiError> {
    match values.kind {
        ConfigKind::Default => auth.require_admin("create or change DEFAULT configurations"),
        ConfigKind::Custom => auth.require_company(&values.company_id),
    }
}

/// Who may read this configuration: DEFAULT ones are readable by all.
fn authorize_read(auth: &Auth, config: &CoinConfig) -> Result<(), ApiError> {
    match config.values.kind {
        ConfigKind::Default => Ok(()),
        ConfigKind::Custom => auth.require_company(&config.values.company_id),
    }
}

fn parse_id(raw: &str) -> Result<CoinConfigId, ApiError> {
    CoinConfigId::parse(raw).ok_or_else(|| Refusal::UnknownConfig(raw.to_owned()).into())
}

async fn readable(state: &AppState, auth: &Auth, raw: &str) -> Result<CoinConfig, ApiError> {
    let config = state.store.get_config(parse_id(raw)?).await?.ok_or_else(|| Refusal::UnknownConfig(raw.to_owned()))?;
    authorize_read(auth, &config)?;
    Ok(config)
}
/// Creates a coin configuration.
///
/// `DEFAULT` applies to every company (admin clients only); `CUSTOM` overrides it for one.
#[utoipa::path(post, path = "/api/v0/enkash-coins/create-coins-config", tag = "configurations",
    request_body(content = CreateConfigSchema, example = json!({"configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6})),
    responses(
        (status = 200, description = "The configuration created", body = Envelope<CoinConfigView>,
         example = json!({"payload":{"coinConfigId":"WCC817428","configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6,"validityDays":null,"maxPerUserPerDay":null,"maxPerUser":null,"active":true},"response_code":0,"response_message":"Success"})),
        (status = 403, description = "FORBIDDEN: a DEFAULT by a non-admin, or a CUSTOM of another company", body = ErrorEnvelope),
        (status = 409, description = "DUPLICATE_COIN_CONFIG: the slot is taken; the sentence names the configuration holding it; CONFLICT: a concurrent create won", body = ErrorEnvelope),
    ))]
pub async fn create(State(state): State<AppState>, auth: Auth, Json(body): Json<CreateConfigRequest>) -> Answer<CoinConfigView> {
    let values = body.into_values().map_err(ApiError::validation)?;
    authorize(&auth, &values)?;
    let config = state.store.create_config(values, &auth.0.client_id, state.clock.now_ms()).await?;
    Ok(JsonResponse(Envelope::ok(CoinConfigView::from(&config))))
}
/// Reads a coin configuration.
#[utoipa::path(get, path = "/api/v0/enkash-coins/{coinConfigId}", tag = "configurations",
    params(("coinConfigId" = String, Path, description = "`WCC` and digits", example = "WCC817428")),
    responses(
        (status = 200, description = "The configuration", body = Envelope<CoinConfigView>),
        (status = 403, description = "FORBIDDEN: another company's CUSTOM configuration", body = ErrorEnvelope),
        (status = 404, description = "COIN_CONFIG_NOT_FOUND", body = ErrorEnvelope),
    ))]
pub async fn get(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<CoinConfigView> {
    let config = readable(&state, &auth, &raw).await?;
    Ok(JsonResponse(Envelope::ok(CoinConfigView::from(&config))))
}

/// Re-reads after a concurrent change before giving up with `CONCURRENT_UPDATE`.
const PATCH_ATTEMPTS_MAX: usize = 3;
/// Changes a coin configuration; past allocations are never rewritten.
#[utoipa::path(patch, path = "/api/v0/enkash-coins/{coinConfigId}", tag = "configurations",
    params(("coinConfigId" = String, Path, description = "`WCC` and digits", example = "WCC817428")),
    request_body(content = PatchConfigSchema, example = json!({"amount": 10, "configuration": "DEFAULT"})),
    responses(
        (status = 200, description = "The configuration as changed", body = Envelope<CoinConfigView>),
        (status = 403, description = "FORBIDDEN: a DEFAULT by a non-admin, or moving a CUSTOM to another company", body = ErrorEnvelope),
        (status = 404, description = "COIN_CONFIG_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "DUPLICATE_COIN_CONFIG, CONCURRENT_UPDATE or CONFLICT", body = ErrorEnvelope),
    ))]
pub async fn patch(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam, Json(change): Json<PatchConfigRequest>) -> Answer<CoinConfigView> {
    let id = parse_id(&raw)?;
    let mut attempt = 1;
    loop {
        let current = readable(&state, &auth, &raw).await?;
        // Scope is checked against the old values and the new: a company client can neither
        // move a configuration to another company nor turn it into a DEFAULT.
        authorize(&auth, &current.values)?;
        let next = change.apply_to(&current.values).map_err(ApiError::validation)?;
        authorize(&auth, &next)?;
        match state.store.update_config(id, current.version, next, &auth.0.client_id, state.clock.now_ms()).await {
            Ok(config) => return Ok(JsonResponse(Envelope::ok(CoinConfigView::from(&config)))),
            Err(StoreError::Refused(Refusal::ConcurrentUpdate(_))) if attempt < PATCH_ATTEMPTS_MAX => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Lists the configurations the caller may read, by id.
#[utoipa::path(get, path = "/api/v0/enkash-coins", tag = "configurations", params(ConfigListQuery),
    responses((status = 200, description = "The configurations the caller may read, by id", body = Envelope<Vec<CoinConfigView>>)))]
pub async fn list(State(state): State<AppState>, auth: Auth, Query(q): Query<ConfigListQuery>) -> Answer<Vec<CoinConfigView>> {
    let filter = ConfigFilter { company: q.company_id, event: q.event, kind: q.configuration };
    let configs = state.store.list_configs(filter).await?;
    Ok(JsonResponse(Envelope::ok(configs.iter().filter(|c| authorize_read(&auth, c).is_ok()).map(CoinConfigView::from).collect())))
}

/// The audit trail of a configuration: every create and change, oldest first.
#[utoipa::path(get, path = "/api/v0/enkash-coins/{coinConfigId}/history", tag = "configurations",
    params(("coinConfigId" = String, Path, description = "`WCC` and digits", example = "WCC817428")),
    responses(
        (status = 200, description = "Every create and change, oldest first", body = Envelope<Vec<AuditEntryView>>),
        (status = 403, description = "FORBIDDEN: another company's CUSTOM configuration", body = ErrorEnvelope),
        (status = 404, description = "COIN_CONFIG_NOT_FOUND", body = ErrorEnvelope),
    ))]
pub async fn history(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<Vec<AuditEntryView>> {
    let config = readable(&state, &auth, &raw).await?;
    let parse = |s: &str| serde_json::from_str(s).map_err(ApiError::internal);
    let mut views = Vec::new();
    for r in state.store.config_history(config.id).await? {
        views.push(AuditEntryView {
            action: r.action,
            client_id: r.client_id,
            at: crate::clock::rfc3339(r.at_ms),
            before: r.before_json.as_deref().map(parse).transpose()?,
            after: parse(&r.after_json)?,
        });
    }
    Ok(JsonResponse(Envelope::ok(views)))
}
