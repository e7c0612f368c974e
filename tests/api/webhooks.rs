//! Webhooks, against a real receiver on 127.0.0.1 (`tests/webhooks/receiver.py`)
//! that verifies every signature with the `standardwebhooks` package from PyPI, an implementation
//! independent of ours: the subscription API and its scoping, the exact body of every event kind,
//! per-user order, a receiver that is down for a while, backoff, failure and disabling driven by
//! the clock, bulk allocations, a server SIGKILLed mid-delivery, and three processes sharing one
//! PostgreSQL outbox. Needs python3 with `standardwebhooks` (`.ci/run` installs it); outside CI its
//! absence skips, loudly.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const HOOKS: &str = "/api/v0/coins/webhooks";
const ALL_EVENTS: [&str; 5] = ["coins.allocated", "coins.redeemed", "coins.reversed", "coins.expired", "coins.adjusted"];
const DAY_MS: i64 = 86_400_000;

/// The Python receiver, as a child process with its files in a directory of its own.
pub struct Receiver {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Receiver {
    /// `None` (loudly) when python3 with `standardwebhooks` is missing outside CI.
    pub fn start() -> Option<Self> {
        let ok = Command::new("python3").args(["-c", "import standardwebhooks"]).output().is_ok_and(|o| o.status.success());
        if !ok {
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "python3 with standardwebhooks is missing; CI must run the webhook tests");
            eprintln!("\n!!! SKIPPED: python3 -m pip install standardwebhooks to run the webhook tests !!!\n");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("coins-receiver-{}", hex::encode(coins::crypto::random_bytes::<6>())));
        std::fs::create_dir_all(&dir).unwrap();
        let mut receiver = Self { child: None, port: 0, dir };
        receiver.launch();
        Some(receiver)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn launch(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .args([self.path("log"), self.path("secrets"), self.path("mode")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        self.port = line.trim().strip_prefix("listening on ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("receiver said {line:?}"));
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/coins", self.port)
    }

    pub fn set_secrets(&self, secrets: &[&str]) {
        std::fs::write(self.path("secrets"), serde_json::to_string(secrets).unwrap()).unwrap();
    }

    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.path("mode"), mode).unwrap();
    }

    /// Kills the receiver: its port refuses connections until [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.launch();
    }

    fn lines(&self, phase: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path("log")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["phase"] == phase).collect()
    }

    /// Every answered request, in arrival order.
    pub fn records(&self) -> Vec<Value> {
        self.lines("end")
    }

    /// Requests that arrived (answered or not yet).
    pub fn arrivals(&self) -> Vec<Value> {
        self.lines("start")
    }

    /// Waits until `done` holds for the answered requests; their list.
    pub async fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let records = self.records();
            if done(&records) {
                return records;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; received {} requests:\n{:#?}",
                records.len(),
                records.iter().rev().take(5).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The delivered events, first delivery of each webhook-id, in arrival order (each verified).
pub fn first_deliveries(records: &[Value]) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r["status"] == 200) {
        assert_eq!(r["verified"], true, "a request failed verification by standardwebhooks: {r:#}");
        assert_eq!(r["content_type"], "application/json");
        if seen.insert(r["id"].as_str().unwrap().to_owned()) {
            out.push(serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap());
        }
    }
    out
}

fn delivered_ids(records: &[Value]) -> HashSet<String> {
    records.iter().filter(|r| r["status"] == 200).map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

impl TestApp {
    /// Registers a webhook as admin; (webhookId, secret).
    async fn webhook(&self, company: &str, url: &str, events: &[&str]) -> (String, String) {
        let res = self.post(HOOKS, &self.admin_token, json!({"companyId": company, "url": url, "events": events})).await;
        let p = res.assert_ok();
        (p["webhookId"].as_str().unwrap().to_owned(), p["secret"].as_str().unwrap().to_owned())
    }

    /// A user's entries, oldest first.
    async fn ledger_of(&self, user: &str) -> Vec<Value> {
        let res = self.get(&format!("/api/v0/coins/transactions?userId={user}&limit=500"), &self.admin_token).await;
        let mut entries = res.assert_ok()["entries"].as_array().unwrap().clone();
        entries.reverse();
        entries
    }

    async fn attempts(&self, webhook: &str) -> Vec<Value> {
        let res = self.get(&format!("{HOOKS}/{webhook}/deliveries?limit=500"), &self.admin_token).await;
        res.assert_ok()["attempts"].as_array().unwrap().clone()
    }

    async fn wait_attempts(&self, webhook: &str, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let attempts = self.attempts(webhook).await;
            if attempts.len() >= n {
                return attempts;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{n} attempts expected, {} made: {attempts:#?}", attempts.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The event a ledger entry must arrive as.
/// The event an entry of the history is delivered as; `remaining` is what a return left of its
/// original (the answer to the return says so), `null` for other entries.
fn expected_event(user: &str, company: &str, entry: &Value, remaining: &HashMap<String, i64>) -> Value {
    let remaining = entry["requestId"].as_str().and_then(|r| remaining.get(r)).filter(|_| entry["type"] == "REVERSE").copied();
    let partial = remaining.map(|n| n > 0);
    let kind = match entry["type"].as_str().unwrap() {
        "ALLOCATE" => "coins.allocated",
        "REDEEM" => "coins.redeemed",
        "REVERSE" => "coins.reversed",
        "EXPIRE" => "coins.expired",
        "ADJUST" => "coins.adjusted",
        other => panic!("entry type {other}"),
    };
    json!({
        "type": kind,
        "timestamp": entry["createdAt"],
        "data": {
            "entryId": entry["entryId"], "userId": user, "companyId": company, "coins": entry["coins"],
            "balanceAfter": entry["balanceAfter"], "event": entry["event"], "requestId": entry["requestId"],
            "coinConfigId": entry["coinConfigId"], "createdAt": entry["createdAt"], "expiresAt": entry["expiresAt"],
            "pendingCoins": entry["pendingCoins"], "pendingAfter": entry["pendingAfter"], "effectiveAt": entry["effectiveAt"],
            "orderId": entry["orderId"], "amountMinor": entry["amountMinor"], "originalRequestId": entry["originalRequestId"],
            "reason": entry["reason"], "clientId": entry["clientId"], "partial": partial, "coinsRemaining": remaining,
        }
    })
}

/// Settings whose retries come quickly (a receiver that is down comes back within the test).
fn quick_retries() -> coins::config::ServeSettings {
    let mut s = coins::config::ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.webhooks.retry.delays_ms = vec![100; 200];
    s
}

fn strict_targets() -> coins::config::ServeSettings {
    let mut s = coins::config::ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.webhooks.targets = coins::webhooks::TargetPolicy::default();
    s
}

fn no_key() -> coins::config::ServeSettings {
    let mut s = coins::config::ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.webhooks.key = None;
    s
}

both_backends! {
    async fn subscriptions_are_managed_scoped_and_show_their_secret_once(app: &TestApp) {
        let body = json!({"companyId": "SHOP", "url": "http://127.0.0.1:9/hook", "events": ["coins.allocated", "coins.allocated", "coins.redeemed"], "description": "CRM"});
        let res = app.post(HOOKS, &app.admin_token, body).await;
        let created = res.assert_ok().clone();
        assert_eq!(
            keys(&created),
            ["companyId", "createdAt", "description", "disabledReason", "enabled", "events", "previousSecretExpiresAt", "secret", "updatedAt", "url", "webhookId"]
        );
        let id = created["webhookId"].as_str().unwrap().to_owned();
        assert!(id.starts_with("wh_") && id.len() == 27, "{id}");
        assert_eq!(created["events"], json!(["coins.allocated", "coins.redeemed"]), "each type once, in the order given");
        assert_eq!((created["enabled"].clone(), created["disabledReason"].clone(), created["previousSecretExpiresAt"].clone()), (json!(true), Value::Null, Value::Null));
        let secret = created["secret"].as_str().unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).unwrap();
        assert_eq!(raw.len(), 32);

        // Read back: never the secret.
        let listed = app.get(HOOKS, &app.admin_token).await.assert_ok().clone();
        let one = app.get(&format!("{HOOKS}/{id}"), &app.admin_token).await.assert_ok().clone();
        assert_eq!(listed, json!([one.clone()]));
        assert_eq!(keys(&one), ["companyId", "createdAt", "description", "disabledReason", "enabled", "events", "updatedAt", "url", "webhookId"]);
        assert!(!app.get(HOOKS, &app.admin_token).await.text.contains(&secret[6..]));

        // Changes.
        let changed = app.patch(&format!("{HOOKS}/{id}"), &app.admin_token, json!({"events": ["coins.expired"], "description": null, "enabled": false})).await;
        let changed = changed.assert_ok();
        assert_eq!((changed["events"].clone(), changed["description"].clone(), changed["enabled"].clone()), (json!(["coins.expired"]), Value::Null, json!(false)));
        for (bad, field) in [(json!({}), "at least one"), (json!({"events": []}), "events"), (json!({"events": ["coins.nope"]}), "events"), (json!({"url": "ftp://x.example"}), "url"), (json!({"enabled": "yes"}), "enabled"), (json!({"description": 5}), "description")] {
            let res = app.patch(&format!("{HOOKS}/{id}"), &app.admin_token, bad.clone()).await;
            assert!(res.assert_error(400, "VALIDATION_FAILED").contains(field), "{bad}: {}", res.text);
        }
        let res = app.post(HOOKS, &app.admin_token, json!({"companyId": "SHOP", "url": "http://127.0.0.1:9/h", "events": ["webhook.test"]})).await;
        res.assert_error(400, "VALIDATION_FAILED");

        // Scope: another company's subscription does not exist for this caller.
        let other = app.company_token(&["OTHER"]).await;
        app.get(&format!("{HOOKS}/{id}"), &other).await.assert_error(404, "WEBHOOK_NOT_FOUND");
        app.patch(&format!("{HOOKS}/{id}"), &other, json!({"enabled": true})).await.assert_error(404, "WEBHOOK_NOT_FOUND");
        app.post(&format!("{HOOKS}/{id}/rotate-secret"), &other, json!({})).await.assert_error(404, "WEBHOOK_NOT_FOUND");
        app.get(&format!("{HOOKS}/{id}/deliveries"), &other).await.assert_error(404, "WEBHOOK_NOT_FOUND");
        assert_eq!(app.get(HOOKS, &other).await.assert_ok(), &json!([]));
        app.get(&format!("{HOOKS}?companyId=SHOP"), &other).await.assert_error(403, "FORBIDDEN");
        app.post(HOOKS, &other, json!({"companyId": "SHOP", "url": "http://127.0.0.1:9/h", "events": ["coins.allocated"]})).await.assert_error(403, "FORBIDDEN");
        let shop = app.company_token(&["SHOP"]).await;
        assert_eq!(app.get(&format!("{HOOKS}?companyId=SHOP"), &shop).await.assert_ok().as_array().unwrap().len(), 1);

        // Rotation: a new secret, the old one signing for 24 h more.
        let rotated = app.post(&format!("{HOOKS}/{id}/rotate-secret"), &shop, json!({})).await;
        let rotated = rotated.assert_ok();
        assert_ne!(rotated["secret"], created["secret"]);
        let until = rotated["previousSecretExpiresAt"].as_str().expect("previous secret expiry");
        let now = time::OffsetDateTime::now_utc();
        let until = time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).unwrap();
        assert!((until - now - time::Duration::hours(24)).abs() < time::Duration::minutes(1));

        // Deletion.
        assert_eq!(app.send(reqwest::Method::DELETE, &format!("{HOOKS}/{id}"), Some(&shop), None).await.assert_ok(), &json!(id));
        app.get(&format!("{HOOKS}/{id}"), &app.admin_token).await.assert_error(404, "WEBHOOK_NOT_FOUND");
        app.send(reqwest::Method::DELETE, &format!("{HOOKS}/{id}"), Some(&app.admin_token), None).await.assert_error(404, "WEBHOOK_NOT_FOUND");
        app.get(&format!("{HOOKS}/nope"), &app.admin_token).await.assert_error(404, "WEBHOOK_NOT_FOUND");
    }
}

/// A process that writes the outbox but leaves delivery to others (`COINS_WEBHOOK_CONCURRENCY=0`).
fn delivery_off() -> coins::config::ServeSettings {
    let mut s = coins::config::ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.webhooks.concurrency = 0;
    s
}

both_backends! {
    settings = delivery_off;
    async fn a_process_with_delivery_off_writes_the_outbox_and_sends_nothing(app: &TestApp) {
        app.config("DEFAULT", "SHOP", "EARN", 5).await;
        // Nothing listens on port 9: a delivering process records a failed attempt within a poll.
        let (id, _) = app.webhook("SHOP", "http://127.0.0.1:9/hook", &["coins.allocated"]).await;
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-1", "U1").await.assert_ok();
        // Fifty of the test worker's polls (20 ms).
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let log = app.get(&format!("{HOOKS}/{id}/deliveries"), &app.admin_token).await;
        assert_eq!(log.assert_ok()["attempts"], json!([]), "no attempt was made");
        assert_eq!(app.store().outbox_depth().await.unwrap(), 1, "the message waits in the outbox for a delivering process");
        // The depth gauge is kept without a delivery worker too (refreshed every 5 s).
        let started = Instant::now();
        loop {
            let text = app.http.get(app.url("/metrics")).bearer_auth(&app.admin_token).send().await.unwrap().text().await.unwrap();
            if text.lines().any(|l| l == "coins_webhook_outbox_depth 1") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(12), "the outbox depth gauge never showed the waiting message");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

both_backends! {
    async fn an_attempt_recorded_after_its_webhook_was_deleted_is_skipped_not_an_error(app: &TestApp) {
        // The worker had sent a message when the webhook was deleted (messages and attempts go
        // with it): recording that attempt used to fail its whole batch (a foreign key), and on
        // PostgreSQL the delete and the recording could deadlock into a 500.
        app.config("DEFAULT", "SHOP", "EARN", 5).await;
        let (gone, _) = app.webhook("SHOP", "http://127.0.0.1:9/gone", &["coins.allocated"]).await;
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-1", "U1").await.assert_ok();
        assert_eq!(app.send(reqwest::Method::DELETE, &format!("{HOOKS}/{gone}"), Some(&app.admin_token), None).await.assert_ok(), &json!(gone));
        let outcome = coins::store::AttemptOutcome {
            message_seq: 1,
            webhook_id: gone,
            attempted_at: 0,
            delivered: true,
            http_status: Some(200),
            latency_ms: 1,
            excerpt: None,
            withdrawn: false,
        };
        let states = app.store().record_attempts(vec![(outcome, 0)], &coins::domain::webhooks::RetryPolicy::standard()).await;
        assert_eq!(states.expect("recorded without error"), vec![None]);
    }
}

both_backends! {
    settings = delivery_off;
    async fn the_next_allocation_after_a_subscription_changes_follows_it(app: &TestApp) {
        // SQLite keeps which events a company's webhooks want with the cached configuration, and
        // an allocation no webhook wants writes no outbox statement for its entry; a change to
        // the webhooks must reach the very next allocation. Each change below comes with the
        // cache warm: an allocation of the same company and event just before it.
        app.config("DEFAULT", "SHOP", "EARN", 5).await;
        app.create_config(&app.admin_token, json!({"configuration": "DEFAULT", "companyId": "SHOP", "event": "HELD", "amount": 5, "pendingDays": 14}))
            .await
            .assert_ok();
        let store = app.store();
        let depth = || async { store.outbox_depth().await.unwrap() };
        let allocate = |event: &'static str, n: u32| async move {
            app.allocate(&app.admin_token, "SHOP", event, &format!("{event}-{n}"), "U1").await.assert_ok();
        };
        app.allocate(&app.admin_token, "MART", "EARN", "M-1", "U2").await.assert_ok();
        allocate("EARN", 1).await;
        assert_eq!(depth().await, 0, "no webhook yet");
        let (id, _) = app.webhook("SHOP", "http://127.0.0.1:9/hook", &["coins.redeemed"]).await;
        allocate("EARN", 2).await;
        assert_eq!(depth().await, 0, "a webhook that wants other events");
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId": "SHOP", "userId": "U1", "requestId": "SPEND-1", "coins": 1})).await.assert_ok();
        assert_eq!(depth().await, 1, "the redemption it wants");
        allocate("EARN", 3).await;
        assert_eq!(depth().await, 1, "still not an allocation");
        app.patch(&format!("{HOOKS}/{id}"), &app.admin_token, json!({"events": ["coins.allocated"]})).await.assert_ok();
        allocate("EARN", 4).await;
        assert_eq!(depth().await, 2, "the allocation right after the change");
        app.patch(&format!("{HOOKS}/{id}"), &app.admin_token, json!({"enabled": false})).await.assert_ok();
        allocate("EARN", 5).await;
        assert_eq!(depth().await, 2, "disabled");
        app.patch(&format!("{HOOKS}/{id}"), &app.admin_token, json!({"enabled": true})).await.assert_ok();
        allocate("EARN", 6).await;
        assert_eq!(depth().await, 3, "enabled again");
        let (other, _) = app.webhook("SHOP", "http://127.0.0.1:9/other", &["coins.allocated"]).await;
        allocate("EARN", 7).await;
        assert_eq!(depth().await, 5, "one message for each of the two webhooks");
        // A held allocation is `coins.pending`, which neither wants yet.
        allocate("HELD", 1).await;
        assert_eq!(depth().await, 5, "held coins, not wanted");
        app.patch(&format!("{HOOKS}/{other}"), &app.admin_token, json!({"events": ["coins.allocated", "coins.pending"]})).await.assert_ok();
        allocate("HELD", 2).await;
        assert_eq!(depth().await, 6, "held coins, wanted by one");
        // Another company's webhooks are not this company's (the DEFAULT configurations are every company's).
        app.allocate(&app.admin_token, "MART", "EARN", "M-2", "U2").await.assert_ok();
        assert_eq!(depth().await, 6);
    }
}

both_backends! {
    settings = delivery_off;
    async fn a_stale_attempt_does_not_undo_a_retry_accepted_after_the_first(app: &TestApp) {
        // Two attempts of one message were in flight (a lease ran out before the first ended).
        // The first recorded delivered it, a manual retry was accepted, then the second arrived,
        // counted from the same attempts: it used to mark the message delivered again, and the
        // retry was never sent.
        app.config("DEFAULT", "SHOP", "EARN", 5).await;
        let (id, _) = app.webhook("SHOP", "http://127.0.0.1:9/hook", &["coins.allocated"]).await;
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-1", "U1").await.assert_ok();
        let policy = coins::domain::webhooks::RetryPolicy::standard();
        let outcome = |at: i64, delivered: bool| coins::store::AttemptOutcome {
            message_seq: 1,
            webhook_id: id.clone(),
            attempted_at: at,
            delivered,
            http_status: Some(if delivered { 200 } else { 500 }),
            latency_ms: 1,
            excerpt: None,
            withdrawn: false,
        };
        let store = app.store();
        let delivered = coins::store::MessageState::Delivered;
        assert_eq!(store.record_attempts(vec![(outcome(1_000, true), 0)], &policy).await.unwrap(), vec![Some(delivered)]);
        assert_eq!(store.outbox_depth().await.unwrap(), 0);
        app.post(&format!("{HOOKS}/{id}/deliveries/msg_1/retry"), &app.admin_token, json!({})).await.assert_ok();
        assert_eq!(store.outbox_depth().await.unwrap(), 1, "the retry is pending");
        assert_eq!(store.record_attempts(vec![(outcome(2_000, true), 0)], &policy).await.unwrap(), vec![None], "stale");
        assert_eq!(store.outbox_depth().await.unwrap(), 1, "the retry is still pending");

        // Both in one batch: the first decides (a retry later), the second only goes in the log.
        let states = store.record_attempts(vec![(outcome(3_000, false), 1), (outcome(3_001, true), 1)], &policy).await.unwrap();
        assert!(matches!(states[..], [Some(coins::store::MessageState::Retry { .. }), None]), "{states:?}");
        assert_eq!(store.outbox_depth().await.unwrap(), 1, "pending its retry");
        // Counted from the attempts it has now (two), an attempt is recorded.
        assert_eq!(store.record_attempts(vec![(outcome(4_000, true), 2)], &policy).await.unwrap(), vec![Some(delivered)]);
        assert_eq!(store.outbox_depth().await.unwrap(), 0);
        // A stale attempt ahead of the current one in a batch does not hide it.
        app.post(&format!("{HOOKS}/{id}/deliveries/msg_1/retry"), &app.admin_token, json!({})).await.assert_ok();
        let states = store.record_attempts(vec![(outcome(5_000, true), 0), (outcome(5_001, false), 3)], &policy).await.unwrap();
        assert!(matches!(states[..], [None, Some(coins::store::MessageState::Retry { .. })]), "{states:?}");
        assert_eq!(store.outbox_depth().await.unwrap(), 1, "pending its retry");

        let log = app.get(&format!("{HOOKS}/{id}/deliveries"), &app.admin_token).await;
        let attempts = log.assert_ok()["attempts"].as_array().unwrap().clone();
        assert_eq!(attempts.len(), 7, "every attempt is in the log: {attempts:?}");
        let retries: Vec<bool> = attempts.iter().map(|a| !a["nextAttemptAt"].is_null()).collect();
        // Newest first: only the failures that decided have a retry time.
        assert_eq!(retries, [true, false, false, false, true, false, false], "{attempts:?}");
    }
}

both_backends! {
    settings = strict_targets;
    async fn urls_must_be_https_and_public_by_default(app: &TestApp) {
        let create = |url: &str| app.post(HOOKS, &app.admin_token, json!({"companyId": "SHOP", "url": url, "events": ["coins.allocated"]}));
        assert!(create("http://hooks.example.com/x").await.assert_error(400, "VALIDATION_FAILED").contains("https://"));
        for url in ["https://127.0.0.1/x", "https://10.1.2.3/x", "https://169.254.169.254/latest", "https://[::1]/x", "https://localhost/x"] {
            let res = create(url).await;
            assert!(res.assert_error(400, "VALIDATION_FAILED").contains("private"), "{url}: {}", res.text);
        }
    }
}

both_backends! {
    settings = no_key;
    async fn without_a_key_webhooks_cannot_be_registered(app: &TestApp) {
        let res = app.post(HOOKS, &app.admin_token, json!({"companyId": "SHOP", "url": "http://127.0.0.1:9/h", "events": ["coins.allocated"]})).await;
        assert!(res.assert_error(503, "KEY_NOT_CONFIGURED").contains("COINS_SECRET_KEY"));
    }
}

both_backends! {
    async fn every_kind_of_entry_arrives_signed_exactly_as_the_ledger_shows_it_in_order(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        let res = app.create_config(&app.admin_token, json!({"configuration": "DEFAULT", "companyId": "SHOP", "event": "EARN", "amount": 50, "validityDays": 1})).await;
        res.assert_ok();
        let (id, secret) = app.webhook("SHOP", &rx.url(), &ALL_EVENTS).await;
        rx.set_secrets(&[&secret]);
        // Another company's entries never reach this endpoint.
        app.allocate(&app.admin_token, "ELSEWHERE", "EARN", "X-1", "STRANGER").await.assert_ok();
        for round in 0..3 {
            for user in ["U1", "U2", "U3"] {
                app.allocate(&app.admin_token, "SHOP", "EARN", &format!("A-{user}-{round}"), user).await.assert_ok();
            }
        }
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId": "SHOP", "userId": "U1", "requestId": "SPEND-1", "coins": 70})).await.assert_ok();
        app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId": "SHOP", "requestId": "BACK-1", "originalRequestId": "A-U2-1"})).await.assert_ok();
        // A partial return: 30 of the 70 coins spent come back, 40 remain to return.
        let part = json!({"companyId": "SHOP", "requestId": "BACK-2", "originalRequestId": "SPEND-1", "coins": 30});
        assert_eq!(app.post("/api/v0/coins/reverse", &app.admin_token, part).await.assert_ok()["coinsRemaining"], json!(40));
        let returned = HashMap::from([("BACK-1".to_owned(), 0), ("BACK-2".to_owned(), 40)]);
        // A staff adjustment, with its reason and the client that made it.
        let goodwill = json!({"companyId": "SHOP", "userId": "U3", "requestId": "ADJ-1", "coins": 15, "reason": "Late delivery"});
        app.post("/api/v0/coins/adjust", &app.admin_token, goodwill).await.assert_ok();
        // Two days on, U3's coins expire (written when U3 is next read). The clock moves only
        // once the first 13 events are in: leases are timed by it too.
        rx.wait_for("the first 13 events", Duration::from_secs(20), |r| delivered_ids(r).len() >= 13).await;
        app.wait_attempts(&id, 13).await;
        app.clock.advance_ms(2 * DAY_MS);
        app.get("/api/v0/coins/users/U3", &app.admin_token).await.assert_ok();

        let mut expected = HashMap::new();
        for user in ["U1", "U2", "U3"] {
            expected.insert(user, app.ledger_of(user).await.iter().map(|e| expected_event(user, "SHOP", e, &returned)).collect::<Vec<_>>());
        }
        // 9 allocations, a redemption, two reversals, an adjustment, and expiries (reading a
        // history writes them).
        let total: usize = expected.values().map(Vec::len).sum();
        assert!(total >= 9 + 1 + 2 + 1 + 3, "{expected:#?}");
        let records = rx.wait_for("every entry delivered", Duration::from_secs(20), |r| delivered_ids(r).len() >= total).await;
        let events = first_deliveries(&records);
        assert_eq!(events.len(), total, "nothing else arrived");
        assert_eq!(records.len(), total, "no event was sent twice");
        for r in &records {
            assert!(r["id"].as_str().unwrap().starts_with("msg_"));
            assert_eq!(r["signature"].as_str().unwrap().split(' ').count(), 1, "one secret signs");
        }
        // Per user, the events in arrival order are the ledger's entries in order, byte for byte.
        for (user, want) in &expected {
            let got: Vec<Value> = events.iter().filter(|e| e["data"]["userId"] == *user).cloned().collect();
            assert_eq!(&got, want, "{user}");
        }
        let kinds: HashSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ALL_EVENTS.into_iter().collect());

        // The delivery log, paginated, one delivered attempt per event.
        app.wait_attempts(&id, total).await;
        let first = app.get(&format!("{HOOKS}/{id}/deliveries?limit=4"), &app.admin_token).await;
        let page = first.assert_ok();
        assert_eq!(keys(page), ["attempts", "nextCursor"]);
        let a = &page["attempts"][0];
        assert_eq!(keys(a), ["attemptedAt", "entryId", "eventStatus", "eventType", "httpCode", "latencyMs", "messageId", "nextAttemptAt", "responseExcerpt", "status"]);
        assert_eq!((a["status"].clone(), a["httpCode"].clone(), a["eventStatus"].clone(), a["nextAttemptAt"].clone()), (json!("delivered"), json!(200), json!("delivered"), Value::Null));
        assert_eq!(a["responseExcerpt"], json!(r#"{"received": true}"#));
        let mut seen = page["attempts"].as_array().unwrap().len();
        let mut cursor = page["nextCursor"].as_str().map(str::to_owned);
        while let Some(c) = cursor {
            let next = app.get(&format!("{HOOKS}/{id}/deliveries?limit=4&cursor={c}"), &app.admin_token).await;
            let next = next.assert_ok();
            seen += next["attempts"].as_array().unwrap().len();
            cursor = next["nextCursor"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, total);
        app.get(&format!("{HOOKS}/{id}/deliveries?cursor=zzz"), &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");

        // A test event, and a retry of an event already delivered (same webhook-id again).
        let queued = app.post(&format!("{HOOKS}/{id}/test"), &app.admin_token, json!({})).await;
        let test_id = queued.assert_ok()["messageId"].as_str().unwrap().to_owned();
        let records = rx.wait_for("the test event", Duration::from_secs(10), |r| delivered_ids(r).contains(&test_id)).await;
        let test = records.iter().find(|r| r["id"] == test_id.as_str()).unwrap();
        let body: Value = serde_json::from_str(test["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "webhook.test");
        assert_eq!(body["data"], json!({"webhookId": id, "companyId": "SHOP"}));
        let again = records[0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("{HOOKS}/{id}/deliveries/{again}/retry"), &app.admin_token, json!({})).await.assert_ok();
        rx.wait_for("the retried event", Duration::from_secs(10), |r| r.iter().filter(|x| x["id"] == again.as_str()).count() == 2).await;
        app.post(&format!("{HOOKS}/{id}/deliveries/msg_999999/retry"), &app.admin_token, json!({})).await.assert_error(404, "MESSAGE_NOT_FOUND");
        app.post(&format!("{HOOKS}/{id}/deliveries/nope/retry"), &app.admin_token, json!({})).await.assert_error(404, "MESSAGE_NOT_FOUND");
    }
}

both_backends! {
    async fn a_rotated_secret_and_the_old_one_both_sign_for_a_day(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        app.config("DEFAULT", "SHOP", "EARN", 5).await;
        let (id, old) = app.webhook("SHOP", &rx.url(), &["coins.allocated"]).await;
        let rotated = app.post(&format!("{HOOKS}/{id}/rotate-secret"), &app.admin_token, json!({})).await;
        let new = rotated.assert_ok()["secret"].as_str().unwrap().to_owned();
        // A receiver that still knows only the old secret verifies, and so does one with the new.
        rx.set_secrets(&[&old]);
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-1", "U").await.assert_ok();
        let records = rx.wait_for("signed with both", Duration::from_secs(10), |r| !r.is_empty()).await;
        assert_eq!(records[0]["verified"], true);
        assert_eq!(records[0]["signature"].as_str().unwrap().split(' ').count(), 2);
        rx.set_secrets(&[&new]);
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-2", "U").await.assert_ok();
        let records = rx.wait_for("second event", Duration::from_secs(10), |r| r.len() >= 2).await;
        assert_eq!(records[1]["verified"], true);
        // A day later only the new secret signs.
        app.clock.advance_ms(DAY_MS + 60_000);
        rx.set_secrets(&[&old]);
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-3", "U").await.assert_ok();
        let records = rx.wait_for("third event", Duration::from_secs(10), |r| r.len() >= 3).await;
        assert_eq!(records[2]["verified"], false, "the old secret no longer signs");
        assert_eq!(records[2]["signature"].as_str().unwrap().split(' ').count(), 1);
    }
}

both_backends! {
    settings = quick_retries;
    async fn a_receiver_that_is_down_for_a_while_loses_nothing_and_order_holds(app: &TestApp) {
        let Some(mut rx) = Receiver::start() else { return };
        app.config("DEFAULT", "SHOP", "EARN", 10).await;
        let (id, secret) = app.webhook("SHOP", &rx.url(), &["coins.allocated"]).await;
        rx.set_secrets(&[&secret]);
        rx.stop();
        for i in 0..10 {
            for user in ["U1", "U2"] {
                app.allocate(&app.admin_token, "SHOP", "EARN", &format!("R-{user}-{i}"), user).await.assert_ok();
            }
        }
        // Attempts fail while it is down: the first event of each user, again and again.
        let attempts = app.wait_attempts(&id, 6).await;
        assert!(attempts.iter().all(|a| a["status"] == "failed" && a["httpCode"].is_null() && a["eventStatus"] == "pending"), "{attempts:#?}");
        assert!(attempts[0]["responseExcerpt"].as_str().unwrap().contains("connection"), "{:#}", attempts[0]);
        let waiting: HashSet<&str> = attempts.iter().map(|a| a["messageId"].as_str().unwrap()).collect();
        assert_eq!(waiting.len(), 2, "later events of a user wait behind its first: {waiting:?}");
        rx.restart();
        let records = rx.wait_for("all 20 after the receiver came back", Duration::from_secs(20), |r| delivered_ids(r).len() >= 20).await;
        let events = first_deliveries(&records);
        for user in ["U1", "U2"] {
            let got: Vec<Value> = events.iter().filter(|e| e["data"]["userId"] == user).map(|e| e["data"]["requestId"].clone()).collect();
            let want: Vec<Value> = (0..10).map(|i| json!(format!("R-{user}-{i}"))).collect();
            assert_eq!(got, want, "{user}'s events in ledger order");
        }
    }
}

both_backends! {
    async fn backoff_failure_and_disabling_follow_the_clock(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        rx.set_mode("fail");
        app.config("DEFAULT", "SHOP", "EARN", 10).await;
        let (id, secret) = app.webhook("SHOP", &rx.url(), &["coins.allocated"]).await;
        rx.set_secrets(&[&secret]);
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-1", "U").await.assert_ok();
        // Svix's schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (±10%).
        let delays_s = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
        for (n, delay) in delays_s.iter().enumerate() {
            let attempts = app.wait_attempts(&id, n + 1).await;
            let last = &attempts[0];
            assert_eq!((last["status"].clone(), last["httpCode"].clone(), last["eventStatus"].clone()), (json!("failed"), json!(500), json!("pending")), "{last:#}");
            assert_eq!(last["responseExcerpt"], "receiver failing on purpose");
            let at = |k: &str| time::OffsetDateTime::parse(last[k].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
            let wait = (at("nextAttemptAt") - at("attemptedAt")).whole_milliseconds() as f64 / 1000.0;
            assert!((wait - *delay as f64).abs() <= *delay as f64 * 0.1 + 0.01, "attempt {}: retry after {wait} s, want {delay} s ±10%", n + 1);
            // Not a moment before its time...
            app.clock.advance_ms(delay * 1000 * 85 / 100);
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(app.attempts(&id).await.len(), n + 1, "attempt {} came early", n + 2);
            // ...and soon after.
            app.clock.advance_ms(delay * 1000 * 30 / 100);
        }
        let attempts = app.wait_attempts(&id, 8).await;
        assert_eq!((attempts[0]["eventStatus"].clone(), attempts[0]["nextAttemptAt"].clone()), (json!("failed"), Value::Null), "given up after 8 attempts");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.attempts(&id).await.len(), 8);
        assert!(app.get(&format!("{HOOKS}/{id}"), &app.admin_token).await.assert_ok()["enabled"] == true, "failing for ~31 h is not 5 days");

        // Five days after the first failure, the next failure disables the endpoint.
        app.clock.advance_ms(4 * DAY_MS);
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-2", "U").await.assert_ok();
        app.wait_attempts(&id, 9).await;
        let webhook = app.get(&format!("{HOOKS}/{id}"), &app.admin_token).await.assert_ok().clone();
        assert_eq!((webhook["enabled"].clone(), webhook["disabledReason"].clone()), (json!(false), json!("failing")));
        // Disabled: its waiting event is not sent, and new entries queue nothing for it.
        app.allocate(&app.admin_token, "SHOP", "EARN", "R-3", "U").await.assert_ok();
        app.clock.advance_ms(60_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.attempts(&id).await.len(), 9);

        // Re-enabled, its backlog (R-2) resumes.
        rx.set_mode("ok");
        let res = app.patch(&format!("{HOOKS}/{id}"), &app.admin_token, json!({"enabled": true})).await;
        assert_eq!(res.assert_ok()["disabledReason"], Value::Null);
        let records = rx.wait_for("the backlog after re-enabling", Duration::from_secs(10), |r| r.iter().any(|x| x["status"] == 200)).await;
        let events = first_deliveries(&records);
        assert_eq!(events.iter().map(|e| e["data"]["requestId"].clone()).collect::<Vec<_>>(), [json!("R-2")]);
        // A manual retry sends the event that failed for good.
        let gave_up = attempts[0]["messageId"].as_str().unwrap();
        app.post(&format!("{HOOKS}/{id}/deliveries/{gave_up}/retry"), &app.admin_token, json!({})).await.assert_ok();
        let records = rx.wait_for("the manual retry", Duration::from_secs(10), |r| r.iter().any(|x| x["id"] == gave_up && x["status"] == 200)).await;
        assert!(records.iter().all(|r| r["verified"] == true));
    }
}

both_backends! {
    async fn a_bulk_of_1000_allocations_makes_1000_events(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        app.config("DEFAULT", "SHOP", "EARN", 3).await;
        let (_, secret) = app.webhook("SHOP", &rx.url(), &["coins.allocated"]).await;
        rx.set_secrets(&[&secret]);
        let items: Vec<Value> = (0..1000).map(|i| json!({"companyId": "SHOP", "event": "EARN", "requestId": format!("B-{i}"), "userId": format!("U{}", i % 100)})).collect();
        let res = app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({"allocations": items})).await;
        res.assert_ok();
        let records = rx.wait_for("1000 events", Duration::from_secs(60), |r| delivered_ids(r).len() >= 1000).await;
        let events = first_deliveries(&records);
        let ids: HashSet<String> = events.iter().map(|e| e["data"]["requestId"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, (0..1000).map(|i| format!("B-{i}")).collect());
        // Per user, ledger order: each user's request ids arrive in the order of the batch.
        for u in 0..100 {
            let got: Vec<String> = events.iter().filter(|e| e["data"]["userId"] == format!("U{u}")).map(|e| e["data"]["requestId"].as_str().unwrap().to_owned()).collect();
            let want: Vec<String> = (0..10).map(|k| format!("B-{}", u + 100 * k)).collect();
            assert_eq!(got, want);
        }
    }
}

/// A `coins serve` child and its base URL; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ADMIN_ID: &str = "wh-admin";
const ADMIN_SECRET: &str = "wh-admin-secret-for-tests";

/// `coins serve` with webhooks to 127.0.0.1 allowed, fast polling, no rate limit and an admin
/// client, plus `extra` settings.
pub fn serve(url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("COINS_SECRET_KEY", KEY),
        ("COINS_WEBHOOK_ALLOW_HTTP", "true"),
        ("COINS_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("COINS_WEBHOOK_POLL_MS", "20"),
        ("COINS_ADMIN_CLIENT_ID", ADMIN_ID),
        ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET),
        ("COINS_RATE_LIMIT_PER_SEC", "0"),
    ];
    env.extend_from_slice(extra);
    let (child, base) = start_coins_serve(url, &env);
    Server { child, base }
}

pub async fn admin_token(http: &reqwest::Client, base: &str) -> String {
    let res =
        http.post(format!("{base}/oauth/token")).basic_auth(ADMIN_ID, Some(ADMIN_SECRET)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

pub async fn call(http: &reqwest::Client, base: &str, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = http.request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body["payload"].clone()
}

async fn a_server_killed_mid_delivery_delivers_after_restart(backend: Backend) {
    let Some(rx) = Receiver::start() else { return };
    let Some(db) = test_db(backend).await else { return };
    let http = reqwest::Client::new();
    // Timeout 3 s: the lease of a claim is 2 × 3 + 5 = 11 s.
    let extra = [("COINS_WEBHOOK_TIMEOUT_SECS", "3")];
    let mut server = serve(&db.url, &extra);
    let token = admin_token(&http, &server.base).await;
    let post = reqwest::Method::POST;
    call(
        &http,
        &server.base,
        &token,
        post.clone(),
        "/api/v0/enkash-coins/create-coins-config",
        Some(json!({"configuration": "DEFAULT", "companyId": "SHOP", "event": "EARN", "amount": 7})),
    )
    .await;
    let created =
        call(&http, &server.base, &token, post.clone(), HOOKS, Some(json!({"companyId": "SHOP", "url": rx.url(), "events": ["coins.allocated"]}))).await;
    let id = created["webhookId"].as_str().unwrap().to_owned();
    rx.set_secrets(&[created["secret"].as_str().unwrap()]);
    rx.set_mode("slow 2");
    call(
        &http,
        &server.base,
        &token,
        post,
        "/api/v0/enkash-coins/allocate-coin",
        Some(json!({"companyId": "SHOP", "event": "EARN", "requestId": "K-1", "userId": "U"})),
    )
    .await;
    let started = Instant::now();
    while rx.arrivals().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the delivery never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Killed while the receiver holds the request: the attempt is never recorded.
    assert!(Command::new("kill").args(["-KILL", &server.child.id().to_string()]).status().unwrap().success());
    let _ = server.child.wait();
    rx.set_mode("ok");
    drop(server);
    let server = serve(&db.url, &extra);
    let token = admin_token(&http, &server.base).await;
    let records = rx.wait_for("redelivery after the lease ran out", Duration::from_secs(30), |r| r.len() >= 2).await;
    let first = records[0]["id"].clone();
    assert!(records.iter().all(|r| r["id"] == first && r["verified"] == true), "{records:#?}");
    let started = Instant::now();
    loop {
        let log = call(&http, &server.base, &token, reqwest::Method::GET, &format!("{HOOKS}/{id}/deliveries"), None).await;
        let attempts = log["attempts"].as_array().unwrap();
        if attempts.iter().any(|a| a["eventStatus"] == "delivered") {
            assert_eq!(attempts.len(), 1, "only the attempt after the restart was recorded: {attempts:#?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never recorded as delivered: {log:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("killed mid-delivery ({backend:?}): delivered again {:.1} s after the kill", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_delivers_after_restart_on_sqlite() {
    a_server_killed_mid_delivery_delivers_after_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_delivers_after_restart_on_postgres() {
    a_server_killed_mid_delivery_delivers_after_restart(Backend::Postgres).await;
}

/// Three processes deliver from one PostgreSQL outbox: every event arrives, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgres_deliver_every_event_once() {
    let Some(rx) = Receiver::start() else { return };
    let Some(db) = test_db(Backend::Postgres).await else { return };
    let http = reqwest::Client::new();
    let servers: Vec<Server> = (0..3).map(|_| serve(&db.url, &[])).collect();
    let token = admin_token(&http, &servers[0].base).await;
    let post = reqwest::Method::POST;
    call(
        &http,
        &servers[0].base,
        &token,
        post.clone(),
        "/api/v0/enkash-coins/create-coins-config",
        Some(json!({"configuration": "DEFAULT", "companyId": "SHOP", "event": "EARN", "amount": 1})),
    )
    .await;
    let created =
        call(&http, &servers[0].base, &token, post.clone(), HOOKS, Some(json!({"companyId": "SHOP", "url": rx.url(), "events": ["coins.allocated"]}))).await;
    rx.set_secrets(&[created["secret"].as_str().unwrap()]);
    const EVENTS: usize = 600;
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let (http, token) = (http.clone(), token.clone());
        let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        tasks.push(tokio::spawn(async move {
            for i in (worker..EVENTS).step_by(6) {
                let body = json!({"companyId": "SHOP", "event": "EARN", "requestId": format!("M-{i}"), "userId": format!("U{}", i % 30)});
                call(&http, &bases[i % 3], &token, reqwest::Method::POST, "/api/v0/enkash-coins/allocate-coin", Some(body)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let records = rx.wait_for("every event from three processes", Duration::from_secs(60), |r| delivered_ids(r).len() >= EVENTS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = rx.records().len().max(records.len());
    let duplicates = records - EVENTS;
    eprintln!("three processes on one PostgreSQL: {EVENTS} events, {records} deliveries, {duplicates} duplicates");
    assert_eq!(duplicates, 0, "the normal case sends no event twice");
    let events = first_deliveries(&rx.records());
    for u in 0..30 {
        let entries: Vec<i64> = events.iter().filter(|e| e["data"]["userId"] == format!("U{u}")).map(|e| e["data"]["entryId"].as_i64().unwrap()).collect();
        assert!(entries.windows(2).all(|w| w[0] < w[1]), "U{u}'s events out of ledger order: {entries:?}");
    }
}
