//! SQLite's own page cache, with one key changed so that a commit does not scan the whole cache.
//!
//! When a B-tree page splits, SQLite renumbers the new sibling pages into ascending order by
//! swapping two pages through a spare number: the page number of the 1 GiB "pending byte"
//! (262,145 with 4 KiB pages). The default page cache remembers the largest page number it has
//! held, and at the end of every transaction it drops the pages past the end of the database; when
//! that largest number is far past the end, as 262,145 is in a database under 1 GiB, it walks
//! every slot of its hash table instead of the few past the end. With the writer's cache of tens
//! of thousands of pages, that walk was a fifth of the writer's time once the webhook outbox's
//! indexes split beside the ledger's (see docs/BENCHMARKS.md).
//!
//! This cache hands every call to SQLite's default one, except that the spare number becomes the
//! number just past the largest page this cache has held: a number no page holds, vacated again
//! within the same swap, and close enough to the end that the end-of-transaction trim looks only
//! at the slots it needs. Nothing else changes: the pages, their contents and SQLite's file are
//! exactly as they would be. It is installed once per process, before SQLite's first connection;
//! if SQLite is already running (a test opened a connection first), the default stays.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The byte offset SQLite reserves for its locks (`PENDING_BYTE`, 1 GiB).
const PENDING_BYTE: u32 = 0x4000_0000;

/// SQLite's default page cache, to which every call goes: read before ours is installed, so it
/// is always there when SQLite calls one of ours.
static DEFAULT: OnceLock<Option<Methods>> = OnceLock::new();
/// Whether ours is installed (SQLite was not running yet when `install` first ran).
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// The default cache's methods. Its `pArg` is a pointer SQLite only passes back to them.
struct Methods(ffi::sqlite3_pcache_methods2);
// SAFETY: the struct is written once, before any of our methods can run, and only read after;
// SQLite's default page cache is thread-safe (it serializes on its own mutex where it shares).
unsafe impl Send for Methods {}
unsafe impl Sync for Methods {}

/// One connection's cache: SQLite's, and the largest page number it has been given.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The spare page number balancing uses for its swaps.
    pending: c_uint,
    /// The largest page number handed to `inner` since the last trim (never the spare's stand-in).
    max_key: c_uint,
}

/// Installs the cache for every connection this process opens; a no-op after the first call.
/// Call it before any thread can open a connection (`main` does; `open_connection` calls it
/// again for tests and embedders): SQLite's configuration is not safe to change while another
/// thread starts it. Whether the cache is in place.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        let default = DEFAULT.get_or_init(|| {
            let mut default = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
            // SAFETY: SQLITE_CONFIG_GETPCACHE2 writes the current methods into the pointed-to
            // struct, which has SQLite's layout (bindgen). Refused (SQLITE_MISUSE) once SQLite
            // is initialized, and then nothing was written.
            unsafe { (ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr()) == ffi::SQLITE_OK).then(|| Methods(default.assume_init())) }
        });
        if default.is_none() {
            return false;
        }
        let ours = ffi::sqlite3_pcache_methods2 {
            iVersion: 1,
            pArg: std::ptr::null_mut(),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            xCreate: Some(create),
            xCachesize: Some(cachesize),
            xPagecount: Some(pagecount),
            xFetch: Some(fetch),
            xUnpin: Some(unpin),
            xRekey: Some(rekey),
            xTruncate: Some(truncate),
            xDestroy: Some(destroy),
            xShrink: Some(shrink),
        };
        // SAFETY: SQLITE_CONFIG_PCACHE2 copies the struct it is given; DEFAULT already holds
        // the methods ours call. Refused once SQLite is initialized, and then nothing changes.
        unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const ffi::sqlite3_pcache_methods2) == ffi::SQLITE_OK }
    })
}

/// Whether this process's connections use this cache.
#[cfg(test)]
fn installed() -> bool {
    INSTALLED.get().copied().unwrap_or(false)
}

fn methods() -> &'static ffi::sqlite3_pcache_methods2 {
    // Ours are installed only after DEFAULT holds SQLite's, so this is set when they run.
    DEFAULT.get().and_then(Option::as_ref).map(|m| &m.0).expect("page cache methods installed")
}

/// Times the spare number was kept under another (for the test that balancing still works).
#[cfg(test)]
static SPARES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The key the default cache keeps a page under.
fn key_of(cache: &Cache, key: c_uint) -> c_uint {
    if key == cache.pending && cache.max_key < cache.pending - 1 {
        #[cfg(test)]
        SPARES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cache.max_key + 1
    } else {
        key
    }
}

// SAFETY (all below): SQLite calls these with the pointers it was given by `create` (a leaked
// `Box<Cache>`), one call at a time per cache (a connection's calls are serialized by its mutex),
// and `methods()` holds the default cache's functions, which SQLite defines for every slot.

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let m = methods();
    unsafe { m.xInit.map_or(ffi::SQLITE_OK, |f| f(m.pArg)) }
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let m = methods();
    if let Some(f) = m.xShutdown {
        unsafe { f(m.pArg) }
    }
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let inner = unsafe { (methods().xCreate.expect("xCreate"))(page_size, extra, purgeable) };
    if inner.is_null() {
        return std::ptr::null_mut();
    }
    let pending = PENDING_BYTE / u32::try_from(page_size.max(1)).unwrap_or(1) + 1;
    Box::into_raw(Box::new(Cache { inner, pending, max_key: 0 })).cast()
}

unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *p.cast::<Cache>() }
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    unsafe { (methods().xCachesize.expect("xCachesize"))(cache(p).inner, pages) }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    unsafe { (methods().xPagecount.expect("xPagecount"))(cache(p).inner) }
}

unsafe extern "C" fn fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
    let c = unsafe { cache(p) };
    // Balancing only looks the spare number up (to drop what it holds); a page created under it
    // would be a real one, kept under its own number.
    let stored = if create == 0 { key_of(c, key) } else { key };
    let page = unsafe { (methods().xFetch.expect("xFetch"))(c.inner, stored, create) };
    if !page.is_null() && stored == key {
        c.max_key = c.max_key.max(key);
    }
    page
}

unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    unsafe { (methods().xUnpin.expect("xUnpin"))(cache(p).inner, page, discard) }
}

unsafe extern "C" fn rekey(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, old: c_uint, new: c_uint) {
    let c = unsafe { cache(p) };
    let (old_stored, new_stored) = (key_of(c, old), key_of(c, new));
    unsafe { (methods().xRekey.expect("xRekey"))(c.inner, page, old_stored, new_stored) };
    if new_stored == new {
        c.max_key = c.max_key.max(new);
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = unsafe { cache(p) };
    unsafe { (methods().xTruncate.expect("xTruncate"))(c.inner, limit) };
    // Every page at `limit` or past it is gone.
    c.max_key = c.max_key.min(limit.saturating_sub(1));
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = unsafe { Box::from_raw(p.cast::<Cache>()) };
    unsafe { (methods().xDestroy.expect("xDestroy"))(c.inner) }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().xShrink {
        unsafe { f(cache(p).inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random-order inserts into an index split pages whose new numbers need sorting, the swap
    /// this cache renames; the database must come out whole and hold exactly what was written,
    /// across commits, rollbacks and a fresh connection (a stand-in number that collided with a
    /// dirty page would lose it).
    #[test]
    fn balancing_through_the_renamed_spare_keeps_the_database_whole() {
        let dir = std::env::temp_dir().join(format!("coins-pcache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let conn = super::super::open_connection(&path, 2048).unwrap();
        if !installed() {
            // Another test of this process started SQLite first (`cargo test` runs them as
            // threads of one process); nextest, the README's test command, runs each alone.
            assert!(std::env::var_os("NEXTEST").is_none(), "the first connection of the process installs the cache");
            eprintln!("\n!!! SKIPPED: SQLite was started before the page cache could be installed; run under cargo nextest !!!\n");
            return;
        }
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t (v);").unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut expected = 0i64;
        for batch in 0..200 {
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                tx.execute("INSERT INTO t (v) VALUES (?1)", [format!("{x:016x}-{}", "p".repeat((x % 200) as usize))]).unwrap();
            }
            if batch % 10 == 9 {
                tx.rollback().unwrap();
            } else {
                tx.commit().unwrap();
                expected += 100;
            }
        }
        assert!(SPARES.load(std::sync::atomic::Ordering::Relaxed) > 0, "no split needed the spare number; the test does not test it");
        drop(conn);
        let conn = super::super::open_connection(&path, 2048).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let (rows, by_index): (i64, i64) = conn
            .query_row("SELECT (SELECT COUNT(*) FROM t), (SELECT COUNT(*) FROM t INDEXED BY t_v WHERE v > '')", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((rows, by_index), (expected, expected));
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
