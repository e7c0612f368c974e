//! Limits for greedy clients: a token bucket per API client on every
//! authenticated call, and on the token endpoint one per presented client id and one per source
//! address (so neither one client id nor one address can hammer the slow Argon2 checks; the
//! lockout of `domain/lockout.rs` is separate and unchanged). A refused call is `429 RATE_LIMITED` with
//! `Retry-After`. Buckets of keys not seen for a while are forgotten by [`RateLimits::forget_idle`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub use crate::config::{Rate, RateSettings};

/// The quota of a rate; `None` (a rate of 0) turns the limit off.
fn quota(rate: Rate) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(1))?;
    Some(Quota::per_second(per_second).allow_burst(burst))
}

pub struct RateLimits {
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    token_per_client: Option<DefaultKeyedRateLimiter<String>>,
    token_per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// How long to wait before the next call would be let through: whole seconds, at least one.
fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero())
}

fn check<K: std::hash::Hash + Eq + Clone>(limiter: Option<&DefaultKeyedRateLimiter<K>>, key: &K) -> Result<(), u64> {
    match limiter {
        Some(l) => l.check_key(key).map_err(|not_until| retry_after(not_until.wait_time_from(DefaultClock::default().now()))),
        None => Ok(()),
    }
}

impl RateLimits {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            per_client: quota(settings.per_client).map(RateLimiter::keyed),
            token_per_client: quota(settings.token_per_client).map(RateLimiter::keyed),
            token_per_address: quota(settings.token_per_address).map(RateLimiter::keyed),
        }
    }

    /// An authenticated API call; `Err(secs)`: refused, retry after `secs`.
    pub fn check_client(&self, client_id: &str) -> Result<(), u64> {
        match &self.per_client {
            Some(l) => check(Some(l), &client_id.to_owned()),
            None => Ok(()),
        }
    }

    /// A token request presenting `client_id`, from `address` (when known).
    pub fn check_token(&self, client_id: &str, address: Option<IpAddr>) -> Result<(), u64> {
        if let Some(ip) = address {
            check(self.token_per_address.as_ref(), &ip)?;
        }
        match &self.token_per_client {
            Some(l) => check(Some(l), &client_id.to_owned()),
            None => Ok(()),
        }
    }

    /// Drops the buckets that are full again (their keys idle): keeps memory bounded by the
    /// number of keys active within one burst period.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_client {
            l.retain_recent();
        }
        if let Some(l) = &self.token_per_client {
            l.retain_recent();
        }
        if let Some(l) = &self.token_per_address {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_next_call_waits_and_a_zero_rate_is_off() {
        let rate = Rate { per_second: 1, burst: 3 };
        let limits = RateLimits::new(RateSettings { per_client: rate, token_per_client: rate, token_per_address: rate });
        for _ in 0..3 {
            assert_eq!(limits.check_client("a"), Ok(()));
        }
        assert_eq!(limits.check_client("a"), Err(1));
        assert_eq!(limits.check_client("b"), Ok(()), "buckets are per client");
        let off = Rate { per_second: 0, burst: 0 };
        let open = RateLimits::new(RateSettings { per_client: off, token_per_client: off, token_per_address: off });
        assert!((0..10_000).all(|_| open.check_client("a").is_ok()));
        assert_eq!(retry_after(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
    }
}
