//! Exactly-once under concurrency: duplicates fired at once credit once; distinct ones all land.

use tokio::task::JoinSet;

use crate::both_backends;

both_backends! {
    async fn fifty_identical_allocations_at_once_credit_once(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 7).await;
        let mut set = JoinSet::new();
        for _ in 0..50 {
            let (http, url, token) = (app.http.clone(), app.url("/api/v0/enkash-coins/allocate-coin"), app.admin_token.clone());
            set.spawn(async move {
                let res = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({"companyId":"C","event":"E","requestId":"SAME","userId":"U"}))
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.headers().get("idempotent-replayed").is_some())
            });
        }
        let mut fresh = 0;
        while let Some(done) = set.join_next().await {
            let (status, replayed) = done.unwrap();
            assert_eq!(status, 200);
            if !replayed {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1, "exactly one of the duplicates is the original");
        assert_eq!(app.balance("U").await, 7);
    }

    async fn two_hundred_distinct_allocations_at_once_all_land(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 3).await;
        let mut set = JoinSet::new();
        for i in 0..200 {
            let (http, url, token) = (app.http.clone(), app.url("/api/v0/enkash-coins/allocate-coin"), app.admin_token.clone());
            set.spawn(async move {
                let body = serde_json::json!({"companyId":"C","event":"E","requestId": format!("R{i}"),"userId": format!("U{}", i % 20)});
                http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
            });
        }
        while let Some(status) = set.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        for u in 0..20 {
            assert_eq!(app.balance(&format!("U{u}")).await, 30, "user U{u}");
        }
        let report = app.store().verify().await.unwrap();
        assert_eq!(report.entries_checked, 200);
    }

    async fn concurrent_first_credits_of_one_user_from_two_companies_bind_it_to_one(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 1).await;
        let mut set = JoinSet::new();
        for i in 0..20 {
            let (http, url, token) = (app.http.clone(), app.url("/api/v0/enkash-coins/allocate-coin"), app.admin_token.clone());
            set.spawn(async move {
                let company = if i % 2 == 0 { "A" } else { "B" };
                let body = serde_json::json!({"companyId": company,"event":"E","requestId": format!("R{i}"),"userId": "SHARED"});
                http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
            });
        }
        let mut ok = 0;
        while let Some(status) = set.join_next().await {
            match status.unwrap() {
                200 => ok += 1,
                409 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(ok, 10, "all of one company's requests land and none of the other's");
        assert_eq!(app.balance("SHARED").await, 10);
    }
}
