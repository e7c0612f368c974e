//! Faults the engine must absorb: the database going away (503 + Retry-After, never 500, and
//! recovery without loss), an answer that comes too late (503), and one user whose expiry fails
//! (the sweep skips that user and goes on). PostgreSQL outages are staged with a TCP proxy in
//! front of the real server that the test cuts and restores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coins::app::App;
use coins::clock::{Clock, ShiftedClock};
use coins::config::ServeSettings;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::both_backends;
use crate::helpers::*;

const DAY_MS: i64 = 86_400_000;

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new ones refused).
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let target = target.clone();
                links2.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy { addr, up, links }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.links.lock().await.abort_all();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_with_retry_after_and_recovers_without_loss() {
    let Some(db) = test_db(Backend::Postgres).await else { return };
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let url = db.url.replacen("127.0.0.1:5432", &proxy.addr, 1);
    assert_ne!(url, db.url, "the test database URL must name 127.0.0.1:5432");
    let store = coins::store::open(&url).await.unwrap();
    let mut settings = ServeSettings::for_tests();
    settings.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    let app = App::build(&settings, store.clone(), Arc::new(ShiftedClock::default()) as Arc<dyn Clock>).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let (id, secret) = coins::admin::create_client(&*store, "admin", true, vec![]).await.unwrap();
    let http = reqwest::Client::new();
    let token = http.post(format!("{base}/oauth/token")).basic_auth(&id, Some(&secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    let token = token.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let post = |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send();
    let res = post("/api/v0/enkash-coins/create-coins-config", json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":3})).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let allocation = |rid: &str| json!({"companyId":"C","event":"E","requestId": rid,"userId":"U"});
    assert_eq!(post("/api/v0/enkash-coins/allocate-coin", allocation("BEFORE")).await.unwrap().status().as_u16(), 200);

    proxy.cut().await;
    for (path, body) in [
        ("/api/v0/enkash-coins/allocate-coin", allocation("DURING")),
        ("/api/v0/coins/redeem", json!({"companyId":"C","userId":"U","requestId":"SPEND","coins":1})),
    ] {
        let res = post(path, body).await.unwrap();
        assert_eq!(res.status().as_u16(), 503, "{path}");
        assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"), "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], json!("UNAVAILABLE"), "{path}: {body}");
    }
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let res = http.post(format!("{base}/oauth/token")).basic_auth(&id, Some(&secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 503, "token endpoint during the outage");

    proxy.restore();
    // The same requestId, retried until the database is back: applied exactly once.
    let mut recovered = false;
    for _ in 0..50 {
        let res = post("/api/v0/enkash-coins/allocate-coin", allocation("DURING")).await.unwrap();
        match res.status().as_u16() {
            200 => {
                recovered = true;
                break;
            }
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("during recovery: {other}"),
        }
    }
    assert!(recovered, "no recovery within 10 s");
    let balance = http.get(format!("{base}/api/v0/coins/balance?userId=U")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(balance.json::<serde_json::Value>().await.unwrap()["payload"], json!(6));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let report = db.store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_does_not_come_in_time_is_503_not_a_hang() {
    let mut settings = ServeSettings::for_tests();
    settings.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    settings.request_timeout = Duration::from_secs(1);
    let Some(app) = spawn_app_with(Backend::Postgres, settings).await else { return };
    app.config("DEFAULT", "C", "E", 2).await;
    // Another session holds the users table: the allocation waits for it.
    let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let res = app.allocate(&app.admin_token, "C", "E", "SLOW", "U").await;
    res.assert_error(503, "UNAVAILABLE");
    assert!(res.header("retry-after").is_some());
    client.batch_execute("COMMIT").await.unwrap();
    // The retry with the same requestId is answered once the lock is gone: exactly one credit.
    let mut status = 0;
    for _ in 0..20 {
        status = app.allocate(&app.admin_token, "C", "E", "SLOW", "U").await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(app.balance("U").await, 2);
    app.assert_ledger_consistent().await;
    app.stop().await;
}

/// Another process holds SQLite's write lock (a `sqlite3` shell in a transaction, a backup
/// tool): writes answer 503 with Retry-After once the request timeout passes, never 500 or a
/// hang, and the retry with the same requestId credits exactly once after the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_locked_by_another_process_answers_503_then_recovers() {
    let mut settings = ServeSettings::for_tests();
    settings.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    settings.request_timeout = Duration::from_secs(1);
    let Some(app) = spawn_app_with(Backend::Sqlite, settings).await else { return };
    app.config("DEFAULT", "C", "E", 2).await;
    let other = rusqlite::Connection::open(&app.db.url).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let res = app.allocate(&app.admin_token, "C", "E", "LOCKED", "U").await;
    res.assert_error(503, "UNAVAILABLE");
    assert!(res.header("retry-after").is_some());
    assert_eq!(app.balance("U").await, 0, "reads go on while the file is locked");
    other.execute_batch("ROLLBACK").unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = app.allocate(&app.admin_token, "C", "E", "LOCKED", "U").await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(app.balance("U").await, 2);
    app.assert_ledger_consistent().await;
    app.stop().await;
}

/// Makes writing an EXPIRE entry fail for user BAD, inside the database.
async fn break_expiry_of_bad(app: &TestApp) {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&app.db.url).unwrap();
            conn.execute_batch(
                "CREATE TRIGGER fault_bad BEFORE INSERT ON ledger_entries WHEN NEW.user_id = 'BAD' AND NEW.type = 'EXPIRE' \
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            )
            .unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(
                    "CREATE FUNCTION fault_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF NEW.user_id = 'BAD' AND NEW.type = 'EXPIRE' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END; $$; \
                     CREATE TRIGGER fault_bad BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION fault_bad();",
                )
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
    }
}

both_backends! {
    async fn one_user_whose_expiry_fails_does_not_stop_the_sweep_for_the_others(app: &TestApp) {
        app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":4,"validityDays":1})).await.assert_ok();
        for user in ["BAD", "GOOD1", "GOOD2"] {
            app.allocate(&app.admin_token, "C", "E", &format!("R-{user}"), user).await.assert_ok();
        }
        break_expiry_of_bad(app).await;
        app.clock.advance_ms(2 * DAY_MS);
        let report = app.store().sweep_expired(app.clock.now_ms()).await.expect("the pass goes on");
        assert_eq!((report.lots_expired, report.users_failed), (2, 1));
        for user in ["GOOD1", "GOOD2"] {
            let entries = app.get(&format!("/api/v0/coins/transactions?userId={user}"), &app.admin_token).await;
            assert_eq!(entries.assert_ok()["entries"][0]["type"], json!("EXPIRE"), "{user}");
        }
        // BAD reads as expired all the same: reads never count coins past expiry.
        assert_eq!(app.balance("BAD").await, 0);
    }
}
