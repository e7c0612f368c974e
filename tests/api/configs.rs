//! Coin configurations — shapes, ids, scoping, uniqueness, validation, audit.

use serde_json::json;

use crate::both_backends;

const CREATE: &str = "/api/v0/enkash-coins/create-coins-config";

both_backends! {
    async fn the_spec_create_example_returns_the_configuration_object(app: &TestApp) {
        let res = app
            .create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6}))
            .await;
        let payload = res.assert_ok();
        let id = payload["coinConfigId"].as_str().unwrap();
        assert!(id.starts_with("WCC") && id.len() >= 9 && id[3..].bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert_eq!(
            payload,
            &json!({"coinConfigId": id, "configuration":"DEFAULT","companyId":"CEKEKCARDS","event":"MEAL_CARD_PAYMENT","amount":6,
                    "validityDays": null, "maxPerUserPerDay": null, "maxPerUser": null, "active": true,
                    "amountType": "FIXED", "rateBps": null, "minAmountMinor": null, "maxCoinsPerAllocation": null, "rounding": "FLOOR", "pendingDays": null, "tierMultiplier": true})
        );
        assert_eq!(res.header("content-type"), Some("application/json"));
        let got = app.get(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token).await;
        assert_eq!(got.assert_ok(), payload);
    }

    async fn the_spec_patch_example_changes_the_amount(app: &TestApp) {
        let id = app.config("DEFAULT", "CEKEKCARDS", "MEAL_CARD_PAYMENT", 6).await;
        let res = app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"amount": 10, "configuration" : "DEFAULT"})).await;
        assert_eq!(res.assert_ok()["amount"], json!(10));
        assert_eq!(res.assert_ok()["coinConfigId"], json!(id));
        let got = app.get(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token).await;
        assert_eq!(got.assert_ok()["amount"], json!(10));
    }

    async fn config_ids_are_distinct_and_never_reused(app: &TestApp) {
        let a = app.config("DEFAULT", "C", "E1", 1).await;
        let b = app.config("CUSTOM", "C", "E1", 2).await;
        let c = app.config("DEFAULT", "C", "E2", 3).await;
        assert!(a != b && b != c && a != c);
        let n = |s: &str| s[3..].parse::<u64>().unwrap();
        assert!(n(&a) < n(&b) && n(&b) < n(&c));
    }

    async fn a_second_default_for_an_event_is_a_conflict_naming_the_first(app: &TestApp) {
        let id = app.config("DEFAULT", "C1", "E", 5).await;
        let res = app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C2","event":"E","amount":7})).await;
        assert!(res.assert_error(409, "DUPLICATE_COIN_CONFIG").contains(&id));
        // Events are case-sensitive: "e" is another event.
        app.config("DEFAULT", "C1", "e", 5).await;
    }

    async fn a_second_custom_for_a_company_and_event_is_a_conflict_but_other_companies_are_free(app: &TestApp) {
        let id = app.config("CUSTOM", "C1", "E", 5).await;
        let res = app.create_config(&app.admin_token, json!({"configuration":"CUSTOM","companyId":"C1","event":"E","amount":7})).await;
        assert!(res.assert_error(409, "DUPLICATE_COIN_CONFIG").contains(&id));
        app.config("CUSTOM", "C2", "E", 5).await;
        app.config("DEFAULT", "C1", "E", 5).await;
    }

    async fn patching_into_an_occupied_slot_is_a_conflict(app: &TestApp) {
        let first = app.config("CUSTOM", "C1", "E", 5).await;
        let second = app.config("CUSTOM", "C2", "E", 5).await;
        let res = app.patch(&format!("/api/v0/enkash-coins/{second}"), &app.admin_token, json!({"companyId": "C1"})).await;
        assert!(res.assert_error(409, "DUPLICATE_COIN_CONFIG").contains(&first));
        // Patching a configuration onto its own slot is no conflict.
        app.patch(&format!("/api/v0/enkash-coins/{second}"), &app.admin_token, json!({"companyId": "C2", "amount": 9})).await.assert_ok();
    }

    async fn company_clients_manage_only_their_own_custom_configurations(app: &TestApp) {
        let token = app.company_token(&["MINE"]).await;
        let res = app.create_config(&token, json!({"configuration":"DEFAULT","companyId":"MINE","event":"E","amount":5})).await;
        res.assert_error(403, "FORBIDDEN");
        let res = app.create_config(&token, json!({"configuration":"CUSTOM","companyId":"THEIRS","event":"E","amount":5})).await;
        res.assert_error(403, "FORBIDDEN");
        let mine = app.create_config(&token, json!({"configuration":"CUSTOM","companyId":"MINE","event":"E","amount":5})).await;
        let mine = mine.assert_ok()["coinConfigId"].as_str().unwrap().to_owned();
        let theirs = app.config("CUSTOM", "THEIRS", "E", 5).await;
        let default = app.config("DEFAULT", "ANY", "E", 5).await;

        app.get(&format!("/api/v0/enkash-coins/{mine}"), &token).await.assert_ok();
        app.get(&format!("/api/v0/enkash-coins/{default}"), &token).await.assert_ok();
        app.get(&format!("/api/v0/enkash-coins/{theirs}"), &token).await.assert_error(403, "FORBIDDEN");
        app.patch(&format!("/api/v0/enkash-coins/{theirs}"), &token, json!({"amount": 1})).await.assert_error(403, "FORBIDDEN");
        app.patch(&format!("/api/v0/enkash-coins/{default}"), &token, json!({"amount": 1})).await.assert_error(403, "FORBIDDEN");
        // Nor may a company client move its configuration to another company or make it DEFAULT.
        app.patch(&format!("/api/v0/enkash-coins/{mine}"), &token, json!({"companyId": "THEIRS"})).await.assert_error(403, "FORBIDDEN");
        app.patch(&format!("/api/v0/enkash-coins/{mine}"), &token, json!({"configuration": "DEFAULT"})).await.assert_error(403, "FORBIDDEN");
        let res = app.patch(&format!("/api/v0/enkash-coins/{mine}"), &token, json!({"amount": 8})).await;
        assert_eq!(res.assert_ok()["amount"], json!(8));
    }

    async fn unknown_or_malformed_config_ids_are_not_found(app: &TestApp) {
        for id in ["WCC999999", "WCC12", "wcc100001", "nonsense"] {
            let res = app.get(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token).await;
            assert!(res.assert_error(404, "COIN_CONFIG_NOT_FOUND").contains(id));
        }
        app.patch("/api/v0/enkash-coins/WCC999999", &app.admin_token, json!({"amount": 1})).await.assert_error(404, "COIN_CONFIG_NOT_FOUND");
    }

    async fn every_invalid_field_is_refused_with_a_message_naming_it(app: &TestApp) {
        let base = json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":6});
        let cases = [
            ("amount", json!(6.5)), ("amount", json!("6")), ("amount", json!(0)), ("amount", json!(-1)),
            ("amount", json!(null)), ("amount", json!(1_000_000_001)), ("amount", json!(1e30)),
            ("configuration", json!("default")), ("configuration", json!(null)), ("configuration", json!(1)),
            ("companyId", json!("")), ("companyId", json!("has space")), ("companyId", json!("x".repeat(65))), ("companyId", json!(7)),
            ("event", json!("A:B")), ("event", json!("")), ("event", json!(null)),
            ("validityDays", json!(0)), ("validityDays", json!("3")), ("maxPerUser", json!(0)), ("maxPerUserPerDay", json!(1.5)),
            ("active", json!("yes")),
        ];
        for (field, value) in cases {
            let mut body = base.clone();
            body[field] = value.clone();
            let res = app.create_config(&app.admin_token, body).await;
            let message = res.assert_error(400, "VALIDATION_FAILED");
            assert!(message.contains(field), "{field}={value}: {message}");
        }
        let missing = app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C","event":"E"})).await;
        assert_eq!(missing.assert_error(400, "VALIDATION_FAILED"), "amount must be a whole number of coins between 1 and 1000000000");
        // The boundaries themselves are accepted.
        let res = app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"x".repeat(64),"event":"E","amount":1_000_000_000})).await;
        res.assert_ok();
    }

    async fn a_patch_needs_at_least_one_known_field_and_validates_each(app: &TestApp) {
        let id = app.config("DEFAULT", "C", "E", 5).await;
        let path = format!("/api/v0/enkash-coins/{id}");
        app.patch(&path, &app.admin_token, json!({})).await.assert_error(400, "VALIDATION_FAILED");
        app.patch(&path, &app.admin_token, json!({"colour": "red"})).await.assert_error(400, "VALIDATION_FAILED");
        let res = app.patch(&path, &app.admin_token, json!({"amount": 0})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").contains("amount"));
        let res = app.patch(&path, &app.admin_token, json!({"configuration": "OTHER"})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").contains("configuration"));
        let got = app.get(&path, &app.admin_token).await;
        assert_eq!(got.assert_ok()["amount"], json!(5), "a refused patch changes nothing");
    }

    async fn optional_fields_are_stored_returned_and_cleared_with_null(app: &TestApp) {
        let res = app
            .create_config(&app.admin_token, json!({"configuration":"CUSTOM","companyId":"C","event":"E","amount":3,
                "validityDays": 30, "maxPerUserPerDay": 2, "maxPerUser": 10, "active": false, "ignored": "field"}))
            .await;
        let payload = res.assert_ok().clone();
        assert_eq!((payload["validityDays"].clone(), payload["maxPerUserPerDay"].clone(), payload["maxPerUser"].clone(), payload["active"].clone()),
                   (json!(30), json!(2), json!(10), json!(false)));
        let id = payload["coinConfigId"].as_str().unwrap();
        let res = app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"validityDays": null, "active": true})).await;
        let p = res.assert_ok();
        assert_eq!((p["validityDays"].clone(), p["maxPerUser"].clone(), p["active"].clone()), (json!(null), json!(10), json!(true)));
    }

    async fn creating_a_configuration_needs_a_json_body(app: &TestApp) {
        let res = app.http.post(app.url(CREATE)).bearer_auth(&app.admin_token).header("content-type", "application/json").body("{\"amount\": ").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 400);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], json!("MALFORMED_JSON"));
        let res = app.http.post(app.url(CREATE)).bearer_auth(&app.admin_token).header("content-type", "application/json").body("[1,2]").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 400);
    }
}

/// On SQLite the index the per-user caps count with exists only while some configuration has a
/// cap (every allocation writes into it otherwise, for nothing). A cap set later counts the
/// allocations made while there was no index, as the cap always did.
#[tokio::test]
async fn the_caps_index_exists_only_while_a_configuration_has_a_cap_on_sqlite() {
    let Some(app) = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await else { return };
    let has_index = || {
        let conn = rusqlite::Connection::open(&app.db.url).unwrap();
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'ledger_caps'", [], |r| r.get::<_, i64>(0)).unwrap() == 1
    };
    assert!(!has_index(), "a new database has no cap");
    app.config("DEFAULT", "C", "FREE", 1).await;
    assert!(!has_index(), "a configuration without a cap needs no index");
    let capped = app.create_config(&app.admin_token, json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":1,"maxPerUserPerDay":2})).await;
    let id = capped.assert_ok()["coinConfigId"].as_str().unwrap().to_owned();
    assert!(has_index(), "the first cap builds it");
    app.allocate(&app.admin_token, "C", "E", "R1", "U").await.assert_ok();
    app.allocate(&app.admin_token, "C", "E", "R2", "U").await.assert_ok();
    app.allocate(&app.admin_token, "C", "E", "R3", "U").await.assert_error(409, "LIMIT_REACHED");

    let path = format!("/api/v0/enkash-coins/{id}");
    app.patch(&path, &app.admin_token, json!({"maxPerUserPerDay": null})).await.assert_ok();
    assert!(!has_index(), "removing the last cap drops it");
    app.allocate(&app.admin_token, "C", "E", "R3", "U").await.assert_ok();
    app.allocate(&app.admin_token, "C", "E", "R4", "V").await.assert_ok();

    app.patch(&path, &app.admin_token, json!({"maxPerUserPerDay": 4})).await.assert_ok();
    assert!(has_index(), "a cap again builds it again");
    app.allocate(&app.admin_token, "C", "E", "R5", "U").await.assert_ok();
    let refused = app.allocate(&app.admin_token, "C", "E", "R6", "U").await.assert_error(409, "LIMIT_REACHED").to_owned();
    assert!(refused.contains("maxPerUserPerDay"), "{refused}");
    app.allocate(&app.admin_token, "C", "E", "R6", "V").await.assert_ok();
    app.assert_ledger_consistent().await;
}
