//! Typed settings resolved from the CLI (flags > env > defaults). Secrets are wrapped so that
//! neither `Debug` nor logs can print them.

use std::fmt;
use std::net::SocketAddr;

use crate::cli::{Cli, ServeArgs};
use crate::store::LockoutPolicy;

/// Where the default SQLite database lives, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "coins-data/coins.db";

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

pub fn database_url(cli: &Cli) -> String {
    cli.database_url.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_SQLITE_PATH.to_owned())
}

/// What `serve` needs beyond the database.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub token_ttl_secs: i64,
    pub lockout: LockoutPolicy,
    pub admin: Option<(String, Secret)>,
    pub sweep_interval: std::time::Duration,
}

impl ServeSettings {
    pub fn from_args(args: &ServeArgs) -> Result<Self, String> {
        let admin = match (&args.admin_client_id, &args.admin_client_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some((id.clone(), Secret::new(secret.clone()))),
            (None, None) => None,
            _ => return Err("COINS_ADMIN_CLIENT_ID and COINS_ADMIN_CLIENT_SECRET must be set together".into()),
        };
        Ok(Self {
            listen: args.listen,
            token_ttl_secs: args.token_ttl_secs,
            lockout: LockoutPolicy { max_failures: args.lockout_failures, lock_ms: args.lockout_secs * 1000 },
            admin,
            sweep_interval: std::time::Duration::from_secs(args.sweep_interval_secs),
        })
    }

    /// Defaults for tests and embedding: port 0, SPEC §7 defaults otherwise.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_ttl_secs: 3600,
            lockout: LockoutPolicy { max_failures: 5, lock_ms: 900_000 },
            admin: None,
            sweep_interval: std::time::Duration::from_secs(60),
        }
    }
}
