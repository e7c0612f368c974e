//! Reversal: undoing an allocation (its coins taken back) or a redemption (its coins
//! given back to the lots they came from), at most once per original, exactly-once on the
//! reversal's own request id.

use super::ledger::{EntryKind, Lifetime, LotMove, NewEntry, RequestKind, StoredRequest};
use super::lots::{self, OpenLot};
use super::refusal::Refusal;
use super::{CompanyId, RequestId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseCmd {
    pub company: CompanyId,
    pub request_id: RequestId,
    pub original: RequestId,
    pub now_ms: i64,
}

/// What a reversal answers. `coins` is signed like its ledger entry: negative when an allocation
/// is taken back, positive when a redemption is given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseReceipt {
    pub request_id: RequestId,
    pub original_request_id: RequestId,
    pub coins: i64,
    pub balance: i64,
}

/// A request id seen before: a replay if it reversed this same original (by the same name: an
/// alias and the allocation it repeats are different names), else a conflict.
pub fn answer_repeat(prev: &StoredRequest, cmd: &ReverseCmd) -> Result<(), Refusal> {
    let same = prev.kind == RequestKind::Reverse && prev.fingerprint == cmd.original.as_str();
    if same { Ok(()) } else { Err(Refusal::RequestIdConflict(cmd.request_id.clone())) }
}

/// The original must exist in the company and not be a reversal itself.
pub fn check_original<'a>(original: Option<&'a StoredRequest>, cmd: &ReverseCmd) -> Result<&'a StoredRequest, Refusal> {
    match original {
        None => Err(Refusal::OriginalNotFound(cmd.original.clone())),
        Some(o) if o.kind == RequestKind::Reverse => Err(Refusal::NotReversible(cmd.original.clone())),
        Some(o) => Ok(o),
    }
}

/// The reversal could not claim its request id: either the id is taken (replay or conflict), or
/// another reversal of the same original holds the one-reversal-per-original slot.
pub fn answer_lost_claim(prev: Option<&StoredRequest>, cmd: &ReverseCmd) -> Result<(), Refusal> {
    match prev {
        Some(p) => answer_repeat(p, cmd),
        None => Err(Refusal::AlreadyReversed(cmd.original.clone())),
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

/// What a reversal writes before the coins it gave back to expired lots expire again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversePlan {
    pub entry: NewEntry,
    pub moves: Vec<LotMove>,
    pub lifetime: Lifetime,
    pub lifetime_delta: i64,
}

fn reverse_entry(cmd: &ReverseCmd, original: &Original, coins: i64, balance_after: i64) -> NewEntry {
    NewEntry {
        kind: EntryKind::Reverse,
        coins,
        balance_after,
        event: original.event.clone(),
        request_id: Some(cmd.request_id.clone()),
        coin_config_id: original.coin_config_id.clone(),
        expires_at: None,
        order_id: None,
        amount_minor: None,
    }
}

/// Takes an allocation back: the allocated coins less those that already expired from its own
/// lot (they left the balance once, through `EXPIRE`, and are never taken a second time); first
/// from its own lot, then from the user's other open lots in debit order, all or nothing.
pub fn plan_take_back(
    cmd: &ReverseCmd,
    user: &UserId,
    original: &Original,
    balance: i64,
    own: &[OwnLot],
    mut open: Vec<OpenLot>,
) -> Result<ReversePlan, Refusal> {
    let expired: i64 = own.iter().map(|l| l.expired).sum();
    let coins = (original.coins - expired).max(0);
    open.sort_by(lots::debit_order);
    let (first, rest): (Vec<OpenLot>, Vec<OpenLot>) = open.into_iter().partition(|l| own.iter().any(|o| o.lot_id == l.lot_id));
    let available: i64 = first.iter().chain(&rest).map(|l| l.remaining).sum();
    let takes =
        lots::take(first.into_iter().chain(rest), coins).ok_or_else(|| Refusal::InsufficientBalance { user: user.clone(), needed: coins, available })?;
    Ok(ReversePlan {
        entry: reverse_entry(cmd, original, -coins, balance - coins),
        moves: takes.into_iter().map(|(lot_id, n)| LotMove { lot_id, coins: -n }).collect(),
        lifetime: Lifetime::Earned,
        lifetime_delta: -coins,
    })
}

/// Gives a redemption back to the lots it took from, with their original expiry (coins returned
/// to a lot that expired meanwhile expire again at once, by the expiry that follows).
pub fn plan_give_back(cmd: &ReverseCmd, original: &Original, balance: i64, taken: &[LotMove]) -> ReversePlan {
    let coins = -original.coins;
    let mut moves: Vec<LotMove> = taken.iter().map(|m| LotMove { lot_id: m.lot_id, coins: -m.coins }).collect();
    moves.sort_by_key(|m| m.lot_id);
    ReversePlan { entry: reverse_entry(cmd, original, coins, balance + coins), moves, lifetime: Lifetime::Redeemed, lifetime_delta: -coins }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> ReverseCmd {
        ReverseCmd {
            company: CompanyId::parse("C").unwrap(),
            request_id: RequestId::parse("R2").unwrap(),
            original: RequestId::parse("R1").unwrap(),
            now_ms: 0,
        }
    }

    fn allocation(coins: i64) -> Original {
        Original { entry_id: 1, kind: RequestKind::Allocate, coins, event: Some("E".into()), coin_config_id: Some("WCC100001".into()) }
    }

    fn lot(lot_id: i64, remaining: i64, expires_at: Option<i64>) -> OpenLot {
        OpenLot { lot_id, remaining, expires_at }
    }

    #[test]
    fn taking_back_starts_with_the_allocations_own_lot() {
        let user = UserId::parse("U").unwrap();
        let open = vec![lot(1, 60, Some(50)), lot(2, 100, Some(10))];
        let plan = plan_take_back(&cmd(), &user, &allocation(100), 160, &[OwnLot { lot_id: 1, expired: 0 }], open).unwrap();
        assert_eq!(plan.moves, [LotMove { lot_id: 1, coins: -60 }, LotMove { lot_id: 2, coins: -40 }]);
        assert_eq!((plan.entry.coins, plan.entry.balance_after, plan.lifetime_delta), (-100, 60, -100));
    }

    #[test]
    fn coins_that_expired_from_the_own_lot_are_not_taken_twice() {
        let user = UserId::parse("U").unwrap();
        let plan = plan_take_back(&cmd(), &user, &allocation(100), 50, &[OwnLot { lot_id: 1, expired: 70 }], vec![lot(2, 50, None)]).unwrap();
        assert_eq!(plan.moves, [LotMove { lot_id: 2, coins: -30 }]);
        assert_eq!(plan.entry.coins, -30);
        let all_gone = plan_take_back(&cmd(), &user, &allocation(100), 0, &[OwnLot { lot_id: 1, expired: 100 }], vec![]).unwrap();
        assert_eq!((all_gone.entry.coins, all_gone.moves.len()), (0, 0));
        assert!(matches!(
            plan_take_back(&cmd(), &user, &allocation(100), 10, &[OwnLot { lot_id: 1, expired: 0 }], vec![lot(2, 10, None)]),
            Err(Refusal::InsufficientBalance { needed: 100, available: 10, .. })
        ));
    }

    #[test]
    fn giving_back_returns_each_lot_what_it_lost() {
        let original = Original { entry_id: 3, kind: RequestKind::Redeem, coins: -30, event: None, coin_config_id: None };
        let plan = plan_give_back(&cmd(), &original, 70, &[LotMove { lot_id: 5, coins: -10 }, LotMove { lot_id: 2, coins: -20 }]);
        assert_eq!(plan.moves, [LotMove { lot_id: 2, coins: 20 }, LotMove { lot_id: 5, coins: 10 }]);
        assert_eq!((plan.entry.coins, plan.entry.balance_after, plan.lifetime, plan.lifetime_delta), (30, 100, Lifetime::Redeemed, -30));
    }
}
