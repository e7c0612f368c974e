//! Checkpoints and the bound on the WAL file.
//!
//! Checkpoints copy the WAL back into the database file. Left automatic, SQLite runs them inside
//! the writer's COMMIT; a thread of their own keeps them off the write path: PASSIVE checkpoints
//! every [`CHECKPOINT_INTERVAL`], which never block the writer or the readers.
//!
//! Under a steady stream of commits PASSIVE checkpoints never catch up completely, and SQLite
//! only rewinds the WAL once everything in it has been copied back, so the WAL grows without
//! bound (seen: 2 GB within a minute of allocation load). So between two of its transactions,
//! once the log is longer than the limit, the writer itself runs a RESTART checkpoint: it copies
//! what PASSIVE left over, and the next commit starts the log from the beginning again;
//! `journal_size_limit` then truncates the file back to the limit. Run by the writer it never
//! waits for the write lock, but writes wait while it copies (the cost in docs/BENCHMARKS.md).
//! PASSIVE runs often, so little is left over; the two never run at once (a lock), since a
//! RESTART that found PASSIVE running would fail BUSY and let the log grow past the limit.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

/// How often the checkpointer runs; the WAL grows by at most this much of write traffic between
/// two looks at its length.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// Default bound on the WAL (`COINS_SQLITE_WAL_MAX_MB`): tens of MiB, what an operator of an
/// embedded database expects beside a database of any size.
pub const WAL_MAX_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
const CHECKPOINT_CACHE_KIB: i64 = 512;

pub struct Wal {
    /// Frames in the WAL as the checkpointer last saw them.
    frames: Arc<AtomicI64>,
    /// Frames past which the writer restarts the log.
    limit_frames: i64,
    /// Held by whoever checkpoints: PASSIVE and RESTART never overlap.
    checkpointing: Arc<Mutex<()>>,
}

impl Wal {
    /// Sets the writer connection up for manual checkpoints and starts the checkpoint thread.
    pub fn start(path: &Path, writer: &Connection, max_bytes: u64) -> StoreResult<Self> {
        let page_size: i64 = writer.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let limit_frames = i64::try_from(max_bytes).unwrap_or(i64::MAX) / page_size.max(512);
        writer.execute_batch(&format!("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={max_bytes};"))?;
        let checkpointer = super::open_connection(path, CHECKPOINT_CACHE_KIB)?;
        let frames = Arc::new(AtomicI64::new(0));
        let checkpointing = Arc::new(Mutex::new(()));
        let (published, lock) = (frames.clone(), checkpointing.clone());
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &published, &lock))
            .map_err(|e| StoreError::io("starting the SQLite checkpoint thread", e))?;
        Ok(Self { frames, limit_frames: limit_frames.max(1), checkpointing })
    }

    /// Called by the writer between transactions.
    pub fn restart_if_long(&self, writer: &Connection) {
        if self.frames.load(Ordering::Relaxed) <= self.limit_frames {
            return;
        }
        let _alone = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        match writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
            // 0: done; the next commit starts the log from its beginning.
            Ok(0) => self.frames.store(0, Ordering::Relaxed),
            Ok(_) => tracing::debug!("WAL restart checkpoint could not finish (a reader); trying after the next commit"),
            Err(e) => tracing::debug!(error = %e, "WAL restart checkpoint failed"),
        }
    }
}

/// PASSIVE checkpoints, publishing the WAL's length. Ends when the database is gone (the store
/// dropped and the file removed) or a checkpoint fails for good.
fn checkpoint_loop(conn: &Connection, frames: &AtomicI64, checkpointing: &Mutex<()>) {
    loop {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        let _alone = checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(n) => frames.store(n, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "checkpoint thread stopping");
                return;
            }
        }
    }
}
