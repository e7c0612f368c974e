//! Keeps this process's caches correct when other processes share the PostgreSQL database.
//!
//! Writers send, inside the transaction that makes the change (so the message is delivered if and
//! only if the change commits, right after it):
//! - `NOTIFY coins_configs` for any configuration change: every process clears its
//!   [`ConfigCache`];
//! - `NOTIFY coins_balances, '<user> <user> ...'` for balance changes: every process drops those
//!   users from its [`BalanceCache`].
//!
//! One dedicated connection per process LISTENs to both. It is pinged every second; while it is
//! down (or not yet up) both caches are switched off, so reads go to the database, and they are
//! emptied when listening resumes, so a notification lost meanwhile cannot leave a stale entry.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, NoTls};

use super::balance_cache::BalanceCache;
use super::config_cache::ConfigCache;

pub const CONFIGS_CHANNEL: &str = "coins_configs";
pub const BALANCES_CHANNEL: &str = "coins_balances";
/// PostgreSQL refuses payloads of 8,000 bytes or more; user ids are at most 64 bytes.
pub const PAYLOAD_BYTES_MAX: usize = 7_900;

const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub struct Caches {
    pub configs: ConfigCache,
    pub balances: BalanceCache,
}

impl Caches {
    /// Both off until a listener turns them on.
    pub fn new() -> Self {
        Self { configs: ConfigCache::new(false), balances: BalanceCache::new(false) }
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
        client
            .batch_execute(&format!("LISTEN {CONFIGS_CHANNEL}; LISTEN {BALANCES_CHANNEL}"))
            .await
            .map_err(|e| format!("LISTEN: {e}"))?;
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
