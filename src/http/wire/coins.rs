//! Earning and spending coins: single and bulk allocation, balance, redemption,
//! reversal, coin value.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::configs::PendingDays;
use super::{FromField, FromJsonObject, FromQuery, Nullable, ValidityDays, int_schema, query_id, whole_number};
use crate::clock::rfc3339;
use crate::domain::activate::{ActivateCmd, ActivateReceipt};
use crate::domain::adjust::{self, AdjustCmd, AdjustExpiry, AdjustReceipt};
use crate::domain::allocate::{AllocateCmd, Purchase};
use crate::domain::allocation::{OnShortfall, ReturnAsk};
use crate::domain::earn;
use crate::domain::redeem::{AMOUNT_MINOR_MAX, MINOR_UNITS_PER_COIN_MAX, RedeemAmount, RedeemReceipt};
use crate::domain::reverse::{ReverseCmd, ReverseReceipt, Target};
use crate::domain::simulate::{SimOutcome, SimulateCmd, Simulation};
use crate::domain::{Coins, CompanyId, EventName, OrderId, RequestId, UserId};
use crate::http::wire::allocations::CalculationView;
use crate::request_body;

/// EnKash's success payload for an allocation, byte for byte.
pub const ALLOCATED: &str = "Successfully allocated enkash Coins";
/// Items one bulk request may carry.
pub const BULK_ITEMS_MAX: usize = 1_000;

request_body! {
    /// `POST /api/v0/enkash-coins/allocate-coin`, and each item of `allocate-coins`. EnKash's four
    /// fields, then ours, all optional: an order id, and the purchase value to earn on.
    pub struct AllocateRequest {
        "companyId" => pub company_id: CompanyId,
        "event" => pub event: EventName,
        "requestId" => pub request_id: RequestId,
        "userId" => pub user_id: UserId,
        /// The purchase: one live allocation per company, event and order id; a retry of the same
        /// purchase under a new requestId replays the first (and becomes its alias).
        #[schema(value_type = OrderId, required = false)]
        "orderId" => pub order_id: Option<OrderId>,
        /// The purchase value to earn on (required by a PERCENT configuration, or one with a
        /// minimum spend), in minor units of the company's coin-value currency.
        #[schema(value_type = PurchaseMinor, required = false)]
        "amountMinor" => pub amount_minor: Option<PurchaseMinor>,
        /// When given, it must be the company's coin-value currency.
        #[schema(value_type = Currency, required = false)]
        "currency" => pub currency: Option<Currency>,
    }
}

impl AllocateRequest {
    /// What the allocation says about the purchase.
    pub fn purchase(&self) -> Purchase {
        Purchase { order_id: self.order_id.clone(), amount_minor: self.amount_minor.map(|m| m.0), currency: self.currency.as_ref().map(|c| c.0.clone()) }
    }
}

/// `amountMinor` of an allocation: the purchase value, in currency minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PurchaseMinor(pub i64);

schema_of!(PurchaseMinor, "PurchaseMinor", int_schema(1, earn::AMOUNT_MINOR_MAX, false, "A purchase value in currency minor units (paise for INR)"));

impl FromField for PurchaseMinor {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value
            .and_then(whole_number)
            .filter(|m| (1..=earn::AMOUNT_MINOR_MAX).contains(m))
            .map(PurchaseMinor)
            .ok_or_else(|| format!("{name} must be a whole number of minor units between 1 and {}", earn::AMOUNT_MINOR_MAX))
    }
}

/// `GET /api/v0/coins/balance?userId=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// The user whose balance to read (`0` for a user never credited, or another company's).
    #[param(rename = "userId", value_type = UserId)]
    pub user_id: UserId,
}

impl FromQuery for BalanceQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { user_id: query_id(q, "userId")?.ok_or("userId is required")? })
    }
}

/// An item of a bulk request that could not be read, with the request id it named (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct BadItem {
    pub request_id: Option<String>,
    pub message: String,
}

/// `POST /api/v0/enkash-coins/allocate-coins`: each item is read on its own; one that cannot be
/// read fails alone, in its place in the results.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct BulkAllocateRequest {
    /// 1 to 1,000 allocations, each an `AllocateRequest` applied exactly as a single one would
    /// be; an item that is not one fails alone, in its place in the results.
    #[schema(value_type = Vec<Value>, min_items = 1, max_items = 1000)]
    pub allocations: Vec<Result<AllocateRequest, BadItem>>,
}

impl FromJsonObject for BulkAllocateRequest {
    fn from_object(o: &Map<String, Value>) -> Result<Self, String> {
        let items = match o.get("allocations") {
            Some(Value::Array(items)) if (1..=BULK_ITEMS_MAX).contains(&items.len()) => items,
            _ => return Err(format!("allocations must be an array of 1 to {BULK_ITEMS_MAX} items")),
        };
        let allocations = items
            .iter()
            .map(|item| {
                let request_id = item.get("requestId").and_then(Value::as_str).map(str::to_owned);
                match item {
                    Value::Object(map) => AllocateRequest::from_object(map).map_err(|message| BadItem { request_id, message }),
                    _ => Err(BadItem { request_id, message: "each allocation must be a JSON object".into() }),
                }
            })
            .collect();
        Ok(Self { allocations })
    }
}

/// What became of one item of a bulk allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BulkStatus {
    /// Applied now (0 coins for an item that earned nothing).
    Allocated,
    /// Applied before: the answer of the first time.
    Replayed,
    /// Refused; `errorCode` says why.
    Failed,
}

/// One item's outcome in a bulk answer, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkItemResult {
    pub request_id: Option<String>,
    /// `ALLOCATED`, `REPLAYED` or `FAILED`.
    pub status: BulkStatus,
    pub coins: Option<i64>,
    /// For a failed item: the code a single allocation would have answered.
    #[schema(value_type = Option<String>)]
    pub error_code: Option<&'static str>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    pub allocated: usize,
    pub replayed: usize,
    pub failed: usize,
    pub results: Vec<BulkItemResult>,
}

/// `amountMinor`: currency minor units to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AmountMinor(pub i64);

schema_of!(
    AmountMinor,
    "AmountMinor",
    int_schema(1, AMOUNT_MINOR_MAX, false, "Currency minor units (paise for INR) to pay with coins; the coins needed are rounded up")
);

impl FromField for AmountMinor {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value
            .and_then(whole_number)
            .filter(|m| (1..=AMOUNT_MINOR_MAX).contains(m))
            .map(AmountMinor)
            .ok_or_else(|| format!("{name} must be a whole number of minor units between 1 and {AMOUNT_MINOR_MAX}"))
    }
}

/// `POST /api/v0/coins/redeem`: exactly one of `coins` and `amountMinor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeemRequest {
    pub company_id: CompanyId,
    pub user_id: UserId,
    pub request_id: RequestId,
    pub coins: Option<Coins>,
    pub amount_minor: Option<AmountMinor>,
}

impl FromJsonObject for RedeemRequest {
    fn from_object(o: &Map<String, Value>) -> Result<Self, String> {
        let company_id = FromField::from_field("companyId", o.get("companyId"))?;
        let user_id = FromField::from_field("userId", o.get("userId"))?;
        let request_id = FromField::from_field("requestId", o.get("requestId"))?;
        // `null` counts as absent here: the rule is about which amount was given.
        let given = |k: &str| o.get(k).filter(|v| !v.is_null());
        let (coins, amount_minor) = match (given("coins"), given("amountMinor")) {
            (Some(c), None) => (Some(Coins::from_field("coins", Some(c))?), None),
            (None, Some(m)) => (None, Some(AmountMinor::from_field("amountMinor", Some(m))?)),
            _ => return Err("exactly one of coins or amountMinor is required".into()),
        };
        Ok(Self { company_id, user_id, request_id, coins, amount_minor })
    }
}

/// The document's RedeemRequest: the ids, and exactly one of the two amounts (`oneOf`).
impl utoipa::PartialSchema for RedeemRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, OneOfBuilder};
        let ids = ObjectBuilder::new()
            .property("companyId", <CompanyId as utoipa::PartialSchema>::schema())
            .property("userId", <UserId as utoipa::PartialSchema>::schema())
            .property("requestId", <RequestId as utoipa::PartialSchema>::schema())
            .required("companyId")
            .required("userId")
            .required("requestId");
        // The other amount absent or null: `null` counts as not given.
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let by_coins = ObjectBuilder::new().property("coins", <Coins as utoipa::PartialSchema>::schema()).property("amountMinor", null()).required("coins");
        let by_minor =
            ObjectBuilder::new().property("amountMinor", <AmountMinor as utoipa::PartialSchema>::schema()).property("coins", null()).required("amountMinor");
        AllOfBuilder::new()
            .item(ids)
            .item(OneOfBuilder::new().item(by_coins).item(by_minor))
            .description(Some("Exactly one of `coins` (whole coins) or `amountMinor` (currency minor units; the coins needed are rounded up)"))
            .examples([serde_json::json!({"companyId":"SHOP","userId":"ASHA","requestId":"SPEND-1","coins":30})])
            .into()
    }
}

impl utoipa::ToSchema for RedeemRequest {}

impl RedeemRequest {
    pub fn amount(&self) -> RedeemAmount {
        match (self.coins, self.amount_minor) {
            (Some(c), _) => RedeemAmount::Coins(c),
            (None, Some(m)) => RedeemAmount::Minor(m.0),
            // Reading guarantees exactly one of the two.
            (None, None) => RedeemAmount::Minor(0),
        }
    }
}

/// A redemption's answer (and its replay, verbatim).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedeemView {
    pub request_id: RequestId,
    pub coins: i64,
    pub currency: String,
    pub amount_minor: i64,
    pub balance: i64,
}

impl From<RedeemReceipt> for RedeemView {
    fn from(r: RedeemReceipt) -> Self {
        Self { request_id: r.request_id, coins: r.coins, currency: r.currency, amount_minor: r.amount_minor, balance: r.balance }
    }
}

request_body! {
    /// `POST /api/v0/coins/reverse`: the original by `originalRequestId`, or (an allocation) by
    /// `orderId` and `event`; the whole of what remains, or `coins` of it, or what a refund of
    /// `amountMinor` of the purchase takes back.
    pub struct ReverseRequest {
        "companyId" => pub company_id: CompanyId,
        "requestId" => pub request_id: RequestId,
        /// The allocation or redemption to return (an alias of an allocation works too).
        #[schema(value_type = RequestId, required = false)]
        "originalRequestId" => pub original_request_id: Option<RequestId>,
        /// With `event`, instead of `originalRequestId`: the order's live allocation, else its latest.
        #[schema(value_type = OrderId, required = false)]
        "orderId" => pub order_id: Option<OrderId>,
        #[schema(value_type = EventName, required = false)]
        "event" => pub event: Option<EventName>,
        /// Return this many of the coins that remain (not with `amountMinor`).
        #[schema(value_type = Coins, required = false)]
        "coins" => pub coins: Option<Coins>,
        /// A refund of this much of the purchase value (allocations that recorded one): the
        /// allocation keeps what the rest of the purchase earns.
        #[schema(value_type = PurchaseMinor, required = false)]
        "amountMinor" => pub amount_minor: Option<PurchaseMinor>,
        /// When the user already spent the coins: `REJECT` (the default: 409, nothing taken),
        /// `CAP` (take what there is, waive the rest and say how much was short) or `NEGATIVE`
        /// (take it all: the rest becomes debt, a negative balance that later credits pay first).
        #[schema(value_type = ShortfallPolicy, required = false)]
        "onShortfall" => pub on_shortfall: Option<ShortfallPolicy>,
    }
}

impl ReverseRequest {
    /// The return asked for, once the fields that exclude each other are checked.
    pub fn command(self, now_ms: i64) -> Result<ReverseCmd, String> {
        let target = target_of(self.original_request_id, self.order_id, self.event)?;
        let ask = match (self.coins, self.amount_minor) {
            (None, None) => ReturnAsk::Whole,
            (Some(coins), None) => ReturnAsk::Coins(coins.get()),
            (None, Some(minor)) => ReturnAsk::AmountMinor(minor.0),
            (Some(_), Some(_)) => return Err("give coins or amountMinor, not both".into()),
        };
        let on_shortfall = self.on_shortfall.map_or(OnShortfall::Reject, |p| p.0);
        Ok(ReverseCmd { company: self.company_id, request_id: self.request_id, target, ask, on_shortfall, now_ms })
    }
}

/// `onShortfall`: what a return does when the user no longer has the coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortfallPolicy(pub OnShortfall);

impl Serialize for ShortfallPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

schema_of!(
    ShortfallPolicy,
    "ShortfallPolicy",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["REJECT", "CAP", "NEGATIVE"]))
        .description(Some(
            "REJECT: refuse with INSUFFICIENT_BALANCE, take nothing; CAP: take what the user has, waive the rest; NEGATIVE: take it all, \
             what the user does not have becomes debt (a negative balance) that later credits pay first",
        ))
        .into()
);

impl FromField for ShortfallPolicy {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value.and_then(Value::as_str).and_then(OnShortfall::parse).map(ShortfallPolicy).ok_or_else(|| format!("{name} must be REJECT, CAP or NEGATIVE"))
    }
}

/// A return's answer. `coins` is signed like its ledger entry: `-100` when an allocation is
/// taken back (or its held coins canceled), `30` when a redemption is given back.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReverseView {
    pub request_id: RequestId,
    /// The original as the request named it (an alias stays an alias); by order, the allocation.
    pub original_request_id: RequestId,
    /// `REVERSE`: coins taken from (or given back to) the spendable balance; `CANCEL`: held
    /// coins released before they could be spent.
    #[schema(value_type = String, example = "REVERSE")]
    pub kind: &'static str,
    pub coins: i64,
    /// `onShortfall: CAP`: coins the user no longer had, waived, and what they are worth in
    /// currency minor units (to take off the cash refund).
    pub coins_short: i64,
    pub short_amount_minor: i64,
    /// Coins of the original no return has ended yet (0: returned in full).
    pub coins_remaining: i64,
    /// Allocations that recorded a purchase value: how much of it is refunded so far.
    pub amount_refunded_minor: Option<i64>,
    pub balance: i64,
    pub pending_balance: i64,
}

impl From<ReverseReceipt> for ReverseView {
    fn from(r: ReverseReceipt) -> Self {
        Self {
            request_id: r.request_id,
            original_request_id: r.original_request_id,
            kind: r.kind.as_str(),
            coins: r.coins,
            coins_short: r.coins_short,
            short_amount_minor: r.short_amount_minor,
            coins_remaining: r.coins_remaining,
            amount_refunded_minor: r.amount_refunded_minor,
            balance: r.balance,
            pending_balance: r.pending_balance,
        }
    }
}

request_body! {
    /// `POST /api/v0/coins/activate`: the held allocation by `originalRequestId` (or an alias), or
    /// by `orderId` and `event`.
    pub struct ActivateRequest {
        "companyId" => pub company_id: CompanyId,
        "requestId" => pub request_id: RequestId,
        #[schema(value_type = RequestId, required = false)]
        "originalRequestId" => pub original_request_id: Option<RequestId>,
        #[schema(value_type = OrderId, required = false)]
        "orderId" => pub order_id: Option<OrderId>,
        #[schema(value_type = EventName, required = false)]
        "event" => pub event: Option<EventName>,
    }
}

/// The allocation a request names: `originalRequestId`, or `orderId` with `event`, never both.
fn target_of(original: Option<RequestId>, order: Option<OrderId>, event: Option<EventName>) -> Result<Target, String> {
    match (original, order, event) {
        (Some(original), None, None) => Ok(Target::Request(original)),
        (None, Some(order), Some(event)) => Ok(Target::Order { event, order }),
        (Some(_), _, _) => Err("give originalRequestId, or orderId and event, not both".into()),
        (None, Some(_), None) => Err("orderId needs event: an order is named per event".into()),
        (None, None, Some(_)) => Err("event needs orderId, or give originalRequestId".into()),
        (None, None, None) => Err("originalRequestId is required (or orderId and event)".into()),
    }
}

impl ActivateRequest {
    pub fn command(self, now_ms: i64) -> Result<ActivateCmd, String> {
        let target = target_of(self.original_request_id, self.order_id, self.event)?;
        Ok(ActivateCmd { company: self.company_id, request_id: self.request_id, target, now_ms })
    }
}

/// An activation's answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivateView {
    pub request_id: RequestId,
    pub original_request_id: RequestId,
    /// `true`: it was spendable already (nothing was written).
    pub already_active: bool,
    /// Coins this request made spendable (0 when already active).
    pub coins: i64,
    /// RFC 3339 UTC; `null` for an allocation that earned nothing.
    pub activated_at: Option<String>,
    /// When its coins expire (the clock starts at activation); `null`: never.
    pub expires_at: Option<String>,
    pub balance: i64,
    pub pending_balance: i64,
}

impl From<ActivateReceipt> for ActivateView {
    fn from(r: ActivateReceipt) -> Self {
        Self {
            request_id: r.request_id,
            original_request_id: r.original_request_id,
            already_active: r.already_active,
            coins: r.coins,
            activated_at: r.activated_at.map(rfc3339),
            expires_at: r.expires_at.map(rfc3339),
            balance: r.balance,
            pending_balance: r.pending_balance,
        }
    }
}

request_body! {
    /// `POST /api/v0/coins/adjust`: coins added (positive) or taken (negative) by hand, with a
    /// reason; the acting client is recorded with it.
    pub struct AdjustRequest {
        "companyId" => pub company_id: CompanyId,
        "userId" => pub user_id: UserId,
        "requestId" => pub request_id: RequestId,
        "coins" => pub coins: SignedCoins,
        /// Why: shown with the entry in the ledger, the dashboard and exports.
        "reason" => pub reason: Reason,
        /// Credits: days until the coins expire, counted from when they become spendable
        /// (`null` or absent: never, unless `expiresAt` is given).
        #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 36500)]
        "validityDays" => pub validity_days: Option<ValidityDays>,
        /// Credits: the instant the coins expire (RFC 3339, in the future), e.g. a balance imported
        /// with its original expiry. Not with `validityDays` or `pendingDays`.
        #[schema(value_type = String, format = DateTime, required = false)]
        "expiresAt" => pub expires_at: Option<Timestamp>,
        /// Credits: days the coins are held before they can be spent.
        #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 365)]
        "pendingDays" => pub pending_days: Option<PendingDays>,
        /// Credits: whether they count towards a status tier (default `false`).
        #[schema(value_type = bool, required = false)]
        "qualifying" => pub qualifying: Option<bool>,
        /// Debits: when the user has fewer coins than asked, `REJECT` (the default: 409, nothing
        /// taken), `CAP` (take what there is and say how much was short) or `NEGATIVE` (take it
        /// all: the rest becomes debt, a negative balance that later credits pay first).
        #[schema(value_type = ShortfallPolicy, required = false)]
        "onShortfall" => pub on_shortfall: Option<ShortfallPolicy>,
    }
}

impl AdjustRequest {
    /// The adjustment asked for, once the fields that depend on each other are checked.
    pub fn command(self, client_id: &str, now_ms: i64) -> Result<AdjustCmd, String> {
        let expiry = match (self.validity_days.and_then(|v| v.0), self.expires_at) {
            (Some(_), Some(_)) => return Err("give validityDays or expiresAt, not both".into()),
            (Some(days), None) => AdjustExpiry::ValidityDays(days),
            (None, Some(at)) => AdjustExpiry::At(at.0),
            (None, None) => AdjustExpiry::Never,
        };
        let cmd = AdjustCmd {
            company: self.company_id,
            user: self.user_id,
            request_id: self.request_id,
            coins: self.coins.0,
            reason: self.reason.0,
            expiry,
            pending_days: self.pending_days.and_then(|p| p.0),
            qualifying: self.qualifying.unwrap_or(false),
            on_shortfall: self.on_shortfall.map_or(OnShortfall::Reject, |p| p.0),
            client_id: client_id.to_owned(),
            now_ms,
        };
        cmd.check()?;
        Ok(cmd)
    }
}

/// `coins` of an adjustment: signed, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SignedCoins(pub i64);

schema_of!(
    SignedCoins,
    "SignedCoins",
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(int_schema(-adjust::COINS_MAX, -1, false, "Coins to take"))
        .item(int_schema(1, adjust::COINS_MAX, false, "Coins to add"))
        .description(Some("Coins to add (positive) or take (negative); never 0"))
        .into()
);

impl FromField for SignedCoins {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        let max = adjust::COINS_MAX;
        value
            .and_then(whole_number)
            .filter(|c| *c != 0 && c.abs() <= max)
            .map(SignedCoins)
            .ok_or_else(|| format!("{name} must be a non-zero whole number of coins between -{max} and {max}"))
    }
}

/// An adjustment's `reason`: 1 to 200 characters of text, not only spaces, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Reason(pub String);

schema_of!(
    Reason,
    "Reason",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(adjust::REASON_MAX_CHARS))
        .pattern(Some(super::TEXT_LINE_PATTERN))
        .description(Some("Why the coins were adjusted (1 to 200 characters, not only spaces, no control characters)"))
        .into()
);

impl FromField for Reason {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        super::text_line(name, value, adjust::REASON_MAX_CHARS).map(Reason)
    }
}

/// An RFC 3339 instant, as Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(self.0))
    }
}

impl FromField for Timestamp {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value
            .and_then(Value::as_str)
            .and_then(crate::clock::parse_rfc3339)
            .map(Timestamp)
            .ok_or_else(|| format!("{name} must be an RFC 3339 time such as 2027-03-31T23:59:59Z"))
    }
}

/// An adjustment's answer. `coins` is signed like its ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustView {
    pub request_id: RequestId,
    pub user_id: UserId,
    /// Credited (held or not) when positive, taken when negative.
    pub coins: i64,
    /// A debit with `onShortfall: CAP`: the coins the user did not have, not taken.
    pub coins_short: i64,
    pub reason: String,
    /// Held credits: when they become spendable (RFC 3339 UTC); otherwise `null`.
    pub activates_at: Option<String>,
    /// Spendable credits: when they expire; `null` for never, for a debit, or while held (their
    /// expiry is set when they activate).
    pub expires_at: Option<String>,
    pub balance: i64,
    pub pending_balance: i64,
}

impl From<AdjustReceipt> for AdjustView {
    fn from(r: AdjustReceipt) -> Self {
        Self {
            request_id: r.request_id,
            user_id: r.user,
            coins: r.coins,
            coins_short: r.coins_short,
            reason: r.reason,
            activates_at: r.activates_at.map(rfc3339),
            expires_at: r.expires_at.map(rfc3339),
            balance: r.balance,
            pending_balance: r.pending_balance,
        }
    }
}

/// `POST /api/v0/coins/simulate`: `operation` (`ALLOCATE` or `REVERSE`), that operation's own
/// fields, and optionally `at` (RFC 3339, not in the past): the instant to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateRequest {
    pub operation: SimulatedOperation,
    pub at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SimulatedOperation {
    Allocate(AllocateRequest),
    Reverse(ReverseRequest),
}

impl FromJsonObject for SimulateRequest {
    fn from_object(o: &Map<String, Value>) -> Result<Self, String> {
        let operation = match o.get("operation").and_then(Value::as_str) {
            Some("ALLOCATE") => SimulatedOperation::Allocate(AllocateRequest::from_object(o)?),
            Some("REVERSE") => SimulatedOperation::Reverse(ReverseRequest::from_object(o)?),
            _ => return Err("operation must be ALLOCATE or REVERSE".into()),
        };
        Ok(Self { operation, at: FromField::from_field("at", o.get("at"))? })
    }
}

impl SimulateRequest {
    pub fn company(&self) -> &CompanyId {
        match &self.operation {
            SimulatedOperation::Allocate(r) => &r.company_id,
            SimulatedOperation::Reverse(r) => &r.company_id,
        }
    }

    /// The command simulated: at `at`, which may not be before `now_ms`, else now.
    pub fn command(self, now_ms: i64) -> Result<SimulateCmd, String> {
        let at = match self.at {
            Some(Timestamp(at)) if at < now_ms => return Err("at must not be in the past".into()),
            Some(Timestamp(at)) => at,
            None => now_ms,
        };
        Ok(match self.operation {
            SimulatedOperation::Allocate(r) => SimulateCmd::Allocate(AllocateCmd {
                purchase: r.purchase(),
                company: r.company_id,
                user: r.user_id,
                event: r.event,
                request_id: r.request_id,
                now_ms: at,
            }),
            SimulatedOperation::Reverse(r) => SimulateCmd::Reverse(r.command(at)?),
        })
    }
}

impl utoipa::PartialSchema for SimulateRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{AllOfBuilder, OneOfBuilder};
        let head = |operation: &str| {
            ObjectBuilder::new()
                .property("operation", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([operation])))
                .required("operation")
                .property(
                    "at",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime)))
                        .description(Some("The instant to simulate (RFC 3339, not in the past); now if absent")),
                )
        };
        let allocate = AllOfBuilder::new().item(head("ALLOCATE")).item(Ref::from_schema_name("AllocateRequest"));
        let reverse = AllOfBuilder::new().item(head("REVERSE")).item(Ref::from_schema_name("ReverseRequest"));
        OneOfBuilder::new()
            .item(allocate)
            .item(reverse)
            .description(Some("The operation and its own request's fields (those of allocate-coin, or of coins/reverse)"))
            .into()
    }
}

impl utoipa::ToSchema for SimulateRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("SimulateRequest")
    }
}

/// What the real call would do. Fields that do not apply are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationView {
    /// `ALLOCATE` or `REVERSE` (it would be applied), `REPLAY` (its request id, or its order, was
    /// applied before) or `REFUSE` (with the `errorCode` and `message` the real call would give).
    #[schema(value_type = String, example = "ALLOCATE")]
    pub outcome: &'static str,
    /// Signed like the entry it would write: earned (held or not), or taken back (negative).
    pub coins: Option<i64>,
    pub base_coins: Option<i64>,
    /// The allocation's state after it: the new one's, or the returned one's.
    pub state: Option<String>,
    pub activates_at: Option<String>,
    pub expires_at: Option<String>,
    pub coin_config_id: Option<String>,
    pub calculation: Option<CalculationView>,
    /// The member's tier code before and after the operation; `null` when the company has no
    /// tier scheme (or the operation would be refused).
    pub tier_before: Option<String>,
    pub tier_after: Option<String>,
    pub balance_after: Option<i64>,
    pub pending_after: Option<i64>,
    pub error_code: Option<&'static str>,
    pub message: Option<String>,
}

impl SimulationView {
    /// The view of a simulation of `operation` (`ALLOCATE` or `REVERSE`), its refusal worded by
    /// `refusal` as the real call would word it.
    pub fn of(sim: Simulation, operation: &'static str, refusal: impl Fn(crate::domain::Refusal) -> (&'static str, String)) -> Self {
        let (error_code, message) = sim.refusal.map(refusal).map_or((None, None), |(c, m)| (Some(c), Some(m)));
        Self {
            outcome: match sim.outcome {
                Some(SimOutcome::Replay) => "REPLAY",
                Some(SimOutcome::Refuse) => "REFUSE",
                _ => operation,
            },
            coins: sim.coins,
            base_coins: sim.base_coins,
            state: sim.state.map(|s| s.as_str().to_owned()),
            activates_at: sim.activates_at.map(rfc3339),
            expires_at: sim.expires_at.map(rfc3339),
            coin_config_id: sim.coin_config_id,
            calculation: sim.calculation.as_deref().and_then(crate::domain::earn::CalculationRecord::parse).map(CalculationView::from),
            tier_before: sim.tier_before,
            tier_after: sim.tier_after,
            balance_after: sim.balance_after,
            pending_after: sim.pending_after,
            error_code,
            message,
        }
    }
}

/// An ISO 4217 code such as `INR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Currency(pub String);

schema_of!(
    Currency,
    "Currency",
    ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[A-Z]{3}$")).examples(["INR"]).description(Some("An ISO 4217 code")).into()
);

impl FromField for Currency {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        match value.and_then(Value::as_str) {
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Currency(c.to_owned())),
            _ => Err(format!("{name} must be a three-letter ISO 4217 code such as INR")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MinorUnitsPerCoin(pub i64);

schema_of!(MinorUnitsPerCoin, "MinorUnitsPerCoin", int_schema(1, MINOR_UNITS_PER_COIN_MAX, false, "Currency minor units one coin is worth"));

impl FromField for MinorUnitsPerCoin {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value
            .and_then(whole_number)
            .filter(|n| (1..=MINOR_UNITS_PER_COIN_MAX).contains(n))
            .map(MinorUnitsPerCoin)
            .ok_or_else(|| format!("{name} must be a whole number between 1 and {MINOR_UNITS_PER_COIN_MAX}"))
    }
}

request_body! {
    /// `PUT /api/v0/coins/coin-value`: a company's own value, or (`companyId` null, admin only)
    /// the default of every company.
    pub struct CoinValueRequest {
        /// The company, or `null` for the default of every company (admin only).
        #[schema(value_type = Option<CompanyId>)]
        "companyId" => pub company_id: Nullable<CompanyId>,
        "currency" => pub currency: Currency,
        "minorUnitsPerCoin" => pub minor_units_per_coin: MinorUnitsPerCoin,
    }
}

/// `GET /api/v0/coins/coin-value?companyId=`
#[derive(Debug, Clone, Default, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CoinValueQuery {
    /// The company; without it, the default of every company.
    #[param(rename = "companyId", value_type = Option<CompanyId>)]
    pub company_id: Option<CompanyId>,
}

impl FromQuery for CoinValueQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_id(q, "companyId")? })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoinValueView {
    pub company_id: Option<CompanyId>,
    pub currency: String,
    pub minor_units_per_coin: i64,
}

impl From<crate::domain::redeem::CoinValue> for CoinValueView {
    fn from(v: crate::domain::redeem::CoinValue) -> Self {
        Self { company_id: v.company, currency: v.currency, minor_units_per_coin: v.minor_units_per_coin }
    }
}
