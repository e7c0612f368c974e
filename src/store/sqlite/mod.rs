//! The embedded SQLite backend (the default): one file, one writer thread, readers beside it.
//!
//! - `writer.rs`: the writer thread, which owns the only write connection and commits every
//!   queued write in one transaction (group commit).
//! - `pcache.rs`: SQLite's page cache without a full scan at the end of most commits.
//! - `wal.rs`: checkpoints off the write path, and the bound on the WAL file.
//! - `clients.rs`, `configs.rs`, `ledger.rs`, `reports.rs`: one file per store trait.
//!
//! Reads: point reads run on a per-worker-thread connection ([`SqliteStore::read_inline`]),
//! scans on a small pool from `spawn_blocking` ([`SqliteStore::read`]); WAL lets them run beside
//! the writer and see only committed data. Balance reads are usually answered from the
//! [`BalanceCache`], which the writer keeps exact (one `serve` per file, see `lock_sqlite_for_serve`).

/// An entry's type as stored; a type the code does not know is a conversion error, not a guess.
impl rusqlite::types::FromSql for crate::domain::ledger::EntryKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).ok_or_else(|| rusqlite::types::FromSqlError::Other(format!("unknown entry type {text}").into()))
    }
}

mod campaigns;
mod clients;
mod configs;
mod ledger;
mod pcache;
mod reminders;
mod reports;
mod tiers;
mod wal;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use tokio::sync::{Semaphore, oneshot};

use super::balance_cache::BalanceCache;
use super::migrate::{self, AppliedMigration, Migration, MigrationTarget};
use super::{Store, StoreError, StoreOptions, StoreResult};
pub use wal::WAL_MAX_BYTES_DEFAULT;
use writer::{Job, Queued, Writer};

/// Where this backend reads an allocation's record from (see [`super::model::RecordFrom`]).
const RECORD_FROM: &str = super::model::RecordFrom::Sqlite.sql();

/// Read connections on the blocking pool: a few more than cores, since reads also wait on disk.
const READERS_MAX: usize = 4;

/// Page caches, in KiB. The writer gets most: every allocation touches one leaf page per user in
/// each per-user index, so its hot set grows with the number of active users (about 120 MB for
/// 10,000 users), and a miss costs it a read from the OS. Readers do point lookups in small
/// tables. Together they stay inside a 150 MB RSS budget.
const WRITER_CACHE_KIB: i64 = 56 * 1024;
const INLINE_CACHE_KIB: i64 = 4 * 1024;
const READER_CACHE_KIB: i64 = 2 * 1024;

pub struct SqliteStore {
    balances: Arc<BalanceCache>,
    /// Webhook messages claimed by this process's worker, until when (`webhooks.rs`).
    leases: Mutex<std::collections::HashMap<i64, i64>>,
    writer: Writer,
    readers: Arc<Readers>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// How long a connection waits for a lock another process holds (the CLI, a backup).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs this backend's page cache (`pcache.rs`) for the whole process; `main` calls it
/// before any thread starts. Whether it is in place (not when SQLite was already running).
pub fn install_page_cache() -> bool {
    pcache::install()
}

/// Opens a connection with the pragmas every connection of this backend uses.
fn open_connection(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
    pcache::install();
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    // FULL: the WAL is synced at every commit, so an acknowledged write survives power loss.
    // temp_store=MEMORY: savepoint sub-journals of generic writer jobs stay in memory.
    conn.execute_batch(&format!("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{cache_kib};"))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path, options: StoreOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        }
        let conn = open_connection(path, WRITER_CACHE_KIB)?;
        let wal = wal::Wal::start(path, &conn, options.wal_max_bytes)?;
        let balances = Arc::new(BalanceCache::default());
        let writer = Writer::start(conn, wal, if options.group_commit { writer::BATCH_MAX } else { 1 }, balances.clone())?;
        Ok(Self {
            balances,
            leases: Mutex::default(),
            writer,
            readers: Arc::new(Readers { path: path.to_owned(), idle: Mutex::new(Vec::new()), permits: Semaphore::new(READERS_MAX) }),
        })
    }

    /// Runs `work` on the writer thread inside the current batch's transaction, in a savepoint
    /// of its own; answered after the commit.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(work)?.await.map_err(|_| StoreError::Busy("the writer dropped the job"))?
    }

    /// Queues a write without waiting for it, so several can share one commit.
    fn submit<T, F>(&self, work: F) -> StoreResult<oneshot::Receiver<StoreResult<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.writer.enqueue(Queued::Generic(Box::new(Job::new(work, reply))))?;
        Ok(answer)
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
        let _permit = self.readers.permits.acquire().await.map_err(|_| StoreError::Busy("the read pool is closed"))?;
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
        .map_err(|e| StoreError::Corrupt(format!("a read task failed: {e}")))?
    }
}

/// A transaction of the writer thread, for the backend-neutral flows of `store/ledger.rs` and
/// `store/configs.rs`.
pub(crate) struct SqliteTx<'a>(pub &'a Connection);

/// Migrations run as one writer job: the write lock keeps other processes out meanwhile.
struct SqliteMigrations<'a>(&'a Connection);

impl MigrationTarget for SqliteMigrations<'_> {
    async fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>> {
        self.0.execute_batch(migrate::CREATE_TABLE)?;
        let sealed: bool =
            self.0.query_row("SELECT EXISTS (SELECT 1 FROM pragma_table_info('schema_migrations') WHERE name = 'checksum')", [], |r| r.get(0))?;
        if !sealed {
            self.0.execute_batch("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")?;
        }
        Ok(self
            .0
            .prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")?
            .query_map([], |r| Ok(AppliedMigration { version: r.get(0)?, checksum: r.get(1)? }))?
            .collect::<Result<_, _>>()?)
    }

    async fn seal(&mut self, version: i64, checksum: &str) -> StoreResult<()> {
        self.0.execute("UPDATE schema_migrations SET checksum = ?2 WHERE version = ?1", params![version, checksum])?;
        Ok(())
    }

    async fn apply(&mut self, m: &Migration, checksum: &str, now_ms: i64) -> StoreResult<()> {
        self.0.execute_batch(m.sql)?;
        self.0.execute(
            "INSERT INTO schema_migrations (version, name, applied_at, checksum) VALUES (?1, ?2, ?3, ?4)",
            params![m.version, m.name, now_ms, checksum],
        )?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.write(|conn| {
            super::ledger::run_now(async { migrate::run(&mut SqliteMigrations(conn), migrate::SQLITE).await })?;
            configs::keep_caps_index(conn)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    /// The read pool (the writer's one connection is always busy or idle; its queue is a gauge
    /// of its own, set per transaction).
    fn observe(&self) {
        let idle = self.readers.idle.lock().map_or(0, |v| v.len());
        let in_use = READERS_MAX.saturating_sub(self.readers.permits.available_permits());
        crate::metrics::connections("sqlite", in_use, idle, 0);
    }
}
