//! Coin configurations (SPEC §4, §5): create, change, list, read, audit trail.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{CapLimit, FromField, FromJsonObject, FromQuery, ValidityDays, query_id};
use crate::domain::config::ConfigValues;
use crate::domain::{CoinConfig, Coins, CompanyId, ConfigKind, EventName};
use crate::request_body;

request_body! {
    /// `POST /api/v0/enkash-coins/create-coins-config`
    pub struct CreateConfigRequest {
        "configuration" => pub configuration: ConfigKind,
        "companyId" => pub company_id: CompanyId,
        "event" => pub event: EventName,
        "amount" => pub amount: Coins,
        "validityDays" => pub validity_days: Option<ValidityDays>,
        "maxPerUserPerDay" => pub max_per_user_per_day: Option<CapLimit>,
        "maxPerUser" => pub max_per_user: Option<CapLimit>,
        "active" => pub active: Option<bool>,
    }
}

impl CreateConfigRequest {
    pub fn into_values(self) -> ConfigValues {
        ConfigValues {
            kind: self.configuration,
            company_id: self.company_id,
            event: self.event,
            amount: self.amount,
            validity_days: self.validity_days.and_then(|v| v.0),
            max_per_user_per_day: self.max_per_user_per_day.and_then(|v| v.0),
            max_per_user: self.max_per_user.and_then(|v| v.0),
            active: self.active.unwrap_or(true),
        }
    }
}

/// `PATCH /api/v0/enkash-coins/{coinConfigId}`: the fields given replace the stored ones; `null`
/// clears an optional one. At least one is required.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchConfigRequest {
    pub configuration: Option<ConfigKind>,
    pub company_id: Option<CompanyId>,
    pub event: Option<EventName>,
    pub amount: Option<Coins>,
    pub validity_days: Option<ValidityDays>,
    pub max_per_user_per_day: Option<CapLimit>,
    pub max_per_user: Option<CapLimit>,
    pub active: Option<bool>,
}

/// The fields PATCH understands, in the order they are checked.
pub const PATCHABLE: &[&str] = &["amount", "configuration", "companyId", "event", "validityDays", "maxPerUserPerDay", "maxPerUser", "active"];

impl FromJsonObject for PatchConfigRequest {
    fn from_object(o: &Map<String, Value>) -> Result<Self, String> {
        if !PATCHABLE.iter().any(|k| o.contains_key(*k)) {
            return Err(format!("at least one of {} is required", PATCHABLE.join(", ")));
        }
        Ok(Self {
            configuration: FromField::from_field("configuration", o.get("configuration"))?,
            company_id: FromField::from_field("companyId", o.get("companyId"))?,
            event: FromField::from_field("event", o.get("event"))?,
            amount: FromField::from_field("amount", o.get("amount"))?,
            validity_days: FromField::from_field("validityDays", o.get("validityDays"))?,
            max_per_user_per_day: FromField::from_field("maxPerUserPerDay", o.get("maxPerUserPerDay"))?,
            max_per_user: FromField::from_field("maxPerUser", o.get("maxPerUser"))?,
            active: FromField::from_field("active", o.get("active"))?,
        })
    }
}

impl PatchConfigRequest {
    /// The stored values with this change applied.
    pub fn apply_to(&self, current: &ConfigValues) -> ConfigValues {
        let mut next = current.clone();
        if let Some(v) = self.configuration {
            next.kind = v;
        }
        if let Some(v) = &self.company_id {
            next.company_id = v.clone();
        }
        if let Some(v) = &self.event {
            next.event = v.clone();
        }
        if let Some(v) = self.amount {
            next.amount = v;
        }
        if let Some(v) = self.validity_days {
            next.validity_days = v.0;
        }
        if let Some(v) = self.max_per_user_per_day {
            next.max_per_user_per_day = v.0;
        }
        if let Some(v) = self.max_per_user {
            next.max_per_user = v.0;
        }
        if let Some(v) = self.active {
            next.active = v;
        }
        next
    }
}

/// `GET /api/v0/enkash-coins?companyId=&event=&configuration=` (every filter optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigListQuery {
    pub company_id: Option<CompanyId>,
    pub event: Option<EventName>,
    pub configuration: Option<ConfigKind>,
}

impl FromQuery for ConfigListQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            company_id: query_id(q, "companyId")?,
            event: query_id(q, "event")?,
            configuration: query_id(q, "configuration")?,
        })
    }
}

/// The configuration object: EnKash's five fields first, then ours (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoinConfigView {
    pub coin_config_id: String,
    pub configuration: ConfigKind,
    pub company_id: CompanyId,
    pub event: EventName,
    pub amount: Coins,
    pub validity_days: Option<i64>,
    pub max_per_user_per_day: Option<i64>,
    pub max_per_user: Option<i64>,
    pub active: bool,
}

impl From<&CoinConfig> for CoinConfigView {
    fn from(c: &CoinConfig) -> Self {
        let v = &c.values;
        Self {
            coin_config_id: c.id.to_string(),
            configuration: v.kind,
            company_id: v.company_id.clone(),
            event: v.event.clone(),
            amount: v.amount,
            validity_days: v.validity_days,
            max_per_user_per_day: v.max_per_user_per_day,
            max_per_user: v.max_per_user,
            active: v.active,
        }
    }
}

/// One create or change in `GET /api/v0/enkash-coins/{coinConfigId}/history`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub action: String,
    pub client_id: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// The configuration object before the change (`null` for the create).
    pub before: Option<Value>,
    pub after: Value,
}
