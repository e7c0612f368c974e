//! Test harness: the real app on port 0 with a fresh database per test, on either backend.
//!
//! SQLite gets a new file in a temporary directory; PostgreSQL gets a new schema in the database
//! named by `COINS_TEST_DATABASE_URL` (default: the local server's `test` database). Every test
//! written with [`both_backends!`] runs on both and ends by checking the ledger invariants (`coins verify`).
//!
//! A PostgreSQL that cannot be reached fails the test, unless `COINS_SKIP_POSTGRES=1` is set
//! outside CI, in which case the test says loudly that it skipped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use coins::app::App;
use coins::clock::{Clock, ShiftedClock};
use coins::config::ServeSettings;
use coins::domain::CompanyId;
use coins::store::{self, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, migrated database that removes itself when dropped.
pub struct TestDb {
    pub url: String,
    pub store: Arc<dyn Store>,
    _cleanup: Cleanup,
}

/// An empty database (no tables yet) that removes itself when dropped.
pub struct BlankDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Schema { admin_url: String, schema: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { admin_url, schema } => {
                // Drop runs inside the test's runtime (or while unwinding): use a thread of our own.
                let (url, schema) = (admin_url.clone(), schema.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    rt.block_on(async {
                        if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                            tokio::spawn(conn);
                            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

fn unique_suffix() -> String {
    coins::crypto::random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn pg_url() -> String {
    std::env::var("COINS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// `None` only when PostgreSQL is unreachable and skipping was asked for outside CI.
pub async fn test_db(backend: Backend) -> Option<TestDb> {
    let blank = blank_db(backend).await?;
    let store = store::open(&blank.url).await.expect("open the test database");
    store.migrate().await.expect("migrate the test database");
    Some(TestDb { url: blank.url, store, _cleanup: blank.cleanup })
}

/// An empty database: SQLite, a path in a new temporary directory (created); PostgreSQL, a new
/// schema, named in the URL's `search_path`. `None` as for [`test_db`].
pub async fn blank_db(backend: Backend) -> Option<BlankDb> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("coins-test-{}", unique_suffix()));
            std::fs::create_dir_all(&dir).expect("create the test directory");
            let url = dir.join("coins.db").to_string_lossy().into_owned();
            Some(BlankDb { url, cleanup: Cleanup::Dir(dir) })
        }
        Backend::Postgres => {
            let admin_url = pg_url();
            let (client, conn) = match tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await {
                Ok(pair) => pair,
                Err(e) => {
                    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
                    let skip = std::env::var("COINS_SKIP_POSTGRES").is_ok_and(|v| v == "1");
                    if skip && !in_ci {
                        eprintln!("\n!!! SKIPPED: PostgreSQL at {admin_url} is unreachable ({e}) and COINS_SKIP_POSTGRES=1 !!!\n");
                        return None;
                    }
                    panic!(
                        "PostgreSQL at {admin_url} is unreachable: {e}. Start it, set COINS_TEST_DATABASE_URL, or (outside CI) set COINS_SKIP_POSTGRES=1 to skip"
                    );
                }
            };
            tokio::spawn(conn);
            let schema = format!("coins_t_{}", unique_suffix());
            client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
            let sep = if admin_url.contains('?') { '&' } else { '?' };
            let url = format!("{admin_url}{sep}options=-csearch_path%3D{schema}");
            Some(BlankDb { url, cleanup: Cleanup::Schema { admin_url, schema } })
        }
    }
}

/// A response, with the body parsed as JSON (or `Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    async fn from(res: reqwest::Response) -> Resp {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error envelope exactly: four fields, message repeated, code as given.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &str {
        assert_eq!(self.status.as_u16(), status, "status of {}", self.text);
        let obj = self.body.as_object().unwrap_or_else(|| panic!("error body is not an object: {}", self.text));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error_code", "payload", "response_code", "response_message"], "{}", self.text);
        assert_eq!(self.body["response_code"], json!(1));
        assert_eq!(self.body["error_code"], json!(code), "{}", self.text);
        let message = self.body["response_message"].as_str().expect("message is a string");
        assert!(!message.is_empty());
        assert_eq!(self.body["payload"], json!(message), "payload repeats the message");
        message
    }

    /// Asserts the success envelope exactly and returns the payload.
    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        let obj = self.body.as_object().unwrap_or_else(|| panic!("body is not an object: {}", self.text));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["payload", "response_code", "response_message"], "{}", self.text);
        assert_eq!(self.body["response_code"], json!(0));
        assert_eq!(self.body["response_message"], json!("Success"));
        &self.body["payload"]
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub clock: ShiftedClock,
    pub admin_id: String,
    pub admin_secret: String,
    pub admin_token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Token lifetime of harness apps: a year, because lifecycle tests move the clock by days and
/// the admin token must outlive that. Expiry itself is tested with explicit settings.
pub const TEST_TOKEN_TTL_SECS: i64 = 365 * 86_400;

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let mut settings = ServeSettings::for_tests();
    settings.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    spawn_app_with(backend, settings).await
}

pub async fn spawn_app_with(backend: Backend, settings: ServeSettings) -> Option<TestApp> {
    let db = test_db(backend).await?;
    let clock = ShiftedClock::default();
    let app = App::build(&settings, db.store.clone(), Arc::new(clock.clone()) as Arc<dyn Clock>).await.expect("bind");
    let base = format!("http://{}", app.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let (admin_id, admin_secret) = coins::admin::create_client(&*db.store, "test admin", true, vec![]).await.expect("admin client");
    let mut app = TestApp {
        backend,
        base,
        http: reqwest::Client::new(),
        db,
        clock,
        admin_id,
        admin_secret,
        admin_token: String::new(),
        shutdown: Some(tx),
        server: Some(server),
    };
    app.admin_token = app.token(&app.admin_id.clone(), &app.admin_secret.clone()).await;
    Some(app)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn store(&self) -> &dyn Store {
        &*self.db.store
    }

    /// POST /oauth/token with the given form and optional Basic credentials.
    pub async fn token_request(&self, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Resp {
        let mut req = self.http.post(self.url("/oauth/token")).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        Resp::from(req.send().await.expect("send")).await
    }

    /// A client_credentials access token.
    pub async fn token(&self, id: &str, secret: &str) -> String {
        let res = self.token_request(Some((id, secret)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        res.body["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn create_client(&self, companies: &[&str]) -> (String, String) {
        let companies = companies.iter().map(|c| CompanyId::parse(c).expect("company")).collect();
        coins::admin::create_client(self.store(), "test company client", false, companies).await.expect("client")
    }

    /// A token for a new client scoped to these companies.
    pub async fn company_token(&self, companies: &[&str]) -> String {
        let (id, secret) = self.create_client(companies).await;
        self.token(&id, &secret).await
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        Resp::from(req.send().await.expect("send")).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, Some(token), Some(&body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(&body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn create_config(&self, token: &str, body: Value) -> Resp {
        self.post("/api/v0/enkash-coins/create-coins-config", token, body).await
    }

    /// Creates a configuration as admin and returns its id.
    pub async fn config(&self, configuration: &str, company: &str, event: &str, amount: i64) -> String {
        let res = self.create_config(&self.admin_token, json!({"configuration": configuration, "companyId": company, "event": event, "amount": amount})).await;
        res.assert_ok()["coinConfigId"].as_str().expect("id").to_owned()
    }

    pub async fn allocate(&self, token: &str, company: &str, event: &str, request_id: &str, user: &str) -> Resp {
        self.post("/api/v0/enkash-coins/allocate-coin", token, json!({"companyId": company, "event": event, "requestId": request_id, "userId": user})).await
    }

    pub async fn balance_as(&self, token: &str, user: &str) -> i64 {
        let res = self.get(&format!("/api/v0/coins/balance?userId={user}"), token).await;
        res.assert_ok().as_i64().expect("balance is an integer")
    }

    pub async fn balance(&self, user: &str) -> i64 {
        self.balance_as(&self.admin_token, user).await
    }

    pub async fn assert_ledger_consistent(&self) {
        let report = self.store().verify().await.expect("verify");
        assert!(report.problems.is_empty(), "ledger invariants broken: {:#?}", report.problems);
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server exits cleanly");
        }
    }
}

pub type TestFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Runs one test body against a fresh app, then checks the ledger and shuts down gracefully.
pub async fn run(backend: Backend, body: for<'a> fn(&'a TestApp) -> TestFuture<'a>) {
    let mut settings = ServeSettings::for_tests();
    settings.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    run_with(backend, settings, body).await
}

/// [`run`] with settings of the test's own.
pub async fn run_with(backend: Backend, settings: ServeSettings, body: for<'a> fn(&'a TestApp) -> TestFuture<'a>) {
    let Some(app) = spawn_app_with(backend, settings).await else { return };
    body(&app).await;
    app.assert_ledger_consistent().await;
    app.stop().await;
}

/// Declares each test once and runs it as `<name>::sqlite` and `<name>::postgres`; with
/// `settings = f;` first, each app is built with `f()` instead of the test defaults.
#[macro_export]
macro_rules! both_backends {
    (settings = $settings:expr; $(async fn $name:ident($app:ident: &TestApp) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($app: &$crate::helpers::TestApp) $body
            fn boxed(app: &$crate::helpers::TestApp) -> $crate::helpers::TestFuture<'_> {
                Box::pin(body(app))
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::run_with($crate::helpers::Backend::Sqlite, $settings(), boxed).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::run_with($crate::helpers::Backend::Postgres, $settings(), boxed).await
            }
        }
    )*};
    ($(async fn $name:ident($app:ident: &TestApp) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($app: &$crate::helpers::TestApp) $body
            fn boxed(app: &$crate::helpers::TestApp) -> $crate::helpers::TestFuture<'_> {
                Box::pin(body(app))
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::run($crate::helpers::Backend::Sqlite, boxed).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::run($crate::helpers::Backend::Postgres, boxed).await
            }
        }
    )*};
}

/// Starts the real `coins serve` binary on a free port against `db_url`; returns the child and
/// its base URL once it is listening. The caller ends it (kill, or SIGTERM for a clean stop).
pub fn start_coins_serve(db_url: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    start_coins_serve_logging(db_url, env, None)
}

/// [`start_coins_serve`], with the server's log (stderr) written to `log` when given.
pub fn start_coins_serve_logging(db_url: &str, env: &[(&str, &str)], log: Option<&std::path::Path>) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(std::env::var("COINS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_coins").to_owned()));
    command.args(["serve", "--listen", "127.0.0.1:0"]).env("COINS_DATABASE_URL", db_url).env("COINS_LOG", "warn");
    command.envs(env.iter().copied()).stdout(std::process::Stdio::piped());
    if let Some(path) = log {
        command.stderr(std::fs::File::create(path).expect("log file"));
    }
    #[allow(clippy::zombie_processes)] // the caller owns the child and waits for it
    let mut child = command.spawn().expect("start coins serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("read server output") > 0, "coins serve exited before listening");
        if let Some(addr) = line.trim().strip_prefix("coins listening on ") {
            let addr = addr.to_owned();
            std::thread::spawn(move || for _ in out.lines() {});
            return (child, addr);
        }
    }
}

/// An access token for `id` from a server this test started ([`start_coins_serve`]).
pub async fn token_at(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let res = http.post(format!("{base}/oauth/token")).basic_auth(id, Some(secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

/// Creates a configuration on a server this test started; it must be accepted.
pub async fn create_config_at(http: &reqwest::Client, base: &str, token: &str, body: Value) {
    let res = http.post(format!("{base}/api/v0/enkash-coins/create-coins-config")).bearer_auth(token).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    assert_eq!(status, 200, "create config: {}", res.text().await.unwrap_or_default());
}

/// The server this test started, ended (by its PID) when the test ends, passing or not.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}
