//! What the dashboard reports: how ledger entries are bucketed
//! into the daily roll-up the write path keeps (`ledger_daily`), the four movements of the
//! overview, and money as people read it. Pure; the stores fetch and write.

use super::ledger::EntryKind;

pub const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) an entry made at `ms` counts for.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The roll-up's two sums of an entry: coins credited and coins debited (both ≥ 0).
pub fn credit_debit(coins: i64) -> (i64, i64) {
    if coins >= 0 { (coins, 0) } else { (0, coins.saturating_neg()) }
}

/// One group of the roll-up: what entries of one type moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub credit: i64,
    pub debit: i64,
    pub entries: i64,
}

/// The five movements the overview shows, in coins (each ≥ 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Movements {
    /// Allocated.
    pub issued: i64,
    pub redeemed: i64,
    /// Given back or taken back by reversals, either way.
    pub reversed: i64,
    pub expired: i64,
    /// Added or taken by staff adjustments, either way.
    pub adjusted: i64,
}

impl Movements {
    /// Adds what entries of `kind` moved.
    pub fn add(&mut self, kind: EntryKind, m: Moved) {
        let total = m.credit.saturating_add(m.debit);
        let slot = match kind {
            // Coins are issued when they become spendable: at once, or when a hold ends.
            EntryKind::Allocate | EntryKind::Activate => &mut self.issued,
            EntryKind::Redeem => &mut self.redeemed,
            // A cancel moves no spendable coins; it counts with the returns.
            EntryKind::Reverse | EntryKind::Cancel => &mut self.reversed,
            EntryKind::Expire => &mut self.expired,
            EntryKind::Adjust => &mut self.adjusted,
        };
        *slot = slot.saturating_add(total);
    }
}

/// Decimal places of a currency's minor unit (ISO 4217); 2 for any not listed.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Groups of three digits, comma-separated: 1234567 → "1,234,567".
pub fn grouped(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// An amount in minor units as people read it: "INR 1,234.50".
pub fn money(currency: &str, minor: i128) -> String {
    let digits = minor_digits(currency);
    let unit = 10i128.pow(digits);
    let whole = grouped(minor / unit);
    let sign = if minor < 0 && whole == "0" { "-" } else { "" };
    if digits == 0 {
        format!("{currency} {sign}{whole}")
    } else {
        format!("{currency} {sign}{whole}.{:0width$}", (minor % unit).abs(), width = digits as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_negative_times_round_down() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn reversals_count_whichever_way_they_move() {
        let mut m = Movements::default();
        m.add(EntryKind::Reverse, Moved { credit: 30, debit: 20, entries: 2 });
        m.add(EntryKind::Allocate, Moved { credit: 100, debit: 0, entries: 1 });
        assert_eq!(m, Movements { issued: 100, redeemed: 0, reversed: 50, expired: 0, adjusted: 0 });
        assert_eq!(credit_debit(-7), (0, 7));
    }

    #[test]
    fn money_reads_as_people_write_it() {
        assert_eq!(money("INR", 123_456_789), "INR 1,234,567.89");
        assert_eq!(money("JPY", 1500), "JPY 1,500");
        assert_eq!(money("KWD", 1_005), "KWD 1.005");
        assert_eq!(money("USD", -5), "USD -0.05");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
    }
}
