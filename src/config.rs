//! Typed settings resolved from the CLI (flags > env > defaults). Secrets are `SecretString`s, so
//! neither `Debug` nor logs can print them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::cli::{Cli, ServeArgs, Switch};
use crate::domain::lockout::LockoutPolicy;
use crate::domain::webhooks::RetryPolicy;
use crate::server::ConnectionLimits;
use crate::store::StoreOptions;
use crate::webhooks::{SealingKey, TargetPolicy, WebhookSettings};

/// Where the default SQLite database lives, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "coins-data/coins.db";

pub fn database_url(cli: &Cli) -> String {
    cli.database_url.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_SQLITE_PATH.to_owned())
}

/// How the store runs; `serving`: a long-lived server (PostgreSQL caches need a listener).
pub fn store_options(cli: &Cli, serving: bool) -> StoreOptions {
    StoreOptions { group_commit: cli.group_commit == Switch::On, listen: serving, wal_max_bytes: cli.sqlite_wal_max_mb * 1024 * 1024 }
}

/// A sustained rate and the burst allowed on top of it; a rate of 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// The rate limits `coins serve` applies (see `http::limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Every authenticated API call, per client (`COINS_RATE_LIMIT_PER_SEC`, `_BURST`).
    pub per_client: Rate,
    /// Token requests per presented client id (`COINS_TOKEN_RATE_LIMIT_PER_SEC`, `_BURST`).
    pub token_per_client: Rate,
    /// Token requests per source address (`COINS_TOKEN_IP_RATE_LIMIT_PER_SEC`, `_BURST`).
    pub token_per_address: Rate,
}

/// What `serve` needs beyond the database.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub token_ttl_secs: i64,
    pub lockout: LockoutPolicy,
    pub admin: Option<(String, SecretString)>,
    pub sweep_interval: Duration,
    pub connections: ConnectionLimits,
    pub request_timeout: Duration,
    pub rates: RateSettings,
    /// Where `/metrics` is also served without authentication, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub webhooks: WebhookSettings,
    pub member_link_ttl_secs: i64,
    pub public_url: Option<String>,
}

impl ServeSettings {
    pub fn from_args(args: &ServeArgs) -> Result<Self, String> {
        let admin = match (&args.admin_client_id, &args.admin_client_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some((id.clone(), SecretString::from(secret.clone()))),
            (None, None) => None,
            _ => return Err("COINS_ADMIN_CLIENT_ID and COINS_ADMIN_CLIENT_SECRET must be set together".into()),
        };
        Ok(Self {
            listen: args.listen,
            token_ttl_secs: args.token_ttl_secs,
            lockout: LockoutPolicy { max_failures: args.lockout_failures, lock_ms: args.lockout_secs * 1000 },
            admin,
            sweep_interval: Duration::from_secs(args.sweep_interval_secs),
            connections: ConnectionLimits {
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                header_read: Duration::from_secs(args.header_read_timeout_secs),
                idle: Duration::from_secs(args.idle_timeout_secs),
            },
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            rates: RateSettings {
                per_client: Rate { per_second: args.rate_limit_per_sec, burst: args.rate_limit_burst },
                token_per_client: Rate { per_second: args.token_rate_limit_per_sec, burst: args.token_rate_limit_burst },
                token_per_address: Rate { per_second: args.token_ip_rate_limit_per_sec, burst: args.token_ip_rate_limit_burst },
            },
            metrics_listen: args.metrics_listen,
            webhooks: WebhookSettings {
                key: args.secret_key.as_deref().map(SealingKey::from_base64).transpose().map_err(|e| e.to_string())?.map(Arc::new),
                targets: TargetPolicy { allow_http: args.webhook_allow_http, allow_private: args.webhook_allow_private },
                concurrency: usize::try_from(args.webhook_concurrency).unwrap_or(16),
                timeout: Duration::from_secs(args.webhook_timeout_secs),
                retry: RetryPolicy {
                    delays_ms: crate::webhooks::parse_schedule(&args.webhook_retry_schedule)?,
                    disable_after_ms: i64::try_from(args.webhook_disable_after_secs).unwrap_or(i64::MAX).saturating_mul(1000),
                },
                poll: Duration::from_millis(args.webhook_poll_ms),
            },
            member_link_ttl_secs: args.member_link_ttl_secs,
            public_url: match args.public_url.as_deref().filter(|u| !u.is_empty()) {
                Some(u) if url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some()) => Some(u.to_owned()),
                Some(u) => return Err(format!("COINS_PUBLIC_URL must be an absolute http(s) URL; got {u:?}")),
                None => None,
            },
        })
    }

    /// Defaults for tests and embedding: port 0, the README's defaults otherwise.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_ttl_secs: 3600,
            lockout: LockoutPolicy { max_failures: 5, lock_ms: 900_000 },
            admin: None,
            sweep_interval: Duration::from_secs(60),
            connections: ConnectionLimits { max_connections: 4096, header_read: Duration::from_secs(10), idle: Duration::from_secs(60) },
            request_timeout: Duration::from_secs(30),
            // Generous: the suite makes many tokens and calls from one address; the limits
            // themselves are tested with explicit settings.
            rates: RateSettings {
                per_client: Rate { per_second: 100_000, burst: 100_000 },
                token_per_client: Rate { per_second: 1_000, burst: 1_000 },
                token_per_address: Rate { per_second: 1_000, burst: 1_000 },
            },
            metrics_listen: None,
            webhooks: WebhookSettings::for_tests(),
            member_link_ttl_secs: 900,
            public_url: None,
        }
    }
}

/// The webhook key when `COINS_SECRET_KEY` is unset: on SQLite, a key file beside the database
/// (made on first use), so the default install needs no setup; on PostgreSQL none, since
/// processes on several machines must share one key and only the operator can give it to them.
pub fn default_secret_key(database_url: &str) -> Result<Option<Arc<SealingKey>>, String> {
    let Some(db) = crate::store::sqlite_path(database_url) else { return Ok(None) };
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    SealingKey::from_file(&dir.join("secret.key")).map(|k| Some(Arc::new(k))).map_err(|e| e.to_string())
}
