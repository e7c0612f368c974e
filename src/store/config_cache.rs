//! Resolved allocation configurations, cached per process, so an allocation does not look its
//! configuration up in the database.
//!
//! What is cached is the *resolution*: for a (company, event), the active CUSTOM
//! configuration, else the active DEFAULT one, else none; and the company's bonus campaigns for
//! the event that had not ended when it was read (each allocation checks their windows against
//! its own time), the company's tier scheme, and what one of its coins is worth. A campaign,
//! tier scheme or coin value change is announced as a configuration change. The rules that keep
//! it correct:
//! - every configuration change made by this process clears the cache after its COMMIT and before
//!   it is answered, so it takes effect at once here;
//! - on PostgreSQL every configuration change also sends `NOTIFY coins_configs` inside its
//!   transaction; every process LISTENs and clears its cache on arrival (milliseconds after the
//!   commit). While that listening connection is down the cache is not used at all ("not live"),
//!   and it is cleared when listening resumes, so a lost notification cannot leave a stale entry;
//! - a reader notes the generation before its database read and stores what it read only if no
//!   clear happened meanwhile, so a read that raced a change is never cached;
//! - an entry older than [`MAX_AGE`] is a miss: a backstop should notifications stop arriving
//!   unnoticed (a dead connection is only detected by the next failed ping, ~3 s; LISTEN through
//!   a transaction-mode pooler never delivers at all).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::domain::CoinConfig;
use crate::domain::campaigns::Campaign;
use crate::domain::redeem::CoinValue;
use crate::domain::tiers::TierScheme;
use crate::store::ledger::Offers;

/// Entries kept before the cache is cleared wholesale (a cheap bound on memory: ~100 bytes each).
const ENTRIES_MAX: usize = 65_536;
/// Age after which an entry is read again, whatever the notifications said.
pub const MAX_AGE: Duration = Duration::from_secs(4);

/// How long after its end a campaign stays among a resolution's campaigns. What is cached must
/// not depend on which command happened to read it: a simulation at a future instant, or an
/// allocation stamped a moment before another but read after it, must not drop a campaign another
/// allocation still falls inside. Each allocation checks the window against its own time.
pub const ENDED_CAMPAIGNS_KEPT_MS: i64 = 3_600_000;

/// The instant a resolution's campaigns are read for: the earliest of the commands' times and
/// the clock's, less [`ENDED_CAMPAIGNS_KEPT_MS`].
pub fn campaigns_since(earliest_ms: i64) -> i64 {
    earliest_ms.min(crate::clock::system_now_ms()) - ENDED_CAMPAIGNS_KEPT_MS
}

/// What an allocation of a (company, event) resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// `None`: no active configuration applies.
    pub config: Option<CoinConfig>,
    /// The company's campaigns for the event that had not ended when read.
    pub campaigns: Arc<Vec<Campaign>>,
    /// The company's tier scheme.
    pub tiers: Option<Arc<TierScheme>>,
    /// What one of the company's coins is worth (its own value, else the installation's, else the
    /// built-in one); `None`
    /// when not read with the resolution, and the allocation reads it itself if it needs it.
    pub value: Option<CoinValue>,
    /// The events the company's enabled webhooks subscribe to, their masks OR-ed together;
    /// `None` when not read with the resolution (PostgreSQL, where another process may add a
    /// webhook without this one knowing at once), and every entry looks for subscribers itself.
    pub webhook_events: Option<i64>,
}

impl Resolved {
    #[cfg(test)]
    pub fn of(config: Option<CoinConfig>) -> Self {
        Self { config, ..Self::default() }
    }

    /// What may raise the allocation's coins beyond its configuration.
    pub(crate) fn offers(&self) -> Offers<'_> {
        Offers { campaigns: &self.campaigns, tiers: self.tiers.as_ref(), value: self.value.as_ref(), webhook_events: self.webhook_events }
    }
}

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: usize,
    /// company → event → (resolution, when read); nested so a lookup needs no allocation.
    by_company: HashMap<String, HashMap<String, (Resolved, Instant)>>,
}

pub struct ConfigCache {
    inner: Mutex<Inner>,
    live: AtomicBool,
}

impl ConfigCache {
    /// `live: false` until whoever keeps it correct across processes says otherwise.
    pub fn new(live: bool) -> Self {
        Self { inner: Mutex::default(), live: AtomicBool::new(live) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached resolution, or `None` on a miss (or while the cache is not live).
    pub fn get(&self, company: &str, event: &str) -> Option<Resolved> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let inner = self.lock();
        let hit = inner.by_company.get(company).and_then(|e| e.get(event)).filter(|(_, read_at)| read_at.elapsed() < MAX_AGE).map(|(v, _)| v.clone());
        crate::metrics::cache("config", hit.is_some());
        hit
    }

    /// Take before reading the database; pass to [`ConfigCache::fill`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Stores resolutions read from the database, unless the cache was cleared since `generation`.
    pub fn fill(&self, generation: u64, resolved: impl IntoIterator<Item = (String, String, Resolved)>) {
        let mut inner = self.lock();
        if inner.generation != generation || !self.live.load(Ordering::SeqCst) {
            return;
        }
        for (company, event, value) in resolved {
            if inner.entries >= ENTRIES_MAX {
                inner.by_company.clear();
                inner.entries = 0;
            }
            if inner.by_company.entry(company).or_default().insert(event, (value, Instant::now())).is_none() {
                inner.entries += 1;
            }
        }
    }

    /// After any configuration change (here or, by notification, in another process).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.by_company.clear();
        inner.entries = 0;
    }

    /// Turns the cache on (cleared first: changes may have been missed while off) or off.
    pub fn set_live(&self, live: bool) {
        if live {
            self.clear();
        }
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::ConfigValues;
    use crate::domain::{CoinConfigId, Coins, CompanyId, ConfigKind, EventName};

    fn config(amount: i64) -> CoinConfig {
        CoinConfig {
            id: CoinConfigId::from_seq(1),
            values: ConfigValues {
                kind: ConfigKind::Default,
                company_id: CompanyId::from_trusted("C".into()),
                event: EventName::from_trusted("E".into()),
                amount: Some(Coins::from_stored(amount)),
                earning: crate::domain::config::Earning::default(),
                validity_days: None,
                max_per_user_per_day: None,
                max_per_user: None,
                active: true,
            },
            version: 1,
        }
    }

    #[test]
    fn fills_hit_until_cleared() {
        let cache = ConfigCache::new(true);
        assert!(cache.get("C", "E").is_none());
        let g = cache.generation();
        cache.fill(g, [("C".to_owned(), "E".to_owned(), Resolved::of(Some(config(5)))), ("C".to_owned(), "F".to_owned(), Resolved::default())]);
        assert_eq!(cache.get("C", "E").unwrap().config.unwrap().values.amount.map(Coins::get), Some(5));
        assert_eq!(cache.get("C", "F"), Some(Resolved::default()), "a cached 'no configuration' is a hit");
        cache.clear();
        assert!(cache.get("C", "E").is_none());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_stored() {
        let cache = ConfigCache::new(true);
        let g = cache.generation();
        cache.clear(); // a change committed while the reader was reading
        cache.fill(g, [("C".to_owned(), "E".to_owned(), Resolved::of(Some(config(5))))]);
        assert!(cache.get("C", "E").is_none());
    }

    #[test]
    fn not_live_means_never_hit_and_resuming_starts_empty() {
        let cache = ConfigCache::new(true);
        let g = cache.generation();
        cache.fill(g, [("C".to_owned(), "E".to_owned(), Resolved::of(Some(config(5))))]);
        cache.set_live(false);
        assert!(cache.get("C", "E").is_none());
        let g = cache.generation();
        cache.fill(g, [("C".to_owned(), "E".to_owned(), Resolved::of(Some(config(6))))]);
        cache.set_live(true);
        assert!(cache.get("C", "E").is_none(), "nothing from the time without notifications survives");
    }
}
