//! Earning on purchase value: how many coins one allocation earns, in exact integer arithmetic.
//!
//! A configuration earns either a fixed number of coins (`FIXED`, as every configuration did
//! before) or a share of what was paid (`PERCENT`, `rateBps` basis points of `amountMinor`,
//! converted to coins at the company's coin value), with an optional minimum spend, a cap per
//! allocation and a rounding rule. Tiers and campaigns scale the result by a multiplier in basis
//! points (10,000 = ×1), or a campaign adds a fixed bonus. The product of the factors is computed
//! in `i128` and rounded once:
//!
//! ```text
//! PERCENT  exact = amountMinor × rateBps × multiplierBps / (10^8 × minorUnitsPerCoin)
//! FIXED    exact = amount × multiplierBps / 10^4
//! coins    = min(round(exact), maxCoinsPerAllocation) + bonusCoins;  0 when amountMinor < minAmountMinor
//! ```
//!
//! Everything a refund needs is recorded with the credit as a [`Calculation`]: a later refund
//! recomputes from it ([`Calculation::earn_on`]), never from the configuration or coin value in
//! force then.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `rateBps`, `multiplierBps`: basis points; 10,000 is 100 % (or ×1).
pub const BPS_ONE: i64 = 10_000;
/// Largest `rateBps`: 10,000 % of the purchase value.
pub const RATE_BPS_MAX: i64 = 1_000_000;
/// Largest `amountMinor` (a purchase value, in currency minor units): 10^13.
pub const AMOUNT_MINOR_MAX: i64 = 10_000_000_000_000;
/// Largest multiplier a tier or campaign may apply: ×100.
pub const MULTIPLIER_BPS_MAX: i64 = 1_000_000;
/// Decimal places `exact` is written with at most (the value itself is never rounded from it).
pub const EXACT_DECIMALS_MAX: u32 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmountType {
    /// `amount` coins per allocation.
    Fixed,
    /// `rateBps` of the purchase value.
    Percent,
}

impl AmountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "FIXED",
            Self::Percent => "PERCENT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Fixed, Self::Percent].into_iter().find(|t| t.as_str() == s)
    }
}

/// How a fractional number of coins becomes whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Down: the customer never gets a coin the rate does not cover.
    Floor,
    /// To the nearest coin, halves up.
    HalfUp,
}

impl Rounding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Floor => "FLOOR",
            Self::HalfUp => "HALF_UP",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Floor, Self::HalfUp].into_iter().find(|r| r.as_str() == s)
    }

    /// `num / den` rounded by this rule; `num ≥ 0`, `den ≥ 1`.
    fn apply(self, num: i128, den: i128) -> i128 {
        match self {
            Self::Floor => num / den,
            Self::HalfUp => (2 * num + den) / (2 * den),
        }
    }
}

/// Why an allocation earned nothing (it still claims its request id and order, state `ZERO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroReason {
    /// `amountMinor` below the configuration's `minAmountMinor`.
    BelowMinimum,
    /// The exact amount rounded to 0 coins.
    RoundedToZero,
}

impl ZeroReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BelowMinimum => "BELOW_MINIMUM",
            Self::RoundedToZero => "ROUNDED_TO_ZERO",
        }
    }
}

/// What limited the coins below the rounded exact amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CappedBy {
    MaxCoinsPerAllocation,
}

impl CappedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxCoinsPerAllocation => "MAX_COINS_PER_ALLOCATION",
        }
    }
}

/// How a configuration earns: the part of a configuration this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarnRule {
    Fixed { amount: i64 },
    Percent { rate_bps: i64 },
}

/// The earning terms of a configuration (validated when the configuration is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarnTerms {
    pub rule: EarnRule,
    pub min_amount_minor: Option<i64>,
    pub max_coins_per_allocation: Option<i64>,
    pub rounding: Rounding,
}

impl EarnTerms {
    /// The terms every configuration had before earning on purchase value: `amount` coins.
    pub fn fixed(amount: i64) -> Self {
        Self { rule: EarnRule::Fixed { amount }, min_amount_minor: None, max_coins_per_allocation: None, rounding: Rounding::Floor }
    }

    /// Whether an allocation under these terms must say what was paid: a percentage needs it,
    /// and so does a minimum spend, which cannot be checked without it.
    pub fn needs_amount(&self) -> bool {
        matches!(self.rule, EarnRule::Percent { .. }) || self.min_amount_minor.is_some()
    }
}

/// A non-negative rational number of coins, kept exact for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact {
    pub num: i128,
    pub den: i128,
}

impl fmt::Display for Exact {
    /// Decimal, with up to [`EXACT_DECIMALS_MAX`] places (truncated past that) and no trailing
    /// zeros: `9.9998`, `50`, `0.333333333333`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.num / self.den;
        let mut rest = self.num % self.den;
        write!(f, "{whole}")?;
        if rest == 0 {
            return Ok(());
        }
        let mut digits = String::new();
        for _ in 0..EXACT_DECIMALS_MAX {
            rest *= 10;
            digits.push(char::from(b'0' + (rest / self.den) as u8));
            rest %= self.den;
            if rest == 0 {
                break;
            }
        }
        write!(f, ".{}", digits.trim_end_matches('0'))
    }
}

/// Everything an allocation's coins were computed from, recorded with it so refunds recompute the
/// same way whatever the configuration or coin value says later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calculation {
    pub terms: EarnTerms,
    /// The purchase value earned on, when the allocation gave one.
    pub amount_minor: Option<i64>,
    pub minor_units_per_coin: i64,
    pub multiplier_bps: i64,
    /// A campaign's fixed bonus, added after the cap (0: none).
    pub bonus_coins: i64,
}

/// The outcome of a calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earned {
    /// Coins credited: rounded, multiplied, capped.
    pub coins: i64,
    /// The same without multipliers (what tiers qualify on).
    pub base_coins: i64,
    pub exact: Exact,
    pub capped_by: Option<CappedBy>,
    /// Set when `coins` is 0.
    pub zero: Option<ZeroReason>,
}

impl Calculation {
    /// The coins these terms earn on the recorded purchase value.
    pub fn earn(&self) -> Earned {
        self.earn_at(self.amount_minor, self.multiplier_bps)
    }

    /// The coins the recorded terms earn on `amount_minor` (what a purchase reduced by refunds
    /// keeps). Nothing bought earns nothing, whatever the rule.
    pub fn earn_on(&self, amount_minor: i64) -> i64 {
        if amount_minor <= 0 { 0 } else { self.earn_at(Some(amount_minor), self.multiplier_bps).coins }
    }

    /// Whether the recorded purchase value is below the minimum spend (it earns nothing at all).
    pub fn below_minimum(&self) -> bool {
        Self::below(self.amount_minor, self.terms.min_amount_minor)
    }

    fn below(amount_minor: Option<i64>, min: Option<i64>) -> bool {
        matches!((amount_minor, min), (Some(a), Some(min)) if a < min)
    }

    fn earn_at(&self, amount_minor: Option<i64>, multiplier_bps: i64) -> Earned {
        let exact = self.exact(amount_minor, multiplier_bps);
        let base = self.exact(amount_minor, BPS_ONE);
        let below_minimum = Self::below(amount_minor, self.terms.min_amount_minor);
        let round = |e: Exact| i64::try_from(self.terms.rounding.apply(e.num, e.den)).unwrap_or(i64::MAX);
        let (mut coins, mut base_coins) = if below_minimum { (0, 0) } else { (round(exact), round(base)) };
        let mut capped_by = None;
        if let Some(max) = self.terms.max_coins_per_allocation {
            if coins > max {
                coins = max;
                capped_by = Some(CappedBy::MaxCoinsPerAllocation);
            }
            base_coins = base_coins.min(max);
        }
        if !below_minimum {
            coins = coins.saturating_add(self.bonus_coins);
        }
        let zero = match coins {
            0 if below_minimum => Some(ZeroReason::BelowMinimum),
            0 => Some(ZeroReason::RoundedToZero),
            _ => None,
        };
        Earned { coins, base_coins, exact, capped_by, zero }
    }

    fn exact(&self, amount_minor: Option<i64>, multiplier_bps: i64) -> Exact {
        let m = i128::from(multiplier_bps);
        match self.terms.rule {
            EarnRule::Fixed { amount } => Exact { num: i128::from(amount) * m, den: i128::from(BPS_ONE) },
            EarnRule::Percent { rate_bps } => Exact {
                num: i128::from(amount_minor.unwrap_or(0)) * i128::from(rate_bps) * m,
                den: i128::from(BPS_ONE) * i128::from(BPS_ONE) * i128::from(self.minor_units_per_coin),
            },
        }
    }
}

/// The calculation as recorded with an allocation and shown on its record (`calculation`):
/// the inputs, the exact amount as a decimal string, and what refunds need to recompute it.
/// `minorUnitsPerCoin` is recorded when the allocation gave a purchase value (a fixed amount
/// involves no currency).
///
/// Stored as JSON without its absent fields (the record's wire form names every field): a
/// campaign or tiered allocation's row is written twice on its way into the ledger, and half of
/// a stored calculation was `null`s. A stored record that has them reads the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalculationRecord {
    pub amount_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_units_per_coin: Option<i64>,
    pub multiplier_bps: i64,
    pub exact: String,
    pub rounding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped_by: Option<String>,
    /// FIXED: the configured amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_coins_per_allocation: Option<i64>,
    /// The bonus campaign that applied, with its multiplier or its fixed bonus (`multiplierBps`
    /// includes the campaign's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_bps: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_bonus_coins: Option<i64>,
    /// The member's tier when it was more than ×1, with its multiplier (`multiplierBps`
    /// includes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_bps: Option<i64>,
}

impl CalculationRecord {
    pub fn of(calc: &Calculation, earned: &Earned) -> Self {
        let (amount, rate_bps) = match calc.terms.rule {
            EarnRule::Fixed { amount } => (Some(amount), None),
            EarnRule::Percent { rate_bps } => (None, Some(rate_bps)),
        };
        Self {
            amount_type: match calc.terms.rule {
                EarnRule::Fixed { .. } => AmountType::Fixed,
                EarnRule::Percent { .. } => AmountType::Percent,
            }
            .as_str()
            .to_owned(),
            amount_minor: calc.amount_minor,
            rate_bps,
            minor_units_per_coin: calc.amount_minor.map(|_| calc.minor_units_per_coin),
            multiplier_bps: calc.multiplier_bps,
            exact: earned.exact.to_string(),
            rounding: calc.terms.rounding.as_str().to_owned(),
            capped_by: earned.capped_by.map(|c| c.as_str().to_owned()),
            amount,
            min_amount_minor: calc.terms.min_amount_minor,
            max_coins_per_allocation: calc.terms.max_coins_per_allocation,
            campaign_id: None,
            campaign_bps: None,
            campaign_bonus_coins: None,
            tier_code: None,
            tier_bps: None,
        }
    }

    /// The record of a plain allocation (a fixed amount, nothing else), which stores none.
    pub fn plain(coins: i64) -> Self {
        let calc = Calculation { terms: EarnTerms::fixed(coins), amount_minor: None, minor_units_per_coin: 1, multiplier_bps: BPS_ONE, bonus_coins: 0 };
        Self::of(&calc, &calc.earn())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The calculation refunds recompute with.
    pub fn calculation(&self) -> Option<Calculation> {
        let rule = match AmountType::parse(&self.amount_type)? {
            AmountType::Fixed => EarnRule::Fixed { amount: self.amount? },
            AmountType::Percent => EarnRule::Percent { rate_bps: self.rate_bps? },
        };
        let terms = EarnTerms {
            rule,
            min_amount_minor: self.min_amount_minor,
            max_coins_per_allocation: self.max_coins_per_allocation,
            rounding: Rounding::parse(&self.rounding)?,
        };
        Some(Calculation {
            terms,
            amount_minor: self.amount_minor,
            minor_units_per_coin: self.minor_units_per_coin.unwrap_or(1),
            multiplier_bps: self.multiplier_bps,
            bonus_coins: self.campaign_bonus_coins.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn percent(rate_bps: i64, amount_minor: i64, rounding: Rounding) -> Calculation {
        Calculation {
            terms: EarnTerms { rule: EarnRule::Percent { rate_bps }, min_amount_minor: None, max_coins_per_allocation: None, rounding },
            amount_minor: Some(amount_minor),
            minor_units_per_coin: 100,
            multiplier_bps: BPS_ONE,
            bonus_coins: 0,
        }
    }

    #[test]
    fn two_percent_of_499_99_is_9_floored_and_10_half_up() {
        let floor = percent(200, 49_999, Rounding::Floor).earn();
        assert_eq!((floor.coins, floor.base_coins, floor.exact.to_string()), (9, 9, "9.9998".to_owned()));
        let half_up = percent(200, 49_999, Rounding::HalfUp).earn();
        assert_eq!((half_up.coins, half_up.exact.to_string()), (10, "9.9998".to_owned()));
    }

    #[test]
    fn half_up_rounds_halves_up_and_less_down() {
        assert_eq!(percent(100, 250, Rounding::HalfUp).earn().coins, 0); // 0.025 coins
        assert_eq!(percent(5_000, 100, Rounding::HalfUp).earn().coins, 1); // exactly 0.5
        assert_eq!(percent(4_999, 100, Rounding::HalfUp).earn().coins, 0); // 0.4999
        assert_eq!(percent(15_000, 100, Rounding::HalfUp).earn().coins, 2); // 1.5
    }

    #[test]
    fn a_minimum_spend_a_cap_and_rounding_to_zero_are_told_apart() {
        let mut calc = percent(1_000, 50_000, Rounding::Floor); // 10 % of 500.00 = 50 coins
        calc.terms.min_amount_minor = Some(60_000);
        let below = calc.earn();
        assert_eq!((below.coins, below.base_coins, below.zero), (0, 0, Some(ZeroReason::BelowMinimum)));
        calc.terms.min_amount_minor = Some(50_000);
        calc.terms.max_coins_per_allocation = Some(30);
        let capped = calc.earn();
        assert_eq!((capped.coins, capped.capped_by, capped.zero), (30, Some(CappedBy::MaxCoinsPerAllocation), None));
        let tiny = percent(1, 99, Rounding::Floor).earn();
        assert_eq!((tiny.coins, tiny.zero), (0, Some(ZeroReason::RoundedToZero)));
    }

    #[test]
    fn a_multiplier_scales_coins_but_not_base_coins() {
        let mut calc = percent(200, 49_999, Rounding::Floor);
        calc.multiplier_bps = 15_000;
        let earned = calc.earn();
        assert_eq!((earned.coins, earned.base_coins, earned.exact.to_string()), (14, 9, "14.9997".to_owned()));
        let fixed = Calculation { terms: EarnTerms::fixed(7), amount_minor: None, minor_units_per_coin: 100, multiplier_bps: 12_500, bonus_coins: 0 };
        assert_eq!((fixed.earn().coins, fixed.earn().base_coins, fixed.earn().exact.to_string()), (8, 7, "8.75".to_owned()));
    }

    #[test]
    fn a_bonus_comes_on_top_of_the_cap_and_goes_with_the_whole_purchase() {
        let mut calc = percent(1_000, 50_000, Rounding::Floor); // 10 % of 500.00 = 50 coins
        calc.terms.max_coins_per_allocation = Some(30);
        calc.bonus_coins = 20;
        let e = calc.earn();
        assert_eq!((e.coins, e.base_coins, e.capped_by), (50, 30, Some(CappedBy::MaxCoinsPerAllocation)));
        assert_eq!((calc.earn_on(10_000), calc.earn_on(0)), (30, 0), "10 + 20 on a fifth kept; nothing on nothing");
        calc.terms.min_amount_minor = Some(20_000);
        assert_eq!(calc.earn_on(19_999), 0, "below the minimum spend: no bonus either");
        let tiny = Calculation { bonus_coins: 5, ..percent(1, 99, Rounding::Floor) }.earn();
        assert_eq!((tiny.coins, tiny.base_coins, tiny.zero), (5, 0, None), "a bonus lifts a purchase that rounded to nothing");
    }

    #[test]
    fn the_exact_amount_is_written_without_floating_point() {
        assert_eq!(Exact { num: 1, den: 3 }.to_string(), "0.333333333333");
        assert_eq!(Exact { num: 50, den: 1 }.to_string(), "50");
        assert_eq!(Exact { num: 10_000, den: 800 }.to_string(), "12.5");
    }

    #[test]
    fn the_largest_inputs_do_not_overflow() {
        let mut calc = percent(RATE_BPS_MAX, AMOUNT_MINOR_MAX, Rounding::HalfUp);
        calc.minor_units_per_coin = 1;
        calc.multiplier_bps = MULTIPLIER_BPS_MAX;
        assert_eq!(calc.earn().coins, 100_000_000_000_000_000);
    }

    #[test]
    fn nothing_left_of_a_purchase_earns_nothing_even_at_a_fixed_amount() {
        let fixed = Calculation { terms: EarnTerms::fixed(50), amount_minor: Some(1_000), minor_units_per_coin: 100, multiplier_bps: BPS_ONE, bonus_coins: 0 };
        assert_eq!((fixed.earn_on(1), fixed.earn_on(0)), (50, 0));
    }

    #[test]
    fn the_record_keeps_what_a_refund_needs_and_reads_back_the_same() {
        let mut calc = percent(200, 49_999, Rounding::HalfUp);
        calc.terms.max_coins_per_allocation = Some(8);
        let record = CalculationRecord::of(&calc, &calc.earn());
        assert_eq!(
            record.to_json(),
            r#"{"amountType":"PERCENT","amountMinor":49999,"rateBps":200,"minorUnitsPerCoin":100,"multiplierBps":10000,"exact":"9.9998","rounding":"HALF_UP","cappedBy":"MAX_COINS_PER_ALLOCATION","maxCoinsPerAllocation":8}"#
        );
        assert_eq!(CalculationRecord::parse(&record.to_json()).and_then(|r| r.calculation()), Some(calc));
        assert_eq!(CalculationRecord::plain(50).to_json(), r#"{"amountType":"FIXED","multiplierBps":10000,"exact":"50","rounding":"FLOOR","amount":50}"#);
        // Records stored before absent fields were left out read the same.
        let stored = r#"{"amountType":"PERCENT","amountMinor":49999,"rateBps":200,"minorUnitsPerCoin":100,"multiplierBps":10000,"exact":"9.9998","rounding":"HALF_UP","cappedBy":"MAX_COINS_PER_ALLOCATION","amount":null,"minAmountMinor":null,"maxCoinsPerAllocation":8,"campaignId":null,"campaignBps":null,"campaignBonusCoins":null}"#;
        assert_eq!(CalculationRecord::parse(stored), Some(record));
        let stored = r#"{"amountType":"FIXED","amountMinor":null,"rateBps":null,"minorUnitsPerCoin":null,"multiplierBps":30000,"exact":"3","rounding":"FLOOR","cappedBy":null,"amount":1,"minAmountMinor":null,"maxCoinsPerAllocation":null,"campaignId":"CMP1","campaignBps":20000,"campaignBonusCoins":null,"tierCode":"GOLD","tierBps":15000}"#;
        let old = CalculationRecord::parse(stored).expect("a record with nulls");
        assert_eq!(
            (old.campaign_id.as_deref(), old.campaign_bps, old.tier_code.as_deref(), old.amount_minor),
            (Some("CMP1"), Some(20_000), Some("GOLD"), None)
        );
        assert_eq!(CalculationRecord::parse(&old.to_json()), Some(old));
    }

    proptest! {
        #[test]
        fn floor_never_exceeds_the_exact_amount_and_half_up_is_within_half_a_coin(
            amount in 1i64..=AMOUNT_MINOR_MAX, rate in 1i64..=RATE_BPS_MAX, minor in 1i64..=10_000, mult in BPS_ONE..=MULTIPLIER_BPS_MAX
        ) {
            for rounding in [Rounding::Floor, Rounding::HalfUp] {
                let calc = Calculation { minor_units_per_coin: minor, multiplier_bps: mult, ..percent(rate, amount, rounding) };
                let e = calc.earn();
                let (coins, num, den) = (i128::from(e.coins), e.exact.num, e.exact.den);
                match rounding {
                    Rounding::Floor => prop_assert!(coins * den <= num && num < (coins + 1) * den),
                    Rounding::HalfUp => prop_assert!((2 * coins - 1) * den <= 2 * num && 2 * num < (2 * coins + 1) * den),
                }
                prop_assert!(e.base_coins <= e.coins);
            }
        }

        #[test]
        fn earning_never_falls_as_the_amount_rises(a in 0i64..10_000_000, b in 0i64..10_000_000, rate in 1i64..50_000, min in proptest::option::of(1i64..1_000_000)) {
            let mut calc = percent(rate, a.max(b), Rounding::HalfUp);
            calc.terms.min_amount_minor = min;
            prop_assert!(calc.earn_on(a.min(b)) <= calc.earn_on(a.max(b)));
        }
    }
}
