//! Several `coins serve` processes on one PostgreSQL: the same request ids sent to
//! three processes at once, for every kind of write, have exactly one effect; a configuration
//! change made through one process is used by the others within 5 s, and a revoked client is
//! refused by all of them within the 10 s token-cache bound; a campaign's per-user limit holds across
//! them for a new member.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

const ADMIN_ID: &str = "multi-admin";
const ADMIN_SECRET: &str = "multi-admin-secret-for-tests";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three `coins serve` processes on one database, ended with the test.
fn three_servers(url: &str, env: &[(&str, &str)]) -> Vec<Server> {
    (0..3)
        .map(|_| {
            let (child, base) = start_coins_serve(url, env);
            Server { child, base }
        })
        .collect()
}

async fn token(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let res = http.post(format!("{base}/oauth/token")).basic_auth(id, Some(secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

async fn post(http: &reqwest::Client, base: &str, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let res = http.post(format!("{base}{path}")).bearer_auth(token).json(body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// Sends the same request to every server at once; the answers, in server order.
async fn at_once(http: &reqwest::Client, servers: &[Server], token: &str, path: &str, body: &Value) -> Vec<(u16, Value)> {
    let handles: Vec<_> = servers
        .iter()
        .map(|s| {
            let (http, base, token, path, body) = (http.clone(), s.base.clone(), token.to_owned(), path.to_owned(), body.clone());
            tokio::spawn(async move { post(&http, &base, &token, &path, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.unwrap());
    }
    answers
}

/// [`at_once`], where every process must give the same answer (the first one's, replayed).
async fn everywhere(http: &reqwest::Client, servers: &[Server], token: &str, path: &str, body: Value) -> (u16, Value) {
    let answers = at_once(http, servers, token, path, &body).await;
    for a in &answers[1..] {
        assert_eq!(a, &answers[0], "{path} {body}: the processes answered differently");
    }
    answers[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_apply_every_request_once_and_see_changes_and_revocations() {
    let Some(db) = test_db(Backend::Postgres).await else { return };
    let env = [("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET)];
    let servers = three_servers(&db.url, &env);
    let http = reqwest::Client::new();
    let admin = token(&http, &servers[0].base, ADMIN_ID, ADMIN_SECRET).await;
    let (status, body) = post(
        &http,
        &servers[0].base,
        &admin,
        "/api/v0/enkash-coins/create-coins-config",
        &json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":10}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let config_id = body["payload"]["coinConfigId"].as_str().unwrap().to_owned();

    // The same request ids to all three at once, every kind of write.
    for i in 0..20 {
        let user = format!("U{}", i % 4);
        let (s, _) = everywhere(
            &http,
            &servers,
            &admin,
            "/api/v0/enkash-coins/allocate-coin",
            json!({"companyId":"C","event":"E","requestId":format!("A{i}"),"userId":user}),
        )
        .await;
        assert_eq!(s, 200);
        if i % 3 == 0 {
            let (s, b) =
                everywhere(&http, &servers, &admin, "/api/v0/coins/redeem", json!({"companyId":"C","userId":user,"requestId":format!("R{i}"),"coins":3})).await;
            assert_eq!(s, 200, "{b}");
        }
        if i % 5 == 0 {
            let (s, b) = everywhere(
                &http,
                &servers,
                &admin,
                "/api/v0/coins/reverse",
                json!({"companyId":"C","requestId":format!("X{i}"),"originalRequestId":format!("A{i}")}),
            )
            .await;
            assert!(s == 200 || b["error_code"] == json!("INSUFFICIENT_BALANCE"), "{b}");
        }
    }
    let items: Vec<Value> = (0..50).map(|i| json!({"companyId":"C","event":"E","requestId":format!("B{i}"),"userId":format!("U{}", i % 4)})).collect();
    let answers = at_once(&http, &servers, &admin, "/api/v0/enkash-coins/allocate-coins", &json!({"allocations": items})).await;
    // Each item is allocated by exactly one process and replayed by the other two.
    for i in 0..50 {
        let statuses: Vec<&str> = answers
            .iter()
            .map(|(s, b)| {
                assert_eq!(*s, 200, "{b}");
                b["payload"]["results"][i]["status"].as_str().unwrap()
            })
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == "ALLOCATED").count(), 1, "item {i}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == "REPLAYED").count(), 2, "item {i}: {statuses:?}");
    }
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let dupes: i64 = client
        .query_one("SELECT COUNT(*) FROM (SELECT request_id FROM ledger_entries WHERE request_id IS NOT NULL GROUP BY request_id HAVING COUNT(*) > 1) d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dupes, 0, "a request id has two ledger entries");
    let allocations: i64 = client.query_one("SELECT COUNT(*) FROM ledger_entries WHERE type = 'ALLOCATE'", &[]).await.unwrap().get(0);
    assert_eq!(allocations, 70);

    // A configuration change through one process: the others credit the new amount within 5 s.
    let res = http.patch(format!("{}/api/v0/enkash-coins/{config_id}", servers[0].base)).bearer_auth(&admin).json(&json!({"amount": 7})).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let started = Instant::now();
    for (n, server) in servers.iter().enumerate().skip(1) {
        loop {
            let rid = format!("CHANGE-{n}-{}", started.elapsed().as_millis());
            let (s, _) =
                post(&http, &server.base, &admin, "/api/v0/enkash-coins/allocate-coin", &json!({"companyId":"C","event":"E","requestId":rid,"userId":"CHG"}))
                    .await;
            assert_eq!(s, 200);
            let credited: i64 = client.query_one("SELECT coins FROM ledger_entries WHERE request_id = $1", &[&rid]).await.unwrap().get(0);
            if credited == 7 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "process {n} still credits the old amount after 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("configuration change seen by every process after {:?}", started.elapsed());

    // A revocation (made with the CLI, as operators do) reaches every process within 10 s.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coins"))
        .args(["client", "create", "--name", "doomed", "--company", "C"])
        .env("COINS_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| printed.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_owned();
    let (id, secret) = (field("client_id:"), field("client_secret:"));
    let doomed = token(&http, &servers[1].base, &id, &secret).await;
    for server in &servers {
        let res = http.get(format!("{}/api/v0/coins/balance?userId=U0", server.base)).bearer_auth(&doomed).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "a fresh token works everywhere first");
    }
    let revoked = std::process::Command::new(env!("CARGO_BIN_EXE_coins")).args(["client", "revoke", &id]).env("COINS_DATABASE_URL", &db.url).status().unwrap();
    assert!(revoked.success());
    let started = Instant::now();
    for (n, server) in servers.iter().enumerate() {
        loop {
            let res = http.get(format!("{}/api/v0/coins/balance?userId=U0", server.base)).bearer_auth(&doomed).send().await.unwrap();
            if res.status().as_u16() == 401 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(11), "process {n} still accepts a revoked client after 11 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("revocation seen by every process after {:?}", started.elapsed());
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_coins")).arg("verify").env("COINS_DATABASE_URL", &db.url).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// A till retrying one order under new request ids, each retry reaching another process at the
/// same instant: every order is credited once (one process allocates, the others answer as
/// replays), the unique index on live orders deciding across processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_retried_through_three_processes_at_once_is_credited_once() {
    let Some(db) = test_db(Backend::Postgres).await else { return };
    let env = [("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET)];
    let servers = three_servers(&db.url, &env);
    let http = reqwest::Client::new();
    let admin = token(&http, &servers[0].base, ADMIN_ID, ADMIN_SECRET).await;
    let config = json!({"configuration":"DEFAULT","companyId":"C","event":"BUY","amountType":"PERCENT","rateBps":500});
    let (status, body) = post(&http, &servers[0].base, &admin, "/api/v0/enkash-coins/create-coins-config", &config).await;
    assert_eq!(status, 200, "{body}");
    for order in 0..10 {
        let handles: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let body = json!({"companyId":"C","event":"BUY","requestId":format!("O{order}-TRY{n}"),"userId":"U","orderId":format!("O{order}"),"amountMinor":20000});
                let (http, base, token) = (http.clone(), s.base.clone(), admin.clone());
                tokio::spawn(async move {
                    let res = http.post(format!("{base}/api/v0/enkash-coins/allocate-coin")).bearer_auth(token).json(&body).send().await.unwrap();
                    (res.status().as_u16(), res.headers().get("idempotent-replayed").is_some())
                })
            })
            .collect();
        let mut replays = 0;
        for h in handles {
            let (status, replayed) = h.await.unwrap();
            assert_eq!(status, 200);
            replays += usize::from(replayed);
        }
        assert_eq!(replays, 2, "order {order}: one process credits, two replay");
    }
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("SELECT COUNT(*), COALESCE(SUM(coins), 0)::BIGINT FROM ledger_entries WHERE type = 'ALLOCATE'", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (10, 100), "ten orders of 10 coins each, once");
    let aliases: i64 = client.query_one("SELECT COUNT(*) FROM requests WHERE alias_of IS NOT NULL", &[]).await.unwrap().get(0);
    assert_eq!(aliases, 20);
}

/// A campaign's per-user limit across three processes: 30 first allocations of one new member,
/// ten through each process at once, and exactly the limit of them get the campaign (each process
/// counts the member's triggers after locking her row, and the loser of the race to open her
/// account starts again and sees the winner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_limit_holds_across_three_processes_for_a_new_member() {
    let Some(db) = test_db(Backend::Postgres).await else { return };
    let env = [("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET)];
    let servers = three_servers(&db.url, &env);
    let http = reqwest::Client::new();
    let admin = token(&http, &servers[0].base, ADMIN_ID, ADMIN_SECRET).await;
    let config = json!({"configuration":"DEFAULT","companyId":"C","event":"BUY","amount":10});
    let (status, body) = post(&http, &servers[0].base, &admin, "/api/v0/enkash-coins/create-coins-config", &config).await;
    assert_eq!(status, 200, "{body}");
    let now = coins::clock::system_now_ms();
    let campaign = json!({"companyId":"C","name":"first three","startsAt":coins::clock::rfc3339(now - 60_000),
                          "endsAt":coins::clock::rfc3339(now + 86_400_000),"bonusCoins":5,"maxTriggersPerUser":3});
    let (status, body) = post(&http, &servers[1].base, &admin, "/api/v0/coins/campaigns", &campaign).await;
    assert_eq!(status, 200, "{body}");
    // Every process sees the campaign (its notification, or the cache's 4 s bound).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (http, base, token) = (http.clone(), servers[i % 3].base.clone(), admin.clone());
        calls.spawn(async move {
            let body = json!({"companyId":"C","event":"BUY","requestId":format!("R{i}"),"userId":"NEW"});
            let res = http.post(format!("{base}/api/v0/enkash-coins/allocate-coin")).bearer_auth(token).json(&body).send().await.unwrap();
            res.status().as_u16()
        });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT COUNT(*) FILTER (WHERE coins = 15), COUNT(*) FILTER (WHERE coins = 10) FROM ledger_entries WHERE type = 'ALLOCATE'", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 27), "three with the +5, the rest without");
    let named: i64 = client.query_one("SELECT COUNT(*) FROM requests WHERE campaign_id IS NOT NULL", &[]).await.unwrap().get(0);
    assert_eq!(named, 3);
}
