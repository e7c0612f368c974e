//! Held (pending) coins on both backends, with exact wire shapes: a configuration with
//! `pendingDays` credits to the pending balance; the coins become spendable at `activatesAt` on
//! every read at once, and their expiry clock starts then; a return during the hold cancels (never
//! short of balance); early activation by request; the events each step sends.

use std::time::Duration;

use coins::clock::Clock;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::webhooks::{Receiver, first_deliveries};

const ALLOCATE: &str = "/api/v0/enkash-coins/allocate-coin";
const DAY_MS: i64 = 86_400_000;

/// 10 % cashback, held 14 days, valid 30 days from activation: ₹1,000 earns 100 coins.
async fn held_cashback(app: &TestApp) {
    let body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"BUY","amountType":"PERCENT","rateBps":1000,"pendingDays":14,"validityDays":30});
    let config = app.create_config(&app.admin_token, body).await;
    assert_eq!(config.assert_ok()["pendingDays"], json!(14));
}

async fn buy(app: &TestApp, request_id: &str, order: &str, amount_minor: i64) -> Resp {
    let body = json!({"companyId":"SHOP","event":"BUY","requestId":request_id,"userId":"ASHA","orderId":order,"amountMinor":amount_minor});
    app.post(ALLOCATE, &app.admin_token, body).await
}

async fn record(app: &TestApp, request_id: &str) -> Value {
    app.get(&format!("/api/v0/coins/allocations/{request_id}?companyId=SHOP"), &app.admin_token).await.assert_ok().clone()
}

async fn user(app: &TestApp) -> Value {
    app.get("/api/v0/coins/users/ASHA", &app.admin_token).await.assert_ok().clone()
}

async fn entries(app: &TestApp) -> Vec<Value> {
    let page = app.get("/api/v0/coins/transactions?userId=ASHA", &app.admin_token).await;
    page.assert_ok()["entries"].as_array().unwrap().clone()
}

fn at(ms: i64) -> String {
    coins::clock::rfc3339(ms)
}

both_backends! {
    async fn held_coins_are_not_spendable_until_they_activate_and_expire_from_then(app: &TestApp) {
        held_cashback(app).await;
        let res = buy(app, "P1", "ORD-1", 100_000).await;
        // An EnKash client sees the usual answer.
        assert_eq!(res.text, r#"{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}"#);
        let p1 = record(app, "P1").await;
        let created = p1["createdAt"].as_str().unwrap().to_owned();
        let activates = p1["activatesAt"].as_str().unwrap().to_owned();
        assert_eq!((&p1["state"], &p1["coins"], &p1["activatedAt"], &p1["expiresAt"]), (&json!("PENDING"), &json!(100), &Value::Null, &Value::Null));

        assert_eq!(app.balance("ASHA").await, 0, "held coins are not spendable");
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["pendingBalance"], &u["lifetimeEarned"]), (&json!(0), &json!(100), &json!(0)));
        assert_eq!(u["pending"], json!([{"requestId":"P1","coins":100,"activatesAt":activates}]));
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S1","coins":10});
        let res = app.post("/api/v0/coins/redeem", &app.admin_token, spend.clone()).await;
        assert_eq!(
            res.assert_error(409, "INSUFFICIENT_BALANCE"),
            "userId ASHA has 0 coins available and 100 pending (held until they activate), 10 are needed"
        );
        let first = &entries(app).await[0];
        assert_eq!(
            (&first["type"], &first["coins"], &first["pendingCoins"], &first["pendingAfter"], &first["balanceAfter"], &first["createdAt"]),
            (&json!("ALLOCATE"), &json!(0), &json!(100), &json!(100), &json!(0), &json!(created))
        );

        // At activatesAt the coins are spendable on the very next read, before any sweeper.
        app.clock.advance_ms(14 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 100);
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["pendingBalance"], &u["lifetimeEarned"], &u["pending"]), (&json!(100), &json!(0), &json!(100), &json!([])));
        let activate = &entries(app).await[0];
        assert_eq!(
            (&activate["type"], &activate["coins"], &activate["pendingCoins"], &activate["pendingAfter"], &activate["balanceAfter"]),
            (&json!("ACTIVATE"), &json!(100), &json!(-100), &json!(0), &json!(100))
        );
        assert_eq!((&activate["effectiveAt"], &activate["originalRequestId"], &activate["requestId"]), (&json!(activates), &json!("P1"), &Value::Null));
        let p1 = record(app, "P1").await;
        assert_eq!((&p1["state"], &p1["activatedAt"]), (&json!("ACTIVE"), &json!(activates)));
        let expires = p1["expiresAt"].as_str().unwrap().to_owned();
        assert_eq!(activate["expiresAt"], json!(expires), "30 days from activation");
        app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok();

        // The expiry clock started at activation: 29 days on they are still there, 30 days on gone.
        app.clock.advance_ms(29 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 90);
        app.clock.advance_ms(DAY_MS);
        assert_eq!(app.balance("ASHA").await, 0);
    }

    async fn a_return_during_the_hold_cancels_and_never_lacks_balance(app: &TestApp) {
        held_cashback(app).await;
        buy(app, "P1", "ORD-1", 100_000).await.assert_ok();
        // ₹250 back while held: 25 held coins are canceled, the rest stay held as they were.
        let ret = json!({"companyId":"SHOP","requestId":"R1","orderId":"ORD-1","event":"BUY","amountMinor":25000});
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, ret).await;
        assert_eq!(
            res.text,
            r#"{"payload":{"requestId":"R1","originalRequestId":"P1","kind":"CANCEL","coins":-25,"coinsShort":0,"shortAmountMinor":0,"coinsRemaining":75,"amountRefundedMinor":25000,"balance":0,"pendingBalance":75},"response_code":0,"response_message":"Success"}"#
        );
        let cancel = &entries(app).await[0];
        assert_eq!((&cancel["type"], &cancel["coins"], &cancel["pendingCoins"], &cancel["pendingAfter"]), (&json!("CANCEL"), &json!(0), &json!(-25), &json!(75)));
        let p1 = record(app, "P1").await;
        assert_eq!((&p1["state"], &p1["coinsCanceled"], &p1["amountRefundedMinor"]), (&json!("PENDING"), &json!(25), &json!(25000)));

        // The rest, still held: canceled whole, the order is free again.
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R2","originalRequestId":"P1"})).await;
        let body = res.assert_ok();
        assert_eq!((&body["kind"], &body["coins"], &body["coinsRemaining"], &body["pendingBalance"]), (&json!("CANCEL"), &json!(-75), &json!(0), &json!(0)));
        assert_eq!(record(app, "P1").await["state"], json!("CANCELED"));
        app.clock.advance_ms(15 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 0, "a canceled hold never activates");
        buy(app, "P2", "ORD-1", 50_000).await.assert_ok();
        let u = user(app).await;
        assert_eq!((&u["pendingBalance"], &u["lifetimeEarned"]), (&json!(50), &json!(0)));
        app.post("/api/v0/coins/activate", &app.admin_token, json!({"companyId":"SHOP","requestId":"A1","originalRequestId":"P1"}))
            .await
            .assert_error(409, "ALREADY_REVERSED");
    }

    async fn a_partly_canceled_hold_activates_what_is_left(app: &TestApp) {
        held_cashback(app).await;
        buy(app, "P1", "ORD-1", 100_000).await.assert_ok();
        let ret = json!({"companyId":"SHOP","requestId":"R1","originalRequestId":"P1","coins":30});
        app.post("/api/v0/coins/reverse", &app.admin_token, ret).await.assert_ok();
        app.clock.advance_ms(14 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 70);
        let p1 = record(app, "P1").await;
        assert_eq!((&p1["state"], &p1["coins"], &p1["coinsCanceled"]), (&json!("ACTIVE"), &json!(100), &json!(30)));
        // After activation a return reverses (from the balance) instead of canceling.
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R2","originalRequestId":"P1","coins":20})).await;
        let body = res.assert_ok();
        assert_eq!((&body["kind"], &body["coins"], &body["coinsRemaining"], &body["balance"]), (&json!("REVERSE"), &json!(-20), &json!(50), &json!(50)));
    }

    async fn early_activation_starts_the_expiry_clock_at_once_exactly_once(app: &TestApp) {
        held_cashback(app).await;
        buy(app, "P1", "ORD-1", 100_000).await.assert_ok();
        app.clock.advance_ms(2 * DAY_MS);
        let now = app.clock.now_ms();
        let body = json!({"companyId":"SHOP","requestId":"ACT-1","originalRequestId":"P1"});
        let res = app.post("/api/v0/coins/activate", &app.admin_token, body.clone()).await;
        let activated_at = res.assert_ok()["activatedAt"].as_str().unwrap().to_owned();
        let activated_ms = ms_of(&activated_at);
        assert!((0..5_000).contains(&(activated_ms - now)), "activated now: {activated_at}");
        assert_eq!(
            res.text,
            format!(
                r#"{{"payload":{{"requestId":"ACT-1","originalRequestId":"P1","alreadyActive":false,"coins":100,"activatedAt":"{activated_at}","expiresAt":"{}","balance":100,"pendingBalance":0}},"response_code":0,"response_message":"Success"}}"#,
                at(activated_ms + 30 * DAY_MS)
            )
        );
        let again = app.post("/api/v0/coins/activate", &app.admin_token, body).await;
        assert_eq!((again.text.as_str(), again.header("idempotent-replayed")), (res.text.as_str(), Some("true")));
        let by_order = json!({"companyId":"SHOP","requestId":"ACT-2","orderId":"ORD-1","event":"BUY"});
        let res = app.post("/api/v0/coins/activate", &app.admin_token, by_order).await;
        let body = res.assert_ok();
        assert_eq!((&body["alreadyActive"], &body["coins"], &body["activatedAt"]), (&json!(true), &json!(0), &json!(activated_at)));
        let conflict = json!({"companyId":"SHOP","requestId":"ACT-1","originalRequestId":"P2"});
        app.post("/api/v0/coins/activate", &app.admin_token, conflict).await.assert_error(409, "REQUEST_ID_CONFLICT");
        let missing = json!({"companyId":"SHOP","requestId":"ACT-3","originalRequestId":"NOPE"});
        app.post("/api/v0/coins/activate", &app.admin_token, missing).await.assert_error(404, "NOT_FOUND");
        // One ACTIVATE entry in all, and the balance expires 30 days after the early activation.
        let activations = entries(app).await.iter().filter(|e| e["type"] == "ACTIVATE").count();
        assert_eq!(activations, 1);
        app.clock.advance_ms(30 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 0);
    }

    async fn an_enkash_client_on_a_held_configuration_gets_the_same_answers(app: &TestApp) {
        let body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"REFERRAL","amount":50,"pendingDays":7});
        app.create_config(&app.admin_token, body).await.assert_ok();
        let res = app.allocate(&app.admin_token, "SHOP", "REFERRAL", "E1", "ASHA").await;
        assert_eq!(res.text, r#"{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}"#);
        let bulk = json!({"allocations":[{"companyId":"SHOP","event":"REFERRAL","requestId":"E2","userId":"RAVI"}]});
        let res = app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, bulk).await;
        assert_eq!(res.assert_ok()["results"][0], json!({"requestId":"E2","status":"ALLOCATED","coins":50,"errorCode":null,"message":null}));
        assert_eq!((app.balance("ASHA").await, app.balance("RAVI").await), (0, 0));
        app.clock.advance_ms(7 * DAY_MS);
        assert_eq!((app.balance("ASHA").await, app.balance("RAVI").await), (50, 50));
    }

    async fn each_step_of_a_hold_sends_its_own_event(app: &TestApp) {
        let Some(rx) = Receiver::start() else { return };
        held_cashback(app).await;
        let events = ["coins.pending", "coins.activated", "coins.canceled", "coins.allocated", "coins.reversed"];
        let hook = json!({"companyId":"SHOP","url":rx.url(),"events":events});
        let secret = app.post("/api/v0/coins/webhooks", &app.admin_token, hook).await.assert_ok()["secret"].as_str().unwrap().to_owned();
        rx.set_secrets(&[&secret]);
        buy(app, "P1", "ORD-1", 100_000).await.assert_ok();
        buy(app, "P2", "ORD-2", 100_000).await.assert_ok();
        app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R1","originalRequestId":"P2","coins":40})).await.assert_ok();
        app.post("/api/v0/coins/activate", &app.admin_token, json!({"companyId":"SHOP","requestId":"A1","originalRequestId":"P1"})).await.assert_ok();
        let records = rx.wait_for("four events", Duration::from_secs(20), |r| first_deliveries(r).len() >= 4).await;
        let got: Vec<(String, Value, Value, Value)> = first_deliveries(&records)
            .iter()
            .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"]["coins"].clone(), e["data"]["pendingCoins"].clone(), e["data"]["coinsRemaining"].clone()))
            .collect();
        // In ledger order; a held credit is never coins.allocated, and a cancel says what remains.
        assert_eq!(
            got,
            [
                ("coins.pending".to_owned(), json!(0), json!(100), Value::Null),
                ("coins.pending".to_owned(), json!(0), json!(100), Value::Null),
                ("coins.canceled".to_owned(), json!(0), json!(-40), json!(60)),
                ("coins.activated".to_owned(), json!(100), json!(-100), Value::Null),
            ]
        );
    }
}

/// Unix ms of an RFC 3339 time.
fn ms_of(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
