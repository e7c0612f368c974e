//! The embedded SQLite backend (the default).
//!
//! Writes: one writer thread owns the only write connection. Callers queue jobs on a bounded
//! channel; the writer takes everything queued (up to `WRITE_BATCH_MAX`) and commits it in one
//! transaction, then answers every job, so concurrent requests share one fsync (group commit).
//! WAL with `synchronous=FULL` makes a commit durable before anyone hears of it.
//!
//! Two kinds of job. Allocations, the hot path, run without savepoints: every refusal is decided
//! before an allocation's first write, so a refused item has nothing to undo (SQLite savepoints
//! cost time that grows with the database: they were most of the writer's time in profiles).
//! Should an allocation hit an unexpected database error mid-way, the whole transaction is rolled
//! back and each item is re-applied in a transaction of its own, so no neighbour is failed or
//! lost. Every other job runs in its own savepoint, so one that fails undoes only itself.
//!
//! Reads: point reads run on a per-worker-thread connection, scans on a small pool used from
//! `spawn_blocking`; WAL lets them run beside the writer and see only committed data. Balance
//! reads are usually answered from [`BalanceCache`], which the writer keeps exact.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::balance_cache::BalanceCache;
use super::config_cache::ConfigCache;
use super::migrate::{self, Migration};
use super::*;
use crate::domain::config::{self as cfg, ConfigValues};
use crate::domain::lots::{self, OpenLot, debit_order};
use crate::domain::{CoinConfig, CoinConfigId, Coins, CompanyId, ConfigKind, EventName, UserId};

/// Most jobs one transaction takes: bounds how long the first job of a burst waits for commit.
const WRITE_BATCH_MAX: usize = 512;
/// Jobs that may wait for the writer before callers are told the store is busy.
const WRITE_QUEUE_MAX: usize = 8_192;
/// Read connections: a few more than cores, since reads also wait on the disk.
const READERS_MAX: usize = 4;

trait WriteJob: Send {
    /// Runs inside the batch transaction; returns false if its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch is committed (or failed).
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send, F: FnOnce(&Connection) -> StoreResult<T> + Send> WriteJob for Job<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a job runs once");
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(StoreError::Db(e)),
            (Ok(()), None) => Err(StoreError::Db("write job was not run".into())),
        };
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// What the writer thread is asked to do.
enum Queued {
    Generic(Box<dyn WriteJob>),
    Allocate { cmds: Vec<AllocateCmd>, reply: oneshot::Sender<Vec<StoreResult<AllocateOk>>> },
}

pub struct SqliteStore {
    balances: Arc<BalanceCache>,
    jobs: mpsc::Sender<Queued>,
    readers: Arc<Readers>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// Page caches, in KiB. The writer gets most: every allocation touches one leaf page per user in
/// each per-user index, so its hot set grows with the number of active users (about 120 MB for
/// 10,000 users), and a miss costs it a read from the OS. Readers do point lookups in small
/// tables; the checkpointer only copies pages. Together they stay inside a 150 MB RSS budget.
const WRITER_CACHE_KIB: i64 = 56 * 1024;
const INLINE_CACHE_KIB: i64 = 4 * 1024;
const READER_CACHE_KIB: i64 = 2 * 1024;
const CHECKPOINT_CACHE_KIB: i64 = 512;

fn open_connection(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    // FULL: the WAL is synced at every commit, so an acknowledged write survives power loss.
    // temp_store=MEMORY: savepoint sub-journals stay in memory instead of temporary files (every
    // job runs in a savepoint; on disk they cost a third of the writer's time).
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{cache_kib};"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path, options: StoreOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = open_connection(path, WRITER_CACHE_KIB)?;
        // Checkpoints copy the WAL back into the database file. Left automatic, SQLite runs them
        // inside the writer's COMMIT; a thread of their own keeps that off the write path.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0")?;
        let checkpointer = open_connection(path, CHECKPOINT_CACHE_KIB)?;
        let wal_frames = Arc::new(AtomicI64::new(0));
        let checkpoint_frames = wal_frames.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, &checkpoint_frames))
            .map_err(|e| StoreError::Db(format!("starting checkpoint thread: {e}")))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let balances = Arc::new(BalanceCache::default());
        let writer_balances = balances.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, if options.group_commit { WRITE_BATCH_MAX } else { 1 }, &writer_balances, &wal_frames))
            .map_err(|e| StoreError::Db(format!("starting writer thread: {e}")))?;
        Ok(Self {
            balances,
            jobs: tx,
            readers: Arc::new(Readers { path: path.to_owned(), idle: Mutex::new(Vec::new()), permits: Semaphore::new(READERS_MAX) }),
        })
    }

    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Queued::Generic(Box::new(Job { work: Some(work), result: None, reply })))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer dropped the job".into()))?
    }

    /// Full queue: refuse at once (503 + Retry-After) rather than queue without bound.
    fn enqueue(&self, job: Queued) -> StoreResult<()> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Unavailable("the write queue is full".into()),
            mpsc::error::TrySendError::Closed(_) => StoreError::Unavailable("the writer has stopped".into()),
        })
    }

    /// A point read (a few indexed lookups) on the calling worker thread's own connection: no
    /// thread hop, no pool lock. Only for reads that take microseconds; anything that scans goes
    /// through [`Self::read`] on the blocking pool.
    fn read_inline<T>(&self, work: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        thread_local! {
            static CONNECTIONS: std::cell::RefCell<std::collections::HashMap<PathBuf, Connection>> = Default::default();
        }
        CONNECTIONS.with(|cell| {
            let mut connections = cell.borrow_mut();
            let conn = match connections.entry(self.readers.path.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(open_connection(&self.readers.path, INLINE_CACHE_KIB)?),
            };
            work(conn)
        })
    }

    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self.readers.permits.acquire().await.map_err(|_| StoreError::Unavailable("closed".into()))?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&readers.path, READER_CACHE_KIB)?,
            };
            let result = work(&conn);
            readers.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Db(format!("read task failed: {e}")))?
    }
}

fn writer_loop(conn: Connection, mut jobs: mpsc::Receiver<Queued>, batch_max: usize, balances: &BalanceCache, wal_frames: &AtomicI64) {
    // Resolved configurations, owned by the writer: every configuration change is a generic job
    // run by this thread, so clearing after each generic batch keeps the cache exact.
    let configs = ConfigCache::new(true);
    let mut generic: Vec<Box<dyn WriteJob>> = Vec::new();
    let mut allocations: Vec<(Vec<AllocateCmd>, oneshot::Sender<Vec<StoreResult<AllocateOk>>>)> = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            match job {
                Queued::Generic(j) => generic.push(j),
                Queued::Allocate { cmds, reply } => allocations.push((cmds, reply)),
            }
            taken += 1;
            if taken < batch_max {
                next = jobs.try_recv().ok();
            }
        }
        // Jobs queued at the same time are concurrent, so either transaction may go first.
        if !generic.is_empty() {
            let outcome = run_batch(&conn, &mut generic);
            if let Err(e) = &outcome {
                tracing::error!(error = %e, jobs = generic.len(), "sqlite batch failed; nothing in it was applied");
                let _ = conn.execute_batch("ROLLBACK");
            }
            // Generic jobs do not say whose balance they changed (redemptions, reversals, expiry)
            // or whether they changed a configuration.
            balances.invalidate_all();
            configs.clear();
            for job in generic.drain(..) {
                job.finish(outcome.clone());
            }
        }
        if !allocations.is_empty() {
            run_allocations(&conn, &mut allocations, balances, &configs);
        }
        restart_wal_if_long(&conn, wal_frames, jobs.is_empty());
    }
}

/// How often the checkpointer runs; the WAL grows by at most this much of write traffic.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// WAL frames (about 4 KiB each) after which the writer restarts the log from its beginning when
/// nothing is waiting for it (256 MiB), or whatever is waiting (1 GiB).
const WAL_RESTART_FRAMES_IDLE: i64 = 65_536;
const WAL_RESTART_FRAMES_BUSY: i64 = 262_144;

/// PASSIVE checkpoints never block the writer or readers. The thread publishes how long the WAL
/// is (`wal_frames`) for the writer's restarts (see `restart_wal_if_long`). It ends when the
/// database is gone (the store dropped and the file removed) or a checkpoint fails for good.
fn checkpoint_loop(conn: Connection, wal_frames: &AtomicI64) {
    loop {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => wal_frames.store(frames, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "checkpoint thread stopping");
                return;
            }
        }
    }
}

/// Under a steady stream of commits PASSIVE checkpoints never catch up completely, and SQLite only
/// rewinds the WAL once everything in it has been copied back: the WAL grows without bound (seen:
/// 2 GB within a minute of allocation load, with 18% of the writer's time spent in the kernel
/// zeroing the file's new blocks). So between two of its transactions, when the log is long, the
/// writer itself runs a RESTART checkpoint: it copies the frames PASSIVE left over, and the next
/// commit starts the log from the beginning again. Run by the writer it never waits for the write
/// lock, but writes wait while it copies (the p99.9 latency in docs/BENCHMARKS.md), so it runs
/// past 256 MiB only when no write is queued, and past 1 GiB regardless. A checkpoint already
/// running (BUSY) means trying again after the next PASSIVE one.
fn restart_wal_if_long(conn: &Connection, wal_frames: &AtomicI64, idle: bool) {
    let limit = if idle { WAL_RESTART_FRAMES_IDLE } else { WAL_RESTART_FRAMES_BUSY };
    if wal_frames.load(Ordering::Relaxed) <= limit {
        return;
    }
    wal_frames.store(0, Ordering::Relaxed);
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "WAL restart checkpoint skipped");
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        conn.execute_batch("SAVEPOINT job").map_err(|e| e.to_string())?;
        let sql = if job.run(conn) { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        conn.execute_batch(sql).map_err(|e| e.to_string())?;
    }
    conn.execute_batch("COMMIT").map_err(|e| e.to_string())
}

/// The allocations of one writer round in one transaction, without savepoints (see the module
/// doc); answered after the commit.
fn run_allocations(
    conn: &Connection,
    batch: &mut Vec<(Vec<AllocateCmd>, oneshot::Sender<Vec<StoreResult<AllocateOk>>>)>,
    balances: &BalanceCache,
    configs: &ConfigCache,
) {
    let fast = (|| -> Result<Vec<Vec<StoreResult<AllocateOk>>>, String> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
        let mut answers = Vec::with_capacity(batch.len());
        for (cmds, _) in batch.iter() {
            let mut results = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                match allocate_one(conn, cmd, configs) {
                    Err(StoreError::Db(e)) => return Err(e),
                    other => results.push(other),
                }
            }
            answers.push(results);
        }
        conn.execute_batch("COMMIT").map_err(|e| e.to_string())?;
        Ok(answers)
    })();
    match fast {
        Ok(answers) => {
            for ((cmds, reply), results) in batch.drain(..).zip(answers) {
                for (cmd, result) in cmds.iter().zip(&results) {
                    if let Ok(AllocateOk::Allocated { .. }) = result {
                        balances.invalidate(cmd.user.as_str());
                    }
                }
                let _ = reply.send(results);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "allocation batch failed; re-applying its items one by one");
            let _ = conn.execute_batch("ROLLBACK");
            for (cmds, reply) in batch.drain(..) {
                let results = cmds.iter().map(|cmd| allocate_alone(conn, cmd, configs)).collect();
                balances.invalidate_all();
                let _ = reply.send(results);
            }
        }
    }
}

/// One allocation in its own transaction: the slow path after a batch failed.
fn allocate_alone(conn: &Connection, cmd: &AllocateCmd, configs: &ConfigCache) -> StoreResult<AllocateOk> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = allocate_one(conn, cmd, configs);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = conn.execute_batch(end) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    result
}

const CLIENT_COLUMNS: &str =
    "client_id, name, secret_hash, is_admin, companies, created_at, revoked_at, failed_attempts, locked_until";

fn client_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRecord> {
    Ok(ClientRecord {
        client_id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: row.get(2)?,
        admin: row.get(3)?,
        companies: split_companies(&row.get::<_, String>(4)?),
        created_at_ms: row.get(5)?,
        revoked_at_ms: row.get(6)?,
        failed_attempts: row.get(7)?,
        locked_until_ms: row.get(8)?,
    })
}

const CONFIG_COLUMNS: &str =
    "seq, configuration, company_id, event, amount, validity_days, max_per_user_per_day, max_per_user, active, version";

fn config_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CoinConfig> {
    let kind: String = row.get(1)?;
    Ok(CoinConfig {
        id: CoinConfigId::from_seq(row.get(0)?),
        values: ConfigValues {
            kind: ConfigKind::parse(&kind).unwrap_or(ConfigKind::Custom),
            company_id: CompanyId::from_trusted(row.get(2)?),
            event: EventName::from_trusted(row.get(3)?),
            amount: Coins::from_stored(row.get(4)?),
            validity_days: row.get(5)?,
            max_per_user_per_day: row.get(6)?,
            max_per_user: row.get(7)?,
            active: row.get(8)?,
        },
        version: row.get(9)?,
    })
}

/// The configuration that already holds the unique slot `values` wants, if any other does.
fn conflicting_config(conn: &Connection, values: &ConfigValues, except_seq: i64) -> StoreResult<Option<CoinConfigId>> {
    let seq: Option<i64> = match values.kind {
        ConfigKind::Default => conn
            .prepare_cached("SELECT seq FROM coin_configs WHERE configuration = 'DEFAULT' AND event = ?1 AND seq <> ?2")?
            .query_row(params![values.event.as_str(), except_seq], |r| r.get(0))
            .optional()?,
        ConfigKind::Custom => conn
            .prepare_cached(
                "SELECT seq FROM coin_configs WHERE configuration = 'CUSTOM' AND company_id = ?1 AND event = ?2 AND seq <> ?3",
            )?
            .query_row(params![values.company_id.as_str(), values.event.as_str(), except_seq], |r| r.get(0))
            .optional()?,
    };
    Ok(seq.map(CoinConfigId::from_seq))
}

fn insert_audit(conn: &Connection, seq: i64, action: &str, actor: &str, now_ms: i64, before: Option<String>, after: String) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO coin_config_audit (seq, action, client_id, at, before_json, after_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![seq, action, actor, now_ms, before, after])?;
    Ok(())
}

fn allocate_one(conn: &Connection, cmd: &AllocateCmd, configs: &ConfigCache) -> StoreResult<AllocateOk> {
    let company = cmd.company.as_str();
    let user = cmd.user.as_str();
    let event = cmd.event.as_str();
    let request_id = cmd.request_id.as_str();
    let replay_or_conflict = || -> StoreResult<AllocateOk> {
        match previous_request(conn, company, request_id)? {
            Some(p) if p.kind == "ALLOCATE" && p.user_id == user && p.event.as_deref() == Some(event) => {
                Ok(AllocateOk::Replayed { coins: Coins::from_stored(p.coins) })
            }
            Some(_) => Err(Refusal::RequestIdConflict(cmd.request_id.clone()).into()),
            None => Err(Refusal::ConfigNotFound { company: cmd.company.clone(), event: cmd.event.clone() }.into()),
        }
    };

    let resolved = match configs.get(company, event) {
        Some(hit) => hit,
        None => {
            let generation = configs.generation();
            let candidates: Vec<CoinConfig> = conn
                .prepare_cached(&format!(
                    "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE event = ?1 \
                     AND (configuration = 'DEFAULT' OR (configuration = 'CUSTOM' AND company_id = ?2))"
                ))?
                .query_map(params![event, company], config_from_row)?
                .collect::<Result<_, _>>()?;
            let custom = candidates.iter().find(|c| c.values.kind == ConfigKind::Custom);
            let default = candidates.iter().find(|c| c.values.kind == ConfigKind::Default);
            let resolved = cfg::resolve(custom, default).cloned();
            configs.fill(generation, [(company.to_owned(), event.to_owned(), resolved.clone())]);
            resolved
        }
    };
    // No configuration: still a replay if the request was applied before (it may have been
    // deactivated since), else refused.
    let Some(config) = resolved.as_ref() else { return replay_or_conflict() };
    let amount = config.values.amount;

    // Claim the request id: for a new request this insert is the only lookup of the key; a
    // request seen before is answered from its stored row. A refusal below deletes the claim,
    // so nothing of a refused request remains.
    let claimed = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at) \
             VALUES (?1, ?2, 'ALLOCATE', ?3, ?4, ?5, '', ?6)",
        )?
        .execute(params![company, request_id, user, event, amount.get(), cmd.now_ms])?
        == 1;
    if !claimed {
        return replay_or_conflict();
    }
    match credit(conn, cmd, config) {
        Ok(ok) => Ok(ok),
        Err(e) => {
            conn.prepare_cached("DELETE FROM requests WHERE company_id = ?1 AND request_id = ?2")?.execute(params![company, request_id])?;
            Err(e)
        }
    }
}

/// The rest of a new allocation: check, then write (every refusal comes before the first write).
fn credit(conn: &Connection, cmd: &AllocateCmd, config: &CoinConfig) -> StoreResult<AllocateOk> {
    let company = cmd.company.as_str();
    let user = cmd.user.as_str();
    let event = cmd.event.as_str();
    let owner: Option<(String, i64)> = user_account(conn, user)?;
    if let Some((owner_company, _)) = &owner {
        if owner_company != company {
            return Err(Refusal::UserCompanyMismatch { user: cmd.user.clone(), company: cmd.company.clone() }.into());
        }
    }

    check_caps(conn, cmd, config)?;

    let amount = config.values.amount;
    let old_balance = Coins::from_stored(owner.as_ref().map_or(0, |(_, b)| *b));
    let balance = old_balance.checked_add(amount).ok_or_else(|| Refusal::BalanceOverflow(cmd.user.clone()))?;
    let expires_at = cfg::expiry_for(cmd.now_ms, config.values.validity_days);

    conn.prepare_cached(
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at) \
         VALUES (?1, ?2, 'ALLOCATE', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        company,
        user,
        amount.get(),
        balance.get(),
        event,
        cmd.request_id.as_str(),
        config.id.to_string(),
        cmd.now_ms,
        expires_at
    ])?;
    let entry_id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
    )?
    .execute(params![company, user, entry_id, amount.get(), expires_at, cmd.now_ms])?;
    if owner.is_some() {
        conn.prepare_cached(
            "UPDATE users SET balance = ?3, lifetime_earned = lifetime_earned + ?4 WHERE company_id = ?1 AND user_id = ?2",
        )?
        .execute(params![company, user, balance.get(), amount.get()])?;
    } else {
        conn.prepare_cached(
            "INSERT INTO users (company_id, user_id, balance, lifetime_earned, created_at) VALUES (?1, ?2, ?3, ?3, ?4)",
        )?
        .execute(params![company, user, balance.get(), cmd.now_ms])?;
    }
    Ok(AllocateOk::Allocated { coins: amount, balance, entry_id })
}

/// SPEC §5 caps: allocations of this event to this user, per UTC day and ever.
fn check_caps(conn: &Connection, cmd: &AllocateCmd, config: &CoinConfig) -> StoreResult<()> {
    let count_since = |since: i64| -> StoreResult<i64> {
        Ok(conn
            .prepare_cached(
                "SELECT COUNT(*) FROM ledger_entries WHERE company_id = ?1 AND user_id = ?2 AND event = ?3 \
                 AND type = 'ALLOCATE' AND created_at >= ?4",
            )?
            .query_row(params![cmd.company.as_str(), cmd.user.as_str(), cmd.event.as_str(), since], |r| r.get(0))?)
    };
    if let Some(cap) = config.values.max_per_user_per_day {
        if count_since(cfg::utc_day_start(cmd.now_ms))? >= cap {
            return Err(Refusal::LimitReached(super::cap_message(cmd, "maxPerUserPerDay", cap)).into());
        }
    }
    if let Some(cap) = config.values.max_per_user {
        if count_since(i64::MIN)? >= cap {
            return Err(Refusal::LimitReached(super::cap_message(cmd, "maxPerUser", cap)).into());
        }
    }
    Ok(())
}

/// Reserves an attempt (counted as a failure until the secret proves right) unless the subject is
/// locked; locks when the count reaches the maximum; after an expired lock counting restarts at 1.
macro_rules! lockout_update {
    ($table:literal, $filter:literal) => {
        concat!(
            "UPDATE ", $table, " SET ",
            "failed_attempts = CASE WHEN locked_until IS NOT NULL AND locked_until <= ?1 THEN 1 ELSE failed_attempts + 1 END, ",
            "locked_until = CASE WHEN locked_until IS NOT NULL AND locked_until <= ?1 THEN NULL ",
            "WHEN failed_attempts + 1 >= ?2 THEN ?1 + ?3 ELSE locked_until END ",
            "WHERE ", $filter, " AND (locked_until IS NULL OR locked_until <= ?1)"
        )
    };
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.write(|conn| apply_migrations(conn, migrate::SQLITE)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn insert_client(&self, c: ClientRecord) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO clients ({CLIENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    c.client_id,
                    c.name,
                    c.secret_hash,
                    c.admin,
                    join_companies(&c.companies),
                    c.created_at_ms,
                    c.revoked_at_ms,
                    c.failed_attempts,
                    c.locked_until_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        let id = client_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?1"))?
                .query_row(params![id], client_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        self.read(|conn| {
            Ok(conn
                .prepare(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id"))?
                .query_map([], client_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn count_clients(&self) -> StoreResult<i64> {
        self.read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0))?)).await
    }

    async fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<bool> {
        let id = client_id.to_owned();
        self.write(move |conn| {
            let n = conn.execute("UPDATE clients SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL", params![id, now_ms])?;
            conn.execute("DELETE FROM tokens WHERE client_id = ?1", params![id])?;
            let exists: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = ?1)", params![id], |r| r.get(0))?;
            Ok(n > 0 || exists)
        })
        .await
    }

    async fn upsert_password_user(&self, client_id: &str, username: &str, password_hash: &str, now_ms: i64) -> StoreResult<bool> {
        let (client_id, username, hash) = (client_id.to_owned(), username.to_owned(), password_hash.to_owned());
        self.write(move |conn| {
            let exists: bool =
                conn.query_row("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = ?1)", params![client_id], |r| r.get(0))?;
            if !exists {
                return Ok(false);
            }
            conn.execute(
                "INSERT INTO password_users (client_id, username, password_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (client_id, username) DO UPDATE SET password_hash = excluded.password_hash, \
                 failed_attempts = 0, locked_until = NULL",
                params![client_id, username, hash, now_ms],
            )?;
            Ok(true)
        })
        .await
    }

    async fn get_password_user(&self, client_id: &str, username: &str) -> StoreResult<Option<PasswordUserRecord>> {
        let (client_id, username) = (client_id.to_owned(), username.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT client_id, username, password_hash, failed_attempts, locked_until FROM password_users \
                     WHERE client_id = ?1 AND username = ?2",
                )?
                .query_row(params![client_id, username], |r| {
                    Ok(PasswordUserRecord {
                        client_id: r.get(0)?,
                        username: r.get(1)?,
                        password_hash: r.get(2)?,
                        failed_attempts: r.get(3)?,
                        locked_until_ms: r.get(4)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn reserve_auth_attempt(&self, who: AuthSubject<'_>, now_ms: i64, policy: LockoutPolicy) -> StoreResult<bool> {
        let (max, lock) = (policy.max_failures, policy.lock_ms);
        match who {
            AuthSubject::Client(id) => {
                let id = id.to_owned();
                self.write(move |conn| Ok(conn.prepare_cached(lockout_update!("clients", "client_id = ?4"))?.execute(params![now_ms, max, lock, id])? == 1))
                    .await
            }
            AuthSubject::PasswordUser { client_id, username } => {
                let (client_id, username) = (client_id.to_owned(), username.to_owned());
                self.write(move |conn| {
                    Ok(conn
                        .prepare_cached(lockout_update!("password_users", "client_id = ?4 AND username = ?5"))?
                        .execute(params![now_ms, max, lock, client_id, username])?
                        == 1)
                })
                .await
            }
        }
    }

    async fn record_auth_success(&self, who: AuthSubject<'_>) -> StoreResult<()> {
        let (sql, keys): (&str, Vec<String>) = match who {
            AuthSubject::Client(id) => (
                "UPDATE clients SET failed_attempts = 0, locked_until = NULL WHERE client_id = ?1",
                vec![id.to_owned()],
            ),
            AuthSubject::PasswordUser { client_id, username } => (
                "UPDATE password_users SET failed_attempts = 0, locked_until = NULL WHERE client_id = ?1 AND username = ?2",
                vec![client_id.to_owned(), username.to_owned()],
            ),
        };
        self.write(move |conn| {
            conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(keys.iter()))?;
            Ok(())
        })
        .await
    }

    async fn insert_tokens(&self, tokens: Vec<TokenRecord>) -> StoreResult<()> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO tokens (token_hash, kind, client_id, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for t in &tokens {
                stmt.execute(params![t.token_hash, t.kind.as_str(), t.client_id, t.username, t.created_at_ms, t.expires_at_ms])?;
            }
            Ok(())
        })
        .await
    }

    async fn lookup_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<(TokenRecord, ClientRecord)>> {
        let hash = token_hash.to_owned();
        self.read(move |conn| {
            let cols = CLIENT_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {cols}, t.username, t.created_at, t.expires_at FROM tokens t JOIN clients c ON c.client_id = t.client_id \
                     WHERE t.token_hash = ?1 AND t.kind = 'access' AND t.expires_at > ?2 AND c.revoked_at IS NULL"
                ))?
                .query_row(params![hash, now_ms], |r| {
                    let client = client_from_row(r)?;
                    Ok((
                        TokenRecord {
                            token_hash: hash.clone(),
                            kind: TokenKind::Access,
                            client_id: client.client_id.clone(),
                            username: r.get(9)?,
                            created_at_ms: r.get(10)?,
                            expires_at_ms: r.get(11)?,
                        },
                        client,
                    ))
                })
                .optional()?)
        })
        .await
    }

    async fn consume_refresh_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>> {
        let hash = token_hash.to_owned();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE tokens SET used_at = ?2 WHERE token_hash = ?1 AND kind = 'refresh' AND used_at IS NULL AND expires_at > ?2 \
                     RETURNING client_id, username, created_at, expires_at",
                )?
                .query_row(params![hash, now_ms], |r| {
                    Ok(TokenRecord {
                        token_hash: hash.clone(),
                        kind: TokenKind::Refresh,
                        client_id: r.get(0)?,
                        username: r.get(1)?,
                        created_at_ms: r.get(2)?,
                        expires_at_ms: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn create_config(&self, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            if let Some(existing) = conflicting_config(conn, &values, -1)? {
                return Err(duplicate(existing, &values).into());
            }
            let v = &values;
            conn.prepare_cached(
                "INSERT INTO coin_configs (configuration, company_id, event, amount, validity_days, max_per_user_per_day, \
                 max_per_user, active, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9)",
            )?
            .execute(params![
                v.kind.as_str(),
                v.company_id.as_str(),
                v.event.as_str(),
                v.amount.get(),
                v.validity_days,
                v.max_per_user_per_day,
                v.max_per_user,
                v.active,
                now_ms
            ])?;
            let seq = conn.last_insert_rowid();
            insert_audit(conn, seq, "CREATE", &actor, now_ms, None, audit_json(v))?;
            Ok(CoinConfig { id: CoinConfigId::from_seq(seq), values, version: 1 })
        })
        .await
    }

    async fn get_config(&self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = ?1"))?
                .query_row(params![id.seq()], config_from_row)
                .optional()?)
        })
        .await
    }

    async fn update_config(&self, id: CoinConfigId, expected_version: i64, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            let before = conn
                .prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = ?1"))?
                .query_row(params![id.seq()], config_from_row)
                .optional()?
                .ok_or_else(|| Refusal::UnknownConfig(id.to_string()))?;
            if before.version != expected_version {
                return Err(Refusal::ConcurrentUpdate(id).into());
            }
            if let Some(existing) = conflicting_config(conn, &values, id.seq())? {
                return Err(duplicate(existing, &values).into());
            }
            let v = &values;
            conn.prepare_cached(
                "UPDATE coin_configs SET configuration = ?2, company_id = ?3, event = ?4, amount = ?5, validity_days = ?6, \
                 max_per_user_per_day = ?7, max_per_user = ?8, active = ?9, version = version + 1, updated_at = ?10 WHERE seq = ?1",
            )?
            .execute(params![
                id.seq(),
                v.kind.as_str(),
                v.company_id.as_str(),
                v.event.as_str(),
                v.amount.get(),
                v.validity_days,
                v.max_per_user_per_day,
                v.max_per_user,
                v.active,
                now_ms
            ])?;
            insert_audit(conn, id.seq(), "UPDATE", &actor, now_ms, Some(audit_json(&before.values)), audit_json(v))?;
            Ok(CoinConfig { id, values, version: expected_version + 1 })
        })
        .await
    }

    async fn allocate(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>> {
        let n = cmds.len();
        let (reply, answer) = oneshot::channel();
        let outcome = match self.enqueue(Queued::Allocate { cmds, reply }) {
            Ok(()) => answer.await.map_err(|_| StoreError::Unavailable("the writer dropped the job".into())),
            Err(e) => Err(e),
        };
        outcome.unwrap_or_else(|e| {
            let text = e.to_string();
            (0..n).map(|_| Err(StoreError::Unavailable(text.clone()))).collect()
        })
    }

    async fn balance(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserBalance>> {
        if let Some(cached) = self.balances.get(user.as_str(), now_ms) {
            return Ok(cached);
        }
        let ticket = self.balances.ticket(user.as_str());
        let (balance, next_expiry) = self.read_inline(|conn| {
            let row: Option<(String, i64, Option<i64>)> = conn
                .prepare_cached(BALANCE_WITH_NEXT_EXPIRY_SQL)?
                .query_row(params![user.as_str(), now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            Ok(match row {
                Some((company, coins, next)) => {
                    (Some(UserBalance { company: CompanyId::from_trusted(company), balance: Coins::from_stored(coins) }), next)
                }
                None => (None, None),
            })
        })?;
        self.balances.fill(user.as_str(), ticket, balance.clone(), next_expiry);
        Ok(balance)
    }

    async fn list_configs(&self, filter: ConfigFilter) -> StoreResult<Vec<CoinConfig>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE (?1 IS NULL OR company_id = ?1) AND (?2 IS NULL OR event = ?2) \
                 AND (?3 IS NULL OR configuration = ?3) ORDER BY seq"
            );
            let company = filter.company.as_ref().map(CompanyId::as_str);
            let event = filter.event.as_ref().map(EventName::as_str);
            let kind = filter.kind.map(ConfigKind::as_str);
            Ok(conn.prepare_cached(&sql)?.query_map(params![company, event, kind], config_from_row)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn config_history(&self, id: CoinConfigId) -> StoreResult<Vec<AuditRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT action, client_id, at, before_json, after_json FROM coin_config_audit WHERE seq = ?1 ORDER BY audit_id")?
                .query_map(params![id.seq()], |r| {
                    Ok(AuditRecord { action: r.get(0)?, client_id: r.get(1)?, at_ms: r.get(2)?, before_json: r.get(3)?, after_json: r.get(4)? })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_coin_value(&self, value: CoinValue, actor: &str, now_ms: i64) -> StoreResult<()> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO coin_values (company_id, currency, minor_units_per_coin, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (company_id) DO UPDATE SET currency = excluded.currency, \
                 minor_units_per_coin = excluded.minor_units_per_coin, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )?
            .execute(params![coin_value_key(value.company.as_ref()), value.currency, value.minor_units_per_coin, actor, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn coin_value(&self, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
        let company = company.cloned();
        self.read(move |conn| coin_value_in(conn, company.as_ref())).await
    }

    async fn redeem(&self, cmd: RedeemCmd) -> StoreResult<Applied<RedeemReceipt>> {
        self.write(move |conn| redeem_one(conn, &cmd)).await
    }

    async fn reverse(&self, cmd: ReverseCmd) -> StoreResult<Applied<ReverseReceipt>> {
        self.write(move |conn| reverse_one(conn, &cmd)).await
    }

    async fn settle_expired(&self, user: &UserId, now_ms: i64) -> StoreResult<()> {
        let u = user.clone();
        let due: Option<String> = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT company_id FROM lots WHERE company_id = (SELECT company_id FROM users WHERE user_id = ?1) \
                         AND user_id = ?1 AND remaining > 0 AND expires_at <= ?2 LIMIT 1",
                    )?
                    .query_row(params![u.as_str(), now_ms], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        let Some(company) = due else { return Ok(()) };
        let user = user.clone();
        self.write(move |conn| expire_user(conn, &company, user.as_str(), now_ms).map(|_| ())).await
    }

    async fn sweep_expired(&self, now_ms: i64) -> StoreResult<u64> {
        self.write(move |conn| {
            let users: Vec<(String, String)> = conn
                .prepare_cached(&format!(
                    "SELECT DISTINCT company_id, user_id FROM lots WHERE remaining > 0 AND expires_at <= ?1 LIMIT {SWEEP_USERS_MAX}"
                ))?
                .query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut expired = 0;
            for (company, user) in users {
                expired += expire_user(conn, &company, &user, now_ms)?;
            }
            Ok(expired)
        })
        .await
    }

    async fn user_summary(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>> {
        let user = user.clone();
        self.read(move |conn| summary_in(conn, &user, now_ms)).await
    }

    async fn transactions(&self, user: &UserId, before_entry_id: Option<i64>, limit: i64) -> StoreResult<Vec<LedgerEntry>> {
        let user = user.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT e.entry_id, e.type, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.created_at, e.expires_at \
                     FROM users u JOIN ledger_entries e ON e.company_id = u.company_id AND e.user_id = u.user_id \
                     WHERE u.user_id = ?1 AND e.entry_id < ?2 ORDER BY e.entry_id DESC LIMIT ?3",
                )?
                .query_map(params![user.as_str(), before_entry_id.unwrap_or(i64::MAX), limit], entry_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.read(|conn| {
            let mut report = VerifyReport {
                users_checked: conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?,
                entries_checked: conn.query_row("SELECT COUNT(*) FROM ledger_entries", [], |r| r.get(0))?,
                problems: Vec::new(),
            };
            for (sql, what) in super::VERIFY_CHECKS {
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                for row in rows {
                    report.problems.push(format!("{what}: {}", row?));
                }
            }
            Ok(report)
        })
        .await
    }
}

fn apply_migrations(conn: &Connection, migrations: &[Migration]) -> StoreResult<()> {
    conn.execute_batch(migrate::CREATE_TABLE)?;
    for m in migrations {
        let done: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)", params![m.version], |r| r.get(0))?;
        if !done {
            conn.execute_batch(m.sql)?;
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![m.version, m.name, crate::clock::system_now_ms()],
            )?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
    }
    Ok(())
}

// ---- Lifecycle: redemption, reversal, expiry, reads (SPEC §5) ----

/// The visible balance and when it will next drop by itself (the soonest unexpired lot expiry).
const BALANCE_WITH_NEXT_EXPIRY_SQL: &str = "SELECT u.company_id, \
     u.balance - COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at <= ?2), 0), \
     (SELECT MIN(l.expires_at) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at > ?2) \
     FROM users u WHERE u.user_id = ?1";

/// A stored request, for replay and conflict decisions.
struct PrevRequest {
    kind: String,
    user_id: String,
    event: Option<String>,
    coins: i64,
    fingerprint: String,
    original: Option<String>,
    response: Option<String>,
}

fn previous_request(conn: &Connection, company: &str, request_id: &str) -> StoreResult<Option<PrevRequest>> {
    Ok(conn
        .prepare_cached(
            "SELECT kind, user_id, event, coins, fingerprint, original_request_id, response FROM requests \
             WHERE company_id = ?1 AND request_id = ?2",
        )?
        .query_row(params![company, request_id], |r| {
            Ok(PrevRequest {
                kind: r.get(0)?,
                user_id: r.get(1)?,
                event: r.get(2)?,
                coins: r.get(3)?,
                fingerprint: r.get(4)?,
                original: r.get(5)?,
                response: r.get(6)?,
            })
        })
        .optional()?)
}

fn stored_receipt<T: serde::de::DeserializeOwned>(prev: &PrevRequest) -> StoreResult<Applied<T>> {
    let text = prev.response.as_deref().ok_or_else(|| StoreError::Db("stored request has no response".into()))?;
    let receipt = serde_json::from_str(text).map_err(|e| StoreError::Db(format!("stored response: {e}")))?;
    Ok(Applied { receipt, replayed: true })
}

fn user_account(conn: &Connection, user: &str) -> StoreResult<Option<(String, i64)>> {
    Ok(conn
        .prepare_cached("SELECT company_id, balance FROM users WHERE user_id = ?1")?
        .query_row(params![user], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The user's account in `company`: refuses unknown users and other companies' users.
fn account_in(conn: &Connection, company: &CompanyId, user: &UserId) -> StoreResult<i64> {
    match user_account(conn, user.as_str())? {
        None => Err(Refusal::UserNotFound(user.clone()).into()),
        // Another company's user reads as never credited: scoping must not reveal who exists.
        Some((owner, _)) if owner != company.as_str() => Err(Refusal::UserNotFound(user.clone()).into()),
        Some((_, balance)) => Ok(balance),
    }
}

fn insert_entry(conn: &Connection, e: &NewEntry<'_>) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![e.company, e.user, e.kind, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.now_ms, e.expires_at])?;
    Ok(conn.last_insert_rowid())
}

/// Applies signed per-lot changes and records them against the entry that caused them.
fn apply_moves(conn: &Connection, entry_id: i64, moves: &[(i64, i64)]) -> StoreResult<()> {
    for &(lot_id, coins) in moves {
        conn.prepare_cached("UPDATE lots SET remaining = remaining + ?2 WHERE lot_id = ?1")?.execute(params![lot_id, coins])?;
        conn.prepare_cached("INSERT INTO lot_moves (entry_id, lot_id, coins) VALUES (?1, ?2, ?3)")?
            .execute(params![entry_id, lot_id, coins])?;
    }
    Ok(())
}

fn set_balance(conn: &Connection, company: &str, user: &str, balance: i64, column: &str, delta: i64) -> StoreResult<()> {
    // `column` is one of our own lifetime_* names, never user input.
    conn.prepare_cached(&format!(
        "UPDATE users SET balance = ?3, {column} = {column} + ?4 WHERE company_id = ?1 AND user_id = ?2"
    ))?
    .execute(params![company, user, balance, delta])?;
    Ok(())
}

/// Writes one `EXPIRE` entry per lot of this user past expiry; returns how many lots expired.
fn expire_user(conn: &Connection, company: &str, user: &str, now_ms: i64) -> StoreResult<u64> {
    let due: Vec<(i64, i64, i64, Option<String>, Option<String>)> = conn
        .prepare_cached(
            "SELECT l.lot_id, l.remaining, l.expires_at, e.event, e.coin_config_id FROM lots l \
             JOIN ledger_entries e ON e.entry_id = l.entry_id \
             WHERE l.company_id = ?1 AND l.user_id = ?2 AND l.remaining > 0 AND l.expires_at <= ?3 ORDER BY l.expires_at, l.lot_id",
        )?
        .query_map(params![company, user, now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<Result<_, _>>()?;
    if due.is_empty() {
        return Ok(0);
    }
    let (_, mut balance) = user_account(conn, user)?.ok_or_else(|| StoreError::Db(format!("lots of a missing user {user}")))?;
    let mut expired = 0;
    for (lot_id, remaining, expires_at, event, config_id) in &due {
        balance -= remaining;
        expired += remaining;
        let entry = NewEntry {
            company,
            user,
            kind: "EXPIRE",
            coins: -remaining,
            balance_after: balance,
            event: event.as_deref(),
            request_id: None,
            coin_config_id: config_id.as_deref(),
            now_ms,
            expires_at: Some(*expires_at),
        };
        let entry_id = insert_entry(conn, &entry)?;
        apply_moves(conn, entry_id, &[(*lot_id, -remaining)])?;
    }
    set_balance(conn, company, user, balance, "lifetime_expired", expired)?;
    Ok(due.len() as u64)
}

/// Lots with coins left that have not expired, in debit order.
fn open_lots(conn: &Connection, company: &str, user: &str, now_ms: i64) -> StoreResult<Vec<OpenLot>> {
    let mut lots: Vec<OpenLot> = conn
        .prepare_cached(
            "SELECT lot_id, remaining, expires_at FROM lots WHERE company_id = ?1 AND user_id = ?2 AND remaining > 0 \
             AND (expires_at IS NULL OR expires_at > ?3)",
        )?
        .query_map(params![company, user, now_ms], |r| Ok(OpenLot { lot_id: r.get(0)?, remaining: r.get(1)?, expires_at: r.get(2)? }))?
        .collect::<Result<_, _>>()?;
    lots.sort_by(debit_order);
    Ok(lots)
}

fn coin_value_in(conn: &Connection, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
    let row: Option<(String, String, i64)> = conn
        .prepare_cached(
            "SELECT company_id, currency, minor_units_per_coin FROM coin_values WHERE company_id IN (?1, '') \
             ORDER BY company_id DESC LIMIT 1",
        )?
        .query_row(params![coin_value_key(company)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(coin_value_from(row))
}

fn insert_request(
    conn: &Connection,
    company: &str,
    request_id: &str,
    kind: &str,
    user: &str,
    coins: i64,
    fingerprint: &str,
    original: Option<&str>,
    response: &str,
    now_ms: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, original_request_id, response, created_at) \
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![company, request_id, kind, user, coins, fingerprint, original, response, now_ms])?;
    Ok(())
}

fn redeem_one(conn: &Connection, cmd: &RedeemCmd) -> StoreResult<Applied<RedeemReceipt>> {
    let (company, user) = (cmd.company.as_str(), cmd.user.as_str());
    let fingerprint = cmd.amount.fingerprint();
    if let Some(prev) = previous_request(conn, company, cmd.request_id.as_str())? {
        return if prev.kind == "REDEEM" && prev.user_id == user && prev.fingerprint == fingerprint {
            stored_receipt(&prev)
        } else {
            Err(Refusal::RequestIdConflict(cmd.request_id.clone()).into())
        };
    }
    account_in(conn, &cmd.company, &cmd.user)?;
    expire_user(conn, company, user, cmd.now_ms)?;
    let balance = account_in(conn, &cmd.company, &cmd.user)?;
    let value = coin_value_in(conn, Some(&cmd.company))?;
    let (coins, amount_minor) = redemption_amounts(cmd.amount, value.minor_units_per_coin)?;
    let lots = open_lots(conn, company, user, cmd.now_ms)?;
    let available: i64 = lots.iter().map(|l| l.remaining).sum();
    let takes = lots::take(lots, coins)
        .ok_or_else(|| Refusal::InsufficientBalance { user: cmd.user.clone(), needed: coins, available })?;
    let balance = balance - coins;
    let receipt = RedeemReceipt { request_id: cmd.request_id.to_string(), coins, currency: value.currency, amount_minor, balance };
    let response = serde_json::to_string(&receipt).map_err(|e| StoreError::Db(e.to_string()))?;
    insert_request(conn, company, cmd.request_id.as_str(), "REDEEM", user, coins, &fingerprint, None, &response, cmd.now_ms)?;
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
    let entry_id = insert_entry(conn, &entry)?;
    apply_moves(conn, entry_id, &takes.iter().map(|&(lot, n)| (lot, -n)).collect::<Vec<_>>())?;
    set_balance(conn, company, user, balance, "lifetime_redeemed", coins)?;
    Ok(Applied { receipt, replayed: false })
}

fn reverse_one(conn: &Connection, cmd: &ReverseCmd) -> StoreResult<Applied<ReverseReceipt>> {
    let company = cmd.company.as_str();
    if let Some(prev) = previous_request(conn, company, cmd.request_id.as_str())? {
        return if prev.kind == "REVERSE" && prev.original.as_deref() == Some(cmd.original.as_str()) {
            stored_receipt(&prev)
        } else {
            Err(Refusal::RequestIdConflict(cmd.request_id.clone()).into())
        };
    }
    let original = previous_request(conn, company, cmd.original.as_str())?.ok_or_else(|| Refusal::OriginalNotFound(cmd.original.clone()))?;
    if original.kind == "REVERSE" {
        return Err(Refusal::NotReversible(cmd.original.clone()).into());
    }
    let already: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM requests WHERE company_id = ?1 AND kind = 'REVERSE' AND original_request_id = ?2)")?
        .query_row(params![company, cmd.original.as_str()], |r| r.get(0))?;
    if already {
        return Err(Refusal::AlreadyReversed(cmd.original.clone()).into());
    }
    let user = original.user_id.as_str();
    let user_id = UserId::from_trusted(original.user_id.clone());
    expire_user(conn, company, user, cmd.now_ms)?;
    let balance = account_in(conn, &cmd.company, &user_id)?;
    let (orig_entry, orig_coins, event, config_id): (i64, i64, Option<String>, Option<String>) = conn
        .prepare_cached(
            "SELECT entry_id, coins, event, coin_config_id FROM ledger_entries WHERE company_id = ?1 AND request_id = ?2 AND type = ?3",
        )?
        .query_row(params![company, cmd.original.as_str(), original.kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;

    let (delta, moves, column) = if original.kind == "ALLOCATE" {
        // Take the coins back: from the allocation's own lot first, then soonest-expiring lots.
        let lots = open_lots(conn, company, user, cmd.now_ms)?;
        let own: Vec<i64> = conn
            .prepare_cached("SELECT lot_id FROM lots WHERE entry_id = ?1")?
            .query_map(params![orig_entry], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let (first, rest): (Vec<OpenLot>, Vec<OpenLot>) = lots.into_iter().partition(|l| own.contains(&l.lot_id));
        let available: i64 = first.iter().chain(&rest).map(|l| l.remaining).sum();
        let takes = lots::take(first.into_iter().chain(rest), orig_coins)
            .ok_or_else(|| Refusal::InsufficientBalance { user: user_id.clone(), needed: orig_coins, available })?;
        (-orig_coins, takes.into_iter().map(|(lot, n)| (lot, -n)).collect::<Vec<_>>(), "lifetime_earned")
    } else {
        // Give the coins back to the lots they came from, with their original expiry.
        let moves: Vec<(i64, i64)> = conn
            .prepare_cached("SELECT lot_id, -coins FROM lot_moves WHERE entry_id = ?1 ORDER BY lot_id")?
            .query_map(params![orig_entry], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        (-orig_coins, moves, "lifetime_redeemed")
    };
    let balance = balance + delta;
    let entry = NewEntry {
        company,
        user,
        kind: "REVERSE",
        coins: delta,
        balance_after: balance,
        event: event.as_deref(),
        request_id: Some(cmd.request_id.as_str()),
        coin_config_id: config_id.as_deref(),
        now_ms: cmd.now_ms,
        expires_at: None,
    };
    let entry_id = insert_entry(conn, &entry)?;
    apply_moves(conn, entry_id, &moves)?;
    // Both lifetime counters shrink: a reversed allocation was not earned, a reversed redemption not spent.
    set_balance(conn, company, user, balance, column, -delta.abs())?;
    // Coins given back to lots that have expired meanwhile expire again at once.
    expire_user(conn, company, user, cmd.now_ms)?;
    let (_, balance) = user_account(conn, user)?.ok_or_else(|| StoreError::Db("user vanished".into()))?;
    let receipt = ReverseReceipt {
        request_id: cmd.request_id.to_string(),
        original_request_id: cmd.original.to_string(),
        coins: delta,
        balance,
    };
    let response = serde_json::to_string(&receipt).map_err(|e| StoreError::Db(e.to_string()))?;
    insert_request(conn, company, cmd.request_id.as_str(), "REVERSE", user, delta.abs(), cmd.original.as_str(), Some(cmd.original.as_str()), &response, cmd.now_ms)?;
    Ok(Applied { receipt, replayed: false })
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        entry_id: r.get(0)?,
        kind: r.get(1)?,
        coins: r.get(2)?,
        balance_after: r.get(3)?,
        event: r.get(4)?,
        request_id: r.get(5)?,
        coin_config_id: r.get(6)?,
        created_at_ms: r.get(7)?,
        expires_at_ms: r.get(8)?,
    })
}

fn summary_in(conn: &Connection, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>> {
    let row: Option<(String, i64, i64, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT u.company_id, u.balance, u.lifetime_earned, u.lifetime_redeemed, u.lifetime_expired, \
             COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                       AND l.remaining > 0 AND l.expires_at <= ?2), 0) FROM users u WHERE u.user_id = ?1",
        )?
        .query_row(params![user.as_str(), now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    let Some((company, balance, earned, redeemed, expired, unswept)) = row else { return Ok(None) };
    let expiring_soon = conn
        .prepare_cached(
            "SELECT remaining, expires_at FROM lots WHERE company_id = ?1 AND user_id = ?2 AND remaining > 0 \
             AND expires_at > ?3 AND expires_at <= ?4 ORDER BY expires_at, lot_id",
        )?
        .query_map(params![company, user.as_str(), now_ms, now_ms + EXPIRING_SOON_DAYS * cfg::DAY_MS], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(UserSummary {
        user: user.clone(),
        company: CompanyId::from_trusted(company),
        balance: balance - unswept,
        lifetime_earned: earned,
        lifetime_redeemed: redeemed,
        lifetime_expired: expired + unswept,
        expiring_soon,
    }))
}
