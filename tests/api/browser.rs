//! Pages in headless Chromium (Debian's `chromium`, driven by Playwright from PyPI): the scripts
//! are in `tests/browser/`, each cut off from every host but the server under test, each saving a
//! screenshot under `target/screenshots/`. `.ci/run` installs both; outside CI their absence skips,
//! loudly.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::*;

/// Whether Chromium and Playwright are here; in CI their absence fails the test.
pub fn browser_available() -> bool {
    let chromium = std::path::Path::new(&std::env::var("COINS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())).exists();
    let playwright = Command::new("python3").args(["-c", "import playwright"]).output().is_ok_and(|o| o.status.success());
    if chromium && playwright {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!in_ci, "browser tests need Debian's chromium and PyPI's playwright; .ci/run installs both");
    eprintln!("\n!!! SKIPPED: browser test (chromium: {chromium}, playwright: {playwright}) !!!\n");
    false
}

pub fn screenshot(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `tests/browser/<script>` with these arguments; panics with its output if it fails.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser");
    let out = Command::new("python3").arg(dir.join(script)).args(args).current_dir(&dir).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_lists_every_operation_and_tries_one_with_no_internet() {
    if !browser_available() {
        return;
    }
    let Some(app) = spawn_app(Backend::Sqlite).await else { return };
    let shot = screenshot("docs.png");
    let (base, token) = (app.base.clone(), app.admin_token.clone());
    let out = tokio::task::spawn_blocking(move || run_script("docs.py", &[&base, &token, &shot.to_string_lossy()])).await.unwrap();
    eprintln!("{out}");
    app.stop().await;
}

/// The dashboard end to end (tests/browser/dashboard.py) on data seeded over three days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_seeded_numbers_and_its_actions_work() {
    use serde_json::json;
    if !browser_available() {
        return;
    }
    let Some(app) = spawn_app(Backend::Sqlite).await else { return };
    const DAY: i64 = 86_400_000;
    let (id, secret) = app.create_client(&["SHOP"]).await;
    let token = app.token(&id, &secret).await;
    app.config("DEFAULT", "SHOP", "EARN", 10).await;
    // Three days ago, a user with a long history, for paging (20 entries a page).
    let mut days = serde_json::Map::new();
    app.clock.advance_ms(-3 * DAY);
    for i in 0..25 {
        app.allocate(&token, "SHOP", "EARN", &format!("PAGE-{i}"), "PAGER").await.assert_ok();
    }
    let pager_day = coins::clock::rfc3339(coins::clock::Clock::now_ms(&app.clock))[..10].to_owned();
    days.insert(pager_day.clone(), json!({"issued": 250, "redeemed": 0}));
    app.clock.advance_ms(3 * DAY);
    // Two days ago: 3 allocations; yesterday: 2 and a redemption of 5; today: 1.
    let mut seq = 0;
    for (back, allocations, redeemed) in [(2, 3, 0), (1, 2, 5), (0, 1, 0)] {
        app.clock.advance_ms(-back * DAY);
        for _ in 0..allocations {
            seq += 1;
            app.allocate(&token, "SHOP", "EARN", &format!("SEED-{seq}"), "ASHA").await.assert_ok();
        }
        if redeemed > 0 {
            app.post("/api/v0/coins/redeem", &token, json!({"companyId": "SHOP", "userId": "ASHA", "requestId": "SPEND-1", "coins": redeemed}))
                .await
                .assert_ok();
        }
        let day = coins::clock::rfc3339(coins::clock::Clock::now_ms(&app.clock))[..10].to_owned();
        days.insert(day, json!({"issued": allocations * 10, "redeemed": redeemed}));
        app.clock.advance_ms(back * DAY);
    }
    // A tier scheme set up after that history: PAGER (250 qualifying coins) is placed in Gold,
    // ASHA (60) in Silver; the multipliers only apply from now on.
    let tiers = json!({"companyId":"SHOP","basis":"ROLLING","windowDays":365,"retentionDays":365,"downgrade":"ONE_DOWN","tiers":[
        {"code":"BRONZE","name":"Bronze","threshold":0,"earnMultiplierBps":10000},{"code":"SILVER","name":"Silver","threshold":50,"earnMultiplierBps":12500},
        {"code":"GOLD","name":"Gold","threshold":200,"earnMultiplierBps":15000}]});
    app.send(reqwest::Method::PUT, "/api/v0/coins/tiers", Some(&token), Some(&tiers)).await.assert_ok();
    // An endpoint for reminders, so the webhooks page offers to set them.
    let hook = json!({"companyId": "SHOP", "url": "http://127.0.0.1:9/reminders", "events": ["coins.expiring"]});
    app.post("/api/v0/coins/webhooks", &token, hook).await.assert_ok();
    let link = app.post("/api/v0/coins/users/ASHA/page-link", &token, json!({})).await;
    let member_url = link.assert_ok()["url"].as_str().unwrap().to_owned();
    let expected = json!({
        "client_id": id, "client_secret": secret, "company": "SHOP", "event": "EARN",
        "days": days,
        "totals": {"issued": 60 + 250, "redeemed": 5, "reversed": 0, "expired": 0},
        "pager_user": "PAGER", "pager_entries": 25,
        "reverse_user": "ASHA", "reverse_request": "SEED-6", "reverse_coins": 10,
        // Opened last: 60 - 5 - 10 after the reversal, 70 taken into a debt of 25, then 40 given.
        "member_url": member_url, "member_balance": 15,
        // The first seeded day: every entry is in the download from then to today.
        "export_from_day": pager_day,
    });
    let dir = screenshot("dashboard-overview.png").parent().unwrap().to_string_lossy().into_owned();
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || run_script("dashboard.py", &[&base, &expected.to_string(), &dir])).await.unwrap();
    eprintln!("{out}");
    app.stop().await;
}
