//! The allocation record: `GET /api/v0/coins/allocations/{requestId}?companyId=` and by order,
//! `GET /api/v0/coins/allocations?companyId=&event=&orderId=`.

use std::collections::HashMap;

use serde::Serialize;
#[allow(unused_imports)]
use serde_json::json;

use super::{FromQuery, query_id};
use crate::clock::rfc3339;
use crate::domain::earn::CalculationRecord;
use crate::domain::{CompanyId, EventName, OrderId, RequestId, UserId};
use crate::store::AllocationRecord;

/// `?companyId=`: the company whose request id it is (request ids are unique per company).
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllocationQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
}

impl FromQuery for AllocationQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_id(q, "companyId")?.ok_or("companyId is required")? })
    }
}

/// `?companyId=&event=&orderId=`: the order's live allocation, else its latest.
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
    #[param(value_type = EventName)]
    pub event: EventName,
    #[param(rename = "orderId", value_type = OrderId)]
    pub order_id: OrderId,
}

impl FromQuery for OrderQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            company_id: query_id(q, "companyId")?.ok_or("companyId is required")?,
            event: query_id(q, "event")?.ok_or("event is required")?,
            order_id: query_id(q, "orderId")?.ok_or("orderId is required")?,
        })
    }
}

/// How an allocation's coins were computed (what refunds recompute with).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalculationView {
    /// `FIXED` or `PERCENT`.
    pub amount_type: String,
    pub amount_minor: Option<i64>,
    pub rate_bps: Option<i64>,
    /// The coin value used, when the allocation gave a purchase value.
    pub minor_units_per_coin: Option<i64>,
    /// 10,000 = ×1.
    pub multiplier_bps: i64,
    /// The exact number of coins before rounding, as a decimal string (up to 12 places).
    #[schema(example = "9.9998")]
    pub exact: String,
    /// `FLOOR` or `HALF_UP`.
    pub rounding: String,
    /// `MAX_COINS_PER_ALLOCATION` when the cap lowered the coins.
    pub capped_by: Option<String>,
    /// FIXED: the configured amount.
    pub amount: Option<i64>,
    pub min_amount_minor: Option<i64>,
    pub max_coins_per_allocation: Option<i64>,
    /// The bonus campaign that applied (`multiplierBps` includes its multiplier), else `null`.
    #[schema(example = "CMP100001")]
    pub campaign_id: Option<String>,
    /// The campaign's multiplier, when it has one.
    pub campaign_bps: Option<i64>,
    /// The campaign's fixed bonus, when it has one: added to the coins after the cap.
    pub campaign_bonus_coins: Option<i64>,
    /// The member's status tier when its multiplier was above ×1 (`multiplierBps` includes it),
    /// else `null`.
    pub tier_code: Option<String>,
    pub tier_bps: Option<i64>,
}

impl From<CalculationRecord> for CalculationView {
    fn from(c: CalculationRecord) -> Self {
        Self {
            amount_type: c.amount_type,
            amount_minor: c.amount_minor,
            rate_bps: c.rate_bps,
            minor_units_per_coin: c.minor_units_per_coin,
            multiplier_bps: c.multiplier_bps,
            exact: c.exact,
            rounding: c.rounding,
            capped_by: c.capped_by,
            amount: c.amount,
            min_amount_minor: c.min_amount_minor,
            max_coins_per_allocation: c.max_coins_per_allocation,
            campaign_id: c.campaign_id,
            campaign_bps: c.campaign_bps,
            campaign_bonus_coins: c.campaign_bonus_coins,
            tier_code: c.tier_code,
            tier_bps: c.tier_bps,
        }
    }
}

/// One allocation's record. Fields that do not apply are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"requestId":"TILL-7-0001","aliases":["TILL-7-0002"],"orderId":"ORDER-2291","companyId":"SHOP","userId":"ASHA","event":"PURCHASE","coinConfigId":"WCC100001","state":"ACTIVE","coins":9,"baseCoins":9,"coinsCanceled":0,"coinsReversed":0,"coinsWaived":0,"amountMinor":49999,"amountRefundedMinor":0,"currency":"INR","calculation":{"amountType":"PERCENT","amountMinor":49999,"rateBps":200,"minorUnitsPerCoin":100,"multiplierBps":10000,"exact":"9.9998","rounding":"FLOOR","cappedBy":null,"amount":null,"minAmountMinor":null,"maxCoinsPerAllocation":null,"campaignId":null,"campaignBps":null,"campaignBonusCoins":null},"createdAt":"2026-12-04T10:00:00Z","activatesAt":null,"activatedAt":"2026-12-04T10:00:00Z","expiresAt":null,"reason":null}))]
pub struct AllocationView {
    pub request_id: RequestId,
    /// Request ids that repeated this allocation's order (a till's retries), oldest first.
    pub aliases: Vec<RequestId>,
    pub order_id: Option<String>,
    pub company_id: CompanyId,
    pub user_id: UserId,
    pub event: String,
    pub coin_config_id: Option<String>,
    /// `PENDING`, `ACTIVE`, `CANCELED`, `REVERSED` or `ZERO`.
    #[schema(example = "ACTIVE")]
    pub state: &'static str,
    pub coins: i64,
    /// The coins without tier or campaign multipliers.
    pub base_coins: i64,
    pub coins_canceled: i64,
    pub coins_reversed: i64,
    pub coins_waived: i64,
    pub amount_minor: Option<i64>,
    pub amount_refunded_minor: Option<i64>,
    pub currency: Option<String>,
    pub calculation: CalculationView,
    pub created_at: String,
    pub activates_at: Option<String>,
    pub activated_at: Option<String>,
    pub expires_at: Option<String>,
    /// ZERO: `BELOW_MINIMUM` or `ROUNDED_TO_ZERO`.
    pub reason: Option<String>,
}

impl From<AllocationRecord> for AllocationView {
    fn from(r: AllocationRecord) -> Self {
        Self {
            request_id: r.request_id,
            aliases: r.aliases,
            order_id: r.order_id,
            company_id: r.company,
            user_id: r.user,
            event: r.event,
            coin_config_id: r.coin_config_id,
            state: r.state.as_str(),
            coins: r.coins,
            base_coins: r.base_coins,
            coins_canceled: r.coins_canceled,
            coins_reversed: r.coins_reversed,
            coins_waived: r.coins_waived,
            amount_minor: r.amount_minor,
            amount_refunded_minor: r.amount_refunded_minor,
            currency: r.currency,
            calculation: r.calculation.into(),
            created_at: rfc3339(r.created_at_ms),
            activates_at: r.activates_at_ms.map(rfc3339),
            activated_at: r.activated_at_ms.map(rfc3339),
            expires_at: r.expires_at_ms.map(rfc3339),
            reason: r.zero_reason,
        }
    }
}
