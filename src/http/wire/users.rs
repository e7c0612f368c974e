//! What a user can see of their coins: the summary and the paginated history.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::{FromQuery, query_id};
use crate::clock::rfc3339;
use crate::domain::{CompanyId, RequestId, UserId};
use crate::store::{LedgerEntry, UserSummary};

/// History page sizes.
pub const PAGE_LIMIT_MAX: i64 = 500;
pub const PAGE_LIMIT_DEFAULT: i64 = 50;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringView {
    pub coins: i64,
    pub expires_at: String,
}

/// `GET /api/v0/coins/users/{userId}`
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub user_id: UserId,
    pub company_id: CompanyId,
    /// Spendable coins; below zero by `debt` while the user owes coins.
    pub balance: i64,
    pub lifetime_earned: i64,
    pub lifetime_redeemed: i64,
    pub lifetime_expired: i64,
    /// Lots expiring within 30 days, soonest first.
    pub expiring_soon: Vec<ExpiringView>,
    /// Coins held: credited, not spendable until they activate (not in `balance`).
    pub pending_balance: i64,
    /// The held credits, soonest activation first (at most 100).
    pub pending: Vec<PendingView>,
    /// Coins the user owes (a return or an adjustment with `onShortfall: NEGATIVE` took more than
    /// they had): `balance` is this far below zero, and the next credits pay it first.
    pub debt: i64,
    /// The member's status tier; `null` when the company has no tier scheme.
    pub tier: Option<super::tiers::MemberTierView>,
}

/// A held credit: the allocation, its coins and when they become spendable.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingView {
    pub request_id: RequestId,
    pub coins: i64,
    pub activates_at: String,
}

impl From<UserSummary> for UserView {
    fn from(s: UserSummary) -> Self {
        Self {
            user_id: s.user,
            company_id: s.company,
            balance: s.balance,
            lifetime_earned: s.lifetime_earned,
            lifetime_redeemed: s.lifetime_redeemed,
            lifetime_expired: s.lifetime_expired,
            expiring_soon: s.expiring_soon.into_iter().map(|(coins, at)| ExpiringView { coins, expires_at: rfc3339(at) }).collect(),
            pending_balance: s.pending_balance,
            pending: s.pending.into_iter().map(|(request_id, coins, at)| PendingView { request_id, coins, activates_at: rfc3339(at) }).collect(),
            debt: crate::domain::ledger::debt(s.balance),
            tier: None,
        }
    }
}

/// `GET /api/v0/coins/transactions?userId=&limit=&cursor=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// The user whose history to read.
    #[param(rename = "userId", value_type = UserId)]
    pub user_id: UserId,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, required = false)]
    pub limit: i64,
    /// The `nextCursor` of the previous page; absent for the newest entries.
    #[param(rename = "cursor", value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{2,40}$")]
    pub before_entry_id: Option<i64>,
}

impl FromQuery for TransactionsQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        let user_id = query_id(q, "userId")?.ok_or("userId is required")?;
        let limit = match q.get("limit") {
            None => PAGE_LIMIT_DEFAULT,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=PAGE_LIMIT_MAX).contains(n))
                .ok_or_else(|| format!("limit must be a whole number between 1 and {PAGE_LIMIT_MAX}"))?,
        };
        let before_entry_id = q.get("cursor").map(|c| decode_cursor(c).ok_or("cursor is not one this API issued")).transpose()?;
        Ok(Self { user_id, limit, before_entry_id })
    }
}

/// One ledger entry on the wire; fields that do not apply are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    pub entry_id: i64,
    /// `ALLOCATE`, `ACTIVATE`, `CANCEL`, `REDEEM`, `REVERSE`, `EXPIRE` or `ADJUST`.
    #[serde(rename = "type")]
    #[schema(example = "ALLOCATE")]
    pub kind: String,
    /// Signed: credits positive, debits negative.
    pub coins: i64,
    pub balance_after: i64,
    pub event: Option<String>,
    pub request_id: Option<String>,
    pub coin_config_id: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Held coins this entry moved (signed; 0 for entries that move none).
    pub pending_coins: i64,
    /// The user's held coins after it.
    pub pending_after: i64,
    /// When it took effect, if not when it was written.
    pub effective_at: Option<String>,
    pub order_id: Option<String>,
    pub amount_minor: Option<i64>,
    /// Reversals: the request reversed.
    pub original_request_id: Option<String>,
    pub reason: Option<String>,
    pub client_id: Option<String>,
}

impl From<LedgerEntry> for EntryView {
    fn from(e: LedgerEntry) -> Self {
        Self {
            entry_id: e.entry_id,
            kind: e.kind.as_str().to_owned(),
            coins: e.coins,
            balance_after: e.balance_after,
            event: e.event,
            request_id: e.request_id,
            coin_config_id: e.coin_config_id,
            created_at: rfc3339(e.created_at_ms),
            expires_at: e.expires_at_ms.map(rfc3339),
            pending_coins: e.extra.pending_coins,
            pending_after: e.extra.pending_after,
            effective_at: e.extra.effective_at_ms.map(rfc3339),
            order_id: e.extra.order_id,
            amount_minor: e.extra.amount_minor,
            original_request_id: e.extra.original_request_id,
            reason: e.extra.reason,
            client_id: e.extra.client_id,
        }
    }
}

/// A page of history, newest first; `nextCursor` is `null` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageView {
    pub entries: Vec<EntryView>,
    pub next_cursor: Option<String>,
}

/// Cursors are opaque to clients: the last entry id of a page, encoded.
pub fn encode_cursor(entry_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("e{entry_id}"))
}

pub fn decode_cursor(cursor: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix('e')?.parse().ok().filter(|n: &i64| *n > 0)
}

/// `POST /api/v0/coins/users/{userId}/page-link`: a link to the user's own read-only page.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageLinkView {
    /// Opens the page without a login until `expiresAt`; grants nothing else.
    #[schema(example = "https://coins.example.com/member/eyJ1IjoiRUtRWlZNUUsiLCJjIjoiU0hPUCIsImUiOjE3OTYxOTAwMDAwMDB9.Xk3…")]
    pub url: String,
    pub expires_at: String,
}
