//! Webhooks: which ledger entries a subscription receives, when a failed delivery is
//! tried again, when an endpoint that keeps failing is disabled, and which target addresses are
//! refused. Pure rules; the store and the delivery worker apply them.

use std::net::IpAddr;

use super::ledger::EntryKind;

/// The event types a subscription can ask for, and their bit in a subscription's stored mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The spendable balance went up now (an immediate credit).
    Allocated,
    /// Coins credited on hold: not spendable until they activate.
    Pending,
    /// Held coins became spendable.
    Activated,
    /// Held coins were returned before they activated.
    Canceled,
    Redeemed,
    Reversed,
    Expired,
    /// A staff adjustment, a credit or a debit.
    Adjusted,
    /// A reminder: a user's coins expire soon (not a ledger entry).
    Expiring,
    /// A member's status tier went up, down, or was renewed (not a ledger entry).
    TierUpgraded,
    TierDowngraded,
    TierRenewed,
    /// Sent by `POST .../test` only; never subscribed to.
    Test,
}

impl EventType {
    pub const SUBSCRIBABLE: [EventType; 12] = [
        EventType::Allocated,
        EventType::Redeemed,
        EventType::Reversed,
        EventType::Expired,
        EventType::Pending,
        EventType::Activated,
        EventType::Canceled,
        EventType::Adjusted,
        EventType::Expiring,
        EventType::TierUpgraded,
        EventType::TierDowngraded,
        EventType::TierRenewed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Allocated => "coins.allocated",
            EventType::Pending => "coins.pending",
            EventType::Activated => "coins.activated",
            EventType::Canceled => "coins.canceled",
            EventType::Redeemed => "coins.redeemed",
            EventType::Reversed => "coins.reversed",
            EventType::Expired => "coins.expired",
            EventType::Adjusted => "coins.adjusted",
            EventType::Expiring => "coins.expiring",
            EventType::TierUpgraded => "tier.upgraded",
            EventType::TierDowngraded => "tier.downgraded",
            EventType::TierRenewed => "tier.renewed",
            EventType::Test => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Allocated,
            Self::Pending,
            Self::Activated,
            Self::Canceled,
            Self::Redeemed,
            Self::Reversed,
            Self::Expired,
            Self::Adjusted,
            Self::Expiring,
            Self::TierUpgraded,
            Self::TierDowngraded,
            Self::TierRenewed,
            Self::Test,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// The event a ledger entry is reported as: an allocation on hold is `coins.pending`, not
    /// `coins.allocated` (which keeps meaning "the balance went up now").
    pub fn of_entry(kind: EntryKind, pending_coins: i64) -> Self {
        match kind {
            EntryKind::Allocate if pending_coins > 0 => EventType::Pending,
            EntryKind::Allocate => EventType::Allocated,
            EntryKind::Activate => EventType::Activated,
            EntryKind::Cancel => EventType::Canceled,
            EntryKind::Redeem => EventType::Redeemed,
            EntryKind::Reverse => EventType::Reversed,
            EntryKind::Expire => EventType::Expired,
            EntryKind::Adjust => EventType::Adjusted,
        }
    }

    /// The event a tier change is reported as.
    pub fn of_tier_change(kind: super::tiers::ChangeKind) -> Self {
        match kind {
            super::tiers::ChangeKind::Upgraded => EventType::TierUpgraded,
            super::tiers::ChangeKind::Downgraded => EventType::TierDowngraded,
            super::tiers::ChangeKind::Renewed => EventType::TierRenewed,
        }
    }

    pub fn bit(self) -> i64 {
        match self {
            EventType::Allocated => 1,
            EventType::Redeemed => 2,
            EventType::Reversed => 4,
            EventType::Expired => 8,
            EventType::Pending => 16,
            EventType::Activated => 32,
            EventType::Canceled => 64,
            EventType::Adjusted => 128,
            EventType::Expiring => 256,
            EventType::TierUpgraded => 512,
            EventType::TierDowngraded => 1024,
            EventType::TierRenewed => 2048,
            EventType::Test => 0,
        }
    }
}

/// The subscribed event types as stored (a bit mask).
pub fn mask_of(events: &[EventType]) -> i64 {
    events.iter().fold(0, |m, e| m | e.bit())
}

pub fn events_of(mask: i64) -> Vec<EventType> {
    EventType::SUBSCRIBABLE.into_iter().filter(|e| mask & e.bit() != 0).collect()
}

/// How failed deliveries are retried and when endpoints are given up on (the settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delays after the 1st, 2nd, ... failed attempt, in ms; the message fails after the last.
    pub delays_ms: Vec<i64>,
    /// An endpoint whose deliveries have all failed for this long is disabled.
    pub disable_after_ms: i64,
}

impl RetryPolicy {
    /// Svix's schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (27.6 h in all).
    pub fn standard() -> Self {
        let secs = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
        Self { delays_ms: secs.iter().map(|s| s * 1000).collect(), disable_after_ms: 5 * 86_400_000 }
    }
}

/// When a message that failed its `attempts`-th attempt (1-based) at `now_ms` is tried next,
/// or `None` when it has failed for good. `jitter` in [0, 1) spreads retries by up to ±10%.
pub fn next_attempt(policy: &RetryPolicy, attempts: i64, now_ms: i64, jitter: f64) -> Option<i64> {
    let delay = *policy.delays_ms.get(usize::try_from(attempts - 1).ok()?)?;
    let spread = (delay as f64 * 0.2 * (jitter.clamp(0.0, 1.0) - 0.5)) as i64;
    Some(now_ms + delay + spread)
}

/// After a failed delivery: whether the endpoint, failing since `failing_since_ms`, is disabled.
pub fn should_disable(policy: &RetryPolicy, failing_since_ms: i64, now_ms: i64) -> bool {
    now_ms - failing_since_ms >= policy.disable_after_ms
}

/// Addresses a webhook may not target unless private targets are allowed (SSRF): loopback,
/// private, link-local, unspecified, multicast, broadcast, shared (CGNAT), documentation and
/// unique-local ranges, and IPv4 addresses mapped into IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10, shared address space
                || a == 0
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_schedule_retries_for_more_than_a_day_then_gives_up() {
        let p = RetryPolicy::standard();
        let mut now = 0;
        for attempts in 1..=7 {
            now = next_attempt(&p, attempts, now, 0.5).unwrap();
        }
        assert_eq!(now, (5 + 300 + 1_800 + 7_200 + 18_000 + 36_000 + 36_000) * 1000);
        assert!(now > 86_400_000);
        assert_eq!(next_attempt(&p, 8, now, 0.5), None);
        let early = next_attempt(&p, 2, 0, 0.0).unwrap();
        let late = next_attempt(&p, 2, 0, 0.999).unwrap();
        assert!(early >= 270_000 && late <= 330_000 && early < late, "jitter within ±10%");
    }

    #[test]
    fn endpoints_failing_for_five_days_are_disabled() {
        let p = RetryPolicy::standard();
        assert!(!should_disable(&p, 0, 5 * 86_400_000 - 1));
        assert!(should_disable(&p, 0, 5 * 86_400_000));
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn event_masks_round_trip() {
        let events = [EventType::Allocated, EventType::Expired];
        assert_eq!(events_of(mask_of(&events)), events);
        assert_eq!(EventType::parse("coins.reversed"), Some(EventType::Reversed));
        assert_eq!(EventType::of_entry(EntryKind::Redeem, 0), EventType::Redeemed);
        // An allocation on hold is not "the balance went up now".
        assert_eq!(EventType::of_entry(EntryKind::Allocate, 0), EventType::Allocated);
        assert_eq!(EventType::of_entry(EntryKind::Allocate, 40), EventType::Pending);
        assert_eq!(EventType::of_entry(EntryKind::Activate, -40), EventType::Activated);
        assert_eq!(EventType::of_entry(EntryKind::Cancel, -40), EventType::Canceled);
        let every = EventType::SUBSCRIBABLE;
        assert_eq!(events_of(mask_of(&every)), every, "every subscribable event has a bit of its own");
    }
}
