//! Commerce-grade earning on both backends, with exact wire shapes: earning a percentage of the
//! purchase value (minimum spend, cap, rounding), allocations that earn nothing, order ids (a till
//! retrying under a new requestId credits once, 20 at once too), aliases, and the allocation
//! record that shows all of it.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const ALLOCATE: &str = "/api/v0/enkash-coins/allocate-coin";

async fn percent_config(app: &TestApp, event: &str, extra: Value) -> Value {
    let mut body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":event,"amountType":"PERCENT","rateBps":200});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_config(&app.admin_token, body).await.assert_ok().clone()
}

async fn record(app: &TestApp, request_id: &str) -> Value {
    app.get(&format!("/api/v0/coins/allocations/{request_id}?companyId=SHOP"), &app.admin_token).await.assert_ok().clone()
}

async fn buy(app: &TestApp, body: Value) -> Resp {
    app.post(ALLOCATE, &app.admin_token, body).await
}

both_backends! {
    async fn two_percent_of_499_99_earns_9_floored_and_10_rounded_half_up(app: &TestApp) {
        let floor = percent_config(app, "BUY", json!({})).await;
        assert_eq!(
            floor,
            json!({"coinConfigId": floor["coinConfigId"], "configuration":"CUSTOM","companyId":"SHOP","event":"BUY","amount":null,
                   "validityDays":null,"maxPerUserPerDay":null,"maxPerUser":null,"active":true,
                   "amountType":"PERCENT","rateBps":200,"minAmountMinor":null,"maxCoinsPerAllocation":null,"rounding":"FLOOR","pendingDays":null,"tierMultiplier":true})
        );
        percent_config(app, "BUY_HALF_UP", json!({"rounding":"HALF_UP"})).await;
        let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","amountMinor":49999,"currency":"INR"})).await;
        assert_eq!(res.text, r#"{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}"#);
        buy(app, json!({"companyId":"SHOP","event":"BUY_HALF_UP","requestId":"P2","userId":"ASHA","amountMinor":49999})).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 19);

        let p1 = record(app, "P1").await;
        let created = p1["createdAt"].as_str().unwrap().to_owned();
        assert_eq!(
            p1,
            json!({"requestId":"P1","aliases":[],"orderId":null,"companyId":"SHOP","userId":"ASHA","event":"BUY",
                   "coinConfigId":floor["coinConfigId"],"state":"ACTIVE","coins":9,"baseCoins":9,"coinsCanceled":0,"coinsReversed":0,
                   "coinsWaived":0,"amountMinor":49999,"amountRefundedMinor":0,"currency":"INR",
                   "calculation":{"amountType":"PERCENT","amountMinor":49999,"rateBps":200,"minorUnitsPerCoin":100,"multiplierBps":10000,
                                  "exact":"9.9998","rounding":"FLOOR","cappedBy":null,"amount":null,"minAmountMinor":null,"maxCoinsPerAllocation":null,"campaignId":null,"campaignBps":null,"campaignBonusCoins":null,"tierCode":null,"tierBps":null},
                   "createdAt":created,"activatesAt":null,"activatedAt":created,"expiresAt":null,"reason":null})
        );
        let p2 = record(app, "P2").await;
        assert_eq!((p2["coins"].as_i64(), p2["calculation"]["rounding"].as_str()), (Some(10), Some("HALF_UP")));
        // The ledger entry carries the purchase.
        let page = app.get("/api/v0/coins/transactions?userId=ASHA", &app.admin_token).await;
        assert_eq!(page.assert_ok()["entries"][1]["coins"], json!(9));
    }

    async fn a_new_coin_value_applies_to_the_next_allocation_at_once(app: &TestApp) {
        // Allocations take the coin value from the cached configuration: a change must reach the
        // very next allocation, as a configuration change does.
        percent_config(app, "BUY", json!({})).await;
        buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","amountMinor":50000})).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 10);
        let put = |body: Value| async move { app.send(reqwest::Method::PUT, "/api/v0/coins/coin-value", Some(&app.admin_token), Some(&body)).await };
        put(json!({"companyId":"SHOP","currency":"INR","minorUnitsPerCoin":50})).await.assert_ok();
        buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P2","userId":"ASHA","amountMinor":50000})).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 30);
        assert_eq!(record(app, "P2").await["calculation"]["minorUnitsPerCoin"], json!(50));
        put(json!({"companyId":"SHOP","currency":"USD","minorUnitsPerCoin":1})).await.assert_ok();
        let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P3","userId":"ASHA","amountMinor":100,"currency":"INR"})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("currency must be USD"));
        assert_eq!(app.balance("ASHA").await, 30);
        // The installation's value reaches a company without one of its own at once too.
        app.create_config(&app.admin_token, json!({"configuration":"CUSTOM","companyId":"MART","event":"BUY","amountType":"PERCENT","rateBps":200}))
            .await
            .assert_ok();
        buy(app, json!({"companyId":"MART","event":"BUY","requestId":"M1","userId":"RAVI","amountMinor":50000})).await.assert_ok();
        assert_eq!(app.balance("RAVI").await, 10);
        put(json!({"companyId":null,"currency":"INR","minorUnitsPerCoin":25})).await.assert_ok();
        buy(app, json!({"companyId":"MART","event":"BUY","requestId":"M2","userId":"RAVI","amountMinor":50000})).await.assert_ok();
        assert_eq!(app.balance("RAVI").await, 50);
    }

    async fn a_percentage_needs_the_purchase_value_in_the_companys_currency(app: &TestApp) {
        percent_config(app, "BUY", json!({})).await;
        let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA"})).await;
        let message = res.assert_error(400, "VALIDATION_FAILED");
        assert!(message.starts_with("amountMinor is required"), "{message}");
        let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","amountMinor":100,"currency":"USD"})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("currency must be INR"));
        for bad in [json!(0), json!(-5), json!(1.5), json!("100"), json!(10_000_000_000_001_i64)] {
            let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","amountMinor":bad})).await;
            assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("amountMinor must be a whole number"), "{bad}");
        }
        let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","amountMinor":100,"currency":"inr"})).await;
        res.assert_error(400, "VALIDATION_FAILED");
        assert_eq!(app.balance("ASHA").await, 0, "nothing was credited or claimed");
        buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","amountMinor":5000})).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 1);
    }

    async fn configurations_refuse_a_percentage_without_a_rate_or_with_an_amount(app: &TestApp) {
        let create = |body: Value| async move { app.create_config(&app.admin_token, body).await };
        let res = create(json!({"configuration":"CUSTOM","companyId":"SHOP","event":"E","amountType":"PERCENT"})).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "rateBps is required when amountType is PERCENT");
        let res = create(json!({"configuration":"CUSTOM","companyId":"SHOP","event":"E","amountType":"PERCENT","rateBps":100,"amount":5})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("amount must be null when amountType is PERCENT"));
        let res = create(json!({"configuration":"CUSTOM","companyId":"SHOP","event":"E","amount":5,"rateBps":100})).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "rateBps applies only when amountType is PERCENT");
        let res = create(json!({"configuration":"CUSTOM","companyId":"SHOP","event":"E"})).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "amount must be a whole number of coins between 1 and 1000000000");
        for (field, bad) in [("rateBps", json!(0)), ("rateBps", json!(1_000_001)), ("rounding", json!("UP")), ("amountType", json!("SHARE")), ("minAmountMinor", json!(0)), ("maxCoinsPerAllocation", json!(-1))] {
            let mut body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"E","amountType":"PERCENT","rateBps":100});
            body[field] = bad;
            let message = create(body).await.assert_error(400, "VALIDATION_FAILED").to_owned();
            assert!(message.starts_with(field), "{field}: {message}");
        }
        // A PATCH that switches the type clears the other type's field.
        let id = app.config("CUSTOM", "SHOP", "E", 5).await;
        let res = app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"amountType":"PERCENT","rateBps":150})).await;
        let v = res.assert_ok();
        assert_eq!((v["amount"].clone(), v["amountType"].clone(), v["rateBps"].clone()), (json!(null), json!("PERCENT"), json!(150)));
        let res = app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"amountType":"FIXED"})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("amount must be"));
        let res = app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"amountType":"FIXED","amount":7})).await;
        assert_eq!((res.assert_ok()["amount"].clone(), res.assert_ok()["rateBps"].clone()), (json!(7), json!(null)));
        let history = app.get(&format!("/api/v0/enkash-coins/{id}/history"), &app.admin_token).await;
        assert_eq!(history.assert_ok()[1]["after"]["amountType"], json!("PERCENT"));
    }

    async fn an_allocation_that_earns_nothing_is_recorded_and_holds_its_order(app: &TestApp) {
        percent_config(app, "BUY", json!({"minAmountMinor": 10000, "maxCoinsPerAllocation": 50})).await;
        let res = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"Z1","userId":"ASHA","amountMinor":9999,"orderId":"O1"})).await;
        assert_eq!(res.assert_ok(), &json!("Successfully allocated enkash Coins"));
        let z1 = record(app, "Z1").await;
        assert_eq!((z1["state"].clone(), z1["coins"].clone(), z1["reason"].clone(), z1["activatedAt"].clone()), (json!("ZERO"), json!(0), json!("BELOW_MINIMUM"), json!(null)));
        assert_eq!(app.balance("ASHA").await, 0);
        // It holds the order: the same purchase replays, another is a conflict naming it.
        let again = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"Z2","userId":"ASHA","amountMinor":9999,"orderId":"O1"})).await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        let other = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"Z3","userId":"ASHA","amountMinor":20000,"orderId":"O1"})).await;
        assert!(other.assert_error(409, "ORDER_ID_CONFLICT").contains("Z1"));
        // The cap and the bulk answer.
        let bulk = app
            .post(
                "/api/v0/enkash-coins/allocate-coins",
                &app.admin_token,
                json!({"allocations":[
                    {"companyId":"SHOP","event":"BUY","requestId":"B1","userId":"ASHA","amountMinor":5000},
                    {"companyId":"SHOP","event":"BUY","requestId":"B2","userId":"ASHA","amountMinor":1_000_000},
                    {"companyId":"SHOP","event":"BUY","requestId":"B3","userId":"ASHA"}]}),
            )
            .await;
        assert_eq!(
            bulk.assert_ok(),
            &json!({"allocated":2,"replayed":0,"failed":1,"results":[
                {"requestId":"B1","status":"ALLOCATED","coins":0,"errorCode":null,"message":null},
                {"requestId":"B2","status":"ALLOCATED","coins":50,"errorCode":null,"message":null},
                {"requestId":"B3","status":"FAILED","coins":null,"errorCode":"VALIDATION_FAILED",
                 "message":"amountMinor is required: the configuration of event BUY earns on the purchase value or has a minimum spend"}]})
        );
        let b2 = record(app, "B2").await;
        assert_eq!((b2["baseCoins"].clone(), b2["calculation"]["cappedBy"].clone(), b2["calculation"]["exact"].clone()), (json!(50), json!("MAX_COINS_PER_ALLOCATION"), json!("200")));
        assert_eq!(record(app, "B1").await["reason"], json!("BELOW_MINIMUM"));
        percent_config(app, "TINY", json!({})).await;
        buy(app, json!({"companyId":"SHOP","event":"TINY","requestId":"T1","userId":"ASHA","amountMinor":49})).await.assert_ok();
        let t1 = record(app, "T1").await;
        assert_eq!((t1["state"].clone(), t1["reason"].clone(), t1["calculation"]["exact"].clone()), (json!("ZERO"), json!("ROUNDED_TO_ZERO"), json!("0.0098")));
        assert_eq!(app.balance("ASHA").await, 50);
        // Returning it takes nothing, writes no entry, and frees its order.
        let ret = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"ZR1","originalRequestId":"Z1"})).await;
        assert_eq!((ret.assert_ok()["kind"].clone(), ret.assert_ok()["coins"].clone()), (json!("REVERSE"), json!(0)));
        assert_eq!(record(app, "Z1").await["state"], json!("REVERSED"));
        let again = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"ZR2","originalRequestId":"Z1"})).await;
        again.assert_error(409, "ALREADY_REVERSED");
        buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"Z4","userId":"ASHA","amountMinor":20000,"orderId":"O1"})).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 54);
    }

    async fn a_till_retrying_an_order_under_a_new_request_id_credits_once(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "BUY", 50).await;
        let first = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"TILL-1","userId":"ASHA","orderId":"ORD-9"})).await;
        assert_eq!(first.header("idempotent-replayed"), None);
        let retry = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"TILL-2","userId":"ASHA","orderId":"ORD-9"})).await;
        assert_eq!(retry.text, first.text);
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
        assert_eq!(app.balance("ASHA").await, 50);
        // TILL-2 is an alias now: replaying it, or naming it, finds the same allocation.
        buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"TILL-2","userId":"ASHA","orderId":"ORD-9"})).await.assert_ok();
        let by_alias = record(app, "TILL-2").await;
        assert_eq!((by_alias["requestId"].clone(), by_alias["aliases"].clone()), (json!("TILL-1"), json!(["TILL-2"])));
        let by_order = app.get("/api/v0/coins/allocations?companyId=SHOP&event=BUY&orderId=ORD-9", &app.admin_token).await;
        assert_eq!(by_order.assert_ok(), &by_alias);
        assert_eq!((by_alias["orderId"].clone(), by_alias["coins"].clone(), by_alias["calculation"]["exact"].clone()), (json!("ORD-9"), json!(50), json!("50")));
        // Another user, or the same order for another event, is not a retry.
        let other = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"TILL-3","userId":"RAVI","orderId":"ORD-9"})).await;
        assert_eq!(other.assert_error(409, "ORDER_ID_CONFLICT"), "orderId is already held by requestId TILL-1 for another user or purchase value");
        // Reversing by the alias's name reverses the allocation, once, and frees the order.
        let rev = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"RET-1","originalRequestId":"TILL-2"})).await;
        assert_eq!(rev.assert_ok()["originalRequestId"], json!("TILL-2"));
        let twice = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"RET-2","originalRequestId":"TILL-1"})).await;
        twice.assert_error(409, "ALREADY_REVERSED");
        let reversed = record(app, "TILL-1").await;
        assert_eq!((reversed["state"].clone(), reversed["coinsReversed"].clone()), (json!("REVERSED"), json!(50)));
        let reopened = buy(app, json!({"companyId":"SHOP","event":"BUY","requestId":"TILL-4","userId":"RAVI","orderId":"ORD-9"})).await;
        assert_eq!(reopened.header("idempotent-replayed"), None, "a reversed order earns again");
        let live = app.get("/api/v0/coins/allocations?companyId=SHOP&event=BUY&orderId=ORD-9", &app.admin_token).await;
        assert_eq!(live.assert_ok()["requestId"], json!("TILL-4"));
        assert_eq!((app.balance("ASHA").await, app.balance("RAVI").await), (0, 50));
    }

    async fn twenty_retries_of_one_order_at_once_credit_once(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "BUY", 50).await;
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (http, url, token) = (app.http.clone(), app.url(ALLOCATE), app.admin_token.clone());
            calls.spawn(async move {
                let body = json!({"companyId":"SHOP","event":"BUY","requestId":format!("TILL-{i}"),"userId":"ASHA","orderId":"ORD-1","amountMinor":120000});
                let res = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
                (res.status().as_u16(), res.headers().get("idempotent-replayed").is_some())
            });
        }
        let mut replays = 0;
        while let Some(done) = calls.join_next().await {
            let (status, replayed) = done.unwrap();
            assert_eq!(status, 200);
            replays += usize::from(replayed);
        }
        assert_eq!(replays, 19);
        assert_eq!(app.balance("ASHA").await, 50);
        let record = app.get("/api/v0/coins/allocations?companyId=SHOP&event=BUY&orderId=ORD-1", &app.admin_token).await;
        assert_eq!(record.assert_ok()["aliases"].as_array().unwrap().len(), 19);
    }

    async fn a_plain_enkash_allocation_reads_as_an_active_fixed_record(app: &TestApp) {
        app.config("DEFAULT", "CEK0TCW2W8", "REFERRAL_EVENT", 50).await;
        app.allocate(&app.admin_token, "CEK0TCW2W8", "REFERRAL_EVENT", "COIN_REQ1234567", "EKQZVMQK").await.assert_ok();
        let r = app.get("/api/v0/coins/allocations/COIN_REQ1234567?companyId=CEK0TCW2W8", &app.admin_token).await;
        let r = r.assert_ok();
        assert_eq!((r["state"].clone(), r["coins"].clone(), r["baseCoins"].clone(), r["amountMinor"].clone(), r["amountRefundedMinor"].clone()), (json!("ACTIVE"), json!(50), json!(50), json!(null), json!(null)));
        assert_eq!(
            r["calculation"],
            json!({"amountType":"FIXED","amountMinor":null,"rateBps":null,"minorUnitsPerCoin":null,"multiplierBps":10000,"exact":"50",
                   "rounding":"FLOOR","cappedBy":null,"amount":50,"minAmountMinor":null,"maxCoinsPerAllocation":null,"campaignId":null,"campaignBps":null,"campaignBonusCoins":null,"tierCode":null,"tierBps":null})
        );
        assert_eq!(r["activatedAt"], r["createdAt"]);
        let missing = app.get("/api/v0/coins/allocations/NOPE?companyId=CEK0TCW2W8", &app.admin_token).await;
        missing.assert_error(404, "NOT_FOUND");
        let no_company = app.get("/api/v0/coins/allocations/COIN_REQ1234567", &app.admin_token).await;
        assert_eq!(no_company.assert_error(400, "VALIDATION_FAILED"), "companyId is required");
    }
}

// An EnKash client sends none of the new fields and must get what it got before: the same status
// and, byte for byte, the same keys in the same order with the same values; new keys may only
// follow them. Every example of the EnKash pages, as raw response text.
both_backends! {
    async fn every_enkash_example_answers_the_same_bytes_as_before(app: &TestApp) {
        let create = app
            .create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6}))
            .await;
        assert_eq!(create.status.as_u16(), 200);
        let id = create.body["payload"]["coinConfigId"].as_str().unwrap().to_owned();
        let object = |amount: i64| {
            format!(r#"{{"payload":{{"coinConfigId":"{id}","configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":{amount},"#)
        };
        let tail = r#""validityDays":null,"maxPerUserPerDay":null,"maxPerUser":null,"active":true,"#;
        for (res, amount) in [(create, 6), (app.get(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token).await, 6)] {
            assert!(res.text.starts_with(&(object(amount) + tail)), "{}", res.text);
            assert!(res.text.ends_with(r#"},"response_code":0,"response_message":"Success"}"#), "{}", res.text);
        }
        let patched = app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"amount": 10, "configuration" : "DEFAULT"})).await;
        assert!(patched.text.starts_with(&(object(10) + tail)), "{}", patched.text);

        app.config("DEFAULT", "CEK0TCW2W8", "REFERRAL_EVENT", 50).await;
        let body = json!({"companyId":"CEK0TCW2W8","event":"REFERRAL_EVENT","requestId":"COIN_REQ1234567","userId":"EKQZVMQK"});
        let allocated = app.post("/api/v0/enkash-coins/allocate-coin", &app.admin_token, body.clone()).await;
        assert_eq!((allocated.status.as_u16(), allocated.text.as_str()), (200, r#"{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}"#));
        let replay = app.post("/api/v0/enkash-coins/allocate-coin", &app.admin_token, body).await;
        assert_eq!((replay.text.as_str(), replay.header("idempotent-replayed")), (allocated.text.as_str(), Some("true")));
        let balance = app.get("/api/v0/coins/balance?userId=EK6CYE6K", &app.admin_token).await;
        assert_eq!((balance.status.as_u16(), balance.text.as_str()), (200, r#"{"payload":0,"response_code":0,"response_message":"Success"}"#));
        let balance = app.get("/api/v0/coins/balance?userId=EKQZVMQK", &app.admin_token).await;
        assert_eq!(balance.text, r#"{"payload":50,"response_code":0,"response_message":"Success"}"#);
    }
}
