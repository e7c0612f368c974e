//! `GET /metrics`: Prometheus text that a real parser (the prometheus-parse crate) reads, whose
//! counters move by exactly the traffic sent, and which only admins (or the separate metrics
//! address) may read. nextest runs each test in a process of its own, so the counters start clean.

use std::collections::HashMap;

use coins::config::ServeSettings;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

/// Counter and gauge values by name and sorted labels.
fn scrape_text(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        let value = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        out.insert(key, value);
    }
    out
}

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let res = app.http.get(app.url("/metrics")).bearer_auth(&app.admin_token).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    scrape_text(&res.text().await.unwrap())
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

both_backends! {
    async fn counters_move_by_exactly_the_traffic_sent(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 7).await;
        let before = scrape(app).await;
        for i in 0..5 {
            app.allocate(&app.admin_token, "C", "E", &format!("A{i}"), "U").await.assert_ok();
        }
        app.allocate(&app.admin_token, "C", "E", "A0", "U").await.assert_ok(); // a replay moves nothing
        app.allocate(&app.admin_token, "C", "NOPE", "X", "U").await.assert_error(404, "COIN_CONFIG_NOT_FOUND");
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"C","userId":"U","requestId":"R1","coins":3})).await.assert_ok();
        app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"C","requestId":"X1","originalRequestId":"A1"})).await.assert_ok();
        for _ in 0..3 {
            app.get("/api/v0/coins/balance?userId=U", &app.admin_token).await.assert_ok();
        }
        let after = scrape(app).await;
        let route = |r: &str, m: &str, s: u16| format!("coins_http_requests_total{{method={m},route={r},status={s}}}");
        assert_eq!(delta(&before, &after, &route("/api/v0/enkash-coins/allocate-coin", "POST", 200)), 6.0);
        assert_eq!(delta(&before, &after, &route("/api/v0/enkash-coins/allocate-coin", "POST", 404)), 1.0);
        assert_eq!(delta(&before, &after, &route("/api/v0/coins/balance", "GET", 200)), 3.0);
        assert_eq!(delta(&before, &after, "coins_ledger_operations_total{movement=allocated}"), 5.0);
        assert_eq!(delta(&before, &after, "coins_ledger_coins_total{movement=allocated}"), 35.0);
        assert_eq!(delta(&before, &after, "coins_ledger_coins_total{movement=redeemed}"), 3.0);
        assert_eq!(delta(&before, &after, "coins_ledger_coins_total{movement=reversed}"), 7.0);
        // The scrape itself is counted only once it has been answered.
        assert_eq!(delta(&before, &after, &route("/metrics", "GET", 200)), 1.0);
        let backend = match app.backend { Backend::Sqlite => "sqlite", Backend::Postgres => "postgres" };
        assert!(after.contains_key(&format!("coins_db_connections{{backend={backend},state=in_use}}")), "{:?}", after.keys().filter(|k| k.contains("db_")).collect::<Vec<_>>());
        let text = app.http.get(app.url("/metrics")).bearer_auth(&app.admin_token).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("coins_http_request_duration_seconds_bucket"), "latency histograms are exposed");
        assert!(text.contains("coins_group_commit_batch_size_bucket"), "group-commit batch sizes are exposed");
        assert!(!text.contains("U\"") && !text.contains("A1"), "no user or request id is a label");
    }

    async fn only_admins_read_metrics_on_the_api_port(app: &TestApp) {
        let res = app.send(reqwest::Method::GET, "/metrics", None, None).await;
        res.assert_error(401, "UNAUTHENTICATED");
        let company = app.company_token(&["C"]).await;
        app.get("/metrics", &company).await.assert_error(403, "FORBIDDEN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_address_serves_them_without_a_token() {
    let Some(db) = test_db(Backend::Sqlite).await else { return };
    let mut settings = ServeSettings::for_tests();
    settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = coins::app::App::build(&settings, db.store.clone(), std::sync::Arc::new(coins::clock::SystemClock)).await.unwrap();
    let metrics = app.metrics_addr().expect("a metrics address");
    let base = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    reqwest::get(format!("http://{base}/healthz")).await.unwrap();
    let text = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    let parsed = scrape_text(&text);
    assert!(parsed.keys().any(|k| k.starts_with("coins_http_requests_total{method=GET,route=/healthz")), "{text}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

both_backends! {
    async fn every_known_label_is_exported_at_zero_from_the_start(app: &TestApp) {
        let fresh = scrape(app).await;
        for movement in ["allocated", "redeemed", "reversed", "expired"] {
            for name in ["coins_ledger_coins_total", "coins_ledger_operations_total"] {
                let key = format!("{name}{{movement={movement}}}");
                assert_eq!(fresh.get(&key), Some(&0.0), "{key} must be exported at 0 before any traffic");
            }
        }
        for key in [
            "coins_webhook_deliveries_total{outcome=delivered}",
            "coins_webhook_deliveries_total{outcome=failed}",
            "coins_rate_limited_total{limit=client}",
            "coins_sweeper_users_failed_total{}",
        ] {
            assert_eq!(fresh.get(key), Some(&0.0), "{key} must be exported at 0 before any traffic");
        }
    }

    // Expiries are written wherever a user's due lots are met first: a read, a redemption and a
    // reversal each write one off here (the sweeper's own pass is the next test), and each counts.
    async fn expiries_count_whichever_path_writes_them(app: &TestApp) {
        app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":10,"validityDays":1})).await.assert_ok();
        app.config("DEFAULT", "C", "KEEP", 5).await;
        for (user, n) in [("U1", 1), ("U2", 2), ("U3", 3)] {
            app.allocate(&app.admin_token, "C", "E", &format!("A{n}"), user).await.assert_ok();
            app.allocate(&app.admin_token, "C", "KEEP", &format!("B{n}"), user).await.assert_ok();
        }
        app.clock.advance_ms(2 * coins::domain::config::DAY_MS);
        let before = scrape(app).await;
        let expired = |after: &HashMap<String, f64>| {
            (delta(&before, after, "coins_ledger_operations_total{movement=expired}"), delta(&before, after, "coins_ledger_coins_total{movement=expired}"))
        };

        app.get("/api/v0/coins/users/U1", &app.admin_token).await.assert_ok();
        assert_eq!(expired(&scrape(app).await), (1.0, 10.0), "a read that writes an expiry counts it");
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"C","userId":"U2","requestId":"D2","coins":1})).await.assert_ok();
        assert_eq!(expired(&scrape(app).await), (2.0, 20.0), "a redemption that writes an expiry counts it");
        app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"C","requestId":"X3","originalRequestId":"B3"})).await.assert_ok();
        assert_eq!(expired(&scrape(app).await), (3.0, 30.0), "a reversal that writes an expiry counts it");
    }
}

fn fast_sweeper() -> ServeSettings {
    let mut settings = ServeSettings::for_tests();
    settings.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    settings.sweep_interval = std::time::Duration::from_millis(20);
    settings
}

both_backends! {
    settings = fast_sweeper;

    async fn the_sweepers_expiries_count_too(app: &TestApp) {
        app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":10,"validityDays":1})).await.assert_ok();
        app.allocate(&app.admin_token, "C", "E", "A1", "U1").await.assert_ok();
        let before = scrape(app).await;
        app.clock.advance_ms(2 * coins::domain::config::DAY_MS);
        // Bounded wait for the sweeper's own pass (no read of the user, which would expire it).
        let mut after = scrape(app).await;
        for _ in 0..250 {
            if delta(&before, &after, "coins_ledger_coins_total{movement=expired}") > 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            after = scrape(app).await;
        }
        assert_eq!(delta(&before, &after, "coins_ledger_operations_total{movement=expired}"), 1.0);
        assert_eq!(delta(&before, &after, "coins_ledger_coins_total{movement=expired}"), 10.0);
    }
}
