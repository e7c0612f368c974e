//! Logs: one INFO line per request with method, route, status,
//! latency, client and request id; JSON lines with `COINS_LOG_FORMAT=json`, the request id on
//! every line a request causes; no colour codes when the output is not a terminal.

use serde_json::Value;

use crate::helpers::*;

const ADMIN_ID: &str = "logs-admin";
const ADMIN_SECRET: &str = "logs-admin-secret-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_line_per_request_with_its_id() {
    let Some(db) = test_db(Backend::Sqlite).await else { return };
    let log = std::env::temp_dir().join(format!("coins-json-log-{}.txt", coins::crypto::random_token::<6>()));
    let env = [("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET), ("COINS_LOG", "debug"), ("COINS_LOG_FORMAT", "json")];
    let (mut child, base) = start_coins_serve_logging(&db.url, &env, Some(&log));
    let http = reqwest::Client::new();
    let res =
        http.post(format!("{base}/oauth/token")).basic_auth(ADMIN_ID, Some(ADMIN_SECRET)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    for (i, path) in ["/api/v0/coins/balance?userId=U", "/api/v0/coins/users/NOBODY", "/api/v0/nowhere"].iter().enumerate() {
        http.get(format!("{base}{path}")).bearer_auth(&token).header("x-request-id", format!("trace-{i}")).send().await.unwrap();
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(!text.contains('\u{1b}'), "colour codes in a log that is not a terminal");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let of = |id: &str| lines.iter().filter(|l| l["span"]["id"] == id).cloned().collect::<Vec<_>>();
    let balance = of("trace-0");
    assert!(balance.len() >= 2, "the request's own lines (authenticated, request): {balance:?}");
    let line = balance.iter().find(|l| l["fields"]["message"] == "request").expect("the request line");
    assert_eq!(line["level"], Value::from("INFO"));
    assert_eq!(line["fields"]["method"], Value::from("GET"));
    assert_eq!(line["fields"]["route"], Value::from("/api/v0/coins/balance"));
    assert_eq!(line["fields"]["status"], Value::from(200));
    assert_eq!(line["fields"]["client"], Value::from(ADMIN_ID));
    assert!(line["fields"]["latency_ms"].as_f64().is_some());
    let refused = of("trace-1");
    assert!(refused.iter().any(|l| l["fields"]["status"] == 404 && l["level"] == "INFO"), "{refused:?}");
    let unrouted = of("trace-2");
    assert!(unrouted.iter().any(|l| l["fields"]["route"] == "unmatched"), "{unrouted:?}");
    assert_eq!(lines.iter().filter(|l| l["fields"]["message"] == "request").count(), 4, "one line per request, no more");
}
