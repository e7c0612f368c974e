//! Keeps this process's caches correct when other processes share the PostgreSQL database.
//!
//! - `NOTIFY coins_configs` for any configuration change, sent inside the changing transaction
//!   (delivered if and only if it commits, right after): every process clears its [`ConfigCache`].
//! - `NOTIFY coins_balances, '<user> <user> ...'` after balance changes: every process drops those
//!   users from its [`BalanceCache`] ('' drops everyone). These are sent *after* the commit, in
//!   batches, by one [`Notifier`] connection per process: a transaction that notifies takes a
//!   database-wide lock until its commit is flushed, so notifying from every writing transaction
//!   would serialise all commits (measured: one-transaction-per-allocation fell from 2.7k/s to
//!   0.7k/s). A notification can be lost (a crash right after the commit, a full notifier queue,
//!   a notifier connection failing mid-send); the balance cache's age limit, [`BALANCE_MAX_AGE`],
//!   bounds how long another process may serve the old balance.
//!
//! One dedicated connection per process LISTENs to both. It is pinged every second; once it is
//! found down (a failed or 2 s-late ping, so within about 3 s) both caches are switched off, so
//! reads go to the database, and they are emptied when listening resumes. Entries of both caches
//! also expire by age (4 s for configurations, 5 s for balances), the backstop for the seconds
//! before a dead connection is noticed. LISTEN needs a session: through a transaction-mode pooler
//! (pgbouncer) notifications never arrive, and only the age limits apply.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, NoTls};

use super::tiers::SchemeTexts;
use crate::store::balance_cache::BalanceCache;
use crate::store::config_cache::ConfigCache;

pub const CONFIGS_CHANNEL: &str = "coins_configs";
pub const BALANCES_CHANNEL: &str = "coins_balances";
/// PostgreSQL refuses payloads of 8,000 bytes or more; user ids are at most 64 bytes.
pub const PAYLOAD_BYTES_MAX: usize = 7_900;

const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long another process may serve a balance whose change notification was lost.
pub const BALANCE_MAX_AGE: Duration = Duration::from_secs(5);
/// Users waiting to be notified; beyond this, notifications are dropped (the age limit covers).
const NOTIFY_QUEUE_MAX: usize = 65_536;
/// Users gathered into one notifying transaction at most.
const NOTIFY_BATCH_MAX: usize = 4_096;

pub struct Caches {
    pub configs: ConfigCache,
    pub balances: BalanceCache,
    /// Tier schemes by their text: a pure memo, right whatever other processes do.
    pub schemes: SchemeTexts,
}

impl Caches {
    /// Both off until a listener turns them on.
    pub fn new() -> Self {
        Self { configs: ConfigCache::new(false), balances: BalanceCache::with_max_age(false, BALANCE_MAX_AGE), schemes: SchemeTexts::default() }
    }

    fn set_live(&self, live: bool) {
        self.configs.set_live(live);
        self.balances.set_live(live);
    }

    fn apply(&self, channel: &str, payload: &str) {
        match channel {
            CONFIGS_CHANNEL => self.configs.clear(),
            BALANCES_CHANNEL if payload.is_empty() => self.balances.invalidate_all(),
            BALANCES_CHANNEL => payload.split(' ').for_each(|user| self.balances.invalidate(user)),
            _ => {}
        }
    }
}

/// Aborts the listener when the store that started it is dropped.
pub struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(mut config: tokio_postgres::Config, caches: Arc<Caches>) -> Listener {
    // Named, so an operator can see it in pg_stat_activity (and the tests can cut it).
    config.application_name("coins-cache-listener");
    Listener(tokio::spawn(async move {
        loop {
            let why = listen(&config, &caches).await;
            caches.set_live(false);
            tracing::warn!(reason = %why, "cache invalidation listener down; caches off until it reconnects");
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }))
}

/// Listens until the connection fails; returns why.
async fn listen(config: &tokio_postgres::Config, caches: &Arc<Caches>) -> String {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return format!("connecting: {e}"),
    };
    let driver_caches = caches.clone();
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => driver_caches.apply(n.channel(), n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("connection: {e}"),
                None => return "connection closed".to_owned(),
            }
        }
    });
    let outcome: Result<String, String> = async {
        client.batch_execute(&format!("LISTEN {CONFIGS_CHANNEL}; LISTEN {BALANCES_CHANNEL}")).await.map_err(|e| format!("LISTEN: {e}"))?;
        caches.set_live(true);
        let mut ticker = tokio::time::interval(PING_INTERVAL);
        loop {
            tokio::select! {
                ended = &mut driver => return Err(ended.unwrap_or_else(|e| format!("driver task: {e}"))),
                _ = ticker.tick() => match tokio::time::timeout(PING_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("ping: {e}")),
                    Err(_) => return Err("ping timed out".to_owned()),
                },
            }
        }
    }
    .await;
    driver.abort();
    outcome.unwrap_or_else(|why: String| why)
}

/// Tells other processes (and, harmlessly, this one) whose balances changed, after the commit.
pub struct Notifier {
    queue: tokio::sync::mpsc::Sender<String>,
    _task: Listener,
}

impl Notifier {
    pub fn spawn(mut config: tokio_postgres::Config) -> Self {
        config.application_name("coins-cache-notifier");
        let (queue, mut rx) = tokio::sync::mpsc::channel::<String>(NOTIFY_QUEUE_MAX);
        let task = tokio::spawn(async move {
            loop {
                let why = notify_until_failure(&config, &mut rx).await;
                match why {
                    None => return,
                    Some(why) => tracing::warn!(reason = %why, "balance change notifier down; reconnecting"),
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        });
        Self { queue, _task: Listener(task) }
    }

    /// These users' balances changed in a committed transaction.
    pub fn changed<'a>(&self, users: impl IntoIterator<Item = &'a str>) {
        for user in users {
            if self.queue.try_send(user.to_owned()).is_err() {
                tracing::debug!("balance change notifier queue full; other processes rely on the cache age limit");
                return;
            }
        }
    }

    /// Changes whose users are not known: every process drops every cached balance.
    pub fn changed_unknown(&self) {
        let _ = self.queue.try_send(String::new());
    }
}

/// Sends queued notifications until the connection fails (`Some(why)`) or the queue closes.
async fn notify_until_failure(config: &tokio_postgres::Config, rx: &mut tokio::sync::mpsc::Receiver<String>) -> Option<String> {
    let (client, connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return Some(format!("connecting: {e}")),
    };
    let driver = tokio::spawn(connection);
    let outcome = async {
        // Nothing is lost by not waiting for the flush: the notification is only a hint.
        client.batch_execute("SET synchronous_commit = off").await.map_err(|e| format!("set up: {e}"))?;
        let stmt = client.prepare("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) AS p").await.map_err(|e| format!("prepare: {e}"))?;
        loop {
            let Some(first) = rx.recv().await else { return Ok(()) };
            let mut users = vec![first];
            while users.len() < NOTIFY_BATCH_MAX {
                match rx.try_recv() {
                    Ok(u) => users.push(u),
                    Err(_) => break,
                }
            }
            let payloads = if users.iter().any(String::is_empty) {
                vec![String::new()]
            } else {
                users.sort_unstable();
                users.dedup();
                payloads(users.iter().map(String::as_str))
            };
            client.execute(&stmt, &[&BALANCES_CHANNEL, &payloads]).await.map_err(|e| format!("notify: {e}"))?;
        }
    }
    .await;
    driver.abort();
    outcome.err()
}

/// Splits user ids into NOTIFY payloads under PostgreSQL's size limit.
pub fn payloads<'a>(users: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for user in users {
        if !current.is_empty() && current.len() + 1 + user.len() > PAYLOAD_BYTES_MAX {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(user);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_keep_every_user() {
        let users: Vec<String> = (0..1000).map(|i| format!("{i:0>64}")).collect();
        let chunks = payloads(users.iter().map(String::as_str));
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= PAYLOAD_BYTES_MAX));
        let back: Vec<&str> = chunks.iter().flat_map(|c| c.split(' ')).collect();
        assert_eq!(back, users.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(payloads(std::iter::empty()).is_empty());
    }
}
