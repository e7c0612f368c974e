//! The writer thread: the only connection that writes. Callers queue jobs on a bounded channel;
//! the writer takes everything queued (up to [`BATCH_MAX`] writes) and commits it in one transaction,
//! then answers every job, so concurrent requests share one fsync (group commit). WAL with
//! `synchronous=FULL` makes a commit durable before anyone hears of it.
//!
//! Two kinds of job, both in the round's one transaction. Allocations, the hot path, run first and
//! without savepoints: every refusal is decided before an allocation's first write and undoes its
//! claim (see `store/ledger.rs`), so a refused item has nothing else to undo (SQLite savepoints
//! cost time that grows with the database: they were most of the writer's time in profiles).
//! Every other job runs after them in its own savepoint, so one that fails undoes only itself.
//!
//! Should an allocation fail otherwise than by a refusal, the transaction is rolled back before
//! any other job ran; the other jobs then commit together in a transaction of their own, and each
//! allocation is re-applied in a transaction of its own, so no neighbour is failed or lost.
//! Should the transaction fail after the allocations (a savepoint, or the commit), the other jobs
//! are answered with the error and the allocations are re-applied one by one. Should it not even
//! begin (another process holding the write lock past the busy timeout), nothing ran and every
//! job is answered with the error at once: a 503 the client may retry with the same request id.

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
        run_round(conn, &mut generic, &mut allocations, balances, &configs);
        wal.restart_if_long(conn);
    }
}

/// Why a round's transaction did not commit.
enum Failed {
    /// It never began: nothing ran.
    Begin(Arc<rusqlite::Error>),
    /// An allocation failed otherwise than by a refusal, before any other job ran.
    Allocation(StoreError),
    /// A savepoint of the other jobs, or the commit, failed.
    Transaction(Arc<rusqlite::Error>),
}

/// One round of the writer in one transaction, so one commit and one `fsync` whatever it holds
/// (a batch of webhook delivery outcomes shares the commit of the allocations beside it): the
/// allocations first, without savepoints, then every other job in a savepoint of its own. Jobs
/// queued at the same time are concurrent, so their order within the round is free.
///
/// How each failure is answered: the module doc.
fn run_round(
    conn: &Connection,
    generic: &mut Vec<Box<dyn WriteJob>>,
    allocations: &mut Vec<(Vec<AllocateCmd>, AllocationReply)>,
    balances: &BalanceCache,
    configs: &ConfigCache,
) {
    let sql = |s: &str| conn.execute_batch(s).map_err(|e| Failed::Transaction(Arc::new(e)));
    let outcome = (|| -> Result<Vec<Vec<StoreResult<AllocateOk>>>, Failed> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| Failed::Begin(Arc::new(e)))?;
        let answers = allocate_all(conn, allocations, configs).map_err(Failed::Allocation)?;
        for job in generic.iter_mut() {
            sql("SAVEPOINT job")?;
            sql(if job.run(conn) { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" })?;
        }
        sql("COMMIT")?;
        Ok(answers)
    })();
    match outcome {
        Ok(answers) => {
            finish_generic(generic, Ok(()), balances, configs);
            answer_allocations(allocations, answers, balances);
        }
        Err(Failed::Allocation(e)) => {
            tracing::warn!(error = %e, "allocation batch failed; re-applying its items one by one");
            let _ = conn.execute_batch("ROLLBACK");
            if !generic.is_empty() {
                let commit = run_batch(conn, generic);
                finish_generic(generic, commit, balances, configs);
            }
            allocate_each(conn, allocations, balances, configs);
        }
        Err(Failed::Begin(e)) => {
            tracing::error!(error = %e, jobs = generic.len(), allocations = allocations.len(), "sqlite transaction did not begin; nothing was applied");
            let busy = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
            let failed = || if busy { StoreError::Unavailable(Box::new(e.clone())) } else { StoreError::Sqlite(e.clone()) };
            for (cmds, reply) in allocations.drain(..) {
                let _ = reply.send(cmds.iter().map(|_| Err(failed())).collect());
            }
            finish_generic(generic, Err(e), balances, configs);
        }
        Err(Failed::Transaction(e)) => {
            tracing::error!(error = %e, jobs = generic.len(), "sqlite batch failed; its other jobs were not applied, its allocations are re-applied one by one");
            let _ = conn.execute_batch("ROLLBACK");
            finish_generic(generic, Err(e), balances, configs);
            allocate_each(conn, allocations, balances, configs);
        }
    }
}

/// The jobs other than allocations in a transaction of their own: after an allocation failed.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Commit {
    let sql = |s: &str| conn.execute_batch(s).map_err(Arc::new);
    let commit = (|| {
        sql("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            sql("SAVEPOINT job")?;
            sql(if job.run(conn) { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" })?;
        }
        sql("COMMIT")
    })();
    if let Err(e) = &commit {
        tracing::error!(error = %e, jobs = batch.len(), "sqlite batch failed; nothing in it was applied");
        let _ = conn.execute_batch("ROLLBACK");
    }
    commit
}

/// Answers the jobs other than allocations once their transaction ended. They do not say whose
/// balance they changed (redemptions, reversals, expiry) or whether they changed a configuration.
fn finish_generic(generic: &mut Vec<Box<dyn WriteJob>>, commit: Commit, balances: &BalanceCache, configs: &ConfigCache) {
    if generic.is_empty() {
        return;
    }
    balances.invalidate_all();
    configs.clear();
    for job in generic.drain(..) {
        job.finish(commit.clone());
    }
}

/// One allocation: resolve its configuration (cached), then the shared flow.
fn allocate_one(conn: &Connection, cmd: &AllocateCmd, configs: &ConfigCache) -> StoreResult<AllocateOk> {
    let resolved = configs::resolve(conn, configs, &cmd.company, &cmd.event, cmd.now_ms)?;
    run_now(ledger::allocate(&mut super::SqliteTx(conn), cmd, resolved.config.as_ref(), resolved.offers()))
}

/// Every allocation of the round, in the open transaction; an error other than a refusal ends
/// them all (the caller rolls the transaction back).
fn allocate_all(
    conn: &Connection,
    batch: &[(Vec<AllocateCmd>, AllocationReply)],
    configs: &ConfigCache,
) -> Result<Vec<Vec<StoreResult<AllocateOk>>>, StoreError> {
    let mut answers = Vec::with_capacity(batch.len());
    for (cmds, _) in batch {
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
    Ok(answers)
}

/// Answers the round's allocations once it committed.
fn answer_allocations(batch: &mut Vec<(Vec<AllocateCmd>, AllocationReply)>, answers: Vec<Vec<StoreResult<AllocateOk>>>, balances: &BalanceCache) {
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

/// The slow path after the round's transaction failed: each allocation in a transaction of its
/// own, so no neighbour is failed or lost.
fn allocate_each(conn: &Connection, batch: &mut Vec<(Vec<AllocateCmd>, AllocationReply)>, balances: &BalanceCache, configs: &ConfigCache) {
    for (cmds, reply) in batch.drain(..) {
        let results = cmds.iter().map(|cmd| allocate_alone(conn, cmd, configs)).collect();
        balances.invalidate_all();
        let _ = reply.send(results);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::domain::config::{ConfigValues, Earning};
    use crate::domain::{Coins, CompanyId, ConfigKind, EventName, RequestId, UserId};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{ConfigStore, Store, StoreOptions};

    fn cmd(user: &str, request: &str) -> AllocateCmd {
        AllocateCmd {
            company: CompanyId::parse("C").unwrap(),
            user: UserId::parse(user).unwrap(),
            event: EventName::parse("E").unwrap(),
            request_id: RequestId::parse(request).unwrap(),
            purchase: Default::default(),
            now_ms: 1_000_000,
        }
    }

    /// A job other than an allocation: records `tag` in a table of its own.
    fn tagging(tag: &'static str) -> (Box<dyn WriteJob>, oneshot::Receiver<StoreResult<()>>) {
        let (reply, answer) = oneshot::channel();
        let work = move |conn: &Connection| -> StoreResult<()> {
            conn.execute("INSERT INTO tags (tag) VALUES (?1)", [tag])?;
            Ok(())
        };
        (Box::new(Job::new(work, reply)), answer)
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A round commits once, whatever it holds; each way it can fail answers every job once,
    /// loses no allocation that could apply and applies none twice.
    #[tokio::test]
    async fn a_round_commits_once_and_each_failure_answers_every_job_once() {
        let dir = std::env::temp_dir().join(format!("coins-round-{}", hex::encode(crate::crypto::random_bytes::<6>())));
        let path = dir.join("coins.db");
        let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        store.migrate().await.unwrap();
        let values = ConfigValues {
            kind: ConfigKind::Default,
            company_id: CompanyId::parse("C").unwrap(),
            event: EventName::parse("E").unwrap(),
            amount: Coins::amount(10),
            earning: Earning::default(),
            validity_days: None,
            max_per_user_per_day: None,
            max_per_user: None,
            active: true,
        };
        store.create_config(values, "test", 0).await.unwrap();
        drop(store);

        let conn = super::super::open_connection(&path, 1024).unwrap();
        conn.execute_batch(
            "CREATE TABLE tags (tag TEXT NOT NULL); \
             CREATE TRIGGER boom BEFORE INSERT ON ledger_entries WHEN NEW.user_id = 'BOOM' BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let seen = commits.clone();
        conn.commit_hook(Some(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            false
        }));
        let balances = BalanceCache::default();
        let configs = ConfigCache::new(true);

        // Allocations and another job: one commit.
        let (job, job_answer) = tagging("first");
        let (reply, answer) = oneshot::channel();
        let mut generic = vec![job];
        let mut allocations = vec![(vec![cmd("U1", "R1"), cmd("U2", "R2")], reply)];
        run_round(&conn, &mut generic, &mut allocations, &balances, &configs);
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        assert!(job_answer.await.unwrap().is_ok());
        let results = answer.await.unwrap();
        assert!(results.iter().all(|r| matches!(r, Ok(AllocateOk::Allocated { .. }))), "{results:?}");
        assert!(generic.is_empty() && allocations.is_empty());

        // One allocation fails with a database error: the other job commits on its own, then
        // each allocation in a transaction of its own (the failing one commits nothing).
        commits.store(0, Ordering::SeqCst);
        let (job, job_answer) = tagging("second");
        let (reply, answer) = oneshot::channel();
        let mut generic = vec![job];
        let mut allocations = vec![(vec![cmd("U3", "R3"), cmd("BOOM", "R4"), cmd("U4", "R5")], reply)];
        run_round(&conn, &mut generic, &mut allocations, &balances, &configs);
        assert_eq!(commits.load(Ordering::SeqCst), 3);
        assert!(job_answer.await.unwrap().is_ok());
        let results = answer.await.unwrap();
        assert!(matches!(results[0], Ok(AllocateOk::Allocated { .. })), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Sqlite(_))), "{results:?}");
        assert!(matches!(results[2], Ok(AllocateOk::Allocated { .. })), "{results:?}");

        assert_eq!(count(&conn, "SELECT COUNT(*) FROM tags"), 2);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM ledger_entries"), 4);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM ledger_entries WHERE user_id = 'BOOM'"), 0);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM requests WHERE request_id = 'R4'"), 0);

        // The transaction fails after the allocations (here a job ends it under its savepoint):
        // that job hears of it, and each allocation is re-applied and committed alone, once.
        commits.store(0, Ordering::SeqCst);
        let (reply, job_answer) = oneshot::channel();
        let breaking = |conn: &Connection| -> StoreResult<()> {
            conn.execute_batch("ROLLBACK")?;
            Ok(())
        };
        let mut generic: Vec<Box<dyn WriteJob>> = vec![Box::new(Job::new(breaking, reply))];
        let (reply, answer) = oneshot::channel();
        let mut allocations = vec![(vec![cmd("U5", "R6"), cmd("U6", "R7")], reply)];
        run_round(&conn, &mut generic, &mut allocations, &balances, &configs);
        assert_eq!(commits.load(Ordering::SeqCst), 2);
        assert!(matches!(job_answer.await.unwrap(), Err(StoreError::Sqlite(_))));
        let results = answer.await.unwrap();
        assert!(results.iter().all(|r| matches!(r, Ok(AllocateOk::Allocated { .. }))), "{results:?}");
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM ledger_entries"), 6);

        // The transaction cannot begin (another connection holds the write lock past the busy
        // timeout): nothing runs, and every job is answered at once, allocations as unavailable.
        let other = super::super::open_connection(&path, 1024).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.busy_timeout(std::time::Duration::from_millis(20)).unwrap();
        commits.store(0, Ordering::SeqCst);
        let (job, job_answer) = tagging("third");
        let (reply, answer) = oneshot::channel();
        let mut generic = vec![job];
        let mut allocations = vec![(vec![cmd("U7", "R8"), cmd("U8", "R9")], reply)];
        run_round(&conn, &mut generic, &mut allocations, &balances, &configs);
        assert!(job_answer.await.unwrap().is_err());
        let results = answer.await.unwrap();
        assert!(results.len() == 2 && results.iter().all(|r| matches!(r, Err(StoreError::Unavailable(_)))), "{results:?}");
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 0);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM tags"), 2);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM ledger_entries"), 6);
        drop((conn, other));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
