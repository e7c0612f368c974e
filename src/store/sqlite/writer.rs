//! The writer thread: the only connection that writes. Callers queue jobs on a bounded channel;
//! the writer takes everything queued (up to [`BATCH_MAX`] writes) and commits it in one transaction,
//! then answers every job, so concurrent requests share one fsync (group commit). WAL with
//! `synchronous=FULL` makes a commit durable before anyone hears of it.
//!
//! Two kinds of job. Allocations, the hot path, run without savepoints: every refusal is decided
//! before an allocation's first write and undoes its claim (see `store/ledger.rs`), so a refused
//! item has nothing else to undo (SQLite savepoints cost time that grows with the database: they
//! were most of the writer's time in profiles). Should an allocation hit a database error
//! mid-way, the whole transaction is rolled back and each item is re-applied in a transaction of
//! its own, so no neighbour is failed or lost. Every other job runs in its own savepoint, so one
//! that fails undoes only itself.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::configs;
use super::wal::Wal;
use crate::domain::allocate::{AllocateCmd, AllocateOk};
use crate::store::balance_cache::BalanceCache;
use crate::store::config_cache::ConfigCache;
use crate::store::ledger::{self, run_now};
use crate::store::{StoreError, StoreResult};

/// Most writes one transaction takes, each allocation of a bulk request counted (a request is
/// never split, so a bulk request larger than this has a transaction to itself): bounds how long
/// the first job of a burst waits for its commit, and how far one commit carries the WAL past the
/// point where it is restarted, which is only between transactions (`wal.rs`).
pub const BATCH_MAX: usize = 512;
/// Jobs that may wait for the writer before callers are told the store is busy.
const QUEUE_MAX: usize = 8_192;

/// A job's outcome once its transaction ended.
type Commit = Result<(), Arc<rusqlite::Error>>;

pub trait WriteJob: Send {
    /// Runs inside the batch transaction; false if its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch is committed (or failed).
    fn finish(self: Box<Self>, commit: Commit);
}

pub struct Job<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job<T, F> {
    pub fn new(work: F, reply: oneshot::Sender<StoreResult<T>>) -> Self {
        Self { work: Some(work), result: None, reply }
    }
}

impl<T: Send, F: FnOnce(&Connection) -> StoreResult<T> + Send> WriteJob for Job<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(StoreError::Corrupt("a write job ran twice".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Commit) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(StoreError::Sqlite(e)),
            (Ok(()), None) => Err(StoreError::Corrupt("a write job was not run".into())),
        };
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

type AllocationReply = oneshot::Sender<Vec<StoreResult<AllocateOk>>>;

/// What the writer thread is asked to do.
pub enum Queued {
    Generic(Box<dyn WriteJob>),
    Allocate { cmds: Vec<AllocateCmd>, reply: AllocationReply },
}

pub struct Writer {
    jobs: mpsc::Sender<Queued>,
}

impl Writer {
    pub fn start(conn: Connection, wal: Wal, batch_max: usize, balances: Arc<BalanceCache>) -> StoreResult<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE_MAX);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(&conn, rx, batch_max, &balances, &wal))
            .map_err(|e| StoreError::io("starting the SQLite writer thread", e))?;
        Ok(Self { jobs })
    }

    /// Full queue: refuse at once (503 + Retry-After) rather than queue without bound.
    pub fn enqueue(&self, job: Queued) -> StoreResult<()> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy("the write queue is full"),
            mpsc::error::TrySendError::Closed(_) => StoreError::Busy("the writer has stopped"),
        })
    }
}

fn writer_loop(conn: &Connection, mut jobs: mpsc::Receiver<Queued>, batch_max: usize, balances: &BalanceCache, wal: &Wal) {
    // Resolved configurations, owned by the writer: every configuration change is a generic job
    // run by this thread, so clearing after each generic batch keeps the cache exact.
    let configs = ConfigCache::new(true);
    let mut generic: Vec<Box<dyn WriteJob>> = Vec::new();
    let mut allocations: Vec<(Vec<AllocateCmd>, AllocationReply)> = Vec::new();
    // A job that would have taken a transaction past `batch_max`: the first of the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let Some(first) = carried.take().or_else(|| jobs.blocking_recv()) else { break };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            let writes = match &job {
                Queued::Generic(_) => 1,
                Queued::Allocate { cmds, .. } => cmds.len().max(1),
            };
            if taken > 0 && taken + writes > batch_max {
                carried = Some(job);
                break;
            }
            taken += writes;
            match job {
                Queued::Generic(j) => generic.push(j),
                Queued::Allocate { cmds, reply } => allocations.push((cmds, reply)),
            }
            if taken < batch_max {
                next = jobs.try_recv().ok();
            }
        }
        crate::metrics::batch("sqlite", generic.len() + allocations.iter().map(|(c, _)| c.len()).sum::<usize>(), jobs.len());
        // Jobs queued at the same time are concurrent, so either transaction may go first.
        if !generic.is_empty() {
            let outcome = run_batch(conn, &mut generic);
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
            run_allocations(conn, &mut allocations, balances, &configs);
        }
        wal.restart_if_long(conn);
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Commit {
    let sql = |s: &str| conn.execute_batch(s).map_err(Arc::new);
    sql("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        sql("SAVEPOINT job")?;
        sql(if job.run(conn) { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" })?;
    }
    sql("COMMIT")
}

/// One allocation: resolve its configuration (cached), then the shared flow.
fn allocate_one(conn: &Connection, cmd: &AllocateCmd, configs: &ConfigCache) -> StoreResult<AllocateOk> {
    let resolved = configs::resolve(conn, configs, &cmd.company, &cmd.event, cmd.now_ms)?;
    run_now(ledger::allocate(&mut super::SqliteTx(conn), cmd, resolved.config.as_ref(), resolved.offers()))
}

/// The allocations of one writer round in one transaction, without savepoints (see the module
/// doc); answered after the commit.
fn run_allocations(conn: &Connection, batch: &mut Vec<(Vec<AllocateCmd>, AllocationReply)>, balances: &BalanceCache, configs: &ConfigCache) {
    let fast = (|| -> Result<Vec<Vec<StoreResult<AllocateOk>>>, StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut answers = Vec::with_capacity(batch.len());
        for (cmds, _) in batch.iter() {
            let mut results = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                match allocate_one(conn, cmd, configs) {
                    Err(e @ StoreError::Refused(_)) => results.push(Err(e)),
                    Err(e) => return Err(e),
                    ok => results.push(ok),
                }
            }
            answers.push(results);
        }
        conn.execute_batch("COMMIT")?;
        Ok(answers)
    })();
    match fast {
        Ok(answers) => {
            for ((cmds, reply), results) in batch.drain(..).zip(answers) {
                for (cmd, result) in cmds.iter().zip(&results) {
                    // An allocation that earned nothing may still have opened the user's account.
                    if let Ok(AllocateOk::Allocated { .. } | AllocateOk::Zero) = result {
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
