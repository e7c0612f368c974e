//! PostgreSQL failover: a throwaway primary with a synchronous standby (initdb, pg_basebackup),
//! `coins serve` on the multi-host URL `postgres://...@primary,standby/coins?
//! target_session_attrs=read-write`, allocations from several clients, then the primary killed
//! and the standby promoted mid-load. Every credit acknowledged is there exactly once on the new
//! primary; clients saw `503 UNAVAILABLE` (never 500) while it failed over; retrying with the
//! same request ids finishes the job; `coins verify` passes. It runs PostgreSQL's own binaries
//! (`pg_config --bindir`) as the `postgres` user when the test runs as root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

const ADMIN_ID: &str = "failover-admin";
const ADMIN_SECRET: &str = "failover-secret-for-tests";

pub(crate) fn bindir() -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output().expect("pg_config (PostgreSQL's binaries) is needed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A port free now for a child process to listen on, taken below the kernel's ephemeral range
/// (32768–60999 by default): a port the kernel hands out (`bind` to port 0, or any outgoing
/// connection of a test running beside this one) could be taken again before the child binds it,
/// which once failed the Patroni test with "Address already in use".
pub(crate) fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Each test process starts at its own place in 20000–31999, so concurrent ones rarely meet.
    let start = std::process::id() * 37;
    loop {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// Runs a PostgreSQL binary, as `postgres` when we are root (initdb refuses root).
fn pg(bin: &str, args: &[&str]) -> std::process::Output {
    let path = bindir().join(bin);
    let root = unsafe_geteuid() == 0;
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running {bin}: {e}"));
    assert!(out.status.success(), "{bin} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

pub(crate) fn unsafe_geteuid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(1)
}

struct Cluster {
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in ["primary", "standby"] {
            let data = self.dir.join(node);
            if data.join("postmaster.pid").exists() {
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(bindir().join("pg_ctl"))
                    .args(["-D"])
                    .arg(&data)
                    .args(["-m", "immediate", "stop"])
                    .output();
                let _ = Command::new(bindir().join("pg_ctl")).arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `extra`: settings of this node only (the standby's copy of the primary's configuration would
/// otherwise make it wait, once promoted, for a synchronous standby of its own).
fn start_node(data: &Path, port: u16, extra: &str) {
    let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -k {} {extra}", data.display());
    let log = data.join("server.log");
    pg("pg_ctl", &["-D", &data.to_string_lossy(), "-o", &opts, "-l", &log.to_string_lossy(), "-w", "start"]);
}

async fn sql(port: u16, db: &str, query: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=postgres dbname={db}"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.query(query, &[]).await.unwrap()
}

/// One client's allocations: each request id retried (same body) until definitely answered.
/// Answers the acknowledged request ids with when each was acknowledged, and every status seen
/// (0: no answer).
async fn drive(http: reqwest::Client, base: String, token: String, worker: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut acked = Vec::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let rid = format!("F{worker}-{i}");
        let body = json!({"companyId":"C","event":"E","requestId":rid,"userId":format!("U{}", i % 7)});
        loop {
            let res = http.post(format!("{base}/api/v0/enkash-coins/allocate-coin")).bearer_auth(&token).json(&body).send().await;
            let status = match res {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            *statuses.entry(status).or_default() += 1;
            if status == 200 {
                acked.push((rid.clone(), Instant::now()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i += 1;
    }
    (acked, statuses)
}

/// What a client of [`drive`] saw: each request id acknowledged, with when, and every status.
pub(crate) type Seen = (Vec<(String, Instant)>, HashMap<u16, usize>);

/// Eight clients allocating (each as [`drive`]) against a configuration of its own, until stopped.
pub(crate) struct Load {
    pub stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    /// Takes an admin token, creates the configuration and starts the clients.
    pub(crate) async fn start(http: &reqwest::Client, base: &str, admin: (&str, &str)) -> Self {
        let token = token_at(http, base, admin.0, admin.1).await;
        create_config_at(http, base, &token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":1})).await;
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..8).map(|w| tokio::spawn(drive(http.clone(), base.to_owned(), token.clone(), w, stop.clone()))).collect();
        Self { stop, workers }
    }

    /// Stops the clients; every acknowledged request id with when it was acknowledged, and every
    /// status seen.
    pub(crate) async fn finish(self, limit: Duration) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        let mut statuses: HashMap<u16, usize> = HashMap::new();
        for w in self.workers {
            let (a, s) = tokio::time::timeout(limit, w).await.expect("clients finish after the failover").unwrap();
            acked.extend(a);
            for (k, v) in s {
                *statuses.entry(k).or_default() += v;
            }
        }
        (acked, statuses)
    }
}

/// How many ledger entries each request id has, from rows of `request_id`.
pub(crate) fn entries_per_request(rows: Vec<tokio_postgres::Row>) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in rows {
        *counts.entry(r.get(0)).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_mid_load_loses_nothing_and_answers_503_not_500() {
    let dir = std::env::temp_dir().join(format!("coins-failover-{}", coins::crypto::random_token::<6>().to_lowercase().replace(['-', '_'], "x")));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster { dir: dir.clone() };
    if unsafe_geteuid() == 0 {
        assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap().success());
    }
    let (primary, standby) = (dir.join("primary"), dir.join("standby"));
    let (p1, p2) = (free_port(), free_port());
    pg("initdb", &["-D", &primary.to_string_lossy(), "-A", "trust", "-U", "postgres", "--no-sync"]);
    let conf = "wal_level = replica\nmax_wal_senders = 4\nsynchronous_standby_names = 'standby'\nsynchronous_commit = on\nfsync = on\n";
    let conf_path = primary.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path).unwrap();
    text.push_str(conf);
    std::fs::write(&conf_path, text).unwrap();
    let hba = primary.join("pg_hba.conf");
    let mut text = std::fs::read_to_string(&hba).unwrap();
    text.push_str("host replication all 127.0.0.1/32 trust\n");
    std::fs::write(&hba, text).unwrap();
    start_node(&primary, p1, "");
    let conninfo = format!("host=127.0.0.1 port={p1} user=postgres application_name=standby");
    pg("pg_basebackup", &["-d", &conninfo, "-D", &standby.to_string_lossy(), "-R", "-X", "stream"]);
    start_node(&standby, p2, "-c synchronous_standby_names=''");
    let started = Instant::now();
    while sql(p1, "postgres", "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'").await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "the standby never became synchronous");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sql(p1, "postgres", "CREATE DATABASE coins").await;

    let url = format!("postgres://postgres@127.0.0.1:{p1},127.0.0.1:{p2}/coins?target_session_attrs=read-write&connect_timeout=2");
    let (mut child, base) =
        start_coins_serve(&url, &[("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET), ("COINS_RATE_LIMIT_PER_SEC", "0")]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let load = Load::start(&http, &base, (ADMIN_ID, ADMIN_SECRET)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The primary dies hard; the standby is promoted.
    pg("pg_ctl", &["-D", &primary.to_string_lossy(), "-m", "immediate", "stop"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg("pg_ctl", &["-D", &standby.to_string_lossy(), "-w", "promote"]);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (acked, statuses) = load.finish(Duration::from_secs(30)).await;
    let acked: Vec<String> = acked.into_iter().map(|(rid, _)| rid).collect();
    let counts = entries_per_request(sql(p2, "coins", "SELECT request_id FROM ledger_entries WHERE type = 'ALLOCATE'").await);
    for rid in &acked {
        assert_eq!(counts.get(rid), Some(&1), "{rid} was acknowledged; it must be on the new primary exactly once");
    }
    assert_eq!(counts.len(), acked.len(), "every request in the ledger was acknowledged to its client");
    eprintln!("failover: {} credits acknowledged, answers {statuses:?}", acked.len());
    assert_eq!(statuses.get(&500), None, "a 500 during the failover: {statuses:?}");
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "no 503 seen: the failover was not exercised ({statuses:?})");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait();
    let verify = Command::new(env!("CARGO_BIN_EXE_coins"))
        .arg("verify")
        .env("COINS_DATABASE_URL", format!("postgres://postgres@127.0.0.1:{p2}/coins"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    drop(cluster);
}
