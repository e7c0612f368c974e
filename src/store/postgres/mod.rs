//! The PostgreSQL backend, for production and for several `coins serve` processes sharing one
//! database.
//!
//! Exactly-once across processes rests on the database, not on this process: the `requests`
//! primary key decides which of two concurrent duplicates applies (the loser waits for the
//! winner's commit, then replays it), and `SELECT ... FOR UPDATE` on the user's row serialises
//! everything that changes one balance, so caps and balances stay exact. A transaction that hits
//! a deadlock or serialization failure is retried whole; it had no effect.
//!
//! - `batcher.rs`: group commit for single allocations; `ledger.rs`: the ledger's fetches and
//!   writes, and the set-based allocation of whole batches (migrations/postgres/0016, 0019).
//! - `listen.rs`: LISTEN/NOTIFY keeping this process's caches right when others write.
//! - `clients.rs`, `configs.rs`, `reports.rs`: one file per store trait.

/// An entry's type as stored; a type the code does not know is a conversion error, not a guess.
impl<'a> tokio_postgres::types::FromSql<'a> for crate::domain::ledger::EntryKind {
    fn from_sql(ty: &tokio_postgres::types::Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        Self::parse(text).ok_or_else(|| format!("unknown entry type {text}").into())
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

mod batcher;
mod campaigns;
mod clients;
mod configs;
mod ledger;
mod listen;
mod reminders;
mod reports;
mod tiers;
mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::migrate::{self, AppliedMigration, Migration, MigrationTarget};
use super::{Store, StoreError, StoreOptions, StoreResult};
use batcher::Batcher;
use listen::Caches;

/// Where this backend reads an allocation's record from (see [`super::model::RecordFrom`]).
const RECORD_FROM: &str = super::model::RecordFrom::Postgres.sql();

/// Connections per process; PostgreSQL's default max_connections (100) allows several processes.
const POOL_MAX: usize = 16;
/// How long a request waits for a pooled connection before it is told to retry (503).
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long opening a connection may take (a failover target that does not answer).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Attempts for a transaction that PostgreSQL aborted to break a deadlock or serialization cycle.
const TX_ATTEMPTS_MAX: usize = 5;
/// An arbitrary constant naming the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"\0\0\0coins");

pub struct PgStore {
    core: Arc<Core>,
    /// Group commit for single allocations; `None` when turned off (one transaction each).
    batcher: Option<Batcher>,
    _listener: Option<listen::Listener>,
}

/// What every part of the backend shares: the pool and the caches it keeps right.
pub(crate) struct Core {
    pool: Pool,
    /// Resolved configurations and balances; live only while the listener is listening.
    caches: Arc<Caches>,
    /// Tells other processes about balance changes after each commit (with the listener).
    notifier: Option<listen::Notifier>,
}

/// A transaction, for the backend-neutral flows of `store/ledger.rs` and `store/configs.rs`.
pub(crate) struct PgTx<'a>(pub &'a Transaction<'a>);

/// Work to run in a transaction; called again if PostgreSQL asks for a retry.
type TxWork<'t, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 't>>;

fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE),
        // Two transactions opened the same new user's account at once (the first allocations of
        // a user, outside the set-based path): the loser starts again, finds the account and
        // locks it like any other, so what it decides (caps, campaign limits) sees the winner.
        StoreError::Unique(cause) => cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .and_then(|db| db.constraint())
            .is_some_and(|c| c == "users_pkey" || c == "users_by_user_id"),
        // A batch that decided a new member's earning at the first tier (and with no qualifying
        // coins) while another transaction placed or qualified them: run again, it reads their
        // tier under their lock.
        StoreError::Stale(_) => true,
        _ => false,
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => e.into(),
        // Timeouts (the pool exhausted, or connecting did not finish) and a closed pool.
        other => StoreError::Unavailable(Box::new(other)),
    }
}

impl PgStore {
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // No JIT compilation: every query here reads a few rows through an index, yet a plan
        // whose estimate crosses `jit_above_cost` (the dashboard's liability sum, estimating
        // from a partial index it cannot see into) spent 80 ms compiling to run for 1. Options
        // from the URL (a search_path, say) are kept.
        let session = [config.get_options().unwrap_or(""), "-c jit=off"].join(" ");
        config.options(session.trim());
        let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_MAX)
            .wait_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let caches = Arc::new(Caches::new());
        let notifier = options.listen.then(|| listen::Notifier::spawn(config.clone()));
        let listener = options.listen.then(|| listen::spawn(config, caches.clone()));
        let core = Arc::new(Core { pool, caches, notifier });
        let batcher = options.group_commit.then(|| Batcher::start(core.clone()));
        Ok(Self { core, batcher, _listener: listener })
    }
}

impl Core {
    /// After a commit that changed these users' balances: at once here, soon everywhere else.
    fn balances_changed<'a>(&self, users: impl IntoIterator<Item = &'a str> + Clone) {
        for user in users.clone() {
            self.caches.balances.invalidate(user);
        }
        if let Some(n) = &self.notifier {
            n.changed(users);
        }
    }

    /// After a commit whose users are not known here: every process drops every cached balance.
    fn all_balances_changed(&self) {
        self.caches.balances.invalidate_all();
        if let Some(n) = &self.notifier {
            n.changed_unknown();
        }
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs `work` in a transaction, retrying it whole after a deadlock or serialization failure.
    async fn transact<T, F>(&self, mut work: F) -> StoreResult<T>
    where
        F: for<'t> FnMut(&'t Transaction<'t>) -> TxWork<'t, T>,
    {
        let mut client = self.client().await?;
        let mut attempt = 1;
        loop {
            let tx = client.transaction().await?;
            let outcome = match work(&tx).await {
                Ok(value) => tx.commit().await.map(|()| value).map_err(StoreError::from),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Err(e) if is_retryable(&e) && attempt < TX_ATTEMPTS_MAX => {
                    tracing::debug!(attempt, "retrying a postgres transaction after a deadlock or serialization failure");
                    attempt += 1;
                }
                // Still conflicting after every attempt: busy, not broken; the client retries.
                Err(e) if is_retryable(&e) => return Err(StoreError::Unavailable(Box::new(e))),
                other => return other,
            }
        }
    }
}

/// Migrations run in one transaction holding an advisory lock, so processes starting together
/// apply each migration once.
struct PgMigrations<'a>(&'a Transaction<'a>);

impl MigrationTarget for PgMigrations<'_> {
    async fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>> {
        self.0.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
        self.0.batch_execute(migrate::CREATE_TABLE).await?;
        let sealed = "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() \
                      AND table_name = 'schema_migrations' AND column_name = 'checksum')";
        if !self.0.query_one(sealed, &[]).await?.get::<_, bool>(0) {
            self.0.batch_execute("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT").await?;
        }
        Ok(self
            .0
            .query("SELECT version, checksum FROM schema_migrations ORDER BY version", &[])
            .await?
            .iter()
            .map(|r| AppliedMigration { version: r.get(0), checksum: r.get(1) })
            .collect())
    }

    async fn seal(&mut self, version: i64, checksum: &str) -> StoreResult<()> {
        self.0.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1", &[&version, &checksum]).await?;
        Ok(())
    }

    async fn apply(&mut self, m: &Migration, checksum: &str, now_ms: i64) -> StoreResult<()> {
        self.0.batch_execute(m.sql).await?;
        self.0
            .execute("INSERT INTO schema_migrations (version, name, applied_at, checksum) VALUES ($1, $2, $3, $4)", &[&m.version, &m.name, &now_ms, &checksum])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.core.client().await?;
        let tx = client.transaction().await?;
        match migrate::run(&mut PgMigrations(&tx), migrate::POSTGRES).await {
            Ok(()) => Ok(tx.commit().await?),
            Err(e) => {
                // Explicitly, so the advisory lock and the table locks go now, not whenever the
                // dropped transaction's rollback gets sent.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.core.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    fn observe(&self) {
        let status = self.core.pool.status();
        crate::metrics::connections("postgres", status.size.saturating_sub(status.available), status.available, status.waiting);
    }
}
