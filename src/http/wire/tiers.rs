//! `/api/v0/coins/tiers` (a company's tier scheme) and `/api/v0/coins/users/{userId}/tier` (a
//! member's manual floor), and the member's tier as users show it.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::schema::enum_schema;
use super::{FromField, FromQuery, query_company, text_line, whole_number};
use crate::clock::rfc3339;
use crate::domain::CompanyId;
use crate::domain::tiers::{self, Basis, Downgrade, Tier, TierScheme, TierView};
use crate::request_body;
use crate::store::tiers::{MemberTier, StoredScheme};

schema_of!(
    Basis,
    "TierBasis",
    enum_schema(
        &["LIFETIME", "ROLLING"],
        "LIFETIME: every qualifying coin ever; ROLLING: those activated in the last `windowDays` whole UTC days, today included (a credit leaves the window at a midnight UTC)"
    )
);
schema_of!(
    Downgrade,
    "TierDowngrade",
    enum_schema(
        &["ONE_DOWN", "TO_QUALIFYING", "NEVER"],
        "At `tierExpiresAt`, when the qualifying coins no longer reach the tier: one tier down, down to the tier they reach, or never (tiers are kept for good)"
    )
);

impl FromField for Basis {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value.and_then(Value::as_str).and_then(Basis::parse).ok_or_else(|| format!("{name} must be LIFETIME or ROLLING"))
    }
}

impl FromField for Downgrade {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value.and_then(Value::as_str).and_then(Downgrade::parse).ok_or_else(|| format!("{name} must be ONE_DOWN, TO_QUALIFYING or NEVER"))
    }
}

/// `windowDays`, `retentionDays`: days, or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TierDays(pub Option<i64>);

impl FromField for TierDays {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        super::nullable_int(name, value, tiers::DAYS_MAX, "days").map(Self)
    }
}

/// One tier of a scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierItem {
    /// 1 to 32 characters from `A-Z a-z 0-9 _ -`, unique in the scheme.
    #[schema(example = "GOLD", pattern = "^[A-Za-z0-9_-]{1,32}$")]
    pub code: String,
    /// What members see (1 to 100 characters).
    #[schema(example = "Gold", min_length = 1, max_length = 100)]
    pub name: String,
    /// Qualifying coins needed: 0 for the first tier, then strictly increasing.
    #[schema(example = 5000, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub threshold: i64,
    /// What the tier's members earn, in basis points (10000 = ×1, 15000 = ×1.5; at most ×10).
    #[schema(example = 15000, minimum = 10000, maximum = 100000)]
    pub earn_multiplier_bps: i64,
}

/// The tiers of a scheme, lowest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TierList(pub Vec<TierItem>);

schema_of!(
    TierList,
    "TierList",
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(<TierItem as utoipa::PartialSchema>::schema())
        .min_items(Some(1))
        .max_items(Some(tiers::TIERS_MAX))
        .description(Some("1 to 20 tiers, lowest first: the first tier's threshold is 0, each next one's higher"))
        .into()
);

impl FromField for TierList {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        let Some(Value::Array(items)) = value else { return Err(format!("{name} must be a list of 1 to {} tiers", tiers::TIERS_MAX)) };
        if items.is_empty() || items.len() > tiers::TIERS_MAX {
            return Err(format!("{name} must be a list of 1 to {} tiers", tiers::TIERS_MAX));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = |field: &str| format!("{name}[{i}].{field}");
                let Value::Object(o) = item else { return Err(format!("{name}[{i}] must be an object")) };
                let code = o
                    .get("code")
                    .and_then(Value::as_str)
                    .filter(|c| tiers::code_is_valid(c))
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{} must be 1 to {} characters from A-Z a-z 0-9 _ -", at("code"), tiers::CODE_CHARS_MAX))?;
                let number = |field: &str, min: i64, max: i64| {
                    o.get(field)
                        .and_then(whole_number)
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| format!("{} must be a whole number from {min} to {max}", at(field)))
                };
                Ok(TierItem {
                    code,
                    name: text_line(&at("name"), o.get("name"), tiers::NAME_CHARS_MAX)?,
                    threshold: number("threshold", 0, tiers::THRESHOLD_MAX)?,
                    earn_multiplier_bps: number("earnMultiplierBps", tiers::TIER_BPS_MIN, tiers::TIER_BPS_MAX)?,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

request_body! {
    /// `PUT /api/v0/coins/tiers`: the company's tier scheme, set up or replaced.
    pub struct PutTiersRequest {
        "companyId" => pub company_id: CompanyId,
        #[schema(value_type = Basis)]
        "basis" => pub basis: Basis,
        /// ROLLING: the days qualifying coins count for (1 to 3650); `null` or absent for LIFETIME.
        #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 3650)]
        "windowDays" => pub window_days: Option<TierDays>,
        /// How long a tier above the first is kept before it is evaluated again (1 to 3650 days);
        /// `null` or absent: kept for good.
        #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 3650)]
        "retentionDays" => pub retention_days: Option<TierDays>,
        #[schema(value_type = Downgrade)]
        "downgrade" => pub downgrade: Downgrade,
        #[schema(value_type = TierList)]
        "tiers" => pub tiers: TierList,
    }
}

impl PutTiersRequest {
    /// The scheme, checked as a whole.
    pub fn scheme(self) -> Result<(CompanyId, TierScheme), String> {
        let scheme = TierScheme {
            basis: self.basis,
            window_days: self.window_days.and_then(|d| d.0),
            retention_days: self.retention_days.and_then(|d| d.0),
            downgrade: self.downgrade,
            tiers: self
                .tiers
                .0
                .into_iter()
                .map(|t| Tier { code: t.code, name: t.name, threshold: t.threshold, earn_multiplier_bps: t.earn_multiplier_bps })
                .collect(),
        };
        scheme.check()?;
        Ok((self.company_id, scheme))
    }
}

/// A tier code, or `null` to remove a floor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FloorCode(pub Option<String>);

schema_of!(
    FloorCode,
    "TierFloorCode",
    ObjectBuilder::new()
        .schema_type([Type::String, Type::Null].into_iter().collect::<utoipa::openapi::schema::SchemaType>())
        .pattern(Some("^[A-Za-z0-9_-]{1,32}$"))
        .examples([serde_json::json!("GOLD")])
        .description(Some("A tier code of the company's scheme; null removes the floor"))
        .into()
);

impl FromField for FloorCode {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        match value {
            Some(Value::Null) => Ok(Self(None)),
            Some(Value::String(c)) if tiers::code_is_valid(c) => Ok(Self(Some(c.clone()))),
            _ => Err(format!("{name} must be a tier code (1 to {} characters from A-Z a-z 0-9 _ -) or null", tiers::CODE_CHARS_MAX)),
        }
    }
}

/// A manual floor's reason: 1 to 500 characters of text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FloorReason(pub String);

schema_of!(
    FloorReason,
    "TierFloorReason",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(tiers::REASON_CHARS_MAX))
        .pattern(Some(super::TEXT_LINE_PATTERN))
        .examples([serde_json::json!("Matched their Gold status at a partner airline")])
        .description(Some("Why (1 to 500 characters, not only spaces, no control characters)"))
        .into()
);

impl FromField for FloorReason {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        text_line(name, value, tiers::REASON_CHARS_MAX).map(Self)
    }
}

request_body! {
    /// `PUT /api/v0/coins/users/{userId}/tier`: a tier the member never falls below.
    pub struct PutTierFloorRequest {
        "companyId" => pub company_id: CompanyId,
        #[schema(value_type = FloorCode)]
        "tierCode" => pub tier_code: FloorCode,
        /// Required with a tier code; optional when removing the floor.
        #[schema(value_type = FloorReason, required = false)]
        "reason" => pub reason: Option<FloorReason>,
    }
}

/// `GET` and `DELETE /api/v0/coins/tiers?companyId=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TiersQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
}

impl FromQuery for TiersQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_company(q)? })
    }
}

/// A company's tier scheme.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"companyId":"SHOP","basis":"ROLLING","windowDays":365,"retentionDays":365,"downgrade":"ONE_DOWN",
    "tiers":[{"code":"BRONZE","name":"Bronze","threshold":0,"earnMultiplierBps":10000},{"code":"SILVER","name":"Silver","threshold":1000,"earnMultiplierBps":12500},
    {"code":"GOLD","name":"Gold","threshold":5000,"earnMultiplierBps":15000}],"updatedAt":"2026-12-04T10:00:00Z"}))]
pub struct TierSchemeView {
    pub company_id: CompanyId,
    #[schema(value_type = Basis)]
    pub basis: &'static str,
    pub window_days: Option<i64>,
    pub retention_days: Option<i64>,
    #[schema(value_type = Downgrade)]
    pub downgrade: &'static str,
    pub tiers: Vec<TierItem>,
    pub updated_at: String,
}

impl TierSchemeView {
    pub fn of(company: &CompanyId, s: &StoredScheme) -> Self {
        let scheme = &s.scheme;
        Self {
            company_id: company.clone(),
            basis: scheme.basis.as_str(),
            window_days: scheme.window_days,
            retention_days: scheme.retention_days,
            downgrade: scheme.downgrade.as_str(),
            tiers: scheme
                .tiers
                .iter()
                .map(|t| TierItem { code: t.code.clone(), name: t.name.clone(), threshold: t.threshold, earn_multiplier_bps: t.earn_multiplier_bps })
                .collect(),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// A member's tier.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"code":"SILVER","name":"Silver","enteredAt":"2026-12-04T10:00:00Z","expiresAt":"2027-12-04T10:00:00Z","qualifyingCoins":1200,
    "nextTier":"GOLD","coinsToNextTier":3800,"earnMultiplierBps":12500,"floor":null,"floorReason":null}))]
pub struct MemberTierView {
    pub code: String,
    pub name: String,
    /// When the member entered it; `null`: never placed (the first tier).
    pub entered_at: Option<String>,
    /// When the sweeper evaluates it (renews, or moves the member down); `null`: kept for good.
    pub expires_at: Option<String>,
    /// Base coins of spendable credits (and qualifying adjustments), less returns, in the
    /// scheme's window. Redemption and expiry never lower them.
    pub qualifying_coins: i64,
    /// The next tier up and the qualifying coins still needed for it; `null` at the top.
    pub next_tier: Option<String>,
    pub coins_to_next_tier: Option<i64>,
    /// What the member's allocations earn (unless their configuration says `tierMultiplier: false`).
    pub earn_multiplier_bps: i64,
    /// A tier staff set the member never to fall below, and why.
    pub floor: Option<String>,
    pub floor_reason: Option<String>,
}

impl From<MemberTier> for MemberTierView {
    fn from(m: MemberTier) -> Self {
        let TierView { code, name, entered_at, expires_at, qualifying_coins, next_tier, coins_to_next_tier, earn_multiplier_bps, floor } = m.view;
        Self {
            code,
            name,
            entered_at: entered_at.map(rfc3339),
            expires_at: expires_at.map(rfc3339),
            qualifying_coins,
            next_tier,
            coins_to_next_tier,
            earn_multiplier_bps,
            floor,
            floor_reason: m.floor_reason,
        }
    }
}
