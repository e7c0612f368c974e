//! The ledger's vocabulary, shared by every plan: entry and request kinds, the entry a plan
//! writes, the lot moves that go with it, and what a stored request remembers for replays.

use super::refusal::Refusal;
use super::{CompanyId, RequestId, UserId};

/// The kind of a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Allocate,
    /// Held coins become spendable (`coins: +N`, `pendingCoins: -N`).
    Activate,
    /// Held coins returned before they were ever spendable (`pendingCoins: -N`).
    Cancel,
    Redeem,
    Reverse,
    Expire,
    /// A staff adjustment: a credit (a lot of its own) or a debit, with a reason.
    Adjust,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocate => "ALLOCATE",
            Self::Activate => "ACTIVATE",
            Self::Cancel => "CANCEL",
            Self::Redeem => "REDEEM",
            Self::Reverse => "REVERSE",
            Self::Expire => "EXPIRE",
            Self::Adjust => "ADJUST",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Allocate, Self::Activate, Self::Cancel, Self::Redeem, Self::Reverse, Self::Expire, Self::Adjust].into_iter().find(|k| k.as_str() == s)
    }
}

/// The operations a client asks for by request id; each one writes one entry of its own kind
/// (a return of held coins writes `CANCEL`; an activation of an allocation already active, none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Allocate,
    Redeem,
    Reverse,
    Activate,
    Adjust,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        self.entry_kind().as_str()
    }

    pub fn entry_kind(self) -> EntryKind {
        match self {
            Self::Allocate => EntryKind::Allocate,
            Self::Redeem => EntryKind::Redeem,
            Self::Reverse => EntryKind::Reverse,
            Self::Activate => EntryKind::Activate,
            Self::Adjust => EntryKind::Adjust,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Allocate, Self::Redeem, Self::Reverse, Self::Activate, Self::Adjust].into_iter().find(|k| k.as_str() == s)
    }
}

/// The state of an allocation (or of an adjustment's credit), as its record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocationState {
    /// Credited but held: counted in the pending balance, not spendable until `activatesAt`.
    Pending,
    /// Spendable (or spent): the normal state of a credit.
    Active,
    /// Returned in full while still held.
    Canceled,
    /// Returned in full after activation (or every coin ended by partial returns).
    Reversed,
    /// Earned 0 coins (below the minimum spend, or rounded to 0).
    Zero,
}

impl AllocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Canceled => "CANCELED",
            Self::Reversed => "REVERSED",
            Self::Zero => "ZERO",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Active, Self::Canceled, Self::Reversed, Self::Zero].into_iter().find(|t| t.as_str() == s)
    }

    /// Live allocations hold their order id; a fully returned one frees it (a re-opened order
    /// earns again), a zero one keeps it.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Canceled | Self::Reversed)
    }
}

/// A ledger entry a plan writes. `coins` is signed: credits positive, debits negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub coins: i64,
    pub balance_after: i64,
    pub event: Option<String>,
    pub request_id: Option<RequestId>,
    pub coin_config_id: Option<String>,
    /// Unix ms: the expiry of the credited lot (ALLOCATE) or of the lot that expired (EXPIRE).
    pub expires_at: Option<i64>,
    /// ALLOCATE: the purchase's order id and value, when the allocation gave them.
    pub order_id: Option<String>,
    pub amount_minor: Option<i64>,
    /// REVERSE, CANCEL and ACTIVATE: the allocation or redemption it acts on.
    pub original_request_id: Option<RequestId>,
    /// Held coins it moves (signed), and the user's held coins after it.
    pub pending_coins: i64,
    pub pending_after: i64,
    /// When it took effect, when that is not when it is written (an activation written after
    /// its `activatesAt`).
    pub effective_at: Option<i64>,
    /// ADJUST: why, and the OAuth client that made it.
    pub reason: Option<String>,
    pub client_id: Option<String>,
}

/// A signed change to one lot, recorded against the entry that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotMove {
    pub lot_id: i64,
    pub coins: i64,
}

/// The lifetime counter an entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    Earned,
    Redeemed,
    Expired,
}

/// The counter an entry's coins count in: an expiry's in the expired; a redemption's, and a
/// return of a redemption's, in the redeemed (with their signs: a return takes from it); every
/// other entry's — allocations, activations, adjustments, and returns of those — in the earned.
/// So at every instant balance = earned − redeemed − expired. The flows count each entry so
/// (`coins verify` recomputes every user's counters by this rule), and reading a past instant back
/// from the ledger applies it again (`store::as_of`, whose SQL form a test holds equal to this).
pub fn counter_of(kind: EntryKind, returns_a_redemption: bool) -> Lifetime {
    match kind {
        EntryKind::Expire => Lifetime::Expired,
        EntryKind::Redeem => Lifetime::Redeemed,
        EntryKind::Reverse if returns_a_redemption => Lifetime::Redeemed,
        _ => Lifetime::Earned,
    }
}

/// A user's debt: what the balance is below zero. Debt arises only from a return or an
/// adjustment with `onShortfall: NEGATIVE`, after every spendable coin was taken, and every
/// later credit pays it first, so a user with debt has no spendable coins: the balance is the
/// spendable coins less the debt, and the debt is the balance below zero.
pub fn debt(balance: i64) -> i64 {
    balance.saturating_neg().max(0)
}

/// A user's account as stored: the stored balance still counts lots past expiry that the
/// sweeper has not written off yet. Negative while the user is in debt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub company: CompanyId,
    pub balance: i64,
    /// Coins held (pending): credited but not yet spendable.
    pub pending: i64,
}

/// The account of `user` in `company`. Another company's user reads as never credited, exactly
/// like a user who does not exist: scoping never reveals which users exist.
pub fn account_in(account: Option<Account>, company: &CompanyId, user: &UserId) -> Result<Account, Refusal> {
    account.filter(|a| &a.company == company).ok_or_else(|| Refusal::UserNotFound(user.clone()))
}

/// What the idempotency record of a request keeps, to tell a replay from a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub kind: RequestKind,
    pub user: UserId,
    /// Allocations: the event.
    pub event: Option<String>,
    /// Allocations: the coins credited (what a replay reports).
    pub coins: i64,
    /// Redemptions: the amount asked for (see `RedeemAmount::fingerprint`).
    pub fingerprint: String,
    /// Reversals: the request reversed.
    pub original: Option<RequestId>,
    /// Redemptions and reversals: the stored receipt, replayed verbatim.
    pub response: Option<String>,
    /// An alias (a retry of a live order under a new request id): the allocation it repeats.
    pub alias_of: Option<RequestId>,
    /// Allocations that keep a record: its state (`None`: a plain allocation, active unless
    /// reversed).
    pub state: Option<AllocationState>,
}

impl StoredRequest {
    /// A credit with a record of its own: an allocation, or an adjustment that added coins.
    /// Both are returned (and, while held, activated) the same way.
    pub fn is_credit(&self) -> bool {
        self.kind == RequestKind::Allocate || (self.kind == RequestKind::Adjust && self.state.is_some())
    }
}
