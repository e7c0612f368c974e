//! Allocation (exactly-once, resolution, user binding, scoping) and balance reads.

use serde_json::json;

use crate::both_backends;

both_backends! {
    async fn the_spec_allocation_example_credits_the_user_once(app: &TestApp) {
        app.config("DEFAULT", "CEK0TCW2W8", "REFERRAL_EVENT", 50).await;
        let res = app.allocate(&app.admin_token, "CEK0TCW2W8", "REFERRAL_EVENT", "COIN_REQ1234567", "EKQZVMQK").await;
        assert_eq!(res.text, r#"{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}"#);
        assert_eq!(res.header("idempotent-replayed"), None);
        assert_eq!(app.balance("EKQZVMQK").await, 50);

        let replay = app.allocate(&app.admin_token, "CEK0TCW2W8", "REFERRAL_EVENT", "COIN_REQ1234567", "EKQZVMQK").await;
        assert_eq!(replay.text, res.text, "a replay answers the same response");
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(app.balance("EKQZVMQK").await, 50, "and credits nothing");
    }

    async fn the_spec_balance_example_reads_zero_for_a_user_never_credited(app: &TestApp) {
        let res = app.get("/api/v0/coins/balance?userId=EK6CYE6K", &app.admin_token).await;
        assert_eq!(res.body, json!({"response_code":0,"response_message":"Success","payload":0}));
    }

    async fn reusing_a_request_id_for_another_user_or_event_is_a_conflict(app: &TestApp) {
        app.config("DEFAULT", "C", "E1", 5).await;
        app.config("DEFAULT", "C", "E2", 7).await;
        app.allocate(&app.admin_token, "C", "E1", "R", "U1").await.assert_ok();
        let res = app.allocate(&app.admin_token, "C", "E1", "R", "U2").await;
        assert!(res.assert_error(409, "REQUEST_ID_CONFLICT").contains("R"));
        app.allocate(&app.admin_token, "C", "E2", "R", "U1").await.assert_error(409, "REQUEST_ID_CONFLICT");
        assert_eq!(app.balance("U1").await, 5);
        assert_eq!(app.balance("U2").await, 0);
        // Request ids are per company: another company may use "R" too.
        app.allocate(&app.admin_token, "D", "E1", "R", "U3").await.assert_ok();
        assert_eq!(app.balance("U3").await, 5);
    }

    async fn a_user_belongs_to_the_company_that_first_credited_it(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 5).await;
        app.allocate(&app.admin_token, "C1", "E", "R1", "U").await.assert_ok();
        let res = app.allocate(&app.admin_token, "C2", "E", "R2", "U").await;
        assert!(res.assert_error(409, "USER_COMPANY_MISMATCH").contains("U"));
        assert_eq!(app.balance("U").await, 5);
        // The refused request left no trace: its id is still free in C2 for another user.
        app.allocate(&app.admin_token, "C2", "E", "R2", "V").await.assert_ok();
    }

    async fn custom_overrides_default_and_inactive_configurations_are_skipped(app: &TestApp) {
        app.config("DEFAULT", "ANY", "E", 5).await;
        let custom = app.config("CUSTOM", "C1", "E", 9).await;
        app.allocate(&app.admin_token, "C1", "E", "R1", "U1").await.assert_ok();
        app.allocate(&app.admin_token, "C2", "E", "R1", "U2").await.assert_ok();
        assert_eq!(app.balance("U1").await, 9);
        assert_eq!(app.balance("U2").await, 5);
        app.patch(&format!("/api/v0/enkash-coins/{custom}"), &app.admin_token, json!({"active": false})).await.assert_ok();
        app.allocate(&app.admin_token, "C1", "E", "R2", "U1").await.assert_ok();
        assert_eq!(app.balance("U1").await, 14);
    }

    async fn an_event_without_an_active_configuration_is_refused_and_credits_nothing(app: &TestApp) {
        let res = app.allocate(&app.admin_token, "C", "UNKNOWN_EVENT", "R1", "U").await;
        let message = res.assert_error(404, "COIN_CONFIG_NOT_FOUND");
        assert!(message.contains("UNKNOWN_EVENT") && message.contains("C"), "{message}");
        let id = app.config("DEFAULT", "C", "E", 5).await;
        app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"active": false})).await.assert_ok();
        app.allocate(&app.admin_token, "C", "E", "R1", "U").await.assert_error(404, "COIN_CONFIG_NOT_FOUND");
        assert_eq!(app.balance("U").await, 0);
    }

    async fn changing_an_amount_never_rewrites_history(app: &TestApp) {
        let id = app.config("DEFAULT", "CEKEKCARDS", "MEAL_CARD_PAYMENT", 6).await;
        app.allocate(&app.admin_token, "CEKEKCARDS", "MEAL_CARD_PAYMENT", "R1", "U").await.assert_ok();
        app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"amount": 10})).await.assert_ok();
        app.allocate(&app.admin_token, "CEKEKCARDS", "MEAL_CARD_PAYMENT", "R2", "U").await.assert_ok();
        // A replay of the first request still reports and credits nothing new.
        app.allocate(&app.admin_token, "CEKEKCARDS", "MEAL_CARD_PAYMENT", "R1", "U").await.assert_ok();
        assert_eq!(app.balance("U").await, 16);
    }

    async fn a_replay_answers_even_after_its_configuration_was_deactivated(app: &TestApp) {
        let id = app.config("DEFAULT", "C", "E", 5).await;
        app.allocate(&app.admin_token, "C", "E", "R1", "U").await.assert_ok();
        app.patch(&format!("/api/v0/enkash-coins/{id}"), &app.admin_token, json!({"active": false})).await.assert_ok();
        let replay = app.allocate(&app.admin_token, "C", "E", "R1", "U").await;
        replay.assert_ok();
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    }

    async fn company_clients_allocate_and_read_only_for_their_companies(app: &TestApp) {
        app.config("DEFAULT", "ANY", "E", 5).await;
        let mine = app.company_token(&["MINE", "ALSO_MINE"]).await;
        app.allocate(&mine, "MINE", "E", "R1", "U1").await.assert_ok();
        app.allocate(&mine, "ALSO_MINE", "E", "R1", "U2").await.assert_ok();
        app.allocate(&mine, "THEIRS", "E", "R1", "U3").await.assert_error(403, "FORBIDDEN");
        app.allocate(&app.admin_token, "THEIRS", "E", "R1", "U3").await.assert_ok();
        assert_eq!(app.balance_as(&mine, "U1").await, 5);
        assert_eq!(app.balance_as(&mine, "U3").await, 0, "another company's user reads as never credited");
        assert_eq!(app.balance("U3").await, 5);
    }

    async fn allocation_fields_are_validated_by_name(app: &TestApp) {
        let good = json!({"companyId":"C","event":"E","requestId":"R","userId":"U"});
        for field in ["companyId", "event", "requestId", "userId"] {
            let mut body = good.clone();
            body.as_object_mut().unwrap().remove(field);
            let res = app.post("/api/v0/enkash-coins/allocate-coin", &app.admin_token, body).await;
            assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), format!("{field} is required"));
            let mut body = good.clone();
            body[field] = json!("bad value!");
            let res = app.post("/api/v0/enkash-coins/allocate-coin", &app.admin_token, body).await;
            assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with(field));
        }
    }

    async fn balance_requires_a_valid_user_id(app: &TestApp) {
        app.get("/api/v0/coins/balance", &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
        app.get("/api/v0/coins/balance?userId=", &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
        app.get("/api/v0/coins/balance?userId=a%20b", &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
    }
}
