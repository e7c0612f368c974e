//! High availability as the recipe in `deploy/patroni/` sets it up: etcd and two Patroni nodes
//! (the committed `node1.yml` and `node2.yml`, with free ports and a temporary directory swapped
//! in), synchronous mode on, `coins serve` on the multi-host URL. Under load from several
//! clients the leader node dies hard — its Patroni and its postmaster SIGKILLed — and Patroni
//! promotes the synchronous standby. Every acknowledged allocation must be on the new leader
//! exactly once, nothing in the ledger unacknowledged, no 500 (503 with `Retry-After` while it
//! fails over), every unanswered request resolved by retrying it, `coins verify` passing, and
//! coins never restarted. The outage is measured and printed.
//!
//! Needs Debian's `patroni` and `etcd-server` (`.ci/run` installs them); outside CI their absence
//! skips, loudly. For the measurements in the README: `COINS_PATRONI_TTL` (and
//! `COINS_PATRONI_RETRY_TIMEOUT`) override the recipe's timeouts, `COINS_PATRONI_SYNC=false`
//! turns synchronous mode off and reports acknowledged credits lost instead of failing on them,
//! `COINS_PATRONI_IDLE_SECS` first watches the pair under load that long for a failover nobody
//! caused, and `COINS_PATRONI_STANDBY_PAUSE_MS` (default 200) is how long the leader's WAL sender
//! is stopped just before the kill, leaving the standby behind as a congested network would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::failover::{Load, bindir, entries_per_request, free_port, unsafe_geteuid};
use crate::helpers::*;

const ADMIN_ID: &str = "patroni-admin";
const ADMIN_SECRET: &str = "patroni-secret-for-tests";
/// The superuser password of the recipe (its `authentication` section).
const SUPERUSER_PASSWORD: &str = "change-me-superuser";

/// Every process the test starts, ended by its PID however the test ends; then the directory.
struct Pair {
    dir: PathBuf,
    etcd: Option<Child>,
    patroni: Vec<Option<Child>>,
    /// A WAL sender stopped with SIGSTOP: it would never end by itself.
    stopped: Option<u32>,
}

impl Pair {
    fn data(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{}", node + 1))
    }

    /// The PID of a node's postmaster, while it runs (a PID file left by a killed one names a
    /// process that is gone, or by now someone else's: its command line must name the node's
    /// data directory).
    fn postmaster(&self, node: usize) -> Option<u32> {
        let data = self.data(node);
        let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        still(text.lines().next()?.trim().parse().ok()?, &data.to_string_lossy())
    }

    fn log_tail(&self, node: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("patroni{}.log", node + 1))).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// The PID if it is still a process whose command line contains `what` (a PID read earlier may
/// have ended, or by now be someone else's).
fn still(pid: u32, what: &str) -> Option<u32> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline).contains(what).then_some(pid)
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status();
}

impl Drop for Pair {
    fn drop(&mut self) {
        for child in self.patroni.iter_mut().flatten() {
            kill(child.id(), "-KILL");
            let _ = child.wait();
        }
        if let Some(pid) = self.stopped.and_then(|pid| still(pid, "walsender")) {
            kill(pid, "-KILL");
        }
        for node in 0..self.patroni.len() {
            // Patroni's postmaster, stopped as PostgreSQL stops (its backends go with it).
            if let Some(pid) = self.postmaster(node) {
                kill(pid, "-QUIT");
            }
        }
        if let Some(etcd) = &mut self.etcd {
            kill(etcd.id(), "-KILL");
            let _ = etcd.wait();
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed(bin: &str) -> bool {
    Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The recipe's node file with this run's ports, directory and timeouts.
struct Ports {
    etcd: u16,
    rest: [u16; 2],
    pg: [u16; 2],
}

fn node_config(node: usize, dir: &Path, ports: &Ports, sync: bool) -> String {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/patroni/node{}.yml", node + 1));
    let mut text = std::fs::read_to_string(&recipe).unwrap_or_else(|e| panic!("{}: {e}", recipe.display()));
    let dir = dir.to_string_lossy();
    for (from, to) in [
        ("127.0.0.1:2379".to_owned(), format!("127.0.0.1:{}", ports.etcd)),
        // The recipe's node n listens on 8008 + n - 1 (Patroni) and 5433 + n - 1 (PostgreSQL).
        (format!("127.0.0.1:{}", 8008 + node), format!("127.0.0.1:{}", ports.rest[node])),
        (format!("127.0.0.1:{}", 5433 + node), format!("127.0.0.1:{}", ports.pg[node])),
        ("/var/lib/postgresql/patroni".to_owned(), dir.to_string()),
        ("/var/run/postgresql".to_owned(), dir.to_string()),
        ("/usr/lib/postgresql/15/bin".to_owned(), bindir().to_string_lossy().into_owned()),
    ] {
        assert!(text.contains(&from), "the recipe no longer says {from}: update this test with it");
        text = text.replace(&from, &to);
    }
    let set = |text: String, key: &str, value: String| {
        let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("the recipe sets no {key}")).to_owned();
        let indent = &line[..line.len() - line.trim_start().len()];
        text.replace(&line, &format!("{indent}{key}: {value}"))
    };
    if let Ok(ttl) = std::env::var("COINS_PATRONI_TTL") {
        text = set(text, "ttl", ttl);
    }
    if let Ok(retry) = std::env::var("COINS_PATRONI_RETRY_TIMEOUT") {
        text = set(text, "retry_timeout", retry);
    }
    if !sync {
        text = set(text, "synchronous_mode", "false".into());
    }
    text
}

/// Runs a program as `postgres` when we are root (PostgreSQL refuses root); `setpriv` execs it,
/// so the child's PID is the program's own.
fn as_postgres(program: &str) -> Command {
    if unsafe_geteuid() == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Patroni's REST API: the status of `path` on a node (0 when it does not answer).
async fn rest(http: &reqwest::Client, port: u16, path: &str) -> (u16, Value) {
    match http.get(format!("http://127.0.0.1:{port}{path}")).send().await {
        Ok(res) => (res.status().as_u16(), res.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

/// Waits until `ok` holds, or fails naming `what` after `limit`.
async fn until<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, pair: &Pair, mut ok: F) -> Duration {
    let started = Instant::now();
    while !ok().await {
        assert!(started.elapsed() < limit, "{what} within {limit:?}\nnode1:\n{}\nnode2:\n{}", pair.log_tail(0), pair.log_tail(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn sql(port: u16, db: &str, query: &str) -> Vec<tokio_postgres::Row> {
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname={db} connect_timeout=3");
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.query(query, &[]).await.unwrap()
}

/// The `COINS_*` settings `deploy/patroni/coins.env` gives a shell that sources it.
fn recipe_settings() -> HashMap<String, String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/patroni/coins.env");
    let out = Command::new("bash").args(["-c", "set -a; . \"$1\"; set +a; env -0", "bash"]).arg(&file).env_clear().output().expect("bash reads coins.env");
    assert!(out.status.success() && out.stderr.is_empty(), "coins.env does not source cleanly: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
        .split(|b| *b == 0)
        .filter_map(|pair| std::str::from_utf8(pair).ok()?.split_once('='))
        .filter(|(k, _)| k.starts_with("COINS_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patroni_recipe_fails_over_losing_and_doubling_nothing() {
    if !installed("patroni") || !installed("etcd") {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "patroni and etcd are not installed; CI must run the Patroni failover");
        eprintln!("\n!!! SKIPPED: Patroni failover needs Debian's patroni and etcd-server (apt-get install patroni etcd-server) !!!\n");
        return;
    }
    let sync = std::env::var("COINS_PATRONI_SYNC").map_or(true, |v| v != "false");
    let dir = std::env::temp_dir().join(format!("coins-patroni-{}", coins::crypto::random_token::<6>().to_lowercase().replace(['-', '_'], "x")));
    std::fs::create_dir_all(&dir).unwrap();
    let mut pair = Pair { dir: dir.clone(), etcd: None, patroni: vec![None, None], stopped: None };
    let ports = Ports { etcd: free_port(), rest: [free_port(), free_port()], pg: [free_port(), free_port()] };
    let peer = free_port();

    for node in 0..2 {
        std::fs::write(dir.join(format!("node{}.yml", node + 1)), node_config(node, &dir, &ports, sync)).unwrap();
    }
    // The nodes' files and data belong to postgres (before etcd writes its own files here).
    if unsafe_geteuid() == 0 {
        assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap().success());
    }
    let etcd_log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let client_url = format!("http://127.0.0.1:{}", ports.etcd);
    let peer_url = format!("http://127.0.0.1:{peer}");
    pair.etcd = Some(
        Command::new("etcd")
            .args(["--name", "etcd1", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("etcd1={peer_url}")])
            .stdout(Stdio::null())
            .stderr(etcd_log)
            .spawn()
            .expect("start etcd"),
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let start_node = |node: usize, pair: &mut Pair| {
        let log = std::fs::File::create(pair.dir.join(format!("patroni{}.log", node + 1))).unwrap();
        let child = as_postgres("patroni")
            .arg(pair.dir.join(format!("node{}.yml", node + 1)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start patroni");
        pair.patroni[node] = Some(child);
    };
    // Node 1 bootstraps the cluster and leads; node 2 clones it and becomes its standby.
    start_node(0, &mut pair);
    until(Duration::from_secs(60), "node 1 bootstraps and leads", &pair, async || rest(&http, ports.rest[0], "/leader").await.0 == 200).await;
    start_node(1, &mut pair);
    // Patroni answers 200 on /sync from the synchronous standby only (/async: an asynchronous one).
    let standby = if sync { "/sync" } else { "/async" };
    until(Duration::from_secs(60), "node 2 runs as the standby", &pair, async || rest(&http, ports.rest[1], standby).await.0 == 200).await;
    // The passwords count (initdb's own lines would trust every local connection).
    let wrong = format!("host=127.0.0.1 port={} user=postgres password=wrong dbname=postgres connect_timeout=3", ports.pg[0]);
    assert!(tokio_postgres::connect(&wrong, tokio_postgres::NoTls).await.is_err(), "node 1 let in a wrong password");
    // As the README sets it up: a role of its own, owning the database.
    sql(ports.pg[0], "postgres", "CREATE ROLE coins LOGIN PASSWORD 'change-me-coins'").await;
    sql(ports.pg[0], "postgres", "CREATE DATABASE coins OWNER coins").await;

    // coins with the recipe's settings, read as a shell reads them (`set -a; . coins.env`).
    let mut settings = recipe_settings();
    let url = settings.remove("COINS_DATABASE_URL").expect("coins.env sets COINS_DATABASE_URL");
    for from in ["127.0.0.1:5433", "127.0.0.1:5434"] {
        assert!(url.contains(from), "coins.env's URL names {from}: {url}");
    }
    let url = url.replace("127.0.0.1:5433", &format!("127.0.0.1:{}", ports.pg[0])).replace("127.0.0.1:5434", &format!("127.0.0.1:{}", ports.pg[1]));
    let mut env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET), ("COINS_RATE_LIMIT_PER_SEC", "0")]);
    let (coins, base) = start_coins_serve(&url, &env);
    let mut coins = KillOnDrop(coins);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let load = Load::start(&client, &base, (ADMIN_ID, ADMIN_SECRET)).await;
    // Under load, nobody kills anything: the leader must stay the leader.
    let idle = Duration::from_secs(env_or("COINS_PATRONI_IDLE_SECS", 2));
    let watched = Instant::now();
    while watched.elapsed() < idle {
        assert_eq!(rest(&http, ports.rest[0], "/leader").await.0, 200, "a failover nobody caused, {:?} into the load", watched.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The standby falls behind for a moment, as over a congested network: the leader's WAL
    // sender stops, so what the leader commits meanwhile stays on the leader. Synchronous mode
    // makes those commits wait for the standby; asynchronous mode acknowledges them anyway, and
    // they are what a failover then loses.
    let sender: u32 = {
        let rows = sql(ports.pg[0], "postgres", "SELECT pid FROM pg_stat_replication").await;
        let pid = u32::try_from(rows.first().expect("node 1 sends WAL").get::<_, i32>(0)).unwrap();
        still(pid, "walsender").expect("node 1's WAL sender")
    };
    let pause = Duration::from_millis(env_or("COINS_PATRONI_STANDBY_PAUSE_MS", 200));
    pair.stopped = Some(sender);
    kill(sender, "-STOP");
    tokio::time::sleep(pause).await;
    // The leader node dies hard: its Patroni first (so it cannot demote anything), then its
    // postmaster and the stopped sender (which would never notice).
    let postmaster = pair.postmaster(0).expect("node 1's postmaster");
    // What a load balancer sees on /readyz meanwhile.
    let ready = {
        let (client, url, stop) = (client.clone(), format!("{base}/readyz"), load.stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let status = client.get(&url).timeout(Duration::from_secs(3)).send().await.map_or(0, |r| r.status().as_u16());
                if seen.last() != Some(&status) {
                    seen.push(status);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    let killed = Instant::now();
    kill(pair.patroni[0].as_ref().unwrap().id(), "-KILL");
    kill(postmaster, "-KILL");
    kill(sender, "-KILL");
    let _ = pair.patroni[0].take().unwrap().wait();
    let promoted = until(Duration::from_secs(60), "node 2 takes over", &pair, async || rest(&http, ports.rest[1], "/leader").await.0 == 200).await;
    // The lock first, then the promotion: wait until node 2 runs as the primary and coins can
    // write to it, then let the clients be acknowledged a while.
    until(Duration::from_secs(60), "node 2 runs as the primary", &pair, async || rest(&http, ports.rest[1], "/primary").await.0 == 200).await;
    until(Duration::from_secs(60), "coins is ready on node 2", &pair, async || {
        client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, statuses) = load.finish(Duration::from_secs(60)).await;
    assert!(coins.0.try_wait().unwrap().is_none(), "coins serve stopped during the failover");
    let ready = ready.await.unwrap();
    assert!(ready.contains(&503) && ready.last() == Some(&200), "/readyz answers 503 while no node is writable, then 200: {ready:?}");
    // The outage as clients saw it: the longest time without an acknowledged allocation, around
    // the kill (before it, eight clients are acknowledged every few milliseconds).
    let mut times: Vec<Instant> = acked.iter().map(|(_, at)| *at).collect();
    times.sort();
    assert!(times.last().is_some_and(|t| *t > killed + promoted), "no allocation acknowledged after node 2 took over");
    let outage = times.windows(2).filter(|w| w[1] > killed).map(|w| w[1] - w[0]).max().unwrap_or_default();

    let counts = entries_per_request(sql(ports.pg[1], "coins", "SELECT request_id FROM ledger_entries WHERE type = 'ALLOCATE'").await);
    let lost: Vec<&String> = acked.iter().map(|(rid, _)| rid).filter(|rid| !counts.contains_key(*rid)).collect();
    eprintln!(
        "patroni failover ({}): {} allocations acknowledged; outage {:.1} s without an acknowledged allocation \
         (node 2 the leader {:.1} s after the kill); {} acknowledged allocations lost; answers {statuses:?}",
        if sync { "synchronous" } else { "asynchronous" },
        acked.len(),
        outage.as_secs_f64(),
        promoted.as_secs_f64(),
        lost.len()
    );
    if sync {
        assert!(lost.is_empty(), "acknowledged but not on the new leader: {lost:?}");
    }
    for (rid, n) in &counts {
        assert_eq!(*n, 1, "{rid} is in the ledger {n} times");
    }
    let acked_ids: std::collections::HashSet<&String> = acked.iter().map(|(rid, _)| rid).collect();
    for rid in counts.keys() {
        assert!(acked_ids.contains(rid), "{rid} is in the ledger but its client never had it acknowledged");
    }
    assert_eq!(statuses.get(&500), None, "a 500 during the failover: {statuses:?}");
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "no 503 seen: the failover was not exercised ({statuses:?})");
    kill(coins.0.id(), "-TERM");
    assert!(coins.0.wait().unwrap().success());
    let verify = Command::new(env!("CARGO_BIN_EXE_coins"))
        .arg("verify")
        .env("COINS_DATABASE_URL", format!("postgres://coins:change-me-coins@127.0.0.1:{}/coins", ports.pg[1]))
        .env("COINS_LOG", "warn")
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    drop(pair);
}
