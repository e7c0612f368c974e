//! Staff adjustments: coins a loyalty team adds or takes by hand ("200 coins for the late
//! delivery", a balance imported from another system with its original expiry, a fraudulent
//! order's coins taken back), always with a reason and the client that made it, exactly-once on
//! the request id.
//!
//! A credit opens a lot of its own (never expiring unless `validityDays` or `expiresAt` says
//! otherwise; held first with `pendingDays`, its validity then counting from activation) and keeps
//! a record like an allocation's, so it is returned and activated the same way. A debit takes
//! coins soonest-expiring first, like a redemption, and is returned like one: its coins go back to
//! the lots they came from.

use super::allocate::NewLot;
use super::allocation::{AllocationState, OnShortfall};
use super::config::DAY_MS;
use super::ledger::{EntryKind, LotMove, NewEntry, RequestKind, StoredRequest};
use super::lots::{self, OpenLot};
use super::refusal::Refusal;
use super::{CompanyId, RequestId, UserId};

/// Longest reason accepted, in characters.
pub const REASON_MAX_CHARS: usize = 200;
/// Largest number of coins one adjustment moves (as for a configuration's amount).
pub const COINS_MAX: i64 = 1_000_000_000;

/// When an adjustment's credit expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustExpiry {
    Never,
    /// This many days after the coins become spendable.
    ValidityDays(i64),
    /// At this instant (Unix ms): a balance imported with its original expiry.
    At(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustCmd {
    pub company: CompanyId,
    pub user: UserId,
    pub request_id: RequestId,
    /// Signed, never zero: a credit when positive, a debit when negative.
    pub coins: i64,
    pub reason: String,
    pub expiry: AdjustExpiry,
    /// Credits only: held this many days before they can be spent.
    pub pending_days: Option<i64>,
    /// Whether the coins count towards a tier (kept for tiers; a credit only).
    pub qualifying: bool,
    pub on_shortfall: OnShortfall,
    /// The OAuth client that made it.
    pub client_id: String,
    pub now_ms: i64,
}

impl AdjustCmd {
    /// What a replay must repeat besides the user. Ids and reasons are on separate lines, so the
    /// parts cannot run together.
    pub fn fingerprint(&self) -> String {
        let expiry = match self.expiry {
            AdjustExpiry::Never => "never".to_owned(),
            AdjustExpiry::ValidityDays(d) => format!("validityDays {d}"),
            AdjustExpiry::At(ms) => format!("expiresAt {ms}"),
        };
        let pending = self.pending_days.map_or_else(|| "-".to_owned(), |d| d.to_string());
        format!("{} {expiry} pendingDays {pending} qualifying {} onShortfall {}\n{}", self.coins, self.qualifying, self.on_shortfall.as_str(), self.reason)
    }

    /// Checks what the request's fields mean together (the edge checked each on its own).
    pub fn check(&self) -> Result<(), String> {
        if self.coins == 0 || self.coins.abs() > COINS_MAX {
            return Err(format!("coins must be a non-zero integer between -{COINS_MAX} and {COINS_MAX}"));
        }
        if self.reason.trim().is_empty() || self.reason.chars().count() > REASON_MAX_CHARS {
            return Err(format!("reason must be 1 to {REASON_MAX_CHARS} characters, not only spaces"));
        }
        let credit_only = self.pending_days.is_some() || self.expiry != AdjustExpiry::Never || self.qualifying;
        if self.coins < 0 && credit_only {
            return Err("validityDays, expiresAt, pendingDays and qualifying apply to credits (positive coins) only".into());
        }
        if self.coins > 0 && self.on_shortfall != OnShortfall::Reject {
            return Err("onShortfall applies to debits (negative coins) only".into());
        }
        match self.expiry {
            AdjustExpiry::At(_) if self.pending_days.is_some() => {
                Err("expiresAt cannot be combined with pendingDays: give validityDays, counted from activation".into())
            }
            // Whether `expiresAt` is still in the future is decided with the request id known
            // (`plan_adjustment`): a retry of an import whose expiry has passed since replays.
            _ => Ok(()),
        }
    }
}

/// What an adjustment answers; stored with the request so a replay repeats it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustReceipt {
    pub request_id: RequestId,
    pub user: UserId,
    /// Signed like its entry: what it credited (held or not) or took.
    pub coins: i64,
    /// A debit with `onShortfall: CAP`: the coins the user did not have, not taken.
    pub coins_short: i64,
    pub reason: String,
    /// Held credits: when they become spendable.
    pub activates_at: Option<i64>,
    /// Immediate credits: when they expire (held ones: known at activation).
    pub expires_at: Option<i64>,
    pub balance: i64,
    pub pending_balance: i64,
}

/// A request id seen before: a replay if it was this same adjustment, else a conflict.
pub fn answer_repeat(prev: &StoredRequest, cmd: &AdjustCmd) -> Result<(), Refusal> {
    let same = prev.kind == RequestKind::Adjust && prev.user == cmd.user && prev.fingerprint == cmd.fingerprint();
    if same { Ok(()) } else { Err(Refusal::RequestIdConflict(cmd.request_id.clone())) }
}

/// What an adjustment writes: its entry, and a lot (a credit) or the lots it takes (a debit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustPlan {
    pub entry: NewEntry,
    pub lot: Option<NewLot>,
    pub moves: Vec<LotMove>,
    /// A credit's record: held or active.
    pub state: Option<AllocationState>,
    pub receipt: AdjustReceipt,
}

/// Decides an adjustment from the user's stored balance and held coins (after everything due
/// was activated and expired) and, for a debit, the user's open lots.
pub fn plan_adjustment(cmd: &AdjustCmd, balance: i64, pending: i64, mut open: Vec<OpenLot>) -> Result<AdjustPlan, Refusal> {
    let overflow = || Refusal::BalanceOverflow(cmd.user.clone());
    let mut entry = NewEntry {
        kind: EntryKind::Adjust,
        coins: 0,
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
        reason: Some(cmd.reason.clone()),
        client_id: Some(cmd.client_id.clone()),
    };
    let mut receipt = AdjustReceipt {
        request_id: cmd.request_id.clone(),
        user: cmd.user.clone(),
        coins: cmd.coins,
        coins_short: 0,
        reason: cmd.reason.clone(),
        activates_at: None,
        expires_at: None,
        balance,
        pending_balance: pending,
    };
    if cmd.coins > 0 {
        if matches!(cmd.expiry, AdjustExpiry::At(at) if at <= cmd.now_ms) {
            return Err(Refusal::ExpiryPassed);
        }
        let activates_at = cmd.pending_days.map(|d| cmd.now_ms + d * DAY_MS);
        let expires_at = match cmd.expiry {
            AdjustExpiry::Never => None,
            AdjustExpiry::ValidityDays(d) => Some(activates_at.unwrap_or(cmd.now_ms) + d * DAY_MS),
            AdjustExpiry::At(at) => Some(at),
        };
        let mut lot_coins = cmd.coins;
        if activates_at.is_some() {
            entry.pending_coins = cmd.coins;
            entry.pending_after = pending.checked_add(cmd.coins).ok_or_else(overflow)?;
        } else {
            entry.coins = cmd.coins;
            entry.balance_after = balance.checked_add(cmd.coins).ok_or_else(overflow)?;
            receipt.expires_at = expires_at;
            // It pays the user's debt first (a held credit does when it activates).
            lot_coins = lots::kept_after_debt(balance, cmd.coins);
        }
        entry.expires_at = expires_at;
        receipt.activates_at = activates_at;
        (receipt.balance, receipt.pending_balance) = (entry.balance_after, entry.pending_after);
        let state = if activates_at.is_some() { AllocationState::Pending } else { AllocationState::Active };
        let lot = Some(NewLot { coins: lot_coins, expires_at, pending_until: activates_at }).filter(|l| l.coins > 0);
        return Ok(AdjustPlan { entry, lot, moves: Vec::new(), state: Some(state), receipt });
    }
    let asked = -cmd.coins;
    open.sort_by(lots::debit_order);
    let available: i64 = open.iter().map(|l| l.remaining).sum();
    // What the debit takes in all, and (with NEGATIVE) what of it the lots do not hold: debt.
    let (coins, debt) = match cmd.on_shortfall {
        _ if asked <= available => (asked, 0),
        OnShortfall::Cap => (available, 0),
        OnShortfall::Negative => (asked, asked - available),
        OnShortfall::Reject => return Err(Refusal::InsufficientBalance { user: cmd.user.clone(), needed: asked, available, pending }),
    };
    let takes = lots::take(open, coins - debt).ok_or_else(|| Refusal::InsufficientBalance { user: cmd.user.clone(), needed: coins, available, pending })?;
    entry.coins = -coins;
    entry.balance_after = balance - coins;
    (receipt.coins, receipt.coins_short, receipt.balance) = (-coins, asked - coins, entry.balance_after);
    let moves = takes.into_iter().map(|(lot_id, n)| LotMove { lot_id, coins: -n }).collect();
    Ok(AdjustPlan { entry, lot: None, moves, state: None, receipt })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100 * DAY_MS;

    fn cmd(coins: i64) -> AdjustCmd {
        AdjustCmd {
            company: CompanyId::parse("C").unwrap(),
            user: UserId::parse("U").unwrap(),
            request_id: RequestId::parse("A1").unwrap(),
            coins,
            reason: "late delivery".into(),
            expiry: AdjustExpiry::Never,
            pending_days: None,
            qualifying: false,
            on_shortfall: OnShortfall::Reject,
            client_id: "support".into(),
            now_ms: NOW,
        }
    }

    fn lot(lot_id: i64, remaining: i64, expires_at: Option<i64>) -> OpenLot {
        OpenLot { lot_id, remaining, expires_at }
    }

    #[test]
    fn a_credit_opens_a_lot_with_the_expiry_given_and_a_held_one_counts_validity_from_activation() {
        let plan = plan_adjustment(&AdjustCmd { expiry: AdjustExpiry::At(NOW + 5), ..cmd(200) }, 10, 3, Vec::new()).unwrap();
        assert_eq!(plan.lot, Some(NewLot { coins: 200, expires_at: Some(NOW + 5), pending_until: None }));
        assert_eq!((plan.entry.kind, plan.entry.coins, plan.entry.balance_after, plan.entry.pending_after), (EntryKind::Adjust, 200, 210, 3));
        assert_eq!((plan.entry.reason.as_deref(), plan.entry.client_id.as_deref()), (Some("late delivery"), Some("support")));
        assert_eq!((plan.state, plan.receipt.expires_at, plan.receipt.balance), (Some(AllocationState::Active), Some(NOW + 5), 210));

        let held = plan_adjustment(&AdjustCmd { expiry: AdjustExpiry::ValidityDays(30), pending_days: Some(7), ..cmd(50) }, 10, 3, Vec::new()).unwrap();
        let activates = NOW + 7 * DAY_MS;
        assert_eq!(held.lot, Some(NewLot { coins: 50, expires_at: Some(activates + 30 * DAY_MS), pending_until: Some(activates) }));
        assert_eq!((held.entry.coins, held.entry.pending_coins, held.entry.balance_after, held.entry.pending_after), (0, 50, 10, 53));
        assert_eq!((held.state, held.receipt.activates_at, held.receipt.expires_at), (Some(AllocationState::Pending), Some(activates), None));
    }

    #[test]
    fn a_debit_takes_soonest_expiring_first_and_refuses_or_caps_a_shortfall() {
        let open = vec![lot(1, 8, None), lot(2, 4, Some(NOW + 9)), lot(3, 3, Some(NOW + 2))];
        let plan = plan_adjustment(&cmd(-9), 15, 0, open.clone()).unwrap();
        assert_eq!(plan.moves, [LotMove { lot_id: 3, coins: -3 }, LotMove { lot_id: 2, coins: -4 }, LotMove { lot_id: 1, coins: -2 }]);
        assert_eq!((plan.entry.coins, plan.entry.balance_after, plan.lot, plan.state), (-9, 6, None, None));
        assert_eq!(
            plan_adjustment(&cmd(-16), 15, 2, open.clone()),
            Err(Refusal::InsufficientBalance { user: UserId::parse("U").unwrap(), needed: 16, available: 15, pending: 2 })
        );
        let capped = plan_adjustment(&AdjustCmd { on_shortfall: OnShortfall::Cap, ..cmd(-20) }, 15, 0, open).unwrap();
        assert_eq!((capped.receipt.coins, capped.receipt.coins_short, capped.receipt.balance), (-15, 5, 0));
    }

    #[test]
    fn fields_that_do_not_fit_together_are_refused() {
        assert!(cmd(0).check().unwrap_err().starts_with("coins"));
        assert!(AdjustCmd { reason: "  ".into(), ..cmd(5) }.check().unwrap_err().starts_with("reason"));
        assert!(AdjustCmd { reason: "é".repeat(201), ..cmd(5) }.check().unwrap_err().starts_with("reason"));
        assert!(AdjustCmd { reason: "é".repeat(200), ..cmd(5) }.check().is_ok());
        assert!(AdjustCmd { pending_days: Some(1), ..cmd(-5) }.check().unwrap_err().contains("credits"));
        assert!(AdjustCmd { on_shortfall: OnShortfall::Cap, ..cmd(5) }.check().unwrap_err().starts_with("onShortfall"));
        assert_eq!(plan_adjustment(&AdjustCmd { expiry: AdjustExpiry::At(NOW), ..cmd(5) }, 0, 0, Vec::new()), Err(Refusal::ExpiryPassed));
        assert!(AdjustCmd { expiry: AdjustExpiry::At(NOW + 1), pending_days: Some(1), ..cmd(5) }.check().unwrap_err().contains("pendingDays"));
    }

    #[test]
    fn the_fingerprint_tells_every_field_apart() {
        let base = cmd(5);
        let variants = [
            AdjustCmd { coins: 6, ..base.clone() },
            AdjustCmd { reason: "other".into(), ..base.clone() },
            AdjustCmd { expiry: AdjustExpiry::ValidityDays(1), ..base.clone() },
            AdjustCmd { pending_days: Some(1), ..base.clone() },
            AdjustCmd { qualifying: true, ..base.clone() },
        ];
        for v in variants {
            assert_ne!(v.fingerprint(), base.fingerprint(), "{v:?}");
        }
        assert_eq!(AdjustCmd { client_id: "other".into(), now_ms: 1, ..base.clone() }.fingerprint(), base.fingerprint());
    }
}
