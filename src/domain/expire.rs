//! Expiry: lots past their expiry leave the balance through one `EXPIRE` entry each.

use super::ledger::{EntryKind, LotMove, NewEntry};

/// A lot of the user with coins left and its expiry passed, with what its credit said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueLot {
    pub lot_id: i64,
    pub remaining: i64,
    pub expires_at: i64,
    pub event: Option<String>,
    pub coin_config_id: Option<String>,
}

/// The `EXPIRE` entries for the due lots, soonest expiry first, each with the move that empties
/// its lot; `balance` is the stored balance after them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpiryPlan {
    pub entries: Vec<(NewEntry, LotMove)>,
    pub balance: i64,
    pub expired: i64,
}

impl ExpiryPlan {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Writes off every due lot from a stored balance of `balance` (held coins, `pending`, stay as
/// they are). An `EXPIRE` entry has no request id and carries the lot's expiry, event and
/// configuration.
pub fn plan_expiry(balance: i64, pending: i64, mut due: Vec<DueLot>) -> ExpiryPlan {
    due.sort_by_key(|l| (l.expires_at, l.lot_id));
    let mut plan = ExpiryPlan { entries: Vec::with_capacity(due.len()), balance, expired: 0 };
    for lot in due.into_iter().filter(|l| l.remaining > 0) {
        plan.balance -= lot.remaining;
        plan.expired += lot.remaining;
        let entry = NewEntry {
            kind: EntryKind::Expire,
            coins: -lot.remaining,
            balance_after: plan.balance,
            event: lot.event,
            request_id: None,
            coin_config_id: lot.coin_config_id,
            expires_at: Some(lot.expires_at),
            order_id: None,
            amount_minor: None,
            original_request_id: None,
            pending_coins: 0,
            pending_after: pending,
            effective_at: None,
            reason: None,
            client_id: None,
        };
        plan.entries.push((entry, LotMove { lot_id: lot.lot_id, coins: -lot.remaining }));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(lot_id: i64, remaining: i64, expires_at: i64) -> DueLot {
        DueLot { lot_id, remaining, expires_at, event: Some("E".into()), coin_config_id: None }
    }

    #[test]
    fn due_lots_expire_soonest_first_with_a_running_balance() {
        let plan = plan_expiry(20, 0, vec![due(2, 5, 30), due(1, 3, 10), due(3, 0, 5)]);
        let rows: Vec<(i64, i64, i64)> = plan.entries.iter().map(|(e, m)| (m.lot_id, e.coins, e.balance_after)).collect();
        assert_eq!(rows, [(1, -3, 17), (2, -5, 12)]);
        assert_eq!((plan.balance, plan.expired), (12, 8));
        assert!(plan_expiry(4, 0, vec![]).is_empty());
    }
}
