//! The order every ledger write takes, written once for both backends: fetch what the rule
//! needs, ask `domain` for the plan, write the plan. Each backend implements [`LedgerTx`] — the
//! fetches and writes in its own SQL dialect, inside one database transaction — and nothing else
//! of these operations.
//!
//! Idempotency is the same everywhere: a request id is *claimed* (its row inserted) before any
//! other write; a claim lost to a concurrent duplicate waits for that one's commit and then
//! replays it. A refusal after the claim undoes the whole transaction (PostgreSQL), the job's
//! savepoint (SQLite) or, for SQLite allocations, which run without savepoints, the claim itself
//! (every allocation refusal comes before its first other write).
//!
//! The SQLite writer thread runs these flows with [`run_now`]: its `LedgerTx` methods never wait,
//! so each future completes on its first poll.

use std::future::Future;
use std::sync::Arc;

use super::model::{Applied, Expired, RecordRow, StoredReceipt};
use super::{StoreError, StoreResult};
use crate::domain::activate::{self, ActivateCmd, ActivateReceipt};
use crate::domain::adjust::{self, AdjustCmd, AdjustReceipt};
use crate::domain::allocate::{self, AllocateCmd, AllocateOk, EarnPlan, NewLot, RecordFields};
use crate::domain::allocation::{self, ActivateAt, Activation, ActivationPlan, HeldLot, OrderClaim, OrderHolder};
use crate::domain::allocation::{AllocationState, ReturnKind};
use crate::domain::campaigns::{self, Campaign, CampaignId};
use crate::domain::earn::BPS_ONE;
use crate::domain::expire::{self, DueLot, ExpiryPlan};
use crate::domain::ledger::{self as rules, Account, Lifetime, LotMove, NewEntry, RequestKind, StoredRequest};
use crate::domain::lots::OpenLot;
use crate::domain::redeem::{self, CoinValue, RedeemCmd, RedeemReceipt};
use crate::domain::reverse::{self, Original, OwnLot, ReverseCmd, ReverseReceipt, Taken, Target};
use crate::domain::tiers::{QualifyingMove, TierChange, TierScheme, TierState};
use crate::domain::webhooks::EventType;
use crate::domain::{CoinConfig, Coins, CompanyId, EventName, OrderId, Refusal, RequestId, UserId};

/// The idempotency row a request inserts before anything else.
pub(crate) struct Claim<'a> {
    pub kind: RequestKind,
    pub user: &'a UserId,
    pub event: Option<&'a str>,
    pub coins: i64,
    pub fingerprint: &'a str,
    pub original: Option<&'a RequestId>,
    /// Allocations beyond the EnKash fields: the record, written with the claim.
    pub record: Option<&'a RecordFields>,
}

/// The fetches and writes of the ledger, inside one database transaction.
pub(crate) trait LedgerTx {
    async fn request(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<StoredRequest>>;
    /// Inserts the request's row; `false` if the id (or, for a reversal, the original's one
    /// reversal) is taken by a committed or committing request.
    async fn claim(&mut self, company: &CompanyId, request_id: &RequestId, claim: &Claim<'_>, now_ms: i64) -> StoreResult<bool>;
    /// Stores the answer of a claimed request, for replays.
    async fn finish(&mut self, company: &CompanyId, request_id: &RequestId, coins: i64, response: &str) -> StoreResult<()>;
    /// Removes a claim whose request was refused.
    async fn release(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<()>;
    /// The user's account, locked against concurrent balance changes until the commit.
    async fn account(&mut self, user: &UserId) -> StoreResult<Option<Account>>;
    /// The user's account without a lock (a simulation reads and never writes).
    async fn account_unlocked(&mut self, user: &UserId) -> StoreResult<Option<Account>> {
        self.account(user).await
    }
    async fn open_account(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<()>;
    /// The user's allocations of the command's event in its company since `since_ms`.
    async fn count_allocations(&mut self, cmd: &AllocateCmd, since_ms: i64) -> StoreResult<i64>;
    /// The user's allocations a campaign applied to (read after the user's row is locked).
    async fn campaign_triggers(&mut self, company: &CompanyId, campaign: CampaignId, user: &UserId) -> StoreResult<i64>;
    /// Rewrites a claimed allocation's coins and record (its campaign was decided after the claim).
    async fn rewrite_record(&mut self, company: &CompanyId, request_id: &RequestId, coins: i64, record: &RecordFields) -> StoreResult<()>;
    async fn due_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<DueLot>>;
    async fn open_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<OpenLot>>;
    async fn coin_value(&mut self, company: &CompanyId) -> StoreResult<CoinValue>;
    /// The live allocation holding this order id of the event, if any.
    async fn live_order(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<OrderHolder>>;
    /// Records `request_id` as an alias of the holder (a retry of the same purchase); `false` if
    /// the id was taken meanwhile.
    async fn add_alias(
        &mut self,
        company: &CompanyId,
        request_id: &RequestId,
        event: &EventName,
        order: &OrderId,
        holder: &OrderHolder,
        now_ms: i64,
    ) -> StoreResult<bool>;
    async fn original_entry(&mut self, company: &CompanyId, request_id: &RequestId, kind: RequestKind) -> StoreResult<Original>;
    async fn own_lots(&mut self, entry_id: i64) -> StoreResult<Vec<OwnLot>>;
    /// The allocation's record, read after the user's row is locked: every return of it that
    /// committed before is in it.
    async fn allocation(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<RecordRow>>;
    /// The allocation an order names: its live one, else its latest.
    async fn order_allocation(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<RequestId>>;
    /// Coins the returns of `original` so far took or gave back (or, for an allocation's held
    /// coins, canceled).
    async fn returned_coins(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64>;
    /// Writes a return's counters (and, for an allocation, its state) on the original's row.
    async fn record_return(&mut self, company: &CompanyId, original: &RequestId, returned: &Returned) -> StoreResult<()>;
    /// What a redemption took from each lot.
    async fn taken_by(&mut self, entry_id: i64) -> StoreResult<Vec<Taken>>;
    /// Coins the returns of `original` (a redemption or a debit) put back into lots so far.
    async fn restored_to_lots(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64>;
    /// The user's held lots whose hold has ended by `now_ms`.
    async fn due_held(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<HeldLot>>;
    /// The held lot an allocation's entry opened, if it is still held.
    async fn held_lot(&mut self, entry_id: i64) -> StoreResult<Option<HeldLot>>;
    /// Ends a lot's hold: spendable from now on, expiring at `expires_at`.
    async fn activate_lot(&mut self, lot_id: i64, expires_at: Option<i64>) -> StoreResult<()>;
    /// Records on the allocation's row that it is active (unless a return ended it meanwhile).
    async fn record_activation(&mut self, company: &CompanyId, request_id: &RequestId, activated_at: i64, expires_at: Option<i64>) -> StoreResult<()>;
    async fn set_pending(&mut self, company: &CompanyId, user: &UserId, pending: i64) -> StoreResult<()>;
    /// Writes the record of an adjustment's credit on its request row (returned and activated
    /// like an allocation's).
    async fn record_credit(&mut self, company: &CompanyId, request_id: &RequestId, credit: &CreditRecord, now_ms: i64) -> StoreResult<()>;
    async fn insert_entry(&mut self, company: &CompanyId, user: &UserId, entry: &NewEntry, now_ms: i64) -> StoreResult<i64>;
    /// The outbox: one message per enabled subscription of the company that wants this kind of
    /// entry, in the entry's own transaction.
    async fn record_events(&mut self, company: &CompanyId, user: &UserId, entry_id: i64, event: EventType, now_ms: i64) -> StoreResult<()>;
    /// Adds an entry to the daily roll-up (`ledger_daily`) in its own transaction.
    async fn add_to_daily(&mut self, company: &CompanyId, entry: &NewEntry, now_ms: i64) -> StoreResult<()>;
    async fn insert_lot(&mut self, company: &CompanyId, user: &UserId, entry_id: i64, lot: &NewLot, now_ms: i64) -> StoreResult<()>;
    async fn apply_moves(&mut self, entry_id: i64, moves: &[LotMove]) -> StoreResult<()>;
    async fn set_balance(&mut self, company: &CompanyId, user: &UserId, balance: i64, lifetime: Lifetime, delta: i64) -> StoreResult<()>;
    /// [`LedgerTx::set_balance`] for a credit (lifetime earned) whose base coins qualify for a
    /// tier at once, raising the member's running total of qualifying coins by `qualifying` in
    /// the same write; [`LedgerTx::add_qualifying`] is then told it is `counted`.
    async fn set_balance_qualifying(&mut self, company: &CompanyId, user: &UserId, balance: i64, delta: i64, qualifying: i64) -> StoreResult<()>;
    /// The company's tier scheme, if it has one.
    async fn tier_scheme(&mut self, company: &CompanyId) -> StoreResult<Option<TierScheme>>;
    /// The scheme an allocation applies, given the one its cached resolution holds: that one
    /// where the cache is exact (the SQLite writer's), else read again.
    async fn current_scheme(&mut self, company: &CompanyId, cached: Option<&Arc<TierScheme>>) -> StoreResult<Option<Arc<TierScheme>>>;
    /// The member's tier as stored (read after their row is locked).
    async fn tier(&mut self, user: &UserId) -> StoreResult<TierState>;
    /// The member's account, tier and running total at once (a backend reads its row once),
    /// `locked` as [`LedgerTx::account`] locks, or not as [`LedgerTx::account_unlocked`].
    async fn member(&mut self, user: &UserId, locked: bool) -> StoreResult<Member> {
        let account = if locked { self.account(user).await? } else { self.account_unlocked(user).await? };
        Ok(Member { account, tier: self.tier(user).await?, qualifying_total: self.qualifying(user, None).await? })
    }
    /// The member now that their row is locked, given `read` earlier in the same transaction
    /// before the lock. Read again, unless the backend knows nothing can have changed it in
    /// between (the SQLite writer is the only writer).
    async fn member_locked(&mut self, user: &UserId, read: Member) -> StoreResult<Member> {
        let _ = read;
        self.member(user, true).await
    }
    /// The member's qualifying coins earned at or after `since_ms` (`None`: ever, their running
    /// total).
    async fn qualifying(&mut self, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64>;
    /// Adds to the member's running total (unless `counted`: added with the balance already)
    /// and, when `dated` (a rolling scheme), to their day; the running total after it.
    /// `before`: the running total as this transaction read it under the member's lock, which a
    /// backend may add to instead of reading the row again.
    async fn add_qualifying(
        &mut self,
        company: &CompanyId,
        user: &UserId,
        qualifying: &QualifyingMove,
        dated: bool,
        before: Option<i64>,
        counted: bool,
    ) -> StoreResult<i64>;
    /// Stores the member's tier; with a change, records it and its webhook messages.
    async fn set_tier(&mut self, company: &CompanyId, user: &UserId, state: &TierState, change: Option<&TierChange>, now_ms: i64) -> StoreResult<()>;
}

/// A member's row as one read: their account (none if never credited), tier and running total
/// of qualifying coins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Member {
    pub account: Option<Account>,
    pub tier: TierState,
    pub qualifying_total: i64,
}

/// The record of an adjustment's credit: its state, hold and expiry, and the coins of it that
/// qualify for a tier (0 unless it was made with `qualifying: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditRecord {
    pub state: AllocationState,
    pub activates_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub qualifying_base: i64,
}

/// The counters of an original after a return of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Returned {
    /// Allocations only; a redemption has none.
    pub state: Option<AllocationState>,
    pub coins_canceled: i64,
    pub coins_reversed: i64,
    pub coins_waived: i64,
    pub amount_refunded_minor: Option<i64>,
}

/// Polls a future that never waits (the SQLite writer's flows) to completion.
pub(crate) fn run_now<T>(flow: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let mut flow = std::pin::pin!(flow);
    match flow.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(StoreError::Corrupt("a SQLite ledger step tried to wait".into())),
    }
}

/// A ledger entry, its webhook messages and its share of the daily roll-up: never one without
/// the others.
async fn write_entry<T: LedgerTx>(tx: &mut T, company: &CompanyId, user: &UserId, entry: &NewEntry, now_ms: i64) -> StoreResult<i64> {
    write_entry_for(tx, company, user, entry, now_ms, None).await
}

/// [`write_entry`], told which events the company's webhooks subscribe to when that is known
/// (`subscribed`): an entry no webhook wants sends no outbox statement at all.
async fn write_entry_for<T: LedgerTx>(
    tx: &mut T,
    company: &CompanyId,
    user: &UserId,
    entry: &NewEntry,
    now_ms: i64,
    subscribed: Option<i64>,
) -> StoreResult<i64> {
    let entry_id = tx.insert_entry(company, user, entry, now_ms).await?;
    let event = EventType::of_entry(entry.kind, entry.pending_coins);
    if subscribed.is_none_or(|mask| mask & event.bit() != 0) {
        tx.record_events(company, user, entry_id, event, now_ms).await?;
    }
    tx.add_to_daily(company, entry, now_ms).await?;
    Ok(entry_id)
}

fn replayed<R: StoredReceipt>(prev: &StoredRequest) -> StoreResult<Applied<R>> {
    Ok(Applied { receipt: R::from_stored(prev.response.as_deref())?, replayed: true, expired: Expired::default() })
}

/// A lost claim means a duplicate committed first; its row is there now.
async fn request_after_lost_claim<T: LedgerTx>(tx: &mut T, company: &CompanyId, request_id: &RequestId) -> StoreResult<StoredRequest> {
    tx.request(company, request_id).await?.ok_or_else(|| Refusal::RequestIdConflict(request_id.clone()).into())
}

/// What may raise an allocation's coins beyond its configuration, as cached: the company's
/// campaigns for the event, and its tier scheme (a hint only: the allocation reads the scheme
/// again under the member's lock, since a cached one may be a moment stale). And the company's
/// coin value, when it was read with the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Offers<'a> {
    pub campaigns: &'a [Campaign],
    pub tiers: Option<&'a Arc<TierScheme>>,
    pub value: Option<&'a CoinValue>,
    /// The events the company's webhooks subscribe to, when read with the resolution.
    pub webhook_events: Option<i64>,
}

/// The tier code and multiplier an allocation under `config` earns at, when above ×1 (a
/// configuration may opt out of tier multipliers).
fn tier_multiplier(config: &CoinConfig, scheme: &TierScheme, state: &TierState) -> Option<(String, i64)> {
    let bps = scheme.multiplier_bps(state);
    (config.values.earning.tier_multiplier && bps != BPS_ONE).then(|| (scheme.tiers[scheme.current(state)].code.clone(), bps))
}

/// Qualifying coins a credit gained or lost, recorded. A gain upgrades the member at once if
/// they reach a higher tier; a loss counts at the next evaluation. `known`: the member's tier as
/// the caller already holds it under the lock (else it is read), with their running total when
/// the caller read that there too.
async fn qualify<T: LedgerTx>(
    tx: &mut T,
    scheme: &TierScheme,
    (company, user): (&CompanyId, &UserId),
    moved: QualifyingMove,
    now_ms: i64,
    known: Option<(TierState, Option<i64>)>,
    counted: bool,
) -> StoreResult<()> {
    if moved.coins == 0 {
        return Ok(());
    }
    let (state, before) = known.map_or((None, None), |(state, total)| (Some(state), total));
    let total = tx.add_qualifying(company, user, &moved, scheme.dated(), before, counted).await?;
    if moved.coins < 0 {
        return Ok(());
    }
    let state = match state {
        Some(state) => state,
        None => tx.tier(user).await?,
    };
    let qualifying = match scheme.window_start(now_ms) {
        None => total,
        Some(_) if !scheme.may_upgrade(&state, total) => return Ok(()),
        since @ Some(_) => tx.qualifying(user, since).await?,
    };
    if let Some(change) = scheme.after_earning(&state, qualifying, now_ms, &moved.by) {
        tx.set_tier(company, user, &change.state, Some(&change), now_ms).await?;
    }
    Ok(())
}

/// The sweeper's evaluation of a member whose tier is up for renewal: renewed, or moved down by
/// the scheme's policy. Nothing when it is not due (another pass got there first).
async fn evaluate_tier<T: LedgerTx>(tx: &mut T, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<()> {
    let state = tx.tier(user).await?;
    if state.expires_at.is_none_or(|at| at > now_ms) {
        return Ok(());
    }
    match tx.tier_scheme(company).await? {
        Some(scheme) => {
            let change = overdue(tx, &scheme, &state, user, now_ms).await?;
            tx.set_tier(company, user, &change.state, Some(&change), now_ms).await
        }
        // A tier left from a scheme since removed: nothing to evaluate it against.
        None => tx.set_tier(company, user, &TierState::default(), None, now_ms).await,
    }
}

/// The evaluation of a tier whose retention is up (decided, not written).
async fn overdue<T: LedgerTx>(tx: &mut T, scheme: &TierScheme, state: &TierState, user: &UserId, now_ms: i64) -> StoreResult<TierChange> {
    let qualifying = tx.qualifying(user, scheme.window_start(now_ms)).await?;
    Ok(scheme.at_expiry(state, qualifying, now_ms))
}

/// The coin value an allocation is computed at, when no read is needed: the built-in one for an
/// allocation without a purchase value or currency, else the company's if it came with the
/// cached configuration.
fn value_at_hand(cmd: &AllocateCmd, cached: Option<&CoinValue>) -> Option<CoinValue> {
    let purchase = &cmd.purchase;
    if purchase.amount_minor.is_none() && purchase.currency.is_none() {
        return Some(CoinValue::builtin());
    }
    cached.cloned()
}

/// What an allocation earns when nothing read under the member's lock can change it: the company
/// has no tier scheme, the best campaign running for the event (if any) has no per-user limit,
/// and the coin value is at hand. `None` otherwise, and when the earning is refused (a purchase
/// value missing, another currency): [`allocate`] decides those step by step. This is the plan
/// [`allocate`] reaches for the same item (PostgreSQL decides such items set-based with it, and
/// the batch property test holds the two paths equal).
pub(crate) fn earning_before_claim(cmd: &AllocateCmd, config: &CoinConfig, offers: Offers<'_>) -> Option<EarnPlan> {
    match offers.tiers {
        Some(_) => None,
        None => earning_at_tier(cmd, config, offers, None),
    }
}

/// What an allocation earns with the member's tier as read under their lock (`tier`: the
/// company's scheme and the member's state; `None`: the company has none), as [`allocate`]
/// decides it. `None` when [`allocate`] must decide it step by step: the tier's retention is up
/// (it is evaluated first), the best campaign has a per-user limit (its triggers are counted
/// under the lock), the coin value is not at hand, or the earning is refused.
pub(crate) fn earning_at_tier(cmd: &AllocateCmd, config: &CoinConfig, offers: Offers<'_>, tier: Option<(&TierScheme, &TierState)>) -> Option<EarnPlan> {
    if tier.is_some_and(|(_, state)| state.expires_at.is_some_and(|at| at <= cmd.now_ms)) {
        return None;
    }
    let value = value_at_hand(cmd, offers.value)?;
    let calculation = allocate::calculation(cmd, config.values.terms().ok()?, &value).ok()?;
    let multiplier = tier.and_then(|(scheme, state)| tier_multiplier(config, scheme, state));
    let at_tier = multiplier.as_ref().map(|(code, bps)| (code.as_str(), *bps));
    let tiered = allocate::with_tier(&calculation, at_tier);
    let best = campaigns::ranked(offers.campaigns, &cmd.event, cmd.now_ms, &tiered).first().copied();
    if best.is_some_and(|c| c.terms.max_triggers_per_user.is_some()) {
        return None;
    }
    Some(allocate::plan_earning(cmd, config, &value, &tiered, (best, at_tier), best.is_some() || multiplier.is_some()))
}

/// The qualifying coins an allocation's credit brings its member when it is spendable at once
/// (held coins qualify when they activate): its base coins, before any multiplier or bonus.
pub(crate) fn qualifying_now(earn: &EarnPlan) -> i64 {
    match earn.held_until() {
        Some(_) => 0,
        None => earn.record.as_ref().map_or(earn.coins, |r| r.base_coins),
    }
}

/// A new allocation: on SQLite every one; on PostgreSQL those whose earning depends on what only
/// this plan reads under the member's lock (a campaign with a per-user limit, a tier whose
/// retention is up) or is refused, while the others are decided set-based on [`earning_at_tier`]
/// (`postgres/ledger.rs`).
/// `config` is the resolution for the command's company and event, and `offers` what came with it.
///
/// The request id is checked first, then the order id: a claim lost to the order's live
/// allocation is a replay (the same user and purchase value: the new id becomes its alias) or
/// `ORDER_ID_CONFLICT`. The unique index on live orders makes this hold under concurrency.
///
/// A campaign without a per-user limit is decided before the claim. When the best one has a
/// limit, the user's row is locked first and the triggers counted, so concurrent allocations of
/// one user never exceed it; the record is then rewritten with the campaign that applied.
pub(crate) async fn allocate<T: LedgerTx>(tx: &mut T, cmd: &AllocateCmd, config: Option<&CoinConfig>, offers: Offers<'_>) -> StoreResult<AllocateOk> {
    let Offers { campaigns, tiers: tiers_hint, value: cached_value, webhook_events } = offers;
    let (company, user) = (&cmd.company, &cmd.user);
    let Some(config) = config else {
        return Ok(allocate::answer_repeat(tx.request(company, &cmd.request_id).await?.as_ref(), cmd)?);
    };
    let terms = config.values.terms().map_err(|p| StoreError::Corrupt(format!("configuration {} is inconsistent: {p:?}", config.id)))?;
    let value = match value_at_hand(cmd, cached_value) {
        Some(value) => value,
        None => tx.coin_value(company).await?,
    };
    let calculation = match allocate::calculation(cmd, terms, &value) {
        Ok(calculation) => calculation,
        // The request id comes first: a repeat is answered whatever the body says now.
        Err(refusal) => {
            return match tx.request(company, &cmd.request_id).await? {
                Some(prev) => Ok(allocate::answer_repeat(Some(&prev), cmd)?),
                None => Err(refusal.into()),
            };
        }
    };
    // The member's multiplier as their tier stands now (read without the lock; checked again
    // under it, where a tier changed meanwhile or overdue is caught and the record rewritten).
    let read = match tiers_hint {
        Some(_) => Some(tx.member(user, false).await?),
        None => None,
    };
    let hint = match (tiers_hint, &read) {
        (Some(scheme), Some(member)) => tier_multiplier(config, scheme, &member.tier),
        _ => None,
    };
    let tiered = allocate::with_tier(&calculation, hint.as_ref().map(|(code, bps)| (code.as_str(), *bps)));
    let ranked = campaigns::ranked(campaigns, &cmd.event, cmd.now_ms, &tiered);
    let unlimited = ranked.first().copied().filter(|c| c.terms.max_triggers_per_user.is_none());
    let hinted = hint.as_ref().map(|(code, bps)| (code.as_str(), *bps));
    let mut earn = allocate::plan_earning(cmd, config, &value, &tiered, (unlimited, hinted), !ranked.is_empty() || hint.is_some());
    let claim = Claim {
        kind: RequestKind::Allocate,
        user,
        event: Some(cmd.event.as_str()),
        coins: earn.coins,
        fingerprint: "",
        original: None,
        record: earn.record.as_ref(),
    };
    if !tx.claim(company, &cmd.request_id, &claim, cmd.now_ms).await? {
        if let Some(prev) = tx.request(company, &cmd.request_id).await? {
            return Ok(allocate::answer_repeat(Some(&prev), cmd)?);
        }
        return answer_held_order(tx, cmd).await;
    }
    let (account, mut locked) = match read {
        Some(read) => {
            let member = tx.member_locked(user, read).await?;
            (member.account.clone(), Some(member))
        }
        None => (tx.account(user).await?, None),
    };
    // The scheme and the member's tier under the lock (on PostgreSQL the cached scheme may be a
    // moment stale: a scheme set up or removed meanwhile). A tier whose retention is up is
    // evaluated first (written once the allocation is sure to apply), so no allocation earns a
    // multiplier the member no longer has; the allocation that upgrades them earns at the old one.
    let scheme = tx.current_scheme(company, tiers_hint).await?;
    let tiers = scheme.as_deref();
    let (tier, evaluated) = match (tiers, &account) {
        (Some(scheme), Some(a)) if a.company == *company => {
            let state = match locked.as_mut() {
                Some(member) => std::mem::take(&mut member.tier),
                None => tx.tier(user).await?,
            };
            match state.expires_at {
                Some(at) if at <= cmd.now_ms => {
                    let change = overdue(tx, scheme, &state, user, cmd.now_ms).await?;
                    (Some(change.state.clone()), Some(change))
                }
                _ => (Some(state), None),
            }
        }
        (Some(_), _) => (Some(TierState::default()), None),
        (None, _) => (None, None),
    };
    let multiplier = match (tiers, &tier) {
        (Some(scheme), Some(state)) => tier_multiplier(config, scheme, state),
        _ => None,
    };
    if multiplier != hint || (unlimited.is_none() && !ranked.is_empty()) {
        let at_tier = multiplier.as_ref().map(|(code, bps)| (code.as_str(), *bps));
        let tiered = allocate::with_tier(&calculation, at_tier);
        let ranked = if multiplier == hint { ranked } else { campaigns::ranked(campaigns, &cmd.event, cmd.now_ms, &tiered) };
        let mut applies = None;
        for c in &ranked {
            let room = match c.terms.max_triggers_per_user {
                Some(limit) => tx.campaign_triggers(company, c.id, user).await? < limit,
                None => true,
            };
            if room {
                applies = Some(*c);
                break;
            }
        }
        let planned = allocate::plan_earning(cmd, config, &value, &tiered, (applies, at_tier), true);
        if planned != earn {
            earn = planned;
            let record = earn.record.as_ref().ok_or_else(|| StoreError::Corrupt("a re-planned allocation without a record".into()))?;
            tx.rewrite_record(company, &cmd.request_id, earn.coins, record).await?;
        }
    }
    let mut counts = Vec::new();
    for window in allocate::cap_windows(&config.values, cmd.now_ms) {
        counts.push(tx.count_allocations(cmd, window.since_ms).await?);
    }
    let plan = match allocate::plan_credit(cmd, &earn, config, account.as_ref(), &counts) {
        Ok(plan) => plan,
        Err(refusal) => {
            tx.release(company, &cmd.request_id).await?;
            return Err(refusal.into());
        }
    };
    if plan.new_account {
        tx.open_account(company, user, cmd.now_ms).await?;
    }
    if let Some(change) = &evaluated {
        tx.set_tier(company, user, &change.state, Some(change), cmd.now_ms).await?;
    }
    let Some(entry) = &plan.entry else { return Ok(AllocateOk::Zero) };
    let entry_id = write_entry_for(tx, company, user, entry, cmd.now_ms, webhook_events).await?;
    if let Some(lot) = &plan.lot {
        tx.insert_lot(company, user, entry_id, lot, cmd.now_ms).await?;
    }
    // Spendable at once: its base coins qualify now (held ones when they activate), added to
    // the member's running total with the balance.
    let qualifying = tiers.map_or(0, |_| qualifying_now(&earn));
    match qualifying {
        0 => tx.set_balance(company, user, plan.balance, Lifetime::Earned, entry.coins).await?,
        coins => tx.set_balance_qualifying(company, user, plan.balance, entry.coins, coins).await?,
    }
    if entry.pending_coins != 0 {
        tx.set_pending(company, user, plan.pending).await?;
    }
    if let Some(scheme) = tiers {
        let id = cmd.request_id.to_string();
        let moved = QualifyingMove { earned_at: cmd.now_ms, request_id: id.clone(), by: id, coins: qualifying };
        // The tier as decided under the lock, and the running total when it was read there.
        let known = tier.map(|state| (state, locked.as_ref().map(|member| member.qualifying_total)));
        qualify(tx, scheme, (company, user), moved, cmd.now_ms, known, true).await?;
    }
    Ok(AllocateOk::Allocated { coins: Coins::from_stored(earn.coins), balance: plan.balance, entry_id })
}

/// The claim was lost but the request id is free: a live allocation holds the order id. The same
/// purchase again is a replay under an alias; anything else a conflict naming the holder.
pub(crate) async fn answer_held_order<T: LedgerTx>(tx: &mut T, cmd: &AllocateCmd) -> StoreResult<AllocateOk> {
    let (company, order) = (&cmd.company, cmd.purchase.order_id.as_ref());
    let order = order.ok_or_else(|| StoreError::Corrupt(format!("the claim of {} was lost to no request and no order", cmd.request_id)))?;
    let holder = tx.live_order(company, &cmd.event, order).await?;
    match allocation::check_order(holder.as_ref(), &cmd.user, cmd.purchase.amount_minor)? {
        OrderClaim::ReplayOf(_) => {
            let holder = holder.ok_or_else(|| StoreError::Corrupt("a replay without a holder".into()))?;
            if tx.add_alias(company, &cmd.request_id, &cmd.event, order, &holder, cmd.now_ms).await? {
                return Ok(AllocateOk::Replayed { coins: Coins::from_stored(holder.coins) });
            }
            // A concurrent duplicate of this very request added the alias first.
            Ok(allocate::answer_repeat(tx.request(company, &cmd.request_id).await?.as_ref(), cmd)?)
        }
        // The holder was returned in full between the claim and this read: the order is free
        // now, and a retry of this request will take it.
        OrderClaim::Free => Err(StoreError::Unique(format!("the order {order} changed hands during the allocation").into())),
    }
}

/// Writes off the user's due lots; the plan's `balance` is the stored balance after them.
pub(crate) async fn expire_due<T: LedgerTx>(
    tx: &mut T,
    company: &CompanyId,
    user: &UserId,
    balance: i64,
    pending: i64,
    now_ms: i64,
) -> StoreResult<ExpiryPlan> {
    let plan = expire::plan_expiry(balance, pending, tx.due_lots(company, user, now_ms).await?);
    for (entry, lot_move) in &plan.entries {
        let entry_id = write_entry(tx, company, user, entry, now_ms).await?;
        tx.apply_moves(entry_id, std::slice::from_ref(lot_move)).await?;
    }
    if !plan.is_empty() {
        tx.set_balance(company, user, plan.balance, Lifetime::Expired, plan.expired).await?;
    }
    Ok(plan)
}

/// Writes the activations of held lots (each with its entry, its lot's hold ended and its
/// allocation's record made active).
async fn write_activations<T: LedgerTx>(tx: &mut T, company: &CompanyId, user: &UserId, plan: &ActivationPlan, now_ms: i64) -> StoreResult<()> {
    for a in &plan.activations {
        let entry_id = write_entry(tx, company, user, &a.entry, now_ms).await?;
        tx.activate_lot(a.lot_id, a.expires_at).await?;
        if a.paid > 0 {
            tx.apply_moves(entry_id, &[LotMove { lot_id: a.lot_id, coins: -a.paid }]).await?;
        }
        tx.record_activation(company, &a.request_id, a.activated_at, a.expires_at).await?;
    }
    if plan.coins != 0 {
        tx.set_balance(company, user, plan.balance, Lifetime::Earned, plan.coins).await?;
        tx.set_pending(company, user, plan.pending).await?;
    }
    // Activated coins qualify for a tier from now on.
    if plan.activations.is_empty() {
        return Ok(());
    }
    let Some(scheme) = tx.tier_scheme(company).await? else { return Ok(()) };
    for a in &plan.activations {
        let row = tx.allocation(company, &a.request_id).await?.ok_or_else(|| StoreError::Corrupt(format!("activated {} has no record", a.request_id)))?;
        if let Some((earned_at, coins)) = row.qualifying_with(row.returned()) {
            let id = a.request_id.to_string();
            qualify(tx, &scheme, (company, user), QualifyingMove { earned_at, request_id: id.clone(), by: id, coins }, now_ms, None, false).await?;
        }
    }
    Ok(())
}

/// Where a user stands once everything due is written: held lots whose hold ended activated
/// (first: they may be due to expire too), then lots past expiry written off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Settled {
    pub balance: i64,
    pub pending: i64,
    pub expired: Expired,
    pub activated: i64,
}

/// Brings the user's ledger up to `now_ms`: every read and every write that depends on the
/// balance sees due activations and expiries written first, as the sweeper would write them.
pub(crate) async fn bring_due<T: LedgerTx>(tx: &mut T, company: &CompanyId, user: &UserId, account: &Account, now_ms: i64) -> StoreResult<Settled> {
    let due = tx.due_held(company, user, now_ms).await?;
    let activations = allocation::plan_activations(account.balance, account.pending, due, ActivateAt::Due);
    write_activations(tx, company, user, &activations, now_ms).await?;
    let swept = expire_due(tx, company, user, activations.balance, activations.pending, now_ms).await?;
    Ok(Settled { balance: swept.balance, pending: activations.pending, expired: tally(&swept), activated: activations.coins })
}

/// Activates and expires what is due for one user, and evaluates their tier if its retention is
/// up (the sweeper, and reads that must agree with the balance).
pub(crate) async fn settle<T: LedgerTx>(tx: &mut T, user: &UserId, now_ms: i64) -> StoreResult<Expired> {
    let Some(account) = tx.account(user).await? else { return Ok(Expired::default()) };
    let company = account.company.clone();
    let expired = bring_due(tx, &company, user, &account, now_ms).await?.expired;
    evaluate_tier(tx, &company, user, now_ms).await?;
    Ok(expired)
}

/// What an expiry plan wrote off, for the metrics.
fn tally(plan: &ExpiryPlan) -> Expired {
    Expired { lots: plan.entries.len() as u64, coins: plan.expired.max(0) as u64 }
}

pub(crate) async fn redeem<T: LedgerTx>(tx: &mut T, cmd: &RedeemCmd) -> StoreResult<Applied<RedeemReceipt>> {
    let (company, user, request_id) = (&cmd.company, &cmd.user, &cmd.request_id);
    if let Some(prev) = tx.request(company, request_id).await? {
        redeem::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let fingerprint = cmd.amount.fingerprint();
    let claim = Claim { kind: RequestKind::Redeem, user, event: None, coins: 0, fingerprint: &fingerprint, original: None, record: None };
    if !tx.claim(company, request_id, &claim, cmd.now_ms).await? {
        let prev = request_after_lost_claim(tx, company, request_id).await?;
        redeem::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let account = rules::account_in(tx.account(user).await?, company, user)?;
    let due = bring_due(tx, company, user, &account, cmd.now_ms).await?;
    let (balance, expired) = (due.balance, due.expired);
    let value = tx.coin_value(company).await?;
    let open = tx.open_lots(company, user, cmd.now_ms).await?;
    let plan = redeem::plan_redemption(cmd, balance, due.pending, &value, open)?;
    let entry_id = write_entry(tx, company, user, &plan.entry, cmd.now_ms).await?;
    tx.apply_moves(entry_id, &plan.moves).await?;
    tx.set_balance(company, user, plan.entry.balance_after, Lifetime::Redeemed, plan.receipt.coins).await?;
    tx.finish(company, request_id, plan.receipt.coins, &plan.receipt.to_stored()).await?;
    Ok(Applied { receipt: plan.receipt, replayed: false, expired })
}

/// A staff adjustment: a credit opens a lot (and a record, so it is returned and activated like
/// an allocation), a debit takes lots soonest-expiring first. A credit opens the user's account
/// if there is none (a balance imported from another system); a debit needs one.
pub(crate) async fn adjust<T: LedgerTx>(tx: &mut T, cmd: &AdjustCmd) -> StoreResult<Applied<AdjustReceipt>> {
    let (company, user, request_id) = (&cmd.company, &cmd.user, &cmd.request_id);
    if let Some(prev) = tx.request(company, request_id).await? {
        adjust::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let fingerprint = cmd.fingerprint();
    let claim = Claim { kind: RequestKind::Adjust, user, event: None, coins: cmd.coins.abs(), fingerprint: &fingerprint, original: None, record: None };
    if !tx.claim(company, request_id, &claim, cmd.now_ms).await? {
        let prev = request_after_lost_claim(tx, company, request_id).await?;
        adjust::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let account = match tx.account(user).await? {
        None if cmd.coins > 0 => {
            tx.open_account(company, user, cmd.now_ms).await?;
            Account { company: company.clone(), balance: 0, pending: 0 }
        }
        Some(a) if a.company != *company && cmd.coins > 0 => {
            return Err(Refusal::UserCompanyMismatch { user: user.clone(), company: company.clone() }.into());
        }
        found => rules::account_in(found, company, user)?,
    };
    let due = bring_due(tx, company, user, &account, cmd.now_ms).await?;
    let open = if cmd.coins < 0 { tx.open_lots(company, user, cmd.now_ms).await? } else { Vec::new() };
    let plan = adjust::plan_adjustment(cmd, due.balance, due.pending, open)?;
    let entry_id = write_entry(tx, company, user, &plan.entry, cmd.now_ms).await?;
    if let Some(lot) = &plan.lot {
        tx.insert_lot(company, user, entry_id, lot, cmd.now_ms).await?;
    }
    tx.apply_moves(entry_id, &plan.moves).await?;
    let qualifying_base = if cmd.qualifying { cmd.coins } else { 0 };
    if let Some(state) = plan.state {
        let (activates_at, expires_at) = (plan.receipt.activates_at, plan.receipt.expires_at);
        tx.record_credit(company, request_id, &CreditRecord { state, activates_at, expires_at, qualifying_base }, cmd.now_ms).await?;
    }
    // A qualifying credit counts towards a tier once it is spendable.
    let scheme = if qualifying_base > 0 && plan.entry.pending_coins == 0 { tx.tier_scheme(company).await? } else { None };
    if let Some(scheme) = scheme {
        let id = request_id.to_string();
        let moved = QualifyingMove { earned_at: cmd.now_ms, request_id: id.clone(), by: id, coins: qualifying_base };
        qualify(tx, &scheme, (company, user), moved, cmd.now_ms, None, false).await?;
    }
    // Adjustments count in the lifetime earned, as allocations and their returns do.
    tx.set_balance(company, user, plan.entry.balance_after, Lifetime::Earned, plan.entry.coins).await?;
    if plan.entry.pending_coins != 0 {
        tx.set_pending(company, user, plan.entry.pending_after).await?;
    }
    let moved = plan.entry.coins + plan.entry.pending_coins;
    tx.finish(company, request_id, moved.abs(), &plan.receipt.to_stored()).await?;
    Ok(Applied { receipt: plan.receipt, replayed: false, expired: due.expired })
}

/// The request id a return or an activation names: the one given, or the order's allocation
/// (its live one, else its latest).
async fn named_by<T: LedgerTx>(tx: &mut T, company: &CompanyId, target: &Target) -> StoreResult<RequestId> {
    match target {
        Target::Request(id) => Ok(id.clone()),
        Target::Order { event, order } => {
            Ok(tx.order_allocation(company, event, order).await?.ok_or_else(|| Refusal::OrderNotFound { event: event.clone(), order: order.clone() })?)
        }
    }
}

/// A return of an allocation (whole, by coins or by refunded amount) or of a redemption (whole
/// or by coins). Each is exactly-once on its own request id; returns of one original serialise
/// on the user's row, which is locked before the original's record is read, so together they
/// never take more than it has.
pub(crate) async fn reverse<T: LedgerTx>(tx: &mut T, cmd: &ReverseCmd) -> StoreResult<Applied<ReverseReceipt>> {
    let (company, request_id) = (&cmd.company, &cmd.request_id);
    if let Some(prev) = tx.request(company, request_id).await? {
        reverse::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let name = named_by(tx, company, &cmd.target).await?;
    let named = tx.request(company, &name).await?;
    let named = reverse::check_original(named.as_ref(), &name)?.clone();
    // An alias stands for the allocation it repeats: that one is returned, whichever name the
    // return uses.
    let (target, original) = match &named.alias_of {
        Some(holder) => (holder.clone(), tx.request(company, holder).await?.ok_or_else(|| StoreError::Corrupt(format!("alias {name} of a missing {holder}")))?),
        None => (name.clone(), named),
    };
    let user = &original.user;
    let fingerprint = cmd.fingerprint();
    let claim = Claim { kind: RequestKind::Reverse, user, event: None, coins: 0, fingerprint: &fingerprint, original: Some(&target), record: None };
    if !tx.claim(company, request_id, &claim, cmd.now_ms).await? {
        let prev = request_after_lost_claim(tx, company, request_id).await?;
        reverse::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let account = rules::account_in(tx.account(user).await?, company, user)?;
    let due = bring_due(tx, company, user, &account, cmd.now_ms).await?;
    let (balance, pending, before) = (due.balance, due.pending, due.expired);
    let returned = tx.returned_coins(company, &target).await?;
    // An adjustment's credit keeps a record and is returned like an allocation; its debit is
    // returned like a redemption.
    let (plan, outcome) = if original.is_credit() {
        let row = tx.allocation(company, &target).await?.ok_or_else(|| StoreError::Corrupt(format!("allocation {target} has no record")))?;
        let order_id = row.order_id.clone();
        let before = row.clone();
        let a = row.into_allocation()?;
        // An allocation that earned nothing has no entry, returned or not: its return takes
        // nothing (and frees its order id); another is refused as already reversed.
        let entry = if a.coins == 0 {
            Original { entry_id: 0, kind: RequestKind::Allocate, coins: 0, event: original.event.clone(), coin_config_id: None }
        } else {
            tx.original_entry(company, &target, original.kind).await?
        };
        let own = if entry.entry_id == 0 { Vec::new() } else { tx.own_lots(entry.entry_id).await? };
        let open = tx.open_lots(company, user, cmd.now_ms).await?;
        let (ret, mut plan) = reverse::plan_take_back(cmd, &a, &entry, balance, pending, &own, returned - a.coins_canceled, open)?;
        plan.entry.order_id = order_id;
        let (coins_canceled, coins_reversed, coins_waived) = ret.counters(&a);
        let refunded = a.amount_minor.map(|_| ret.amount_refunded_minor);
        let counters = Returned { state: Some(ret.state), coins_canceled, coins_reversed, coins_waived, amount_refunded_minor: refunded };
        tx.record_return(company, &target, &counters).await?;
        requalify(tx, company, user, &before, coins_canceled + coins_reversed + coins_waived, request_id, cmd.now_ms).await?;
        let minor_per_coin = match a.amount_minor {
            Some(_) => a.calculation.minor_units_per_coin,
            None if ret.short > 0 => tx.coin_value(company).await?.minor_units_per_coin,
            None => 0,
        };
        (plan, (ret.kind, ret.short, ret.short * minor_per_coin, refunded))
    } else {
        let entry = tx.original_entry(company, &target, original.kind).await?;
        let taken = tx.taken_by(entry.entry_id).await?;
        let restored = tx.restored_to_lots(company, &target).await?;
        let plan = reverse::plan_give_back(cmd, &entry, &target, (balance, pending), &taken, (returned, restored))?;
        let counters = Returned { state: None, coins_canceled: 0, coins_reversed: returned + plan.entry.coins, coins_waived: 0, amount_refunded_minor: None };
        tx.record_return(company, &target, &counters).await?;
        (plan, (ReturnKind::Reverse, 0, 0, None))
    };
    let entry_id = write_entry(tx, company, user, &plan.entry, cmd.now_ms).await?;
    tx.apply_moves(entry_id, &plan.moves).await?;
    if let Some(lot) = &plan.lot {
        tx.insert_lot(company, user, entry_id, lot, cmd.now_ms).await?;
    }
    tx.set_balance(company, user, plan.entry.balance_after, plan.lifetime, plan.lifetime_delta).await?;
    if plan.entry.pending_coins != 0 {
        tx.set_pending(company, user, plan.entry.pending_after).await?;
    }
    // Coins given back to lots that have expired meanwhile expire again at once.
    let again = expire_due(tx, company, user, plan.entry.balance_after, plan.entry.pending_after, cmd.now_ms).await?;
    let (balance, after) = (again.balance, tally(&again));
    let (kind, coins_short, short_amount_minor, amount_refunded_minor) = outcome;
    // What moved: spendable coins (REVERSE), or held ones (CANCEL), signed the same way.
    let moved = plan.entry.coins + plan.entry.pending_coins;
    let receipt = ReverseReceipt {
        request_id: request_id.clone(),
        original_request_id: cmd.named().cloned().unwrap_or(target),
        kind,
        coins: moved,
        coins_short,
        short_amount_minor,
        coins_remaining: plan.remaining,
        amount_refunded_minor,
        balance,
        pending_balance: plan.entry.pending_after,
    };
    tx.finish(company, request_id, moved.abs(), &receipt.to_stored()).await?;
    let expired = Expired { lots: before.lots + after.lots, coins: before.coins + after.coins };
    Ok(Applied { receipt, replayed: false, expired })
}

/// After a return of credit `credit` (its row as it was before, `returned` its coins returned
/// now): the qualifying coins it took off are recorded, dated at the credit's activation, and if
/// the credit is what raised the member to their tier, they are placed again at once.
async fn requalify<T: LedgerTx>(
    tx: &mut T,
    company: &CompanyId,
    user: &UserId,
    credit: &RecordRow,
    returned: i64,
    by: &RequestId,
    now_ms: i64,
) -> StoreResult<()> {
    let Some(scheme) = tx.tier_scheme(company).await? else { return Ok(()) };
    if let (Some((earned_at, was)), Some((_, is))) = (credit.qualifying_with(credit.returned()), credit.qualifying_with(returned)) {
        let moved = QualifyingMove { earned_at, request_id: credit.request_id.clone(), by: by.to_string(), coins: is - was };
        qualify(tx, &scheme, (company, user), moved, now_ms, None, false).await?;
    }
    let qualifying = tx.qualifying(user, scheme.window_start(now_ms)).await?;
    let state = tx.tier(user).await?;
    if let Some(change) = scheme.after_return(&state, qualifying, now_ms, &credit.request_id, by.as_str()) {
        tx.set_tier(company, user, &change.state, Some(&change), now_ms).await?;
    }
    Ok(())
}

/// An early activation of a held allocation, exactly-once on its own request id. Anything due is
/// activated and expired first, so an allocation whose hold has ended answers `alreadyActive`.
pub(crate) async fn activate<T: LedgerTx>(tx: &mut T, cmd: &ActivateCmd) -> StoreResult<Applied<ActivateReceipt>> {
    let (company, request_id) = (&cmd.company, &cmd.request_id);
    if let Some(prev) = tx.request(company, request_id).await? {
        activate::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let name = named_by(tx, company, &cmd.target).await?;
    let named = tx.request(company, &name).await?;
    let named = activate::check_allocation(named.as_ref(), &name)?.clone();
    let target = named.alias_of.clone().unwrap_or_else(|| name.clone());
    let user = &named.user;
    let fingerprint = cmd.fingerprint();
    let claim = Claim { kind: RequestKind::Activate, user, event: None, coins: 0, fingerprint: &fingerprint, original: Some(&target), record: None };
    if !tx.claim(company, request_id, &claim, cmd.now_ms).await? {
        let prev = request_after_lost_claim(tx, company, request_id).await?;
        activate::answer_repeat(&prev, cmd)?;
        return replayed(&prev);
    }
    let account = rules::account_in(tx.account(user).await?, company, user)?;
    let due = bring_due(tx, company, user, &account, cmd.now_ms).await?;
    let row = tx.allocation(company, &target).await?.ok_or_else(|| StoreError::Corrupt(format!("allocation {target} has no record")))?;
    let record = row.clone().into_record(company, Vec::new())?;
    let a = row.into_allocation()?;
    let (mut balance, mut pending, mut coins) = (due.balance, due.pending, 0);
    let (mut activated_at, mut expires_at) = (record.activated_at_ms, record.expires_at_ms);
    if allocation::activate(&a)? == Activation::Activate {
        let entry = tx.original_entry(company, &target, named.kind).await?;
        let held = tx.held_lot(entry.entry_id).await?.ok_or_else(|| StoreError::Corrupt(format!("held allocation {target} has no held lot")))?;
        let plan = allocation::plan_activations(balance, pending, vec![held], ActivateAt::Early { now_ms: cmd.now_ms, by: request_id });
        write_activations(tx, company, user, &plan, cmd.now_ms).await?;
        (balance, pending, coins) = (plan.balance, plan.pending, plan.coins);
        if let Some(done) = plan.activations.first() {
            (activated_at, expires_at) = (Some(done.activated_at), done.expires_at);
        }
    }
    let receipt = ActivateReceipt {
        request_id: request_id.clone(),
        original_request_id: name,
        already_active: coins == 0,
        coins,
        activated_at,
        expires_at,
        balance,
        pending_balance: pending,
    };
    tx.finish(company, request_id, coins, &receipt.to_stored()).await?;
    Ok(Applied { receipt, replayed: false, expired: due.expired })
}
