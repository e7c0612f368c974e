//! A per-process cache of visible balances, so balance reads usually touch no database at all.
//!
//! SQLite: exact, because every write goes through this process's one writer thread (one `serve`
//! per SQLite file; the CLI never changes balances). PostgreSQL: after each commit that changes
//! balances the writing process invalidates here and queues a `NOTIFY coins_balances` naming the
//! users (see `postgres/listen.rs`); every process LISTENs, so another process's change is seen once
//! its notification arrives (milliseconds after the commit). A notification can be lost (a crash
//! right after the commit, a full notifier queue, a failed notifier connection, or a listener
//! whose death is not yet noticed), so PostgreSQL entries also expire after a maximum age. The
//! rules that keep it correct:
//! - the writer invalidates a user after the COMMIT that changed them and before answering, by
//!   removing the entry and bumping its shard's version (a notification does the same);
//! - a reader notes the shard's version before its database read and stores what it read only if
//!   the version has not moved, so a read that raced a commit is never cached;
//! - an entry holds only until the user's next lot expiry, when the visible balance drops by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::UserBalance;

const SHARDS: usize = 16;
/// Entries per shard before it is cleared wholesale: a cheap bound on memory (~100k users).
const SHARD_ENTRIES_MAX: usize = 8_192;

#[derive(Clone)]
struct Entry {
    /// `None`: the user has never been credited.
    balance: Option<UserBalance>,
    /// Unix ms of the user's next lot expiry; `None`: no lot will expire.
    valid_until_ms: Option<i64>,
    filled: std::time::Instant,
}

pub struct BalanceCache {
    shards: [Mutex<HashMap<String, Entry>>; SHARDS],
    versions: [AtomicU64; SHARDS],
    /// False while invalidations might be missed (PostgreSQL listener down): no hits, no fills.
    live: AtomicBool,
    /// Entries older than this are misses (a bound on staleness if an invalidation is lost).
    max_age: Option<std::time::Duration>,
}

impl Default for BalanceCache {
    fn default() -> Self {
        Self::new(true)
    }
}

fn shard_of(user: &str) -> usize {
    // FNV-1a: stable and cheap; the distribution only has to spread users across shards.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// A reader's claim to fill the cache after its database read.
pub struct Ticket {
    shard: usize,
    version: u64,
}

impl BalanceCache {
    pub fn new(live: bool) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            versions: std::array::from_fn(|_| AtomicU64::new(0)),
            live: AtomicBool::new(live),
            max_age: None,
        }
    }

    pub fn with_max_age(live: bool, max_age: std::time::Duration) -> Self {
        Self { max_age: Some(max_age), ..Self::new(live) }
    }

    /// Turns the cache on (emptied first: invalidations may have been missed while off) or off.
    pub fn set_live(&self, live: bool) {
        if live {
            self.invalidate_all();
        }
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.invalidate_all();
        }
    }

    /// The cached balance if it is still exact at `now_ms`.
    pub fn get(&self, user: &str, now_ms: i64) -> Option<Option<UserBalance>> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let shard = self.shards[shard_of(user)].lock().unwrap_or_else(|p| p.into_inner());
        let hit = shard
            .get(user)
            .filter(|e| e.valid_until_ms.is_none_or(|t| now_ms < t))
            .filter(|e| self.max_age.is_none_or(|age| e.filled.elapsed() < age))
            .map(|e| e.balance.clone());
        crate::metrics::cache("balance", hit.is_some());
        hit
    }

    /// Take before reading the database.
    pub fn ticket(&self, user: &str) -> Ticket {
        let shard = shard_of(user);
        Ticket { shard, version: self.versions[shard].load(Ordering::SeqCst) }
    }

    /// Stores what was read, unless a commit touched the shard since the ticket was taken.
    pub fn fill(&self, user: &str, ticket: Ticket, balance: Option<UserBalance>, valid_until_ms: Option<i64>) {
        let mut shard = self.shards[ticket.shard].lock().unwrap_or_else(|p| p.into_inner());
        if self.versions[ticket.shard].load(Ordering::SeqCst) != ticket.version || !self.live.load(Ordering::SeqCst) {
            return;
        }
        if shard.len() >= SHARD_ENTRIES_MAX {
            shard.clear();
        }
        shard.insert(user.to_owned(), Entry { balance, valid_until_ms, filled: std::time::Instant::now() });
    }

    /// After a commit that changed this user's balance.
    pub fn invalidate(&self, user: &str) {
        let i = shard_of(user);
        let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        self.versions[i].fetch_add(1, Ordering::SeqCst);
        shard.remove(user);
    }

    /// After a commit whose users are not listed (redemptions, reversals, expiry, anything else).
    pub fn invalidate_all(&self) {
        for i in 0..SHARDS {
            let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
            self.versions[i].fetch_add(1, Ordering::SeqCst);
            shard.clear();
        }
    }
}
