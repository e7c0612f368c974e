//! Coins-expiring-soon reminders: a company chooses up to three lead times ("30, 7 and 1 days
//! before"), and each member with unspent coins expiring at an instant hears about them once per
//! lead time, by the `coins.expiring` webhook event.
//!
//! The rules:
//! - A reminder of `d` days is due for coins expiring at `E` once `E − d days` has come and the
//!   coins have not expired yet. The sweeper looks at each expiry for each lead time once, at its
//!   first pass after `E − d days`, and sends the reminder then.
//! - When several lead times are due at that look, only the shortest is sent: the longer ones
//!   would say the same thing again. This happens when lead times are turned on (every expiry in
//!   the next `d` days is looked at, so coins five days from expiry, with reminders of 30, 7 and
//!   1 days, get the 7-day one — "5 days left" — and then the 1-day one), and when an endpoint
//!   for `coins.expiring` appears after a while without one (reminders wait for an endpoint).
//! - Coins credited (or activated) after `E − d days` are not looked at again for `d`: they get
//!   the shorter lead times still ahead.
//! - `coins` counts the coins still unspent when the reminder is sent (held coins excluded), and
//!   `daysLeft` the whole days left, rounded up.
//! - Each (company, user, expiry instant, lead time) is sent at most once, enforced by the
//!   database; the event's `webhook-id` is derived from it, so a receiver sees the same id even
//!   if it were ever queued twice.

use super::config::DAY_MS;

/// Lead times one company may set.
pub const LEAD_TIMES_MAX: usize = 3;
/// The longest lead time, in days.
pub const LEAD_DAYS_MAX: i64 = 365;
/// Expiry instants considered per lead time and sweeper page.
pub const PAGE_GROUPS: i64 = 500;

/// A company's lead times, validated: 1 to 365 days each, at most three, none repeated;
/// kept longest first. Empty: reminders are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadTimes(Vec<u16>);

impl LeadTimes {
    pub fn parse(days: &[i64]) -> Result<Self, String> {
        if days.len() > LEAD_TIMES_MAX {
            return Err(format!("expiryReminderDays holds at most {LEAD_TIMES_MAX} values"));
        }
        let mut out = Vec::with_capacity(days.len());
        for &d in days {
            if !(1..=LEAD_DAYS_MAX).contains(&d) {
                return Err(format!("expiryReminderDays values must be whole days from 1 to {LEAD_DAYS_MAX}"));
            }
            let d = u16::try_from(d).map_err(|_| "out of range".to_owned())?;
            if out.contains(&d) {
                return Err(format!("expiryReminderDays repeats {d}"));
            }
            out.push(d);
        }
        Ok(Self::from_stored(out))
    }

    /// Lead times read back from storage (already validated when they were set).
    pub fn from_stored(mut days: Vec<u16>) -> Self {
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();
        Self(days)
    }

    pub fn days(&self) -> &[u16] {
        &self.0
    }
}

/// Whether a reminder of coins expiring at `expires_at_ms` would come too late at `now_ms` (its
/// delivery kept failing until the coins expired): it is not sent then.
pub fn is_stale(expires_at_ms: i64, now_ms: i64) -> bool {
    expires_at_ms <= now_ms
}

/// Whole days from `now_ms` to `expires_at_ms`, rounded up.
pub fn days_left(expires_at_ms: i64, now_ms: i64) -> i64 {
    (expires_at_ms - now_ms + DAY_MS - 1).div_euclid(DAY_MS)
}

/// The latest expiry instant the reminder of `lead_days` considers at `now_ms`.
pub fn horizon(lead_days: u16, now_ms: i64) -> i64 {
    now_ms.saturating_add(i64::from(lead_days) * DAY_MS)
}

/// Whether the reminder of `lead_days` is the one to send now for coins expiring at
/// `expires_at_ms`: it is due, the coins have not expired, and no shorter lead time of the
/// company is due too.
pub fn is_due(leads: &LeadTimes, lead_days: u16, expires_at_ms: i64, now_ms: i64) -> bool {
    let due = |d: u16| expires_at_ms <= horizon(d, now_ms);
    expires_at_ms > now_ms && due(lead_days) && !leads.days().iter().any(|&d| d < lead_days && due(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn lead_times_are_one_to_three_distinct_days_in_range() {
        assert_eq!(LeadTimes::parse(&[1, 30, 7]).unwrap().days(), &[30, 7, 1]);
        assert_eq!(LeadTimes::parse(&[]).unwrap().days(), &[] as &[u16]);
        assert_eq!(LeadTimes::parse(&[365]).unwrap().days(), &[365]);
        assert_eq!(LeadTimes::parse(&[30, 7, 1, 2]).unwrap_err(), "expiryReminderDays holds at most 3 values");
        assert_eq!(LeadTimes::parse(&[7, 7]).unwrap_err(), "expiryReminderDays repeats 7");
        for bad in [0, -1, 366, i64::MAX] {
            assert!(LeadTimes::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_left_rounds_up() {
        assert_eq!(days_left(NOW + 7 * DAY_MS, NOW), 7);
        assert_eq!(days_left(NOW + 7 * DAY_MS - 1, NOW), 7);
        assert_eq!(days_left(NOW + 6 * DAY_MS + 1, NOW), 7);
        assert_eq!(days_left(NOW + 1, NOW), 1);
    }

    #[test]
    fn only_the_shortest_due_lead_time_is_sent() {
        let leads = LeadTimes::parse(&[30, 7, 1]).unwrap();
        let at = |days: i64| NOW + days * DAY_MS;
        // 20 days left: the 30-day reminder only.
        assert!(is_due(&leads, 30, at(20), NOW));
        assert!(!is_due(&leads, 7, at(20), NOW));
        // 5 days left: 7, not 30; half a day left: 1, neither 7 nor 30.
        assert!(!is_due(&leads, 30, at(5), NOW) && is_due(&leads, 7, at(5), NOW));
        assert!(!is_due(&leads, 7, NOW + DAY_MS / 2, NOW) && is_due(&leads, 1, NOW + DAY_MS / 2, NOW));
        // Exactly on the boundary it is due; past expiry nothing is.
        assert!(is_due(&leads, 7, at(7), NOW));
        assert!(!is_due(&leads, 1, NOW, NOW) && !is_due(&leads, 1, NOW - 1, NOW));
        // Further away than the lead time: not yet.
        assert!(!is_due(&leads, 30, at(31), NOW));
    }
}
