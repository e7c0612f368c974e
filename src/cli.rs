//! The command line. Every flag falls back to its environment variable, then to the
//! default: flags > env > defaults.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coins", version, about = "Loyalty-coins engine, wire-compatible with the EnKash Point Management API")]
pub struct Cli {
    /// Database: `postgres://user@host/db`, or an SQLite file path (`sqlite://path` also works).
    /// Default: ./coins-data/coins.db, created on first run.
    #[arg(long, env = "COINS_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log filter in tracing syntax, e.g. `info` or `coins=debug,info`.
    #[arg(long, env = "COINS_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format: `text` for people, `json` for one JSON object per line.
    #[arg(long, env = "COINS_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// `on`: concurrent writes share one transaction and commit (each answered after it).
    /// `off`: one transaction per request (for comparison and troubleshooting).
    #[arg(long, env = "COINS_GROUP_COMMIT", default_value = "on", global = true)]
    pub group_commit: Switch,

    /// SQLite: the size in MiB past which the write-ahead log is restarted (and the file cut back
    /// to it). Smaller keeps less disk; larger costs fewer restart pauses under heavy writes.
    #[arg(long, env = "COINS_SQLITE_WAL_MAX_MB", default_value_t = 64, global = true, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub sqlite_wal_max_mb: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server; applies pending migrations first.
    Serve(Box<ServeArgs>),
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage API clients (credentials).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Check the ledger invariants: every balance equals its entries and its lots. Exit 1 on any difference.
    Verify,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    #[arg(long, env = "COINS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Access-token lifetime in seconds.
    #[arg(long, env = "COINS_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    pub token_ttl_secs: i64,

    /// Consecutive failed authentications that lock a client or password user.
    #[arg(long, env = "COINS_LOCKOUT_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub lockout_failures: i64,

    /// How long a lock lasts, in seconds.
    #[arg(long, env = "COINS_LOCKOUT_SECS", default_value_t = 900, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    pub lockout_secs: i64,

    /// Seconds between expiry sweeps (reads leave expired coins out even before a sweep).
    #[arg(long, env = "COINS_SWEEP_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sweep_interval_secs: u64,

    /// Also serve `GET /metrics` here, without authentication, for a Prometheus on a private
    /// network (on the API port `/metrics` needs an admin token). Unset: not served separately.
    #[arg(long, env = "COINS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Connections open at once, at most; past that, new ones wait in the kernel's backlog.
    #[arg(long, env = "COINS_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Seconds a client has to send a request's headers, from their first byte.
    #[arg(long, env = "COINS_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_read_timeout_secs: u64,

    /// Seconds to answer a request, from its headers: reading the body included (408 if the
    /// body did not arrive in time, 503 if the answer did not come in time).
    #[arg(long, env = "COINS_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub request_timeout_secs: u64,

    /// Seconds a keep-alive connection may stay silent between requests before it is closed.
    #[arg(long, env = "COINS_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// Authenticated API calls per second per client, sustained (0 turns the limit off).
    #[arg(long, env = "COINS_RATE_LIMIT_PER_SEC", default_value_t = 5_000)]
    pub rate_limit_per_sec: u32,

    /// Calls a client may make at once on top of the sustained rate.
    #[arg(long, env = "COINS_RATE_LIMIT_BURST", default_value_t = 10_000)]
    pub rate_limit_burst: u32,

    /// Token requests per second per presented client id (0 turns the limit off).
    #[arg(long, env = "COINS_TOKEN_RATE_LIMIT_PER_SEC", default_value_t = 5)]
    pub token_rate_limit_per_sec: u32,

    /// Token requests at once per client id, on top of the sustained rate.
    #[arg(long, env = "COINS_TOKEN_RATE_LIMIT_BURST", default_value_t = 20)]
    pub token_rate_limit_burst: u32,

    /// Token requests per second per source address (0 turns the limit off).
    #[arg(long, env = "COINS_TOKEN_IP_RATE_LIMIT_PER_SEC", default_value_t = 20)]
    pub token_ip_rate_limit_per_sec: u32,

    /// Token requests at once per source address, on top of the sustained rate.
    #[arg(long, env = "COINS_TOKEN_IP_RATE_LIMIT_BURST", default_value_t = 100)]
    pub token_ip_rate_limit_burst: u32,

    /// Key sealing webhook signing secrets at rest: base64 of 32 random bytes
    /// (`openssl rand -base64 32`). Unset: on SQLite a key file made beside the database
    /// (`secret.key`, mode 0600); on PostgreSQL webhooks cannot be registered.
    #[arg(long, env = "COINS_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Allow webhook URLs with plain `http://` (local development and tests).
    #[arg(long, env = "COINS_WEBHOOK_ALLOW_HTTP", default_value = "false", action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,

    /// Allow webhook targets on loopback, private and link-local addresses (local development and
    /// tests; refused by default against SSRF).
    #[arg(long, env = "COINS_WEBHOOK_ALLOW_PRIVATE", default_value = "false", action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// Webhook deliveries in flight at once, per process; 0: this process delivers none (the
    /// outbox is still written; other processes on the same PostgreSQL deliver it).
    #[arg(long, env = "COINS_WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub webhook_concurrency: u64,

    /// Seconds an endpoint has to answer a delivery with a 2xx.
    #[arg(long, env = "COINS_WEBHOOK_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_secs: u64,

    /// Delays before each retry of a failed delivery; after the last one the message fails.
    #[arg(long, env = "COINS_WEBHOOK_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h")]
    pub webhook_retry_schedule: String,

    /// An endpoint whose every delivery has failed for this many seconds is disabled.
    #[arg(long, env = "COINS_WEBHOOK_DISABLE_AFTER_SECS", default_value_t = 432_000, value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub webhook_disable_after_secs: u64,

    /// Milliseconds between looks at the outbox when it is idle.
    #[arg(long, env = "COINS_WEBHOOK_POLL_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(5..=60_000))]
    pub webhook_poll_ms: u64,

    /// Seconds a member page link opens its page (`POST .../users/{userId}/page-link`).
    #[arg(long, env = "COINS_MEMBER_LINK_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(i64).range(60..=604_800))]
    pub member_link_ttl_secs: i64,

    /// The server's address as browsers reach it (e.g. `https://coins.example.com`), for the links
    /// it hands out. Unset: the request's `Host` header over plain HTTP.
    #[arg(long, env = "COINS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// For tests of expiry across restarts only: the server's clock runs this many seconds ahead
    /// of the system clock. Never set it in production.
    #[arg(long, env = "COINS_CLOCK_OFFSET_SECS", default_value_t = 0, hide = true)]
    pub clock_offset_secs: i64,

    /// Admin client id to make sure exists at start-up (with COINS_ADMIN_CLIENT_SECRET).
    #[arg(long, env = "COINS_ADMIN_CLIENT_ID", hide_env_values = true)]
    pub admin_client_id: Option<String>,

    /// Its secret. Prefer the environment variable: flags are visible to other local users.
    #[arg(long, env = "COINS_ADMIN_CLIENT_SECRET", hide_env_values = true)]
    pub admin_client_secret: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client and print `client_id:` and `client_secret:` lines (the secret is shown once).
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["admin", "company"])))]
    Create {
        /// A name for people reading `client list`.
        #[arg(long)]
        name: String,
        /// May act for any company and manage DEFAULT configurations.
        #[arg(long)]
        admin: bool,
        /// A company this client may act for; repeat or list several.
        #[arg(long, num_args = 1..)]
        company: Vec<String>,
    },
    /// Create or replace a user of the OAuth password grant for client ID.
    AddUser {
        /// The client the user belongs to.
        id: String,
        #[arg(long)]
        username: String,
        /// The password. Prefer COINS_USER_PASSWORD: flags are visible to other local users.
        #[arg(long, env = "COINS_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// List clients (never their secrets).
    List,
    /// Revoke a client; its tokens stop working within 30 s in every server process.
    Revoke {
        /// The client id.
        id: String,
    },
}
