//! Isolation between companies, route by route: a client scoped to company A tries every route
//! the router serves against company B's data (read, write, replay, reverse, history, users,
//! configurations, coin value) and gets the documented answer; B's data is unchanged afterwards.
//! The routes come from the API document, which is made from the router's own registrations: a
//! route added without a row here fails the test.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// What company A's client must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and error code.
    Refused(u16, &'static str),
    /// 200, and the payload must not mention B's data (`Leak` is checked for B's ids).
    Hidden,
    /// Not company data at all (public or operational routes), with the reason.
    NotCompanyData(#[allow(dead_code)] &'static str),
}

struct Row {
    method: &'static str,
    path: &'static str,
    /// Concrete requests (path with ids, body) and what each must get.
    tries: Vec<(String, Option<Value>, Expect)>,
}

fn rows(b_config: &str, b_hook: &str) -> Vec<Row> {
    use Expect::*;
    let alloc_b = json!({"companyId":"B","event":"E","requestId":"B-A1","userId":"UB"});
    vec![
        Row {
            method: "post",
            path: "/oauth/token",
            tries: vec![(
                "/oauth/token".into(),
                None,
                NotCompanyData("tokens belong to clients; another client's refresh token is covered in tests/api/hardening.rs"),
            )],
        },
        Row {
            method: "post",
            path: "/api/v0/enkash-coins/create-coins-config",
            tries: vec![(
                "/api/v0/enkash-coins/create-coins-config".into(),
                Some(json!({"configuration":"CUSTOM","companyId":"B","event":"E2","amount":9})),
                Refused(403, "FORBIDDEN"),
            )],
        },
        Row {
            method: "post",
            path: "/api/v0/enkash-coins/allocate-coin",
            tries: vec![
                ("/api/v0/enkash-coins/allocate-coin".into(), Some(alloc_b.clone()), Refused(403, "FORBIDDEN")),
                // B's user credited under A: refused, and nothing reaches B's user.
                (
                    "/api/v0/enkash-coins/allocate-coin".into(),
                    Some(json!({"companyId":"A","event":"E","requestId":"A-X","userId":"UB"})),
                    Refused(409, "USER_COMPANY_MISMATCH"),
                ),
            ],
        },
        Row {
            method: "post",
            path: "/api/v0/enkash-coins/allocate-coins",
            tries: vec![("/api/v0/enkash-coins/allocate-coins".into(), Some(json!({"allocations":[alloc_b]})), Hidden)],
        },
        Row { method: "get", path: "/api/v0/enkash-coins", tries: vec![("/api/v0/enkash-coins?companyId=B".into(), None, Hidden)] },
        Row {
            method: "get",
            path: "/api/v0/enkash-coins/{coinConfigId}",
            tries: vec![(format!("/api/v0/enkash-coins/{b_config}"), None, Refused(403, "FORBIDDEN"))],
        },
        Row {
            method: "patch",
            path: "/api/v0/enkash-coins/{coinConfigId}",
            tries: vec![
                (format!("/api/v0/enkash-coins/{b_config}"), Some(json!({"amount": 1})), Refused(403, "FORBIDDEN")),
                (format!("/api/v0/enkash-coins/{b_config}"), Some(json!({"companyId": "A"})), Refused(403, "FORBIDDEN")),
            ],
        },
        Row {
            method: "get",
            path: "/api/v0/enkash-coins/{coinConfigId}/history",
            tries: vec![(format!("/api/v0/enkash-coins/{b_config}/history"), None, Refused(403, "FORBIDDEN"))],
        },
        Row { method: "get", path: "/api/v0/coins/balance", tries: vec![("/api/v0/coins/balance?userId=UB".into(), None, Hidden)] },
        Row {
            method: "post",
            path: "/api/v0/coins/redeem",
            tries: vec![
                ("/api/v0/coins/redeem".into(), Some(json!({"companyId":"B","userId":"UB","requestId":"B-R9","coins":1})), Refused(403, "FORBIDDEN")),
                ("/api/v0/coins/redeem".into(), Some(json!({"companyId":"A","userId":"UB","requestId":"A-R9","coins":1})), Refused(404, "USER_NOT_FOUND")),
                // Replaying B's redemption under A's company is a different request id space.
                ("/api/v0/coins/redeem".into(), Some(json!({"companyId":"A","userId":"UB","requestId":"B-R1","coins":2})), Refused(404, "USER_NOT_FOUND")),
            ],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/reverse",
            tries: vec![
                ("/api/v0/coins/reverse".into(), Some(json!({"companyId":"B","requestId":"B-X9","originalRequestId":"B-A1"})), Refused(403, "FORBIDDEN")),
                ("/api/v0/coins/reverse".into(), Some(json!({"companyId":"A","requestId":"A-X9","originalRequestId":"B-A1"})), Refused(404, "NOT_FOUND")),
            ],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/activate",
            tries: vec![
                ("/api/v0/coins/activate".into(), Some(json!({"companyId":"B","requestId":"B-V9","originalRequestId":"B-A1"})), Refused(403, "FORBIDDEN")),
                ("/api/v0/coins/activate".into(), Some(json!({"companyId":"A","requestId":"A-V9","originalRequestId":"B-A1"})), Refused(404, "NOT_FOUND")),
            ],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/exports/ledger",
            tries: vec![("/api/v0/coins/exports/ledger?companyId=B&from=2020-01-01T00:00:00Z&to=2020-12-01T00:00:00Z".into(), None, Refused(403, "FORBIDDEN"))],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/exports/balances",
            tries: vec![("/api/v0/coins/exports/balances?companyId=B".into(), None, Refused(403, "FORBIDDEN"))],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/simulate",
            tries: vec![
                (
                    "/api/v0/coins/simulate".into(),
                    Some(json!({"operation":"REVERSE","companyId":"B","requestId":"B-S9","originalRequestId":"B-A1"})),
                    Refused(403, "FORBIDDEN"),
                ),
                // B's allocation named under A: a simulated refusal that says no more than the
                // real call would (not found for A).
                ("/api/v0/coins/simulate".into(), Some(json!({"operation":"REVERSE","companyId":"A","requestId":"A-S9","originalRequestId":"B-A1"})), Hidden),
            ],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/adjust",
            tries: vec![
                (
                    "/api/v0/coins/adjust".into(),
                    Some(json!({"companyId":"B","userId":"UB","requestId":"B-J9","coins":5,"reason":"r"})),
                    Refused(403, "FORBIDDEN"),
                ),
                // B's user adjusted under A: a credit is refused, a debit finds no such user.
                (
                    "/api/v0/coins/adjust".into(),
                    Some(json!({"companyId":"A","userId":"UB","requestId":"A-J9","coins":5,"reason":"r"})),
                    Refused(409, "USER_COMPANY_MISMATCH"),
                ),
                (
                    "/api/v0/coins/adjust".into(),
                    Some(json!({"companyId":"A","userId":"UB","requestId":"A-J8","coins":-5,"reason":"r"})),
                    Refused(404, "USER_NOT_FOUND"),
                ),
            ],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/allocations/{requestId}",
            tries: vec![
                ("/api/v0/coins/allocations/B-A1?companyId=B".into(), None, Refused(403, "FORBIDDEN")),
                // B's request id looked up under A: no such allocation there.
                ("/api/v0/coins/allocations/B-A1?companyId=A".into(), None, Refused(404, "NOT_FOUND")),
            ],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/allocations",
            tries: vec![
                ("/api/v0/coins/allocations?companyId=B&event=E&orderId=B-O1".into(), None, Refused(403, "FORBIDDEN")),
                ("/api/v0/coins/allocations?companyId=A&event=E&orderId=B-O1".into(), None, Refused(404, "NOT_FOUND")),
            ],
        },
        Row {
            method: "put",
            path: "/api/v0/coins/coin-value",
            tries: vec![
                ("/api/v0/coins/coin-value".into(), Some(json!({"companyId":"B","currency":"USD","minorUnitsPerCoin":1})), Refused(403, "FORBIDDEN")),
                ("/api/v0/coins/coin-value".into(), Some(json!({"companyId":null,"currency":"USD","minorUnitsPerCoin":1})), Refused(403, "FORBIDDEN")),
            ],
        },
        Row { method: "get", path: "/api/v0/coins/coin-value", tries: vec![("/api/v0/coins/coin-value?companyId=B".into(), None, Refused(403, "FORBIDDEN"))] },
        Row {
            method: "put",
            path: "/api/v0/coins/reminders",
            tries: vec![("/api/v0/coins/reminders".into(), Some(json!({"companyId":"B","expiryReminderDays":[]})), Refused(403, "FORBIDDEN"))],
        },
        Row { method: "get", path: "/api/v0/coins/reminders", tries: vec![("/api/v0/coins/reminders?companyId=B".into(), None, Refused(403, "FORBIDDEN"))] },
        Row {
            method: "post",
            path: "/api/v0/coins/campaigns",
            tries: vec![(
                "/api/v0/coins/campaigns".into(),
                Some(json!({"companyId":"B","name":"x","startsAt":"2099-01-01T00:00:00Z","endsAt":"2099-01-02T00:00:00Z","bonusCoins":1})),
                Refused(403, "FORBIDDEN"),
            )],
        },
        Row { method: "get", path: "/api/v0/coins/campaigns", tries: vec![("/api/v0/coins/campaigns?companyId=B".into(), None, Refused(403, "FORBIDDEN"))] },
        Row {
            method: "put",
            path: "/api/v0/coins/tiers",
            tries: vec![(
                "/api/v0/coins/tiers".into(),
                Some(
                    json!({"companyId":"B","basis":"LIFETIME","downgrade":"NEVER","tiers":[{"code":"ALL","name":"All","threshold":0,"earnMultiplierBps":50000}]}),
                ),
                Refused(403, "FORBIDDEN"),
            )],
        },
        Row { method: "get", path: "/api/v0/coins/tiers", tries: vec![("/api/v0/coins/tiers?companyId=B".into(), None, Refused(403, "FORBIDDEN"))] },
        Row { method: "delete", path: "/api/v0/coins/tiers", tries: vec![("/api/v0/coins/tiers?companyId=B".into(), None, Refused(403, "FORBIDDEN"))] },
        Row {
            method: "put",
            path: "/api/v0/coins/users/{userId}/tier",
            tries: vec![
                ("/api/v0/coins/users/UB/tier".into(), Some(json!({"companyId":"B","tierCode":"TOP","reason":"x"})), Refused(403, "FORBIDDEN")),
                // Under A's own company: A has no scheme, and B's member is not touched.
                ("/api/v0/coins/users/UB/tier".into(), Some(json!({"companyId":"A","tierCode":"TOP","reason":"x"})), Refused(404, "TIERS_NOT_CONFIGURED")),
            ],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/campaigns/{campaignId}",
            tries: vec![("/api/v0/coins/campaigns/CMP100001".into(), None, Refused(404, "CAMPAIGN_NOT_FOUND"))],
        },
        Row {
            method: "patch",
            path: "/api/v0/coins/campaigns/{campaignId}",
            tries: vec![("/api/v0/coins/campaigns/CMP100001".into(), Some(json!({"bonusCoins":500})), Refused(404, "CAMPAIGN_NOT_FOUND"))],
        },
        Row {
            method: "delete",
            path: "/api/v0/coins/campaigns/{campaignId}",
            tries: vec![("/api/v0/coins/campaigns/CMP100001".into(), None, Refused(404, "CAMPAIGN_NOT_FOUND"))],
        },
        Row { method: "get", path: "/api/v0/coins/users/{userId}", tries: vec![("/api/v0/coins/users/UB".into(), None, Refused(404, "USER_NOT_FOUND"))] },
        Row {
            method: "post",
            path: "/api/v0/coins/users/{userId}/page-link",
            tries: vec![("/api/v0/coins/users/UB/page-link".into(), Some(json!({})), Refused(404, "USER_NOT_FOUND"))],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/transactions",
            tries: vec![("/api/v0/coins/transactions?userId=UB".into(), None, Refused(404, "USER_NOT_FOUND"))],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/webhooks",
            tries: vec![(
                "/api/v0/coins/webhooks".into(),
                Some(json!({"companyId":"B","url":"http://127.0.0.1:9/h","events":["coins.allocated"]})),
                Refused(403, "FORBIDDEN"),
            )],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/webhooks",
            tries: vec![("/api/v0/coins/webhooks".into(), None, Hidden), ("/api/v0/coins/webhooks?companyId=B".into(), None, Refused(403, "FORBIDDEN"))],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/webhooks/{webhookId}",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}"), None, Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row {
            method: "patch",
            path: "/api/v0/coins/webhooks/{webhookId}",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}"), Some(json!({"url":"http://127.0.0.1:9/stolen"})), Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row {
            method: "delete",
            path: "/api/v0/coins/webhooks/{webhookId}",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}"), None, Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/webhooks/{webhookId}/rotate-secret",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}/rotate-secret"), Some(json!({})), Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/webhooks/{webhookId}/test",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}/test"), Some(json!({})), Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row {
            method: "get",
            path: "/api/v0/coins/webhooks/{webhookId}/deliveries",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}/deliveries"), None, Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row {
            method: "post",
            path: "/api/v0/coins/webhooks/{webhookId}/deliveries/{messageId}/retry",
            tries: vec![(format!("/api/v0/coins/webhooks/{b_hook}/deliveries/msg_1/retry"), Some(json!({})), Refused(404, "WEBHOOK_NOT_FOUND"))],
        },
        Row { method: "get", path: "/healthz", tries: vec![("/healthz".into(), None, NotCompanyData("public"))] },
        Row { method: "get", path: "/readyz", tries: vec![("/readyz".into(), None, NotCompanyData("public"))] },
        Row { method: "get", path: "/openapi.json", tries: vec![("/openapi.json".into(), None, NotCompanyData("public"))] },
        Row { method: "get", path: "/docs", tries: vec![("/docs".into(), None, NotCompanyData("public"))] },
        Row { method: "get", path: "/docs/{asset}", tries: vec![("/docs/init.js".into(), None, NotCompanyData("public"))] },
        Row { method: "get", path: "/metrics", tries: vec![("/metrics".into(), None, Refused(403, "FORBIDDEN"))] },
    ]
}

/// Everything of B's that an admin can read.
async fn b_state(app: &TestApp, b_config: &str, b_hook: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/v0/coins/users/UB".to_owned(),
        "/api/v0/coins/transactions?userId=UB&limit=500".to_owned(),
        format!("/api/v0/enkash-coins/{b_config}"),
        format!("/api/v0/enkash-coins/{b_config}/history"),
        "/api/v0/enkash-coins?companyId=B".to_owned(),
        "/api/v0/coins/coin-value?companyId=B".to_owned(),
        "/api/v0/coins/reminders?companyId=B".to_owned(),
        "/api/v0/coins/campaigns?companyId=B".to_owned(),
        "/api/v0/coins/tiers?companyId=B".to_owned(),
        "/api/v0/coins/coin-value".to_owned(),
        format!("/api/v0/coins/webhooks/{b_hook}"),
        format!("/api/v0/coins/webhooks/{b_hook}/deliveries"),
    ] {
        out.push(app.get(&path, &app.admin_token).await.assert_ok().clone());
    }
    out
}

both_backends! {
    async fn a_company_client_cannot_reach_another_companys_data_through_any_route(app: &TestApp) {
        // B: a DEFAULT for E, its own CUSTOM, a user with an allocation and a redemption, a coin value.
        app.config("DEFAULT", "B", "E", 10).await;
        let b_config = app.create_config(&app.admin_token, json!({"configuration":"CUSTOM","companyId":"B","event":"E","amount":20})).await.assert_ok()["coinConfigId"].as_str().unwrap().to_owned();
        app.allocate(&app.admin_token, "B", "E", "B-A1", "UB").await.assert_ok();
        app.post("/api/v0/enkash-coins/allocate-coin", &app.admin_token, json!({"companyId":"B","event":"E","requestId":"B-A2","userId":"UB","orderId":"B-O1"}))
            .await
            .assert_ok();
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"B","userId":"UB","requestId":"B-R1","coins":2})).await.assert_ok();
        app.send(reqwest::Method::PUT, "/api/v0/coins/coin-value", Some(&app.admin_token), Some(&json!({"companyId":"B","currency":"INR","minorUnitsPerCoin":50}))).await.assert_ok();
        app.send(reqwest::Method::PUT, "/api/v0/coins/reminders", Some(&app.admin_token), Some(&json!({"companyId":"B","expiryReminderDays":[7]}))).await.assert_ok();
        let b_campaign = json!({"companyId":"B","name":"B's","startsAt":"2099-01-01T00:00:00Z","endsAt":"2099-01-02T00:00:00Z","multiplierBps":20000});
        assert_eq!(app.post("/api/v0/coins/campaigns", &app.admin_token, b_campaign).await.assert_ok()["campaignId"], json!("CMP100001"));
        let b_tiers = json!({"companyId":"B","basis":"LIFETIME","downgrade":"NEVER","tiers":[{"code":"BASE","name":"Base","threshold":0,"earnMultiplierBps":10000},
            {"code":"TOP","name":"Top","threshold":1000000,"earnMultiplierBps":20000}]});
        app.send(reqwest::Method::PUT, "/api/v0/coins/tiers", Some(&app.admin_token), Some(&b_tiers)).await.assert_ok();
        let hook = app.post("/api/v0/coins/webhooks", &app.admin_token, json!({"companyId":"B","url":"http://127.0.0.1:9/b","events":["coins.allocated"]})).await;
        let b_hook = hook.assert_ok()["webhookId"].as_str().unwrap().to_owned();
        let before = b_state(app, &b_config, &b_hook).await;
        let a = app.company_token(&["A"]).await;

        // Every route the router serves has a row.
        let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        let rows = rows(&b_config, &b_hook);
        let table: BTreeMap<(String, String), &Row> = rows.iter().map(|r| ((r.method.to_owned(), r.path.to_owned()), r)).collect();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str())) {
                assert!(table.contains_key(&(method.clone(), path.clone())), "no isolation row for {method} {path}: add one");
            }
        }

        for row in &rows {
            for (path, body, expect) in &row.tries {
                let res = app.send(row.method.to_uppercase().parse().unwrap(), path, Some(&a), body.as_ref()).await;
                match *expect {
                    Expect::Refused(status, code) => {
                        res.assert_error(status, code);
                    }
                    Expect::Hidden => {
                        let payload = res.assert_ok();
                        let text = payload.to_string();
                        assert!(!text.contains(&b_config) && !text.contains(&b_hook) && !text.contains("\"allocated\":1") && payload != &json!(18), "{} {path}: B's data shows: {text}", row.method);
                        if path.contains("allocate-coins") {
                            assert_eq!(payload["results"][0]["errorCode"], json!("FORBIDDEN"));
                        }
                        if path.contains("simulate") {
                            assert_eq!(payload["errorCode"], json!("NOT_FOUND"), "{text}");
                        }
                        if path.contains("balance") {
                            assert_eq!(payload, &json!(0), "another company's user reads as never credited");
                        }
                    }
                    Expect::NotCompanyData(_) => {}
                }
            }
        }
        assert_eq!(b_state(app, &b_config, &b_hook).await, before, "B's data changed");
    }
}
