//! The bound on SQLite's write-ahead log (`COINS_SQLITE_WAL_MAX_MB`): under a steady stream of
//! allocations, single and bulk, with balance reads beside them, the `-wal` file never grows more
//! than a quarter past the bound, although many times the bound is written through it. The
//! server is the only process with the file open, as in production.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

const ADMIN_ID: &str = "wal-admin";
const ADMIN_SECRET: &str = "wal-secret-for-tests-only";
const BOUND_MB: u64 = 4;
const WRITERS: usize = 16;
/// Items of each bulk request: a transaction of its own with room for a few single allocations.
const BULK_ITEMS: usize = 100;
const LOAD: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_within_its_bound_under_allocation_load() {
    let Some(db) = blank_db(Backend::Sqlite).await else { return };
    let bound = (BOUND_MB * 1024 * 1024).to_string();
    let (child, base) = start_coins_serve(
        &db.url,
        &[
            ("COINS_ADMIN_CLIENT_ID", ADMIN_ID),
            ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET),
            ("COINS_SQLITE_WAL_MAX_MB", &BOUND_MB.to_string()),
            // One client drives all the load; a fast machine must not meet the per-client limit.
            ("COINS_RATE_LIMIT_PER_SEC", "0"),
        ],
    );
    let mut server = KillOnDrop(child);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let token = token_at(&http, &base, ADMIN_ID, ADMIN_SECRET).await;
    create_config_at(&http, &base, &token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":1,"validityDays":30})).await;

    // The file's size, sampled far more often than the log fills.
    let wal = format!("{}-wal", db.url);
    let (peak, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::metadata(&wal) {
                    peak.fetch_max(m.len(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let until = Instant::now() + LOAD;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            let mut allocated = 0u64;
            for i in 0.. {
                if Instant::now() >= until {
                    break;
                }
                let body = json!({"companyId":"C","event":"E","requestId": format!("W{w}-{i}"),"userId": format!("U{}", (w * 7919 + i) % 500)});
                let res = http.post(format!("{base}/api/v0/enkash-coins/allocate-coin")).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
                allocated += 1;
            }
            allocated
        });
    }
    // Bulk requests beside them: each is one job, counted by its items toward a transaction.
    {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            let mut allocated = 0u64;
            for b in 0.. {
                if Instant::now() >= until {
                    break;
                }
                let items: Vec<_> = (0..BULK_ITEMS)
                    .map(|i| json!({"companyId":"C","event":"E","requestId": format!("B{b}-{i}"),"userId": format!("U{}", (b * 31 + i) % 500)}))
                    .collect();
                let res = http
                    .post(format!("{base}/api/v0/enkash-coins/allocate-coins"))
                    .bearer_auth(&token)
                    .json(&json!({"allocations": items}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(body["payload"]["allocated"], json!(BULK_ITEMS), "{body}");
                allocated += BULK_ITEMS as u64;
            }
            allocated
        });
    }
    // A reader holding snapshots now and then, as balance reads do.
    {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            for i in 0u64.. {
                if Instant::now() >= until {
                    break;
                }
                let res = http.get(format!("{base}/api/v0/coins/balance?userId=U{}", i % 500)).bearer_auth(&token).send().await.unwrap();
                assert!(matches!(res.status().as_u16(), 200 | 404), "balance read: {}", res.status());
            }
            0
        });
    }
    let mut allocated = 0;
    while let Some(n) = tasks.join_next().await {
        allocated += n.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    // Each allocation writes at least its entry, its lot and its user's row: two pages or more.
    let written_mb = allocated * 2 * 4096 / (1024 * 1024);
    assert!(written_mb >= 4 * BOUND_MB, "too little load to test the bound: {allocated} allocations");
    let peak = peak.load(Ordering::Relaxed);
    let limit = BOUND_MB * 1024 * 1024 * 5 / 4;
    println!("WAL peak {peak} bytes ({bound}-byte bound) over {allocated} allocations");
    assert!(peak <= limit, "the WAL peaked at {peak} bytes, past {limit} ({bound}-byte bound, {allocated} allocations)");
    // The log did reach its restart point (three quarters of the bound): the file was watched.
    assert!(peak >= BOUND_MB * 1024 * 1024 / 2, "the WAL never grew to half its bound ({peak} bytes): was the file watched?");
    server.stop();
    let verify =
        std::process::Command::new(env!("CARGO_BIN_EXE_coins")).arg("verify").env("COINS_DATABASE_URL", &db.url).env("COINS_LOG", "warn").output().unwrap();
    assert!(verify.status.success(), "coins verify: {}", String::from_utf8_lossy(&verify.stdout));
}
