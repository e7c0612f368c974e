//! Load benchmark for `coins serve` (issue: fast allocation). Run it through `scripts/bench`,
//! which builds the release binaries first:
//!
//!     scripts/bench sqlite            # or: scripts/bench postgres
//!
//! On a fresh database it starts the release server, preloads ledger entries through the bulk
//! endpoint (measuring bulk throughput), then drives each phase for `--secs` seconds with its own
//! keep-alive HTTP/1.1 load generator (a unique body per request): `GET /healthz` as the HTTP
//! ceiling, `allocate-coin` with unique requestIds over 10,000 users (`--users N`), and balance reads, at 64 and
//! 256 connections. It reports requests/s, p50/p99/p99.9 latency, errors, the server's peak RSS and
//! the ratios to healthz; for PostgreSQL it also measures allocation with group commit off. Last,
//! it checks that every allocation answered 200 is in the ledger exactly once and that
//! `coins verify` passes. Traffic goes to 127.0.0.1 only; every phase ends by itself.
//!
//! `--only slow` measures balance reads at 64 connections alone and then beside 500 slow clients
//! (each sends a request head one byte a second, and reconnects when cut off), so the cost of
//! slow clients shows as a ratio of the same run. On SQLite the peak size of the WAL file is
//! reported; `--wal-max-mb N` sets the server's bound (`COINS_SQLITE_WAL_MAX_MB`).
//!
//! `--only webhooks` measures allocation at each connection count without a webhook, then with one
//! subscription for every event to a fast receiver in this process (answers 200 at once), then
//! without again (the webhook disabled; deleted after the last phase), and reports the throughput ratio to the
//! mean of the runs without, the delivery lag (entry `createdAt` to arrival, p50/p99), and how
//! long the outbox took to drain after the load stopped. With `--webhook-delivery off` the server
//! delivers nothing (`COINS_WEBHOOK_CONCURRENCY=0`), so the ratio is the outbox's own cost.
//!
//! `--only export` streams the whole preloaded ledger through `GET /api/v0/coins/exports/ledger`
//! (JSON lines), then the balances now and as of a past instant (read back from the ledger), and
//! reports rows/s and the server's RSS before and during each (sampled every 50 ms): an export
//! holds a page at a time, so RSS must not grow with the ledger.
//!
//! `--only campaign` measures allocation at each connection count without a campaign, under a
//! ×2 campaign for the event, under one with a per-user limit (counted in the transaction after
//! the user's row is locked), and without again; each campaign is ended before the next phase, and
//! the ratios are against the mean of the two runs without. Ending a campaign takes effect after
//! a 5 s notice, which the benchmark waits out.
//!
//! `--only tiers` measures allocation at each connection count without tiers, with a 5-tier
//! scheme counting on the LIFETIME basis and a ×2 campaign for the event, the same on the ROLLING
//! basis, and without again (each scheme deleted and its campaign ended in between), with the
//! ratios against the mean of the two runs without, and times setting each scheme up (which
//! counts the company's whole history in one transaction).
//!
//! `--ab <binary>` compares two builds: the server `COINS_BIN` (A) and `<binary>` (B), both running
//! at once, each on its own fresh database. The preload alternates between them 100,000
//! allocations at a time, and each `--only` phase (healthz, allocate, balance, percent, held,
//! percent-held; no other) gives them turns of `--slice-secs` (2 by default), which goes first
//! alternating from round to round, until each has had at least `--secs`, with half a second
//! unmeasured after every turn; it prints each build's throughput, the median and worst p99 of its
//! turns and its CPU per request (its whole CPU over the phase, pauses included, so what a turn
//! leaves behind is charged to its own build), and B as a share of A. On this shared machine
//! single runs of one build swing by tens of percent between minutes; whatever the machine does
//! during an A/B run falls on both.
//! `--b-tiers LIFETIME|ROLLING` gives B the tiers phase's 5-tier scheme and ×2 campaign after the
//! preload: with `--ab` naming the same binary as `COINS_BIN`, that is tiered allocation against
//! plain allocation, interleaved (`--a-tiers` gives them to A: both, to compare two builds on
//! tiered allocation).
//!
//! `--only allocate,percent,held` adds, after the EnKash allocation phase, the same load on a
//! PERCENT configuration (2 % of a purchase value, each under its own order id) and on a FIXED one
//! that holds its coins for 14 days (`pendingDays`), so their cost shows against plain allocation
//! in one run. `percent-held` does the same on a PERCENT configuration that holds its coins.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Users the load spreads over (`--users N`, 10,000 by default).
static USERS: AtomicU64 = AtomicU64::new(10_000);

/// The running server's PID, for the CPU time each phase costs it.
static SERVER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether the server delivers webhooks (`--webhook-delivery off` pauses it: the outbox alone).
static DELIVERY: AtomicBool = AtomicBool::new(true);

fn users() -> u64 {
    USERS.load(Ordering::Relaxed)
}
const EVENT: &str = "BENCH_EVENT";
const PERCENT_EVENT: &str = "BENCH_PERCENT";
const HELD_EVENT: &str = "BENCH_HELD";
const PERCENT_HELD_EVENT: &str = "BENCH_PERCENT_HELD";
const COMPANY: &str = "BENCHCO";
const BULK_ITEMS: usize = 1_000;

struct Args {
    backend: String,
    secs: u64,
    preload: u64,
    conns: Vec<usize>,
    pg_url: String,
    /// Only these phases (healthz, allocate, balance, slow, webhooks); all but slow and webhooks by default.
    only: Vec<String>,
    /// SQLite: the server's WAL bound in MiB (its default when not given).
    wal_max_mb: Option<u64>,
    /// `--ab <binary>`: compare that build (B) with `COINS_BIN` (A), interleaved.
    ab: Option<String>,
    /// `--ab`: the length of each build's turn, in seconds.
    slice_secs: u64,
    /// `--ab`: B runs with the 5-tier scheme on this basis and a ×2 campaign (set up after the
    /// preload), so one build can be compared with itself with and without them.
    b_tiers: Option<String>,
    /// `--ab`: the same for A (both with them: two builds compared on tiered allocation).
    a_tiers: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        backend: "sqlite".into(),
        secs: 20,
        preload: 1_000_000,
        conns: vec![64, 256],
        pg_url: std::env::var("COINS_BENCH_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        only: vec!["healthz".into(), "allocate".into(), "balance".into()],
        wal_max_mb: None,
        ab: None,
        slice_secs: 2,
        b_tiers: None,
        a_tiers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--backend" => args.backend = value(),
            "--secs" => args.secs = value().parse().expect("--secs N"),
            "--preload" => args.preload = value().parse().expect("--preload N"),
            "--conns" => args.conns = value().split(',').map(|c| c.parse().expect("--conns 64,256")).collect(),
            "--pg-url" => args.pg_url = value(),
            "--only" => args.only = value().split(',').map(str::to_owned).collect(),
            "--wal-max-mb" => args.wal_max_mb = Some(value().parse().expect("--wal-max-mb N")),
            "--ab" => args.ab = Some(value()),
            "--slice-secs" => args.slice_secs = value().parse().expect("--slice-secs N"),
            "--b-tiers" => args.b_tiers = Some(basis(value())),
            "--a-tiers" => args.a_tiers = Some(basis(value())),
            "--users" => USERS.store(value().parse().expect("--users N"), Ordering::Relaxed),
            "--webhook-delivery" => DELIVERY.store(value() != "off", Ordering::Relaxed),
            other => panic!("unknown argument {other}; see the module doc"),
        }
    }
    assert!(args.secs > 0 && args.slice_secs > 0, "--secs and --slice-secs must be at least 1");
    if args.ab.is_some() {
        let unknown: Vec<&String> = args.only.iter().filter(|o| !AB_PHASES.iter().any(|(p, _)| p == o)).collect();
        assert!(unknown.is_empty(), "--ab runs only {:?}, not {unknown:?}", AB_PHASES.map(|(p, _)| p));
    }
    args
}

fn basis(value: String) -> String {
    assert!(value == "LIFETIME" || value == "ROLLING", "a tier basis is LIFETIME or ROLLING, not {value}");
    value
}

/// A running `coins serve` started by us; stopped by PID with SIGTERM.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(db_url: &str, group_commit: &str, wal_max_mb: Option<u64>) -> Server {
        Self::start_at(db_url, group_commit, wal_max_mb, 0)
    }

    /// With the server's clock `offset_secs` from the system's (the dashboard phase seeds past days).
    fn start_at(db_url: &str, group_commit: &str, wal_max_mb: Option<u64>, offset_secs: i64) -> Server {
        Self::start_bin(&coins_bin(), db_url, group_commit, wal_max_mb, offset_secs)
    }

    fn start_bin(bin: &str, db_url: &str, group_commit: &str, wal_max_mb: Option<u64>, offset_secs: i64) -> Server {
        let mut command = Command::new(bin);
        command.env("COINS_CLOCK_OFFSET_SECS", offset_secs.to_string());
        if let Some(mb) = wal_max_mb {
            command.env("COINS_SQLITE_WAL_MAX_MB", mb.to_string());
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("COINS_DATABASE_URL", db_url)
            .env("COINS_ADMIN_CLIENT_ID", "bench-admin")
            .env("COINS_ADMIN_CLIENT_SECRET", "bench-secret-not-for-production")
            .env("COINS_GROUP_COMMIT", group_commit)
            .env("COINS_LOG", "warn")
            // One client drives the whole load: the per-client rate limit would measure itself.
            .env("COINS_RATE_LIMIT_PER_SEC", "0")
            // The webhook phase's receiver is plain HTTP on 127.0.0.1.
            .env("COINS_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .env("COINS_WEBHOOK_ALLOW_HTTP", "true")
            .env("COINS_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("COINS_WEBHOOK_CONCURRENCY", if DELIVERY.load(Ordering::Relaxed) { "64" } else { "0" })
            .stdout(Stdio::piped())
            .spawn()
            .expect("start coins serve (run scripts/bench, which builds it)");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let addr = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).expect("read") > 0, "coins serve exited before listening");
            if let Some(a) = line.trim().strip_prefix("coins listening on http://") {
                break a.to_owned();
            }
        };
        SERVER_PID.store(child.id(), Ordering::Relaxed);
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Server { child, addr }
    }

    fn peak_rss_mb(&self) -> f64 {
        rss_of(self.child.id(), "VmHWM:")
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection that sends a request and reads one response at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The head of the last response (status line and headers).
    head: String,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn { stream, buf: Vec::with_capacity(8192), head: String::new() }
    }

    /// Returns (status, body).
    async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        let header_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        self.head = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        let head = self.head.as_str();
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        while self.buf.len() < header_end + length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, self.buf[header_end..header_end + length].to_vec()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn request(method: &str, path: &str, token: &str, body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n");
    if let Some(b) = body {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Healthz,
    Allocate,
    Balance,
    /// Allocation on a PERCENT configuration, with an order id and a purchase value.
    Percent,
    /// Allocation on a configuration that holds its coins (`pendingDays`).
    Held,
    /// Both at once: a PERCENT configuration that holds its coins, with an order id and a
    /// purchase value.
    PercentHeld,
}

struct PhaseResult {
    name: String,
    conns: usize,
    requests: u64,
    errors: u64,
    secs: f64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    non_200: Vec<(u16, u64)>,
    /// CPU time the server and its SQLite writer thread (if any) spent during the phase.
    cpu: CpuTimes,
}

/// A server's CPU time so far, in seconds: the whole process, and the SQLite writer thread.
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    process: f64,
    writer: Option<f64>,
}

impl CpuTimes {
    /// Read from `/proc` (zero where it cannot be read).
    fn now() -> Self {
        Self::of(SERVER_PID.load(Ordering::Relaxed))
    }

    fn of(pid: u32) -> Self {
        // utime and stime, fields 14 and 15, in clock ticks (100 per second on Linux).
        let process = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                Some((after.get(11)?.parse::<f64>().ok()? + after.get(12)?.parse::<f64>().ok()?) / 100.0)
            })
            .unwrap_or(0.0);
        // The writer's on-CPU nanoseconds (first field of its schedstat).
        let writer = std::fs::read_dir(format!("/proc/{pid}/task")).ok().and_then(|tasks| {
            tasks.flatten().find_map(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                if comm.trim() != "sqlite-writer" {
                    return None;
                }
                let ns: f64 = std::fs::read_to_string(t.path().join("schedstat")).ok()?.split_whitespace().next()?.parse().ok()?;
                Some(ns / 1e9)
            })
        });
        Self { process, writer }
    }

    fn since(self, before: Self) -> Self {
        Self { process: self.process - before.process, writer: self.writer.zip(before.writer).map(|(a, b)| a - b) }
    }
}

impl PhaseResult {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn print(&self) {
        let per = |secs: f64| 1e6 * secs / self.requests.max(1) as f64;
        println!(
            "  {:<26} {:>4} conns  {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  errors {}{}  server CPU {:.0} µs/req{}",
            self.name,
            self.conns,
            self.rps(),
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.p999_us as f64 / 1000.0,
            self.errors,
            if self.non_200.is_empty() { String::new() } else { format!(" (statuses {:?})", self.non_200) },
            per(self.cpu.process),
            self.cpu.writer.map(|w| format!(" (writer {:.0})", per(w))).unwrap_or_default()
        );
    }
}

/// Drives one phase; allocation phases record which request sequence numbers got a 200.
async fn phase(addr: &str, token: &str, kind: Kind, conns: usize, secs: u64, tag: &str, ok_ids: Arc<std::sync::Mutex<Vec<String>>>) -> PhaseResult {
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let cpu = CpuTimes::now();
    let started = Instant::now();
    for c in 0..conns {
        let (addr, token, stop, seq, tag, ok_ids) = (addr.to_owned(), token.to_owned(), stop.clone(), seq.clone(), tag.to_owned(), ok_ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut lat: Vec<u32> = Vec::with_capacity(64 * 1024);
            let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
            let mut errors = 0u64;
            let mut mine = Vec::new();
            let health = request("GET", "/healthz", &token, None);
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let (req, rid) = match kind {
                    Kind::Healthz => (health.clone(), None),
                    Kind::Allocate => {
                        let rid = format!("{tag}-{n}");
                        let body = format!(r#"{{"companyId":"{COMPANY}","event":"{EVENT}","requestId":"{rid}","userId":"U{}"}}"#, n % users());
                        (request("POST", "/api/v0/enkash-coins/allocate-coin", &token, Some(&body)), Some(rid))
                    }
                    Kind::Balance => (request("GET", &format!("/api/v0/coins/balance?userId=U{}", n.wrapping_mul(7919) % users()), &token, None), None),
                    Kind::Percent | Kind::PercentHeld => {
                        let rid = format!("{tag}-{n}");
                        let event = if kind == Kind::Percent { PERCENT_EVENT } else { PERCENT_HELD_EVENT };
                        let body = format!(
                            r#"{{"companyId":"{COMPANY}","event":"{event}","requestId":"{rid}","userId":"U{}","orderId":"O-{rid}","amountMinor":{}}}"#,
                            n % users(),
                            10_000 + n % 90_000
                        );
                        (request("POST", "/api/v0/enkash-coins/allocate-coin", &token, Some(&body)), Some(rid))
                    }
                    Kind::Held => {
                        let rid = format!("{tag}-{n}");
                        let body = format!(r#"{{"companyId":"{COMPANY}","event":"{HELD_EVENT}","requestId":"{rid}","userId":"U{}"}}"#, n % users());
                        (request("POST", "/api/v0/enkash-coins/allocate-coin", &token, Some(&body)), Some(rid))
                    }
                };
                let t = Instant::now();
                match conn.send(&req).await {
                    Ok((status, _)) => {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if status == 200 {
                            if let Some(rid) = rid {
                                mine.push(rid);
                            }
                        } else {
                            *statuses.entry(status).or_default() += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        conn = Conn::open(&addr).await;
                    }
                }
            }
            let _ = c;
            ok_ids.lock().unwrap().extend(mine);
            (lat, statuses, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let cpu = CpuTimes::now().since(cpu);
    let mut all = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut errors = 0;
    for t in tasks {
        let (lat, st, e) = t.await.expect("load task");
        all.extend(lat);
        for (k, v) in st {
            *statuses.entry(k).or_default() += v;
        }
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    let non_200: Vec<(u16, u64)> = statuses.into_iter().collect();
    PhaseResult {
        name: match kind {
            Kind::Healthz => "GET /healthz".into(),
            Kind::Allocate => format!("allocate-coin ({tag})"),
            Kind::Balance => "GET balance".into(),
            Kind::Percent => format!("allocate PERCENT ({tag})"),
            Kind::Held => format!("allocate held ({tag})"),
            Kind::PercentHeld => format!("allocate PERCENT held ({tag})"),
        },
        conns,
        requests: all.len() as u64,
        errors: errors + non_200.iter().map(|(_, n)| n).sum::<u64>(),
        secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        non_200,
        cpu,
    }
}

async fn http_json(addr: &str, req: Vec<u8>) -> (u16, serde_json::Value) {
    let mut conn = Conn::open(addr).await;
    let (status, body) = conn.send(&req).await.expect("request");
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

async fn get_token(addr: &str) -> String {
    let body = "grant_type=client_credentials&client_id=bench-admin&client_secret=bench-secret-not-for-production";
    let req = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, json) = http_json(addr, req.into_bytes()).await;
    assert_eq!(status, 200, "token: {json}");
    json["access_token"].as_str().expect("token").to_owned()
}

/// The configuration every phase allocates on (a fixed amount, at once), and those of the
/// phases in `only` that need their own. Only when asked for: a server from before these
/// configurations would refuse them.
async fn create_configs(addr: &str, token: &str, only: &[String]) {
    let extra = [
        ("percent", format!(r#"{{"configuration":"DEFAULT","companyId":"{COMPANY}","event":"{PERCENT_EVENT}","amountType":"PERCENT","rateBps":200}}"#)),
        ("held", format!(r#"{{"configuration":"DEFAULT","companyId":"{COMPANY}","event":"{HELD_EVENT}","amount":1,"pendingDays":14}}"#)),
        (
            "percent-held",
            format!(
                r#"{{"configuration":"DEFAULT","companyId":"{COMPANY}","event":"{PERCENT_HELD_EVENT}","amountType":"PERCENT","rateBps":200,"pendingDays":14}}"#
            ),
        ),
    ];
    let plain = format!(r#"{{"configuration":"DEFAULT","companyId":"{COMPANY}","event":"{EVENT}","amount":1}}"#);
    let wanted = extra.iter().filter(|(p, _)| only.iter().any(|o| o == p)).map(|(_, cfg)| cfg);
    for cfg in std::iter::once(&plain).chain(wanted) {
        let (status, json) = http_json(addr, request("POST", "/api/v0/enkash-coins/create-coins-config", token, Some(cfg))).await;
        assert_eq!(status, 200, "create config: {json}");
    }
}

/// Preloads `total` allocations through the bulk endpoint; returns (allocations/s, conns).
async fn preload(addr: &str, token: &str, total: u64, ok_ids: Arc<std::sync::Mutex<Vec<String>>>) -> (f64, usize) {
    preload_from(addr, token, 0, total, ok_ids).await
}

/// [`preload`], the bulk request numbers starting at `first / 1,000` (a multiple of 1,000).
async fn preload_from(addr: &str, token: &str, first: u64, total: u64, ok_ids: Arc<std::sync::Mutex<Vec<String>>>) -> (f64, usize) {
    const CONNS: usize = 4;
    assert_eq!(first % BULK_ITEMS as u64, 0, "a preload starts at a whole bulk request");
    let requests = first / BULK_ITEMS as u64 + total.div_ceil(BULK_ITEMS as u64);
    let next = Arc::new(AtomicU64::new(first / BULK_ITEMS as u64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (addr, token, next, ok_ids) = (addr.to_owned(), token.to_owned(), next.clone(), ok_ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut allocated = 0u64;
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= requests {
                    break;
                }
                let items: Vec<String> = (0..BULK_ITEMS as u64)
                    .map(|i| {
                        let n = r * BULK_ITEMS as u64 + i;
                        format!(r#"{{"companyId":"{COMPANY}","event":"{EVENT}","requestId":"bulk-{n}","userId":"U{}"}}"#, n % users())
                    })
                    .collect();
                let body = format!(r#"{{"allocations":[{}]}}"#, items.join(","));
                let (status, resp) = conn.send(&request("POST", "/api/v0/enkash-coins/allocate-coins", &token, Some(&body))).await.expect("bulk");
                assert_eq!(status, 200, "bulk request failed: {}", String::from_utf8_lossy(&resp));
                let json: serde_json::Value = serde_json::from_slice(&resp).expect("bulk json");
                let mut ids = ok_ids.lock().unwrap();
                for item in json["payload"]["results"].as_array().expect("results") {
                    if item["status"] == "ALLOCATED" {
                        allocated += 1;
                        ids.push(item["requestId"].as_str().unwrap().to_owned());
                    }
                }
            }
            allocated
        }));
    }
    let mut allocated = 0;
    for t in tasks {
        allocated += t.await.expect("bulk task");
    }
    (allocated as f64 / started.elapsed().as_secs_f64(), CONNS)
}

/// Every allocation answered 200 is in the ledger exactly once, and nothing else is.
async fn check_ledger(backend: &str, db_url: &str, ok_ids: &[String]) -> Result<usize, String> {
    let entries: Vec<String> = if backend == "sqlite" {
        let conn = rusqlite::Connection::open(db_url).map_err(|e| e.to_string())?;
        let mut stmt = conn.prepare("SELECT request_id FROM ledger_entries WHERE type = 'ALLOCATE'").map_err(|e| e.to_string())?;
        stmt.query_map([], |r| r.get(0)).map_err(|e| e.to_string())?.collect::<Result<_, _>>().map_err(|e| e.to_string())?
    } else {
        let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        client.query("SELECT request_id FROM ledger_entries WHERE type = 'ALLOCATE'", &[]).await.map_err(|e| e.to_string())?.iter().map(|r| r.get(0)).collect()
    };
    let mut seen = HashSet::with_capacity(entries.len());
    for e in &entries {
        if !seen.insert(e.as_str()) {
            return Err(format!("request {e} has two ALLOCATE entries"));
        }
    }
    let answered: HashSet<&str> = ok_ids.iter().map(String::as_str).collect();
    if answered.len() != ok_ids.len() {
        return Err("the server answered 200 twice for one new request".into());
    }
    if let Some(missing) = answered.iter().find(|id| !seen.contains(**id)) {
        return Err(format!("request {missing} was answered 200 but is not in the ledger"));
    }
    // Entries without a 200 can only be requests whose answer was lost (connection errors).
    Ok(entries.len() - answered.len())
}

fn coins_bin() -> String {
    std::env::var("COINS_BIN").unwrap_or_else(|_| "target/release/coins".into())
}

fn verify(db_url: &str) -> bool {
    verify_with(&coins_bin(), db_url)
}

fn verify_with(bin: &str, db_url: &str) -> bool {
    let out = Command::new(bin).arg("verify").env("COINS_DATABASE_URL", db_url).env("COINS_LOG", "warn").output().expect("coins verify");
    print!("  coins verify: {}", String::from_utf8_lossy(&out.stdout));
    out.status.success()
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let ok = rt.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

/// Slow clients: each holds a connection by sending a request head one byte a second, and opens a
/// new one when the server cuts it off. Returns how many times they were cut off.
fn slow_clients(addr: &str, n: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let addr = addr.to_owned();
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (addr, stop) = (addr.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut cut = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.is_err() {
                        continue;
                    }
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if stop.load(Ordering::Relaxed) {
                            return cut;
                        }
                        if s.write_all(b"a").await.is_err() {
                            cut += 1;
                            break;
                        }
                    }
                }
                cut
            }));
        }
        let mut cut = 0;
        for t in tasks {
            cut += t.await.unwrap_or(0);
        }
        cut
    })
}

/// Balance reads at 64 connections, alone and then beside 500 slow clients.
async fn slow_phase(addr: &str, token: &str, secs: u64) {
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let alone = phase(addr, token, Kind::Balance, 64, secs, "slow-alone", ids.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let slow = slow_clients(addr, 500, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let beside = phase(addr, token, Kind::Balance, 64, secs, "slow-beside", ids).await;
    stop.store(true, Ordering::Relaxed);
    let cut = slow.await.unwrap_or(0);
    println!(
        "  balance, 64 conns, alone:                 {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms",
        alone.rps(),
        alone.p50_us as f64 / 1000.0,
        alone.p99_us as f64 / 1000.0,
        alone.p999_us as f64 / 1000.0
    );
    println!(
        "  balance, 64 conns, beside 500 slow ones: {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  (slow clients cut off {cut} times)",
        beside.rps(),
        beside.p50_us as f64 / 1000.0,
        beside.p99_us as f64 / 1000.0,
        beside.p999_us as f64 / 1000.0
    );
}

/// What the webhook receiver saw: per event, milliseconds from the entry's `createdAt` to arrival.
#[derive(Default)]
struct Receipts {
    lags_ms: std::sync::Mutex<Vec<f64>>,
    ids: std::sync::Mutex<HashSet<String>>,
    requests: AtomicU64,
}

/// A receiver that answers every request 200 at once (keep-alive HTTP/1.1); its URL.
async fn receiver(receipts: Arc<Receipts>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let mut s = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    eprintln!("receiver: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let receipts = receipts.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 8192];
                loop {
                    let head_end = loop {
                        if let Some(p) = find(&buf, b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                    while buf.len() < head_end + length {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let arrived = time::OffsetDateTime::now_utc();
                    let id = head.lines().find_map(|l| l.strip_prefix("webhook-id:")).unwrap_or("").trim().to_owned();
                    if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&buf[head_end..head_end + length]) {
                        let created = event["data"]["createdAt"]
                            .as_str()
                            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
                        if let (Some(created), true) = (created, receipts.ids.lock().unwrap().insert(id)) {
                            receipts.lags_ms.lock().unwrap().push((arrived - created).as_seconds_f64() * 1000.0);
                        }
                    }
                    receipts.requests.fetch_add(1, Ordering::Relaxed);
                    buf.drain(..head_end + length);
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Allocation without a subscription, with one to every event, and without again (the ratio is
/// against the mean of the two runs without), and the delivery lag. The webhook is left disabled;
/// its path is returned for deleting after the last phase (deleting takes its messages with it,
/// a transaction as big as the run, which the next phase would pay for).
async fn webhook_phase(addr: &str, token: &str, conns: usize, secs: u64, ok_ids: Arc<std::sync::Mutex<Vec<String>>>) -> String {
    let before = phase(addr, token, Kind::Allocate, conns, secs, &format!("wh-off-{conns}"), ok_ids.clone()).await;
    before.print();
    let receipts = Arc::new(Receipts::default());
    let url = receiver(receipts.clone()).await;
    let hook = format!(r#"{{"companyId":"{COMPANY}","url":"{url}","events":["coins.allocated","coins.redeemed","coins.reversed","coins.expired"]}}"#);
    let (status, json) = http_json(addr, request("POST", "/api/v0/coins/webhooks", token, Some(&hook))).await;
    assert_eq!(status, 200, "create webhook: {json}");
    let webhook_id = json["payload"]["webhookId"].as_str().expect("webhookId").to_owned();
    let with = phase(addr, token, Kind::Allocate, conns, secs, &format!("wh-on-{conns}"), ok_ids.clone()).await;
    with.print();
    let expected = with.requests - with.errors;
    let delivering = DELIVERY.load(Ordering::Relaxed);
    let during = receipts.ids.lock().unwrap().len();
    let stopped = Instant::now();
    while delivering && (receipts.ids.lock().unwrap().len() as u64) < expected && stopped.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = stopped.elapsed().as_secs_f64();
    // Disabled, not deleted (see above).
    let hook_url = format!("/api/v0/coins/webhooks/{webhook_id}");
    let (status, json) = http_json(addr, request("PATCH", &hook_url, token, Some(r#"{"enabled":false}"#))).await;
    assert_eq!(status, 200, "disable webhook: {json}");
    let after = phase(addr, token, Kind::Allocate, conns, secs, &format!("wh-off2-{conns}"), ok_ids).await;
    after.print();
    let base = (before.rps() + after.rps()) / 2.0;
    let versus = format!(
        "allocate {:.0}/s with a subscription vs {base:.0}/s without (mean of {:.0} before and {:.0} after) = {:.0}%",
        with.rps(),
        before.rps(),
        after.rps(),
        100.0 * with.rps() / base
    );
    if !delivering {
        println!("  webhooks (outbox only, delivery off), {conns:>4} conns: {versus}; {expected} messages were written to the outbox");
        return hook_url;
    }
    let mut lags = receipts.lags_ms.lock().unwrap().clone();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    let delivered = receipts.ids.lock().unwrap().len();
    println!(
        "  webhooks, {conns:>4} conns: {versus}; {delivered} of {expected} events delivered ({during} during the load, the rest {drain:.1} s \
         after it; {} requests); lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        receipts.requests.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        lags.last().copied().unwrap_or(f64::NAN),
    );
    hook_url
}

/// Allocation without a campaign, under a ×2 one, under a ×2 one with a per-user limit, and
/// without again (each campaign ended before the next phase).
async fn campaign_phase(addr: &str, token: &str, conns: usize, secs: u64, ok_ids: Arc<std::sync::Mutex<Vec<String>>>) {
    let before = phase(addr, token, Kind::Allocate, conns, secs, &format!("cp-off-{conns}"), ok_ids.clone()).await;
    before.print();
    let mut with = Vec::new();
    for (tag, limit) in [("unlimited", "null"), ("limited", "1000000")] {
        let now = coins::clock::system_now_ms();
        let body = format!(
            r#"{{"companyId":"{COMPANY}","name":"bench","events":["{EVENT}"],"startsAt":"{}","endsAt":"{}","multiplierBps":20000,"maxTriggersPerUser":{limit}}}"#,
            coins::clock::rfc3339(now - 60_000),
            coins::clock::rfc3339(now + 86_400_000)
        );
        let (status, json) = http_json(addr, request("POST", "/api/v0/coins/campaigns", token, Some(&body))).await;
        assert_eq!(status, 200, "create campaign: {json}");
        let id = json["payload"]["campaignId"].as_str().expect("campaignId").to_owned();
        let r = phase(addr, token, Kind::Allocate, conns, secs, &format!("cp-{tag}-{conns}"), ok_ids.clone()).await;
        r.print();
        let end = format!(r#"{{"endsAt":"{}"}}"#, coins::clock::rfc3339(coins::clock::system_now_ms()));
        let (status, json) = http_json(addr, request("PATCH", &format!("/api/v0/coins/campaigns/{id}"), token, Some(&end))).await;
        assert_eq!(status, 200, "end campaign: {json}");
        // An early end takes effect after the notice every process needs (5 s).
        tokio::time::sleep(Duration::from_millis(coins::domain::campaigns::CHANGE_NOTICE_MS as u64 + 1_000)).await;
        with.push((tag, r.rps()));
    }
    let after = phase(addr, token, Kind::Allocate, conns, secs, &format!("cp-off2-{conns}"), ok_ids).await;
    after.print();
    let base = (before.rps() + after.rps()) / 2.0;
    for (tag, rps) in with {
        println!(
            "  campaign ({tag}), {conns:>4} conns: allocate {rps:.0}/s vs {base:.0}/s without (mean of {:.0} before and {:.0} after) = {:.0}%",
            before.rps(),
            after.rps(),
            100.0 * rps / base
        );
    }
}

/// Sets up the 5-tier scheme on `basis` (LIFETIME, or ROLLING over 365 days) and a ×2 campaign
/// for the event, running from a minute ago for a day; returns the seconds setting the scheme up
/// took (it counts the company's whole history) and the campaign's id.
async fn tiers_and_campaign(addr: &str, token: &str, basis: &str) -> (f64, String) {
    let window = if basis == "ROLLING" { "365" } else { "null" };
    let scheme = format!(
        r#"{{"companyId":"{COMPANY}","basis":"{basis}","windowDays":{window},"retentionDays":365,"downgrade":"ONE_DOWN","tiers":[
            {{"code":"T1","name":"Member","threshold":0,"earnMultiplierBps":10000}},{{"code":"T2","name":"Bronze","threshold":100,"earnMultiplierBps":11000}},
            {{"code":"T3","name":"Silver","threshold":500,"earnMultiplierBps":12500}},{{"code":"T4","name":"Gold","threshold":2000,"earnMultiplierBps":15000}},
            {{"code":"T5","name":"Platinum","threshold":10000,"earnMultiplierBps":20000}}]}}"#
    );
    let started = Instant::now();
    let (status, json) = http_json(addr, request("PUT", "/api/v0/coins/tiers", token, Some(&scheme))).await;
    assert_eq!(status, 200, "put tiers: {json}");
    let setup = started.elapsed().as_secs_f64();
    let now = coins::clock::system_now_ms();
    let body = format!(
        r#"{{"companyId":"{COMPANY}","name":"bench","events":["{EVENT}"],"startsAt":"{}","endsAt":"{}","multiplierBps":20000}}"#,
        coins::clock::rfc3339(now - 60_000),
        coins::clock::rfc3339(now + 86_400_000)
    );
    let (status, json) = http_json(addr, request("POST", "/api/v0/coins/campaigns", token, Some(&body))).await;
    assert_eq!(status, 200, "create campaign: {json}");
    (setup, json["payload"]["campaignId"].as_str().expect("campaignId").to_owned())
}

/// Allocation without tiers or a campaign; then with a 5-tier scheme (LIFETIME, then ROLLING)
/// and a ×2 campaign for the event; then without again (each scheme deleted and its campaign
/// ended before the next phase). Setting each scheme up counts the company's whole history, timed
/// on its own.
async fn tiers_phase(addr: &str, token: &str, conns: usize, secs: u64, ok_ids: Arc<std::sync::Mutex<Vec<String>>>) {
    let before = phase(addr, token, Kind::Allocate, conns, secs, &format!("tr-off-{conns}"), ok_ids.clone()).await;
    before.print();
    let mut with = Vec::new();
    for basis in ["LIFETIME", "ROLLING"] {
        let (setup, id) = tiers_and_campaign(addr, token, basis).await;
        let r = phase(addr, token, Kind::Allocate, conns, secs, &format!("tr-{}-{conns}", basis.to_lowercase()), ok_ids.clone()).await;
        r.print();
        let (status, json) = http_json(addr, request("DELETE", &format!("/api/v0/coins/tiers?companyId={COMPANY}"), token, None)).await;
        assert_eq!(status, 200, "delete tiers: {json}");
        let end = format!(r#"{{"endsAt":"{}"}}"#, coins::clock::rfc3339(coins::clock::system_now_ms()));
        let (status, json) = http_json(addr, request("PATCH", &format!("/api/v0/coins/campaigns/{id}"), token, Some(&end))).await;
        assert_eq!(status, 200, "end campaign: {json}");
        tokio::time::sleep(Duration::from_millis(coins::domain::campaigns::CHANGE_NOTICE_MS as u64 + 1_000)).await;
        with.push((basis, r.rps(), setup));
    }
    let after = phase(addr, token, Kind::Allocate, conns, secs, &format!("tr-off2-{conns}"), ok_ids).await;
    after.print();
    let base = (before.rps() + after.rps()) / 2.0;
    for (basis, rps, setup) in with {
        println!(
            "  tiers (5 tiers, {basis}, and a ×2 campaign), {conns:>4} conns: allocate {rps:.0}/s vs {base:.0}/s without (mean of {:.0} before and {:.0} after) \
             = {:.0}%; setting the scheme up over the history took {setup:.1} s",
            before.rps(),
            after.rps(),
            100.0 * rps / base
        );
    }
}

/// A figure of `/proc/<pid>/status` in MB (`VmRSS:` now, `VmHWM:` the peak).
fn rss_of(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Streams the company's whole ledger as JSON lines, then its balances now and as of a past
/// instant (read back from the ledger), each reporting rows/s and the server's RSS before and
/// during (sampled every 50 ms); `expected` ledger rows must all arrive.
async fn export_phase(addr: &str, token: &str, pid: u32, expected: u64) -> bool {
    // An export ends five seconds before now: let the preload settle into the window.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = coins::clock::system_now_ms();
    let ledger = format!(
        "/api/v0/coins/exports/ledger?companyId={COMPANY}&from={}&to={}&format=jsonl",
        coins::clock::rfc3339(now - 300 * 86_400_000),
        coins::clock::rfc3339(now + 60_000)
    );
    let rows = stream(addr, token, pid, "export", &ledger).await;
    stream(addr, token, pid, "export balances now", &format!("/api/v0/coins/exports/balances?companyId={COMPANY}&format=jsonl")).await;
    let past = format!("/api/v0/coins/exports/balances?companyId={COMPANY}&format=jsonl&asOf={}", coins::clock::rfc3339(now - 5_500));
    stream(addr, token, pid, "export balances as of a past instant", &past).await;
    rows == Some(expected)
}

/// Downloads one JSON-lines export and prints what it took; the rows its end line counts.
async fn stream(addr: &str, token: &str, pid: u32, label: &str, path: &str) -> Option<u64> {
    let before = rss_of(pid, "VmRSS:");
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max((rss_of(pid, "VmRSS:") * 1024.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.expect("send");
    let (mut bytes, mut tail, mut buf) = (0u64, Vec::new(), vec![0u8; 1 << 16]);
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        // Only the end line is kept: it says how many rows were written.
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    sampler.abort();
    let text = String::from_utf8_lossy(&tail);
    let end = "{\"end\":true,\"rows\":";
    let rows = text.rfind(end).and_then(|i| text[i + end.len()..].split(',').next().and_then(|n| n.parse::<u64>().ok()));
    let during = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "  {label}: {} rows ({:.1} MB) in {secs:.1} s = {:.0} rows/s; server RSS {before:.1} MB before, at most {during:.1} MB during",
        rows.map_or("?".to_owned(), |r| r.to_string()),
        bytes as f64 / 1_048_576.0,
        rows.unwrap_or(0) as f64 / secs,
    );
    rows
}

/// A fresh database for the run, and how to remove it afterwards.
enum Cleanup {
    Dir(std::path::PathBuf),
    Schema { admin_url: String, schema: String },
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::Dir(dir) => drop(std::fs::remove_dir_all(dir)),
            Cleanup::Schema { admin_url, schema } => {
                if let Ok((c, conn)) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                }
            }
        }
    }
}

async fn fresh_db(args: &Args) -> (String, Cleanup) {
    fresh_db_named(args, "").await
}

/// A fresh database whose name ends in `suffix` (two at once for `--ab`).
async fn fresh_db_named(args: &Args, suffix: &str) -> (String, Cleanup) {
    if args.backend == "sqlite" {
        let dir = std::env::temp_dir().join(format!("coins-bench-{}{suffix}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (dir.join("coins.db").to_string_lossy().into_owned(), Cleanup::Dir(dir))
    } else {
        let schema = format!("coins_bench_{}{suffix}", std::process::id());
        let (client, conn) = tokio_postgres::connect(&args.pg_url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
        tokio::spawn(conn);
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await.expect("schema");
        let sep = if args.pg_url.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options=-csearch_path%3D{schema}", args.pg_url);
        (url, Cleanup::Schema { admin_url: args.pg_url.clone(), schema })
    }
}

async fn run(args: Args) -> bool {
    if args.only == ["dashboard"] {
        return dashboard_bench(&args).await;
    }
    if let Some(b) = &args.ab {
        return ab_bench(&args, b).await;
    }
    println!("coins benchmark: backend {}, {} s per phase, connections {:?}, preload {} entries", args.backend, args.secs, args.conns, args.preload);
    let (db_url, cleanup) = fresh_db(&args).await;
    let server = Server::start(&db_url, "on", args.wal_max_mb);
    let addr = server.addr.clone();
    let wal_peak = Arc::new(AtomicU64::new(0));
    let wal_watch = (args.backend == "sqlite").then(|| {
        let (wal, peak) = (format!("{db_url}-wal"), wal_peak.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(m) = std::fs::metadata(&wal) {
                    peak.fetch_max(m.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let token = get_token(&addr).await;
    create_configs(&addr, &token, &args.only).await;

    let ok_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut results = Vec::new();
    if args.preload > 0 {
        let (rate, conns) = preload(&addr, &token, args.preload, ok_ids.clone()).await;
        println!("  bulk allocate-coins (1,000 items/request, {conns} conns): {rate:.0} allocations/s while preloading {} entries", args.preload);
        println!("  server peak RSS after preload: {:.1} MB", server.peak_rss_mb());
        if args.backend == "sqlite" {
            println!("  SQLite WAL file: peak {:.1} MiB during the preload", wal_peak.swap(0, Ordering::Relaxed) as f64 / 1_048_576.0);
        }
    }
    let wants = |p: &str| args.only.iter().any(|o| o == p);
    for &conns in &args.conns {
        let sqlite = args.backend == "sqlite";
        let run = |kind, wanted: bool, tag: String| {
            let (addr, token, ok_ids, wal_peak) = (addr.clone(), token.clone(), ok_ids.clone(), wal_peak.clone());
            async move {
                if !wanted {
                    return None;
                }
                let before = wal_peak.swap(0, Ordering::Relaxed);
                let r = phase(&addr, &token, kind, conns, args.secs, &tag, ok_ids).await;
                r.print();
                let during = wal_peak.fetch_max(before, Ordering::Relaxed);
                if sqlite && kind != Kind::Healthz {
                    println!("  {:<27} SQLite WAL file: peak {:.1} MiB", "", during as f64 / 1_048_576.0);
                }
                Some(r)
            }
        };
        let h = run(Kind::Healthz, wants("healthz"), "h".into()).await;
        let a = run(Kind::Allocate, wants("allocate"), format!("gc-on-{conns}")).await;
        let b = run(Kind::Balance, wants("balance"), "b".into()).await;
        let p = run(Kind::Percent, wants("percent"), format!("pct-{conns}")).await;
        let held = run(Kind::Held, wants("held"), format!("held-{conns}")).await;
        let both = run(Kind::PercentHeld, wants("percent-held"), format!("pct-held-{conns}")).await;
        if let (Some(a), Some(p)) = (&a, &p) {
            println!("  {conns:>4} conns: PERCENT allocation {:.0}/s = {:.0}% of plain allocation", p.rps(), 100.0 * p.rps() / a.rps());
        }
        if let (Some(a), Some(held)) = (&a, &held) {
            println!("  {conns:>4} conns: held allocation {:.0}/s = {:.0}% of plain allocation", held.rps(), 100.0 * held.rps() / a.rps());
        }
        if let (Some(a), Some(both)) = (&a, &both) {
            println!("  {conns:>4} conns: PERCENT held allocation {:.0}/s = {:.0}% of plain allocation", both.rps(), 100.0 * both.rps() / a.rps());
        }
        results.push((conns, h, a, b));
    }
    if wants("slow") {
        slow_phase(&addr, &token, args.secs).await;
    }
    let mut exported = true;
    if wants("export") {
        let entries = ok_ids.lock().unwrap().len() as u64;
        exported = export_phase(&addr, &token, server.child.id(), entries).await;
        if !exported {
            println!("  export: FAILED: not every entry arrived ({entries} expected)");
        }
    }
    if wants("webhooks") {
        let mut hooks = Vec::new();
        for &conns in &args.conns {
            hooks.push(webhook_phase(&addr, &token, conns, args.secs, ok_ids.clone()).await);
        }
        for hook in hooks {
            let (status, _) = http_json(&addr, request("DELETE", &hook, &token, None)).await;
            assert_eq!(status, 200, "delete webhook");
        }
    }
    if wants("campaign") {
        for &conns in &args.conns {
            campaign_phase(&addr, &token, conns, args.secs, ok_ids.clone()).await;
        }
    }
    if wants("tiers") {
        for &conns in &args.conns {
            tiers_phase(&addr, &token, conns, args.secs, ok_ids.clone()).await;
        }
    }
    let peak_rss = server.peak_rss_mb();
    server.stop();
    if let Some(w) = wal_watch {
        w.abort();
        println!("  SQLite WAL file: peak {:.1} MiB over the phases", wal_peak.load(Ordering::Relaxed) as f64 / 1_048_576.0);
    }

    let mut off_best = None::<f64>;
    if args.backend == "postgres" && wants("allocate") {
        let server = Server::start(&db_url, "off", args.wal_max_mb);
        let token = get_token(&server.addr).await;
        for &conns in &args.conns {
            let r = phase(&server.addr, &token, Kind::Allocate, conns, args.secs, &format!("gc-off-{conns}"), ok_ids.clone()).await;
            r.print();
            off_best = Some(off_best.map_or(r.rps(), |b: f64| b.max(r.rps())));
        }
        server.stop();
    }

    println!("summary ({}):", args.backend);
    for (conns, h, a, b) in &results {
        let (Some(h), Some(a), Some(b)) = (h, a, b) else { continue };
        println!(
            "  {conns:>4} conns: allocate {:.0}/s = {:.0}% of healthz {:.0}/s (p99 {:.2} ms); balance {:.0}/s = {:.0}% of healthz",
            a.rps(),
            100.0 * a.rps() / h.rps(),
            h.rps(),
            a.p99_us as f64 / 1000.0,
            b.rps(),
            100.0 * b.rps() / h.rps()
        );
    }
    if let Some(off) = off_best {
        let best_on = results.iter().filter_map(|r| r.2.as_ref()).map(PhaseResult::rps).fold(0.0, f64::max);
        println!("  group commit: best on {best_on:.0}/s vs best off {off:.0}/s = {:.2}x", best_on / off);
    }
    println!("  server peak RSS: {peak_rss:.1} MB");

    let ids = ok_ids.lock().unwrap().clone();
    let ledger_ok = match check_ledger(&args.backend, &db_url, &ids).await {
        Ok(unanswered) => {
            println!("  ledger: all {} allocations answered 200 are in the ledger exactly once ({unanswered} applied whose answer was lost)", ids.len());
            true
        }
        Err(e) => {
            println!("  ledger: FAILED: {e}");
            false
        }
    };
    let verified = verify(&db_url);
    cleanup.run().await;
    ledger_ok && verified && exported
}

/// One build under `--ab`: its server, database and the allocations it answered 200.
struct Build {
    name: &'static str,
    bin: String,
    server: Server,
    token: String,
    db_url: String,
    cleanup: Cleanup,
    ok_ids: Arc<std::sync::Mutex<Vec<String>>>,
}

/// The phases `--ab` runs.
const AB_PHASES: [(&str, Kind); 6] = [
    ("healthz", Kind::Healthz),
    ("allocate", Kind::Allocate),
    ("balance", Kind::Balance),
    ("percent", Kind::Percent),
    ("held", Kind::Held),
    ("percent-held", Kind::PercentHeld),
];

/// What one build did over its turns of a phase.
#[derive(Default)]
struct Turns {
    requests: u64,
    errors: u64,
    secs: f64,
    p99_ms: Vec<f64>,
}

/// Two builds compared on this noisy machine: A (`COINS_BIN`) and B (`--ab <binary>`), each on a
/// fresh database, preloaded in alternating chunks of 100,000 allocations, then each `--only`
/// phase (healthz, allocate, balance, percent, held, percent-held) in alternating turns of
/// `--slice-secs` until each build has had `--secs`. Whatever the machine does meanwhile falls on
/// both builds alike, so the ratio B/A holds still where single runs swing by tens of percent.
/// Ends with the ledger check and `coins verify` on both databases.
async fn ab_bench(args: &Args, bin_b: &str) -> bool {
    println!(
        "coins A/B benchmark: backend {}, A {} against B {bin_b}, {} s per build and phase in turns of {} s, connections {:?}, preload {} entries each",
        args.backend,
        coins_bin(),
        args.secs,
        args.slice_secs,
        args.conns,
        args.preload
    );
    let mut builds = Vec::new();
    for (name, bin) in [("A", coins_bin()), ("B", bin_b.to_owned())] {
        let (db_url, cleanup) = fresh_db_named(args, &format!("_{}", name.to_lowercase())).await;
        let server = Server::start_bin(&bin, &db_url, "on", args.wal_max_mb, 0);
        let token = get_token(&server.addr).await;
        create_configs(&server.addr, &token, &args.only).await;
        builds.push(Build { name, bin, server, token, db_url, cleanup, ok_ids: Arc::new(std::sync::Mutex::new(Vec::new())) });
    }
    // A pause no one is measured in, after each build's preload chunk, setup and turn: what a
    // server still does after its load stops (a checkpoint's copying, PostgreSQL's own work)
    // falls in it rather than in the other build's turn.
    let settle = || tokio::time::sleep(Duration::from_millis(500));
    const CHUNK: u64 = 100_000;
    let mut bulk = [(0.0f64, 0u64); 2];
    let mut done = 0;
    while done < args.preload {
        let n = CHUNK.min(args.preload - done);
        let order: [usize; 2] = if (done / CHUNK).is_multiple_of(2) { [0, 1] } else { [1, 0] };
        for i in order {
            let b = &builds[i];
            SERVER_PID.store(b.server.child.id(), Ordering::Relaxed);
            let started = Instant::now();
            preload_from(&b.server.addr, &b.token, done, n, b.ok_ids.clone()).await;
            bulk[i].0 += started.elapsed().as_secs_f64();
            bulk[i].1 += n;
            settle().await;
        }
        done += n;
    }
    if args.preload > 0 {
        let rate = |i: usize| bulk[i].1 as f64 / bulk[i].0;
        println!("  bulk allocate-coins (1,000 items/request): A {:.0}/s, B {:.0}/s = {:.1}% of A", rate(0), rate(1), 100.0 * rate(1) / rate(0));
    }
    for (b, basis) in builds.iter().zip([&args.a_tiers, &args.b_tiers]) {
        if let Some(basis) = basis {
            let (setup, _) = tiers_and_campaign(&b.server.addr, &b.token, basis).await;
            println!("  {}: a 5-tier scheme on the {basis} basis and a ×2 campaign for the event (setting the scheme up took {setup:.1} s)", b.name);
        }
    }
    settle().await;
    let slices = args.secs.div_ceil(args.slice_secs);
    // One count across every phase: the build that goes first alternates from round to round,
    // and from one phase's first round to the next's.
    let mut round = 0usize;
    for &conns in &args.conns {
        for (label, kind) in AB_PHASES.iter().filter(|(p, _)| args.only.iter().any(|o| o == p)) {
            let mut turns = [Turns::default(), Turns::default()];
            // Each server's CPU over the whole phase, its pauses included: it is idle outside its
            // turns, so what its turns left behind is charged to it.
            let cpu_before: Vec<CpuTimes> = builds.iter().map(|b| CpuTimes::of(b.server.child.id())).collect();
            for slice in 0..slices {
                let order: [usize; 2] = if round.is_multiple_of(2) { [0, 1] } else { [1, 0] };
                round += 1;
                for i in order {
                    let b = &builds[i];
                    SERVER_PID.store(b.server.child.id(), Ordering::Relaxed);
                    let tag = format!("ab-{label}-{conns}-{slice}");
                    let r = phase(&b.server.addr, &b.token, *kind, conns, args.slice_secs, &tag, b.ok_ids.clone()).await;
                    settle().await;
                    let t = &mut turns[i];
                    t.requests += r.requests;
                    t.errors += r.errors;
                    t.secs += r.secs;
                    t.p99_ms.push(r.p99_us as f64 / 1000.0);
                }
            }
            let cpu: Vec<CpuTimes> = builds.iter().zip(cpu_before).map(|(b, before)| CpuTimes::of(b.server.child.id()).since(before)).collect();
            let rps = |t: &Turns| t.requests as f64 / t.secs;
            let per = |t: &Turns, secs: f64| 1e6 * secs / t.requests.max(1) as f64;
            for ((b, t), cpu) in builds.iter().zip(&mut turns).zip(&cpu) {
                t.p99_ms.sort_by(f64::total_cmp);
                println!(
                    "  {:<14} {conns:>4} conns  {}: {:>9.0} req/s  p99 of its turns: median {:.2} ms, worst {:.2} ms  errors {}  server CPU {:.1} µs/req{}",
                    label,
                    b.name,
                    rps(t),
                    t.p99_ms[t.p99_ms.len() / 2],
                    t.p99_ms.last().copied().unwrap_or(0.0),
                    t.errors,
                    per(t, cpu.process),
                    cpu.writer.map(|w| format!(" (writer {:.1})", per(t, w))).unwrap_or_default()
                );
            }
            let errors = turns[0].errors + turns[1].errors;
            println!(
                "  {:<14} {conns:>4} conns  B/A: throughput {:.1}%, server CPU per request {:.1}%{}",
                label,
                100.0 * rps(&turns[1]) / rps(&turns[0]),
                100.0 * per(&turns[1], cpu[1].process) / per(&turns[0], cpu[0].process),
                if errors > 0 { format!("  (NOT COMPARABLE: {errors} requests failed)") } else { String::new() }
            );
        }
    }
    let mut ok = true;
    for b in builds {
        println!("  {}: server peak RSS {:.1} MB", b.name, b.server.peak_rss_mb());
        b.server.stop();
        let ids = b.ok_ids.lock().unwrap().clone();
        match check_ledger(&args.backend, &b.db_url, &ids).await {
            Ok(lost) => println!(
                "  {}: ledger: all {} allocations answered 200 are in the ledger exactly once ({lost} applied whose answer was lost)",
                b.name,
                ids.len()
            ),
            Err(e) => {
                println!("  {}: ledger: FAILED: {e}", b.name);
                ok = false;
            }
        }
        ok &= verify_with(&b.bin, &b.db_url);
        b.cleanup.run().await;
    }
    ok
}

/// The dashboard at scale: `--preload` entries (10,000,000 for the issue's figure) over 90 days,
/// 20 companies, 10 events and 100,000 users, seeded through the bulk endpoint by a server whose
/// clock is set back, 3 days at a time; then the overview's time to answer, sequentially, for all
/// companies and for one, over 30 and 90 days.
async fn dashboard_bench(args: &Args) -> bool {
    const CHUNKS: u64 = 30;
    const COMPANIES: u64 = 20;
    const EVENTS: u64 = 10;
    const MEMBERS: u64 = 100_000;
    println!("dashboard benchmark: backend {}, {} entries over 90 days", args.backend, args.preload);
    let (db_url, cleanup) = fresh_db(args).await;
    let started = Instant::now();
    let per_chunk = args.preload / CHUNKS;
    for chunk in 0..CHUNKS {
        let offset = -((90 - 3 * chunk as i64) * 86_400);
        let server = Server::start_at(&db_url, "on", args.wal_max_mb, offset);
        let token = get_token(&server.addr).await;
        if chunk == 0 {
            for e in 0..EVENTS {
                let cfg = format!(r#"{{"configuration":"DEFAULT","companyId":"C0","event":"E{e}","amount":{}}}"#, e + 1);
                let (status, json) = http_json(&server.addr, request("POST", "/api/v0/enkash-coins/create-coins-config", &token, Some(&cfg))).await;
                assert_eq!(status, 200, "config: {json}");
            }
        }
        let next = Arc::new(AtomicU64::new(0));
        let requests = per_chunk.div_ceil(BULK_ITEMS as u64);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (addr, token, next) = (server.addr.clone(), token.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&addr).await;
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= requests {
                        break;
                    }
                    let items: Vec<String> = (0..BULK_ITEMS as u64)
                        .map(|i| {
                            let n = (chunk * requests + r) * BULK_ITEMS as u64 + i;
                            let member = n % MEMBERS;
                            format!(r#"{{"companyId":"C{}","event":"E{}","requestId":"d-{n}","userId":"M{member}"}}"#, member % COMPANIES, n % EVENTS)
                        })
                        .collect();
                    let body = format!(r#"{{"allocations":[{}]}}"#, items.join(","));
                    let (status, resp) = conn.send(&request("POST", "/api/v0/enkash-coins/allocate-coins", &token, Some(&body))).await.expect("bulk");
                    assert_eq!(status, 200, "bulk: {}", String::from_utf8_lossy(&resp));
                }
            }));
        }
        for t in tasks {
            t.await.expect("seed task");
        }
        server.stop();
        println!("  seeded {} entries ({:.0} s)", (chunk + 1) * per_chunk, started.elapsed().as_secs_f64());
    }
    let server = Server::start(&db_url, "on", args.wal_max_mb);
    let cookie = dashboard_session(&server.addr).await;
    for path in ["/dashboard", "/dashboard?days=90", "/dashboard?companyId=C3", "/dashboard?companyId=C3&days=90"] {
        let mut conn = Conn::open(&server.addr).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n").into_bytes();
        let mut times = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            let (status, body) = conn.send(&req).await.expect("overview");
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!("  GET {path:<34} p50 {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms  (100 requests)", times[50], times[95], times[99]);
    }
    server.stop();
    let verified = verify(&db_url);
    cleanup.run().await;
    verified
}

/// Signs in to the dashboard as the bench admin; the `Cookie` header of the session.
async fn dashboard_session(addr: &str) -> String {
    let cookie_of = |head: &str, name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.trim().to_owned()))
            .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_owned()))
            .unwrap_or_default()
    };
    let mut conn = Conn::open(addr).await;
    conn.send(b"GET /dashboard/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.expect("login page");
    let csrf = cookie_of(&conn.head, "coins_csrf");
    let form = format!("csrf={csrf}&client_id=bench-admin&client_secret=bench-secret-not-for-production");
    let req = format!(
        "POST /dashboard/login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: coins_csrf={csrf}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let (status, _) = conn.send(req.as_bytes()).await.expect("sign in");
    assert_eq!(status, 303, "dashboard sign-in");
    format!("coins_session={}; coins_csrf={}", cookie_of(&conn.head, "coins_session"), cookie_of(&conn.head, "coins_csrf"))
}
