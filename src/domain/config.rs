//! Coin configurations: how many coins an event earns, and for whom.

use super::earn::{AmountType, EarnRule, EarnTerms, Rounding};
use super::refusal::Refusal;
use super::{CoinConfigId, Coins, CompanyId, EventName};

/// `DEFAULT` applies to an event for every company; `CUSTOM` overrides it for one company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    Default,
    Custom,
}

impl ConfigKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DEFAULT" => Some(Self::Default),
            "CUSTOM" => Some(Self::Custom),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "DEFAULT",
            Self::Custom => "CUSTOM",
        }
    }
}

/// Largest `validityDays` accepted: 100 years keeps `expires_at` far from i64 overflow.
pub const VALIDITY_DAYS_MAX: i64 = 36_500;
/// Largest cap accepted for `maxPerUser` / `maxPerUserPerDay`.
pub const CAP_MAX: i64 = 1_000_000_000;

/// Everything a client can set on a configuration. Create takes all of it; PATCH merges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValues {
    pub kind: ConfigKind,
    pub company_id: CompanyId,
    pub event: EventName,
    /// The coins a FIXED configuration earns; `None` for PERCENT.
    pub amount: Option<Coins>,
    pub earning: Earning,
    pub validity_days: Option<i64>,
    pub max_per_user_per_day: Option<i64>,
    pub max_per_user: Option<i64>,
    pub active: bool,
}

/// How a configuration earns beyond a fixed amount: a percentage of the purchase value, a minimum
/// spend, a cap, a rounding rule, a hold. The default is what every configuration did before:
/// `amount` coins, credited at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earning {
    pub amount_type: AmountType,
    /// PERCENT: basis points of the purchase value (100 = 1 %).
    pub rate_bps: Option<i64>,
    pub min_amount_minor: Option<i64>,
    pub max_coins_per_allocation: Option<i64>,
    pub rounding: Rounding,
    /// Days the coins are held (pending) before they can be spent; `None`: credited at once.
    pub pending_days: Option<i64>,
    /// Whether allocations earn the member's tier multiplier (the default) or not.
    pub tier_multiplier: bool,
}

impl Default for Earning {
    fn default() -> Self {
        Self {
            amount_type: AmountType::Fixed,
            rate_bps: None,
            min_amount_minor: None,
            max_coins_per_allocation: None,
            rounding: Rounding::Floor,
            pending_days: None,
            tier_multiplier: true,
        }
    }
}

/// Why configuration values do not fit together (worded at the HTTP edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarningProblem {
    /// FIXED without `amount`.
    AmountMissing,
    /// PERCENT with an `amount`.
    AmountWithPercent,
    /// PERCENT without `rateBps`.
    RateMissing,
    /// FIXED with a `rateBps`.
    RateWithFixed,
}

impl ConfigValues {
    /// The earning terms, when the values fit together: FIXED has an amount and no rate,
    /// PERCENT a rate and no amount.
    pub fn terms(&self) -> Result<EarnTerms, EarningProblem> {
        let e = &self.earning;
        let rule = match (e.amount_type, self.amount, e.rate_bps) {
            (AmountType::Fixed, Some(amount), None) => EarnRule::Fixed { amount: amount.get() },
            (AmountType::Fixed, None, _) => return Err(EarningProblem::AmountMissing),
            (AmountType::Fixed, Some(_), Some(_)) => return Err(EarningProblem::RateWithFixed),
            (AmountType::Percent, None, Some(rate_bps)) => EarnRule::Percent { rate_bps },
            (AmountType::Percent, Some(_), _) => return Err(EarningProblem::AmountWithPercent),
            (AmountType::Percent, None, None) => return Err(EarningProblem::RateMissing),
        };
        Ok(EarnTerms { rule, min_amount_minor: e.min_amount_minor, max_coins_per_allocation: e.max_coins_per_allocation, rounding: e.rounding })
    }

    /// At most one DEFAULT per event, at most one CUSTOM per (company, event); a
    /// configuration with these values would take the slot `existing` holds.
    pub fn duplicate_of(&self, existing: CoinConfigId) -> Refusal {
        Refusal::DuplicateConfig { existing, kind: self.kind, event: self.event.clone(), company: self.company_id.clone() }
    }
}

/// A stored configuration. `version` increases on every change (optimistic concurrency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinConfig {
    pub id: CoinConfigId,
    pub values: ConfigValues,
    pub version: i64,
}

/// The active CUSTOM configuration of the company for the event, else the active DEFAULT
/// one, else none. Inactive configurations are skipped, not treated as "no coins".
pub fn resolve<'a>(custom: Option<&'a CoinConfig>, default: Option<&'a CoinConfig>) -> Option<&'a CoinConfig> {
    custom.filter(|c| c.values.active && c.values.kind == ConfigKind::Custom).or(default.filter(|c| c.values.active && c.values.kind == ConfigKind::Default))
}

/// Milliseconds in one day, for `validityDays` and the per-day cap window.
pub const DAY_MS: i64 = 86_400_000;

/// When coins credited at `now_ms` under `validity_days` expire; `None` = never.
pub fn expiry_for(now_ms: i64, validity_days: Option<i64>) -> Option<i64> {
    validity_days.map(|d| now_ms + d * DAY_MS)
}

/// Start of the UTC day containing `now_ms`: the window of `maxPerUserPerDay`.
pub fn utc_day_start(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ConfigKind, active: bool, amount: i64) -> CoinConfig {
        CoinConfig {
            id: CoinConfigId::from_seq(amount),
            values: ConfigValues {
                kind,
                company_id: CompanyId::parse("C1").unwrap(),
                event: EventName::parse("E").unwrap(),
                amount: Coins::amount(amount),
                earning: Earning::default(),
                validity_days: None,
                max_per_user_per_day: None,
                max_per_user: None,
                active,
            },
            version: 1,
        }
    }

    #[test]
    fn custom_wins_over_default_and_inactive_ones_are_skipped() {
        let custom = cfg(ConfigKind::Custom, true, 7);
        let default = cfg(ConfigKind::Default, true, 5);
        assert_eq!(resolve(Some(&custom), Some(&default)).unwrap().values.amount, Coins::amount(7));
        let inactive = cfg(ConfigKind::Custom, false, 7);
        assert_eq!(resolve(Some(&inactive), Some(&default)).unwrap().values.amount, Coins::amount(5));
        let inactive_default = cfg(ConfigKind::Default, false, 5);
        assert_eq!(resolve(None, Some(&inactive_default)), None);
        assert_eq!(resolve(None, None), None);
    }

    #[test]
    fn day_windows_and_expiry_are_utc_milliseconds() {
        assert_eq!(utc_day_start(DAY_MS * 3 + 5), DAY_MS * 3);
        assert_eq!(expiry_for(1_000, Some(2)), Some(1_000 + 2 * DAY_MS));
        assert_eq!(expiry_for(1_000, None), None);
    }
}
