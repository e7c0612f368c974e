//! Reversal: undoing an allocation (its coins taken back) or a redemption (its coins
//! given back to the lots they came from), at most once per original, exactly-once on the
//! reversal's own request id.

use std::fmt::Write as _;

use super::allocate::NewLot;
use super::allocation::{self, Allocation, OnShortfall, ReturnAsk, ReturnHistory, ReturnKind, ReturnPlan};
use super::ledger::{EntryKind, Lifetime, LotMove, NewEntry, RequestKind, StoredRequest};
use super::lots::{self, OpenLot};
use super::refusal::Refusal;
use super::{CompanyId, EventName, OrderId, RequestId};

/// What a return names: the original's request id (or an alias of it), or the live allocation
/// (else the latest) of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Request(RequestId),
    Order { event: EventName, order: OrderId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseCmd {
    pub company: CompanyId,
    pub request_id: RequestId,
    pub target: Target,
    pub ask: ReturnAsk,
    pub on_shortfall: OnShortfall,
    pub now_ms: i64,
}

impl ReverseCmd {
    /// A whole reversal of a named original, as every reversal was before partial returns.
    pub fn whole(company: CompanyId, request_id: RequestId, original: RequestId, now_ms: i64) -> Self {
        Self { company, request_id, target: Target::Request(original), ask: ReturnAsk::Whole, on_shortfall: OnShortfall::Reject, now_ms }
    }

    /// What a replay of this request id must repeat. A whole reversal by request id is the
    /// original's id alone, as reversals stored it before partial returns, so their replays
    /// still match. Ids cannot contain spaces, so the parts cannot run together.
    pub fn fingerprint(&self) -> String {
        let mut s = match &self.target {
            Target::Request(id) => id.to_string(),
            Target::Order { event, order } => format!("order {event} {order}"),
        };
        let _ = match self.ask {
            ReturnAsk::Whole => Ok(()),
            ReturnAsk::Coins(k) => write!(s, " coins {k}"),
            ReturnAsk::AmountMinor(m) => write!(s, " amountMinor {m}"),
        };
        if self.on_shortfall != OnShortfall::Reject {
            let _ = write!(s, " onShortfall {}", self.on_shortfall.as_str());
        }
        s
    }

    /// The name the answer gives the original before it is resolved: the request id given.
    pub fn named(&self) -> Option<&RequestId> {
        match &self.target {
            Target::Request(id) => Some(id),
            Target::Order { .. } => None,
        }
    }
}

/// What a return answers. `coins` is signed like its ledger entry: negative when an allocation
/// is taken back (or its held coins canceled), positive when a redemption is given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseReceipt {
    pub request_id: RequestId,
    pub original_request_id: RequestId,
    pub kind: ReturnKind,
    pub coins: i64,
    /// Coins the user no longer had (`onShortfall: CAP`), waived; and what they were worth.
    pub coins_short: i64,
    pub short_amount_minor: i64,
    /// Coins of the original no return has ended yet.
    pub coins_remaining: i64,
    /// Allocations that recorded a purchase value: how much of it is refunded so far.
    pub amount_refunded_minor: Option<i64>,
    pub balance: i64,
    pub pending_balance: i64,
}

/// A request id seen before: a replay if it is the same return (same original by the same
/// name, same ask), else a conflict.
pub fn answer_repeat(prev: &StoredRequest, cmd: &ReverseCmd) -> Result<(), Refusal> {
    let same = prev.kind == RequestKind::Reverse && prev.fingerprint == cmd.fingerprint();
    if same { Ok(()) } else { Err(Refusal::RequestIdConflict(cmd.request_id.clone())) }
}

/// The original must exist in the company and be an allocation or a redemption (a return or an
/// activation cannot be returned).
pub fn check_original<'a>(original: Option<&'a StoredRequest>, name: &RequestId) -> Result<&'a StoredRequest, Refusal> {
    match original {
        None => Err(Refusal::OriginalNotFound(name.clone())),
        Some(o) if matches!(o.kind, RequestKind::Allocate | RequestKind::Redeem | RequestKind::Adjust) => Ok(o),
        Some(_) => Err(Refusal::NotReversible(name.clone())),
    }
}

/// The ledger entry of the request being reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub entry_id: i64,
    pub kind: RequestKind,
    /// Signed, as in the ledger: positive for an allocation, negative for a redemption.
    pub coins: i64,
    pub event: Option<String>,
    pub coin_config_id: Option<String>,
}

/// The lot an allocation opened, and how many of its coins already left through `EXPIRE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnLot {
    pub lot_id: i64,
    pub expired: i64,
}

/// Coins a redemption took from one lot (positive), and that lot's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub lot_id: i64,
    pub coins: i64,
    pub expires_at: Option<i64>,
}

/// What a reversal writes before the coins it gave back to expired lots expire again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversePlan {
    pub entry: NewEntry,
    pub moves: Vec<LotMove>,
    /// A debit given back after the debt it made was paid by other credits: the coins its lots
    /// never held go to a new lot of their own, never expiring.
    pub lot: Option<NewLot>,
    pub lifetime: Lifetime,
    pub lifetime_delta: i64,
    /// Coins of the original left after this return.
    pub remaining: i64,
}

fn reverse_entry(cmd: &ReverseCmd, original: &Original, name: &RequestId, coins: i64, balance_after: i64, pending_after: i64) -> NewEntry {
    NewEntry {
        kind: EntryKind::Reverse,
        coins,
        balance_after,
        event: original.event.clone(),
        request_id: Some(cmd.request_id.clone()),
        coin_config_id: original.coin_config_id.clone(),
        expires_at: None,
        order_id: None,
        amount_minor: match cmd.ask {
            ReturnAsk::AmountMinor(m) => Some(m),
            _ => None,
        },
        original_request_id: Some(name.clone()),
        pending_coins: 0,
        pending_after,
        effective_at: None,
        reason: None,
        client_id: None,
    }
}

/// A return of an allocation: what [`allocation::plan_return`] decides. While the allocation is
/// held, its coins come out of its own held lot (`CANCEL`: never short, the balance untouched);
/// after, they are taken from its own lot first, then from the user's other open lots in debit
/// order (`REVERSE`). `balance` is the spendable balance (every open lot), `pending` the held
/// coins; `taken` what earlier returns of this allocation took from the balance.
#[allow(clippy::too_many_arguments)]
pub fn plan_take_back(
    cmd: &ReverseCmd,
    a: &Allocation,
    original: &Original,
    balance: i64,
    pending: i64,
    own: &[OwnLot],
    taken: i64,
    mut open: Vec<OpenLot>,
) -> Result<(ReturnPlan, ReversePlan), Refusal> {
    let history = ReturnHistory { expired: own.iter().map(|l| l.expired).sum(), taken };
    let plan = allocation::plan_return(a, cmd.ask, cmd.now_ms, history, balance, cmd.on_shortfall).map_err(|refusal| match refusal {
        Refusal::InsufficientBalance { user, needed, available, .. } => Refusal::InsufficientBalance { user, needed, available, pending },
        other => other,
    })?;
    if plan.kind == ReturnKind::Cancel {
        let mut entry = reverse_entry(cmd, original, &a.request_id, 0, balance, pending - plan.take);
        (entry.kind, entry.pending_coins) = (EntryKind::Cancel, -plan.take);
        let moves = own.iter().take(1).filter(|_| plan.take > 0).map(|l| LotMove { lot_id: l.lot_id, coins: -plan.take }).collect();
        let reverse = ReversePlan { entry, moves, lot: None, lifetime: Lifetime::Earned, lifetime_delta: 0, remaining: plan.remaining };
        return Ok((plan, reverse));
    }
    open.sort_by(lots::debit_order);
    // With NEGATIVE, what the lots do not hold becomes debt.
    let from_lots = plan.take.min(open.iter().map(|l| l.remaining).sum());
    let (first, rest): (Vec<OpenLot>, Vec<OpenLot>) = open.into_iter().partition(|l| own.iter().any(|o| o.lot_id == l.lot_id));
    let takes = lots::take(first.into_iter().chain(rest), from_lots).ok_or_else(|| Refusal::InsufficientBalance {
        user: a.user.clone(),
        needed: plan.take,
        available: balance,
        pending,
    })?;
    let reverse = ReversePlan {
        entry: reverse_entry(cmd, original, &a.request_id, -plan.take, balance - plan.take, pending),
        moves: takes.into_iter().map(|(lot_id, n)| LotMove { lot_id, coins: -n }).collect(),
        lot: None,
        lifetime: Lifetime::Earned,
        lifetime_delta: -plan.take,
        remaining: plan.remaining,
    };
    Ok((plan, reverse))
}

/// Gives (part of) a redemption or a debit back. Like every credit it pays the user's debt
/// first; the rest goes back to the lots it took from, with their original expiry,
/// latest-expiring first, where earlier returns of it put `restored` coins back the same way
/// (skipped). A debit that made debt took fewer coins from lots than it moved: what its lots
/// cannot take back goes to a new lot, never expiring. Coins returned to a lot that expired
/// meanwhile expire again at once, by the expiry that follows.
pub fn plan_give_back(
    cmd: &ReverseCmd,
    original: &Original,
    name: &RequestId,
    (balance, pending): (i64, i64),
    taken: &[Taken],
    (given_back, restored): (i64, i64),
) -> Result<ReversePlan, Refusal> {
    let remaining = -original.coins - given_back;
    if remaining <= 0 {
        return Err(Refusal::AlreadyReversed(name.clone()));
    }
    let coins = match cmd.ask {
        ReturnAsk::Whole => remaining,
        ReturnAsk::Coins(k) if k <= remaining => k,
        ReturnAsk::Coins(_) => return Err(Refusal::ReversalExceedsRemaining { original: name.clone(), remaining_coins: remaining, remaining_minor: None }),
        ReturnAsk::AmountMinor(_) => return Err(Refusal::AmountNotRecorded(name.clone())),
    };
    let mut order = taken.to_vec();
    // Never-expiring lots expire latest of all.
    order.sort_by_key(|t| (std::cmp::Reverse(t.expires_at.unwrap_or(i64::MAX)), std::cmp::Reverse(t.lot_id)));
    let (mut skip, mut left, mut moves) = (restored, lots::kept_after_debt(balance, coins), Vec::new());
    for t in order {
        let skipped = skip.min(t.coins);
        skip -= skipped;
        let back = (t.coins - skipped).min(left);
        if back > 0 {
            moves.push(LotMove { lot_id: t.lot_id, coins: back });
            left -= back;
        }
    }
    moves.sort_by_key(|m| m.lot_id);
    // An adjustment's debit took from the lifetime earned; giving it back restores it.
    let lifetime = super::ledger::counter_of(EntryKind::Reverse, original.kind == RequestKind::Redeem);
    let lifetime_delta = if lifetime == Lifetime::Redeemed { -coins } else { coins };
    let lot = Some(NewLot { coins: left, expires_at: None, pending_until: None }).filter(|l| l.coins > 0);
    let entry = reverse_entry(cmd, original, name, coins, balance + coins, pending);
    Ok(ReversePlan { entry, moves, lot, lifetime, lifetime_delta, remaining: remaining - coins })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use crate::domain::allocation::AllocationState;
    use crate::domain::earn::{BPS_ONE, Calculation, EarnTerms};

    fn cmd(ask: ReturnAsk, on_shortfall: OnShortfall) -> ReverseCmd {
        let mut cmd = ReverseCmd::whole(CompanyId::parse("C").unwrap(), RequestId::parse("R2").unwrap(), RequestId::parse("R1").unwrap(), 0);
        (cmd.ask, cmd.on_shortfall) = (ask, on_shortfall);
        cmd
    }

    fn allocation(coins: i64) -> (Allocation, Original) {
        let calculation = Calculation { terms: EarnTerms::fixed(coins), amount_minor: None, minor_units_per_coin: 1, multiplier_bps: BPS_ONE, bonus_coins: 0 };
        let a = Allocation {
            request_id: RequestId::parse("R1").unwrap(),
            user: UserId::parse("U").unwrap(),
            state: AllocationState::Active,
            coins,
            coins_canceled: 0,
            coins_reversed: 0,
            coins_waived: 0,
            amount_minor: None,
            amount_refunded_minor: 0,
            calculation,
            activates_at: None,
        };
        (a, Original { entry_id: 1, kind: RequestKind::Allocate, coins, event: Some("E".into()), coin_config_id: Some("WCC100001".into()) })
    }

    fn lot(lot_id: i64, remaining: i64, expires_at: Option<i64>) -> OpenLot {
        OpenLot { lot_id, remaining, expires_at }
    }

    #[test]
    fn fingerprints_keep_a_whole_reversal_by_id_as_it_was_stored() {
        assert_eq!(cmd(ReturnAsk::Whole, OnShortfall::Reject).fingerprint(), "R1");
        assert_eq!(cmd(ReturnAsk::Coins(5), OnShortfall::Cap).fingerprint(), "R1 coins 5 onShortfall CAP");
        let mut by_order = cmd(ReturnAsk::AmountMinor(700), OnShortfall::Reject);
        by_order.target = Target::Order { event: EventName::parse("purchase").unwrap(), order: OrderId::parse("O-1").unwrap() };
        assert_eq!(by_order.fingerprint(), "order purchase O-1 amountMinor 700");
    }

    #[test]
    fn taking_back_starts_with_the_allocations_own_lot() {
        let (a, original) = allocation(100);
        let open = vec![lot(1, 60, Some(50)), lot(2, 100, Some(10))];
        let (_, plan) =
            plan_take_back(&cmd(ReturnAsk::Whole, OnShortfall::Reject), &a, &original, 160, 0, &[OwnLot { lot_id: 1, expired: 0 }], 0, open).unwrap();
        assert_eq!(plan.moves, [LotMove { lot_id: 1, coins: -60 }, LotMove { lot_id: 2, coins: -40 }]);
        assert_eq!((plan.entry.coins, plan.entry.balance_after, plan.lifetime_delta, plan.remaining), (-100, 60, -100, 0));
    }

    #[test]
    fn coins_that_expired_from_the_own_lot_are_not_taken_twice() {
        let (a, original) = allocation(100);
        let whole = cmd(ReturnAsk::Whole, OnShortfall::Reject);
        let (_, plan) = plan_take_back(&whole, &a, &original, 50, 0, &[OwnLot { lot_id: 1, expired: 70 }], 0, vec![lot(2, 50, None)]).unwrap();
        assert_eq!(plan.moves, [LotMove { lot_id: 2, coins: -30 }]);
        assert_eq!(plan.entry.coins, -30);
        let (_, all_gone) = plan_take_back(&whole, &a, &original, 0, 0, &[OwnLot { lot_id: 1, expired: 100 }], 0, vec![]).unwrap();
        assert_eq!((all_gone.entry.coins, all_gone.moves.len()), (0, 0));
        assert!(matches!(
            plan_take_back(&whole, &a, &original, 10, 0, &[OwnLot { lot_id: 1, expired: 0 }], 0, vec![lot(2, 10, None)]),
            Err(Refusal::InsufficientBalance { needed: 100, available: 10, pending: 0, .. })
        ));
    }

    #[test]
    fn a_capped_return_takes_what_there_is_and_waives_the_rest() {
        let (a, original) = allocation(100);
        let capped = cmd(ReturnAsk::Coins(40), OnShortfall::Cap);
        let (plan, reverse) = plan_take_back(&capped, &a, &original, 25, 0, &[OwnLot { lot_id: 1, expired: 0 }], 0, vec![lot(1, 25, None)]).unwrap();
        assert_eq!((plan.take, plan.short, plan.remaining, plan.state), (25, 15, 60, AllocationState::Active));
        assert_eq!((reverse.entry.coins, reverse.entry.balance_after, reverse.moves.as_slice()), (-25, 0, &[LotMove { lot_id: 1, coins: -25 }][..]));
    }

    fn redemption(coins: i64) -> Original {
        Original { entry_id: 3, kind: RequestKind::Redeem, coins: -coins, event: None, coin_config_id: None }
    }

    #[test]
    fn giving_back_returns_each_lot_what_it_lost() {
        let taken = [Taken { lot_id: 5, coins: 10, expires_at: Some(9) }, Taken { lot_id: 2, coins: 20, expires_at: None }];
        let plan =
            plan_give_back(&cmd(ReturnAsk::Whole, OnShortfall::Reject), &redemption(30), &RequestId::parse("R1").unwrap(), (70, 0), &taken, (0, 0)).unwrap();
        assert_eq!(plan.moves, [LotMove { lot_id: 2, coins: 20 }, LotMove { lot_id: 5, coins: 10 }]);
        assert_eq!((plan.entry.coins, plan.entry.balance_after, plan.lifetime, plan.lifetime_delta, plan.remaining), (30, 100, Lifetime::Redeemed, -30, 0));
    }

    #[test]
    fn a_redemption_comes_back_in_parts_latest_expiring_first() {
        let name = RequestId::parse("R1").unwrap();
        let taken = [
            Taken { lot_id: 1, coins: 10, expires_at: Some(100) },
            Taken { lot_id: 2, coins: 10, expires_at: Some(300) },
            Taken { lot_id: 3, coins: 10, expires_at: None },
        ];
        let first = plan_give_back(&cmd(ReturnAsk::Coins(15), OnShortfall::Reject), &redemption(30), &name, (0, 0), &taken, (0, 0)).unwrap();
        assert_eq!(first.moves, [LotMove { lot_id: 2, coins: 5 }, LotMove { lot_id: 3, coins: 10 }]);
        assert_eq!(first.remaining, 15);
        let rest = plan_give_back(&cmd(ReturnAsk::Whole, OnShortfall::Reject), &redemption(30), &name, (15, 0), &taken, (15, 15)).unwrap();
        assert_eq!(rest.moves, [LotMove { lot_id: 1, coins: 10 }, LotMove { lot_id: 2, coins: 5 }]);
        assert_eq!((rest.entry.coins, rest.remaining), (15, 0));
        assert_eq!(
            plan_give_back(&cmd(ReturnAsk::Coins(1), OnShortfall::Reject), &redemption(30), &name, (30, 0), &taken, (30, 30)),
            Err(Refusal::AlreadyReversed(name.clone()))
        );
        assert_eq!(
            plan_give_back(&cmd(ReturnAsk::Coins(16), OnShortfall::Reject), &redemption(30), &name, (0, 0), &taken, (15, 15)),
            Err(Refusal::ReversalExceedsRemaining { original: name.clone(), remaining_coins: 15, remaining_minor: None })
        );
        assert_eq!(
            plan_give_back(&cmd(ReturnAsk::AmountMinor(5), OnShortfall::Reject), &redemption(30), &name, (0, 0), &taken, (0, 0)),
            Err(Refusal::AmountNotRecorded(name))
        );
    }
}
