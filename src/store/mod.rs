//! Storage: one async trait, [`Store`], with an SQLite and a PostgreSQL implementation.
//!
//! - `sqlite.rs`: the embedded default. One writer thread owns the only write connection and
//!   applies every queued write in one database transaction (group commit), each write in its
//!   own savepoint so one refusal never undoes a neighbour; reads use a small pool.
//! - `postgres.rs`: for production and several server processes. Row locks and unique keys make
//!   concurrent processes safe; a deadlock or serialization failure retries the transaction.
//! - `migrations/{sqlite,postgres}/`: embedded in the binary, applied by `migrate` and `serve`.
//!
//! Domain decisions (replay or conflict, resolution, caps) are the same on both backends; the
//! SQL differs only in dialect. Times are stored as Unix milliseconds (UTC).

mod balance_cache;
mod config_cache;
mod migrate;
mod pg_listen;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::config::ConfigValues;
use crate::domain::{CoinConfig, CoinConfigId, Coins, CompanyId, EventName, RequestId, UserId};

/// Why the store refused an operation that was well formed: mapped to a 404 or 409 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no active coin configuration for event {event} and company {company}")]
    ConfigNotFound { company: CompanyId, event: EventName },
    #[error("coin configuration {0} not found")]
    UnknownConfig(String),
    #[error("a {kind} configuration for event {event}{scope} already exists: {existing}")]
    DuplicateConfig { existing: CoinConfigId, kind: &'static str, event: EventName, scope: String },
    #[error("requestId {0} was already used for a different operation")]
    RequestIdConflict(RequestId),
    #[error("userId {user} belongs to another company than {company}")]
    UserCompanyMismatch { user: UserId, company: CompanyId },
    #[error("{0}")]
    LimitReached(String),
    #[error("the balance of userId {0} would overflow")]
    BalanceOverflow(UserId),
    #[error("configuration {0} was changed concurrently; retry")]
    ConcurrentUpdate(CoinConfigId),
    #[error("userId {0} has never been credited")]
    UserNotFound(UserId),
    #[error("userId {user} has {available} coins available, {needed} are needed")]
    InsufficientBalance { user: UserId, needed: i64, available: i64 },
    #[error("originalRequestId {0} was already reversed")]
    AlreadyReversed(RequestId),
    #[error("originalRequestId {0} not found for this company")]
    OriginalNotFound(RequestId),
    #[error("originalRequestId {0} is itself a reversal and cannot be reversed")]
    NotReversible(RequestId),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Anything else the database said. The text goes to the log, never to a client.
    #[error("database: {0}")]
    Db(String),
    /// A unique key stopped a concurrent duplicate that the pre-checks could not see.
    #[error("unique key: {0}")]
    Unique(String),
    /// The write queue is full or the writer has stopped.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // `Display` of a tokio-postgres error is only "db error"; the detail is in the source.
        match e.as_db_error() {
            Some(db) if *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Unique(format!("{}: {}", db.message(), db.detail().unwrap_or("")))
            }
            Some(db) => StoreError::Db(format!("{} ({}): {}", db.message(), db.code().code(), db.detail().unwrap_or(""))),
            None => StoreError::Db(format!("{e:?}")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An API credential as stored. `secret_hash` is an Argon2 PHC string, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    pub secret_hash: String,
    pub admin: bool,
    pub companies: Vec<CompanyId>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub failed_attempts: i64,
    pub locked_until_ms: Option<i64>,
}

/// A user of the OAuth password grant, created per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordUserRecord {
    pub client_id: String,
    pub username: String,
    pub password_hash: String,
    pub failed_attempts: i64,
    pub locked_until_ms: Option<i64>,
}

/// Whose failed or successful authentication to record for lockout (SPEC §3).
#[derive(Debug, Clone, Copy)]
pub enum AuthSubject<'a> {
    Client(&'a str),
    PasswordUser { client_id: &'a str, username: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// An issued token, keyed by the SHA-256 of the token text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_hash: String,
    pub kind: TokenKind,
    pub client_id: String,
    pub username: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Lockout policy, passed in so the store stays free of settings.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub max_failures: i64,
    pub lock_ms: i64,
}

/// One allocation request (SPEC §4), already validated and authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateCmd {
    pub company: CompanyId,
    pub user: UserId,
    pub event: EventName,
    pub request_id: RequestId,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocateOk {
    /// Newly credited; durable once the caller sees it.
    Allocated { coins: Coins, balance: Coins, entry_id: i64 },
    /// The same request was applied before; nothing was credited now.
    Replayed { coins: Coins },
}

/// How a redemption names its amount (SPEC §5): exactly one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemAmount {
    Coins(Coins),
    /// Currency minor units; the coins needed are rounded up at the company's coin value.
    Minor(i64),
}

impl RedeemAmount {
    /// What a replay must repeat besides the user.
    pub fn fingerprint(self) -> String {
        match self {
            RedeemAmount::Coins(c) => format!("coins={c}"),
            RedeemAmount::Minor(m) => format!("amountMinor={m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemCmd {
    pub company: CompanyId,
    pub user: UserId,
    pub request_id: RequestId,
    pub amount: RedeemAmount,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseCmd {
    pub company: CompanyId,
    pub request_id: RequestId,
    pub original: RequestId,
    pub now_ms: i64,
}

/// The redemption response payload; stored with the request so a replay repeats it exactly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeemReceipt {
    pub request_id: String,
    pub coins: i64,
    pub currency: String,
    pub amount_minor: i64,
    pub balance: i64,
}

/// The reversal response payload. `coins` is signed like the ledger entry: negative when an
/// allocation is taken back, positive when a redemption is given back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReverseReceipt {
    pub request_id: String,
    pub original_request_id: String,
    pub coins: i64,
    pub balance: i64,
}

/// An idempotent operation's answer: newly applied, or the stored answer of the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    pub receipt: T,
    pub replayed: bool,
}

/// What one coin is worth for a company (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinValue {
    /// `None`: the installation-wide default.
    pub company: Option<CompanyId>,
    pub currency: String,
    pub minor_units_per_coin: i64,
}

/// Until set: INR, 100 minor units (1 coin = ₹1).
pub const DEFAULT_CURRENCY: &str = "INR";
pub const DEFAULT_MINOR_UNITS_PER_COIN: i64 = 100;

/// The key a company's coin value is stored under; '' is the default (no company id is empty).
pub(crate) fn coin_value_key(company: Option<&CompanyId>) -> &str {
    company.map_or("", CompanyId::as_str)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user: UserId,
    pub company: CompanyId,
    pub balance: i64,
    pub lifetime_earned: i64,
    pub lifetime_redeemed: i64,
    pub lifetime_expired: i64,
    /// `(coins, expires_at_ms)` of lots expiring within the window, soonest first.
    pub expiring_soon: Vec<(i64, i64)>,
}

/// Days ahead that `expiringSoon` looks (SPEC §5).
pub const EXPIRING_SOON_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub entry_id: i64,
    pub kind: String,
    pub coins: i64,
    pub balance_after: i64,
    pub event: Option<String>,
    pub request_id: Option<String>,
    pub coin_config_id: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub action: String,
    pub client_id: String,
    pub at_ms: i64,
    pub before_json: Option<String>,
    pub after_json: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFilter {
    pub company: Option<CompanyId>,
    pub event: Option<EventName>,
    pub kind: Option<crate::domain::ConfigKind>,
}

/// Largest `amountMinor` a redemption accepts (10^15 minor units: far above any purchase).
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

/// The coin value stored as `(company_id, currency, minor_units)`, or the built-in default.
pub(crate) fn coin_value_from(row: Option<(String, String, i64)>) -> CoinValue {
    match row {
        Some((company, currency, minor_units_per_coin)) => CoinValue {
            company: (!company.is_empty()).then(|| CompanyId::from_trusted(company)),
            currency,
            minor_units_per_coin,
        },
        None => CoinValue { company: None, currency: DEFAULT_CURRENCY.to_owned(), minor_units_per_coin: DEFAULT_MINOR_UNITS_PER_COIN },
    }
}

/// `(coins, amountMinor)` of a redemption at this coin value.
pub(crate) fn redemption_amounts(amount: RedeemAmount, minor_per_coin: i64) -> StoreResult<(i64, i64)> {
    let overflow = || StoreError::Refused(Refusal::LimitReached("the redemption amount is too large".into()));
    match amount {
        RedeemAmount::Coins(c) => Ok((c.get(), c.get().checked_mul(minor_per_coin).ok_or_else(overflow)?)),
        RedeemAmount::Minor(m) => Ok((crate::domain::lots::coins_for_minor(m, minor_per_coin).ok_or_else(overflow)?, m)),
    }
}

/// Users whose due lots one sweeper transaction expires, at most.
pub const SWEEP_USERS_MAX: usize = 256;

/// A user's coins as clients see them: stored balance less lots already past expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBalance {
    pub company: CompanyId,
    pub balance: Coins,
}

/// What `coins verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub users_checked: i64,
    pub entries_checked: i64,
    pub problems: Vec<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations. Safe to call from several processes at once.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    async fn insert_client(&self, client: ClientRecord) -> StoreResult<()>;
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    async fn count_clients(&self) -> StoreResult<i64>;
    /// Marks the client revoked and deletes its tokens; false if there is no such client.
    async fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Creates or replaces a password-grant user; false if the client does not exist.
    async fn upsert_password_user(&self, client_id: &str, username: &str, password_hash: &str, now_ms: i64) -> StoreResult<bool>;
    async fn get_password_user(&self, client_id: &str, username: &str) -> StoreResult<Option<PasswordUserRecord>>;
    /// Reserves one authentication attempt before the secret is checked: counts it as a failure
    /// (locking the subject when the count reaches the maximum) unless the subject is locked.
    /// `false`: locked (or unknown), do not check the secret. Reserving first means a burst of
    /// parallel guesses gets at most `max_failures` secret checks per lock period.
    async fn reserve_auth_attempt(&self, who: AuthSubject<'_>, now_ms: i64, policy: LockoutPolicy) -> StoreResult<bool>;
    /// The secret was right: the reserved attempt was no failure; resets the count and lock.
    async fn record_auth_success(&self, who: AuthSubject<'_>) -> StoreResult<()>;

    async fn insert_tokens(&self, tokens: Vec<TokenRecord>) -> StoreResult<()>;
    /// An unexpired access token with its (unrevoked) client.
    async fn lookup_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<(TokenRecord, ClientRecord)>>;
    /// Uses up a refresh token (at most once, even under concurrency) and returns it.
    async fn consume_refresh_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>>;

    /// Creates a configuration and its audit row; `DuplicateConfig` names the existing one.
    async fn create_config(&self, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig>;
    async fn get_config(&self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>>;
    /// Replaces the values if the stored version is still `expected_version` (else
    /// `ConcurrentUpdate`), bumps the version and writes the audit row.
    async fn update_config(&self, id: CoinConfigId, expected_version: i64, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig>;

    /// Applies each allocation exactly once, independently: one result per command, in order.
    async fn allocate(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>>;
    /// `None` for a user never credited.
    async fn balance(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserBalance>>;

    /// Configurations matching every filter given, by id.
    async fn list_configs(&self, filter: ConfigFilter) -> StoreResult<Vec<CoinConfig>>;
    /// The audit trail of one configuration, oldest first.
    async fn config_history(&self, id: CoinConfigId) -> StoreResult<Vec<AuditRecord>>;

    async fn set_coin_value(&self, value: CoinValue, actor: &str, now_ms: i64) -> StoreResult<()>;
    /// The value in force: the company's own, else the default, else INR 100.
    async fn coin_value(&self, company: Option<&CompanyId>) -> StoreResult<CoinValue>;

    /// Debits unexpired lots, soonest expiry first; exactly-once on (company, requestId).
    async fn redeem(&self, cmd: RedeemCmd) -> StoreResult<Applied<RedeemReceipt>>;
    /// Undoes an allocation or a redemption once; exactly-once on (company, requestId).
    async fn reverse(&self, cmd: ReverseCmd) -> StoreResult<Applied<ReverseReceipt>>;

    /// Writes the `EXPIRE` entries of this user's lots that are past expiry (if any), so that
    /// the history read next agrees with the balance.
    async fn settle_expired(&self, user: &UserId, now_ms: i64) -> StoreResult<()>;
    /// One sweeper pass: expires the due lots of up to `SWEEP_USERS_MAX` users; returns the
    /// number of lots expired (0 when nothing is due).
    async fn sweep_expired(&self, now_ms: i64) -> StoreResult<u64>;
    async fn user_summary(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>>;
    /// Newest first, entries with id below `before_entry_id` (keyset pagination).
    async fn transactions(&self, user: &UserId, before_entry_id: Option<i64>, limit: i64) -> StoreResult<Vec<LedgerEntry>>;

    /// Recomputes every balance from the ledger and the lots (SPEC §6).
    async fn verify(&self) -> StoreResult<VerifyReport>;
}

/// How the store runs, beyond where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Concurrent writes share one transaction and one commit (each still answered only after
    /// that commit). Off: one transaction per request, for comparison and troubleshooting.
    pub group_commit: bool,
    /// PostgreSQL: keep a LISTEN connection so this process may cache configurations and
    /// balances (see `pg_listen.rs`). Off for one-shot CLI commands, which cache nothing.
    pub listen: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { group_commit: true, listen: true }
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
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    file.try_lock().map_err(|_| {
        format!("another `coins serve` is already using {}; use PostgreSQL to run several servers", path.display())
    })?;
    Ok(file)
}

/// Companies are stored space-separated: ids cannot contain spaces.
pub(crate) fn join_companies(companies: &[CompanyId]) -> String {
    companies.iter().map(CompanyId::as_str).collect::<Vec<_>>().join(" ")
}

pub(crate) fn split_companies(s: &str) -> Vec<CompanyId> {
    s.split_whitespace().map(|c| CompanyId::from_trusted(c.to_owned())).collect()
}

/// The audit snapshot of a configuration, as the `/history` endpoint will show it.
pub(crate) fn audit_json(values: &ConfigValues) -> String {
    serde_json::json!({
        "configuration": values.kind.as_str(),
        "companyId": values.company_id.as_str(),
        "event": values.event.as_str(),
        "amount": values.amount.get(),
        "validityDays": values.validity_days,
        "maxPerUserPerDay": values.max_per_user_per_day,
        "maxPerUser": values.max_per_user,
        "active": values.active,
    })
    .to_string()
}

/// The refusal for a second DEFAULT (per event) or CUSTOM (per company and event).
pub(crate) fn duplicate(existing: CoinConfigId, values: &ConfigValues) -> Refusal {
    use crate::domain::ConfigKind;
    Refusal::DuplicateConfig {
        existing,
        kind: values.kind.as_str(),
        event: values.event.clone(),
        scope: match values.kind {
            ConfigKind::Default => String::new(),
            ConfigKind::Custom => format!(" and company {}", values.company_id),
        },
    }
}

/// The `LIMIT_REACHED` sentence for a cap.
pub(crate) fn cap_message(cmd: &AllocateCmd, cap_name: &str, cap: i64) -> String {
    format!(
        "userId {} has reached {cap_name} ({cap}) for event {} of company {}",
        cmd.user, cmd.event, cmd.company
    )
}

/// SPEC §6 checks, in SQL both backends speak. Each query returns one text column per problem.
pub(crate) const VERIFY_CHECKS: &[(&str, &str)] = &[
    (
        "SELECT u.company_id || '/' || u.user_id || ': balance ' || CAST(u.balance AS TEXT) || ', entries sum to ' \
         || CAST(COALESCE(e.total, 0) AS TEXT) FROM users u LEFT JOIN \
         (SELECT company_id, user_id, SUM(coins) AS total FROM ledger_entries GROUP BY company_id, user_id) e \
         ON e.company_id = u.company_id AND e.user_id = u.user_id WHERE u.balance <> COALESCE(e.total, 0)",
        "balance differs from the sum of the ledger",
    ),
    (
        "SELECT u.company_id || '/' || u.user_id || ': balance ' || CAST(u.balance AS TEXT) || ', lots hold ' \
         || CAST(COALESCE(l.total, 0) AS TEXT) FROM users u LEFT JOIN \
         (SELECT company_id, user_id, SUM(remaining) AS total FROM lots GROUP BY company_id, user_id) l \
         ON l.company_id = u.company_id AND l.user_id = u.user_id WHERE u.balance <> COALESCE(l.total, 0)",
        "balance differs from the coins left in lots",
    ),
    (
        "SELECT e.company_id || '/' || e.user_id || ': entry ' || CAST(e.entry_id AS TEXT) FROM ledger_entries e \
         WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.company_id = e.company_id AND u.user_id = e.user_id)",
        "ledger entry of a user with no account",
    ),
    (
        "SELECT company_id || '/' || user_id || ': entry ' || CAST(entry_id AS TEXT) || ' says ' || CAST(balance_after AS TEXT) \
         || ', running sum is ' || CAST(prev + coins AS TEXT) FROM (SELECT entry_id, company_id, user_id, coins, balance_after, \
         LAG(balance_after, 1, 0) OVER (PARTITION BY company_id, user_id ORDER BY entry_id) AS prev FROM ledger_entries) chain \
         WHERE balance_after <> prev + coins",
        "balanceAfter breaks the running sum",
    ),
    (
        "SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ')' FROM requests r WHERE (SELECT COUNT(*) \
         FROM ledger_entries e WHERE e.company_id = r.company_id AND e.request_id = r.request_id AND e.type = r.kind) <> 1",
        "request without exactly one ledger entry",
    ),
    (
        "SELECT CAST(l.lot_id AS TEXT) || ' holds ' || CAST(l.remaining AS TEXT) || ' of ' || CAST(l.coins AS TEXT) \
         || ', moves sum to ' || CAST(COALESCE(m.total, 0) AS TEXT) FROM lots l LEFT JOIN \
         (SELECT lot_id, SUM(coins) AS total FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.lot_id \
         WHERE l.remaining <> l.coins + COALESCE(m.total, 0)",
        "lot remainder differs from its credit and moves",
    ),
    (
        "SELECT CAST(e.entry_id AS TEXT) || ' (' || e.type || ') moves ' || CAST(e.coins AS TEXT) || ', its lot moves sum to ' \
         || CAST(COALESCE(m.total, 0) AS TEXT) FROM ledger_entries e LEFT JOIN \
         (SELECT entry_id, SUM(coins) AS total FROM lot_moves GROUP BY entry_id) m ON m.entry_id = e.entry_id \
         WHERE e.type <> 'ALLOCATE' AND e.coins <> COALESCE(m.total, 0)",
        "debit or restore differs from the lots it touched",
    ),
    (
        "SELECT e.company_id || '/' || e.request_id || ': entry ' || CAST(e.entry_id AS TEXT) FROM ledger_entries e \
         WHERE e.request_id IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM requests r WHERE r.company_id = e.company_id AND r.request_id = e.request_id)",
        "ledger entry without its request",
    ),
];

/// A ledger entry about to be written (both backends' insert helpers take it).
pub(crate) struct NewEntry<'a> {
    pub company: &'a str,
    pub user: &'a str,
    pub kind: &'static str,
    pub coins: i64,
    pub balance_after: i64,
    pub event: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub coin_config_id: Option<&'a str>,
    pub now_ms: i64,
    pub expires_at: Option<i64>,
}
