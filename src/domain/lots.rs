//! Lots: the unspent coins of one credit, with their expiry. Pure rules for which lots a debit
//! consumes and for converting currency to coins.

use std::cmp::Ordering;

/// A lot with coins left that have not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenLot {
    pub lot_id: i64,
    pub remaining: i64,
    /// Unix ms; `None` never expires.
    pub expires_at: Option<i64>,
}

/// What a credit of `coins` leaves in its lot after paying the user's debt first (the part of
/// `balance` below zero): the rest of the credit, never less than nothing.
pub fn kept_after_debt(balance: i64, coins: i64) -> i64 {
    coins.min(balance.saturating_add(coins)).max(0)
}

/// Debits consume lots soonest expiry first; never-expiring lots last; among equal
/// expiry, the older lot (lower id) first.
pub fn debit_order(a: &OpenLot, b: &OpenLot) -> Ordering {
    match (a.expires_at, b.expires_at) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then(a.lot_id.cmp(&b.lot_id))
}

/// Takes `coins` from `lots` in the order given: `(lot_id, taken)` pairs, or `None` when the
/// lots hold fewer coins (then nothing is taken).
pub fn take(lots: impl IntoIterator<Item = OpenLot>, coins: i64) -> Option<Vec<(i64, i64)>> {
    let mut left = coins;
    let mut takes = Vec::new();
    for lot in lots {
        if left == 0 {
            break;
        }
        let n = lot.remaining.min(left);
        if n > 0 {
            takes.push((lot.lot_id, n));
            left -= n;
        }
    }
    (left == 0).then_some(takes)
}

/// Coins needed to cover `amount_minor` currency units at `minor_per_coin`, rounded up.
pub fn coins_for_minor(amount_minor: i64, minor_per_coin: i64) -> Option<i64> {
    if amount_minor < 1 || minor_per_coin < 1 {
        return None;
    }
    Some(amount_minor / minor_per_coin + i64::from(amount_minor % minor_per_coin != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lot(lot_id: i64, remaining: i64, expires_at: Option<i64>) -> OpenLot {
        OpenLot { lot_id, remaining, expires_at }
    }

    #[test]
    fn soonest_expiry_first_then_never_expiring_then_fifo() {
        let mut lots = [lot(1, 5, None), lot(2, 5, Some(30)), lot(3, 5, Some(10)), lot(4, 5, Some(10)), lot(5, 5, None)];
        lots.sort_by(debit_order);
        assert_eq!(lots.iter().map(|l| l.lot_id).collect::<Vec<_>>(), [3, 4, 2, 1, 5]);
    }

    #[test]
    fn take_is_all_or_nothing() {
        let lots = [lot(1, 3, Some(1)), lot(2, 4, None)];
        assert_eq!(take(lots, 5), Some(vec![(1, 3), (2, 2)]));
        assert_eq!(take(lots, 7), Some(vec![(1, 3), (2, 4)]));
        assert_eq!(take(lots, 8), None);
    }

    #[test]
    fn currency_rounds_up_to_whole_coins() {
        assert_eq!(coins_for_minor(100, 25), Some(4));
        assert_eq!(coins_for_minor(101, 25), Some(5));
        assert_eq!(coins_for_minor(1, 100), Some(1));
        assert_eq!(coins_for_minor(0, 100), None);
    }

    proptest! {
        #[test]
        fn take_moves_exactly_the_coins_asked_and_never_more_than_a_lot_holds(
            remaining in proptest::collection::vec(0i64..50, 0..8), coins in 1i64..200
        ) {
            let lots: Vec<OpenLot> = remaining.iter().enumerate().map(|(i, r)| lot(i as i64, *r, None)).collect();
            let total: i64 = remaining.iter().sum();
            match take(lots.clone(), coins) {
                Some(takes) => {
                    prop_assert!(coins <= total);
                    prop_assert_eq!(takes.iter().map(|t| t.1).sum::<i64>(), coins);
                    for (id, n) in takes {
                        prop_assert!(n >= 1 && n <= lots[id as usize].remaining);
                    }
                }
                None => prop_assert!(coins > total),
            }
        }

        #[test]
        fn rounding_up_covers_the_amount_with_less_than_one_coin_to_spare(minor in 1i64..1_000_000, rate in 1i64..10_000) {
            let coins = coins_for_minor(minor, rate).unwrap();
            prop_assert!(coins * rate >= minor);
            prop_assert!((coins - 1) * rate < minor);
        }
    }
}
