//! The PostgreSQL backend, for production and for several `coins serve` processes sharing one
//! database.
//!
//! Exactly-once across processes rests on the database, not on this process: the `requests`
//! primary key decides which of two concurrent duplicates applies (the loser waits for the
//! winner's commit, then replays it), and `SELECT ... FOR UPDATE` on the user's row serialises
//! everything that changes one balance, so caps and balances stay exact. A transaction that hits
//! a deadlock or serialization failure is retried whole; it had no effect.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::{NoTls, Row, error::SqlState};

use super::config_cache::Resolved;
use super::migrate;
use super::pg_listen::{self, CONFIGS_CHANNEL, Caches};
use super::*;
use crate::domain::config::{self as cfg, ConfigValues};
use crate::domain::lots::{self, OpenLot, debit_order};
use crate::domain::{CoinConfig, CoinConfigId, Coins, CompanyId, ConfigKind, EventName, UserId};

/// Connections per process; PostgreSQL's default max_connections (100) allows several processes.
const POOL_MAX: usize = 16;
/// Attempts for a transaction that PostgreSQL aborted to break a deadlock or serialization cycle.
const TX_ATTEMPTS_MAX: usize = 5;

/// An arbitrary constant naming the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x636f_696e_73;

pub struct PgStore {
    pool: Pool,
    /// Group commit for single allocations; `None` when turned off (one transaction each).
    batcher: Option<Batcher>,
    /// Resolved configurations and balances; live only while `listener` is listening.
    caches: Arc<Caches>,
    _listener: Option<pg_listen::Listener>,
    /// Tells other processes about balance changes after each commit (with the listener).
    notifier: Option<Arc<pg_listen::Notifier>>,
}

/// Most allocations one group-commit transaction carries.
const GROUP_BATCH_MAX: usize = 512;
/// Group-commit transactions in flight at once; each holds one pooled connection.
const GROUP_IN_FLIGHT_MAX: usize = 4;
/// Allocations that may wait for a group-commit slot before callers get 503 + Retry-After.
const GROUP_QUEUE_MAX: usize = 16_384;

type Pending = (AllocateCmd, tokio::sync::oneshot::Sender<StoreResult<AllocateOk>>);

/// Gathers concurrent single allocations into shared transactions. A dispatcher waits for a free
/// slot, then takes everything queued (up to `GROUP_BATCH_MAX`) as one batch; while the slots
/// are busy the queue grows, so batches grow with load and each commit carries more requests.
struct Batcher {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

impl Batcher {
    fn start(store: PgStore) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(GROUP_QUEUE_MAX);
        let store = std::sync::Arc::new(store);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(GROUP_IN_FLIGHT_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < GROUP_BATCH_MAX {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let store = store.clone();
                tokio::spawn(async move {
                    let (cmds, replies): (Vec<AllocateCmd>, Vec<_>) = batch.into_iter().unzip();
                    let results = store.allocate_now(cmds).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                    drop(permit);
                });
            }
        });
        Self { queue }
    }

    async fn submit(&self, cmd: AllocateCmd) -> StoreResult<AllocateOk> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.try_send((cmd, reply)).map_err(|_| StoreError::Unavailable("the allocation queue is full".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the group-commit worker stopped".into()))?
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => e.into(),
        other => StoreError::Unavailable(format!("postgres pool: {other}")),
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// Errors inside a transaction keep the raw driver error so the retry loop can classify it.
enum TxError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl From<Refusal> for TxError {
    fn from(r: Refusal) -> Self {
        TxError::Store(r.into())
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Pg(e) => e.into(),
            TxError::Store(e) => e,
        }
    }
}

type TxResult<T> = Result<T, TxError>;

const CLIENT_COLUMNS: &str =
    "client_id, name, secret_hash, is_admin, companies, created_at, revoked_at, failed_attempts, locked_until";

fn client_from_row(row: &Row) -> ClientRecord {
    ClientRecord {
        client_id: row.get(0),
        name: row.get(1),
        secret_hash: row.get(2),
        admin: row.get(3),
        companies: split_companies(row.get::<_, &str>(4)),
        created_at_ms: row.get(5),
        revoked_at_ms: row.get(6),
        failed_attempts: row.get(7),
        locked_until_ms: row.get(8),
    }
}

const CONFIG_COLUMNS: &str =
    "seq, configuration, company_id, event, amount, validity_days, max_per_user_per_day, max_per_user, active, version";

fn config_from_row(row: &Row) -> CoinConfig {
    CoinConfig {
        id: CoinConfigId::from_seq(row.get(0)),
        values: ConfigValues {
            kind: ConfigKind::parse(row.get(1)).unwrap_or(ConfigKind::Custom),
            company_id: CompanyId::from_trusted(row.get(2)),
            event: EventName::from_trusted(row.get(3)),
            amount: Coins::from_stored(row.get(4)),
            validity_days: row.get(5),
            max_per_user_per_day: row.get(6),
            max_per_user: row.get(7),
            active: row.get(8),
        },
        version: row.get(9),
    }
}

impl PgStore {
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Db(format!("bad database url: {e}")))?;
        let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_MAX)
            .build()
            .map_err(|e| StoreError::Db(format!("building postgres pool: {e}")))?;
        let caches = Arc::new(Caches::new());
        let notifier = options.listen.then(|| Arc::new(pg_listen::Notifier::spawn(config.clone())));
        let listener = options.listen.then(|| pg_listen::spawn(config, caches.clone()));
        let batcher = options.group_commit.then(|| {
            Batcher::start(PgStore { pool: pool.clone(), batcher: None, caches: caches.clone(), _listener: None, notifier: notifier.clone() })
        });
        Ok(Self { pool, batcher, caches, _listener: listener, notifier })
    }

    /// After a commit that changed these users' balances: at once here, soon everywhere else.
    fn balances_changed<'a>(&self, users: impl IntoIterator<Item = &'a str> + Clone) {
        for user in users.clone() {
            self.caches.balances.invalidate(user);
        }
        if let Some(n) = &self.notifier {
            n.changed(users);
        }
    }

    /// Applies these allocations in one transaction now. If the batch fails as a whole for a
    /// reason other than a refusal (which the function answers per item), each item is retried
    /// alone, so one broken item never fails or loses its neighbours.
    async fn allocate_now(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>> {
        let n = cmds.len();
        let batch = cmds.clone();
        let caches = self.caches.clone();
        let outcome = self
            .transact(move |tx| {
                let (batch, caches) = (batch.clone(), caches.clone());
                Box::pin(async move { allocate_batch(tx, &batch, &caches).await })
            })
            .await;
        match outcome {
            Ok(results) => {
                let changed = cmds.iter().zip(&results).filter(|(_, r)| matches!(r, Ok(AllocateOk::Allocated { .. })));
                self.balances_changed(changed.map(|(c, _)| c.user.as_str()));
                results
            }
            Err(e) => {
                // A COMMIT can succeed and still be reported as failed (connection lost): the
                // users may have changed, so their cached balances go, here and elsewhere.
                self.balances_changed(cmds.iter().map(|c| c.user.as_str()));
                if n == 1 {
                    return vec![Err(e)];
                }
                tracing::warn!(error = %e, items = n, "allocation batch failed; applying its items one by one");
                let mut results = Vec::with_capacity(n);
                for cmd in cmds {
                    results.push(Box::pin(self.allocate_now(vec![cmd])).await.pop().unwrap_or_else(|| Err(StoreError::Db("no result".into()))));
                }
                results
            }
        }
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs `work` in a transaction, retrying it whole after a deadlock or serialization failure.
    async fn transact<T, F>(&self, mut work: F) -> StoreResult<T>
    where
        F: for<'t> FnMut(&'t Transaction<'t>) -> std::pin::Pin<Box<dyn Future<Output = TxResult<T>> + Send + 't>>,
    {
        let mut client = self.client().await?;
        let mut attempt = 1;
        loop {
            let tx = client.transaction().await?;
            let outcome = work(&tx).await;
            let outcome = match outcome {
                Ok(value) => tx.commit().await.map(|()| value).map_err(TxError::Pg),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Err(TxError::Pg(e)) if is_retryable(&e) && attempt < TX_ATTEMPTS_MAX => {
                    tracing::debug!(attempt, error = ?e, "retrying postgres transaction");
                    attempt += 1;
                }
                other => return other.map_err(StoreError::from),
            }
        }
    }
}

async fn conflicting_config(tx: &impl GenericClient, values: &ConfigValues, except_seq: i64) -> TxResult<Option<CoinConfigId>> {
    let row = match values.kind {
        ConfigKind::Default => {
            let stmt = tx.prepare_cached("SELECT seq FROM coin_configs WHERE configuration = 'DEFAULT' AND event = $1 AND seq <> $2").await?;
            tx.query_opt(&stmt, &[&values.event.as_str(), &except_seq]).await?
        }
        ConfigKind::Custom => {
            let stmt = tx
                .prepare_cached(
                    "SELECT seq FROM coin_configs WHERE configuration = 'CUSTOM' AND company_id = $1 AND event = $2 AND seq <> $3",
                )
                .await?;
            tx.query_opt(&stmt, &[&values.company_id.as_str(), &values.event.as_str(), &except_seq]).await?
        }
    };
    Ok(row.map(|r| CoinConfigId::from_seq(r.get(0))))
}

async fn insert_audit(tx: &Transaction<'_>, seq: i64, action: &str, actor: &str, now_ms: i64, before: Option<String>, after: String) -> TxResult<()> {
    let stmt = tx
        .prepare_cached("INSERT INTO coin_config_audit (seq, action, client_id, at, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6)")
        .await?;
    tx.execute(&stmt, &[&seq, &action, &actor, &now_ms, &before, &after]).await?;
    Ok(())
}

/// The visible balance (stored balance less lots past expiry that are not written off yet) and
/// when it will next drop by itself (the soonest unexpired lot expiry).
const BALANCE_WITH_NEXT_EXPIRY_SQL: &str = "SELECT u.company_id, \
     u.balance - COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at <= $2), 0)::BIGINT, \
     (SELECT MIN(l.expires_at) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at > $2) \
     FROM users u WHERE u.user_id = $1";

/// The configuration each allocation resolves to (SPEC §1), from the cache where possible; the
/// misses are resolved with one query and cached. One resolution per (company, event) per batch,
/// so every item of a pair is decided under the same configuration.
async fn resolve_configs(tx: &Transaction<'_>, cmds: &[AllocateCmd], caches: &Caches) -> TxResult<Vec<Resolved>> {
    let mut resolved: HashMap<(&str, &str), Resolved> = HashMap::new();
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for cmd in cmds {
        let key = (cmd.company.as_str(), cmd.event.as_str());
        if resolved.contains_key(&key) || missing.contains(&key) {
            continue;
        }
        match caches.configs.get(key.0, key.1) {
            Some(hit) => {
                resolved.insert(key, hit);
            }
            None => missing.push(key),
        }
    }
    if !missing.is_empty() {
        let generation = caches.configs.generation();
        let events: Vec<&str> = missing.iter().map(|k| k.1).collect();
        let companies: Vec<&str> = missing.iter().map(|k| k.0).collect();
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE event = ANY($1) AND (configuration = 'DEFAULT' OR company_id = ANY($2))"
            ))
            .await?;
        let candidates: Vec<CoinConfig> = tx.query(&stmt, &[&events, &companies]).await?.iter().map(config_from_row).collect();
        let mut fills = Vec::with_capacity(missing.len());
        for (company, event) in missing {
            let custom = candidates.iter().find(|c| {
                c.values.kind == ConfigKind::Custom && c.values.company_id.as_str() == company && c.values.event.as_str() == event
            });
            let default = candidates.iter().find(|c| c.values.kind == ConfigKind::Default && c.values.event.as_str() == event);
            let value = cfg::resolve(custom, default).cloned();
            fills.push((company.to_owned(), event.to_owned(), value.clone()));
            resolved.insert((company, event), value);
        }
        caches.configs.fill(generation, fills);
    }
    Ok(cmds.iter().map(|c| resolved.get(&(c.company.as_str(), c.event.as_str())).cloned().flatten()).collect())
}

/// Applies a batch of allocations with the set-based `coins_allocate_set` function (see
/// migrations/postgres/0003): a handful of statements whatever the batch size; a lone item goes
/// to `coins_allocate_one`, cheaper when there is nothing to share. A request id that
/// occurs twice in the batch starts a later call in the same transaction, where it finds the
/// first occurrence and replays it, exactly as two requests one after the other would.
async fn allocate_batch(tx: &Transaction<'_>, cmds: &[AllocateCmd], caches: &Caches) -> TxResult<Vec<StoreResult<AllocateOk>>> {
    let configs = resolve_configs(tx, cmds, caches).await?;
    let mut results: Vec<Option<StoreResult<AllocateOk>>> = cmds.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..cmds.len()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT out_idx, out_status, out_coins, out_balance, out_entry \
             FROM coins_allocate_set($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    let one = tx
        .prepare_cached(
            "SELECT out_idx, out_status, out_coins, out_balance, out_entry \
             FROM coins_allocate_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    while !pending.is_empty() {
        // The longest run of items without a repeated request id: later items must see the
        // effects of earlier ones, so a round is always a consecutive run.
        let mut seen = std::collections::HashSet::new();
        let cut = pending.iter().position(|&i| !seen.insert((cmds[i].company.as_str(), cmds[i].request_id.as_str()))).unwrap_or(pending.len());
        let later = pending.split_off(cut);
        let round = pending;
        let pick = |f: &dyn Fn(&AllocateCmd) -> &str| -> Vec<&str> { round.iter().map(|&i| f(&cmds[i])).collect() };
        let companies = pick(&|c| c.company.as_str());
        let users = pick(&|c| c.user.as_str());
        let events = pick(&|c| c.event.as_str());
        let requests = pick(&|c| c.request_id.as_str());
        let nows: Vec<i64> = round.iter().map(|&i| cmds[i].now_ms).collect();
        let config = |f: &dyn Fn(&CoinConfig) -> Option<i64>| -> Vec<Option<i64>> {
            round.iter().map(|&i| configs[i].as_ref().and_then(f)).collect()
        };
        let seqs = config(&|c| Some(c.id.seq()));
        let amounts = config(&|c| Some(c.values.amount.get()));
        let validity = config(&|c| c.values.validity_days);
        let cap_day = config(&|c| c.values.max_per_user_per_day);
        let cap_ever = config(&|c| c.values.max_per_user);
        let rows = if let [i] = round[..] {
            let (c, cfg) = (&cmds[i], configs[i].as_ref());
            let field = |f: &dyn Fn(&CoinConfig) -> Option<i64>| cfg.and_then(f);
            tx.query(
                &one,
                &[
                    &c.company.as_str(),
                    &c.user.as_str(),
                    &c.event.as_str(),
                    &c.request_id.as_str(),
                    &c.now_ms,
                    &field(&|c| Some(c.id.seq())),
                    &field(&|c| Some(c.values.amount.get())),
                    &field(&|c| c.values.validity_days),
                    &field(&|c| c.values.max_per_user_per_day),
                    &field(&|c| c.values.max_per_user),
                ],
            )
            .await?
        } else {
            tx.query(&stmt, &[&companies, &users, &events, &requests, &nows, &seqs, &amounts, &validity, &cap_day, &cap_ever]).await?
        };
        if rows.len() != round.len() {
            return Err(TxError::Store(StoreError::Db(format!("coins_allocate_set answered {} of {} items", rows.len(), round.len()))));
        }
        for row in &rows {
            // out_idx is 1-based within this call; rows come in no particular order.
            let i = usize::try_from(row.get::<_, i32>(0)).ok().and_then(|k| k.checked_sub(1)).and_then(|k| round.get(k).copied());
            let Some(i) = i.filter(|&i| results[i].is_none()) else {
                return Err(TxError::Store(StoreError::Db("coins_allocate_set answered an unknown or repeated item".into())));
            };
            results[i] = Some(allocation_outcome(row, &cmds[i])?);
        }
        pending = later;
    }
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(StoreError::Db("allocation not answered".into())))).collect())
}

/// One row of `coins_allocate_set`, as the item's answer. `ALONE` fails the whole transaction:
/// the caller then applies the items one by one.
fn allocation_outcome(row: &Row, cmd: &AllocateCmd) -> TxResult<StoreResult<AllocateOk>> {
    let coins: Option<i64> = row.get(2);
    let status: &str = row.get(1);
    Ok(match status {
        "ALLOCATED" => Ok(AllocateOk::Allocated {
            coins: Coins::from_stored(coins.unwrap_or(0)),
            balance: Coins::from_stored(row.get::<_, Option<i64>>(3).unwrap_or(0)),
            entry_id: row.get::<_, Option<i64>>(4).unwrap_or(0),
        }),
        "REPLAYED" => Ok(AllocateOk::Replayed { coins: Coins::from_stored(coins.unwrap_or(0)) }),
        "REQUEST_ID_CONFLICT" => Err(Refusal::RequestIdConflict(cmd.request_id.clone()).into()),
        "CONFIG_NOT_FOUND" => Err(Refusal::ConfigNotFound { company: cmd.company.clone(), event: cmd.event.clone() }.into()),
        "USER_COMPANY_MISMATCH" => Err(Refusal::UserCompanyMismatch { user: cmd.user.clone(), company: cmd.company.clone() }.into()),
        "LIMIT_PER_DAY" => Err(Refusal::LimitReached(cap_message(cmd, "maxPerUserPerDay", coins.unwrap_or(0))).into()),
        "LIMIT_EVER" => Err(Refusal::LimitReached(cap_message(cmd, "maxPerUser", coins.unwrap_or(0))).into()),
        "BALANCE_OVERFLOW" => Err(Refusal::BalanceOverflow(cmd.user.clone()).into()),
        "ALONE" => return Err(TxError::Store(StoreError::Db("this batch needs its items applied one by one".into()))),
        other => Err(StoreError::Db(format!("coins_allocate_set returned unknown status {other}"))),
    })
}

/// Tells every process that configurations changed (delivered on commit).
async fn notify_configs(tx: &Transaction<'_>) -> TxResult<()> {
    tx.execute("SELECT pg_notify($1, '')", &[&CONFIGS_CHANNEL]).await?;
    Ok(())
}

/// See the SQLite twin: reserves an attempt unless locked; locks at the maximum.
macro_rules! lockout_update {
    ($table:literal, $filter:literal) => {
        concat!(
            "UPDATE ", $table, " SET ",
            "failed_attempts = CASE WHEN locked_until IS NOT NULL AND locked_until <= $1 THEN 1 ELSE failed_attempts + 1 END, ",
            "locked_until = CASE WHEN locked_until IS NOT NULL AND locked_until <= $1 THEN NULL ",
            "WHEN failed_attempts + 1 >= $2 THEN $1 + $3 ELSE locked_until END ",
            "WHERE ", $filter, " AND (locked_until IS NULL OR locked_until <= $1)"
        )
    };
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
        tx.batch_execute(migrate::CREATE_TABLE).await?;
        for m in migrate::POSTGRES {
            let done: bool = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", &[&m.version])
                .await?
                .get(0);
            if !done {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &crate::clock::system_now_ms()],
                )
                .await?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn insert_client(&self, c: ClientRecord) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                &format!("INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                &[
                    &c.client_id,
                    &c.name,
                    &c.secret_hash,
                    &c.admin,
                    &join_companies(&c.companies),
                    &c.created_at_ms,
                    &c.revoked_at_ms,
                    &c.failed_attempts,
                    &c.locked_until_ms,
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1")).await?;
        Ok(client.query_opt(&stmt, &[&client_id]).await?.as_ref().map(client_from_row))
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let rows = self.client().await?.query(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id"), &[]).await?;
        Ok(rows.iter().map(client_from_row).collect())
    }

    async fn count_clients(&self) -> StoreResult<i64> {
        Ok(self.client().await?.query_one("SELECT COUNT(*) FROM clients", &[]).await?.get(0))
    }

    async fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<bool> {
        let id = client_id.to_owned();
        self.transact(move |tx| {
            let id = id.clone();
            Box::pin(async move {
                tx.execute("UPDATE clients SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL", &[&id, &now_ms]).await?;
                tx.execute("DELETE FROM tokens WHERE client_id = $1", &[&id]).await?;
                Ok(tx.query_one("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = $1)", &[&id]).await?.get(0))
            })
        })
        .await
    }

    async fn upsert_password_user(&self, client_id: &str, username: &str, password_hash: &str, now_ms: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let exists: bool = client.query_one("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = $1)", &[&client_id]).await?.get(0);
        if !exists {
            return Ok(false);
        }
        client
            .execute(
                "INSERT INTO password_users (client_id, username, password_hash, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (client_id, username) DO UPDATE SET password_hash = excluded.password_hash, \
                 failed_attempts = 0, locked_until = NULL",
                &[&client_id, &username, &password_hash, &now_ms],
            )
            .await?;
        Ok(true)
    }

    async fn get_password_user(&self, client_id: &str, username: &str) -> StoreResult<Option<PasswordUserRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT client_id, username, password_hash, failed_attempts, locked_until FROM password_users \
                 WHERE client_id = $1 AND username = $2",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&client_id, &username]).await?.map(|r| PasswordUserRecord {
            client_id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            failed_attempts: r.get(3),
            locked_until_ms: r.get(4),
        }))
    }

    async fn reserve_auth_attempt(&self, who: AuthSubject<'_>, now_ms: i64, policy: LockoutPolicy) -> StoreResult<bool> {
        let client = self.client().await?;
        let reserved = match who {
            AuthSubject::Client(id) => {
                client
                    .execute(lockout_update!("clients", "client_id = $4"), &[&now_ms, &policy.max_failures, &policy.lock_ms, &id])
                    .await?
            }
            AuthSubject::PasswordUser { client_id, username } => {
                client
                    .execute(
                        lockout_update!("password_users", "client_id = $4 AND username = $5"),
                        &[&now_ms, &policy.max_failures, &policy.lock_ms, &client_id, &username],
                    )
                    .await?
            }
        };
        Ok(reserved == 1)
    }

    async fn record_auth_success(&self, who: AuthSubject<'_>) -> StoreResult<()> {
        let client = self.client().await?;
        match who {
            AuthSubject::Client(id) => {
                client
                    .execute("UPDATE clients SET failed_attempts = 0, locked_until = NULL WHERE client_id = $1", &[&id])
                    .await?
            }
            AuthSubject::PasswordUser { client_id, username } => {
                client
                    .execute(
                        "UPDATE password_users SET failed_attempts = 0, locked_until = NULL WHERE client_id = $1 AND username = $2",
                        &[&client_id, &username],
                    )
                    .await?
            }
        };
        Ok(())
    }

    async fn insert_tokens(&self, tokens: Vec<TokenRecord>) -> StoreResult<()> {
        self.transact(move |tx| {
            let tokens = tokens.clone();
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO tokens (token_hash, kind, client_id, username, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .await?;
                for t in &tokens {
                    tx.execute(&stmt, &[&t.token_hash, &t.kind.as_str(), &t.client_id, &t.username, &t.created_at_ms, &t.expires_at_ms])
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn lookup_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<(TokenRecord, ClientRecord)>> {
        let client = self.client().await?;
        let cols = CLIENT_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {cols}, t.username, t.created_at, t.expires_at FROM tokens t JOIN clients c ON c.client_id = t.client_id \
                 WHERE t.token_hash = $1 AND t.kind = 'access' AND t.expires_at > $2 AND c.revoked_at IS NULL"
            ))
            .await?;
        Ok(client.query_opt(&stmt, &[&token_hash, &now_ms]).await?.map(|r| {
            let c = client_from_row(&r);
            (
                TokenRecord {
                    token_hash: token_hash.to_owned(),
                    kind: TokenKind::Access,
                    client_id: c.client_id.clone(),
                    username: r.get(9),
                    created_at_ms: r.get(10),
                    expires_at_ms: r.get(11),
                },
                c,
            )
        }))
    }

    async fn consume_refresh_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE tokens SET used_at = $2 WHERE token_hash = $1 AND kind = 'refresh' AND used_at IS NULL AND expires_at > $2 \
                 RETURNING client_id, username, created_at, expires_at",
                &[&token_hash, &now_ms],
            )
            .await?;
        Ok(row.map(|r| TokenRecord {
            token_hash: token_hash.to_owned(),
            kind: TokenKind::Refresh,
            client_id: r.get(0),
            username: r.get(1),
            created_at_ms: r.get(2),
            expires_at_ms: r.get(3),
        }))
    }

    async fn create_config(&self, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let actor = actor.to_owned();
        let v = values.clone();
        let outcome = self
            .transact(move |tx| {
                let (v, actor) = (v.clone(), actor.clone());
                Box::pin(async move {
                    if let Some(existing) = conflicting_config(tx, &v, -1).await? {
                        return Err(duplicate(existing, &v).into());
                    }
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO coin_configs (configuration, company_id, event, amount, validity_days, max_per_user_per_day, \
                             max_per_user, active, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9) \
                             RETURNING seq",
                        )
                        .await?;
                    let seq: i64 = tx
                        .query_one(
                            &stmt,
                            &[
                                &v.kind.as_str(),
                                &v.company_id.as_str(),
                                &v.event.as_str(),
                                &v.amount.get(),
                                &v.validity_days,
                                &v.max_per_user_per_day,
                                &v.max_per_user,
                                &v.active,
                                &now_ms,
                            ],
                        )
                        .await?
                        .get(0);
                    insert_audit(tx, seq, "CREATE", &actor, now_ms, None, audit_json(&v)).await?;
                    notify_configs(tx).await?;
                    Ok(CoinConfig { id: CoinConfigId::from_seq(seq), values: v, version: 1 })
                })
            })
            .await;
        // At once in this process; other processes clear on the notification.
        self.caches.configs.clear();
        self.explain_unique_violation(outcome, &values, -1).await
    }

    async fn get_config(&self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = $1")).await?;
        Ok(client.query_opt(&stmt, &[&id.seq()]).await?.as_ref().map(config_from_row))
    }

    async fn update_config(&self, id: CoinConfigId, expected_version: i64, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let actor = actor.to_owned();
        let v = values.clone();
        let outcome = self
            .transact(move |tx| {
                let (v, actor) = (v.clone(), actor.clone());
                Box::pin(async move {
                    let stmt = tx.prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = $1 FOR UPDATE")).await?;
                    let before = tx
                        .query_opt(&stmt, &[&id.seq()])
                        .await?
                        .as_ref()
                        .map(config_from_row)
                        .ok_or_else(|| Refusal::UnknownConfig(id.to_string()))?;
                    if before.version != expected_version {
                        return Err(Refusal::ConcurrentUpdate(id).into());
                    }
                    if let Some(existing) = conflicting_config(tx, &v, id.seq()).await? {
                        return Err(duplicate(existing, &v).into());
                    }
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE coin_configs SET configuration = $2, company_id = $3, event = $4, amount = $5, validity_days = $6, \
                             max_per_user_per_day = $7, max_per_user = $8, active = $9, version = version + 1, updated_at = $10 WHERE seq = $1",
                        )
                        .await?;
                    tx.execute(
                        &stmt,
                        &[
                            &id.seq(),
                            &v.kind.as_str(),
                            &v.company_id.as_str(),
                            &v.event.as_str(),
                            &v.amount.get(),
                            &v.validity_days,
                            &v.max_per_user_per_day,
                            &v.max_per_user,
                            &v.active,
                            &now_ms,
                        ],
                    )
                    .await?;
                    insert_audit(tx, id.seq(), "UPDATE", &actor, now_ms, Some(audit_json(&before.values)), audit_json(&v)).await?;
                    notify_configs(tx).await?;
                    Ok(CoinConfig { id, values: v, version: expected_version + 1 })
                })
            })
            .await;
        self.caches.configs.clear();
        self.explain_unique_violation(outcome, &values, id.seq()).await
    }

    async fn allocate(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>> {
        match (&self.batcher, cmds.len()) {
            (Some(batcher), 1) => {
                let cmd = cmds.into_iter().next().expect("one command");
                vec![batcher.submit(cmd).await]
            }
            _ => self.allocate_now(cmds).await,
        }
    }

    async fn balance(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserBalance>> {
        if let Some(cached) = self.caches.balances.get(user.as_str(), now_ms) {
            return Ok(cached);
        }
        let ticket = self.caches.balances.ticket(user.as_str());
        let client = self.client().await?;
        let stmt = client.prepare_cached(BALANCE_WITH_NEXT_EXPIRY_SQL).await?;
        let row = client.query_opt(&stmt, &[&user.as_str(), &now_ms]).await?;
        let (balance, next_expiry) = match row {
            Some(r) => (Some(UserBalance { company: CompanyId::from_trusted(r.get(0)), balance: Coins::from_stored(r.get(1)) }), r.get(2)),
            None => (None, None),
        };
        self.caches.balances.fill(user.as_str(), ticket, balance.clone(), next_expiry);
        Ok(balance)
    }

    async fn list_configs(&self, filter: ConfigFilter) -> StoreResult<Vec<CoinConfig>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE ($1::TEXT IS NULL OR company_id = $1) AND ($2::TEXT IS NULL OR event = $2) \
                 AND ($3::TEXT IS NULL OR configuration = $3) ORDER BY seq"
            ))
            .await?;
        let company = filter.company.as_ref().map(CompanyId::as_str);
        let event = filter.event.as_ref().map(EventName::as_str);
        let kind = filter.kind.map(ConfigKind::as_str);
        Ok(client.query(&stmt, &[&company, &event, &kind]).await?.iter().map(config_from_row).collect())
    }

    async fn config_history(&self, id: CoinConfigId) -> StoreResult<Vec<AuditRecord>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT action, client_id, at, before_json, after_json FROM coin_config_audit WHERE seq = $1 ORDER BY audit_id", &[&id.seq()])
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditRecord { action: r.get(0), client_id: r.get(1), at_ms: r.get(2), before_json: r.get(3), after_json: r.get(4) })
            .collect())
    }

    async fn set_coin_value(&self, value: CoinValue, actor: &str, now_ms: i64) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO coin_values (company_id, currency, minor_units_per_coin, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (company_id) DO UPDATE SET currency = excluded.currency, \
                 minor_units_per_coin = excluded.minor_units_per_coin, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                &[&coin_value_key(value.company.as_ref()), &value.currency, &value.minor_units_per_coin, &actor, &now_ms],
            )
            .await?;
        Ok(())
    }

    async fn coin_value(&self, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
        let client = self.client().await?;
        Ok(coin_value_in(&client, company).await?)
    }

    async fn redeem(&self, cmd: RedeemCmd) -> StoreResult<Applied<RedeemReceipt>> {
        let user = cmd.user.clone();
        let outcome = self
            .transact(move |tx| {
                let cmd = cmd.clone();
                Box::pin(async move { redeem_one(tx, &cmd).await })
            })
            .await;
        self.balances_changed([user.as_str()]);
        outcome
    }

    async fn reverse(&self, cmd: ReverseCmd) -> StoreResult<Applied<ReverseReceipt>> {
        let outcome = self
            .transact(move |tx| {
                let cmd = cmd.clone();
                Box::pin(async move { reverse_one(tx, &cmd).await })
            })
            .await;
        // The reversed request names no user; reversals are rare enough to drop everything.
        self.caches.balances.invalidate_all();
        if let Some(n) = &self.notifier {
            n.changed_unknown();
        }
        outcome
    }

    async fn settle_expired(&self, user: &UserId, now_ms: i64) -> StoreResult<()> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT l.company_id FROM users u JOIN lots l ON l.company_id = u.company_id AND l.user_id = u.user_id \
                 WHERE u.user_id = $1 AND l.remaining > 0 AND l.expires_at <= $2 LIMIT 1",
                &[&user.as_str(), &now_ms],
            )
            .await?;
        drop(client);
        if let Some(row) = row {
            self.settle_user(row.get(0), user.to_string(), now_ms).await?;
        }
        Ok(())
    }

    async fn sweep_expired(&self, now_ms: i64) -> StoreResult<u64> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT DISTINCT company_id, user_id FROM lots WHERE remaining > 0 AND expires_at <= $1 LIMIT {SWEEP_USERS_MAX}"),
                &[&now_ms],
            )
            .await?;
        let mut expired = 0;
        for row in rows {
            let (company, user): (String, String) = (row.get(0), row.get(1));
            // One user's failure must not hold up everyone else's expiry.
            match self.settle_user(company, user.clone(), now_ms).await {
                Ok(n) => expired += n,
                Err(e) => tracing::error!(%user, error = %e, "expiring this user's lots failed; will retry next pass"),
            }
        }
        Ok(expired)
    }

    async fn user_summary(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>> {
        let client = self.client().await?;
        let Some(r) = client
            .query_opt(
                "SELECT u.company_id, u.balance, u.lifetime_earned, u.lifetime_redeemed, u.lifetime_expired, \
                 COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at <= $2), 0)::BIGINT FROM users u WHERE u.user_id = $1",
                &[&user.as_str(), &now_ms],
            )
            .await?
        else {
            return Ok(None);
        };
        let company: String = r.get(0);
        let unswept: i64 = r.get(5);
        let soon = client
            .query(
                "SELECT remaining, expires_at FROM lots WHERE company_id = $1 AND user_id = $2 AND remaining > 0 \
                 AND expires_at > $3 AND expires_at <= $4 ORDER BY expires_at, lot_id",
                &[&company, &user.as_str(), &now_ms, &(now_ms + EXPIRING_SOON_DAYS * cfg::DAY_MS)],
            )
            .await?;
        Ok(Some(UserSummary {
            user: user.clone(),
            company: CompanyId::from_trusted(company),
            balance: r.get::<_, i64>(1) - unswept,
            lifetime_earned: r.get(2),
            lifetime_redeemed: r.get(3),
            lifetime_expired: r.get::<_, i64>(4) + unswept,
            expiring_soon: soon.iter().map(|s| (s.get(0), s.get(1))).collect(),
        }))
    }

    async fn transactions(&self, user: &UserId, before_entry_id: Option<i64>, limit: i64) -> StoreResult<Vec<LedgerEntry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT e.entry_id, e.type, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.created_at, e.expires_at \
                 FROM users u JOIN ledger_entries e ON e.company_id = u.company_id AND e.user_id = u.user_id \
                 WHERE u.user_id = $1 AND e.entry_id < $2 ORDER BY e.entry_id DESC LIMIT $3",
            )
            .await?;
        Ok(client.query(&stmt, &[&user.as_str(), &before_entry_id.unwrap_or(i64::MAX), &limit]).await?.iter().map(entry_from_row).collect())
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        let mut client = self.client().await?;
        // One snapshot for all checks, so a concurrent write cannot show up as a false difference;
        // a transaction object, so an early return rolls back instead of pooling an open one.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut report = VerifyReport {
            users_checked: tx.query_one("SELECT COUNT(*) FROM users", &[]).await?.get(0),
            entries_checked: tx.query_one("SELECT COUNT(*) FROM ledger_entries", &[]).await?.get(0),
            problems: Vec::new(),
        };
        for (sql, what) in VERIFY_CHECKS {
            for row in tx.query(*sql, &[]).await? {
                report.problems.push(format!("{what}: {}", row.get::<_, String>(0)));
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}

impl PgStore {
    /// Two processes creating the same configuration at once both pass the pre-check; the unique
    /// index stops the second. Name the winner, as a sequential conflict would.
    async fn explain_unique_violation(&self, outcome: StoreResult<CoinConfig>, values: &ConfigValues, except_seq: i64) -> StoreResult<CoinConfig> {
        match outcome {
            Err(StoreError::Unique(text)) => {
                let client = self.client().await?;
                match conflicting_config(&client, values, except_seq).await {
                    Ok(Some(existing)) => Err(duplicate(existing, values).into()),
                    _ => Err(StoreError::Unique(text)),
                }
            }
            other => other,
        }
    }
}

// ---- Lifecycle: redemption, reversal, expiry, reads (SPEC §5) ----
//
// Lock order: the request id (by inserting its row) -> the user's row (FOR UPDATE) -> the
// user's lots. Allocation batches lock their users first, in user_id order (see 0002). Any
// deadlock that remains possible is retried whole by `transact`.

struct PrevRequest {
    kind: String,
    user_id: String,
    fingerprint: String,
    original: Option<String>,
    response: Option<String>,
}

async fn prev_request(tx: &Transaction<'_>, company: &str, request_id: &str) -> TxResult<Option<PrevRequest>> {
    let stmt = tx
        .prepare_cached(
            "SELECT kind, user_id, fingerprint, original_request_id, response FROM requests WHERE company_id = $1 AND request_id = $2",
        )
        .await?;
    Ok(tx.query_opt(&stmt, &[&company, &request_id]).await?.map(|r| PrevRequest {
        kind: r.get(0),
        user_id: r.get(1),
        fingerprint: r.get(2),
        original: r.get(3),
        response: r.get(4),
    }))
}

fn stored_receipt<T: serde::de::DeserializeOwned>(prev: &PrevRequest) -> TxResult<Applied<T>> {
    let text = prev.response.as_deref().ok_or_else(|| TxError::Store(StoreError::Db("stored request has no response".into())))?;
    let receipt = serde_json::from_str(text).map_err(|e| TxError::Store(StoreError::Db(format!("stored response: {e}"))))?;
    Ok(Applied { receipt, replayed: true })
}

/// Locks the user's row and returns its balance; refuses unknown and other companies' users.
async fn lock_account(tx: &Transaction<'_>, company: &CompanyId, user: &UserId) -> TxResult<i64> {
    let stmt = tx.prepare_cached("SELECT company_id, balance FROM users WHERE user_id = $1 FOR UPDATE").await?;
    match tx.query_opt(&stmt, &[&user.as_str()]).await? {
        None => Err(Refusal::UserNotFound(user.clone()).into()),
        // Another company's user reads as never credited: scoping must not reveal who exists.
        Some(r) if r.get::<_, &str>(0) != company.as_str() => Err(Refusal::UserNotFound(user.clone()).into()),
        Some(r) => Ok(r.get(1)),
    }
}

async fn insert_entry(tx: &Transaction<'_>, e: &NewEntry<'_>) -> TxResult<i64> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING entry_id",
        )
        .await?;
    Ok(tx
        .query_one(
            &stmt,
            &[&e.company, &e.user, &e.kind, &e.coins, &e.balance_after, &e.event, &e.request_id, &e.coin_config_id, &e.now_ms, &e.expires_at],
        )
        .await?
        .get(0))
}

async fn apply_moves(tx: &Transaction<'_>, entry_id: i64, moves: &[(i64, i64)]) -> TxResult<()> {
    let update = tx.prepare_cached("UPDATE lots SET remaining = remaining + $2 WHERE lot_id = $1").await?;
    let record = tx.prepare_cached("INSERT INTO lot_moves (entry_id, lot_id, coins) VALUES ($1, $2, $3)").await?;
    for &(lot_id, coins) in moves {
        tx.execute(&update, &[&lot_id, &coins]).await?;
        tx.execute(&record, &[&entry_id, &lot_id, &coins]).await?;
    }
    Ok(())
}

async fn set_balance(tx: &Transaction<'_>, company: &str, user: &str, balance: i64, column: &str, delta: i64) -> TxResult<()> {
    // `column` is one of our own lifetime_* names, never user input.
    let stmt = tx
        .prepare_cached(&format!("UPDATE users SET balance = $3, {column} = {column} + $4 WHERE company_id = $1 AND user_id = $2"))
        .await?;
    tx.execute(&stmt, &[&company, &user, &balance, &delta]).await?;
    Ok(())
}

/// Writes one EXPIRE entry per due lot. The caller holds the user's row lock.
async fn expire_user(tx: &Transaction<'_>, company: &str, user: &str, balance: i64, now_ms: i64) -> TxResult<(u64, i64)> {
    let stmt = tx
        .prepare_cached(
            "SELECT l.lot_id, l.remaining, l.expires_at, e.event, e.coin_config_id FROM lots l \
             JOIN ledger_entries e ON e.entry_id = l.entry_id \
             WHERE l.company_id = $1 AND l.user_id = $2 AND l.remaining > 0 AND l.expires_at <= $3 ORDER BY l.expires_at, l.lot_id",
        )
        .await?;
    let due = tx.query(&stmt, &[&company, &user, &now_ms]).await?;
    if due.is_empty() {
        return Ok((0, balance));
    }
    let mut balance = balance;
    let mut expired = 0;
    for row in &due {
        let (lot_id, remaining, expires_at): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        balance -= remaining;
        expired += remaining;
        let entry = NewEntry {
            company,
            user,
            kind: "EXPIRE",
            coins: -remaining,
            balance_after: balance,
            event: row.get(3),
            request_id: None,
            coin_config_id: row.get(4),
            now_ms,
            expires_at: Some(expires_at),
        };
        let entry_id = insert_entry(tx, &entry).await?;
        apply_moves(tx, entry_id, &[(lot_id, -remaining)]).await?;
    }
    set_balance(tx, company, user, balance, "lifetime_expired", expired).await?;
    Ok((due.len() as u64, balance))
}

async fn open_lots(tx: &Transaction<'_>, company: &str, user: &str, now_ms: i64) -> TxResult<Vec<OpenLot>> {
    let stmt = tx
        .prepare_cached(
            "SELECT lot_id, remaining, expires_at FROM lots WHERE company_id = $1 AND user_id = $2 AND remaining > 0 \
             AND (expires_at IS NULL OR expires_at > $3)",
        )
        .await?;
    let mut lots: Vec<OpenLot> = tx
        .query(&stmt, &[&company, &user, &now_ms])
        .await?
        .iter()
        .map(|r| OpenLot { lot_id: r.get(0), remaining: r.get(1), expires_at: r.get(2) })
        .collect();
    lots.sort_by(debit_order);
    Ok(lots)
}

async fn coin_value_in(client: &impl GenericClient, company: Option<&CompanyId>) -> TxResult<CoinValue> {
    let stmt = client
        .prepare_cached(
            "SELECT company_id, currency, minor_units_per_coin FROM coin_values WHERE company_id IN ($1, '') ORDER BY company_id DESC LIMIT 1",
        )
        .await?;
    let row = client.query_opt(&stmt, &[&coin_value_key(company)]).await?;
    Ok(coin_value_from(row.map(|r| (r.get(0), r.get(1), r.get(2)))))
}

/// Claims a request id; `false` if another request (committed, or committing now) holds it.
async fn claim_request(
    tx: &Transaction<'_>,
    company: &str,
    request_id: &str,
    kind: &str,
    user: &str,
    fingerprint: &str,
    original: Option<&str>,
    now_ms: i64,
) -> TxResult<bool> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, original_request_id, created_at) \
             VALUES ($1, $2, $3, $4, NULL, 0, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .await?;
    Ok(tx.execute(&stmt, &[&company, &request_id, &kind, &user, &fingerprint, &original, &now_ms]).await? == 1)
}

async fn finish_request(tx: &Transaction<'_>, company: &str, request_id: &str, coins: i64, response: &str) -> TxResult<()> {
    let stmt = tx.prepare_cached("UPDATE requests SET coins = $3, response = $4 WHERE company_id = $1 AND request_id = $2").await?;
    tx.execute(&stmt, &[&company, &request_id, &coins, &response]).await?;
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> TxResult<String> {
    serde_json::to_string(value).map_err(|e| TxError::Store(StoreError::Db(e.to_string())))
}

async fn redeem_one(tx: &Transaction<'_>, cmd: &RedeemCmd) -> TxResult<Applied<RedeemReceipt>> {
    let (company, user) = (cmd.company.as_str(), cmd.user.as_str());
    let fingerprint = cmd.amount.fingerprint();
    let replay_or_conflict = |prev: Option<PrevRequest>| match prev {
        Some(p) if p.kind == "REDEEM" && p.user_id == user && p.fingerprint == fingerprint => stored_receipt(&p),
        _ => Err(Refusal::RequestIdConflict(cmd.request_id.clone()).into()),
    };
    if let Some(prev) = prev_request(tx, company, cmd.request_id.as_str()).await? {
        return replay_or_conflict(Some(prev));
    }
    if !claim_request(tx, company, cmd.request_id.as_str(), "REDEEM", user, &fingerprint, None, cmd.now_ms).await? {
        return replay_or_conflict(prev_request(tx, company, cmd.request_id.as_str()).await?);
    }
    let balance = lock_account(tx, &cmd.company, &cmd.user).await?;
    let (_, balance) = expire_user(tx, company, user, balance, cmd.now_ms).await?;
    let value = coin_value_in(tx, Some(&cmd.company)).await?;
    let (coins, amount_minor) = redemption_amounts(cmd.amount, value.minor_units_per_coin)?;
    let lots = open_lots(tx, company, user, cmd.now_ms).await?;
    let available: i64 = lots.iter().map(|l| l.remaining).sum();
    let takes = lots::take(lots, coins).ok_or_else(|| Refusal::InsufficientBalance { user: cmd.user.clone(), needed: coins, available })?;
    let balance = balance - coins;
    let receipt = RedeemReceipt { request_id: cmd.request_id.to_string(), coins, currency: value.currency, amount_minor, balance };
    let entry = NewEntry {
        company,
        user,
        kind: "REDEEM",
        coins: -coins,
        balance_after: balance,
        event: None,
        request_id: Some(cmd.request_id.as_str()),
        coin_config_id: None,
        now_ms: cmd.now_ms,
        expires_at: None,
    };
    let entry_id = insert_entry(tx, &entry).await?;
    apply_moves(tx, entry_id, &takes.iter().map(|&(lot, n)| (lot, -n)).collect::<Vec<_>>()).await?;
    set_balance(tx, company, user, balance, "lifetime_redeemed", coins).await?;
    finish_request(tx, company, cmd.request_id.as_str(), coins, &to_json(&receipt)?).await?;
    Ok(Applied { receipt, replayed: false })
}

async fn reverse_one(tx: &Transaction<'_>, cmd: &ReverseCmd) -> TxResult<Applied<ReverseReceipt>> {
    let company = cmd.company.as_str();
    let replay_or_conflict = |prev: Option<PrevRequest>| match prev {
        Some(p) if p.kind == "REVERSE" && p.original.as_deref() == Some(cmd.original.as_str()) => stored_receipt(&p),
        _ => Err(Refusal::RequestIdConflict(cmd.request_id.clone()).into()),
    };
    if let Some(prev) = prev_request(tx, company, cmd.request_id.as_str()).await? {
        return replay_or_conflict(Some(prev));
    }
    let original = prev_request(tx, company, cmd.original.as_str()).await?.ok_or_else(|| Refusal::OriginalNotFound(cmd.original.clone()))?;
    if original.kind == "REVERSE" {
        return Err(Refusal::NotReversible(cmd.original.clone()).into());
    }
    let user = original.user_id.as_str();
    let user_id = UserId::from_trusted(original.user_id.clone());
    if !claim_request(tx, company, cmd.request_id.as_str(), "REVERSE", user, cmd.original.as_str(), Some(cmd.original.as_str()), cmd.now_ms).await? {
        // Either this request id is taken, or another reversal of the same original holds the slot.
        return match prev_request(tx, company, cmd.request_id.as_str()).await? {
            Some(prev) => replay_or_conflict(Some(prev)),
            None => Err(Refusal::AlreadyReversed(cmd.original.clone()).into()),
        };
    }
    let balance = lock_account(tx, &cmd.company, &user_id).await?;
    let (_, balance) = expire_user(tx, company, user, balance, cmd.now_ms).await?;
    let stmt = tx
        .prepare_cached("SELECT entry_id, coins, event, coin_config_id FROM ledger_entries WHERE company_id = $1 AND request_id = $2 AND type = $3")
        .await?;
    let orig = tx.query_one(&stmt, &[&company, &cmd.original.as_str(), &original.kind]).await?;
    let (orig_entry, orig_coins): (i64, i64) = (orig.get(0), orig.get(1));
    let (delta, moves, column) = if original.kind == "ALLOCATE" {
        let lots = open_lots(tx, company, user, cmd.now_ms).await?;
        let stmt = tx.prepare_cached("SELECT lot_id FROM lots WHERE entry_id = $1").await?;
        let own: Vec<i64> = tx.query(&stmt, &[&orig_entry]).await?.iter().map(|r| r.get(0)).collect();
        let (first, rest): (Vec<OpenLot>, Vec<OpenLot>) = lots.into_iter().partition(|l| own.contains(&l.lot_id));
        let available: i64 = first.iter().chain(&rest).map(|l| l.remaining).sum();
        let takes = lots::take(first.into_iter().chain(rest), orig_coins)
            .ok_or_else(|| Refusal::InsufficientBalance { user: user_id.clone(), needed: orig_coins, available })?;
        (-orig_coins, takes.into_iter().map(|(lot, n)| (lot, -n)).collect::<Vec<_>>(), "lifetime_earned")
    } else {
        let stmt = tx.prepare_cached("SELECT lot_id, -coins FROM lot_moves WHERE entry_id = $1 ORDER BY lot_id").await?;
        let moves = tx.query(&stmt, &[&orig_entry]).await?.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<_>>();
        (-orig_coins, moves, "lifetime_redeemed")
    };
    let balance = balance + delta;
    let entry = NewEntry {
        company,
        user,
        kind: "REVERSE",
        coins: delta,
        balance_after: balance,
        event: orig.get(2),
        request_id: Some(cmd.request_id.as_str()),
        coin_config_id: orig.get(3),
        now_ms: cmd.now_ms,
        expires_at: None,
    };
    let entry_id = insert_entry(tx, &entry).await?;
    apply_moves(tx, entry_id, &moves).await?;
    set_balance(tx, company, user, balance, column, -delta.abs()).await?;
    let (_, balance) = expire_user(tx, company, user, balance, cmd.now_ms).await?;
    let receipt = ReverseReceipt { request_id: cmd.request_id.to_string(), original_request_id: cmd.original.to_string(), coins: delta, balance };
    finish_request(tx, company, cmd.request_id.as_str(), delta.abs(), &to_json(&receipt)?).await?;
    Ok(Applied { receipt, replayed: false })
}

fn entry_from_row(r: &Row) -> LedgerEntry {
    LedgerEntry {
        entry_id: r.get(0),
        kind: r.get(1),
        coins: r.get(2),
        balance_after: r.get(3),
        event: r.get(4),
        request_id: r.get(5),
        coin_config_id: r.get(6),
        created_at_ms: r.get(7),
        expires_at_ms: r.get(8),
    }
}

impl PgStore {
    /// Expires one user's due lots in its own transaction (under the user's row lock).
    async fn settle_user(&self, company: String, user: String, now_ms: i64) -> StoreResult<u64> {
        let who = user.clone();
        let outcome = self
            .transact(move |tx| {
                let (company, user) = (company.clone(), user.clone());
                Box::pin(async move {
                    let stmt = tx.prepare_cached("SELECT balance FROM users WHERE company_id = $1 AND user_id = $2 FOR UPDATE").await?;
                    let Some(row) = tx.query_opt(&stmt, &[&company, &user]).await? else { return Ok(0) };
                    Ok(expire_user(tx, &company, &user, row.get(0), now_ms).await?.0)
                })
            })
            .await;
        self.balances_changed([who.as_str()]);
        outcome
    }

}
