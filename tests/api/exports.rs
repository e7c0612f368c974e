//! Exports on both backends: the ledger as CSV (read back with Python's `csv` module, strictly)
//! and as JSON lines, row for row what the history API shows; the CSV-injection guard; a download
//! interrupted and resumed with `afterEntryId` gives every row exactly once; the window rules;
//! balances with debt and held coins; company scoping.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const LEDGER: &str = "/api/v0/coins/exports/ledger";
const BALANCES: &str = "/api/v0/coins/exports/balances";

/// Parses CSV text with Python's `csv` module in strict mode: a list of records.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut child = Command::new("python3")
        .args(["-c", "import csv, io, json, sys; print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline=''), strict=True))))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python's csv refused the file:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn download(app: &TestApp, query: &str) -> Resp {
    app.get(&format!("{LEDGER}?{query}"), &app.admin_token).await
}

/// A window around now: the last day.
fn window(app: &TestApp) -> String {
    let now = coins::clock::Clock::now_ms(&app.clock);
    format!("from={}&to={}", coins::clock::rfc3339(now - 86_400_000), coins::clock::rfc3339(now + 60_000))
}

async fn seed(app: &TestApp) {
    app.config("CUSTOM", "SHOP", "EARN", 10).await;
    for n in 0..5 {
        app.allocate(&app.admin_token, "SHOP", "EARN", &format!("A{n}"), if n % 2 == 0 { "ASHA" } else { "RAVI" }).await.assert_ok();
    }
    app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"SHOP","userId":"ASHA","requestId":"S1","coins":25})).await.assert_ok();
    // A reason a spreadsheet would run as a formula, with a comma and quotes.
    let reason = "=HYPERLINK(\"http://x\"), \"quoted\"";
    app.post(
        "/api/v0/coins/adjust",
        &app.admin_token,
        json!({"companyId":"SHOP","userId":"RAVI","requestId":"J1","coins":-30,"reason":reason,"onShortfall":"NEGATIVE"}),
    )
    .await
    .assert_ok();
    app.config("CUSTOM", "OTHER", "EARN", 10).await;
    app.allocate(&app.admin_token, "OTHER", "EARN", "X1", "ZED").await.assert_ok();
    // An export ends five seconds before now: let the seeded entries settle into its window.
    app.clock.advance_ms(10_000);
}

/// Every entry of the company, oldest first, as the history API shows it.
async fn ledger_of(app: &TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    for user in ["ASHA", "RAVI"] {
        let page = app.get(&format!("/api/v0/coins/transactions?userId={user}&limit=500"), &app.admin_token).await;
        for e in page.assert_ok()["entries"].as_array().unwrap() {
            let mut e = e.clone();
            e["userId"] = json!(user);
            all.push(e);
        }
    }
    all.sort_by_key(|e| e["entryId"].as_i64().unwrap());
    all
}

both_backends! {
    async fn the_ledger_exports_as_csv_and_json_lines_row_for_row(app: &TestApp) {
        seed(app).await;
        let ledger = ledger_of(app).await;
        let res = download(app, &format!("companyId=SHOP&{}", window(app))).await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(res.header("content-type"), Some("text/csv; charset=utf-8; header=present"));
        assert!(res.header("content-disposition").unwrap().starts_with("attachment; filename=\"coins-ledger-SHOP-"), "{:?}", res.header("content-disposition"));
        assert!(res.header("x-export-to").is_some());
        assert!(res.text.ends_with("\r\n") && res.text.starts_with("entryId,createdAt,effectiveAt,companyId,userId,type,coins,pendingCoins,balanceAfter,"));
        let rows = parse_csv(&res.text);
        assert_eq!(
            rows[0],
            ["entryId", "createdAt", "effectiveAt", "companyId", "userId", "type", "coins", "pendingCoins", "balanceAfter", "event", "requestId",
             "originalRequestId", "orderId", "coinConfigId", "amountMinor", "currency", "activatesAt", "expiresAt", "reason", "clientId"]
        );
        assert_eq!(rows.len() - 1, ledger.len(), "one row per entry of SHOP, none of OTHER");
        let cell = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for (row, e) in rows[1..].iter().zip(&ledger) {
            let want = [
                cell(&e["entryId"]), cell(&e["createdAt"]), cell(&e["effectiveAt"]), "SHOP".into(), cell(&e["userId"]), cell(&e["type"]),
                cell(&e["coins"]), cell(&e["pendingCoins"]), cell(&e["balanceAfter"]), cell(&e["event"]), cell(&e["requestId"]),
                cell(&e["originalRequestId"]), cell(&e["orderId"]), cell(&e["coinConfigId"]), cell(&e["amountMinor"]), String::new(), String::new(),
                cell(&e["expiresAt"]),
                // The injection guard: a leading ' on text a spreadsheet would run.
                e["reason"].as_str().map(|r| if r.starts_with('=') { format!("'{r}") } else { r.to_owned() }).unwrap_or_default(),
                cell(&e["clientId"]),
            ];
            assert_eq!(row, &want);
        }
        assert!(rows.iter().any(|r| r[18].starts_with("'=HYPERLINK")), "the guarded reason is there");

        // JSON lines: the same rows, then the end line.
        let res = download(app, &format!("companyId=SHOP&{}&format=jsonl", window(app))).await;
        assert_eq!(res.header("content-type"), Some("application/jsonl; charset=utf-8"));
        let lines: Vec<Value> = res.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let last_id = ledger.last().unwrap()["entryId"].clone();
        assert_eq!(lines.last().unwrap(), &json!({"end": true, "rows": ledger.len(), "lastEntryId": last_id}));
        assert_eq!(lines[0]["reason"], Value::Null);
        assert_eq!(lines[0].as_object().unwrap().keys().count(), 20);
        let reasons: Vec<&Value> = lines.iter().map(|l| &l["reason"]).filter(|r| !r.is_null()).collect();
        assert_eq!(reasons, [&json!("=HYPERLINK(\"http://x\"), \"quoted\"")], "JSON needs no guard");
    }

    async fn an_interrupted_download_resumes_with_every_row_once(app: &TestApp) {
        seed(app).await;
        let ledger = ledger_of(app).await;
        let all = download(app, &format!("companyId=SHOP&{}&format=jsonl", window(app))).await;
        let lines: Vec<Value> = all.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // The first three rows arrived, then the connection broke (no end line): resume after the third.
        let third = lines[2]["entryId"].as_i64().unwrap();
        let rest = download(app, &format!("companyId=SHOP&{}&format=jsonl&afterEntryId={third}", window(app))).await;
        let rest: Vec<Value> = rest.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let mut joined: Vec<i64> = lines[..3].iter().chain(&rest[..rest.len() - 1]).map(|l| l["entryId"].as_i64().unwrap()).collect();
        let want: Vec<i64> = ledger.iter().map(|e| e["entryId"].as_i64().unwrap()).collect();
        assert_eq!(joined, want);
        joined.dedup();
        assert_eq!(joined.len(), want.len(), "every row exactly once");
        assert_eq!(rest.last().unwrap()["rows"], json!(ledger.len() - 3));
    }

    async fn windows_formats_and_companies_are_checked(app: &TestApp) {
        seed(app).await;
        let cases = [
            ("companyId=SHOP", "from is required"),
            ("companyId=SHOP&from=2026-01-01T00:00:00Z&to=yesterday", "to must be an RFC 3339 time such as 2026-11-01T00:00:00Z"),
            ("companyId=SHOP&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from must be before to"),
            ("companyId=SHOP&from=2025-01-01T00:00:00Z&to=2026-01-03T00:00:00Z", "an export covers at most 366 days"),
            ("companyId=SHOP&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&format=xlsx", "format must be csv or jsonl"),
            ("companyId=SHOP&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&afterEntryId=-1", "afterEntryId must be a whole number, 0 or more"),
        ];
        for (query, message) in cases {
            assert_eq!(download(app, query).await.assert_error(400, "VALIDATION_FAILED"), message, "{query}");
        }
        // The end is clamped to five seconds ago, and said so.
        let now = coins::clock::Clock::now_ms(&app.clock);
        let res = download(app, &format!("companyId=SHOP&from={}&to={}", coins::clock::rfc3339(now - 3_600_000), coins::clock::rfc3339(now + 3_600_000))).await;
        let to = coins::clock::parse_rfc3339(res.header("x-export-to").unwrap()).unwrap();
        assert!((now - 6_000..=now - 4_000).contains(&to), "x-export-to {to} vs now {now}");
        let other = app.company_token(&["OTHER"]).await;
        let res = app.get(&format!("{LEDGER}?companyId=SHOP&{}", window(app)), &other).await;
        res.assert_error(403, "FORBIDDEN");
        let res = app.get(&format!("{BALANCES}?companyId=SHOP"), &other).await;
        res.assert_error(403, "FORBIDDEN");
    }

    async fn balances_export_every_user_with_debt_and_held_coins(app: &TestApp) {
        seed(app).await;
        let res = app.get(&format!("{BALANCES}?companyId=SHOP"), &app.admin_token).await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert!(res.header("content-disposition").unwrap().starts_with("attachment; filename=\"coins-balances-SHOP-"));
        let rows = parse_csv(&res.text);
        assert_eq!(
            rows[0],
            ["companyId", "userId", "balance", "pendingBalance", "debt", "lifetimeEarned", "lifetimeRedeemed", "lifetimeExpired", "tier", "nextExpiryAt",
             "nextExpiryCoins", "asOf"]
        );
        // ASHA: 3 × 10 earned, 25 spent. RAVI: 2 × 10, then 30 taken: 10 owed.
        assert_eq!(rows[1][..9], ["SHOP", "ASHA", "5", "0", "0", "30", "25", "0", ""]);
        assert_eq!(rows[2][..9], ["SHOP", "RAVI", "-10", "0", "10", "-10", "0", "0", ""]);
        assert_eq!(rows.len(), 3, "OTHER's user is not in SHOP's file");
        let res = app.get(&format!("{BALANCES}?companyId=SHOP&format=jsonl"), &app.admin_token).await;
        let lines: Vec<Value> = res.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.last().unwrap(), &json!({"end": true, "rows": 2, "lastUserId": "RAVI"}));
        assert_eq!((&lines[1]["debt"], &lines[1]["balance"], &lines[1]["nextExpiryAt"]), (&json!(10), &json!(-10), &Value::Null));
        let res = app.get(&format!("{BALANCES}?companyId=SHOP&asOf=2001-01-01T00:00:00Z"), &app.admin_token).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("asOf in the past"));
    }
}
