//! Hot-path caches across processes on one PostgreSQL database (issue #4): a configuration change
//! takes effect at once in the process that made it and within 5 s in every other one; another
//! process's balance change is seen by the next read once its notification arrives; while the
//! listening connection is down the caches are off, so nothing stale is served.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

/// The other process: the real binary on the same database.
struct Peer {
    child: Child,
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Peer {
    fn start(db_url: &str, token: &str) -> Peer {
        let (child, base) = start_coins_serve(db_url, &[]);
        Peer { child, base, http: reqwest::Client::new(), token: token.to_owned() }
    }

    async fn allocate(&self, request_id: &str, user: &str) -> (u16, Value) {
        let body = json!({"companyId": "C", "event": "E", "requestId": request_id, "userId": user});
        let res = self.http.post(format!("{}/api/v0/enkash-coins/allocate-coin", self.base)).bearer_auth(&self.token).json(&body).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// A purchase of 500.00 on event BUY under `request_id`; the status.
    async fn buy(&self, request_id: &str) -> u16 {
        let body = json!({"companyId": "C", "event": "BUY", "requestId": request_id, "userId": "U", "amountMinor": 50000});
        let res = self.http.post(format!("{}/api/v0/enkash-coins/allocate-coin", self.base)).bearer_auth(&self.token).json(&body).send().await.unwrap();
        res.status().as_u16()
    }

    async fn balance(&self, user: &str) -> i64 {
        let res = self.http.get(format!("{}/api/v0/coins/balance?userId={user}", self.base)).bearer_auth(&self.token).send().await.unwrap();
        res.json::<Value>().await.unwrap()["payload"].as_i64().unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 20 ms until it holds; returns how long that took, or panics after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_balance_changes_reach_every_process() {
    let Some(app) = spawn_app(Backend::Postgres).await else { return };
    let peer = Peer::start(&app.db.url, &app.admin_token);
    let id = app.config("DEFAULT", "C", "E", 5).await;

    // The peer resolves (and caches) the configuration; this process caches the balance.
    assert_eq!(peer.allocate("R1", "U").await.0, 200);
    assert_eq!(app.balance("U").await, 5);
    assert_eq!(peer.allocate("R2", "U").await.0, 200);
    let seen = within(Duration::from_secs(2), "the peer's credit in this process's balance", || async { app.balance("U").await == 10 }).await;
    eprintln!("another process's balance change seen after {seen:?}");

    // Deactivated here: at once here, within 5 s there.
    app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"active": false})).await.assert_ok();
    app.allocate(&app.admin_token, "C", "E", "R3", "U").await.assert_error(404, "COIN_CONFIG_NOT_FOUND");
    let mut n = 0;
    let seen = within(Duration::from_secs(5), "deactivation in the peer", || {
        n += 1;
        let request_id = format!("R4-{n}");
        let peer = &peer;
        async move { peer.allocate(&request_id, "U").await.0 == 404 }
    })
    .await;
    eprintln!("configuration change seen by the other process after {seen:?}");

    // Re-activated with a new amount: the peer credits the new amount once it sees the change.
    app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"active": true, "amount": 7})).await.assert_ok();
    let mut n = 0;
    within(Duration::from_secs(5), "re-activation in the peer", || {
        n += 1;
        let request_id = format!("R5-{n}");
        let peer = &peer;
        async move { peer.allocate(&request_id, "U").await.0 == 200 }
    })
    .await;
    assert_eq!(peer.balance("U").await, 17, "5 + 5 + the new amount 7, refused attempts credit nothing");
    assert_eq!(app.balance("U").await, 17);
    app.assert_ledger_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_listener_is_down_nothing_stale_is_served() {
    let Some(app) = spawn_app(Backend::Postgres).await else { return };
    let peer = Peer::start(&app.db.url, &app.admin_token);
    app.config("DEFAULT", "C", "E", 5).await;
    assert_eq!(peer.allocate("R1", "U").await.0, 200);
    assert_eq!(app.balance("U").await, 5);
    // Cut every cache listener on this database (both processes'); notifications sent now are lost.
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let cut = client.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'coins-cache-listener'", &[]).await.unwrap();
    assert!(cut.len() >= 2, "both processes listen ({} listeners found)", cut.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(peer.allocate("R2", "U").await.0, 200);
    assert_eq!(app.balance("U").await, 10, "read from the database while the listener is down");
    // Listening resumes (about a second later) and caching is correct again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(app.balance("U").await, 10);
    assert_eq!(peer.allocate("R3", "U").await.0, 200);
    within(Duration::from_secs(2), "the credit after listening resumed", || async { app.balance("U").await == 15 }).await;
}

/// A coin value is cached with the configuration; its change reaches another process by the
/// configuration notification, well before the 4 s after which the cache would read it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coin_value_change_reaches_every_process() {
    let Some(app) = spawn_app(Backend::Postgres).await else { return };
    let peer = Peer::start(&app.db.url, &app.admin_token);
    let config = json!({"configuration":"DEFAULT","companyId":"C","event":"BUY","amountType":"PERCENT","rateBps":200});
    app.create_config(&app.admin_token, config).await.assert_ok();
    let minor_units = |request_id: String| {
        let app = &app;
        async move {
            let record = app.get(&format!("/api/v0/coins/allocations/{request_id}?companyId=C"), &app.admin_token).await.assert_ok().clone();
            record["calculation"]["minorUnitsPerCoin"].as_i64().unwrap()
        }
    };
    // The peer resolves (and caches) BUY with the built-in value: 100 minor units a coin.
    assert_eq!(peer.buy("R1").await, 200);
    assert_eq!(minor_units("R1".into()).await, 100);

    // The installation's value changes here (company C has none of its own).
    let body = json!({"companyId": null, "currency": "INR", "minorUnitsPerCoin": 50});
    app.send(reqwest::Method::PUT, "/api/v0/coins/coin-value", Some(&app.admin_token), Some(&body)).await.assert_ok();
    let mut n = 0;
    let seen = within(Duration::from_secs(2), "the new coin value in the peer", || {
        n += 1;
        let request_id = format!("R2-{n}");
        let peer = &peer;
        let minor_units = &minor_units;
        async move {
            assert_eq!(peer.buy(&request_id).await, 200);
            minor_units(request_id).await == 50
        }
    })
    .await;
    eprintln!("coin value change seen by the other process after {seen:?}");
    app.assert_ledger_consistent().await;
}
