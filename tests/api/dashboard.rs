//! The dashboard's guarantees over HTTP (the browser test in tests/api/browser.rs drives it
//! end to end): sessions and their cookies, CSRF on every state change, a company-scoped client
//! seeing only its companies in every view, and member links that expire and cannot be altered.

use std::collections::HashMap;

use coins::clock::Clock;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// A browser's cookies, by hand (the client follows no redirects).
struct Browser {
    http: reqwest::Client,
    base: String,
    jar: HashMap<String, String>,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, base: app.base.clone(), jar: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, res: &reqwest::Response) -> Vec<String> {
        let set: Vec<String> = res.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for c in &set {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_owned(), v.to_owned());
            }
        }
        set
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String, Option<String>) {
        let res = self.http.get(format!("{}{path}", self.base)).header(COOKIE, self.cookie_header()).send().await.unwrap();
        self.keep(&res);
        let location = res.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
        (res.status(), res.text().await.unwrap(), location)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
        let res = self.http.post(format!("{}{path}", self.base)).header(COOKIE, self.cookie_header()).form(form).send().await.unwrap();
        self.keep(&res);
        let location = res.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
        (res.status(), res.text().await.unwrap(), location)
    }

    fn csrf(&self) -> String {
        self.jar.get("coins_csrf").cloned().unwrap_or_default()
    }

    async fn sign_in(&mut self, id: &str, secret: &str) {
        self.get("/dashboard/login").await;
        let csrf = self.csrf();
        let (status, body, location) = self.post("/dashboard/login", &[("csrf", &csrf), ("client_id", id), ("client_secret", secret)]).await;
        assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/dashboard")), "{body}");
    }
}

/// Every `data-value` of the daily chart's points of a series, summed.
fn chart_total(html: &str, series: &str) -> i64 {
    let needle = format!("data-series=\"{series}\" data-key=\"");
    html.match_indices(&needle)
        .filter(|(i, _)| html[..*i].rfind("<svg").is_some_and(|s| html[s..*i].contains("chart-daily")))
        .map(|(i, _)| {
            let rest = &html[i..];
            let v = rest.split("data-value=\"").nth(1).unwrap();
            v[..v.find('"').unwrap()].parse::<i64>().unwrap()
        })
        .sum()
}

both_backends! {
    async fn sessions_use_strict_cookies_and_sign_out_ends_the_token(app: &TestApp) {
        let mut b = Browser::new(app);
        // No session: every page sends to the sign-in page.
        for path in ["/dashboard", "/dashboard/configs", "/dashboard/users", "/dashboard/webhooks"] {
            let (status, _, location) = b.get(path).await;
            assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/dashboard/login")), "{path}");
        }
        // Wrong secret: refused on the page, no session.
        b.get("/dashboard/login").await;
        let csrf = b.csrf();
        let (status, body, _) = b.post("/dashboard/login", &[("csrf", &csrf), ("client_id", &app.admin_id), ("client_secret", "wrong")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("unknown client or wrong secret"), "{body}");
        assert!(!b.jar.contains_key("coins_session"));
        // Right one: cookies HttpOnly, SameSite=Strict; Secure behind TLS.
        let csrf = b.csrf();
        let res = b
            .http
            .post(format!("{}/dashboard/login", b.base))
            .header(COOKIE, b.cookie_header())
            .header("x-forwarded-proto", "https")
            .form(&[("csrf", csrf.as_str()), ("client_id", &app.admin_id), ("client_secret", &app.admin_secret)])
            .send()
            .await
            .unwrap();
        let set = b.keep(&res);
        let session = set.iter().find(|c| c.starts_with("coins_session=")).expect("session cookie");
        for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(session.contains(flag), "{session}");
        }
        let token = b.jar["coins_session"].clone();
        let (status, page, _) = b.get("/dashboard").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<h1>Overview"));
        // The page may run no script and load nothing from elsewhere.
        let res = b.http.get(format!("{}/dashboard", b.base)).header(COOKIE, b.cookie_header()).send().await.unwrap();
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!page.contains("<script"));
        // The session is an API token: it works on the API until sign-out, and not after.
        assert_eq!(app.get("/api/v0/coins/balance?userId=X", &token).await.status, StatusCode::OK);
        let csrf = b.csrf();
        let (status, _, location) = b.post("/dashboard/logout", &[("csrf", &csrf)]).await;
        assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/dashboard/login")));
        app.get("/api/v0/coins/balance?userId=X", &token).await.assert_error(401, "UNAUTHENTICATED");
        b.jar.insert("coins_session".into(), token);
        let (_, _, location) = b.get("/dashboard").await;
        assert_eq!(location.as_deref(), Some("/dashboard/login"));
    }

    async fn every_state_change_needs_the_csrf_token(app: &TestApp) {
        let mut b = Browser::new(app);
        b.get("/dashboard/login").await;
        // Even signing in.
        let (status, _, _) = b.post("/dashboard/login", &[("client_id", &app.admin_id), ("client_secret", &app.admin_secret)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        b.sign_in(&app.admin_id, &app.admin_secret).await;
        let create = [("configuration", "DEFAULT"), ("companyId", "SHOP"), ("event", "CSRF_EVENT"), ("amount", "5"), ("active", "true")];
        for csrf in [None, Some("forged"), Some("")] {
            let mut form = create.to_vec();
            if let Some(c) = csrf {
                form.push(("csrf", c));
            }
            let (status, body, _) = b.post("/dashboard/configs", &form).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{csrf:?}: {body}");
            assert!(body.contains("CSRF"));
        }
        for path in ["/dashboard/users/reverse", "/dashboard/users/adjust", "/dashboard/webhooks/retry", "/dashboard/webhooks/reminders", "/dashboard/campaigns/create", "/dashboard/campaigns/edit", "/dashboard/campaigns/end", "/dashboard/campaigns/delete", "/dashboard/logout", "/dashboard/configs/WCC100001"] {
            let (status, _, _) = b.post(path, &[("csrf", "forged")]).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
        assert_eq!(app.get("/api/v0/enkash-coins?event=CSRF_EVENT", &app.admin_token).await.assert_ok(), &json!([]), "nothing was created");
        // With the token it goes through.
        let csrf = b.csrf();
        let mut form = create.to_vec();
        form.push(("csrf", &csrf));
        let (status, _, location) = b.post("/dashboard/configs", &form).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(location.unwrap().starts_with("/dashboard/configs/WCC"));
    }

    async fn a_scoped_client_sees_only_its_companies_everywhere(app: &TestApp) {
        app.config("DEFAULT", "A", "E", 7).await;
        app.create_config(&app.admin_token, json!({"configuration": "CUSTOM", "companyId": "B", "event": "E", "amount": 4321})).await.assert_ok();
        app.allocate(&app.admin_token, "A", "E", "A-1", "UA").await.assert_ok();
        for i in 0..3 {
            app.allocate(&app.admin_token, "B", "E", &format!("B-{i}"), "UB").await.assert_ok();
        }
        let hook = app.post("/api/v0/coins/webhooks", &app.admin_token, json!({"companyId": "B", "url": "http://127.0.0.1:9/b", "events": ["coins.allocated"]})).await;
        let b_hook = hook.assert_ok()["webhookId"].as_str().unwrap().to_owned();
        app.post("/api/v0/coins/webhooks", &app.admin_token, json!({"companyId": "A", "url": "http://127.0.0.1:9/a", "events": ["coins.allocated"]})).await.assert_ok();
        let (id, secret) = app.create_client(&["A"]).await;
        let mut b = Browser::new(app);
        b.sign_in(&id, &secret).await;

        let (_, overview, _) = b.get("/dashboard").await;
        assert_eq!(chart_total(&overview, "issued"), 7, "only A's allocation");
        // The page's random tokens (the CSRF field, the client id) may spell anything, "UB" too.
        let overview = overview.replace(&b.csrf(), "").replace(&id, "");
        assert!(!overview.contains("12,963") && !overview.contains(">B<") && !overview.contains("UB"), "B's figures leak into the overview");
        let (status, page, _) = b.get("/dashboard?companyId=B").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a page answers with its refusal's status");
        assert!(page.contains("FORBIDDEN") && chart_total(&page, "issued") == 0, "another company's overview");
        // The admin sees both.
        let mut admin = Browser::new(app);
        admin.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, all, _) = admin.get("/dashboard").await;
        assert_eq!(chart_total(&all, "issued"), 3 * 4_321 + 7);

        let (_, configs, _) = b.get("/dashboard/configs").await;
        assert!(configs.contains(">A<") || configs.contains("DEFAULT"));
        assert!(!configs.contains("4321"), "B's CUSTOM configuration is listed");
        let (status, users, _) = b.get("/dashboard/users?userId=UB").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(users.contains("USER_NOT_FOUND") && !users.contains("user-balance"), "B's user is shown");
        let (_, users, _) = b.get("/dashboard/users?userId=UA").await;
        assert!(users.contains("id=\"user-balance\""));
        // A part that fails (a history cursor that is not one) shows its refusal under the
        // user's figures, and the page answers with its status.
        let (status, users, _) = b.get("/dashboard/users?userId=UA&cursor=not-a-cursor").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{users}");
        assert!(users.contains("id=\"user-balance\"") && users.contains("VALIDATION_FAILED") && !users.contains("<h2>History</h2>"), "{users}");
        let (status, hooks, _) = b.get(&format!("/dashboard/webhooks?webhookId={b_hook}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(hooks.contains("127.0.0.1:9/a") && !hooks.contains("127.0.0.1:9/b") && hooks.contains("WEBHOOK_NOT_FOUND"), "B's webhook is shown");
        // Reversing B's allocation through the form: refused, nothing changes.
        let csrf = b.csrf();
        let (status, page, _) = b.post("/dashboard/users/reverse", &[("csrf", &csrf), ("userId", "UB"), ("companyId", "B"), ("originalRequestId", "B-0"), ("requestId", "X-1")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(page.contains("FORBIDDEN"), "{page}");
        assert_eq!(app.balance("UB").await, 3 * 4_321);
        // Its member links are refused too.
        app.post("/api/v0/coins/users/UB/page-link", &app.token(&id, &secret).await, json!({})).await.assert_error(404, "USER_NOT_FOUND");
    }

    async fn a_users_page_shows_held_coins_until_they_activate(app: &TestApp) {
        let body = json!({"configuration": "CUSTOM", "companyId": "SHOP", "event": "BUY", "amount": 1234, "pendingDays": 3});
        app.create_config(&app.admin_token, body).await.assert_ok();
        app.allocate(&app.admin_token, "SHOP", "BUY", "HELD-1", "ASHA").await.assert_ok();
        let mut b = Browser::new(app);
        b.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, page, _) = b.get("/dashboard/users?userId=ASHA").await;
        assert!(page.contains(r#"id="user-pending"><span class="label">Held (not spendable yet)</span><span class="value" data-value="1234">1,234</span>"#), "{page}");
        assert!(page.contains(r#"<table class="pending">"#) && page.contains("HELD-1"), "the held allocation is listed");
        assert!(page.contains(r#"id="user-balance""#) && page.contains(r#"data-value="0""#), "nothing spendable yet");
        // Each allocation with its state and what remains of it after returns.
        app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"RET-1","originalRequestId":"HELD-1","coins":234}))
            .await
            .assert_ok();
        let (_, page, _) = b.get("/dashboard/users?userId=ASHA").await;
        let row = r#"<tr><td>HELD-1</td><td>BUY</td><td>PENDING</td><td><span class="num">1,234</span></td><td><span class="num">1,000</span></td><td></td><td>"#;
        assert!(page.contains(r#"<table class="allocations">"#) && page.contains(row), "{page}");
        app.clock.advance_ms(3 * 86_400_000);
        let (_, page, _) = b.get("/dashboard/users?userId=ASHA").await;
        assert!(page.contains(r#"id="user-pending"><span class="label">Held (not spendable yet)</span><span class="value" data-value="0">0</span>"#), "{page}");
        assert!(page.contains(r#"<tr><td>HELD-1</td><td>BUY</td><td>ACTIVE</td><td><span class="num">1,234</span></td><td><span class="num">1,000</span></td>"#), "{page}");
        assert!(!page.contains(r#"<table class="pending">"#) && page.contains("ACTIVATE"), "activated: the history shows it");
    }

    async fn the_balances_download_reads_a_past_day_from_the_ledger(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "E", 70).await;
        app.allocate(&app.admin_token, "SHOP", "E", "D1", "ASHA").await.assert_ok();
        let day_one = coins::clock::rfc3339(coins::clock::Clock::now_ms(&app.clock)).get(..10).unwrap().to_owned();
        app.clock.advance_ms(2 * 86_400_000);
        app.allocate(&app.admin_token, "SHOP", "E", "D2", "ASHA").await.assert_ok();
        let mut b = Browser::new(app);
        b.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, page, _) = b.get("/dashboard").await;
        assert!(page.contains(r#"<input name="asOfDay" id="xb-asOfDay" value="" type="date">"#), "{page}");
        // The end of the first day: one allocation; now: two.
        let (status, file, _) = b.get(&format!("/dashboard/exports/balances?companyId=SHOP&format=jsonl&asOfDay={day_one}")).await;
        assert_eq!(status, 200, "{file}");
        let first: Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
        let day_end = coins::clock::parse_rfc3339(&format!("{day_one}T00:00:00Z")).unwrap() + 86_400_000;
        assert_eq!((&first["balance"], &first["asOf"]), (&json!(70), &json!(coins::clock::rfc3339(day_end))));
        let api = app.get(&format!("/api/v0/coins/exports/balances?companyId=SHOP&format=jsonl&asOf={}", first["asOf"].as_str().unwrap()), &app.admin_token).await;
        assert_eq!(api.text, file, "the dashboard's file is the API's");
        let (_, now, _) = b.get("/dashboard/exports/balances?companyId=SHOP&format=jsonl&asOfDay=").await;
        assert_eq!(serde_json::from_str::<Value>(now.lines().next().unwrap()).unwrap()["balance"], json!(140));
        let (status, said, _) = b.get("/dashboard/exports/balances?companyId=SHOP&asOfDay=yesterday").await;
        assert_eq!(status, 400, "{said}");
        assert!(said.contains("asOfDay must be a day such as 2026-11-30"), "{said}");
    }

    async fn the_webhooks_page_sets_each_companys_expiry_reminders(app: &TestApp) {
        let hook = json!({"companyId":"SHOP","url":"http://127.0.0.1:9/hook","events":["coins.expiring"]});
        app.post("/api/v0/coins/webhooks", &app.admin_token, hook).await.assert_ok();
        let mut b = Browser::new(app);
        b.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, page, _) = b.get("/dashboard/webhooks").await;
        assert!(page.contains("<h2>Expiry reminders</h2>") && page.contains("<tr><td>SHOP</td><td>off</td></tr>"), "{page}");
        let csrf = b.csrf();
        let (status, page, _) = b.post("/dashboard/webhooks/reminders", &[("csrf", &csrf), ("companyId", "SHOP"), ("days", "1, 30 7")]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("SHOP reminds 30, 7, 1 days before coins expire.") && page.contains("<tr><td>SHOP</td><td>30, 7, 1</td></tr>"), "{page}");
        let api = app.get("/api/v0/coins/reminders?companyId=SHOP", &app.admin_token).await;
        assert_eq!(api.assert_ok()["expiryReminderDays"], json!([30, 7, 1]));
        // Refused as the API refuses it; nothing changes.
        let (_, page, _) = b.post("/dashboard/webhooks/reminders", &[("csrf", &csrf), ("companyId", "SHOP"), ("days", "7, 7")]).await;
        assert!(page.contains("expiryReminderDays repeats 7"), "{page}");
        let (_, page, _) = b.post("/dashboard/webhooks/reminders", &[("csrf", &csrf), ("companyId", "SHOP"), ("days", "soon")]).await;
        assert!(page.contains("expiryReminderDays must be a list of at most 3 whole numbers"), "{page}");
        assert_eq!(app.get("/api/v0/coins/reminders?companyId=SHOP", &app.admin_token).await.assert_ok()["expiryReminderDays"], json!([30, 7, 1]));
        // Empty turns them off.
        let (_, page, _) = b.post("/dashboard/webhooks/reminders", &[("csrf", &csrf), ("companyId", "SHOP"), ("days", "")]).await;
        assert!(page.contains("Expiry reminders of SHOP are off.") && page.contains("<tr><td>SHOP</td><td>off</td></tr>"), "{page}");
    }

    async fn the_overview_shows_what_users_owe_and_how_many_owe_it(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 50).await;
        for (request, user) in [("A1", "ASHA"), ("A2", "RAVI"), ("A3", "MIRA")] {
            app.allocate(&app.admin_token, "SHOP", "ORDER", request, user).await.assert_ok();
        }
        // ASHA then owes 150 and RAVI 10; MIRA owes nothing.
        for (request, user, coins) in [("FRAUD-1", "ASHA", -200), ("FRAUD-2", "RAVI", -60)] {
            let body = json!({"companyId":"SHOP","userId":user,"requestId":request,"coins":coins,"reason":"Fraudulent order","onShortfall":"NEGATIVE"});
            app.post("/api/v0/coins/adjust", &app.admin_token, body).await.assert_ok();
        }
        // Credits pay debt first: RAVI's next 50 clears his 10 and leaves him 40.
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A4", "RAVI").await.assert_ok();
        let mut admin = Browser::new(app);
        admin.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, page, _) = admin.get("/dashboard").await;
        let card = r#"<div class="card" id="debt"><span class="label">Owed (debt)</span><span class="value">150</span><span class="note">coins, by 1 users</span></div>"#;
        assert!(page.contains(card), "{page}");
    }

    async fn the_user_page_shows_the_tier_and_its_progress_and_the_overview_the_members_by_tier(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "VISIT", 100).await;
        let tiers = json!({"companyId":"SHOP","basis":"LIFETIME","retentionDays":365,"downgrade":"ONE_DOWN","tiers":[
            {"code":"BRONZE","name":"Bronze","threshold":0,"earnMultiplierBps":10000},{"code":"SILVER","name":"Silver","threshold":100,"earnMultiplierBps":12500},
            {"code":"GOLD","name":"Gold <best>","threshold":1000,"earnMultiplierBps":20000}]});
        app.send(reqwest::Method::PUT, "/api/v0/coins/tiers", Some(&app.admin_token), Some(&tiers)).await.assert_ok();
        app.allocate(&app.admin_token, "SHOP", "VISIT", "V1", "ASHA").await.assert_ok();
        app.allocate(&app.admin_token, "SHOP", "VISIT", "V2", "ASHA").await.assert_ok();
        app.allocate(&app.admin_token, "SHOP", "VISIT", "V3", "RAVI").await.assert_ok();
        app.allocate(&app.admin_token, "SHOP", "VISIT", "V4", "OMAR").await.assert_ok();
        let floor = json!({"companyId":"SHOP","tierCode":"GOLD","reason":"Status <match>"});
        app.send(reqwest::Method::PUT, "/api/v0/coins/users/OMAR/tier", Some(&app.admin_token), Some(&floor)).await.assert_ok();
        let mut b = Browser::new(app);
        b.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, page, _) = b.get("/dashboard/users?userId=ASHA").await;
        assert!(page.contains("<span class=\"value\" data-code=\"SILVER\">Silver</span>") && page.contains("earns ×1.25"), "{page}");
        assert!(page.contains("<progress id=\"tier-progress\" value=\"200\" max=\"1000\"") && page.contains("200 of 1,000 qualifying coins: 800 more for Gold &lt;best&gt;"), "{page}");
        assert!(page.contains("<table class=\"tier-changes\">") && page.contains("<td>UPGRADED</td><td>BRONZE</td><td>SILVER</td>"), "{page}");
        let (_, page, _) = b.get("/dashboard/users?userId=OMAR").await;
        assert!(page.contains("Gold &lt;best&gt;") && page.contains("staff floor: Status &lt;match&gt;") && page.contains("the top tier"), "{page}");
        let (_, page, _) = b.get("/dashboard?companyId=SHOP").await;
        assert!(page.contains("<h2>Members by tier <small>SHOP</small></h2>") && page.contains("class=\"chart-tiers\""), "{page}");
        assert!(
            page.contains("<tr><td>Bronze</td><td>BRONZE</td><td><span class=\"num\">0</span></td><td><span class=\"num\">0</span></td>")
                && page.contains("<tr><td>Silver</td><td>SILVER</td><td><span class=\"num\">100</span></td><td><span class=\"num\">2</span></td><td><span class=\"num\">66.6 %</span></td></tr>"),
            "{page}"
        );
    }

    async fn the_campaigns_page_starts_edits_ends_and_deletes_campaigns(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "BUY", 10).await;
        let mut b = Browser::new(app);
        b.sign_in(&app.admin_id, &app.admin_secret).await;
        let (_, page, _) = b.get("/dashboard/campaigns?companyId=SHOP").await;
        assert!(page.contains("No campaigns for SHOP yet.") && page.contains("<h2>Start a campaign</h2>"), "{page}");
        let csrf = b.csrf();
        let now = app.clock.now_ms();
        let (start, end) = (coins::clock::rfc3339(now - 60_000), coins::clock::rfc3339(now + 86_400_000));
        let form = [("csrf", csrf.as_str()), ("companyId", "SHOP"), ("name", "Launch <week>"), ("events", "BUY"), ("startsAt", &start), ("endsAt", &end),
            ("reward", "multiplier"), ("value", "20000"), ("maxTriggersPerUser", "")];
        let (status, page, _) = b.post("/dashboard/campaigns/create", &form).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("Campaign CMP100001 is created.") && page.contains("<td>Launch &lt;week&gt;</td>") && page.contains("×2 (20000 bps)"), "{page}");
        app.allocate(&app.admin_token, "SHOP", "BUY", "B1", "ASHA").await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 20, "the campaign applies at once");
        let (_, page, _) = b.get("/dashboard/campaigns?companyId=SHOP").await;
        assert!(page.contains("<td>active</td><td><span class=\"num\">1</span></td>") && page.contains("End now"), "{page}");
        // Refused as the API refuses it.
        let mut bad = form;
        bad[7] = ("value", "10000");
        let (_, page, _) = b.post("/dashboard/campaigns/create", &bad).await;
        assert!(page.contains("multiplierBps must be a whole number from 10001 to 1000000"), "{page}");
        // A scheduled one is edited, then deleted; the running one is ended.
        let later = [("csrf", csrf.as_str()), ("companyId", "SHOP"), ("name", "Weekend"), ("events", ""), ("startsAt", &end), ("endsAt", &coins::clock::rfc3339(now + 2 * 86_400_000)),
            ("reward", "bonus"), ("value", "50"), ("maxTriggersPerUser", "2")];
        let (_, page, _) = b.post("/dashboard/campaigns/create", &later).await;
        assert!(page.contains("Campaign CMP100002 is created.") && page.contains("+50 coins") && page.contains("every event"), "{page}");
        let (_, page, _) = b.get("/dashboard/campaigns?companyId=SHOP&edit=CMP100002").await;
        assert!(page.contains("<h2>Edit CMP100002</h2>") && page.contains("value=\"Weekend\""), "{page}");
        let mut edit = later;
        edit[3] = ("name", "Long weekend");
        let edit: Vec<(&str, &str)> = edit.into_iter().chain([("campaignId", "CMP100002")]).collect();
        let (_, page, _) = b.post("/dashboard/campaigns/edit", &edit).await;
        assert!(page.contains("Campaign CMP100002 is saved.") && page.contains("<td>Long weekend</td>"), "{page}");
        let (_, page, _) = b.post("/dashboard/campaigns/delete", &[("csrf", &csrf), ("campaignId", "CMP100002")]).await;
        assert!(page.contains("Campaign CMP100002 is deleted.") && !page.contains("Long weekend"), "{page}");
        let (_, page, _) = b.post("/dashboard/campaigns/end", &[("csrf", &csrf), ("campaignId", "CMP100001")]).await;
        assert!(page.contains("Campaign CMP100001 ends at "), "{page}");
        app.clock.advance_ms(6_000);
        let (_, page, _) = b.get("/dashboard/campaigns?companyId=SHOP").await;
        assert!(page.contains("<td>ended</td>"), "{page}");
        app.allocate(&app.admin_token, "SHOP", "BUY", "B2", "ASHA").await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 30, "an ended campaign no longer applies");
    }

    async fn member_links_show_one_user_expire_and_cannot_be_altered(app: &TestApp) {
        app.config("DEFAULT", "SHOP", "E", 40).await;
        app.allocate(&app.admin_token, "SHOP", "E", "R-1", "MEMBER").await.assert_ok();
        app.allocate(&app.admin_token, "SHOP", "E", "R-2", "OTHER").await.assert_ok();
        let res = app.post("/api/v0/coins/users/MEMBER/page-link", &app.admin_token, json!({})).await;
        let link = res.assert_ok().clone();
        assert_eq!(link.as_object().unwrap().keys().collect::<Vec<_>>(), ["expiresAt", "url"]);
        let url = link["url"].as_str().unwrap().to_owned();
        assert!(url.starts_with(&format!("{}/member/", app.base)), "{url}");
        let http = reqwest::Client::new();
        let res = http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        let page = res.text().await.unwrap();
        assert!(page.contains("data-value=\"40\"") && page.contains("INR 40.00"), "{page}");
        assert!(!page.contains("OTHER"));
        // Altered: another user's id under the same signature.
        let token = url.rsplit('/').next().unwrap();
        let (payload, tag) = token.split_once('.').unwrap();
        use base64::Engine;
        let claims = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.replace("MEMBER", "OTHER"));
        for bad in [format!("{forged}.{tag}"), format!("{payload}.{tag}A"), "garbage".to_owned()] {
            let res = http.get(format!("{}/member/{bad}", app.base)).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{bad}");
            assert!(!res.text().await.unwrap().contains("data-value"));
        }
        // Expired after 15 minutes.
        app.clock.advance_ms(15 * 60_000 + 1);
        let res = http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::GONE);
        app.post("/api/v0/coins/users/NOBODY/page-link", &app.admin_token, json!({})).await.assert_error(404, "USER_NOT_FOUND");
    }
}
