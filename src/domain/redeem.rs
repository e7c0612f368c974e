//! Redemption: coins spent against a purchase, named in coins or in currency, taken
//! from the user's unexpired lots soonest expiry first; exactly-once on the request id.

use super::ledger::{EntryKind, LotMove, NewEntry, RequestKind, StoredRequest};
use super::lots::{self, OpenLot};
use super::refusal::Refusal;
use super::{Coins, CompanyId, RequestId, UserId};

/// Largest `amountMinor` a redemption accepts (10^15 minor units: far above any purchase).
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;
/// Largest `minorUnitsPerCoin` accepted.
pub const MINOR_UNITS_PER_COIN_MAX: i64 = 1_000_000_000;
/// Until set: INR, 100 minor units (1 coin = ₹1).
pub const DEFAULT_CURRENCY: &str = "INR";
pub const DEFAULT_MINOR_UNITS_PER_COIN: i64 = 100;

/// What one coin is worth for a company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinValue {
    /// `None`: the installation-wide default.
    pub company: Option<CompanyId>,
    pub currency: String,
    pub minor_units_per_coin: i64,
}

impl CoinValue {
    /// The value in force when none was ever set.
    pub fn builtin() -> Self {
        Self { company: None, currency: DEFAULT_CURRENCY.to_owned(), minor_units_per_coin: DEFAULT_MINOR_UNITS_PER_COIN }
    }
}

/// How a redemption names its amount: exactly one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemAmount {
    Coins(Coins),
    /// Currency minor units; the coins needed are rounded up at the company's coin value.
    Minor(i64),
}

impl RedeemAmount {
    /// What a replay must repeat besides the user; stored with the request.
    pub fn fingerprint(self) -> String {
        match self {
            RedeemAmount::Coins(c) => format!("coins={c}"),
            RedeemAmount::Minor(m) => format!("amountMinor={m}"),
        }
    }

    /// `(coins, amountMinor)` at this coin value; `amountMinor` is what was asked for when
    /// redeeming by currency, and `coins × minorUnitsPerCoin` when redeeming by coins.
    pub fn at(self, minor_per_coin: i64) -> Result<(i64, i64), Refusal> {
        match self {
            RedeemAmount::Coins(c) => Ok((c.get(), c.get().checked_mul(minor_per_coin).ok_or(Refusal::AmountTooLarge)?)),
            RedeemAmount::Minor(m) => Ok((lots::coins_for_minor(m, minor_per_coin).ok_or(Refusal::AmountTooLarge)?, m)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemCmd {
    pub company: CompanyId,
    pub user: UserId,
    pub request_id: RequestId,
    pub amount: RedeemAmount,
    pub now_ms: i64,
}

/// What a redemption answers; stored with the request so a replay repeats it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemReceipt {
    pub request_id: RequestId,
    pub coins: i64,
    pub currency: String,
    pub amount_minor: i64,
    pub balance: i64,
}

/// A request id seen before: a replay if it was this same redemption, else a conflict.
pub fn answer_repeat(prev: &StoredRequest, cmd: &RedeemCmd) -> Result<(), Refusal> {
    let same = prev.kind == RequestKind::Redeem && prev.user == cmd.user && prev.fingerprint == cmd.amount.fingerprint();
    if same { Ok(()) } else { Err(Refusal::RequestIdConflict(cmd.request_id.clone())) }
}

/// What a redemption writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemPlan {
    pub entry: NewEntry,
    pub moves: Vec<LotMove>,
    pub receipt: RedeemReceipt,
}

/// Decides a redemption from the user's stored balance (after due lots were expired), the coin
/// value in force and the user's open lots: the coins are taken in debit order, all or nothing.
pub fn plan_redemption(cmd: &RedeemCmd, balance: i64, pending: i64, value: &CoinValue, mut open: Vec<OpenLot>) -> Result<RedeemPlan, Refusal> {
    let (coins, amount_minor) = cmd.amount.at(value.minor_units_per_coin)?;
    open.sort_by(lots::debit_order);
    let available: i64 = open.iter().map(|l| l.remaining).sum();
    let takes = lots::take(open, coins).ok_or_else(|| Refusal::InsufficientBalance { user: cmd.user.clone(), needed: coins, available, pending })?;
    let balance = balance - coins;
    Ok(RedeemPlan {
        entry: NewEntry {
            kind: EntryKind::Redeem,
            coins: -coins,
            balance_after: balance,
            event: None,
            request_id: Some(cmd.request_id.clone()),
            coin_config_id: None,
            expires_at: None,
            order_id: None,
            amount_minor: None,
            original_request_id: None,
            pending_coins: 0,
            pending_after: pending,
            effective_at: None,
            reason: None,
            client_id: None,
        },
        moves: takes.into_iter().map(|(lot_id, n)| LotMove { lot_id, coins: -n }).collect(),
        receipt: RedeemReceipt { request_id: cmd.request_id.clone(), coins, currency: value.currency.clone(), amount_minor, balance },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(amount: RedeemAmount) -> RedeemCmd {
        RedeemCmd { company: CompanyId::parse("C").unwrap(), user: UserId::parse("U").unwrap(), request_id: RequestId::parse("R").unwrap(), amount, now_ms: 0 }
    }

    fn lot(lot_id: i64, remaining: i64, expires_at: Option<i64>) -> OpenLot {
        OpenLot { lot_id, remaining, expires_at }
    }

    #[test]
    fn redemptions_take_soonest_expiring_lots_first_and_round_currency_up() {
        let value = CoinValue { company: None, currency: "INR".into(), minor_units_per_coin: 25 };
        let plan = plan_redemption(&cmd(RedeemAmount::Minor(101)), 12, 0, &value, vec![lot(1, 8, None), lot(2, 4, Some(9))]).unwrap();
        assert_eq!(plan.receipt.coins, 5);
        assert_eq!(plan.receipt.amount_minor, 101);
        assert_eq!(plan.moves, [LotMove { lot_id: 2, coins: -4 }, LotMove { lot_id: 1, coins: -1 }]);
        assert_eq!((plan.entry.coins, plan.entry.balance_after, plan.receipt.balance), (-5, 7, 7));
    }

    #[test]
    fn a_short_balance_or_an_overflowing_amount_is_refused() {
        let value = CoinValue::builtin();
        let coins = RedeemAmount::Coins(Coins::amount(9).unwrap());
        assert_eq!(
            plan_redemption(&cmd(coins), 8, 0, &value, vec![lot(1, 8, None)]),
            Err(Refusal::InsufficientBalance { user: UserId::parse("U").unwrap(), needed: 9, available: 8, pending: 0 })
        );
        let huge = CoinValue { minor_units_per_coin: i64::MAX, ..CoinValue::builtin() };
        assert_eq!(plan_redemption(&cmd(coins), 9, 0, &huge, vec![lot(1, 9, None)]), Err(Refusal::AmountTooLarge));
    }
}
