//! Coin configurations (SPEC §4, §5): create, change, list, read, audit trail.

use std::collections::HashMap;

use serde::Serialize;
#[allow(unused_imports)]
use serde_json::json;
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
        #[schema(value_type = ValidityDays, required = false)]
        "validityDays" => pub validity_days: Option<ValidityDays>,
        #[schema(value_type = CapLimit, required = false)]
        "maxPerUserPerDay" => pub max_per_user_per_day: Option<CapLimit>,
        #[schema(value_type = CapLimit, required = false)]
        "maxPerUser" => pub max_per_user: Option<CapLimit>,
        /// Default `true`; an inactive configuration is skipped by resolution.
        #[schema(value_type = bool, required = false)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PatchConfigFields)]
pub struct PatchConfigRequest {
    #[schema(value_type = ConfigKind, required = false)]
    pub configuration: Option<ConfigKind>,
    #[schema(value_type = CompanyId, required = false)]
    pub company_id: Option<CompanyId>,
    #[schema(value_type = EventName, required = false)]
    pub event: Option<EventName>,
    #[schema(value_type = Coins, required = false)]
    pub amount: Option<Coins>,
    /// `null` clears it: coins never expire.
    #[schema(value_type = ValidityDays, required = false)]
    pub validity_days: Option<ValidityDays>,
    /// `null` clears it.
    #[schema(value_type = CapLimit, required = false)]
    pub max_per_user_per_day: Option<CapLimit>,
    /// `null` clears it.
    #[schema(value_type = CapLimit, required = false)]
    pub max_per_user: Option<CapLimit>,
    #[schema(value_type = bool, required = false)]
    pub active: Option<bool>,
}

/// The fields PATCH understands, in the order they are checked.
pub const PATCHABLE: &[&str] = &["amount", "configuration", "companyId", "event", "validityDays", "maxPerUserPerDay", "maxPerUser", "active"];

/// The document's PatchConfigRequest: the fields, at least one of them given.
pub struct PatchConfigSchema;

impl utoipa::PartialSchema for PatchConfigSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder};
        let mut any = AnyOfBuilder::new();
        for field in PATCHABLE {
            any = any.item(ObjectBuilder::new().required(*field));
        }
        AllOfBuilder::new()
            .item(<PatchConfigRequest as utoipa::PartialSchema>::schema())
            .item(any)
            .description(Some(
                "The fields given replace the stored ones; `null` clears validityDays, maxPerUserPerDay or maxPerUser. At least one is required.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for PatchConfigSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("PatchConfigRequest")
    }
}

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
#[derive(Debug, Clone, Default, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigListQuery {
    /// Only configurations created for this company.
    #[param(rename = "companyId", value_type = Option<CompanyId>)]
    pub company_id: Option<CompanyId>,
    /// Only configurations of this event.
    #[param(value_type = Option<EventName>)]
    pub event: Option<EventName>,
    /// Only DEFAULT or only CUSTOM configurations.
    #[param(value_type = Option<ConfigKind>)]
    pub configuration: Option<ConfigKind>,
}

impl FromQuery for ConfigListQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_id(q, "companyId")?, event: query_id(q, "event")?, configuration: query_id(q, "configuration")? })
    }
}

/// The configuration object: EnKash's five fields first, then ours (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"coinConfigId":"WCC817428","configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6,"validityDays":null,"maxPerUserPerDay":null,"maxPerUser":null,"active":true}))]
#[serde(rename_all = "camelCase")]
pub struct CoinConfigView {
    /// `WCC` and at least six digits, generated by the server.
    #[schema(pattern = "^WCC[0-9]{6,}$", example = "WCC817428")]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub action: String,
    pub client_id: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// The configuration's values before the change (`null` for the create).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The configuration's values after it.
    #[schema(value_type = Object)]
    pub after: Value,
}
