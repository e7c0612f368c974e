//! Coin amounts. Balances and sums are 64-bit and checked: an operation that would overflow is
//! refused, never wrapped.

/// Largest amount one configuration may award or one request may move.
pub const AMOUNT_MAX: i64 = 1_000_000_000;

/// A whole, non-negative number of coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Coins(i64);

impl Coins {
    pub const ZERO: Coins = Coins(0);

    /// An amount a client may ask for: 1 ..= AMOUNT_MAX.
    pub fn amount(n: i64) -> Option<Self> {
        (1..=AMOUNT_MAX).contains(&n).then_some(Self(n))
    }

    /// A stored balance or lot remainder; never negative.
    pub fn from_stored(n: i64) -> Self {
        debug_assert!(n >= 0, "stored coin counts are never negative");
        Self(n)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Coins) -> Option<Coins> {
        self.0.checked_add(other.0).map(Coins)
    }

    pub fn checked_sub(self, other: Coins) -> Option<Coins> {
        self.0.checked_sub(other.0).filter(|n| *n >= 0).map(Coins)
    }
}

impl std::fmt::Display for Coins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_are_whole_coins_in_range() {
        assert_eq!(Coins::amount(0), None);
        assert_eq!(Coins::amount(-1), None);
        assert_eq!(Coins::amount(AMOUNT_MAX + 1), None);
        assert_eq!(Coins::amount(1).map(Coins::get), Some(1));
        assert_eq!(Coins::amount(AMOUNT_MAX).map(Coins::get), Some(AMOUNT_MAX));
    }

    #[test]
    fn arithmetic_refuses_overflow_and_negatives() {
        assert_eq!(Coins::from_stored(i64::MAX).checked_add(Coins::from_stored(1)), None);
        assert_eq!(Coins::from_stored(1).checked_sub(Coins::from_stored(2)), None);
        assert_eq!(Coins::from_stored(2).checked_sub(Coins::from_stored(2)), Some(Coins::ZERO));
    }

    proptest! {
        #[test]
        fn add_then_sub_is_identity(a in 0i64..i64::MAX / 2, b in 0i64..i64::MAX / 2) {
            let (a, b) = (Coins::from_stored(a), Coins::from_stored(b));
            prop_assert_eq!(a.checked_add(b).and_then(|s| s.checked_sub(b)), Some(a));
        }
    }
}
