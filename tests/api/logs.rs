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

/// A dashboard page whose data cannot be read answers with the failure's own status (not a 200
/// page with an error on it), and the request's one log line carries the cause under its id; a
/// refusal (an unknown user) answers its 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_page_that_fails_answers_its_status_and_logs_the_cause_once() {
    let Some(db) = test_db(Backend::Sqlite).await else { return };
    let log = std::env::temp_dir().join(format!("coins-dash-log-{}.txt", coins::crypto::random_token::<6>()));
    let env = [("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET), ("COINS_LOG", "info"), ("COINS_LOG_FORMAT", "json")];
    let (child, base) = start_coins_serve_logging(&db.url, &env, Some(&log));
    let mut child = KillOnDrop(child);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next()?.strip_prefix(&format!("{name}=")).map(str::to_owned))
            .next()
    };
    let csrf = cookie(&http.get(format!("{base}/dashboard/login")).send().await.unwrap(), "coins_csrf").expect("a CSRF cookie");
    let signed_in = http
        .post(format!("{base}/dashboard/login"))
        .header("cookie", format!("coins_csrf={csrf}"))
        .form(&[("csrf", csrf.as_str()), ("client_id", ADMIN_ID), ("client_secret", ADMIN_SECRET)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = cookie(&signed_in, "coins_session").expect("a session cookie");
    let jar = format!("coins_session={session}; coins_csrf={csrf}");
    let get = |path: &str, id: &str| http.get(format!("{base}{path}")).header("cookie", &jar).header("x-request-id", id).send();

    let unknown = get("/dashboard/users?userId=NOBODY", "dash-unknown").await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("USER_NOT_FOUND"));
    // The daily roll-up the overview reads goes away behind the server's back.
    rusqlite::Connection::open(&db.url).unwrap().execute_batch("ALTER TABLE ledger_daily RENAME TO ledger_daily_away").unwrap();
    let broken = get("/dashboard", "dash-broken").await.unwrap();
    assert_eq!(broken.status(), 500);
    assert_eq!(broken.headers()["content-type"], "text/html; charset=utf-8");
    let page = broken.text().await.unwrap();
    assert!(page.contains("internal error; the x-request-id response header identifies it in the server log"), "{page}");
    assert!(!page.contains("ledger_daily"), "the cause stays in the log: {page}");

    assert!(std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap().success());
    child.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let of = |id: &str| lines.iter().filter(|l| l["span"]["id"] == id).cloned().collect::<Vec<_>>();
    let failed = of("dash-broken");
    assert_eq!(failed.len(), 1, "one line for the failed page: {failed:?}");
    assert_eq!(
        (&failed[0]["level"], &failed[0]["fields"]["message"], &failed[0]["fields"]["status"]),
        (&Value::from("ERROR"), &Value::from("request failed"), &Value::from(500))
    );
    assert!(failed[0]["fields"]["cause"].as_str().is_some_and(|c| c.contains("ledger_daily")), "{failed:?}");
    let refused = of("dash-unknown");
    assert!(refused.iter().any(|l| l["fields"]["status"] == 404 && l["fields"]["route"] == "/dashboard/users"), "{refused:?}");
}
