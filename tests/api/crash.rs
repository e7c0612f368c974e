//! Durability: SIGKILL the real server in the middle of an allocation burst, restart it on the
//! same database, and check the exactly-once promise. Every allocation answered 200 is in the ledger
//! exactly once; a request that got no answer was applied fully or not at all, so retrying it is
//! safe; afterwards every request is in the ledger exactly once and `coins verify` passes.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const ADMIN_ID: &str = "crash-admin";
const ADMIN_SECRET: &str = "crash-secret-for-tests-only";
const WORKERS: usize = 32;

fn start_server(db_url: &str) -> (Child, String) {
    start_coins_serve(db_url, &[("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET)])
}

async fn admin_token(http: &reqwest::Client, base: &str) -> String {
    token_at(http, base, ADMIN_ID, ADMIN_SECRET).await
}

async fn allocate(http: &reqwest::Client, base: &str, token: &str, request_id: &str, user: &str) -> Option<u16> {
    let body = json!({"companyId":"C","event":"E","requestId": request_id,"userId": user});
    let res = http.post(format!("{base}/api/v0/enkash-coins/allocate-coin")).bearer_auth(token).json(&body).send().await.ok()?;
    let status = res.status().as_u16();
    // A status line without its body is no answer either: the client cannot know the outcome.
    res.bytes().await.ok()?;
    Some(status)
}

async fn ledger_request_ids(backend: Backend, url: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare("SELECT request_id FROM ledger_entries WHERE type = 'ALLOCATE'").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query("SELECT request_id FROM ledger_entries WHERE type = 'ALLOCATE'", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
        }
    }
}

async fn kill_mid_burst_and_recover(backend: Backend) {
    let Some(db) = test_db(backend).await else { return };
    let url = db.url.clone();
    let (child, base) = start_server(&url);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let token = admin_token(&http, &base).await;
    create_config_at(&http, &base, &token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":1})).await;

    // The burst: each worker sends allocations until the server dies under it.
    let dead = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (http, base, token, dead) = (http.clone(), base.clone(), token.clone(), dead.clone());
        workers.spawn(async move {
            let mut outcomes: Vec<(String, String, Option<u16>)> = Vec::new();
            for i in 0.. {
                let (rid, user) = (format!("W{w}-{i}"), format!("U{}", (w + i) % 50));
                let status = allocate(&http, &base, &token, &rid, &user).await;
                let stop = status.is_none();
                outcomes.push((rid, user, status));
                if stop || dead.load(Ordering::Relaxed) {
                    break;
                }
            }
            outcomes
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    dead.store(true, Ordering::Relaxed);
    let mut child = child;
    let _ = child.wait();
    let mut outcomes = Vec::new();
    while let Some(done) = workers.join_next().await {
        outcomes.extend(done.unwrap());
    }
    let answered: Vec<&(String, String, Option<u16>)> = outcomes.iter().filter(|o| o.2 == Some(200)).collect();
    let unanswered: Vec<&(String, String, Option<u16>)> = outcomes.iter().filter(|o| o.2.is_none()).collect();
    assert!(answered.len() > 50, "the burst was too small to mean anything: {} answered", answered.len());
    assert!(outcomes.iter().all(|o| matches!(o.2, Some(200) | None)), "only 200s or no answer expected");

    // After the crash, straight from the database: every 200 is there exactly once.
    let ids = ledger_request_ids(backend, &url).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "a request has two ledger entries");
    for (rid, _, _) in &answered {
        assert_eq!(counts.get(rid.as_str()), Some(&1), "{rid} was answered 200 but is not in the ledger");
    }
    let sent: HashSet<&str> = outcomes.iter().map(|o| o.0.as_str()).collect();
    assert!(ids.iter().all(|id| sent.contains(id.as_str())), "the ledger holds a request nobody sent");

    // Restart and retry every request that got no answer: each is applied exactly once overall.
    let (mut child, base) = start_server(&url);
    let token = admin_token(&http, &base).await;
    for (rid, user, _) in &unanswered {
        assert_eq!(allocate(&http, &base, &token, rid, user).await, Some(200), "retrying {rid}");
    }
    for (rid, user, _) in answered.iter().take(20) {
        assert_eq!(allocate(&http, &base, &token, rid, user).await, Some(200), "replaying {rid}");
    }
    let ids = ledger_request_ids(backend, &url).await;
    assert_eq!(ids.len(), outcomes.len(), "every request sent is in the ledger once, no more");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    let mut total = 0;
    for u in 0..50 {
        let res = http.get(format!("{base}/api/v0/coins/balance?userId=U{u}")).bearer_auth(&token).send().await.unwrap();
        total += res.json::<serde_json::Value>().await.unwrap()["payload"].as_i64().unwrap();
    }
    assert_eq!(total as usize, outcomes.len(), "balances add up to one coin per request");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let verify = Command::new(env!("CARGO_BIN_EXE_coins")).arg("verify").env("COINS_DATABASE_URL", &url).env("COINS_LOG", "warn").output().unwrap();
    assert!(verify.status.success(), "coins verify after the crash: {}", String::from_utf8_lossy(&verify.stdout));
    eprintln!("crash test ({backend:?}): {} answered 200 before SIGKILL, {} unanswered and retried", answered.len(), unanswered.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_and_doubles_nothing_on_sqlite() {
    kill_mid_burst_and_recover(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_and_doubles_nothing_on_postgres() {
    kill_mid_burst_and_recover(Backend::Postgres).await;
}
