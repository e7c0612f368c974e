//! Partial returns on both backends, with exact wire shapes: by coins and by refunded amount (any
//! split of a refund takes exactly what the whole refund takes), by order, when the user already
//! spent the coins (refused, or capped and waived), of redemptions (coins go back latest-expiring
//! first), idempotent on each return's own requestId, and ten at once never taking more than the
//! allocation has.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const ALLOCATE: &str = "/api/v0/enkash-coins/allocate-coin";
const REVERSE: &str = "/api/v0/coins/reverse";

async fn record(app: &TestApp, request_id: &str) -> Value {
    app.get(&format!("/api/v0/coins/allocations/{request_id}?companyId=SHOP"), &app.admin_token).await.assert_ok().clone()
}

async fn ret(app: &TestApp, body: Value) -> Resp {
    let mut body = body;
    body["companyId"] = json!("SHOP");
    app.post(REVERSE, &app.admin_token, body).await
}

/// The answer of a return, as the wire carries it: every key, in order.
#[allow(clippy::too_many_arguments)]
fn answer(request_id: &str, original: &str, coins: i64, short: i64, short_minor: i64, remaining: i64, refunded: Value, balance: i64) -> String {
    format!(
        r#"{{"payload":{{"requestId":"{request_id}","originalRequestId":"{original}","kind":"REVERSE","coins":{coins},"coinsShort":{short},"shortAmountMinor":{short_minor},"coinsRemaining":{remaining},"amountRefundedMinor":{refunded},"balance":{balance},"pendingBalance":0}},"response_code":0,"response_message":"Success"}}"#
    )
}

/// 10 % cashback: a purchase of ₹1,000.00 (100,000 paise, 100 paise a coin) earns 100 coins.
async fn cashback(app: &TestApp) {
    let body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"BUY","amountType":"PERCENT","rateBps":1000});
    app.create_config(&app.admin_token, body).await.assert_ok();
}

both_backends! {
    async fn refunds_in_parts_take_exactly_what_one_full_refund_takes(app: &TestApp) {
        cashback(app).await;
        let buy = json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","orderId":"ORD-1","amountMinor":100000});
        app.post(ALLOCATE, &app.admin_token, buy).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 100);

        // ₹250 back: the ₹750 kept earn 75, so 25 go.
        let res = ret(app, json!({"requestId":"R1","originalRequestId":"P1","amountMinor":25000})).await;
        assert_eq!(res.text, answer("R1", "P1", -25, 0, 0, 75, json!(25000), 75));
        // ₹333.33 more: the ₹416.67 kept earn 41 (floored), so 34 go.
        let res = ret(app, json!({"requestId":"R2","originalRequestId":"P1","amountMinor":33333})).await;
        assert_eq!(res.text, answer("R2", "P1", -34, 0, 0, 41, json!(58333), 41));
        let p1 = record(app, "P1").await;
        assert_eq!((&p1["state"], &p1["coinsReversed"], &p1["amountRefundedMinor"]), (&json!("ACTIVE"), &json!(59), &json!(58333)));
        // More than was paid is refused, naming what is left; nothing changes.
        let res = ret(app, json!({"requestId":"R3","originalRequestId":"P1","amountMinor":41668})).await;
        assert_eq!(res.assert_error(409, "REVERSAL_EXCEEDS_REMAINING"), "originalRequestId P1 has 41 coins and 41667 of its amountMinor left to return");
        // The rest: 41 go, 100 in all, as one refund of ₹1,000 would take.
        let res = ret(app, json!({"requestId":"R4","originalRequestId":"P1","amountMinor":41667})).await;
        assert_eq!(res.text, answer("R4", "P1", -41, 0, 0, 0, json!(100000), 0));
        let p1 = record(app, "P1").await;
        assert_eq!(
            (&p1["state"], &p1["coins"], &p1["coinsReversed"], &p1["coinsWaived"], &p1["amountRefundedMinor"]),
            (&json!("REVERSED"), &json!(100), &json!(100), &json!(0), &json!(100000))
        );
        ret(app, json!({"requestId":"R5","originalRequestId":"P1","amountMinor":1})).await.assert_error(409, "ALREADY_REVERSED");
        ret(app, json!({"requestId":"R6","originalRequestId":"P1"})).await.assert_error(409, "ALREADY_REVERSED");

        // Each return is in the ledger, naming the allocation, its order and the amount refunded.
        let page = app.get("/api/v0/coins/transactions?userId=ASHA", &app.admin_token).await;
        let latest = &page.assert_ok()["entries"][0];
        assert_eq!(
            (&latest["type"], &latest["coins"], &latest["originalRequestId"], &latest["orderId"], &latest["amountMinor"]),
            (&json!("REVERSE"), &json!(-41), &json!("P1"), &json!("ORD-1"), &json!(41667))
        );
    }

    async fn a_return_names_the_order_and_a_full_return_frees_it(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 50).await;
        let buy = |rid: &str| json!({"companyId":"SHOP","event":"ORDER","requestId":rid,"userId":"ASHA","orderId":"O-1"});
        app.post(ALLOCATE, &app.admin_token, buy("A1")).await.assert_ok();

        let res = ret(app, json!({"requestId":"R1","orderId":"O-1","event":"ORDER","coins":20})).await;
        assert_eq!(res.text, answer("R1", "A1", -20, 0, 0, 30, Value::Null, 30));
        let res = ret(app, json!({"requestId":"R2","orderId":"O-1","event":"ORDER","coins":31})).await;
        assert_eq!(res.assert_error(409, "REVERSAL_EXCEEDS_REMAINING"), "originalRequestId A1 has 30 coins left to return");
        // A plain allocation keeps no purchase value: it is returned by coins.
        let res = ret(app, json!({"requestId":"R2","orderId":"O-1","event":"ORDER","amountMinor":500})).await;
        res.assert_error(409, "AMOUNT_NOT_RECORDED");
        let res = ret(app, json!({"requestId":"R3","orderId":"O-1","event":"ORDER"})).await;
        assert_eq!(res.text, answer("R3", "A1", -30, 0, 0, 0, Value::Null, 0));
        assert_eq!(record(app, "A1").await["state"], json!("REVERSED"));
        // With no live allocation left, a return by order finds the latest one, which has ended.
        let res = ret(app, json!({"requestId":"R3B","orderId":"O-1","event":"ORDER","coins":1})).await;
        let refused = res.assert_error(409, "ALREADY_REVERSED").to_owned();
        assert!(refused.contains("A1"), "{refused}");

        // The order is free: it earns again, and a return by order now finds the new allocation.
        app.post(ALLOCATE, &app.admin_token, buy("A2")).await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 50);
        let res = ret(app, json!({"requestId":"R4","orderId":"O-1","event":"ORDER","coins":5})).await;
        assert_eq!(res.assert_ok()["originalRequestId"], json!("A2"));
        let res = ret(app, json!({"requestId":"R5","orderId":"O-2","event":"ORDER"})).await;
        assert_eq!(res.assert_error(404, "NOT_FOUND"), "no allocation of event ORDER carries orderId O-2 for this company");
    }

    async fn coins_already_spent_are_refused_or_capped_and_waived(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 100).await;
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A1", "ASHA").await.assert_ok();
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S1","coins":80});
        app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok();

        let res = ret(app, json!({"requestId":"R1","originalRequestId":"A1","coins":30})).await;
        assert_eq!(res.assert_error(409, "INSUFFICIENT_BALANCE"), "userId ASHA has 20 coins available, 30 are needed");
        let res = ret(app, json!({"requestId":"R1","originalRequestId":"A1","onShortfall":"CAP"})).await;
        // 20 taken, 80 short: worth 8,000 paise to take off the cash refund.
        assert_eq!(res.text, answer("R1", "A1", -20, 80, 8000, 0, Value::Null, 0));
        let a1 = record(app, "A1").await;
        assert_eq!((&a1["state"], &a1["coinsReversed"], &a1["coinsWaived"]), (&json!("REVERSED"), &json!(20), &json!(80)));

        // NEGATIVE takes it all: what the user no longer has becomes debt, which the next credit
        // pays first.
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A2", "ASHA").await.assert_ok();
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S2","coins":90});
        app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok();
        let res = ret(app, json!({"requestId":"R2","originalRequestId":"A2","onShortfall":"NEGATIVE"})).await;
        assert_eq!(res.text, answer("R2", "A2", -100, 0, 0, 0, Value::Null, -90));
        let a2 = record(app, "A2").await;
        assert_eq!((&a2["state"], &a2["coinsReversed"], &a2["coinsWaived"]), (&json!("REVERSED"), &json!(100), &json!(0)));
        let user = app.get("/api/v0/coins/users/ASHA", &app.admin_token).await;
        assert_eq!((&user.assert_ok()["balance"], &user.assert_ok()["debt"]), (&json!(-90), &json!(90)));
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A3", "ASHA").await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 10);
        let user = app.get("/api/v0/coins/users/ASHA", &app.admin_token).await;
        assert_eq!((&user.assert_ok()["balance"], &user.assert_ok()["debt"]), (&json!(10), &json!(0)));
    }

    async fn a_redemption_comes_back_in_parts_to_its_lots_latest_expiring_first(app: &TestApp) {
        for (event, validity) in [("SOON", json!(10)), ("LATER", json!(30)), ("NEVER", Value::Null)] {
            let body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":event,"amount":10,"validityDays":validity});
            app.create_config(&app.admin_token, body).await.assert_ok();
            app.allocate(&app.admin_token, "SHOP", event, &format!("A-{event}"), "ASHA").await.assert_ok();
        }
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S1","coins":30});
        app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok();

        // 15 back: the never-expiring lot's 10, then 5 of the 30-day lot.
        let res = ret(app, json!({"requestId":"R1","originalRequestId":"S1","coins":15})).await;
        assert_eq!(
            res.text,
            r#"{"payload":{"requestId":"R1","originalRequestId":"S1","kind":"REVERSE","coins":15,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":15,"amountRefundedMinor":null,"balance":15,"pendingBalance":0},"response_code":0,"response_message":"Success"}"#
        );
        let res = ret(app, json!({"requestId":"R2","originalRequestId":"S1","coins":16})).await;
        assert_eq!(res.assert_error(409, "REVERSAL_EXCEEDS_REMAINING"), "originalRequestId S1 has 15 coins left to return");
        ret(app, json!({"requestId":"R2","originalRequestId":"S1","amountMinor":100})).await.assert_error(409, "AMOUNT_NOT_RECORDED");

        // Eleven days on, the 10-day lot has expired: the rest goes back (5 to the 30-day lot, 10
        // to the expired one) and those 10 expire again at once.
        app.clock.advance_ms(11 * 86_400_000);
        let res = ret(app, json!({"requestId":"R3","originalRequestId":"S1"})).await;
        let body = res.assert_ok();
        assert_eq!((&body["coins"], &body["coinsRemaining"], &body["balance"]), (&json!(15), &json!(0), &json!(20)));
        assert_eq!(app.balance("ASHA").await, 20);
        ret(app, json!({"requestId":"R4","originalRequestId":"S1"})).await.assert_error(409, "ALREADY_REVERSED");
        let page = app.get("/api/v0/coins/transactions?userId=ASHA", &app.admin_token).await;
        let kinds: Vec<(String, i64)> =
            page.assert_ok()["entries"].as_array().unwrap().iter().map(|e| (e["type"].as_str().unwrap().to_owned(), e["coins"].as_i64().unwrap())).collect();
        assert_eq!(kinds[..3], [("EXPIRE".into(), -10), ("REVERSE".into(), 15), ("REVERSE".into(), 15)]);
    }

    async fn each_part_is_exactly_once_on_its_own_request_id(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 100).await;
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A1", "ASHA").await.assert_ok();
        let first = ret(app, json!({"requestId":"R1","originalRequestId":"A1","coins":5})).await;
        first.assert_ok();
        let again = ret(app, json!({"requestId":"R1","originalRequestId":"A1","coins":5})).await;
        assert_eq!((again.text.as_str(), again.header("idempotent-replayed")), (first.text.as_str(), Some("true")));
        for other in [
            json!({"requestId":"R1","originalRequestId":"A1","coins":6}),
            json!({"requestId":"R1","originalRequestId":"A1"}),
            json!({"requestId":"R1","originalRequestId":"A1","coins":5,"onShortfall":"CAP"}),
        ] {
            ret(app, other).await.assert_error(409, "REQUEST_ID_CONFLICT");
        }
        // REJECT is the default: saying so is the same request.
        let same = ret(app, json!({"requestId":"R1","originalRequestId":"A1","coins":5,"onShortfall":"REJECT"})).await;
        assert_eq!(same.header("idempotent-replayed"), Some("true"));
        assert_eq!(app.balance("ASHA").await, 95);
    }

    async fn a_return_that_names_its_original_twice_or_asks_two_ways_is_refused(app: &TestApp) {
        for (body, message) in [
            (json!({"requestId":"R1"}), "originalRequestId is required (or orderId and event)"),
            (json!({"requestId":"R1","originalRequestId":"A1","orderId":"O-1","event":"E"}), "give originalRequestId, or orderId and event, not both"),
            (json!({"requestId":"R1","orderId":"O-1"}), "orderId needs event: an order is named per event"),
            (json!({"requestId":"R1","event":"E"}), "event needs orderId, or give originalRequestId"),
            (json!({"requestId":"R1","originalRequestId":"A1","coins":1,"amountMinor":100}), "give coins or amountMinor, not both"),
            (json!({"requestId":"R1","originalRequestId":"A1","coins":0}), "coins must be a whole number of coins between 1 and 1000000000"),
            (json!({"requestId":"R1","originalRequestId":"A1","amountMinor":-1}), "amountMinor must be a whole number of minor units between 1 and 10000000000000"),
        ] {
            let res = ret(app, body.clone()).await;
            assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), message, "{body}");
        }
    }

    async fn ten_returns_at_once_never_take_more_than_the_allocation_has(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 100).await;
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A1", "ASHA").await.assert_ok();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (http, url, token) = (app.http.clone(), app.url(REVERSE), app.admin_token.clone());
            calls.spawn(async move {
                let body = json!({"companyId":"SHOP","requestId":format!("R{i}"),"originalRequestId":"A1","coins":15});
                let res = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap())
            });
        }
        let (mut remaining, mut exceeded) = (Vec::new(), 0);
        while let Some(done) = calls.join_next().await {
            match done.unwrap() {
                (200, body) => remaining.push(body["payload"]["coinsRemaining"].as_i64().unwrap()),
                (409, body) if body["error_code"] == "REVERSAL_EXCEEDS_REMAINING" => exceeded += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        remaining.sort_unstable();
        assert_eq!((remaining.as_slice(), exceeded), (&[10, 25, 40, 55, 70, 85][..], 4), "each saw the ones before it");
        let a1 = record(app, "A1").await;
        assert_eq!((&a1["coinsReversed"], &a1["state"]), (&json!(90), &json!("ACTIVE")));
        assert_eq!(app.balance("ASHA").await, 10);
    }
}
