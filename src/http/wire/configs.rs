//! Coin configurations: create, change, list, read, audit trail.

use std::collections::HashMap;

use serde::Serialize;
#[allow(unused_imports)]
use serde_json::json;
use serde_json::{Map, Value};

use super::{CapLimit, FromField, FromJsonObject, FromQuery, Nullable, ValidityDays, nullable_int, query_id, whole_number};
use crate::domain::allocation::PENDING_DAYS_MAX;
use crate::domain::coins::AMOUNT_MAX;
use crate::domain::config::{ConfigValues, Earning, EarningProblem};
use crate::domain::earn::{self, AmountType, Rounding};
use crate::domain::{CoinConfig, Coins, CompanyId, ConfigKind, EventName};
use crate::request_body;

request_body! {
    /// `POST /api/v0/enkash-coins/create-coins-config`
    #[schema(as = CreateConfigFields)]
    pub struct CreateConfigRequest {
        "configuration" => pub configuration: ConfigKind,
        "companyId" => pub company_id: CompanyId,
        "event" => pub event: EventName,
        /// The coins each allocation earns (FIXED); `null` or absent for PERCENT.
        #[schema(value_type = Option<Coins>)]
        "amount" => pub amount: Nullable<Coins>,
        #[schema(value_type = ValidityDays, required = false)]
        "validityDays" => pub validity_days: Option<ValidityDays>,
        #[schema(value_type = CapLimit, required = false)]
        "maxPerUserPerDay" => pub max_per_user_per_day: Option<CapLimit>,
        #[schema(value_type = CapLimit, required = false)]
        "maxPerUser" => pub max_per_user: Option<CapLimit>,
        /// Default `true`; an inactive configuration is skipped by resolution.
        #[schema(value_type = bool, required = false)]
        "active" => pub active: Option<bool>,
        /// `FIXED` (default: `amount` coins) or `PERCENT` (`rateBps` of the allocation's
        /// `amountMinor`, at the company's coin value).
        #[schema(value_type = AmountType, required = false)]
        "amountType" => pub amount_type: Option<AmountType>,
        #[schema(value_type = RateBps, required = false)]
        "rateBps" => pub rate_bps: Option<RateBps>,
        #[schema(value_type = MinAmountMinor, required = false)]
        "minAmountMinor" => pub min_amount_minor: Option<MinAmountMinor>,
        #[schema(value_type = MaxCoinsPerAllocation, required = false)]
        "maxCoinsPerAllocation" => pub max_coins_per_allocation: Option<MaxCoinsPerAllocation>,
        /// `FLOOR` (default) or `HALF_UP`: how a fractional number of coins becomes whole.
        #[schema(value_type = Rounding, required = false)]
        "rounding" => pub rounding: Option<Rounding>,
        /// Days earned coins are held before they can be spent (a return window); `null`
        /// (default): spendable at once.
        #[schema(value_type = PendingDays, required = false)]
        "pendingDays" => pub pending_days: Option<PendingDays>,
        /// Default `true`: allocations earn the member's tier multiplier (when the company has
        /// tiers); `false`: never.
        #[schema(value_type = bool, required = false)]
        "tierMultiplier" => pub tier_multiplier: Option<bool>,
    }
}

impl CreateConfigRequest {
    /// The values, once they fit together (FIXED has an amount, PERCENT a rate and no amount).
    pub fn into_values(self) -> Result<ConfigValues, String> {
        let values = ConfigValues {
            kind: self.configuration,
            company_id: self.company_id,
            event: self.event,
            amount: self.amount.0,
            earning: Earning {
                amount_type: self.amount_type.unwrap_or(AmountType::Fixed),
                rate_bps: self.rate_bps.and_then(|v| v.0),
                min_amount_minor: self.min_amount_minor.and_then(|v| v.0),
                max_coins_per_allocation: self.max_coins_per_allocation.and_then(|v| v.0),
                rounding: self.rounding.unwrap_or(Rounding::Floor),
                pending_days: self.pending_days.and_then(|v| v.0),
                tier_multiplier: self.tier_multiplier.unwrap_or(true),
            },
            validity_days: self.validity_days.and_then(|v| v.0),
            max_per_user_per_day: self.max_per_user_per_day.and_then(|v| v.0),
            max_per_user: self.max_per_user.and_then(|v| v.0),
            active: self.active.unwrap_or(true),
        };
        checked(values)
    }
}

/// The document's CreateConfigRequest: the fields, and how they fit together — FIXED (the
/// default) with an `amount` and no `rateBps`, or PERCENT with a `rateBps` and no `amount`.
pub struct CreateConfigSchema;

impl utoipa::PartialSchema for CreateConfigSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Type};
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let fixed = ObjectBuilder::new()
            .property("amountType", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["FIXED"])))
            .property("amount", ObjectBuilder::new().schema_type(Type::Integer))
            .property("rateBps", null())
            .required("amount");
        let percent = ObjectBuilder::new()
            .property("amountType", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["PERCENT"])))
            .property("amount", null())
            .property("rateBps", ObjectBuilder::new().schema_type(Type::Integer))
            .required("amountType")
            .required("rateBps");
        AllOfBuilder::new()
            .item(<CreateConfigRequest as utoipa::PartialSchema>::schema())
            .item(OneOfBuilder::new().item(fixed).item(percent))
            .description(Some("FIXED (the default) needs `amount` and no `rateBps`; PERCENT needs `rateBps` and no `amount`."))
            .into()
    }
}

impl utoipa::ToSchema for CreateConfigSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("CreateConfigRequest")
    }
}

/// The values, or the sentence saying which field does not fit the others.
fn checked(values: ConfigValues) -> Result<ConfigValues, String> {
    match values.terms() {
        Ok(_) => Ok(values),
        Err(EarningProblem::AmountMissing) => Err(format!("amount must be a whole number of coins between 1 and {AMOUNT_MAX}")),
        Err(EarningProblem::AmountWithPercent) => Err("amount must be null when amountType is PERCENT (rateBps says what it earns)".into()),
        Err(EarningProblem::RateMissing) => Err("rateBps is required when amountType is PERCENT".into()),
        Err(EarningProblem::RateWithFixed) => Err("rateBps applies only when amountType is PERCENT".into()),
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
    /// Changing it clears the other type's field: `amount` for PERCENT, `rateBps` for FIXED.
    #[schema(value_type = AmountType, required = false)]
    pub amount_type: Option<AmountType>,
    #[schema(value_type = RateBps, required = false)]
    pub rate_bps: Option<RateBps>,
    /// `null` clears it.
    #[schema(value_type = MinAmountMinor, required = false)]
    pub min_amount_minor: Option<MinAmountMinor>,
    /// `null` clears it.
    #[schema(value_type = MaxCoinsPerAllocation, required = false)]
    pub max_coins_per_allocation: Option<MaxCoinsPerAllocation>,
    #[schema(value_type = Rounding, required = false)]
    pub rounding: Option<Rounding>,
    /// `null` clears it: later allocations are spendable at once (held ones stay held).
    #[schema(value_type = PendingDays, required = false)]
    pub pending_days: Option<PendingDays>,
    #[schema(value_type = bool, required = false)]
    pub tier_multiplier: Option<bool>,
}

/// The fields PATCH understands, in the order they are checked.
pub const PATCHABLE: &[&str] = &[
    "amount",
    "configuration",
    "companyId",
    "event",
    "validityDays",
    "maxPerUserPerDay",
    "maxPerUser",
    "active",
    "amountType",
    "rateBps",
    "minAmountMinor",
    "maxCoinsPerAllocation",
    "rounding",
    "pendingDays",
    "tierMultiplier",
];

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
            amount_type: FromField::from_field("amountType", o.get("amountType"))?,
            rate_bps: FromField::from_field("rateBps", o.get("rateBps"))?,
            min_amount_minor: FromField::from_field("minAmountMinor", o.get("minAmountMinor"))?,
            max_coins_per_allocation: FromField::from_field("maxCoinsPerAllocation", o.get("maxCoinsPerAllocation"))?,
            rounding: FromField::from_field("rounding", o.get("rounding"))?,
            pending_days: FromField::from_field("pendingDays", o.get("pendingDays"))?,
            tier_multiplier: FromField::from_field("tierMultiplier", o.get("tierMultiplier"))?,
        })
    }
}

impl PatchConfigRequest {
    /// The stored values with this change applied, once they fit together.
    pub fn apply_to(&self, current: &ConfigValues) -> Result<ConfigValues, String> {
        let mut next = current.clone();
        if let Some(t) = self.amount_type.filter(|t| *t != current.earning.amount_type) {
            next.earning.amount_type = t;
            match t {
                AmountType::Percent => next.amount = None,
                AmountType::Fixed => next.earning.rate_bps = None,
            }
        }
        if let Some(v) = self.rate_bps {
            next.earning.rate_bps = v.0;
        }
        if let Some(v) = self.min_amount_minor {
            next.earning.min_amount_minor = v.0;
        }
        if let Some(v) = self.max_coins_per_allocation {
            next.earning.max_coins_per_allocation = v.0;
        }
        if let Some(v) = self.rounding {
            next.earning.rounding = v;
        }
        if let Some(v) = self.pending_days {
            next.earning.pending_days = v.0;
        }
        if let Some(v) = self.tier_multiplier {
            next.earning.tier_multiplier = v;
        }
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
            next.amount = Some(v);
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
        checked(next)
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

/// The configuration object: EnKash's five fields first, then ours.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"coinConfigId":"WCC817428","configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6,"validityDays":null,"maxPerUserPerDay":null,"maxPerUser":null,"active":true,"amountType":"FIXED","rateBps":null,"minAmountMinor":null,"maxCoinsPerAllocation":null,"rounding":"FLOOR","pendingDays":null}))]
#[serde(rename_all = "camelCase")]
pub struct CoinConfigView {
    /// `WCC` and at least six digits, generated by the server.
    #[schema(pattern = "^WCC[0-9]{6,}$", example = "WCC817428")]
    pub coin_config_id: String,
    pub configuration: ConfigKind,
    pub company_id: CompanyId,
    pub event: EventName,
    /// FIXED: the coins each allocation earns; `null` for PERCENT.
    pub amount: Option<Coins>,
    pub validity_days: Option<i64>,
    pub max_per_user_per_day: Option<i64>,
    pub max_per_user: Option<i64>,
    pub active: bool,
    pub amount_type: AmountType,
    pub rate_bps: Option<i64>,
    pub min_amount_minor: Option<i64>,
    pub max_coins_per_allocation: Option<i64>,
    pub rounding: Rounding,
    /// Days earned coins are held before they can be spent; `null`: spendable at once.
    pub pending_days: Option<i64>,
    /// Whether allocations earn the member's tier multiplier.
    pub tier_multiplier: bool,
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
            amount_type: v.earning.amount_type,
            rate_bps: v.earning.rate_bps,
            min_amount_minor: v.earning.min_amount_minor,
            max_coins_per_allocation: v.earning.max_coins_per_allocation,
            rounding: v.earning.rounding,
            pending_days: v.earning.pending_days,
            tier_multiplier: v.earning.tier_multiplier,
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

impl FromField for AmountType {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value.and_then(Value::as_str).and_then(AmountType::parse).ok_or_else(|| format!("{name} must be FIXED or PERCENT"))
    }
}

impl FromField for Rounding {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value.and_then(Value::as_str).and_then(Rounding::parse).ok_or_else(|| format!("{name} must be FLOOR or HALF_UP"))
    }
}

/// `rateBps`: basis points of the purchase value (100 = 1 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RateBps(pub Option<i64>);

impl FromField for RateBps {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        match value {
            Some(Value::Null) => Ok(RateBps(None)),
            v => v
                .and_then(whole_number)
                .filter(|n| (1..=earn::RATE_BPS_MAX).contains(n))
                .map(|n| RateBps(Some(n)))
                .ok_or_else(|| format!("{name} must be a whole number of basis points between 1 and {} (100 = 1 %), or null", earn::RATE_BPS_MAX)),
        }
    }
}

/// `minAmountMinor`: the smallest purchase value that earns anything, or `null` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MinAmountMinor(pub Option<i64>);

impl FromField for MinAmountMinor {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        nullable_int(name, value, earn::AMOUNT_MINOR_MAX, "minor units").map(MinAmountMinor)
    }
}

/// `pendingDays`: days earned coins are held before they can be spent, or `null` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PendingDays(pub Option<i64>);

impl FromField for PendingDays {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        nullable_int(name, value, PENDING_DAYS_MAX, "days").map(PendingDays)
    }
}

/// `maxCoinsPerAllocation`: the most coins one allocation earns, or `null` for no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MaxCoinsPerAllocation(pub Option<i64>);

impl FromField for MaxCoinsPerAllocation {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        nullable_int(name, value, AMOUNT_MAX, "coins").map(MaxCoinsPerAllocation)
    }
}
