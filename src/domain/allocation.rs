//! The allocation record and its life: the state machine of one credit (held, active, canceled,
//! reversed, or zero), the one-live-allocation-per-order rule, activation, and how much each
//! return (whole, by coins, or by refunded amount) takes. Pure: the backends fetch the record and
//! what the rules below ask for, and write what they answer.
//!
//! ```text
//!             activate (early, or at activatesAt)
//!   PENDING ───────────────────────────────────────► ACTIVE
//!      │ cancel (a return while held)                   │ return (whole, or the last partial)
//!      ▼                                                ▼
//!   CANCELED                                         REVERSED
//!   ZERO: earned nothing; holds its request id and order, never moves.
//! ```
//!
//! Modelled on two-phase transfers: a held credit is posted (activated) or voided (canceled) at
//! most once, and no move out of a final state is representable as a write.

use super::earn::Calculation;
pub use super::ledger::AllocationState;
use super::ledger::{EntryKind, NewEntry};
use super::lots;
use super::refusal::Refusal;
use super::{RequestId, UserId};
use crate::domain::config::DAY_MS;

/// Largest `pendingDays`: a hold of up to a year.
pub const PENDING_DAYS_MAX: i64 = 365;

/// When a credit made at `now_ms` under a hold of `pending_days` becomes spendable; `None`: at once.
pub fn activates_at(now_ms: i64, pending_days: Option<i64>) -> Option<i64> {
    pending_days.map(|d| now_ms + d * DAY_MS)
}

/// An allocation as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub request_id: RequestId,
    pub user: UserId,
    pub state: AllocationState,
    pub coins: i64,
    pub coins_canceled: i64,
    pub coins_reversed: i64,
    pub coins_waived: i64,
    pub amount_minor: Option<i64>,
    pub amount_refunded_minor: i64,
    pub calculation: Calculation,
    pub activates_at: Option<i64>,
}

impl Allocation {
    /// Coins no return has ended yet.
    pub fn remaining(&self) -> i64 {
        self.coins - self.coins_canceled - self.coins_reversed - self.coins_waived
    }

    /// Held at `now_ms`: a return now cancels instead of reversing. Decided by the clock, not the
    /// stored state, because reads treat a due credit as active before the sweeper writes it.
    pub fn is_held_at(&self, now_ms: i64) -> bool {
        self.state == AllocationState::Pending && self.activates_at.is_some_and(|at| at > now_ms)
    }

    /// Pending in storage but past its `activatesAt`: its `ACTIVATE` entry is due.
    pub fn activation_due_at(&self, now_ms: i64) -> bool {
        self.state == AllocationState::Pending && !self.is_held_at(now_ms)
    }
}

/// What an allocation that brings an order id already held by a live allocation gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderClaim {
    /// No live allocation holds the order: proceed.
    Free,
    /// The same purchase reported again under a new request id (a till's retry): answer as the
    /// holder did, credit nothing, and record the new id as an alias of the holder.
    ReplayOf(RequestId),
}

/// The live allocation that holds an order id: what a retry of the same purchase must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHolder {
    pub request_id: RequestId,
    pub user: UserId,
    pub amount_minor: Option<i64>,
    /// What the holder credited: a replay answers with it.
    pub coins: i64,
}

/// One live allocation per (company, event, order id). `live` is the holder, if any; the same
/// user and the same purchase value (or both without one) make a replay, anything else a conflict
/// naming the holder. The request id was checked first, so the new id is unused.
pub fn check_order(live: Option<&OrderHolder>, user: &UserId, amount_minor: Option<i64>) -> Result<OrderClaim, Refusal> {
    match live {
        None => Ok(OrderClaim::Free),
        Some(a) if &a.user == user && a.amount_minor == amount_minor => Ok(OrderClaim::ReplayOf(a.request_id.clone())),
        Some(a) => Err(Refusal::OrderIdConflict(a.request_id.clone())),
    }
}

/// What an activation request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Write `ACTIVATE` for the allocation's held lot now.
    Activate,
    /// Nothing to write: already spendable (active, or zero).
    AlreadyActive,
}

/// Activating an allocation early, by request. Held: activate it now (its expiry clock starts
/// now). A returned allocation cannot be activated. The store first activates anything due, so a
/// held allocation whose `activatesAt` has passed reads as active here.
pub fn activate(a: &Allocation) -> Result<Activation, Refusal> {
    match a.state {
        AllocationState::Pending => Ok(Activation::Activate),
        AllocationState::Active | AllocationState::Zero => Ok(Activation::AlreadyActive),
        AllocationState::Canceled | AllocationState::Reversed => Err(Refusal::AlreadyReversed(a.request_id.clone())),
    }
}

/// A held lot: the coins of one allocation (`request_id`) waiting for `pending_until`. Its
/// `expires_at` is provisional: `validityDays` after `pending_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLot {
    pub lot_id: i64,
    pub request_id: RequestId,
    pub remaining: i64,
    pub pending_until: i64,
    pub expires_at: Option<i64>,
    pub event: Option<String>,
    pub coin_config_id: Option<String>,
}

/// One lot's activation: its entry, and what the lot and the allocation's record become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    pub entry: NewEntry,
    pub lot_id: i64,
    /// Coins of the lot that paid the user's debt as it became spendable (taken from the lot).
    pub paid: i64,
    pub request_id: RequestId,
    pub activated_at: i64,
    pub expires_at: Option<i64>,
}

/// The activations of some held lots, and the stored balance and pending balance after them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActivationPlan {
    pub activations: Vec<Activated>,
    pub balance: i64,
    pub pending: i64,
    pub coins: i64,
}

/// When activation happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivateAt<'a> {
    /// Each due lot at its own `pending_until` (the sweeper, or a read that found it due): the
    /// expiry stays as provisioned, and the entry, written late, says when it took effect.
    Due,
    /// Early, at `now_ms`, by the activate request `by`: the expiry clock starts now.
    Early { now_ms: i64, by: &'a RequestId },
}

/// Activates held lots, earliest first: each `ACTIVATE` entry moves the lot's coins from the
/// pending balance to the spendable one (`lifetimeEarned` counts them now).
pub fn plan_activations(balance: i64, pending: i64, mut lots: Vec<HeldLot>, at: ActivateAt<'_>) -> ActivationPlan {
    lots.sort_by_key(|l| (l.pending_until, l.lot_id));
    let mut plan = ActivationPlan { activations: Vec::with_capacity(lots.len()), balance, pending, coins: 0 };
    for lot in lots.into_iter().filter(|l| l.remaining > 0) {
        let (activated_at, expires_at, request_id, effective_at) = match at {
            ActivateAt::Due => (lot.pending_until, lot.expires_at, None, Some(lot.pending_until)),
            ActivateAt::Early { now_ms, by } => (now_ms, lot.expires_at.map(|e| now_ms + (e - lot.pending_until)), Some(by.clone()), None),
        };
        let paid = lot.remaining - lots::kept_after_debt(plan.balance, lot.remaining);
        plan.balance += lot.remaining;
        plan.pending -= lot.remaining;
        plan.coins += lot.remaining;
        let entry = NewEntry {
            kind: EntryKind::Activate,
            coins: lot.remaining,
            balance_after: plan.balance,
            event: lot.event,
            request_id,
            coin_config_id: lot.coin_config_id,
            expires_at,
            order_id: None,
            amount_minor: None,
            original_request_id: Some(lot.request_id.clone()),
            pending_coins: -lot.remaining,
            pending_after: plan.pending,
            effective_at,
            reason: None,
            client_id: None,
        };
        plan.activations.push(Activated { entry, lot_id: lot.lot_id, paid, request_id: lot.request_id, activated_at, expires_at });
    }
    plan
}

/// What a return asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnAsk {
    /// Everything that remains (a reversal without `coins` or `amountMinor`).
    Whole,
    /// `coins` of what remains.
    Coins(i64),
    /// A refund of this much of the purchase value: the allocation keeps what the rest earns.
    AmountMinor(i64),
}

/// What to do when the user no longer has the coins a return takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnShortfall {
    /// Refuse (`INSUFFICIENT_BALANCE`), take nothing.
    #[default]
    Reject,
    /// Take what the user has and waive the rest; the answer says how much was short.
    Cap,
    /// Take it all: what the user does not have becomes debt (a negative balance), which later
    /// credits pay first.
    Negative,
}

impl OnShortfall {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "REJECT",
            Self::Cap => "CAP",
            Self::Negative => "NEGATIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Reject, Self::Cap, Self::Negative].into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnKind {
    /// Coins taken back from the spendable balance (`REVERSE`).
    Reverse,
    /// Held coins released before they were ever spendable (`CANCEL`).
    Cancel,
}

impl ReturnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reverse => "REVERSE",
            Self::Cancel => "CANCEL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Reverse, Self::Cancel].into_iter().find(|t| t.as_str() == s)
    }
}

/// The coins of this allocation that left its own lot through `EXPIRE`, and the coins its
/// returns actually took from the balance so far. Expired coins left the balance once and are
/// never taken a second time: a return absorbs them first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReturnHistory {
    pub expired: i64,
    pub taken: i64,
}

/// What one return writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPlan {
    pub kind: ReturnKind,
    /// Coins taken now: from the balance (`REVERSE`; with NEGATIVE, the part beyond the user's
    /// coins becomes debt) or from the held coins (`CANCEL`).
    pub take: i64,
    /// Coins of the allocation this return ends without taking them (they expired already).
    pub absorbed: i64,
    /// Coins the user no longer had, waived (CAP).
    pub short: i64,
    pub amount_refunded_minor: i64,
    pub state: AllocationState,
    pub remaining: i64,
}

impl ReturnPlan {
    /// The record's counters after this return: `(coins_canceled, coins_reversed, coins_waived)`.
    pub fn counters(&self, a: &Allocation) -> (i64, i64, i64) {
        match self.kind {
            ReturnKind::Cancel => (a.coins_canceled + self.take, a.coins_reversed, a.coins_waived),
            ReturnKind::Reverse => (a.coins_canceled, a.coins_reversed + self.take + self.absorbed, a.coins_waived + self.short),
        }
    }
}

/// Decides one return of allocation `a` at `now_ms`. `available` is what the user can give
/// back now (spendable coins; for a held allocation, unused). Nothing is decided about lots here:
/// the backend takes `take` coins from the allocation's own lot first, then soonest-expiring.
pub fn plan_return(
    a: &Allocation,
    ask: ReturnAsk,
    now_ms: i64,
    history: ReturnHistory,
    available: i64,
    on_shortfall: OnShortfall,
) -> Result<ReturnPlan, Refusal> {
    // Every coin may be gone before the whole purchase is refunded (what is left earns nothing):
    // the rest of the refund is still recorded, taking nothing, so refunds always add up.
    let refund_left = matches!(ask, ReturnAsk::AmountMinor(_)) && a.amount_minor.is_some_and(|paid| a.amount_refunded_minor < paid);
    if !a.state.is_live() && !refund_left {
        return Err(Refusal::AlreadyReversed(a.request_id.clone()));
    }
    let remaining = a.remaining();
    let (nominal, refunded) = match ask {
        ReturnAsk::Whole => (remaining, a.amount_minor.unwrap_or(0)),
        ReturnAsk::Coins(k) if k > remaining => {
            return Err(Refusal::ReversalExceedsRemaining { original: a.request_id.clone(), remaining_coins: remaining, remaining_minor: None });
        }
        ReturnAsk::Coins(k) => (k, a.amount_refunded_minor),
        ReturnAsk::AmountMinor(minor) => {
            let Some(paid) = a.amount_minor else { return Err(Refusal::AmountNotRecorded(a.request_id.clone())) };
            let refunded = a.amount_refunded_minor.checked_add(minor).filter(|r| *r <= paid);
            let Some(refunded) = refunded else {
                return Err(Refusal::ReversalExceedsRemaining {
                    original: a.request_id.clone(),
                    remaining_coins: remaining,
                    remaining_minor: Some(paid - a.amount_refunded_minor),
                });
            };
            let kept = a.coins.min(a.calculation.earn_on(paid - refunded));
            ((remaining - kept).max(0), refunded)
        }
    };
    let after = remaining - nominal;
    if a.is_held_at(now_ms) {
        let state = if after == 0 { AllocationState::Canceled } else { AllocationState::Pending };
        return Ok(ReturnPlan { kind: ReturnKind::Cancel, take: nominal, absorbed: 0, short: 0, amount_refunded_minor: refunded, state, remaining: after });
    }
    // Expired coins not yet absorbed by an earlier return are ended first, without taking them.
    let absorbed_so_far = a.coins_reversed - history.taken;
    let absorbed = (history.expired - absorbed_so_far).clamp(0, nominal);
    let wanted = nominal - absorbed;
    // NEGATIVE takes it all: what the user does not have becomes debt.
    let take = if on_shortfall == OnShortfall::Negative { wanted } else { wanted.min(available.max(0)) };
    let short = wanted - take;
    if short > 0 && on_shortfall == OnShortfall::Reject {
        return Err(Refusal::InsufficientBalance { user: a.user.clone(), needed: wanted, available: available.max(0), pending: 0 });
    }
    // A refund recorded after every coin is back leaves the state as it was (canceled stays so).
    let state = match after {
        _ if !a.state.is_live() => a.state,
        0 => AllocationState::Reversed,
        _ => AllocationState::Active,
    };
    Ok(ReturnPlan { kind: ReturnKind::Reverse, take, absorbed, short, amount_refunded_minor: refunded, state, remaining: after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::earn::{BPS_ONE, EarnRule, EarnTerms, Rounding};
    use proptest::prelude::*;

    fn percent_allocation(rate_bps: i64, paid: i64) -> Allocation {
        let calculation = Calculation {
            terms: EarnTerms { rule: EarnRule::Percent { rate_bps }, min_amount_minor: None, max_coins_per_allocation: None, rounding: Rounding::Floor },
            amount_minor: Some(paid),
            minor_units_per_coin: 100,
            multiplier_bps: BPS_ONE,
            bonus_coins: 0,
        };
        Allocation {
            request_id: RequestId::parse("R1").unwrap(),
            user: UserId::parse("U").unwrap(),
            state: AllocationState::Active,
            coins: calculation.earn().coins,
            coins_canceled: 0,
            coins_reversed: 0,
            coins_waived: 0,
            amount_minor: Some(paid),
            amount_refunded_minor: 0,
            calculation,
            activates_at: None,
        }
    }

    fn apply(a: &mut Allocation, plan: &ReturnPlan) {
        (a.coins_canceled, a.coins_reversed, a.coins_waived) = plan.counters(a);
        a.amount_refunded_minor = plan.amount_refunded_minor;
        a.state = plan.state;
    }

    #[test]
    fn a_retry_of_the_same_order_replays_and_anything_else_conflicts() {
        let a = percent_allocation(1_000, 10_000);
        let holder = OrderHolder { request_id: a.request_id.clone(), user: a.user.clone(), amount_minor: a.amount_minor, coins: a.coins };
        let user = holder.user.clone();
        assert_eq!(check_order(None, &user, Some(10_000)), Ok(OrderClaim::Free));
        assert_eq!(check_order(Some(&holder), &user, Some(10_000)), Ok(OrderClaim::ReplayOf(holder.request_id.clone())));
        assert_eq!(check_order(Some(&holder), &user, Some(9_999)), Err(Refusal::OrderIdConflict(holder.request_id.clone())));
        let other = UserId::parse("V").unwrap();
        assert_eq!(check_order(Some(&holder), &other, Some(10_000)), Err(Refusal::OrderIdConflict(holder.request_id.clone())));
        assert!(!AllocationState::Reversed.is_live() && !AllocationState::Canceled.is_live() && AllocationState::Zero.is_live());
    }

    #[test]
    fn a_held_credit_activates_once_with_its_expiry_starting_then() {
        let mut a = percent_allocation(1_000, 100_000);
        a.state = AllocationState::Pending;
        a.activates_at = activates_at(1_000, Some(14));
        assert_eq!(a.activates_at, Some(1_000 + 14 * DAY_MS));
        assert!(a.is_held_at(1_000 + 14 * DAY_MS - 1) && !a.is_held_at(1_000 + 14 * DAY_MS));
        assert_eq!(activate(&a), Ok(Activation::Activate));
        a.state = AllocationState::Active;
        assert_eq!(activate(&a), Ok(Activation::AlreadyActive));
        a.state = AllocationState::Canceled;
        assert_eq!(activate(&a), Err(Refusal::AlreadyReversed(a.request_id.clone())));

        // 100 held until day 14, valid 30 days from then; 40 of them already canceled.
        let held = |lot_id, remaining| HeldLot {
            lot_id,
            request_id: RequestId::parse("R1").unwrap(),
            remaining,
            pending_until: 14 * DAY_MS,
            expires_at: Some(44 * DAY_MS),
            event: Some("BUY".into()),
            coin_config_id: None,
        };
        let due = plan_activations(10, 60, vec![held(7, 60), held(8, 0)], ActivateAt::Due);
        assert_eq!((due.balance, due.pending, due.coins, due.activations.len()), (70, 0, 60, 1));
        let a = &due.activations[0];
        assert_eq!(
            (a.activated_at, a.expires_at, a.entry.effective_at, a.entry.request_id.as_ref()),
            (14 * DAY_MS, Some(44 * DAY_MS), Some(14 * DAY_MS), None)
        );
        assert_eq!((a.entry.coins, a.entry.pending_coins, a.entry.balance_after, a.entry.pending_after), (60, -60, 70, 0));
        let by = RequestId::parse("ACT-1").unwrap();
        let early = plan_activations(10, 60, vec![held(7, 60)], ActivateAt::Early { now_ms: 3 * DAY_MS, by: &by });
        let a = &early.activations[0];
        assert_eq!((a.activated_at, a.expires_at, a.entry.effective_at, a.entry.request_id.as_ref()), (3 * DAY_MS, Some(33 * DAY_MS), None, Some(&by)));
    }

    #[test]
    fn a_return_during_the_hold_cancels_and_never_lacks_balance() {
        let mut a = percent_allocation(1_000, 100_000); // 100 coins
        a.state = AllocationState::Pending;
        a.activates_at = Some(10 * DAY_MS);
        let part = plan_return(&a, ReturnAsk::Coins(40), DAY_MS, ReturnHistory::default(), 0, OnShortfall::Reject).unwrap();
        assert_eq!((part.kind, part.take, part.state, part.remaining), (ReturnKind::Cancel, 40, AllocationState::Pending, 60));
        apply(&mut a, &part);
        let rest = plan_return(&a, ReturnAsk::Whole, DAY_MS, ReturnHistory::default(), 0, OnShortfall::Reject).unwrap();
        assert_eq!((rest.kind, rest.take, rest.state), (ReturnKind::Cancel, 60, AllocationState::Canceled));
        apply(&mut a, &rest);
        assert_eq!(a.coins_canceled, 100);
        assert_eq!(
            plan_return(&a, ReturnAsk::Whole, DAY_MS, ReturnHistory::default(), 0, OnShortfall::Reject),
            Err(Refusal::AlreadyReversed(a.request_id.clone()))
        );
    }

    #[test]
    fn more_than_remains_is_refused_naming_what_remains() {
        let a = percent_allocation(1_000, 100_000);
        assert_eq!(
            plan_return(&a, ReturnAsk::Coins(101), 0, ReturnHistory::default(), 500, OnShortfall::Reject),
            Err(Refusal::ReversalExceedsRemaining { original: a.request_id.clone(), remaining_coins: 100, remaining_minor: None })
        );
        assert_eq!(
            plan_return(&a, ReturnAsk::AmountMinor(100_001), 0, ReturnHistory::default(), 500, OnShortfall::Reject),
            Err(Refusal::ReversalExceedsRemaining { original: a.request_id.clone(), remaining_coins: 100, remaining_minor: Some(100_000) })
        );
    }

    #[test]
    fn a_shortfall_is_refused_or_capped_and_waived() {
        let a = percent_allocation(1_000, 100_000);
        assert_eq!(
            plan_return(&a, ReturnAsk::Whole, 0, ReturnHistory::default(), 30, OnShortfall::Reject),
            Err(Refusal::InsufficientBalance { user: a.user.clone(), needed: 100, available: 30, pending: 0 })
        );
        let capped = plan_return(&a, ReturnAsk::Whole, 0, ReturnHistory::default(), 30, OnShortfall::Cap).unwrap();
        assert_eq!((capped.take, capped.short, capped.state, capped.counters(&a)), (30, 70, AllocationState::Reversed, (0, 30, 70)));
    }

    #[test]
    fn expired_coins_are_ended_but_never_taken_twice() {
        let mut a = percent_allocation(1_000, 100_000); // 100 coins, 30 of them expired
        let history = ReturnHistory { expired: 30, taken: 0 };
        let half = plan_return(&a, ReturnAsk::AmountMinor(50_000), 0, history, 70, OnShortfall::Reject).unwrap();
        assert_eq!((half.take, half.absorbed, half.remaining), (20, 30, 50));
        apply(&mut a, &half);
        let rest = plan_return(&a, ReturnAsk::AmountMinor(50_000), 0, ReturnHistory { expired: 30, taken: 20 }, 50, OnShortfall::Reject).unwrap();
        assert_eq!((rest.take, rest.absorbed, rest.state), (50, 0, AllocationState::Reversed));
    }

    #[test]
    fn refunds_after_every_coin_is_back_are_recorded_and_take_nothing() {
        // 1 bp of ₹105.88 earns 0 coins: the first refund returns the (empty) allocation in full,
        // the later ones still record the refunded amount.
        let mut a = percent_allocation(1, 10_588);
        assert_eq!(a.coins, 0);
        let first = plan_return(&a, ReturnAsk::AmountMinor(588), 0, ReturnHistory::default(), 0, OnShortfall::Reject).unwrap();
        assert_eq!((first.take, first.state), (0, AllocationState::Reversed));
        apply(&mut a, &first);
        let rest = plan_return(&a, ReturnAsk::AmountMinor(10_000), 0, ReturnHistory::default(), 0, OnShortfall::Reject).unwrap();
        assert_eq!((rest.take, rest.amount_refunded_minor, rest.state), (0, 10_588, AllocationState::Reversed));
        apply(&mut a, &rest);
        assert_eq!(
            plan_return(&a, ReturnAsk::AmountMinor(1), 0, ReturnHistory::default(), 0, OnShortfall::Reject),
            Err(Refusal::AlreadyReversed(a.request_id.clone()))
        );
        assert_eq!(plan_return(&a, ReturnAsk::Whole, 0, ReturnHistory::default(), 0, OnShortfall::Reject), Err(Refusal::AlreadyReversed(a.request_id.clone())));
    }

    proptest! {
        /// However a refund is split, the parts take exactly what one full refund takes.
        #[test]
        fn any_sequence_of_partial_refunds_sums_to_a_full_refund(
            rate in 1i64..5_000, paid in 1i64..1_000_000, cuts in proptest::collection::vec(1i64..1_000_000, 0..6)
        ) {
            let mut a = percent_allocation(rate, paid);
            let full = plan_return(&a, ReturnAsk::AmountMinor(paid), 0, ReturnHistory::default(), i64::MAX, OnShortfall::Reject).unwrap().take;
            prop_assert_eq!(full, a.coins);
            let mut taken = 0;
            for cut in cuts {
                let left = paid - a.amount_refunded_minor;
                if left == 0 { break; }
                let plan = plan_return(&a, ReturnAsk::AmountMinor(cut.min(left)), 0, ReturnHistory::default(), i64::MAX, OnShortfall::Reject).unwrap();
                prop_assert!(plan.take >= 0 && plan.remaining >= 0);
                taken += plan.take;
                apply(&mut a, &plan);
            }
            let left = paid - a.amount_refunded_minor;
            if left > 0 {
                let last = plan_return(&a, ReturnAsk::AmountMinor(left), 0, ReturnHistory::default(), i64::MAX, OnShortfall::Reject).unwrap();
                taken += last.take;
                apply(&mut a, &last);
            }
            prop_assert_eq!(taken, full);
            prop_assert_eq!(a.state, AllocationState::Reversed);
            prop_assert_eq!(a.remaining(), 0);
        }
    }
}
