//! Staff adjustments on both backends, with exact wire shapes: a goodwill credit and a balance
//! imported with its original expiry (each a lot of its own, recorded with its reason and the
//! client that made it), a debit taking soonest-expiring coins first (refused or capped when the
//! user has fewer), held credits, returns of either kind through `/coins/reverse`, replays and
//! conflicts, and every field refused that does not fit.

use serde_json::{Value, json};

use coins::clock::Clock;

use crate::both_backends;
use crate::helpers::*;

const ADJUST: &str = "/api/v0/coins/adjust";
const DAY_MS: i64 = 86_400_000;

async fn adjust(app: &TestApp, body: Value) -> Resp {
    let mut body = body;
    body["companyId"] = json!("SHOP");
    body["userId"] = body.get("userId").cloned().unwrap_or(json!("ASHA"));
    app.post(ADJUST, &app.admin_token, body).await
}

async fn entries(app: &TestApp) -> Vec<Value> {
    let page = app.get("/api/v0/coins/transactions?userId=ASHA", &app.admin_token).await;
    page.assert_ok()["entries"].as_array().unwrap().clone()
}

async fn user(app: &TestApp) -> Value {
    app.get("/api/v0/coins/users/ASHA", &app.admin_token).await.assert_ok().clone()
}

fn at(ms: i64) -> String {
    coins::clock::rfc3339(ms)
}

/// The answer of an adjustment, as the wire carries it: every key, in order.
#[allow(clippy::too_many_arguments)]
fn answer(request_id: &str, coins: i64, short: i64, reason: &str, activates: Option<&str>, expires: Option<&str>, balance: i64, pending: i64) -> String {
    let time = |t: Option<&str>| t.map_or("null".to_owned(), |t| format!("\"{t}\""));
    format!(
        r#"{{"payload":{{"requestId":"{request_id}","userId":"ASHA","coins":{coins},"coinsShort":{short},"reason":"{reason}","activatesAt":{},"expiresAt":{},"balance":{balance},"pendingBalance":{pending}}},"response_code":0,"response_message":"Success"}}"#,
        time(activates),
        time(expires)
    )
}

both_backends! {
    async fn a_goodwill_credit_is_a_lot_of_its_own_recorded_with_its_reason_and_client(app: &TestApp) {
        let body = json!({"requestId":"ADJ-1","coins":200,"reason":"Late delivery of order 1042","validityDays":30});
        let res = adjust(app, body.clone()).await;
        let created = entries(app).await[0]["createdAt"].as_str().unwrap().to_owned();
        let created_ms = coins::clock::parse_rfc3339(&created).unwrap();
        let expires = at(created_ms + 30 * DAY_MS);
        assert_eq!(res.text, answer("ADJ-1", 200, 0, "Late delivery of order 1042", None, Some(&expires), 200, 0));
        assert_eq!(res.header("idempotent-replayed"), None);
        // A replay repeats it; the same id with another reason is a conflict.
        let again = adjust(app, body.clone()).await;
        assert_eq!((again.text.as_str(), again.header("idempotent-replayed")), (res.text.as_str(), Some("true")));
        let other = adjust(app, json!({"requestId":"ADJ-1","coins":200,"reason":"Another reason","validityDays":30})).await;
        other.assert_error(409, "REQUEST_ID_CONFLICT");

        let entry = &entries(app).await[0];
        assert_eq!(
            (&entry["type"], &entry["coins"], &entry["balanceAfter"], &entry["requestId"], &entry["expiresAt"], &entry["reason"], &entry["clientId"], &entry["event"]),
            (&json!("ADJUST"), &json!(200), &json!(200), &json!("ADJ-1"), &json!(expires), &json!("Late delivery of order 1042"), &json!(app.admin_id), &Value::Null)
        );
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["lifetimeEarned"]), (&json!(200), &json!(200)));
        // It expires like any lot.
        app.clock.advance_ms(30 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 0);
        assert_eq!(entries(app).await[0]["type"], json!("EXPIRE"));
    }

    async fn an_imported_balance_keeps_its_original_expiry_and_a_debit_takes_the_soonest_first(app: &TestApp) {
        let soon = app.clock.now_ms() + 10 * DAY_MS;
        let res = adjust(app, json!({"requestId":"IMPORT-1","coins":50,"reason":"Imported from the old programme","expiresAt":at(soon)})).await;
        assert_eq!(res.text, answer("IMPORT-1", 50, 0, "Imported from the old programme", None, Some(&at(soon)), 50, 0));
        adjust(app, json!({"requestId":"IMPORT-2","coins":80,"reason":"Imported from the old programme"})).await.assert_ok();
        // A debit takes the 50 expiring first, then 10 of the never-expiring 80.
        let res = adjust(app, json!({"requestId":"ADJ-D1","coins":-60,"reason":"Duplicate import"})).await;
        assert_eq!(res.text, answer("ADJ-D1", -60, 0, "Duplicate import", None, None, 70, 0));
        // So nothing is left to expire at the import's expiry.
        app.clock.advance_ms(11 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 70);
        // A retry of the import after its expiry has passed still replays the first answer.
        let retry = adjust(app, json!({"requestId":"IMPORT-1","coins":50,"reason":"Imported from the old programme","expiresAt":at(soon)})).await;
        assert_eq!((retry.header("idempotent-replayed"), retry.text.as_str()), (Some("true"), answer("IMPORT-1", 50, 0, "Imported from the old programme", None, Some(&at(soon)), 50, 0).as_str()));
        let late = adjust(app, json!({"requestId":"IMPORT-9","coins":50,"reason":"Imported from the old programme","expiresAt":at(soon)})).await;
        assert_eq!(late.assert_error(400, "VALIDATION_FAILED"), "expiresAt must be in the future");
        assert!(entries(app).await.iter().all(|e| e["type"] != json!("EXPIRE")));

        // More than the user has: refused, or capped.
        let res = adjust(app, json!({"requestId":"ADJ-D2","coins":-100,"reason":"Fraudulent order 2231"})).await;
        assert_eq!(res.assert_error(409, "INSUFFICIENT_BALANCE"), "userId ASHA has 70 coins available, 100 are needed");
        let res = adjust(app, json!({"requestId":"ADJ-D2","coins":-100,"reason":"Fraudulent order 2231","onShortfall":"CAP"})).await;
        assert_eq!(res.text, answer("ADJ-D2", -70, 30, "Fraudulent order 2231", None, None, 0, 0));
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["lifetimeEarned"], &u["lifetimeRedeemed"]), (&json!(0), &json!(0), &json!(0)));
    }

    async fn adjustments_are_returned_like_allocations_and_redemptions(app: &TestApp) {
        adjust(app, json!({"requestId":"C1","coins":100,"reason":"Goodwill"})).await.assert_ok();
        adjust(app, json!({"requestId":"D1","coins":-40,"reason":"Mistaken goodwill"})).await.assert_ok();
        // The debit given back: its 40 coins return to the lot they came from.
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R1","originalRequestId":"D1"})).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"], &res.assert_ok()["coinsRemaining"]), (&json!(40), &json!(100), &json!(0)));
        // The credit taken back in part, then the rest.
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R2","originalRequestId":"C1","coins":30})).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"], &res.assert_ok()["coinsRemaining"]), (&json!(-30), &json!(70), &json!(70)));
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R3","originalRequestId":"C1"})).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"], &res.assert_ok()["coinsRemaining"]), (&json!(-70), &json!(0), &json!(0)));
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R4","originalRequestId":"C1"})).await;
        res.assert_error(409, "ALREADY_REVERSED");
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["lifetimeEarned"]), (&json!(0), &json!(0)));
    }

    async fn a_held_credit_becomes_spendable_when_its_hold_ends(app: &TestApp) {
        let res = adjust(app, json!({"requestId":"H1","coins":25,"reason":"Referral bonus after the return window","pendingDays":14,"validityDays":30})).await;
        let created_ms = coins::clock::parse_rfc3339(entries(app).await[0]["createdAt"].as_str().unwrap()).unwrap();
        let activates = at(created_ms + 14 * DAY_MS);
        assert_eq!(res.text, answer("H1", 25, 0, "Referral bonus after the return window", Some(&activates), None, 0, 25));
        assert_eq!((&user(app).await["balance"], &user(app).await["pendingBalance"]), (&json!(0), &json!(25)));
        app.clock.advance_ms(14 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 25);
        let first = &entries(app).await[0];
        assert_eq!((&first["type"], &first["coins"], &first["originalRequestId"], &first["expiresAt"]), (&json!("ACTIVATE"), &json!(25), &json!("H1"), &json!(at(created_ms + 44 * DAY_MS))));
        // A held credit activates early like a held allocation.
        adjust(app, json!({"requestId":"H2","coins":5,"reason":"Birthday","pendingDays":3})).await.assert_ok();
        let res = app.post("/api/v0/coins/activate", &app.admin_token, json!({"companyId":"SHOP","requestId":"ACT-1","originalRequestId":"H2"})).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"], &res.assert_ok()["pendingBalance"]), (&json!(5), &json!(30), &json!(0)));
    }

    async fn a_claw_back_drives_a_user_into_debt_and_later_credits_pay_it_first(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 50).await;
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A1", "ASHA").await.assert_ok();
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S1","coins":40});
        app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok();
        // 200 taken for a fraudulent order: the user has 10, so they owe 190.
        let res = adjust(app, json!({"requestId":"FRAUD-1","coins":-200,"reason":"Fraudulent order 2231","onShortfall":"NEGATIVE"})).await;
        assert_eq!(res.text, answer("FRAUD-1", -200, 0, "Fraudulent order 2231", None, None, -190, 0));
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["debt"], &u["expiringSoon"]), (&json!(-190), &json!(190), &json!([])));
        assert_eq!(app.balance("ASHA").await, -190);
        // Nothing can be spent while in debt.
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S2","coins":1});
        let res = app.post("/api/v0/coins/redeem", &app.admin_token, spend).await;
        assert_eq!(res.assert_error(409, "INSUFFICIENT_BALANCE"), "userId ASHA has 0 coins available, 1 are needed");
        // Credits pay it first: four allocations of 50 leave 10 spendable.
        for n in 2..=5 {
            app.allocate(&app.admin_token, "SHOP", "ORDER", &format!("A{n}"), "ASHA").await.assert_ok();
        }
        let u = user(app).await;
        assert_eq!((&u["balance"], &u["debt"]), (&json!(10), &json!(0)));
        let ledger = entries(app).await;
        let balances: Vec<&Value> = ledger.iter().take(5).map(|e| &e["balanceAfter"]).collect();
        assert_eq!(balances, [&json!(10), &json!(-40), &json!(-90), &json!(-140), &json!(-190)]);
        // A held credit pays debt when it activates; giving back a debit pays it too.
        adjust(app, json!({"requestId":"FRAUD-2","coins":-30,"reason":"Second fraudulent order","onShortfall":"NEGATIVE"})).await.assert_ok();
        adjust(app, json!({"requestId":"H1","coins":25,"reason":"Held goodwill","pendingDays":1})).await.assert_ok();
        assert_eq!((&user(app).await["balance"], &user(app).await["pendingBalance"]), (&json!(-20), &json!(25)));
        app.clock.advance_ms(DAY_MS);
        assert_eq!(app.balance("ASHA").await, 5);
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, json!({"companyId":"SHOP","requestId":"R1","originalRequestId":"FRAUD-1","coins":10})).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"]), (&json!(10), &json!(15)));
    }

    async fn a_debit_that_made_debt_comes_back_whole_whoever_paid_the_debt(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "ORDER", 50).await;
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A1", "ASHA").await.assert_ok();
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S1","coins":40});
        app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok();
        // 10 taken from A1's lot, 20 owed.
        adjust(app, json!({"requestId":"D1","coins":-30,"reason":"Claw-back","onShortfall":"NEGATIVE"})).await.assert_ok();
        let back = |request_id: &str, coins: Option<i64>| {
            let mut body = json!({"companyId":"SHOP","requestId":request_id,"originalRequestId":"D1"});
            if let Some(coins) = coins {
                body["coins"] = json!(coins);
            }
            app.post("/api/v0/coins/reverse", &app.admin_token, body)
        };
        // 15 back while 20 are owed: it all pays debt.
        let res = back("B1", Some(15)).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"], &res.assert_ok()["coinsRemaining"]), (&json!(15), &json!(-5), &json!(15)));
        // A2 pays the other 5 of the debt and keeps 45.
        app.allocate(&app.admin_token, "SHOP", "ORDER", "A2", "ASHA").await.assert_ok();
        assert_eq!(app.balance("ASHA").await, 45);
        // The last 15: 10 back to A1's lot (all it lost), 5 to a lot of their own.
        let res = back("B2", None).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"], &res.assert_ok()["coinsRemaining"]), (&json!(15), &json!(60), &json!(0)));
        // Every coin is spendable: 60 redeem.
        let spend = json!({"companyId":"SHOP","userId":"ASHA","requestId":"S2","coins":60});
        assert_eq!(app.post("/api/v0/coins/redeem", &app.admin_token, spend).await.assert_ok()["balance"], json!(0));
    }

    async fn fields_that_do_not_fit_are_refused_and_scoping_holds(app: &TestApp) {
        let cases = [
            (json!({"requestId":"X","coins":0,"reason":"r"}), "coins must be a non-zero whole number of coins between -1000000000 and 1000000000"),
            (json!({"requestId":"X","coins":1.5,"reason":"r"}), "coins must be a non-zero whole number of coins between -1000000000 and 1000000000"),
            (json!({"requestId":"X","coins":5}), "reason must be 1 to 200 characters of text, not only spaces, without control characters"),
            (json!({"requestId":"X","coins":5,"reason":"   "}), "reason must be 1 to 200 characters of text, not only spaces, without control characters"),
            (json!({"requestId":"X","coins":5,"reason":"a\u{0}b"}), "reason must be 1 to 200 characters of text, not only spaces, without control characters"),
            (json!({"requestId":"X","coins":5,"reason":"x".repeat(201)}), "reason must be 1 to 200 characters of text, not only spaces, without control characters"),
            (json!({"requestId":"X","coins":5,"reason":"r","validityDays":3,"expiresAt":"2099-01-01T00:00:00Z"}), "give validityDays or expiresAt, not both"),
            (json!({"requestId":"X","coins":5,"reason":"r","expiresAt":"tomorrow"}), "expiresAt must be an RFC 3339 time such as 2027-03-31T23:59:59Z"),
            (json!({"requestId":"X","coins":5,"reason":"r","expiresAt":"2099-01-01T00:00:00Z","pendingDays":3}), "expiresAt cannot be combined with pendingDays: give validityDays, counted from activation"),
            (json!({"requestId":"X","coins":-5,"reason":"r","pendingDays":3}), "validityDays, expiresAt, pendingDays and qualifying apply to credits (positive coins) only"),
            (json!({"requestId":"X","coins":5,"reason":"r","onShortfall":"CAP"}), "onShortfall applies to debits (negative coins) only"),
            (json!({"requestId":"X","coins":-5,"reason":"r","onShortfall":"OWE"}), "onShortfall must be REJECT, CAP or NEGATIVE"),
        ];
        for (body, message) in cases {
            let res = adjust(app, body.clone()).await;
            assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), message, "{body}");
        }
        // A debit needs a user; a company-scoped client adjusts only its own company's users.
        let res = adjust(app, json!({"requestId":"X","coins":-5,"reason":"r"})).await;
        res.assert_error(404, "USER_NOT_FOUND");
        let other = app.company_token(&["OTHER"]).await;
        let res = app.post(ADJUST, &other, json!({"companyId":"SHOP","userId":"ASHA","requestId":"X","coins":5,"reason":"r"})).await;
        res.assert_error(403, "FORBIDDEN");
        adjust(app, json!({"requestId":"X","coins":5,"reason":"r"})).await.assert_ok();
        let res = app.post(ADJUST, &other, json!({"companyId":"OTHER","userId":"ASHA","requestId":"Y","coins":5,"reason":"r"})).await;
        res.assert_error(409, "USER_COMPANY_MISMATCH");
        assert_eq!(app.balance("ASHA").await, 5);
    }
}
