//! Expiry reminders on both backends: the lead-time settings (exact shapes, every refusal,
//! scoping), and the `coins.expiring` events a sweeper pass sends, received by the signature-
//! checking receiver: once per (user, expiry instant, lead time), only the shortest lead time
//! due, counting only unspent spendable coins, with a `webhook-id` derived from the reminder and
//! shown and retried by the delivery log. Then the real binary SIGKILLed between sweeps: a
//! reminder already sent is not sent again, and one queued but undelivered goes out once.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use coins::clock::Clock;

use crate::both_backends;
use crate::helpers::*;
use crate::webhooks::{Receiver, first_deliveries};

const REMINDERS: &str = "/api/v0/coins/reminders";
const DAY_MS: i64 = 86_400_000;

fn settings_answer(company: &str, days: &str) -> String {
    format!(r#"{{"payload":{{"companyId":"{company}","expiryReminderDays":{days}}},"response_code":0,"response_message":"Success"}}"#)
}

async fn credit(app: &TestApp, user: &str, request_id: &str, coins: i64, extra: Value) {
    let mut body = json!({"companyId":"SHOP","userId":user,"requestId":request_id,"coins":coins,"reason":"Imported balance"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.post("/api/v0/coins/adjust", &app.admin_token, body).await.assert_ok();
}

/// A webhook of SHOP for `coins.expiring` at the receiver; its id.
async fn subscribe(app: &TestApp, rx: &Receiver) -> String {
    let res = app.post("/api/v0/coins/webhooks", &app.admin_token, json!({"companyId":"SHOP","url":rx.url(),"events":["coins.expiring"]})).await;
    let p = res.assert_ok();
    rx.set_secrets(&[p["secret"].as_str().unwrap()]);
    p["webhookId"].as_str().unwrap().to_owned()
}

async fn pass(app: &TestApp) -> u64 {
    let report = coins::store::reminders::remind(app.store(), app.clock.now_ms()).await.expect("a reminder pass");
    assert!(!report.more);
    report.sent
}

/// A reminder as received: `(userId, coins, expiresAt, daysLeft)`.
type Got = (String, i64, String, i64);

/// The reminders received so far, sorted, with the `webhook-id` of every delivery.
fn received(rx: &Receiver) -> (Vec<Got>, Vec<String>) {
    let records = rx.records();
    let ids = records.iter().filter(|r| r["status"] == 200).map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let mut got: Vec<_> = first_deliveries(&records)
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "coins.expiring");
            let d = &e["data"];
            let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["coins", "daysLeft", "expiresAt", "userId"], "{e}");
            (
                d["userId"].as_str().unwrap().to_owned(),
                d["coins"].as_i64().unwrap(),
                d["expiresAt"].as_str().unwrap().to_owned(),
                d["daysLeft"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    (got, ids)
}

async fn wait_received(rx: &Receiver, n: usize) -> (Vec<Got>, Vec<String>) {
    rx.wait_for("reminders", Duration::from_secs(20), |r| first_deliveries(r).len() >= n).await;
    received(rx)
}

/// The test app's own sweeper out of the way: only the test's passes send.
fn no_sweeper() -> coins::config::ServeSettings {
    let mut s = coins::config::ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.sweep_interval = Duration::from_secs(86_400);
    s
}

/// As [`no_sweeper`], with failed deliveries retried every 100 ms.
fn no_sweeper_quick_retries() -> coins::config::ServeSettings {
    let mut s = no_sweeper();
    s.webhooks.retry.delays_ms = vec![100; 1_000];
    s
}

async fn put_leads(app: &TestApp, days: Value) {
    app.send(reqwest::Method::PUT, REMINDERS, Some(&app.admin_token), Some(&json!({"companyId":"SHOP","expiryReminderDays":days}))).await.assert_ok();
}

/// How many reminders the database recorded.
async fn recorded(app: &TestApp) -> i64 {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&app.db.url).unwrap();
            conn.query_row("SELECT COUNT(*) FROM expiry_reminders", [], |r| r.get(0)).unwrap()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query_one("SELECT COUNT(*) FROM expiry_reminders", &[]).await.unwrap().get(0)
        }
    }
}

both_backends! {
    settings = no_sweeper_quick_retries;

    async fn a_reminder_that_could_not_be_delivered_before_the_coins_expired_is_withdrawn(app: &TestApp) {
        let Some(mut rx) = Receiver::start() else { return };
        let webhook = subscribe(app, &rx).await;
        let expiry = coins::clock::rfc3339(app.clock.now_ms() + DAY_MS / 2);
        credit(app, "ASHA", "IMP-1", 40, json!({"expiresAt": expiry})).await;
        put_leads(app, json!([1])).await;
        // The endpoint is down when the reminder goes out, and stays down past the expiry.
        rx.stop();
        assert_eq!(pass(app).await, 1);
        let attempts_of = || async {
            let res = app.get(&format!("/api/v0/coins/webhooks/{webhook}/deliveries"), &app.admin_token).await;
            res.assert_ok()["attempts"].as_array().unwrap().clone()
        };
        let started = Instant::now();
        while attempts_of().await.len() < 2 {
            assert!(started.elapsed() < Duration::from_secs(20), "no failed attempts");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.clock.advance_ms(DAY_MS);
        rx.restart();
        // The next attempt finds the coins expired: not sent, the event fails for good.
        let started = Instant::now();
        let attempts = loop {
            let attempts = attempts_of().await;
            if attempts[0]["eventStatus"] == "failed" {
                break attempts;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never withdrawn: {attempts:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let last = &attempts[0];
        assert_eq!((&last["status"], &last["httpCode"], &last["nextAttemptAt"]), (&json!("failed"), &Value::Null, &Value::Null));
        assert_eq!(last["responseExcerpt"], "not sent: the coins expired before the reminder could be delivered");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(rx.records().iter().all(|r| r["status"] != 200), "the withdrawn reminder never arrives: {:#?}", rx.records());
        // The endpoint is not held to account for it: it is still enabled.
        let hook = app.get(&format!("/api/v0/coins/webhooks/{webhook}"), &app.admin_token).await;
        assert_eq!(hook.assert_ok()["enabled"], json!(true));
    }
}

both_backends! {
    settings = no_sweeper;

    async fn lead_times_are_validated_scoped_and_replaced(app: &TestApp) {
        let get = |company: &'static str| async move { app.get(&format!("{REMINDERS}?companyId={company}"), &app.admin_token).await };
        assert_eq!(get("SHOP").await.text, settings_answer("SHOP", "[]"), "never set: off");
        let set = app.send(reqwest::Method::PUT, REMINDERS, Some(&app.admin_token), Some(&json!({"companyId":"SHOP","expiryReminderDays":[1,30,7]}))).await;
        assert_eq!(set.text, settings_answer("SHOP", "[30,7,1]"), "kept longest first");
        assert_eq!(get("SHOP").await.text, settings_answer("SHOP", "[30,7,1]"));
        for (days, says) in [
            (json!([30, 7, 1, 2]), "expiryReminderDays holds at most 3 values"),
            (json!([7, 7]), "expiryReminderDays repeats 7"),
            (json!([0]), "expiryReminderDays values must be whole days from 1 to 365"),
            (json!([366]), "expiryReminderDays values must be whole days from 1 to 365"),
            (json!([7.5]), "expiryReminderDays must be a list of at most 3 whole numbers of days from 1 to 365, such as [30, 7, 1]"),
            (json!(["7"]), "expiryReminderDays must be a list of at most 3 whole numbers of days from 1 to 365, such as [30, 7, 1]"),
            (json!(7), "expiryReminderDays must be a list of at most 3 whole numbers of days from 1 to 365, such as [30, 7, 1]"),
            (Value::Null, "expiryReminderDays must be a list of at most 3 whole numbers of days from 1 to 365, such as [30, 7, 1]"),
        ] {
            let res = app.send(reqwest::Method::PUT, REMINDERS, Some(&app.admin_token), Some(&json!({"companyId":"SHOP","expiryReminderDays":days}))).await;
            assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), says, "{days}");
        }
        let res = app.send(reqwest::Method::PUT, REMINDERS, Some(&app.admin_token), Some(&json!({"expiryReminderDays":[7]}))).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "companyId is required");
        assert_eq!(app.get(REMINDERS, &app.admin_token).await.assert_error(400, "VALIDATION_FAILED"), "companyId is required");
        // Another company's client can neither read nor set them.
        let other = app.company_token(&["OTHER"]).await;
        app.get(&format!("{REMINDERS}?companyId=SHOP"), &other).await.assert_error(403, "FORBIDDEN");
        let res = app.send(reqwest::Method::PUT, REMINDERS, Some(&other), Some(&json!({"companyId":"SHOP","expiryReminderDays":[]}))).await;
        res.assert_error(403, "FORBIDDEN");
        // Its own company's client can; `[]` turns them off.
        let own = app.company_token(&["SHOP"]).await;
        let off = app.send(reqwest::Method::PUT, REMINDERS, Some(&own), Some(&json!({"companyId":"SHOP","expiryReminderDays":[]}))).await;
        assert_eq!(off.text, settings_answer("SHOP", "[]"));
        assert_eq!(get("SHOP").await.text, settings_answer("SHOP", "[]"));
        app.assert_ledger_consistent().await;
    }

    async fn each_reminder_goes_out_once_the_shortest_due_with_the_unspent_coins(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        let webhook = subscribe(app, &rx).await;
        let t0 = app.clock.now_ms();
        let at = |ms: i64| coins::clock::rfc3339(ms);
        // ASHA: 150 coins in two lots expiring at one instant, 20 days away, and 40 that never
        // expire; BEN: 70 coins 40 days away; CHI: 90 held coins (their expiry is not final).
        let asha_expiry = t0 + 20 * DAY_MS;
        let ben_expiry = t0 + 40 * DAY_MS;
        credit(app, "ASHA", "A-1", 100, json!({"expiresAt": at(asha_expiry)})).await;
        credit(app, "ASHA", "A-2", 50, json!({"expiresAt": at(asha_expiry)})).await;
        credit(app, "ASHA", "A-3", 40, json!({})).await;
        credit(app, "BEN", "B-1", 70, json!({"expiresAt": at(ben_expiry)})).await;
        credit(app, "CHI", "C-1", 90, json!({"pendingDays": 60, "validityDays": 5})).await;
        assert_eq!(pass(app).await, 0, "no lead times set: nothing is sent");
        app.send(reqwest::Method::PUT, REMINDERS, Some(&app.admin_token), Some(&json!({"companyId":"SHOP","expiryReminderDays":[30,7,1]}))).await.assert_ok();

        // Turning the lead times on considers every expiry within reach: ASHA's 30-day reminder.
        assert_eq!(pass(app).await, 1);
        let (got, ids) = wait_received(&rx, 1).await;
        assert_eq!(got, [("ASHA".to_owned(), 150, at(asha_expiry), 20)]);
        assert!(ids[0].starts_with("msg_exp_") && ids[0].len() == 40, "{ids:?}");
        assert_eq!(pass(app).await, 0, "a second pass sends nothing");

        // ASHA spends 120: the soonest-expiring coins go first, 30 of them remain.
        let spent = app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"SHOP","userId":"ASHA","requestId":"R-1","coins":120})).await;
        spent.assert_ok();
        // 14 days on: ASHA has 6 days left (the 7-day reminder, not the 30-day one again), BEN 26
        // (the 30-day one).
        app.clock.advance_ms(14 * DAY_MS);
        assert_eq!(pass(app).await, 2);
        let (got, _) = wait_received(&rx, 3).await;
        assert_eq!(got, [("ASHA".to_owned(), 30, at(asha_expiry), 6), ("ASHA".to_owned(), 150, at(asha_expiry), 20), ("BEN".to_owned(), 70, at(ben_expiry), 26)]);
        // 5½ days on: half a day left for ASHA, the 1-day reminder.
        app.clock.advance_ms(5 * DAY_MS + DAY_MS / 2);
        assert_eq!(pass(app).await, 1);
        let (got, ids) = wait_received(&rx, 4).await;
        assert!(got.contains(&("ASHA".to_owned(), 30, at(asha_expiry), 1)), "{got:?}");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4, "four webhook-ids: {ids:?}");
        // Past ASHA's expiry, nothing more for her; BEN's 7-day and 1-day reminders come in turn,
        // and CHI's held coins were never announced.
        app.clock.advance_ms(DAY_MS);
        app.store().sweep_expired(app.clock.now_ms()).await.unwrap();
        assert_eq!(pass(app).await, 0);
        app.clock.advance_ms(13 * DAY_MS);
        assert_eq!(pass(app).await, 1);
        app.clock.advance_ms(6 * DAY_MS);
        assert_eq!(pass(app).await, 1);
        let (got, ids) = wait_received(&rx, 6).await;
        let ben: Vec<_> = got.iter().filter(|g| g.0 == "BEN").map(|g| g.3).collect();
        assert_eq!(ben, [1, 7, 26], "{got:?}");
        assert!(got.iter().all(|g| g.0 != "CHI"), "{got:?}");
        // Delivery is at least once (moving the clock ends the lease of a delivery in flight), so
        // a receiver may see an id twice; six reminders, six ids.
        let ids: Vec<String> = ids.iter().fold(Vec::new(), |mut v, id| {
            if !v.contains(id) {
                v.push(id.clone());
            }
            v
        });
        assert_eq!(ids.len(), 6, "each sent exactly once: {ids:?}");

        // The delivery log names each by its webhook-id, and retrying one sends it again, same id.
        let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let started = Instant::now();
        let attempts = loop {
            let log = app.get(&format!("/api/v0/coins/webhooks/{webhook}/deliveries"), &app.admin_token).await;
            let attempts = log.assert_ok()["attempts"].as_array().unwrap().clone();
            let logged: HashSet<&str> = attempts.iter().map(|a| a["messageId"].as_str().unwrap()).collect();
            if logged == want {
                break attempts;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the log shows {logged:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(attempts.iter().all(|a| a["eventType"] == "coins.expiring" && a["entryId"].is_null()), "{attempts:#?}");
        // BEN's last reminder (his coins expire in half a day) goes out again; ASHA's first one,
        // whose coins have expired since, is withdrawn instead of sent.
        let (live, lapsed) = (ids.last().unwrap(), &ids[0]);
        let retried = app.post(&format!("/api/v0/coins/webhooks/{webhook}/deliveries/{live}/retry"), &app.admin_token, json!({})).await;
        assert_eq!(retried.assert_ok()["messageId"], live.as_str());
        let before = rx.records().iter().filter(|x| x["id"] == live.as_str()).count();
        rx.wait_for("the retried reminder", Duration::from_secs(20), |r| r.iter().filter(|x| x["id"] == live.as_str()).count() > before).await;
        let arrived = rx.records().len();
        app.post(&format!("/api/v0/coins/webhooks/{webhook}/deliveries/{lapsed}/retry"), &app.admin_token, json!({})).await.assert_ok();
        // Its attempt is looked for among all of them, not as the newest: the retried live
        // reminder's attempt may be recorded after it (outcomes are recorded in batches).
        let started = Instant::now();
        loop {
            let res = app.get(&format!("/api/v0/coins/webhooks/{webhook}/deliveries"), &app.admin_token).await;
            let attempts = res.assert_ok()["attempts"].as_array().unwrap().clone();
            let tries: Vec<&Value> = attempts.iter().filter(|a| a["messageId"] == lapsed.as_str()).collect();
            if tries.len() > 1 {
                let withdrawn = tries[0];
                assert_eq!((&withdrawn["status"], &withdrawn["httpCode"]), (&json!("failed"), &Value::Null), "{withdrawn}");
                assert_eq!(withdrawn["responseExcerpt"], "not sent: the coins expired before the reminder could be delivered");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the lapsed reminder was never attempted again: {tries:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rx.records().len(), arrived, "nothing more arrived");
        let unknown = app.post(&format!("/api/v0/coins/webhooks/{webhook}/deliveries/msg_exp_{}/retry", "0".repeat(32)), &app.admin_token, json!({})).await;
        unknown.assert_error(404, "MESSAGE_NOT_FOUND");
        app.assert_ledger_consistent().await;
    }

    async fn reminders_wait_for_an_endpoint_and_page_through_many_users_at_one_instant(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        let expiry = coins::clock::rfc3339(app.clock.now_ms() + 3 * DAY_MS);
        // 1,001 members whose imported coins all expire at one instant: three pages.
        for n in 0..1_001 {
            credit(app, &format!("M{n:04}"), &format!("IMP-{n}"), 10 + n, json!({"expiresAt": expiry})).await;
        }
        put_leads(app, json!([7])).await;
        // No endpoint for coins.expiring yet (one for other events does not count): nothing is
        // recorded, nothing is lost.
        let other = app.post("/api/v0/coins/webhooks", &app.admin_token, json!({"companyId":"SHOP","url":rx.url(),"events":["coins.allocated"]})).await;
        other.assert_ok();
        assert_eq!(pass(app).await, 0);
        assert_eq!(recorded(app).await, 0);
        let webhook = subscribe(app, &rx).await;
        let mut sent = Vec::new();
        loop {
            let report = coins::store::reminders::remind(app.store(), app.clock.now_ms()).await.unwrap();
            sent.push(report.sent);
            if !report.more {
                break;
            }
        }
        assert_eq!(sent, [500, 500, 1], "three pages, each member once");
        assert_eq!(recorded(app).await, 1_001);
        assert_eq!(pass(app).await, 0);
        let records = rx.wait_for("1,001 reminders", Duration::from_secs(60), |r| first_deliveries(r).len() >= 1_001).await;
        let users: HashSet<String> = first_deliveries(&records).iter().map(|e| e["data"]["userId"].as_str().unwrap().to_owned()).collect();
        assert_eq!(users.len(), 1_001);
        let last = first_deliveries(&records).into_iter().find(|e| e["data"]["userId"] == "M1000").unwrap();
        assert_eq!(last["data"], json!({"userId":"M1000","coins":1010,"expiresAt":expiry,"daysLeft":3}));
        // A reminder's message is named by its key only: its sequence number does not reach it.
        let log = app.get(&format!("/api/v0/coins/webhooks/{webhook}/deliveries?limit=1"), &app.admin_token).await;
        assert!(log.assert_ok()["attempts"][0]["messageId"].as_str().unwrap().starts_with("msg_exp_"));
        for seq in 1..=3 {
            let res = app.post(&format!("/api/v0/coins/webhooks/{webhook}/deliveries/msg_{seq}/retry"), &app.admin_token, json!({})).await;
            res.assert_error(404, "MESSAGE_NOT_FOUND");
        }
        app.assert_ledger_consistent().await;
    }
}

/// A `coins serve` child sweeping every second, `offset_days` ahead of the real clock, with an
/// admin token.
struct Server {
    server: crate::webhooks::Server,
    token: String,
}

impl Server {
    async fn start(url: &str, offset_days: i64) -> Self {
        let offset = (offset_days * 86_400).to_string();
        let server = crate::webhooks::serve(url, &[("COINS_SWEEP_INTERVAL_SECS", "1"), ("COINS_CLOCK_OFFSET_SECS", offset.as_str())]);
        let token = crate::webhooks::admin_token(&reqwest::Client::new(), &server.base).await;
        Self { server, token }
    }

    fn kill(mut self) {
        assert!(Command::new("kill").args(["-KILL", &self.server.child.id().to_string()]).status().unwrap().success());
        let _ = self.server.child.wait();
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        crate::webhooks::call(&reqwest::Client::new(), &self.server.base, &self.token, method, path, body).await
    }
}

async fn a_reminder_survives_sigkills_between_sweeps_and_is_sent_once(backend: Backend) {
    let Some(mut rx) = Receiver::start() else { return };
    let Some(db) = test_db(backend).await else { return };
    let post = reqwest::Method::POST;
    let server = Server::start(&db.url, 0).await;
    let hook = server.call(post.clone(), "/api/v0/coins/webhooks", Some(json!({"companyId":"SHOP","url":rx.url(),"events":["coins.expiring"]}))).await;
    rx.set_secrets(&[hook["secret"].as_str().unwrap()]);
    // Coins expiring in 3½ days, reminders 7 and 1 days before.
    let expires = coins::clock::system_now_ms() + 3 * DAY_MS + DAY_MS / 2;
    let body = json!({"companyId":"SHOP","userId":"ASHA","requestId":"IMPORT-1","coins":80,"reason":"Imported","expiresAt":coins::clock::rfc3339(expires)});
    server.call(post.clone(), "/api/v0/coins/adjust", Some(body)).await;
    server.call(reqwest::Method::PUT, REMINDERS, Some(json!({"companyId":"SHOP","expiryReminderDays":[7,1]}))).await;
    let records = rx.wait_for("the 7-day reminder", Duration::from_secs(20), |r| !first_deliveries(r).is_empty()).await;
    let first = first_deliveries(&records);
    assert_eq!(first[0]["data"], json!({"userId":"ASHA","coins":80,"expiresAt":coins::clock::rfc3339(expires),"daysLeft":4}));
    let id = records.iter().find(|r| r["status"] == 200).unwrap()["id"].clone();
    // Wait until the delivery is on record, then SIGKILL between sweeps; a new process sweeps
    // for three seconds and sends nothing again.
    let started = Instant::now();
    loop {
        let log = server.call(reqwest::Method::GET, &format!("/api/v0/coins/webhooks/{}/deliveries", hook["webhookId"].as_str().unwrap()), None).await;
        if log["attempts"].as_array().unwrap().iter().any(|a| a["eventStatus"] == "delivered") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never recorded as delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    let server = Server::start(&db.url, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.records().len(), 1, "sent once across the restart: {:#?}", rx.records());
    // The receiver goes down; 3 days on, the 1-day reminder is queued, not delivered, and the
    // process is SIGKILLed again. The next one delivers it, once.
    rx.stop();
    server.kill();
    let server = Server::start(&db.url, 3).await;
    let started = Instant::now();
    loop {
        let log = server.call(reqwest::Method::GET, &format!("/api/v0/coins/webhooks/{}/deliveries", hook["webhookId"].as_str().unwrap()), None).await;
        if log["attempts"].as_array().unwrap().len() >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the 1-day reminder was never attempted: {log:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    rx.restart();
    let server = Server::start(&db.url, 3).await;
    rx.wait_for("the 1-day reminder", Duration::from_secs(30), |r| first_deliveries(r).len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = rx.records().into_iter().filter(|r| r["status"] == 200).collect::<Vec<_>>();
    let ids: Vec<&Value> = records.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids.len(), 2, "each reminder delivered once: {records:#?}");
    assert_eq!(ids[0], &id);
    assert_ne!(ids[1], &id);
    let second = first_deliveries(&records);
    assert_eq!(second[1]["data"], json!({"userId":"ASHA","coins":80,"expiresAt":coins::clock::rfc3339(expires),"daysLeft":1}));
    drop(server);
    eprintln!("reminders across SIGKILLs ({backend:?}): 2 sent, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_survives_sigkills_between_sweeps_and_is_sent_once_on_sqlite() {
    a_reminder_survives_sigkills_between_sweeps_and_is_sent_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_survives_sigkills_between_sweeps_and_is_sent_once_on_postgres() {
    a_reminder_survives_sigkills_between_sweeps_and_is_sent_once(Backend::Postgres).await;
}
