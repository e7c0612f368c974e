//! Simulation on both backends: what a purchase would earn (held, capped, under an order already
//! held, refused) and what a refund would take back, with exact wire shapes; every table of the
//! database is compared before and after each simulation (nothing written at all), and the real
//! call with the same requestId then applies exactly what was simulated.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const SIMULATE: &str = "/api/v0/coins/simulate";
const ALLOCATE: &str = "/api/v0/enkash-coins/allocate-coin";

/// Every row of every table of the test's database, as text, table by table.
async fn dump(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&app.db.url).unwrap();
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for table in tables {
                let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        let cells: Vec<String> = (0..n).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect();
                        Ok(cells.join("|"))
                    })
                    .unwrap();
                for row in rows {
                    out.push(format!("{table}: {}", row.unwrap()));
                }
            }
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let tables =
                client.query("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1", &[]).await.unwrap();
            for t in tables {
                let table: String = t.get(0);
                for row in client.query(&format!("SELECT t::TEXT FROM \"{table}\" t ORDER BY 1"), &[]).await.unwrap() {
                    out.push(format!("{table}: {}", row.get::<_, String>(0)));
                }
            }
            // Sequences are state too: a simulation may not advance one.
            for s in client
                .query("SELECT sequencename::TEXT, COALESCE(last_value, 0) FROM pg_sequences WHERE schemaname = current_schema() ORDER BY 1", &[])
                .await
                .unwrap()
            {
                out.push(format!("sequence {}: {}", s.get::<_, String>(0), s.get::<_, i64>(1)));
            }
        }
    }
    out.sort();
    out
}

/// Simulates `body`, checking that nothing at all changed in the database.
async fn simulate(app: &TestApp, body: Value) -> Value {
    let before = dump(app).await;
    let res = app.post(SIMULATE, &app.admin_token, body.clone()).await;
    let payload = res.assert_ok().clone();
    assert_eq!(dump(app).await, before, "simulating {body} changed the database");
    payload
}

/// 2 % cashback, held 14 days, at most 500 coins, valid a year.
async fn cashback(app: &TestApp) {
    let body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"BUY","amountType":"PERCENT","rateBps":200,
                      "maxCoinsPerAllocation":500,"pendingDays":14,"validityDays":365,"maxPerUser":2});
    app.create_config(&app.admin_token, body).await.assert_ok();
}

both_backends! {
    async fn a_simulated_purchase_writes_nothing_and_the_real_one_then_applies_it(app: &TestApp) {
        cashback(app).await;
        app.config("CUSTOM", "SHOP", "SIGNUP", 25).await;
        app.allocate(&app.admin_token, "SHOP", "SIGNUP", "S1", "ASHA").await.assert_ok();
        let purchase = json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","orderId":"O1","amountMinor":49999});
        let mut body = purchase.clone();
        body["operation"] = json!("ALLOCATE");
        let sim = simulate(app, body.clone()).await;
        let activates = sim["activatesAt"].as_str().expect("held: activatesAt").to_owned();
        assert_eq!(
            sim,
            json!({"outcome":"ALLOCATE","coins":9,"baseCoins":9,"state":"PENDING","activatesAt":activates,"expiresAt":null,"coinConfigId":"WCC100001",
                   "calculation":{"amountType":"PERCENT","amountMinor":49999,"rateBps":200,"minorUnitsPerCoin":100,"multiplierBps":10000,"exact":"9.9998",
                                  "rounding":"FLOOR","cappedBy":null,"amount":null,"minAmountMinor":null,"maxCoinsPerAllocation":500,"campaignId":null,"campaignBps":null,"campaignBonusCoins":null,"tierCode":null,"tierBps":null},
                   "tierBefore":null,"tierAfter":null,"balanceAfter":25,"pendingAfter":9,"errorCode":null,"message":null})
        );
        // The real call with the same requestId applies exactly that.
        app.post(ALLOCATE, &app.admin_token, purchase.clone()).await.assert_ok();
        let record = app.get("/api/v0/coins/allocations/P1?companyId=SHOP", &app.admin_token).await;
        assert_eq!((&record.assert_ok()["coins"], &record.assert_ok()["state"], &record.assert_ok()["calculation"]), (&json!(9), &json!("PENDING"), &sim["calculation"]));
        // Now it is a replay, and so is a till's retry of the order under a new id.
        assert_eq!(simulate(app, body.clone()).await["outcome"], json!("REPLAY"));
        body["requestId"] = json!("P1-RETRY");
        assert_eq!((simulate(app, body.clone()).await["outcome"].clone(), simulate(app, body.clone()).await["coins"].clone()), (json!("REPLAY"), json!(9)));
        // The cap (two per user) refuses a third, as the real call would; the answer is 200.
        app.post(ALLOCATE, &app.admin_token, json!({"companyId":"SHOP","event":"BUY","requestId":"P2","userId":"ASHA","amountMinor":10000})).await.assert_ok();
        let third = json!({"operation":"ALLOCATE","companyId":"SHOP","event":"BUY","requestId":"P3","userId":"ASHA","amountMinor":100000});
        let sim = simulate(app, third).await;
        assert_eq!((&sim["outcome"], &sim["errorCode"], &sim["coins"]), (&json!("REFUSE"), &json!("LIMIT_REACHED"), &Value::Null));
        let real = app.post(ALLOCATE, &app.admin_token, json!({"companyId":"SHOP","event":"BUY","requestId":"P3","userId":"ASHA","amountMinor":100000})).await;
        assert_eq!(real.assert_error(409, "LIMIT_REACHED"), sim["message"].as_str().unwrap());
        // A new user: nothing is created by asking.
        let sim = simulate(app, json!({"operation":"ALLOCATE","companyId":"SHOP","event":"SIGNUP","requestId":"S2","userId":"NEW"})).await;
        assert_eq!((&sim["outcome"], &sim["coins"], &sim["balanceAfter"], &sim["calculation"]["exact"]), (&json!("ALLOCATE"), &json!(25), &json!(25), &json!("25")));
        app.get("/api/v0/coins/users/NEW", &app.admin_token).await.assert_error(404, "USER_NOT_FOUND");
    }

    async fn a_simulated_refund_says_what_it_would_take_back_now_or_later(app: &TestApp) {
        cashback(app).await;
        let buy = json!({"companyId":"SHOP","event":"BUY","requestId":"P1","userId":"ASHA","orderId":"O1","amountMinor":1000000});
        app.post(ALLOCATE, &app.admin_token, buy).await.assert_ok();
        let refund = json!({"operation":"REVERSE","companyId":"SHOP","requestId":"R1","orderId":"O1","event":"BUY","amountMinor":250000});
        // During the hold: a cancel of what ₹2,500 earned.
        let sim = simulate(app, refund.clone()).await;
        assert_eq!(
            (&sim["outcome"], &sim["coins"], &sim["state"], &sim["balanceAfter"], &sim["pendingAfter"]),
            (&json!("REVERSE"), &json!(-50), &json!("PENDING"), &json!(0), &json!(150))
        );
        // At a later instant, after the hold: the coins are spendable, so it is a reversal.
        let later = coins::clock::rfc3339(coins::clock::Clock::now_ms(&app.clock) + 15 * 86_400_000);
        let mut at_later = refund.clone();
        at_later["at"] = json!(later);
        let sim = simulate(app, at_later).await;
        assert_eq!(
            (&sim["outcome"], &sim["coins"], &sim["state"], &sim["balanceAfter"], &sim["pendingAfter"]),
            (&json!("REVERSE"), &json!(-50), &json!("ACTIVE"), &json!(150), &json!(0))
        );
        // More than was paid: refused as the real call would be.
        let mut too_much = refund.clone();
        too_much["amountMinor"] = json!(1000001);
        let sim = simulate(app, too_much).await;
        assert_eq!((&sim["outcome"], &sim["errorCode"]), (&json!("REFUSE"), &json!("REVERSAL_EXCEEDS_REMAINING")));
        // The past and unknown operations are malformed requests.
        let mut past = refund.clone();
        past["at"] = json!("2001-01-01T00:00:00Z");
        assert_eq!(app.post(SIMULATE, &app.admin_token, past).await.assert_error(400, "VALIDATION_FAILED"), "at must not be in the past");
        let res = app.post(SIMULATE, &app.admin_token, json!({"operation":"REDEEM","companyId":"SHOP"})).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "operation must be ALLOCATE or REVERSE");
        // The real refund then does what was simulated.
        let mut real = refund;
        real.as_object_mut().unwrap().remove("operation");
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, real).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["pendingBalance"]), (&json!(-50), &json!(150)));
    }

    async fn a_simulation_at_a_later_instant_is_what_the_real_call_then_does(app: &TestApp) {
        // Expiring in 30 days, never expiring, and held 14 days then valid a year.
        app.create_config(&app.admin_token, json!({"configuration":"CUSTOM","companyId":"SHOP","event":"MONTH","amount":100,"validityDays":30})).await.assert_ok();
        app.config("CUSTOM", "SHOP", "KEEP", 50).await;
        cashback(app).await;
        let allocate = |user: &str, event: &str, rid: &str| {
            let body = json!({"companyId":"SHOP","event":event,"requestId":rid,"userId":user});
            app.post(ALLOCATE, &app.admin_token, body)
        };
        // U1: a return of the never-expiring allocation after the other expired.
        allocate("U1", "MONTH", "U1-A").await.assert_ok();
        allocate("U1", "KEEP", "U1-B").await.assert_ok();
        // U2: a redemption given back after the lot it came from expired.
        allocate("U2", "MONTH", "U2-A").await.assert_ok();
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"SHOP","userId":"U2","requestId":"U2-R","coins":40})).await.assert_ok();
        // U3: a return of an allocation whose own lot expired, with other coins to take instead.
        allocate("U3", "MONTH", "U3-A").await.assert_ok();
        app.post("/api/v0/coins/adjust", &app.admin_token, json!({"companyId":"SHOP","userId":"U3","requestId":"U3-J","coins":100,"reason":"goodwill"}))
            .await
            .assert_ok();
        // U4: a held purchase, refunded in part long after its hold and its validity ended.
        app.post(ALLOCATE, &app.admin_token, json!({"companyId":"SHOP","event":"BUY","requestId":"U4-P","userId":"U4","amountMinor":1000000})).await.assert_ok();
        let returns = [("U1", "U1-X", json!({"originalRequestId":"U1-B"})), ("U2", "U2-X", json!({"originalRequestId":"U2-R"})),
                       ("U3", "U3-X", json!({"originalRequestId":"U3-A"})), ("U4", "U4-X", json!({"originalRequestId":"U4-P","amountMinor":250000}))];
        let now = coins::clock::Clock::now_ms(&app.clock);
        let mut simulated = Vec::new();
        for (user, days) in [("U1", 31), ("U2", 31), ("U3", 31), ("U4", 400)] {
            let (_, rid, fields) = returns.iter().find(|r| r.0 == user).unwrap();
            let mut body = fields.clone();
            body["operation"] = json!("REVERSE");
            body["companyId"] = json!("SHOP");
            body["requestId"] = json!(rid);
            body["at"] = json!(coins::clock::rfc3339(now + days * 86_400_000));
            simulated.push(simulate(app, body).await);
        }
        // Then time passes and the real returns are made, each at its instant.
        let mut elapsed = 0;
        for ((user, rid, fields), (sim, days)) in returns.iter().zip(simulated.iter().zip([31, 31, 31, 400])) {
            app.clock.advance_ms((days - elapsed) * 86_400_000);
            elapsed = days;
            let mut body = fields.clone();
            body["companyId"] = json!("SHOP");
            body["requestId"] = json!(rid);
            // A token of the new day (the old one expired meanwhile).
            let token = app.token(&app.admin_id, &app.admin_secret).await;
            let res = app.post("/api/v0/coins/reverse", &token, body).await;
            let real = res.assert_ok();
            assert_eq!(
                (&sim["outcome"], &sim["coins"], &sim["balanceAfter"], &sim["pendingAfter"]),
                (&json!("REVERSE"), &real["coins"], &real["balance"], &real["pendingBalance"]),
                "{user}: simulated {sim}, real {real}"
            );
        }
    }
}
