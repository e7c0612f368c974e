//! Coin configurations (SPEC §4, §5): create, read and change, with DEFAULT/CUSTOM scoping.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use serde::Serialize;

use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Fields, JsonObject, PathParam};
use super::{AppState, Envelope};
use crate::domain::config::ConfigValues;
use crate::domain::{CoinConfig, CoinConfigId, CompanyId, ConfigKind, EventName};
use crate::store::{ConfigFilter, Refusal, StoreError};

/// The configuration object on the wire: EnKash's five fields first, then ours (SPEC §5).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    coin_config_id: String,
    configuration: &'static str,
    company_id: String,
    event: String,
    amount: i64,
    validity_days: Option<i64>,
    max_per_user_per_day: Option<i64>,
    max_per_user: Option<i64>,
    active: bool,
}

impl From<&CoinConfig> for ConfigView {
    fn from(c: &CoinConfig) -> Self {
        let v = &c.values;
        Self {
            coin_config_id: c.id.to_string(),
            configuration: v.kind.as_str(),
            company_id: v.company_id.to_string(),
            event: v.event.to_string(),
            amount: v.amount.get(),
            validity_days: v.validity_days,
            max_per_user_per_day: v.max_per_user_per_day,
            max_per_user: v.max_per_user,
            active: v.active,
        }
    }
}

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
    CoinConfigId::parse(raw).ok_or_else(|| ApiError::from(Refusal::UnknownConfig(raw.to_owned())))
}

pub async fn create(State(state): State<AppState>, auth: Auth, JsonObject(body): JsonObject) -> Result<Json<Envelope<ConfigView>>, ApiError> {
    let f = Fields(&body);
    let values = ConfigValues {
        kind: f.configuration("configuration")?,
        company_id: f.company("companyId")?,
        event: f.event("event")?,
        amount: f.amount("amount")?,
        validity_days: f.validity_days()?.flatten(),
        max_per_user_per_day: f.cap("maxPerUserPerDay")?.flatten(),
        max_per_user: f.cap("maxPerUser")?.flatten(),
        active: f.opt_bool("active")?.unwrap_or(true),
    };
    authorize(&auth, &values)?;
    let config = state.store.create_config(values, &auth.0.client_id, state.clock.now_ms()).await?;
    Ok(Envelope::ok(ConfigView::from(&config)))
}

pub async fn get(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Result<Json<Envelope<ConfigView>>, ApiError> {
    let id = parse_id(&raw)?;
    let config = state.store.get_config(id).await?.ok_or(Refusal::UnknownConfig(raw))?;
    authorize_read(&auth, &config)?;
    Ok(Envelope::ok(ConfigView::from(&config)))
}

/// Fields PATCH understands; at least one must be present.
const PATCHABLE: &[&str] = &["amount", "configuration", "companyId", "event", "validityDays", "maxPerUserPerDay", "maxPerUser", "active"];
/// Re-reads after a concurrent change before giving up with `CONCURRENT_UPDATE`.
const PATCH_ATTEMPTS_MAX: usize = 3;

pub async fn patch(
    State(state): State<AppState>,
    auth: Auth,
    PathParam(raw): PathParam,
    JsonObject(body): JsonObject,
) -> Result<Json<Envelope<ConfigView>>, ApiError> {
    let id = parse_id(&raw)?;
    let f = Fields(&body);
    if !PATCHABLE.iter().any(|k| f.has(k)) {
        return Err(ApiError::validation(format!("at least one of {} is required", PATCHABLE.join(", "))));
    }
    let mut attempt = 1;
    loop {
        let current = state.store.get_config(id).await?.ok_or_else(|| Refusal::UnknownConfig(raw.clone()))?;
        authorize_read(&auth, &current)?;
        authorize(&auth, &current.values)?;
        let mut next = current.values.clone();
        if f.has("configuration") {
            next.kind = f.configuration("configuration")?;
        }
        if f.has("companyId") {
            next.company_id = f.company("companyId")?;
        }
        if f.has("event") {
            next.event = f.event("event")?;
        }
        if f.has("amount") {
            next.amount = f.amount("amount")?;
        }
        if let Some(v) = f.validity_days()? {
            next.validity_days = v;
        }
        if let Some(v) = f.cap("maxPerUserPerDay")? {
            next.max_per_user_per_day = v;
        }
        if let Some(v) = f.cap("maxPerUser")? {
            next.max_per_user = v;
        }
        if let Some(v) = f.opt_bool("active")? {
            next.active = v;
        }
        authorize(&auth, &next)?;
        match state.store.update_config(id, current.version, next, &auth.0.client_id, state.clock.now_ms()).await {
            Ok(config) => return Ok(Envelope::ok(ConfigView::from(&config))),
            Err(StoreError::Refused(Refusal::ConcurrentUpdate(_))) if attempt < PATCH_ATTEMPTS_MAX => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `GET /api/v0/enkash-coins?companyId=&event=&configuration=`: every configuration the caller
/// may read (DEFAULTs and, for company clients, their own CUSTOMs), by id.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Envelope<Vec<ConfigView>>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::validation(format!("bad query string: {e}")))?;
    let filter = ConfigFilter {
        company: q.get("companyId").map(|c| CompanyId::parse(c).map_err(|_| ApiError::validation(format!("companyId must be {}", CompanyId::RULE)))).transpose()?,
        event: q.get("event").map(|e| EventName::parse(e).map_err(|_| ApiError::validation(format!("event must be {}", EventName::RULE)))).transpose()?,
        kind: q.get("configuration").map(|k| ConfigKind::parse(k).ok_or_else(|| ApiError::validation("configuration must be DEFAULT or CUSTOM"))).transpose()?,
    };
    let configs = state.store.list_configs(filter).await?;
    Ok(Envelope::ok(configs.iter().filter(|c| authorize_read(&auth, c).is_ok()).map(ConfigView::from).collect()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    action: String,
    client_id: String,
    at: String,
    before: Option<serde_json::Value>,
    after: serde_json::Value,
}

/// `GET /api/v0/enkash-coins/{coinConfigId}/history`: every create and change, oldest first.
pub async fn history(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Result<Json<Envelope<Vec<AuditView>>>, ApiError> {
    let id = parse_id(&raw)?;
    let config = state.store.get_config(id).await?.ok_or(Refusal::UnknownConfig(raw))?;
    authorize_read(&auth, &config)?;
    let parse = |s: &str| serde_json::from_str(s).map_err(ApiError::internal);
    let records = state.store.config_history(id).await?;
    let mut views = Vec::with_capacity(records.len());
    for r in records {
        views.push(AuditView {
            action: r.action,
            client_id: r.client_id,
            at: crate::clock::rfc3339(r.at_ms),
            before: r.before_json.as_deref().map(parse).transpose()?,
            after: parse(&r.after_json)?,
        });
    }
    Ok(Envelope::ok(views))
}
