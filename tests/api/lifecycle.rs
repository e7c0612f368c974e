//! The coin lifecycle over HTTP: redeem, reverse, expire, caps, bulk, coin value, user views.

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::both_backends;
use coins::clock::Clock;

use crate::helpers::*;

const DAY_MS: i64 = 86_400_000;

impl TestApp {
    async fn redeem(&self, company: &str, user: &str, request_id: &str, amount: Value) -> Resp {
        let mut body = json!({"companyId": company, "userId": user, "requestId": request_id});
        for (k, v) in amount.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.post("/api/v0/coins/redeem", &self.admin_token, body).await
    }

    async fn reverse(&self, company: &str, request_id: &str, original: &str) -> Resp {
        self.post("/api/v0/coins/reverse", &self.admin_token, json!({"companyId": company, "requestId": request_id, "originalRequestId": original})).await
    }

    async fn summary(&self, user: &str) -> Value {
        self.get(&format!("/api/v0/coins/users/{user}"), &self.admin_token).await.assert_ok().clone()
    }

    async fn history(&self, user: &str) -> Vec<Value> {
        let res = self.get(&format!("/api/v0/coins/transactions?userId={user}&limit=500"), &self.admin_token).await;
        res.assert_ok()["entries"].as_array().unwrap().clone()
    }

    async fn config_with(&self, body: Value) -> String {
        self.create_config(&self.admin_token, body).await.assert_ok()["coinConfigId"].as_str().unwrap().to_owned()
    }
}

fn types(entries: &[Value]) -> Vec<(String, i64)> {
    entries.iter().map(|e| (e["type"].as_str().unwrap().to_owned(), e["coins"].as_i64().unwrap())).collect()
}

both_backends! {
    async fn earn_partly_redeem_return_the_purchase_and_watch_the_rest_expire(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"SHOP","event":"PURCHASE","amount":100,"validityDays":30})).await;
        app.allocate(&app.admin_token, "SHOP", "PURCHASE", "EARN-1", "ASHA").await.assert_ok();
        let res = app.redeem("SHOP", "ASHA", "SPEND-1", json!({"coins": 30})).await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"SPEND-1","coins":30,"currency":"INR","amountMinor":3000,"balance":70}));
        let res = app.reverse("SHOP", "RETURN-1", "SPEND-1").await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"RETURN-1","originalRequestId":"SPEND-1","kind":"REVERSE","coins":30,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":0,"amountRefundedMinor":null,"balance":100,"pendingBalance":0}));
        let s = app.summary("ASHA").await;
        assert_eq!((s["balance"].clone(), s["lifetimeEarned"].clone(), s["lifetimeRedeemed"].clone(), s["lifetimeExpired"].clone()),
                   (json!(100), json!(100), json!(0), json!(0)));
        assert_eq!(s["expiringSoon"].as_array().unwrap().len(), 1, "expires within 30 days");
        assert_eq!(s["expiringSoon"][0]["coins"], json!(100));

        app.clock.advance_ms(30 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 0, "expired coins stop counting before any sweep");
        let s = app.summary("ASHA").await;
        assert_eq!((s["balance"].clone(), s["lifetimeExpired"].clone(), s["expiringSoon"].clone()), (json!(0), json!(100), json!([])));
        let entries = app.history("ASHA").await;
        assert_eq!(types(&entries), [("EXPIRE".into(), -100), ("REVERSE".into(), 30), ("REDEEM".into(), -30), ("ALLOCATE".into(), 100)]);
        assert_eq!(entries[0]["balanceAfter"], json!(0));
        let keys: Vec<&str> = entries[3].as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            ["amountMinor","balanceAfter","clientId","coinConfigId","coins","createdAt","effectiveAt","entryId","event","expiresAt","orderId",
             "originalRequestId","pendingAfter","pendingCoins","reason","requestId","type"]
        );
        // The first version's fields come first, in their order, on the wire.
        let raw = app.get("/api/v0/coins/transactions?userId=ASHA", &app.admin_token).await.text;
        let first = raw.find(r#""entryId""#).unwrap();
        let order: Vec<usize> = ["\"entryId\"", "\"type\"", "\"coins\"", "\"balanceAfter\"", "\"event\"", "\"requestId\"", "\"coinConfigId\"", "\"createdAt\"", "\"expiresAt\"", "\"pendingCoins\""]
            .iter()
            .map(|k| first + raw[first..].find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{raw}");
        assert!(entries[3]["expiresAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(entries[0]["requestId"], json!(null));
        assert_eq!(app.db.store.sweep_expired(app.clock.now_ms()).await.unwrap().lots_expired, 0, "already settled; sweeping again does nothing");
    }

    async fn redemption_by_currency_rounds_up_and_replays_exactly(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 50).await;
        app.allocate(&app.admin_token, "C", "E", "A1", "U").await.assert_ok();
        let res = app.post("/api/v0/coins/coin-value", &app.admin_token, json!({})).await;
        res.assert_error(405, "METHOD_NOT_ALLOWED");
        let res = app.send(reqwest::Method::PUT, "/api/v0/coins/coin-value", Some(&app.admin_token),
            Some(&json!({"companyId":"C","currency":"INR","minorUnitsPerCoin":25}))).await;
        assert_eq!(res.assert_ok(), &json!({"companyId":"C","currency":"INR","minorUnitsPerCoin":25}));
        let res = app.redeem("C", "U", "R1", json!({"amountMinor": 101})).await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"R1","coins":5,"currency":"INR","amountMinor":101,"balance":45}));
        let again = app.redeem("C", "U", "R1", json!({"amountMinor": 101})).await;
        assert_eq!(again.text, res.text);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        app.redeem("C", "U", "R1", json!({"amountMinor": 102})).await.assert_error(409, "REQUEST_ID_CONFLICT");
        app.redeem("C", "U", "R1", json!({"coins": 5})).await.assert_error(409, "REQUEST_ID_CONFLICT");
        app.redeem("C", "U", "A1", json!({"coins": 1})).await.assert_error(409, "REQUEST_ID_CONFLICT");
        app.allocate(&app.admin_token, "C", "E", "R1", "U").await.assert_error(409, "REQUEST_ID_CONFLICT");
        assert_eq!(app.balance("U").await, 45);
    }

    async fn redemption_refusals_change_nothing(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 10).await;
        app.allocate(&app.admin_token, "C", "E", "A1", "U").await.assert_ok();
        let msg = app.redeem("C", "U", "R1", json!({"coins": 11})).await.assert_error(409, "INSUFFICIENT_BALANCE").to_owned();
        assert!(msg.contains("10") && msg.contains("11"), "{msg}");
        app.redeem("C", "NOBODY", "R2", json!({"coins": 1})).await.assert_error(404, "USER_NOT_FOUND");
        // Another company's user looks exactly like one never credited.
        app.redeem("D", "U", "R3", json!({"coins": 1})).await.assert_error(404, "USER_NOT_FOUND");
        for amount in [json!({}), json!({"coins": 1, "amountMinor": 100}), json!({"coins": 0}), json!({"coins": 1.5}), json!({"amountMinor": -5})] {
            let res = app.redeem("C", "U", "R4", amount.clone()).await;
            res.assert_error(400, "VALIDATION_FAILED");
        }
        let other = app.company_token(&["D"]).await;
        let res = app.post("/api/v0/coins/redeem", &other, json!({"companyId":"C","userId":"U","requestId":"R5","coins":1})).await;
        res.assert_error(403, "FORBIDDEN");
        assert_eq!(app.balance("U").await, 10);
        // The refused request ids are still free.
        app.redeem("C", "U", "R1", json!({"coins": 10})).await.assert_ok();
        assert_eq!(app.balance("U").await, 0);
    }

    async fn debits_take_the_soonest_expiring_lots_first(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"LONG","amount":10,"validityDays":20})).await;
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"NEVER","amount":10})).await;
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"SHORT","amount":10,"validityDays":5})).await;
        app.allocate(&app.admin_token, "C", "LONG", "A1", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "NEVER", "A2", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "SHORT", "A3", "U").await.assert_ok();
        app.redeem("C", "U", "R1", json!({"coins": 13})).await.assert_ok();
        // SHORT (5 days) is used up, LONG (20 days) lost 3, NEVER is untouched.
        let soon = app.summary("U").await["expiringSoon"].clone();
        assert_eq!(soon.as_array().unwrap().iter().map(|l| l["coins"].as_i64().unwrap()).collect::<Vec<_>>(), [7]);
        app.clock.advance_ms(21 * DAY_MS);
        assert_eq!(app.balance("U").await, 10, "only the never-expiring lot is left");
    }

    async fn reversing_an_allocation_takes_its_coins_back_once(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 10).await;
        app.allocate(&app.admin_token, "C", "E", "A1", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "E", "A2", "U").await.assert_ok();
        let res = app.reverse("C", "X1", "A1").await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"X1","originalRequestId":"A1","kind":"REVERSE","coins":-10,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":0,"amountRefundedMinor":null,"balance":10,"pendingBalance":0}));
        let replay = app.reverse("C", "X1", "A1").await;
        assert_eq!(replay.text, res.text);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        app.reverse("C", "X2", "A1").await.assert_error(409, "ALREADY_REVERSED");
        app.reverse("C", "X1", "A2").await.assert_error(409, "REQUEST_ID_CONFLICT");
        app.reverse("C", "X3", "X1").await.assert_error(409, "NOT_REVERSIBLE");
        app.reverse("C", "X4", "MISSING").await.assert_error(404, "NOT_FOUND");
        app.reverse("OTHER", "X5", "A2").await.assert_error(404, "NOT_FOUND");
        let s = app.summary("U").await;
        assert_eq!((s["balance"].clone(), s["lifetimeEarned"].clone()), (json!(10), json!(10)));
        // Once spent, an allocation cannot be taken back.
        app.redeem("C", "U", "R1", json!({"coins": 5})).await.assert_ok();
        app.reverse("C", "X6", "A2").await.assert_error(409, "INSUFFICIENT_BALANCE");
        assert_eq!(app.balance("U").await, 5);
    }

    async fn reversing_a_redemption_restores_its_lots_and_their_expiry(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":10,"validityDays":1})).await;
        app.allocate(&app.admin_token, "C", "E", "A1", "U").await.assert_ok();
        app.redeem("C", "U", "R1", json!({"coins": 4})).await.assert_ok();
        app.clock.advance_ms(2 * DAY_MS);
        assert_eq!(app.balance("U").await, 0);
        // The 4 coins go back to a lot that has expired meanwhile: they expire again at once.
        let res = app.reverse("C", "X1", "R1").await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"X1","originalRequestId":"R1","kind":"REVERSE","coins":4,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":0,"amountRefundedMinor":null,"balance":0,"pendingBalance":0}));
        let entries = app.history("U").await;
        assert_eq!(types(&entries), [("EXPIRE".into(), -4), ("REVERSE".into(), 4), ("EXPIRE".into(), -6), ("REDEEM".into(), -4), ("ALLOCATE".into(), 10)]);
        let s = app.summary("U").await;
        assert_eq!((s["lifetimeEarned"].clone(), s["lifetimeRedeemed"].clone(), s["lifetimeExpired"].clone()), (json!(10), json!(0), json!(10)));
    }

    async fn reversing_an_allocation_whose_lot_expired_never_takes_the_expired_coins_twice(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"SHORT","amount":100,"validityDays":30})).await;
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"KEEP","amount":50})).await;
        app.allocate(&app.admin_token, "C", "SHORT", "A1", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "KEEP", "A2", "U").await.assert_ok();
        app.redeem("C", "U", "R1", json!({"coins": 30})).await.assert_ok(); // from A1's lot, the sooner to expire
        app.clock.advance_ms(30 * DAY_MS); // the 70 left of A1 expire
        assert_eq!(app.balance("U").await, 50);
        // A1 credited 100: 30 were spent and 70 already left through EXPIRE, so only 30 are taken.
        let res = app.reverse("C", "X1", "A1").await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"X1","originalRequestId":"A1","kind":"REVERSE","coins":-30,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":0,"amountRefundedMinor":null,"balance":20,"pendingBalance":0}));
        let entries = app.history("U").await;
        assert_eq!(types(&entries), [("REVERSE".into(), -30), ("EXPIRE".into(), -70), ("REDEEM".into(), -30), ("ALLOCATE".into(), 50), ("ALLOCATE".into(), 100)]);
        let s = app.summary("U").await;
        assert_eq!((s["balance"].clone(), s["lifetimeEarned"].clone(), s["lifetimeRedeemed"].clone(), s["lifetimeExpired"].clone()),
                   (json!(20), json!(120), json!(30), json!(70)), "balance = earned - redeemed - expired");
        // An allocation whose lot expired whole is reversed for nothing.
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"BRIEF","amount":5,"validityDays":1})).await;
        app.allocate(&app.admin_token, "C", "BRIEF", "A3", "U").await.assert_ok();
        app.clock.advance_ms(2 * DAY_MS);
        let res = app.reverse("C", "X2", "A3").await;
        assert_eq!(res.assert_ok(), &json!({"requestId":"X2","originalRequestId":"A3","kind":"REVERSE","coins":0,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":0,"amountRefundedMinor":null,"balance":20,"pendingBalance":0}));
        app.reverse("C", "X3", "A3").await.assert_error(409, "ALREADY_REVERSED");
    }

    async fn caps_limit_allocations_per_user_per_day_and_ever(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"DAILY","amount":1,"maxPerUserPerDay":2})).await;
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"ONCE","amount":5,"maxPerUser":1})).await;
        app.allocate(&app.admin_token, "C", "DAILY", "D1", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "DAILY", "D2", "U").await.assert_ok();
        let msg = app.allocate(&app.admin_token, "C", "DAILY", "D3", "U").await.assert_error(409, "LIMIT_REACHED").to_owned();
        assert!(msg.contains("maxPerUserPerDay"), "{msg}");
        app.allocate(&app.admin_token, "C", "DAILY", "D1", "U").await.assert_ok(); // a replay is not a new allocation
        app.allocate(&app.admin_token, "C", "DAILY", "D4", "V").await.assert_ok(); // caps are per user
        app.clock.advance_ms(DAY_MS);
        app.allocate(&app.admin_token, "C", "DAILY", "D3", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "ONCE", "O1", "U").await.assert_ok();
        app.allocate(&app.admin_token, "C", "ONCE", "O2", "U").await.assert_error(409, "LIMIT_REACHED");
        assert_eq!(app.balance("U").await, 8);
    }

    async fn a_hundred_concurrent_allocations_under_a_cap_of_three_credit_exactly_three(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":7,"maxPerUser":3})).await;
        let mut set = JoinSet::new();
        for i in 0..100 {
            let (http, url, token) = (app.http.clone(), app.url("/api/v0/enkash-coins/allocate-coin"), app.admin_token.clone());
            set.spawn(async move {
                let body = json!({"companyId":"C","event":"E","requestId": format!("R{i}"),"userId":"U"});
                http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
            });
        }
        let mut statuses = Vec::new();
        while let Some(s) = set.join_next().await {
            statuses.push(s.unwrap());
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3);
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 97);
        assert_eq!(app.balance("U").await, 21);
    }

    async fn concurrent_redemptions_never_overdraw(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 10).await;
        app.allocate(&app.admin_token, "C", "E", "A1", "U").await.assert_ok();
        let mut set = JoinSet::new();
        for i in 0..20 {
            let (http, url, token) = (app.http.clone(), app.url("/api/v0/coins/redeem"), app.admin_token.clone());
            set.spawn(async move {
                let body = json!({"companyId":"C","userId":"U","requestId": format!("R{}", i % 10),"coins": 3});
                http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
            });
        }
        while let Some(s) = set.join_next().await {
            assert!(matches!(s.unwrap(), 200 | 409));
        }
        assert_eq!(app.balance("U").await, 1, "three redemptions of 3 fit in 10");
    }

    async fn bulk_allocation_reports_each_item_in_order(app: &TestApp) {
        app.config_with(json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":2,"maxPerUser":1})).await;
        app.config("DEFAULT", "C", "F", 3).await;
        app.allocate(&app.admin_token, "C", "F", "OLD", "U0").await.assert_ok();
        let token = app.company_token(&["C"]).await;
        let body = json!({"allocations": [
            {"companyId":"C","event":"F","requestId":"B1","userId":"U1"},
            {"companyId":"C","event":"F","requestId":"OLD","userId":"U0"},
            {"companyId":"C","event":"F","requestId":"B2","userId":"bad user"},
            {"companyId":"C","event":"E","requestId":"B3","userId":"U1"},
            {"companyId":"C","event":"E","requestId":"B4","userId":"U1"},
            {"companyId":"OTHER","event":"F","requestId":"B5","userId":"U9"},
            {"companyId":"C","event":"NONE","requestId":"B6","userId":"U1"},
            {"companyId":"C","event":"F","requestId":"B1","userId":"U2"},
            "not an object"
        ]});
        let res = app.post("/api/v0/enkash-coins/allocate-coins", &token, body).await;
        let p = res.assert_ok();
        assert_eq!((p["allocated"].clone(), p["replayed"].clone(), p["failed"].clone()), (json!(2), json!(1), json!(6)));
        let got: Vec<(Value, Value, Value, Value)> = p["results"].as_array().unwrap().iter()
            .map(|r| (r["requestId"].clone(), r["status"].clone(), r["coins"].clone(), r["errorCode"].clone())).collect();
        assert_eq!(got, vec![
            (json!("B1"), json!("ALLOCATED"), json!(3), json!(null)),
            (json!("OLD"), json!("REPLAYED"), json!(3), json!(null)),
            (json!("B2"), json!("FAILED"), json!(null), json!("VALIDATION_FAILED")),
            (json!("B3"), json!("ALLOCATED"), json!(2), json!(null)),
            (json!("B4"), json!("FAILED"), json!(null), json!("LIMIT_REACHED")),
            (json!("B5"), json!("FAILED"), json!(null), json!("FORBIDDEN")),
            (json!("B6"), json!("FAILED"), json!(null), json!("COIN_CONFIG_NOT_FOUND")),
            (json!("B1"), json!("FAILED"), json!(null), json!("REQUEST_ID_CONFLICT")),
            (json!(null), json!("FAILED"), json!(null), json!("VALIDATION_FAILED")),
        ]);
        let first = &p["results"][0];
        let mut keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["coins", "errorCode", "message", "requestId", "status"]);
        assert!(p["results"][2]["message"].as_str().unwrap().contains("userId"));
        assert_eq!(app.balance("U1").await, 5);
    }

    async fn bulk_allocation_takes_one_to_a_thousand_items(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 1).await;
        let items: Vec<Value> = (0..1000).map(|i| json!({"companyId":"C","event":"E","requestId": format!("R{i}"),"userId": format!("U{}", i % 37)})).collect();
        let res = app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({"allocations": items})).await;
        assert_eq!(res.assert_ok()["allocated"], json!(1000));
        let again = app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({"allocations": items})).await;
        assert_eq!(again.assert_ok()["replayed"], json!(1000));
        let total: i64 = futures_sum(app, 37).await;
        assert_eq!(total, 1000);
        let mut too_many = items.clone();
        too_many.push(json!({"companyId":"C","event":"E","requestId":"X","userId":"U"}));
        app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({"allocations": too_many})).await.assert_error(400, "VALIDATION_FAILED");
        app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({"allocations": []})).await.assert_error(400, "VALIDATION_FAILED");
        app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({})).await.assert_error(400, "VALIDATION_FAILED");
    }

    async fn history_pages_are_stable_while_new_entries_arrive(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 1).await;
        for i in 0..7 {
            app.allocate(&app.admin_token, "C", "E", &format!("R{i}"), "U").await.assert_ok();
        }
        let page = |cursor: Option<String>| async move {
            let path = match cursor {
                Some(c) => format!("/api/v0/coins/transactions?userId=U&limit=3&cursor={c}"),
                None => "/api/v0/coins/transactions?userId=U&limit=3".to_owned(),
            };
            app.get(&path, &app.admin_token).await.assert_ok().clone()
        };
        let first = page(None).await;
        let ids = |p: &Value| p["entries"].as_array().unwrap().iter().map(|e| e["requestId"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&first), ["R6", "R5", "R4"]);
        app.allocate(&app.admin_token, "C", "E", "R7", "U").await.assert_ok();
        let second = page(first["nextCursor"].as_str().map(str::to_owned)).await;
        assert_eq!(ids(&second), ["R3", "R2", "R1"]);
        let third = page(second["nextCursor"].as_str().map(str::to_owned)).await;
        assert_eq!(ids(&third), ["R0"]);
        assert_eq!(third["nextCursor"], json!(null));
        assert_eq!(first["entries"][0]["balanceAfter"], json!(7));
        for bad in ["limit=0", "limit=501", "limit=x", "cursor=nope"] {
            app.get(&format!("/api/v0/coins/transactions?userId=U&{bad}"), &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
        }
        app.get("/api/v0/coins/transactions?userId=NOBODY", &app.admin_token).await.assert_error(404, "USER_NOT_FOUND");
        app.get("/api/v0/coins/users/NOBODY", &app.admin_token).await.assert_error(404, "USER_NOT_FOUND");
        let other = app.company_token(&["D"]).await;
        app.get("/api/v0/coins/users/U", &other).await.assert_error(404, "USER_NOT_FOUND");
        app.get("/api/v0/coins/transactions?userId=U", &other).await.assert_error(404, "USER_NOT_FOUND");
    }

    async fn every_configuration_change_lands_in_the_audit_trail(app: &TestApp) {
        let token = app.company_token(&["C"]).await;
        let id = app.create_config(&token, json!({"configuration":"CUSTOM","companyId":"C","event":"E","amount":5})).await.assert_ok()["coinConfigId"].as_str().unwrap().to_owned();
        app.patch(&format!("/api/v0/enkash-coins/{id}"), &token, json!({"amount": 6})).await.assert_ok();
        app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"maxPerUser": 4, "active": false})).await.assert_ok();
        let res = app.get(&format!("/api/v0/enkash-coins/{id}/history"), &token).await;
        let trail = res.assert_ok().as_array().unwrap().clone();
        assert_eq!(trail.len(), 3);
        assert_eq!(trail[0]["action"], json!("CREATE"));
        assert_eq!(trail[0]["before"], json!(null));
        assert_eq!(trail[0]["after"]["amount"], json!(5));
        assert_eq!(trail[1]["before"]["amount"], json!(5));
        assert_eq!(trail[1]["after"]["amount"], json!(6));
        assert_eq!(trail[2]["clientId"], json!(app.admin_id));
        assert_eq!((trail[2]["after"]["maxPerUser"].clone(), trail[2]["after"]["active"].clone()), (json!(4), json!(false)));
        assert!(trail[2]["at"].as_str().unwrap().ends_with('Z'));
        let outsider = app.company_token(&["D"]).await;
        app.get(&format!("/api/v0/enkash-coins/{id}/history"), &outsider).await.assert_error(403, "FORBIDDEN");
    }

    async fn configurations_can_be_listed_and_filtered_within_scope(app: &TestApp) {
        let d = app.config("DEFAULT", "X", "E1", 1).await;
        let c1 = app.config("CUSTOM", "C1", "E1", 2).await;
        let c2 = app.config("CUSTOM", "C2", "E1", 3).await;
        let e2 = app.config("DEFAULT", "X", "E2", 4).await;
        let ids = |res: &Resp| res.assert_ok().as_array().unwrap().iter().map(|c| c["coinConfigId"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&app.get("/api/v0/enkash-coins", &app.admin_token).await), [d.clone(), c1.clone(), c2.clone(), e2.clone()]);
        assert_eq!(ids(&app.get("/api/v0/enkash-coins?event=E1&configuration=CUSTOM", &app.admin_token).await), [c1.clone(), c2.clone()]);
        assert_eq!(ids(&app.get("/api/v0/enkash-coins?companyId=C2", &app.admin_token).await), std::slice::from_ref(&c2));
        let token = app.company_token(&["C1"]).await;
        assert_eq!(ids(&app.get("/api/v0/enkash-coins", &token).await), [d, c1, e2]);
        app.get("/api/v0/enkash-coins?configuration=other", &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
    }

    async fn coin_values_default_to_one_rupee_and_are_scoped(app: &TestApp) {
        let get = |q: &'static str| async move { app.get(&format!("/api/v0/coins/coin-value{q}"), &app.admin_token).await.assert_ok().clone() };
        assert_eq!(get("").await, json!({"companyId":null,"currency":"INR","minorUnitsPerCoin":100}));
        assert_eq!(get("?companyId=C").await, json!({"companyId":"C","currency":"INR","minorUnitsPerCoin":100}));
        let put = |token: String, body: Value| async move { app.send(reqwest::Method::PUT, "/api/v0/coins/coin-value", Some(&token), Some(&body)).await };
        put(app.admin_token.clone(), json!({"companyId":null,"currency":"USD","minorUnitsPerCoin":1})).await.assert_ok();
        assert_eq!(get("?companyId=C").await, json!({"companyId":"C","currency":"USD","minorUnitsPerCoin":1}));
        let token = app.company_token(&["C"]).await;
        put(token.clone(), json!({"companyId":"C","currency":"INR","minorUnitsPerCoin":25})).await.assert_ok();
        assert_eq!(get("?companyId=C").await["minorUnitsPerCoin"], json!(25));
        assert_eq!(get("?companyId=D").await["currency"], json!("USD"));
        put(token.clone(), json!({"companyId":null,"currency":"INR","minorUnitsPerCoin":5})).await.assert_error(403, "FORBIDDEN");
        put(token.clone(), json!({"companyId":"D","currency":"INR","minorUnitsPerCoin":5})).await.assert_error(403, "FORBIDDEN");
        app.get("/api/v0/coins/coin-value?companyId=D", &token).await.assert_error(403, "FORBIDDEN");
        for bad in [json!({"companyId":"C","currency":"inr","minorUnitsPerCoin":5}), json!({"companyId":"C","currency":"INR","minorUnitsPerCoin":0}),
                    json!({"companyId":"C","currency":"INR"})] {
            put(token.clone(), bad).await.assert_error(400, "VALIDATION_FAILED");
        }
    }
}

async fn futures_sum(app: &TestApp, users: usize) -> i64 {
    let mut total = 0;
    for u in 0..users {
        total += app.balance(&format!("U{u}")).await;
    }
    total
}

/// The background sweeper writes EXPIRE entries by itself, and stops with the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sweeper_writes_expiry_entries_on_its_own() {
    let mut settings = coins::config::ServeSettings::for_tests();
    settings.sweep_interval = std::time::Duration::from_millis(20);
    let app = spawn_app_with(Backend::Sqlite, settings).await.unwrap();
    app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":9,"validityDays":1})).await.assert_ok();
    app.allocate(&app.admin_token, "C", "E", "A1", "U").await.assert_ok();
    app.clock.advance_ms(DAY_MS);
    // Bounded wait for the sweeper's own pass (it runs every 20 ms); reads are not used, since
    // they would settle the expiry themselves.
    let user = coins::domain::UserId::parse("U").unwrap();
    let mut swept = false;
    for _ in 0..250 {
        let entries = app.store().transactions(&user, None, 10).await.unwrap();
        if entries.iter().any(|e| e.kind == coins::domain::ledger::EntryKind::Expire) {
            swept = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(swept, "the sweeper wrote no EXPIRE entry within 5 s");
    app.assert_ledger_consistent().await;
    app.stop().await;
}
