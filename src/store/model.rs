//! What the store keeps and returns besides the ledger's own plans: credentials and tokens,
//! read models for reports, and the stored form of receipts (replayed verbatim).

use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};
use crate::domain::allocation::{AllocationState, ReturnKind};
use crate::domain::earn::CalculationRecord;
use crate::domain::ledger::RequestKind;
use crate::domain::lockout::LockState;
use crate::domain::redeem::RedeemReceipt;
use crate::domain::reverse::ReverseReceipt;
use crate::domain::{CompanyId, ConfigKind, EventName, RequestId, UserId};

/// An API credential as stored. `secret_hash` is an Argon2 PHC string, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    pub secret_hash: String,
    pub admin: bool,
    pub companies: Vec<CompanyId>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub lock: LockState,
}

/// A user of the OAuth password grant, created per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordUserRecord {
    pub client_id: String,
    pub username: String,
    pub password_hash: String,
    pub lock: LockState,
}

/// Whose authentication attempt is being counted for lockout.
#[derive(Debug, Clone, Copy)]
pub enum AuthSubject<'a> {
    Client(&'a str),
    PasswordUser { client_id: &'a str, username: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// An issued token, keyed by the SHA-256 of the token text (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_hash: String,
    pub kind: TokenKind,
    pub client_id: String,
    pub username: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// An idempotent operation's answer: newly applied, or the stored answer of the first time.
/// `expired`: the user's due lots that the operation wrote off first (never on a replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    pub receipt: T,
    pub replayed: bool,
    pub expired: Expired,
}

/// A user's coins as clients see them: stored balance less lots already past expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBalance {
    pub company: CompanyId,
    /// Negative while the user is in debt.
    pub balance: i64,
}

/// Days ahead that `expiringSoon` looks.
pub const EXPIRING_SOON_DAYS: i64 = 30;

/// The user summary. Built from the stored account and what is due but not yet written
/// ([`Unwritten`]): reads never wait for the sweeper, so those count as written already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user: UserId,
    pub company: CompanyId,
    pub balance: i64,
    /// Coins held: credited, not spendable until they activate.
    pub pending_balance: i64,
    pub lifetime_earned: i64,
    pub lifetime_redeemed: i64,
    pub lifetime_expired: i64,
    /// `(coins, expires_at_ms)` of lots expiring within [`EXPIRING_SOON_DAYS`], soonest first.
    pub expiring_soon: Vec<(i64, i64)>,
    /// `(allocation, coins, activates_at_ms)` of held credits, soonest first, at most 100.
    pub pending: Vec<(RequestId, i64, i64)>,
}

/// The account's `pendingBalance` and the coins due but not yet written: held lots whose hold
/// has ended (`activated`) and lots past expiry (`expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwritten {
    pub expired: i64,
    pub held: i64,
    pub activated: i64,
}

/// The lists a summary shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SummaryLists {
    pub expiring_soon: Vec<(i64, i64)>,
    pub pending: Vec<(RequestId, i64, i64)>,
}

impl UserSummary {
    /// `stored` is the account's `[balance, earned, redeemed, expired]`. Held coins whose hold
    /// has ended count as earned and spendable; coins of lots past expiry as expired already.
    pub fn from_stored(user: UserId, company: CompanyId, stored: [i64; 4], unwritten: Unwritten, lists: SummaryLists) -> Self {
        let [balance, earned, redeemed, expired] = stored;
        let Unwritten { expired: unswept, held, activated } = unwritten;
        Self {
            user,
            company,
            balance: balance + activated - unswept,
            pending_balance: held - activated,
            lifetime_earned: earned + activated,
            lifetime_redeemed: redeemed,
            lifetime_expired: expired + unswept,
            expiring_soon: lists.expiring_soon,
            pending: lists.pending,
        }
    }
}

/// One stored ledger entry, as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub entry_id: i64,
    pub kind: crate::domain::ledger::EntryKind,
    pub coins: i64,
    pub balance_after: i64,
    pub event: Option<String>,
    pub request_id: Option<String>,
    pub coin_config_id: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub extra: EntryExtra,
}

/// What an entry says beyond the first version of the ledger: held coins, and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryExtra {
    pub pending_coins: i64,
    pub pending_after: i64,
    /// When it took effect, if not when it was written (an expiry or activation written late).
    pub effective_at_ms: Option<i64>,
    pub order_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub original_request_id: Option<String>,
    pub reason: Option<String>,
    pub client_id: Option<String>,
}

/// A ledger entry as an export writes it: the entry, its user, and from its request (or the
/// original's) the purchase currency and when held coins activate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub user: String,
    pub entry: LedgerEntry,
    pub currency: Option<String>,
    pub activates_at_ms: Option<i64>,
}

/// A user's standing as a balances export writes it (what a read shows now: held coins whose
/// hold ended count as spendable, lots past expiry as expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportBalance {
    pub user: String,
    pub balance: i64,
    pub pending_balance: i64,
    pub lifetime_earned: i64,
    pub lifetime_redeemed: i64,
    pub lifetime_expired: i64,
    pub next_expiry_at_ms: Option<i64>,
    pub next_expiry_coins: Option<i64>,
}

impl ExportBalance {
    /// From the stored account `[balance, pending, earned, redeemed, expired]` and what is due
    /// but not written yet: `held` coins whose hold ended, `gone` coins past expiry.
    pub fn from_stored(user: String, stored: [i64; 5], held: i64, gone: i64, next_at: Option<i64>, next_coins: Option<i64>) -> Self {
        let [balance, pending, earned, redeemed, expired] = stored;
        Self {
            user,
            balance: balance + held - gone,
            pending_balance: pending - held,
            lifetime_earned: earned + held,
            lifetime_redeemed: redeemed,
            lifetime_expired: expired + gone,
            next_expiry_at_ms: next_at,
            next_expiry_coins: next_coins,
        }
    }
}

/// One create or change of a configuration; the snapshots are JSON objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub action: String,
    pub client_id: String,
    pub at_ms: i64,
    pub before_json: Option<String>,
    pub after_json: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFilter {
    pub company: Option<CompanyId>,
    pub event: Option<EventName>,
    pub kind: Option<ConfigKind>,
}

/// Lots written off by `EXPIRE` entries, and the coins they held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub lots: u64,
    pub coins: u64,
}

/// What one sweeper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub lots_expired: u64,
    pub coins_expired: u64,
    /// Users whose expiry failed this pass (logged once each; retried next pass).
    pub users_failed: u64,
}

impl SweepReport {
    /// Counts one user's outcome. A failure is logged and skipped: one user's failure must not
    /// hold up everyone else's expiry.
    pub fn add(&mut self, user: &UserId, outcome: super::StoreResult<Expired>) {
        match outcome {
            Ok(done) => {
                self.lots_expired += done.lots;
                self.coins_expired += done.coins;
            }
            Err(e) => {
                self.users_failed += 1;
                tracing::error!(%user, error = %super::error::chain(&e), "expiring this user's lots failed; skipped until the next pass");
            }
        }
    }
}

/// Users whose due lots one sweeper pass expires, at most.
pub const SWEEP_USERS_MAX: usize = 256;

/// What `coins verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub users_checked: i64,
    pub entries_checked: i64,
    pub problems: Vec<String>,
}

/// The stored form of a redemption receipt (the `requests.response` column): the wire payload
/// as first answered, so that a replay repeats it byte for byte.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRedeemReceipt {
    request_id: String,
    coins: i64,
    currency: String,
    amount_minor: i64,
    balance: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredReverseReceipt {
    request_id: String,
    original_request_id: String,
    coins: i64,
    balance: i64,
    // Stored since partial returns; a reversal stored before them was whole, of an active
    // original, with nothing held.
    #[serde(default = "reverse_kind")]
    kind: String,
    #[serde(default)]
    coins_short: i64,
    #[serde(default)]
    short_amount_minor: i64,
    #[serde(default)]
    coins_remaining: i64,
    #[serde(default)]
    amount_refunded_minor: Option<i64>,
    #[serde(default)]
    pending_balance: i64,
}

fn reverse_kind() -> String {
    ReturnKind::Reverse.as_str().to_owned()
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and integers always serialise.
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<'a, T: Deserialize<'a>>(text: Option<&'a str>) -> StoreResult<T> {
    let text = text.ok_or_else(|| StoreError::Corrupt("a stored request has no response".into()))?;
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("a stored response does not parse: {e}")))
}

fn stored_id(s: String) -> RequestId {
    RequestId::from_trusted(s)
}

/// The receipts a request stores and replays.
pub trait StoredReceipt: Sized {
    fn to_stored(&self) -> String;
    fn from_stored(text: Option<&str>) -> StoreResult<Self>;
}

impl StoredReceipt for RedeemReceipt {
    fn to_stored(&self) -> String {
        to_json(&StoredRedeemReceipt {
            request_id: self.request_id.to_string(),
            coins: self.coins,
            currency: self.currency.clone(),
            amount_minor: self.amount_minor,
            balance: self.balance,
        })
    }

    fn from_stored(text: Option<&str>) -> StoreResult<Self> {
        let r: StoredRedeemReceipt = from_json(text)?;
        Ok(RedeemReceipt { request_id: stored_id(r.request_id), coins: r.coins, currency: r.currency, amount_minor: r.amount_minor, balance: r.balance })
    }
}

impl StoredReceipt for ReverseReceipt {
    fn to_stored(&self) -> String {
        to_json(&StoredReverseReceipt {
            request_id: self.request_id.to_string(),
            original_request_id: self.original_request_id.to_string(),
            coins: self.coins,
            balance: self.balance,
            kind: self.kind.as_str().to_owned(),
            coins_short: self.coins_short,
            short_amount_minor: self.short_amount_minor,
            coins_remaining: self.coins_remaining,
            amount_refunded_minor: self.amount_refunded_minor,
            pending_balance: self.pending_balance,
        })
    }

    fn from_stored(text: Option<&str>) -> StoreResult<Self> {
        let r: StoredReverseReceipt = from_json(text)?;
        Ok(ReverseReceipt {
            request_id: stored_id(r.request_id),
            original_request_id: stored_id(r.original_request_id),
            kind: ReturnKind::parse(&r.kind).ok_or_else(|| StoreError::Corrupt(format!("a stored return has kind {}", r.kind)))?,
            coins: r.coins,
            coins_short: r.coins_short,
            short_amount_minor: r.short_amount_minor,
            coins_remaining: r.coins_remaining,
            amount_refunded_minor: r.amount_refunded_minor,
            balance: r.balance,
            pending_balance: r.pending_balance,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredActivateReceipt {
    request_id: String,
    original_request_id: String,
    already_active: bool,
    coins: i64,
    activated_at: Option<i64>,
    expires_at: Option<i64>,
    balance: i64,
    pending_balance: i64,
}

impl StoredReceipt for crate::domain::activate::ActivateReceipt {
    fn to_stored(&self) -> String {
        to_json(&StoredActivateReceipt {
            request_id: self.request_id.to_string(),
            original_request_id: self.original_request_id.to_string(),
            already_active: self.already_active,
            coins: self.coins,
            activated_at: self.activated_at,
            expires_at: self.expires_at,
            balance: self.balance,
            pending_balance: self.pending_balance,
        })
    }

    fn from_stored(text: Option<&str>) -> StoreResult<Self> {
        let r: StoredActivateReceipt = from_json(text)?;
        Ok(Self {
            request_id: stored_id(r.request_id),
            original_request_id: stored_id(r.original_request_id),
            already_active: r.already_active,
            coins: r.coins,
            activated_at: r.activated_at,
            expires_at: r.expires_at,
            balance: r.balance,
            pending_balance: r.pending_balance,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredAdjustReceipt {
    request_id: String,
    user_id: String,
    coins: i64,
    coins_short: i64,
    reason: String,
    activates_at: Option<i64>,
    expires_at: Option<i64>,
    balance: i64,
    pending_balance: i64,
}

impl StoredReceipt for crate::domain::adjust::AdjustReceipt {
    fn to_stored(&self) -> String {
        to_json(&StoredAdjustReceipt {
            request_id: self.request_id.to_string(),
            user_id: self.user.to_string(),
            coins: self.coins,
            coins_short: self.coins_short,
            reason: self.reason.clone(),
            activates_at: self.activates_at,
            expires_at: self.expires_at,
            balance: self.balance,
            pending_balance: self.pending_balance,
        })
    }

    fn from_stored(text: Option<&str>) -> StoreResult<Self> {
        let r: StoredAdjustReceipt = from_json(text)?;
        Ok(Self {
            request_id: stored_id(r.request_id),
            user: UserId::from_trusted(r.user_id),
            coins: r.coins,
            coins_short: r.coins_short,
            reason: r.reason,
            activates_at: r.activates_at,
            expires_at: r.expires_at,
            balance: r.balance,
            pending_balance: r.pending_balance,
        })
    }
}

/// Companies are stored space-separated: ids cannot contain spaces.
pub(crate) fn join_companies(companies: &[CompanyId]) -> String {
    companies.iter().map(CompanyId::as_str).collect::<Vec<_>>().join(" ")
}

pub(crate) fn split_companies(s: &str) -> Vec<CompanyId> {
    s.split_whitespace().map(|c| CompanyId::from_trusted(c.to_owned())).collect()
}

/// The audit snapshot of a configuration, as the `/history` endpoint shows it.
pub(crate) fn audit_json(values: &crate::domain::config::ConfigValues) -> String {
    serde_json::json!({
        "configuration": values.kind.as_str(),
        "companyId": values.company_id.as_str(),
        "event": values.event.as_str(),
        "amount": values.amount.map(crate::domain::Coins::get),
        "validityDays": values.validity_days,
        "maxPerUserPerDay": values.max_per_user_per_day,
        "maxPerUser": values.max_per_user,
        "active": values.active,
        "amountType": values.earning.amount_type.as_str(),
        "rateBps": values.earning.rate_bps,
        "minAmountMinor": values.earning.min_amount_minor,
        "maxCoinsPerAllocation": values.earning.max_coins_per_allocation,
        "rounding": values.earning.rounding.as_str(),
        "pendingDays": values.earning.pending_days,
        "tierMultiplier": values.earning.tier_multiplier,
    })
    .to_string()
}

/// The key a company's coin value is stored under; '' is the default (no company id is empty).
pub(crate) fn coin_value_key(company: Option<&CompanyId>) -> &str {
    company.map_or("", CompanyId::as_str)
}

/// The coin value stored as `(company_id, currency, minor_units)`, or the built-in default.
pub(crate) fn coin_value_from(row: Option<(String, String, i64)>) -> crate::domain::redeem::CoinValue {
    match row {
        Some((company, currency, minor_units_per_coin)) => {
            crate::domain::redeem::CoinValue { company: (!company.is_empty()).then(|| CompanyId::from_trusted(company)), currency, minor_units_per_coin }
        }
        None => crate::domain::redeem::CoinValue::builtin(),
    }
}

/// The daily roll-up (`ledger_daily`) over a range of days, grouped three ways (issue 11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyTotals {
    pub by_day: Vec<(i64, crate::domain::ledger::EntryKind, crate::domain::report::Moved)>,
    pub by_event: Vec<(String, crate::domain::ledger::EntryKind, crate::domain::report::Moved)>,
    pub by_company: Vec<(String, crate::domain::ledger::EntryKind, crate::domain::report::Moved)>,
}

/// A company's coins outstanding now: the liability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outstanding {
    pub company: CompanyId,
    /// Coins held by its users and not expired (lots past expiry not yet written off excluded),
    /// not netted against what other users owe.
    pub balance: i64,
    /// Of those, coins whose lots expire within the next 30 days.
    pub expiring_soon: i64,
    /// Coins its users owe (debt, not netted against `balance`), and how many users owe them.
    pub debt: i64,
    pub users_in_debt: i64,
}

/// Which companies a report covers: `None`, all of them (an admin).
pub type CompanyScope = Option<Vec<CompanyId>>;

/// An allocation's record, as `GET /api/v0/coins/allocations/...` shows it: its request row, and
/// for a plain allocation (which keeps no record columns) what its ledger entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRecord {
    pub request_id: RequestId,
    /// Other request ids that repeated this allocation's order, oldest first.
    pub aliases: Vec<RequestId>,
    pub order_id: Option<String>,
    pub company: CompanyId,
    pub user: UserId,
    pub event: String,
    pub coin_config_id: Option<String>,
    pub state: AllocationState,
    pub coins: i64,
    pub base_coins: i64,
    pub coins_canceled: i64,
    pub coins_reversed: i64,
    pub coins_waived: i64,
    pub amount_minor: Option<i64>,
    pub amount_refunded_minor: Option<i64>,
    pub currency: Option<String>,
    pub calculation: CalculationRecord,
    pub created_at_ms: i64,
    pub activates_at_ms: Option<i64>,
    pub activated_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    /// ZERO: why it earned nothing.
    pub zero_reason: Option<String>,
}

/// The columns both backends select for a record, from [`RecordFrom`].
pub(crate) const RECORD_COLUMNS: &str = "r.request_id, r.order_id, r.user_id, r.event, COALESCE(r.coin_config_id, e.coin_config_id), r.state, r.coins, \
     r.base_coins, r.coins_canceled, r.coins_reversed, r.coins_waived, r.amount_minor, r.amount_refunded_minor, r.currency, r.calculation, \
     r.created_at, r.activates_at, r.activated_at, CASE WHEN r.calculation IS NULL THEN e.expires_at ELSE r.expires_at END, r.zero_reason, r.alias_of, r.kind";
/// Which requests' rows a record read finds: the allocation read route shows allocations only;
/// the ledger also returns adjustment credits, which keep the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKinds {
    Allocations,
    Credits,
}

impl RecordKinds {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Allocations => "('ALLOCATE')",
            Self::Credits => "('ALLOCATE', 'ADJUST')",
        }
    }
}

/// Where a record is read from: the request (`r`) and the entry it wrote as its own (`e`), found
/// the way each backend's layout finds it. PostgreSQL indexes entries by request; SQLite keeps the
/// entry's number on the request instead (one index less to write per allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordFrom {
    Postgres,
    Sqlite,
}

impl RecordFrom {
    pub const fn sql(self) -> &'static str {
        match self {
            Self::Postgres => "requests r LEFT JOIN ledger_entries e ON e.company_id = r.company_id AND e.request_id = r.request_id AND e.type = r.kind",
            Self::Sqlite => "requests r LEFT JOIN ledger_entries e ON e.entry_id = r.entry_id AND e.type = r.kind",
        }
    }
}

/// One row of [`RECORD_COLUMNS`], as read.
#[derive(Debug, Clone)]
pub(crate) struct RecordRow {
    pub request_id: String,
    pub order_id: Option<String>,
    pub user: String,
    pub event: Option<String>,
    pub coin_config_id: Option<String>,
    pub state: Option<String>,
    pub coins: i64,
    pub base_coins: Option<i64>,
    pub coins_canceled: i64,
    pub coins_reversed: i64,
    pub coins_waived: i64,
    pub amount_minor: Option<i64>,
    pub amount_refunded_minor: Option<i64>,
    pub currency: Option<String>,
    pub calculation: Option<String>,
    pub created_at: i64,
    pub activates_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub zero_reason: Option<String>,
    pub alias_of: Option<String>,
    /// `ALLOCATE` or `ADJUST`.
    pub kind: String,
}

impl RecordRow {
    /// Coins returned so far (canceled, reversed or waived).
    pub fn returned(&self) -> i64 {
        self.coins_canceled + self.coins_reversed + self.coins_waived
    }

    /// When this credit became spendable, and how many of its base coins count towards a tier
    /// once `returned` of its coins are returned; `None` while it is held (or was canceled while
    /// held). A row without a record was credited at its creation.
    pub fn qualifying_with(&self, returned: i64) -> Option<(i64, i64)> {
        let activated_at = match (self.activated_at, self.activates_at) {
            (Some(at), _) => at,
            (None, None) => self.created_at,
            _ => return None,
        };
        // An adjustment's credit qualifies only when it was made with `qualifying: true` (its
        // `base_coins` are then its coins; adjustments made before tiers existed do not qualify).
        let base = if self.kind == RequestKind::Adjust.as_str() { self.base_coins.unwrap_or(0) } else { self.base_coins.unwrap_or(self.coins) };
        Some((activated_at, crate::domain::tiers::qualifying_of(base, self.coins, returned)))
    }

    /// The allocation as the return and activation rules read it.
    pub fn into_allocation(self) -> StoreResult<crate::domain::allocation::Allocation> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("allocation {} has {what}", self.request_id));
        let state = match self.state.as_deref() {
            None => AllocationState::Active,
            Some(s) => AllocationState::parse(s).ok_or_else(|| corrupt("an unknown state"))?,
        };
        let calculation = match &self.calculation {
            None => CalculationRecord::plain(self.coins),
            Some(text) => CalculationRecord::parse(text).ok_or_else(|| corrupt("an unreadable calculation"))?,
        };
        let calculation = calculation.calculation().ok_or_else(|| corrupt("an incomplete calculation"))?;
        Ok(crate::domain::allocation::Allocation {
            request_id: RequestId::from_trusted(self.request_id.clone()),
            user: UserId::from_trusted(self.user.clone()),
            state,
            coins: self.coins,
            coins_canceled: self.coins_canceled,
            coins_reversed: self.coins_reversed,
            coins_waived: self.coins_waived,
            amount_minor: self.amount_minor,
            amount_refunded_minor: self.amount_refunded_minor.unwrap_or(0),
            calculation,
            activates_at: self.activates_at,
        })
    }

    /// The record. A row without record columns is a plain allocation: FIXED, its coins credited
    /// at its creation, ACTIVE unless a reversal marked it.
    pub fn into_record(self, company: &CompanyId, aliases: Vec<RequestId>) -> StoreResult<AllocationRecord> {
        let state = match self.state.as_deref() {
            None => AllocationState::Active,
            Some(s) => AllocationState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("allocation {} has state {s}", self.request_id)))?,
        };
        let calculation = match &self.calculation {
            None => CalculationRecord::plain(self.coins),
            Some(text) => {
                CalculationRecord::parse(text).ok_or_else(|| StoreError::Corrupt(format!("allocation {} has an unreadable calculation", self.request_id)))?
            }
        };
        let plain = self.calculation.is_none();
        Ok(AllocationRecord {
            request_id: RequestId::from_trusted(self.request_id),
            aliases,
            order_id: self.order_id,
            company: company.clone(),
            user: UserId::from_trusted(self.user),
            event: self.event.unwrap_or_default(),
            coin_config_id: self.coin_config_id,
            state,
            coins: self.coins,
            base_coins: self.base_coins.unwrap_or(self.coins),
            coins_canceled: self.coins_canceled,
            coins_reversed: self.coins_reversed,
            coins_waived: self.coins_waived,
            amount_minor: self.amount_minor,
            amount_refunded_minor: self.amount_refunded_minor,
            currency: self.currency,
            calculation,
            created_at_ms: self.created_at,
            activates_at_ms: self.activates_at,
            activated_at_ms: if plain { Some(self.created_at) } else { self.activated_at },
            expires_at_ms: self.expires_at,
            zero_reason: self.zero_reason,
        })
    }
}
