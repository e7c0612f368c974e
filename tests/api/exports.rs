//! Exports on both backends: the ledger as CSV (read back with Python's `csv` module, strictly)
//! and as JSON lines, row for row what the history API shows; the CSV-injection guard; a download
//! interrupted and resumed with `afterEntryId` gives every row exactly once; the window rules;
//! balances with debt and held coins, now and read back at past instants; company scoping.

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
    async fn the_balances_export_names_each_members_tier_now_and_at_a_past_instant(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "VISIT", 100).await;
        let tiers = json!({"companyId":"SHOP","basis":"LIFETIME","downgrade":"NEVER","tiers":[{"code":"BASE","name":"Base","threshold":0,"earnMultiplierBps":10000},
            {"code":"GOLD","name":"Gold","threshold":200,"earnMultiplierBps":10000}]});
        app.send(reqwest::Method::PUT, "/api/v0/coins/tiers", Some(&app.admin_token), Some(&tiers)).await.assert_ok();
        for (rid, user) in [("V1", "ASHA"), ("V2", "RAVI")] {
            app.allocate(&app.admin_token, "SHOP", "VISIT", rid, user).await.assert_ok();
        }
        app.clock.advance_ms(3_600_000);
        let before_gold = coins::clock::Clock::now_ms(&app.clock);
        app.clock.advance_ms(3_600_000);
        app.allocate(&app.admin_token, "SHOP", "VISIT", "V3", "ASHA").await.assert_ok();
        let tier_of = |rows: &[Vec<String>]| -> Vec<(String, String)> {
            let at = rows[0].iter().position(|h| h == "tier").unwrap();
            rows[1..].iter().map(|r| (r[1].clone(), r[at].clone())).collect()
        };
        let now = app.get(&format!("{BALANCES}?companyId=SHOP&format=csv"), &app.admin_token).await;
        assert_eq!(tier_of(&parse_csv(&now.text)), [("ASHA".into(), "GOLD".into()), ("RAVI".into(), "BASE".into())]);
        let past = app.get(&format!("{BALANCES}?companyId=SHOP&format=csv&asOf={}", coins::clock::rfc3339(before_gold)), &app.admin_token).await;
        assert_eq!(tier_of(&parse_csv(&past.text)), [("ASHA".into(), "BASE".into()), ("RAVI".into(), "BASE".into())]);
        // A company without tiers leaves the column empty.
        app.config("CUSTOM", "PLAIN", "VISIT", 5).await;
        app.allocate(&app.admin_token, "PLAIN", "VISIT", "P1", "OMAR").await.assert_ok();
        let plain = app.get(&format!("{BALANCES}?companyId=PLAIN&format=csv"), &app.admin_token).await;
        assert_eq!(tier_of(&parse_csv(&plain.text)), [("OMAR".into(), String::new())]);
    }

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
        // Before anyone was credited: the header alone.
        let res = app.get(&format!("{BALANCES}?companyId=SHOP&asOf=2001-01-01T00:00:00Z"), &app.admin_token).await;
        assert_eq!(parse_csv(&res.text).len(), 1, "{}", res.text);
        assert!(res.header("content-disposition").unwrap().contains("coins-balances-SHOP-2001-01-01."));
    }

    async fn a_past_as_of_gives_the_rows_the_export_gave_at_that_instant(app: &TestApp) {
        const DAY: i64 = 86_400_000;
        let post = |path: &'static str, body: Value| async move { app.post(path, &app.admin_token, body).await.assert_ok().clone() };
        let config = |event: &str, extra: Value| {
            let mut body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":event,"amount":100,"validityDays":30});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        app.create_config(&app.admin_token, config("EARN", json!({}))).await.assert_ok();
        app.create_config(&app.admin_token, config("HELD", json!({"amount":50,"pendingDays":14,"validityDays":60}))).await.assert_ok();
        let t0 = coins::clock::Clock::now_ms(&app.clock);
        // The live export at this instant: its rows (without asOf) and the instant it used.
        let mut seen: Vec<(String, Vec<Value>)> = Vec::new();
        let checkpoint = |seen: &mut Vec<(String, Vec<Value>)>, rows: Vec<Value>| {
            let at = rows.first().map(|r| r["asOf"].as_str().unwrap().to_owned()).unwrap_or_default();
            seen.push((at, rows));
        };
        let live = || async {
            app.clock.advance_ms(1_000);
            let res = app.get(&format!("{BALANCES}?companyId=SHOP&format=jsonl"), &app.admin_token).await;
            res.text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v.get("end").is_none()).collect::<Vec<_>>()
        };
        let allocate = |event: &'static str, request: &'static str, user: &'static str| {
            post("/api/v0/enkash-coins/allocate-coin", json!({"companyId":"SHOP","event":event,"requestId":request,"userId":user}))
        };
        allocate("EARN", "A1", "ASHA").await;
        allocate("HELD", "H1", "BEN").await;
        // DEV owes 30 when his held coins come: their activation pays the debt from the lot.
        allocate("EARN", "A4", "DEV").await;
        post("/api/v0/coins/adjust", json!({"companyId":"SHOP","userId":"DEV","requestId":"J3","coins":-130,"reason":"Fraud","onShortfall":"NEGATIVE"})).await;
        allocate("HELD", "H2", "DEV").await;
        post("/api/v0/coins/redeem", json!({"companyId":"SHOP","userId":"ASHA","requestId":"R1","coins":30})).await;
        let soon = coins::clock::rfc3339(t0 + 10 * DAY);
        post("/api/v0/coins/adjust", json!({"companyId":"SHOP","userId":"RAVI","requestId":"J1","coins":40,"reason":"Import","expiresAt":soon})).await;
        post("/api/v0/coins/adjust", json!({"companyId":"SHOP","userId":"RAVI","requestId":"J2","coins":-100,"reason":"Fraud","onShortfall":"NEGATIVE"})).await;
        checkpoint(&mut seen, live().await);
        // Five days on: RAVI's next purchase pays his debt first; ASHA's spending comes back.
        app.clock.advance_ms(5 * DAY);
        allocate("EARN", "A2", "RAVI").await;
        post("/api/v0/coins/reverse", json!({"companyId":"SHOP","requestId":"RR1","originalRequestId":"R1"})).await;
        checkpoint(&mut seen, live().await);
        // Day 11: a new member; day 15: BEN's hold has ended, not activated by the sweeper yet.
        app.clock.advance_ms(6 * DAY);
        allocate("EARN", "A3", "CHI").await;
        checkpoint(&mut seen, live().await);
        app.clock.advance_ms(4 * DAY);
        checkpoint(&mut seen, live().await);
        app.clock.advance_ms(DAY);
        app.store().sweep_expired(coins::clock::Clock::now_ms(&app.clock)).await.unwrap();
        post("/api/v0/coins/reverse", json!({"companyId":"SHOP","requestId":"RA2","originalRequestId":"A2","coins":20})).await;
        checkpoint(&mut seen, live().await);
        // Day 31: ASHA's coins lapsed yesterday; the sweeper writes it a day later.
        app.clock.advance_ms(15 * DAY);
        checkpoint(&mut seen, live().await);
        app.clock.advance_ms(DAY);
        app.store().sweep_expired(coins::clock::Clock::now_ms(&app.clock)).await.unwrap();
        post("/api/v0/coins/redeem", json!({"companyId":"SHOP","userId":"BEN","requestId":"R2","coins":5})).await;
        checkpoint(&mut seen, live().await);
        assert!(seen.iter().any(|(_, rows)| rows.iter().any(|r| r["debt"] == json!(60))), "a checkpoint with debt: {seen:#?}");
        assert!(seen.iter().any(|(_, rows)| rows.iter().any(|r| r["pendingBalance"] == json!(50))), "a checkpoint with held coins");
        assert!(seen.iter().any(|(_, rows)| rows.iter().any(|r| r["userId"] == "ASHA" && r["lifetimeExpired"] == json!(100))));
        assert!(seen.iter().any(|(_, rows)| rows.iter().any(|r| r["userId"] == "DEV" && r["balance"] == json!(20))), "DEV's debt paid by his held coins");

        // Later, each of those instants read back from the ledger gives the same rows.
        app.clock.advance_ms(10_000);
        for (at, rows) in &seen {
            let res = app.get(&format!("{BALANCES}?companyId=SHOP&format=jsonl&asOf={at}"), &app.admin_token).await;
            assert_eq!(res.status, 200, "{}", res.text);
            let lines: Vec<Value> = res.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(&lines[..lines.len() - 1], &rows[..], "as of {at}");
            assert_eq!(lines.last().unwrap()["rows"], json!(rows.len()));
        }
        app.assert_ledger_consistent().await;
    }
}
