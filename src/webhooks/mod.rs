//! Webhooks: every ledger change pushed to the business's endpoints, signed, at least
//! once, in ledger order per user and endpoint.
//!
//! - `sign.rs`: Standard Webhooks signatures (the secrets are made and sealed by `keys`);
//!   `target.rs`: which URLs and addresses may be sent to (SSRF).
//! - `worker.rs`: the delivery worker every `coins serve` runs.
//!
//! The outbox is written by the ledger's own transactions (`store::ledger::write_entry`); the
//! retry schedule and the disabling rule are `domain::webhooks`; the HTTP API is
//! `http::webhooks`, and the body an endpoint receives is `http::wire::events` (the app hands
//! the worker its encoder).

pub mod sign;
pub mod target;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::webhooks::RetryPolicy;
pub use crate::keys::SealingKey;
pub use target::TargetPolicy;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3_600_000;

/// The webhook settings of `coins serve`.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The server's key (`COINS_SECRET_KEY`): seals webhook signing secrets at rest and signs
    /// member links. `None` (PostgreSQL without the setting): neither webhooks nor member links
    /// can be made, and the worker does not run.
    pub key: Option<Arc<SealingKey>>,
    pub targets: TargetPolicy,
    /// Deliveries in flight at once, per process.
    pub concurrency: usize,
    /// A delivery must be answered (2xx) within this.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// How often an idle worker looks for due messages.
    pub poll: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("targets", &self.targets)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("poll", &self.poll)
            .finish()
    }
}

impl WebhookSettings {
    /// The README's defaults, without a key.
    pub fn standard() -> Self {
        Self {
            key: None,
            targets: TargetPolicy::default(),
            concurrency: 64,
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::standard(),
            poll: Duration::from_millis(100),
        }
    }

    /// For tests: a random key, and loopback receivers over plain HTTP allowed.
    pub fn for_tests() -> Self {
        Self {
            key: Some(Arc::new(SealingKey::random())),
            targets: TargetPolicy { allow_http: true, allow_private: true },
            poll: Duration::from_millis(20),
            ..Self::standard()
        }
    }
}

/// Parses `COINS_WEBHOOK_RETRY_SCHEDULE`: delays after each failed attempt, comma-separated, each
/// a number with `ms`, `s`, `m`, `h` or `d` (`5s,5m,30m,2h,5h,10h,10h`).
pub fn parse_schedule(text: &str) -> Result<Vec<i64>, String> {
    let bad = || format!("COINS_WEBHOOK_RETRY_SCHEDULE must be delays like 5s,5m,30m,2h,5h,10h,10h; got {text:?}");
    let delays = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let split = item.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (number, unit) = item.split_at(split);
            let n: i64 = number.parse().map_err(|_| bad())?;
            let unit_ms = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            n.checked_mul(unit_ms).filter(|ms| *ms <= 30 * 86_400_000).ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() || delays.len() > 50 {
        return Err(bad());
    }
    Ok(delays)
}

#[cfg(test)]
mod tests {
    #[test]
    fn schedules_parse_with_units() {
        assert_eq!(super::parse_schedule("5s, 5m,2h,1d,250ms").unwrap(), vec![5_000, 300_000, 7_200_000, 86_400_000, 250]);
        for bad in ["", "5", "5x", "s", "-5s", "99999d"] {
            assert!(super::parse_schedule(bad).is_err(), "{bad}");
        }
    }
}
