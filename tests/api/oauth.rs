//! The token endpoint's three grants, its RFC 6749 errors, lockout, expiry, revocation.

use serde_json::json;

use coins::clock::Clock;

use crate::both_backends;
use crate::helpers::*;

fn assert_oauth_error(res: &Resp, status: u16, error: &str) -> String {
    assert_eq!(res.status.as_u16(), status, "{}", res.text);
    let obj = res.body.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "error_description"], "{}", res.text);
    assert_eq!(res.body["error"], json!(error));
    res.body["error_description"].as_str().expect("description").to_owned()
}

both_backends! {
    async fn client_credentials_grant_returns_the_rfc_6749_token_shape(app: &TestApp) {
        let res = app.token_request(Some((&app.admin_id, &app.admin_secret)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(res.status.as_u16(), 200, "{}", res.text);
        let obj = res.body.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["access_token", "expires_in", "refresh_token", "scope", "token_type"]);
        assert_eq!(res.body["token_type"], json!("bearer"));
        assert_eq!(res.body["expires_in"], json!(TEST_TOKEN_TTL_SECS));
        assert_eq!(res.body["scope"], json!("read write"));
        assert!(res.body["access_token"].as_str().unwrap().len() >= 27, "at least 160 bits of base64");
        assert_eq!(res.header("cache-control"), Some("no-store"));
        // Form-field client authentication works too.
        let res = app
            .token_request(None, &[("grant_type", "client_credentials"), ("client_id", &app.admin_id), ("client_secret", &app.admin_secret)])
            .await;
        assert_eq!(res.status.as_u16(), 200, "{}", res.text);
    }

    async fn a_wrong_secret_or_unknown_client_is_invalid_client(app: &TestApp) {
        let res = app.token_request(Some((&app.admin_id, "wrong")), &[("grant_type", "client_credentials")]).await;
        assert_oauth_error(&res, 401, "invalid_client");
        assert!(res.header("www-authenticate").is_some());
        let res = app.token_request(Some(("cl_nobody", "x")), &[("grant_type", "client_credentials")]).await;
        assert_oauth_error(&res, 401, "invalid_client");
        let res = app.token_request(None, &[("grant_type", "client_credentials")]).await;
        assert_oauth_error(&res, 401, "invalid_client");
    }

    async fn bad_token_requests_get_rfc_6749_errors(app: &TestApp) {
        let basic = Some((app.admin_id.as_str(), app.admin_secret.as_str()));
        assert_oauth_error(&app.token_request(basic, &[]).await, 400, "invalid_request");
        assert_oauth_error(&app.token_request(basic, &[("grant_type", "authorization_code")]).await, 400, "unsupported_grant_type");
        assert_oauth_error(&app.token_request(basic, &[("grant_type", "password"), ("username", "u")]).await, 400, "invalid_request");
        assert_oauth_error(&app.token_request(basic, &[("grant_type", "refresh_token")]).await, 400, "invalid_request");
        let res = app.http.post(app.url("/oauth/token")).json(&json!({"grant_type": "client_credentials"})).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 400);
    }

    async fn password_grant_works_for_the_clients_users_and_carries_the_clients_scope(app: &TestApp) {
        let (id, secret) = app.create_client(&["CEK0TCW2W8"]).await;
        let hash = coins::crypto::hash_secret("pa55word");
        assert!(app.store().upsert_password_user(&id, "partner", &hash, 0).await.unwrap());
        let res = app
            .token_request(
                Some((&id, &secret)),
                &[("grant_type", "password"), ("username", "partner"), ("password", "pa55word"), ("clientId", &id)],
            )
            .await;
        assert_eq!(res.status.as_u16(), 200, "{}", res.text);
        let token = res.body["access_token"].as_str().unwrap().to_owned();
        app.config("DEFAULT", "X", "REFERRAL_EVENT", 50).await;
        app.allocate(&token, "CEK0TCW2W8", "REFERRAL_EVENT", "R1", "U1").await.assert_ok();
        app.allocate(&token, "OTHER", "REFERRAL_EVENT", "R2", "U2").await.assert_error(403, "FORBIDDEN");

        let wrong = app.token_request(Some((&id, &secret)), &[("grant_type", "password"), ("username", "partner"), ("password", "nope")]).await;
        assert_oauth_error(&wrong, 400, "invalid_grant");
        let unknown = app.token_request(Some((&id, &secret)), &[("grant_type", "password"), ("username", "ghost"), ("password", "x")]).await;
        assert_oauth_error(&unknown, 400, "invalid_grant");
        // Users belong to their client: another client cannot use them.
        let (other_id, other_secret) = app.create_client(&["CEK0TCW2W8"]).await;
        let res = app
            .token_request(Some((&other_id, &other_secret)), &[("grant_type", "password"), ("username", "partner"), ("password", "pa55word")])
            .await;
        assert_oauth_error(&res, 400, "invalid_grant");
    }

    async fn refresh_tokens_rotate_and_work_once(app: &TestApp) {
        let basic = Some((app.admin_id.as_str(), app.admin_secret.as_str()));
        let first = app.token_request(basic, &[("grant_type", "client_credentials")]).await;
        let refresh = first.body["refresh_token"].as_str().unwrap().to_owned();
        let second = app.token_request(basic, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
        assert_eq!(second.status.as_u16(), 200, "{}", second.text);
        let token = second.body["access_token"].as_str().unwrap();
        assert_ne!(second.body["refresh_token"], first.body["refresh_token"]);
        assert_eq!(app.balance_as(token, "NOBODY").await, 0);
        let again = app.token_request(basic, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
        assert_oauth_error(&again, 400, "invalid_grant");
        // Another client cannot use someone else's refresh token.
        let (id, secret) = app.create_client(&["C"]).await;
        let next = second.body["refresh_token"].as_str().unwrap();
        let stolen = app.token_request(Some((&id, &secret)), &[("grant_type", "refresh_token"), ("refresh_token", next)]).await;
        assert_oauth_error(&stolen, 400, "invalid_grant");
    }

    async fn five_failures_lock_a_client_even_against_the_right_secret_until_the_cool_down_ends(app: &TestApp) {
        let (id, secret) = app.create_client(&["C"]).await;
        for _ in 0..4 {
            let res = app.token_request(Some((&id, "wrong")), &[("grant_type", "client_credentials")]).await;
            assert!(!assert_oauth_error(&res, 401, "invalid_client").contains("locked"));
        }
        // A success resets the count: four more failures do not lock.
        app.token(&id, &secret).await;
        for _ in 0..5 {
            app.token_request(Some((&id, "wrong")), &[("grant_type", "client_credentials")]).await;
        }
        let res = app.token_request(Some((&id, &secret)), &[("grant_type", "client_credentials")]).await;
        assert!(assert_oauth_error(&res, 401, "invalid_client").contains("locked"), "{}", res.text);
        app.clock.advance_ms(899_000);
        let res = app.token_request(Some((&id, &secret)), &[("grant_type", "client_credentials")]).await;
        assert!(assert_oauth_error(&res, 401, "invalid_client").contains("locked"));
        app.clock.advance_ms(2_000);
        app.token(&id, &secret).await;
    }

    async fn a_parallel_burst_of_attempts_gets_at_most_five_secret_checks(app: &TestApp) {
        let (id, _) = app.create_client(&["C"]).await;
        let policy = coins::domain::lockout::LockoutPolicy { max_failures: 5, lock_ms: 900_000 };
        let now = app.clock.now_ms();
        let mut reservations = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (store, id) = (app.db.store.clone(), id.clone());
            reservations.spawn(async move { store.reserve_auth_attempt(coins::store::AuthSubject::Client(&id), now, policy).await.unwrap() });
        }
        let mut granted = 0;
        while let Some(r) = reservations.join_next().await {
            granted += usize::from(r.unwrap());
        }
        assert_eq!(granted, 5, "a burst may check at most five secrets before the lock");
        // Over HTTP: a burst of wrong secrets leaves the client locked against the right one too.
        let (id, secret) = app.create_client(&["C"]).await;
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (http, url, id) = (app.http.clone(), app.url("/oauth/token"), id.clone());
            burst.spawn(async move {
                http.post(url).basic_auth(id, Some("wrong")).form(&[("grant_type", "client_credentials")]).send().await.unwrap().status().as_u16()
            });
        }
        while let Some(status) = burst.join_next().await {
            assert_eq!(status.unwrap(), 401);
        }
        let res = app.token_request(Some((&id, &secret)), &[("grant_type", "client_credentials")]).await;
        assert!(assert_oauth_error(&res, 401, "invalid_client").contains("locked"));
    }

    async fn five_failed_passwords_lock_the_password_user(app: &TestApp) {
        let (id, secret) = app.create_client(&["C"]).await;
        app.store().upsert_password_user(&id, "u", &coins::crypto::hash_secret("right"), 0).await.unwrap();
        let attempt = |password: &'static str| {
            let (id, secret) = (id.clone(), secret.clone());
            async move {
                app.token_request(Some((&id, &secret)), &[("grant_type", "password"), ("username", "u"), ("password", password)]).await
            }
        };
        for _ in 0..5 {
            assert_oauth_error(&attempt("wrong").await, 400, "invalid_grant");
        }
        assert!(assert_oauth_error(&attempt("right").await, 400, "invalid_grant").contains("locked"));
        app.clock.advance_ms(900_001);
        assert_eq!(attempt("right").await.status.as_u16(), 200);
    }

    async fn tokens_expire_after_their_lifetime(app: &TestApp) {
        assert_eq!(app.balance("U").await, 0);
        // The test clock is real time plus an offset, so leave a margin for the time the test takes.
        app.clock.advance_ms(TEST_TOKEN_TTL_SECS * 1000 - 5_000);
        assert_eq!(app.balance("U").await, 0, "still valid shortly before its lifetime ends");
        app.clock.advance_ms(5_000);
        let res = app.get("/api/v0/coins/balance?userId=U", &app.admin_token).await;
        res.assert_error(401, "UNAUTHENTICATED");
        assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    }

    async fn a_revoked_client_loses_its_tokens_within_thirty_seconds_and_cannot_get_new_ones(app: &TestApp) {
        let (id, secret) = app.create_client(&["C"]).await;
        let token = app.token(&id, &secret).await;
        assert_eq!(app.balance_as(&token, "U").await, 0);
        assert!(app.store().revoke_client(&id, 0).await.unwrap());
        app.clock.advance_ms(coins::http::auth::AUTH_CACHE_TTL_MS);
        app.get("/api/v0/coins/balance?userId=U", &token).await.assert_error(401, "UNAUTHENTICATED");
        let res = app.token_request(Some((&id, &secret)), &[("grant_type", "client_credentials")]).await;
        assert_oauth_error(&res, 401, "invalid_client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_last_an_hour_by_default() {
    let app = spawn_app_with(Backend::Sqlite, coins::config::ServeSettings::for_tests()).await.unwrap();
    let res = app.token_request(Some((&app.admin_id, &app.admin_secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(res.body["expires_in"], json!(3600));
    app.clock.advance_ms(3_595_000);
    assert_eq!(app.balance("U").await, 0);
    app.clock.advance_ms(5_000);
    app.get("/api/v0/coins/balance?userId=U", &app.admin_token).await.assert_error(401, "UNAUTHENTICATED");
    app.stop().await;
}
