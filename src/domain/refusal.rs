//! Why a well-formed request was refused: typed, carrying the ids involved. The sentences a
//! client reads are chosen once, at the HTTP edge (`http/error.rs`); nothing here is wire text.

use super::{CampaignId, CoinConfigId, CompanyId, ConfigKind, EventName, OrderId, RequestId, UserId};

/// Which per-user cap of a configuration was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `maxPerUserPerDay`: allocations of the event to the user in one UTC day.
    PerDay,
    /// `maxPerUser`: allocations of the event to the user, ever.
    Ever,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No active configuration resolves for this company and event.
    ConfigNotFound {
        company: CompanyId,
        event: EventName,
    },
    /// No configuration has this id (the id as the client wrote it).
    UnknownConfig(String),
    /// The unique slot (one DEFAULT per event, one CUSTOM per company and event) is taken.
    DuplicateConfig {
        existing: CoinConfigId,
        kind: ConfigKind,
        event: EventName,
        company: CompanyId,
    },
    /// The request id was used before for a different operation.
    RequestIdConflict(RequestId),
    /// The user was first credited under another company.
    UserCompanyMismatch {
        user: UserId,
        company: CompanyId,
    },
    /// A per-user cap of the configuration is reached.
    LimitReached {
        cap: Cap,
        limit: i64,
        user: UserId,
        event: EventName,
        company: CompanyId,
    },
    /// A redemption whose amount overflows at the coin value in force.
    AmountTooLarge,
    /// Crediting would overflow the user's 64-bit balance.
    BalanceOverflow(UserId),
    /// The configuration changed between read and write (optimistic concurrency).
    ConcurrentUpdate(CoinConfigId),
    /// Never credited, or (for a scoped caller) another company's user.
    UserNotFound(UserId),
    /// Fewer spendable coins than needed; `pending` more are held (not spendable yet).
    InsufficientBalance {
        user: UserId,
        needed: i64,
        available: i64,
        pending: i64,
    },
    AlreadyReversed(RequestId),
    OriginalNotFound(RequestId),
    /// An activation named something that is not an allocation of the company.
    AllocationNotFound(RequestId),
    /// A return named an order (`orderId` and `event`) no allocation of the company carries.
    OrderNotFound {
        event: EventName,
        order: OrderId,
    },
    /// The original is a return or an activation: only allocations and redemptions are returned.
    NotReversible(RequestId),
    /// A live allocation (named) already holds this order id for the event, for another user or
    /// another purchase value.
    OrderIdConflict(RequestId),
    /// A return asks for more than the original has left: coins, or (by amount) purchase value.
    ReversalExceedsRemaining {
        original: RequestId,
        remaining_coins: i64,
        remaining_minor: Option<i64>,
    },
    /// A return by refunded amount of an allocation that recorded no purchase value.
    AmountNotRecorded(RequestId),
    /// The configuration of this event earns on the purchase value (or has a minimum spend),
    /// and the allocation gave none (a 400: the request lacks a field).
    AmountMinorRequired(EventName),
    /// An adjustment's `expiresAt` is not in the future (a 400; decided after the request id, so
    /// a retry of an import whose expiry has passed since still replays).
    ExpiryPassed,
    /// The allocation's `currency` is not the company's coin-value currency (a 400).
    CurrencyMismatch {
        given: String,
        expected: String,
    },
    /// No campaign has this id in the company (the id as the client wrote it).
    CampaignNotFound(String),
    /// The campaign has started: it cannot be deleted, and only an earlier end may be set.
    CampaignStarted(CampaignId),
    /// A campaign change would leave it invalid (a 400; the sentence names the field).
    CampaignInvalid(String),
    /// The company has no tier scheme.
    TiersNotConfigured(CompanyId),
    /// A tier code the company's scheme does not have (a 400).
    TierUnknown(String),
}
