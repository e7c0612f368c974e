//! Checkpoints and the bound on the WAL file.
//!
//! Checkpoints copy the WAL back into the database file. Left automatic, SQLite runs them inside
//! the writer's COMMIT; a thread of their own keeps them off the write path: PASSIVE checkpoints
//! every [`CHECKPOINT_INTERVAL`], which wait for no lock.
//!
//! Under a steady stream of commits PASSIVE checkpoints never catch up completely, and SQLite
//! only rewinds the WAL once everything in it has been copied back, so the WAL grows without
//! bound (seen: 2 GB within a minute of allocation load). So between two of its transactions,
//! once the log holds more than [`RESTART_SHARE`] of the limit, the writer itself runs a RESTART
//! checkpoint: it copies what PASSIVE left over, and the next commit starts the log from the
//! beginning again. Run by the writer it needs no write lock from this process, but writes wait
//! while it copies, so it must find little to copy:
//!
//! - PASSIVE runs often (every [`CHECKPOINT_INTERVAL`]), so what is left over is a few commits.
//! - The two never run at once (a RESTART that found PASSIVE running would fail BUSY). Below the
//!   bound the writer does not wait for a PASSIVE in progress: it asks for the restart, and the
//!   checkpoint thread starts no new PASSIVE until the writer has had its turn, after its next
//!   commit. Should the writer not get to it (no more writes came, or a reader kept the restart
//!   from finishing), the checkpoint thread goes on after [`RESTART_WAIT_INTERVALS`] intervals (a
//!   second). Once the log is as long as the bound, the writer waits for the PASSIVE in progress
//!   to end (one copy of the log at most).
//! - A RESTART waits for readers still on the old log ([`READERS_WAIT`], [`READERS_WAIT_PAST_BOUND`]
//!   past the bound), then gives up until after the next commit: a long read (an open `sqlite3`
//!   shell, a backup) keeps the log growing past the bound while it lasts, and is logged.
//! - The writer counts the log's frames itself (SQLite tells each commit's connection), so it
//!   restarts on time, not on a count a checkpoint published a while ago.
//! - The file may pass the bound by what one transaction writes after the restart point (at most
//!   512 writes, or one bulk request: about 12 MiB for 1,000 allocations at 1M entries), more if a
//!   restart had to be put off. Restarting at three quarters of the bound leaves room for that:
//!   SQLite cuts a log longer than `journal_size_limit` back when it restarts, and a file cut back
//!   and grown again makes every commit that grows it pay for the file system's metadata too.
//!
//! A checkpoint run by another process at the same moment (a `coins` command, the `sqlite3`
//! shell, a backup) makes the restart fail BUSY; the writer tries again after its next commit.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

/// How often the checkpointer copies the log back: what a restart may find left to copy.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);
/// Default bound on the WAL (`COINS_SQLITE_WAL_MAX_MB`): tens of MiB, what an operator of an
/// embedded database expects beside a database of any size.
pub const WAL_MAX_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The share of the bound at which the writer restarts the log (numerator, denominator).
const RESTART_SHARE: (i64, i64) = (3, 4);
/// Intervals the checkpoint thread stands aside for a restart the writer asked for: longer than
/// a transaction takes (a bulk request at 10M entries takes about 80 ms), so the writer gets its
/// turn after its next commit; bounded, for a writer gone idle.
const RESTART_WAIT_INTERVALS: u32 = 100;
const CHECKPOINT_CACHE_KIB: i64 = 512;
/// How long a restart waits for readers to leave the old log (writes wait meanwhile).
const READERS_WAIT: Duration = Duration::from_millis(20);
const READERS_WAIT_PAST_BOUND: Duration = Duration::from_millis(500);

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection (the writer's).
    static FRAMES: Cell<i64> = const { Cell::new(0) };
}

pub struct Wal {
    /// Frames past which the writer restarts the log.
    restart_frames: i64,
    /// Frames in a log as long as the bound: past it the writer waits for a PASSIVE in progress.
    limit_frames: i64,
    /// Set by the writer when the log is due a restart: the checkpoint thread stands aside.
    restart_wanted: Arc<AtomicBool>,
    /// Held by whoever checkpoints: PASSIVE and RESTART never overlap.
    checkpointing: Arc<Mutex<()>>,
}

impl Wal {
    /// Sets the writer connection up for manual checkpoints and starts the checkpoint thread.
    pub fn start(path: &Path, writer: &Connection, max_bytes: u64) -> StoreResult<Self> {
        let page_size: i64 = writer.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        // A frame is a page and its 24-byte header.
        let limit_frames = i64::try_from(max_bytes).unwrap_or(i64::MAX) / (page_size.max(512) + 24);
        writer.execute_batch(&format!("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={max_bytes};"))?;
        // After the pragma above: setting `wal_autocheckpoint` replaces the WAL hook, so nothing may
        // set it on the writer's connection again, or the count stops and the log is unbounded
        // (`tests/api/wal.rs` would see it).
        writer.wal_hook(Some(|_, frames| {
            FRAMES.set(i64::from(frames));
            Ok(())
        }));
        let checkpointer = super::open_connection(path, CHECKPOINT_CACHE_KIB)?;
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let checkpointing = Arc::new(Mutex::new(()));
        // Weak: the thread ends once the writer, and with it this `Wal`, is gone.
        let (wanted, lock) = (Arc::downgrade(&restart_wanted), checkpointing.clone());
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &wanted, &lock))
            .map_err(|e| StoreError::io("starting the SQLite checkpoint thread", e))?;
        let restart_frames = (limit_frames * RESTART_SHARE.0 / RESTART_SHARE.1).max(1);
        Ok(Self { restart_frames, limit_frames, restart_wanted, checkpointing })
    }

    /// Called by the writer between transactions.
    pub fn restart_if_long(&self, writer: &Connection) {
        if FRAMES.get() <= self.restart_frames {
            return;
        }
        self.restart_wanted.store(true, Ordering::Relaxed);
        // A PASSIVE in progress: the checkpoint thread starts no other, so try after the next
        // commit; past the bound itself, wait for it to end rather than let the log grow on.
        let _alone = match self.checkpointing.try_lock() {
            Ok(guard) => guard,
            Err(_) if FRAMES.get() > self.limit_frames => self.checkpointing.lock().unwrap_or_else(|p| p.into_inner()),
            Err(_) => return,
        };
        // A RESTART waits (the busy handler) for readers still on the old log: briefly, since
        // writes wait meanwhile; a little longer once the log is past its bound.
        let past_bound = FRAMES.get() > self.limit_frames;
        let _ = writer.busy_timeout(if past_bound { READERS_WAIT_PAST_BOUND } else { READERS_WAIT });
        let outcome = writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        let _ = writer.busy_timeout(super::BUSY_TIMEOUT);
        match outcome {
            // 0: done; the next commit starts the log from its beginning.
            Ok(0) => {
                FRAMES.set(0);
                self.restart_wanted.store(false, Ordering::Relaxed);
            }
            Ok(_) if past_bound => tracing::warn!(
                frames = FRAMES.get(),
                "the WAL is past its bound and could not be restarted: a long read (or another process) holds it; trying after the next commit"
            ),
            Ok(_) => tracing::debug!("WAL restart checkpoint could not finish (a reader, or another process checkpointing); trying after the next commit"),
            Err(e) => tracing::debug!(error = %e, "WAL restart checkpoint failed"),
        }
    }
}

/// PASSIVE checkpoints, except while the writer waits to restart the log (for
/// [`RESTART_WAIT_INTERVALS`] at most). Ends with the store, or when a checkpoint fails for good.
fn checkpoint_loop(conn: &Connection, restart_wanted: &Weak<AtomicBool>, checkpointing: &Mutex<()>) {
    let mut stood_aside = 0;
    loop {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        let Some(wanted) = restart_wanted.upgrade() else { return };
        if wanted.load(Ordering::Relaxed) && stood_aside < RESTART_WAIT_INTERVALS {
            stood_aside += 1;
            continue;
        }
        stood_aside = 0;
        let _alone = checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint thread stopping");
            return;
        }
    }
}
