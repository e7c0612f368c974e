//! Storage: small traits per resource, each implemented by an SQLite and a PostgreSQL backend.
//!
//! - [`ClientStore`], [`TokenStore`]: API clients, password users, lockout and tokens.
//! - [`ConfigStore`]: coin configurations, their audit trail, coin values.
//! - [`LedgerStore`]: every write to the ledger — allocate, redeem, reverse, expire.
//! - [`ReportStore`]: what is read back — balances, summaries, history, `verify`.
//! - [`WebhookStore`]: subscriptions, their outbox (written by the ledger's flows) and deliveries.
//! - [`ReminderStore`]: expiry reminders, their lead times and the sweeper's pass that sends them.
//! - [`CampaignStore`]: bonus campaigns.
//! - [`TierStore`]: status tiers: schemes, floors, members' tiers.
//! - [`Store`]: all of the above plus migrations and a ping; what the app holds.
//!
//! Layout: `error.rs` (the one error type), `model.rs` (records and read models), `migrate.rs`
//! (one runner, both backends' lists), `ledger.rs` and `configs.rs` (the order every write takes, over
//! primitives each backend implements: fetch, ask `domain` for the plan, write it),
//! `verify.rs`, the caches, and one folder per backend with a file per concern.
//! Times are stored as Unix milliseconds (UTC).

pub(crate) mod as_of;
mod balance_cache;
pub mod campaigns;
pub(crate) mod config_cache;
pub(crate) mod configs;
mod dry_run;
pub mod error;
pub(crate) mod ledger;
pub mod migrate;
pub mod model;
pub mod postgres;
pub mod reminders;
pub mod sqlite;
pub mod tiers;
pub mod verify;
pub mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;

pub use campaigns::CampaignStore;
pub use error::{StoreError, StoreResult};
pub use model::*;
pub use reminders::ReminderStore;
pub use tiers::TierStore;
pub use webhooks::{AttemptOutcome, AttemptRecord, Delivery, EventData, MessageData, MessageState, WebhookChange, WebhookRecord};

use crate::domain::allocate::{AllocateCmd, AllocateOk};
use crate::domain::config::ConfigValues;
use crate::domain::lockout::LockoutPolicy;
use crate::domain::redeem::{CoinValue, RedeemCmd, RedeemReceipt};
use crate::domain::reverse::{ReverseCmd, ReverseReceipt};
use crate::domain::webhooks::RetryPolicy;
use crate::domain::{CoinConfig, CoinConfigId, CompanyId, EventName, OrderId, RequestId, UserId};

#[async_trait]
pub trait ClientStore: Send + Sync {
    async fn insert_client(&self, client: ClientRecord) -> StoreResult<()>;
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    async fn count_clients(&self) -> StoreResult<i64>;
    /// Marks the client revoked and deletes its tokens; false if there is no such client.
    async fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Creates or replaces a password-grant user; false if the client does not exist.
    async fn upsert_password_user(&self, client_id: &str, username: &str, password_hash: &str, now_ms: i64) -> StoreResult<bool>;
    async fn get_password_user(&self, client_id: &str, username: &str) -> StoreResult<Option<PasswordUserRecord>>;
    /// Counts one attempt before its secret is checked (`domain::lockout`); `false`: locked or
    /// unknown, do not check the secret.
    async fn reserve_auth_attempt(&self, who: AuthSubject<'_>, now_ms: i64, policy: LockoutPolicy) -> StoreResult<bool>;
    /// The secret was right: the reserved attempt was no failure; resets the count and lock.
    async fn record_auth_success(&self, who: AuthSubject<'_>) -> StoreResult<()>;
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn insert_tokens(&self, tokens: Vec<TokenRecord>) -> StoreResult<()>;
    /// An unexpired access token with its (unrevoked) client.
    async fn lookup_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<(TokenRecord, ClientRecord)>>;
    /// Ends an access token now (a dashboard sign-out).
    async fn expire_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<()>;
    /// Uses up a refresh token of this client (at most once, even under concurrency) and returns
    /// it. Another client's refresh token is refused and left unused.
    async fn consume_refresh_token(&self, token_hash: &str, client_id: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>>;
}

#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Creates a configuration and its audit row; `DuplicateConfig` names the existing one.
    async fn create_config(&self, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig>;
    async fn get_config(&self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>>;
    /// Replaces the values if the stored version is still `expected_version` (else
    /// `ConcurrentUpdate`), bumps the version and writes the audit row.
    async fn update_config(&self, id: CoinConfigId, expected_version: i64, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig>;
    /// Configurations matching every filter given, by id.
    async fn list_configs(&self, filter: ConfigFilter) -> StoreResult<Vec<CoinConfig>>;
    /// The audit trail of one configuration, oldest first.
    async fn config_history(&self, id: CoinConfigId) -> StoreResult<Vec<AuditRecord>>;
    async fn set_coin_value(&self, value: CoinValue, actor: &str, now_ms: i64) -> StoreResult<()>;
    /// The value in force: the company's own, else the default, else INR 100.
    async fn coin_value(&self, company: Option<&CompanyId>) -> StoreResult<CoinValue>;
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Applies each allocation exactly once, independently: one result per command, in order.
    async fn allocate(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>>;
    /// Debits unexpired lots, soonest expiry first; exactly-once on (company, requestId).
    async fn redeem(&self, cmd: RedeemCmd) -> StoreResult<Applied<RedeemReceipt>>;
    /// Returns an allocation or a redemption, whole or in part; exactly-once on (company, requestId).
    async fn reverse(&self, cmd: ReverseCmd) -> StoreResult<Applied<ReverseReceipt>>;
    /// What an allocation or a return would do, decided by the same flows, writing nothing.
    async fn simulate(&self, cmd: crate::domain::simulate::SimulateCmd) -> StoreResult<crate::domain::simulate::Simulation>;
    /// A staff adjustment (a credit or a debit, with a reason); exactly-once on (company, requestId).
    async fn adjust(&self, cmd: crate::domain::adjust::AdjustCmd) -> StoreResult<Applied<crate::domain::adjust::AdjustReceipt>>;
    /// Makes a held allocation spendable now; exactly-once on (company, requestId).
    async fn activate(&self, cmd: crate::domain::activate::ActivateCmd) -> StoreResult<Applied<crate::domain::activate::ActivateReceipt>>;
    /// Writes the `EXPIRE` entries of this user's lots past expiry (if any), so that the history
    /// read next agrees with the balance.
    async fn settle_expired(&self, user: &UserId, now_ms: i64) -> StoreResult<Expired>;
    /// One sweeper pass over up to [`SWEEP_USERS_MAX`] users with due lots. A user whose expiry
    /// fails is logged, counted and skipped; the others go on.
    async fn sweep_expired(&self, now_ms: i64) -> StoreResult<SweepReport>;
}

#[async_trait]
pub trait ReportStore: Send + Sync {
    /// `None` for a user never credited.
    async fn balance(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserBalance>>;
    async fn user_summary(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>>;
    /// Newest first, entries with id below `before_entry_id` (keyset pagination).
    async fn transactions(&self, user: &UserId, before_entry_id: Option<i64>, limit: i64) -> StoreResult<Vec<LedgerEntry>>;
    /// Recomputes every balance from the ledger and the lots.
    async fn verify(&self) -> StoreResult<VerifyReport>;
    /// The daily roll-up for days `from_day..=to_day` of the companies in scope.
    async fn daily_totals(&self, scope: &CompanyScope, from_day: i64, to_day: i64) -> StoreResult<DailyTotals>;
    /// Each company in scope with coins outstanding, at `now_ms`.
    async fn outstanding(&self, scope: &CompanyScope, now_ms: i64) -> StoreResult<Vec<Outstanding>>;
    /// The record of the allocation with this request id, or of the one it is an alias of.
    async fn allocation(&self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<AllocationRecord>>;
    /// The record of the order's live allocation, else of its latest one.
    async fn allocation_by_order(&self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<AllocationRecord>>;
    /// A page of the company's ledger for an export: entries created in `[from_ms, to_ms)` with
    /// ids above `after_entry_id`, in id order.
    async fn export_entries(&self, company: &CompanyId, from_ms: i64, to_ms: i64, after_entry_id: i64, limit: i64) -> StoreResult<Vec<ExportEntry>>;
    /// A page of the company's users for an export, in user id order after `after_user`.
    async fn export_balances(&self, company: &CompanyId, after_user: &str, limit: i64, now_ms: i64) -> StoreResult<Vec<ExportBalance>>;
    /// The same page as it stood at a past instant, read back from the ledger (`store::as_of`):
    /// the users that existed then.
    async fn export_balances_at(&self, company: &CompanyId, after_user: &str, limit: i64, at_ms: i64) -> StoreResult<Vec<ExportBalance>>;
    /// The user's latest allocations that earned coins (`limit` at most), newest first.
    async fn allocations_of(&self, company: &CompanyId, user: &UserId, limit: i64) -> StoreResult<Vec<AllocationRecord>>;
}

/// Webhook subscriptions, their outbox and its delivery.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, webhook: WebhookRecord) -> StoreResult<()>;
    /// Every company's, or one company's, by creation.
    async fn list_webhooks(&self, company: Option<&CompanyId>) -> StoreResult<Vec<WebhookRecord>>;
    async fn get_webhook(&self, webhook_id: &str) -> StoreResult<Option<WebhookRecord>>;
    async fn update_webhook(&self, webhook_id: &str, change: WebhookChange, now_ms: i64) -> StoreResult<Option<WebhookRecord>>;
    /// Removes the subscription with its messages and their attempts.
    async fn delete_webhook(&self, webhook_id: &str) -> StoreResult<bool>;
    /// Stores a new secret; the current one becomes the previous one, signing until `previous_until`.
    async fn rotate_webhook_secret(&self, webhook_id: &str, sealed: String, previous_until: i64, now_ms: i64) -> StoreResult<bool>;
    /// Queues a `webhook.test` message; its sequence number.
    async fn enqueue_test_message(&self, webhook_id: &str, company: &CompanyId, now_ms: i64) -> StoreResult<i64>;
    /// The delivery log, newest first, attempts with id below `before` (keyset pagination).
    async fn webhook_attempts(&self, webhook_id: &str, before: Option<i64>, limit: i64) -> StoreResult<Vec<AttemptRecord>>;
    /// Makes a message of this webhook due now again (delivered or failed ones too); false if none.
    async fn retry_message(&self, webhook_id: &str, message: &webhooks::MessageRef, now_ms: i64) -> StoreResult<bool>;
    /// Leases up to `limit` due messages for `lease_ms`: each the oldest pending one of its
    /// (endpoint, user), of an enabled endpoint, not leased by anyone else.
    async fn claim_deliveries(&self, now_ms: i64, limit: usize, lease_ms: i64, owner: &str) -> StoreResult<Vec<Delivery>>;
    /// Records attempts, each with the number made before it, and what follows from each
    /// (`store::webhooks::record_all`), in one transaction; `None` for an attempt whose webhook was
    /// deleted meanwhile, or a stale one (another attempt of the message was recorded since its
    /// claim).
    async fn record_attempts(&self, outcomes: Vec<(AttemptOutcome, i64)>, policy: &RetryPolicy) -> StoreResult<Vec<Option<MessageState>>>;
    /// Messages waiting to be delivered.
    async fn outbox_depth(&self) -> StoreResult<i64>;
}

/// Everything the app needs from storage.
#[async_trait]
pub trait Store:
    ClientStore + TokenStore + ConfigStore + LedgerStore + ReportStore + WebhookStore + ReminderStore + CampaignStore + TierStore + 'static
{
    /// Applies pending migrations. Safe to call from several processes at once.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Publishes the connection and queue gauges (before a metrics scrape).
    fn observe(&self) {}
}

/// How the store runs, beyond where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Concurrent writes share one transaction and one commit (each still answered only after
    /// that commit). Off: one transaction per request, for comparison and troubleshooting.
    pub group_commit: bool,
    /// PostgreSQL: keep a LISTEN connection so this process may cache configurations and
    /// balances (see `postgres/listen.rs`). Off for one-shot CLI commands, which cache nothing.
    pub listen: bool,
    /// SQLite: WAL size (bytes) past which the writer restarts the log (see `sqlite/wal.rs`).
    pub wal_max_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { group_commit: true, listen: true, wal_max_bytes: sqlite::WAL_MAX_BYTES_DEFAULT }
    }
}

/// Opens the store a URL names: `postgres://` / `postgresql://` or `sqlite://path` / a bare path.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, StoreOptions::default()).await
}

pub async fn open_with(url: &str, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    match sqlite_path(url) {
        None => Ok(Arc::new(postgres::PgStore::connect(url, options).await?)),
        Some(path) => Ok(Arc::new(sqlite::SqliteStore::open(path, options)?)),
    }
}

/// The SQLite file a URL names, or `None` for PostgreSQL.
pub fn sqlite_path(url: &str) -> Option<&std::path::Path> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        None
    } else {
        Some(std::path::Path::new(url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url)))
    }
}

/// One `serve` per SQLite file: its writer thread and balance cache assume they see every write.
/// The lock lasts as long as the returned file is open; the OS drops it if the process dies.
pub fn lock_sqlite_for_serve(path: &std::path::Path) -> Result<std::fs::File, String> {
    let lock_path = path.with_extension("serve-lock");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    file.try_lock().map_err(|_| format!("another `coins serve` is already using {}; use PostgreSQL to run several servers", path.display()))?;
    Ok(file)
}
