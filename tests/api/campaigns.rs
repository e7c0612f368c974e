//! Bonus campaigns on both backends, with exact wire shapes: created, listed, changed before
//! they start, ended early, deleted; applied only inside their window (the clock moved, no
//! sleeping); their bonus held, returned and reversed with the base; the best campaign wins; a
//! per-user limit holds under 20 concurrent allocations of a new member.

use coins::clock::Clock;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const ALLOCATE: &str = "/api/v0/enkash-coins/allocate-coin";
const CAMPAIGNS: &str = "/api/v0/coins/campaigns";
const DAY_MS: i64 = 86_400_000;

fn at(ms: i64) -> String {
    coins::clock::rfc3339(ms)
}

/// A campaign of SHOP from `start` to `end` (ms), with `extra` fields.
async fn campaign(app: &TestApp, start: i64, end: i64, extra: Value) -> Value {
    let mut body = json!({"companyId":"SHOP","name":"Launch week","startsAt":at(start),"endsAt":at(end)});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.post(CAMPAIGNS, &app.admin_token, body).await.assert_ok().clone()
}

/// 10 % cashback on BUY: ₹1,000 (100000 minor units) earns 100 coins.
async fn cashback(app: &TestApp, extra: Value) {
    let mut body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"BUY","amountType":"PERCENT","rateBps":1000});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_config(&app.admin_token, body).await.assert_ok();
}

async fn buy(app: &TestApp, request_id: &str, amount_minor: i64) -> Resp {
    let body = json!({"companyId":"SHOP","event":"BUY","requestId":request_id,"userId":"ASHA","amountMinor":amount_minor});
    app.post(ALLOCATE, &app.admin_token, body).await
}

async fn record(app: &TestApp, request_id: &str) -> Value {
    app.get(&format!("/api/v0/coins/allocations/{request_id}?companyId=SHOP"), &app.admin_token).await.assert_ok().clone()
}

both_backends! {
    async fn a_campaign_is_created_read_changed_before_it_starts_and_ended_early(app: &TestApp) {
        let now = app.clock.now_ms();
        let (start, end) = (now + DAY_MS, now + 8 * DAY_MS);
        let body = json!({"companyId":"SHOP","name":"Launch week","events":["BUY"],"startsAt":at(start),"endsAt":at(end),"multiplierBps":20000,"maxTriggersPerUser":3});
        let created = app.post(CAMPAIGNS, &app.admin_token, body).await;
        let c = created.assert_ok().clone();
        let id = c["campaignId"].as_str().unwrap().to_owned();
        assert!(id.starts_with("CMP") && id.len() == 9, "{id}");
        let stamp = c["createdAt"].clone();
        assert_eq!(
            c,
            json!({"campaignId":id,"companyId":"SHOP","name":"Launch week","events":["BUY"],"startsAt":at(start),"endsAt":at(end),
                   "multiplierBps":20000,"bonusCoins":null,"maxTriggersPerUser":3,"status":"SCHEDULED","createdAt":stamp,"updatedAt":stamp})
        );
        let path = format!("{CAMPAIGNS}/{id}");
        assert_eq!(app.get(&path, &app.admin_token).await.assert_ok(), &c);
        let list = app.get(&format!("{CAMPAIGNS}?companyId=SHOP"), &app.admin_token).await;
        assert_eq!(list.assert_ok(), &json!([c]));

        // Before the start anything changes: a fixed bonus for every event instead.
        let changed = app.patch(&path, &app.admin_token, json!({"bonusCoins":25,"events":null,"name":"Launch bonus"})).await;
        let changed = changed.assert_ok().clone();
        assert_eq!(
            (&changed["name"], &changed["events"], &changed["multiplierBps"], &changed["bonusCoins"]),
            (&json!("Launch bonus"), &Value::Null, &Value::Null, &json!(25))
        );
        let res = app.patch(&path, &app.admin_token, json!({"startsAt":at(now + 1_000)})).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "startsAt must be at least 5 seconds from now");

        // Once started: only an earlier end, not in the past; no deletion.
        app.clock.advance_ms(2 * DAY_MS);
        assert_eq!(app.get(&path, &app.admin_token).await.assert_ok()["status"], json!("ACTIVE"));
        let started = format!("campaign {id} has started (or starts within 5 seconds): it cannot be deleted, and only an earlier endsAt can be set");
        assert_eq!(app.patch(&path, &app.admin_token, json!({"bonusCoins":50})).await.assert_error(409, "CAMPAIGN_STARTED"), started);
        assert_eq!(app.patch(&path, &app.admin_token, json!({"endsAt":at(end + DAY_MS)})).await.assert_error(409, "CAMPAIGN_STARTED"), started);
        let gone = app.send(reqwest::Method::DELETE, &path, Some(&app.admin_token), None).await;
        assert_eq!(gone.assert_error(409, "CAMPAIGN_STARTED"), started);
        let now = app.clock.now_ms();
        let soon = now + 60_000;
        let ending = app.patch(&path, &app.admin_token, json!({"endsAt":at(soon)})).await;
        assert_eq!((&ending.assert_ok()["endsAt"], &ending.assert_ok()["status"]), (&json!(at(soon)), &json!("ACTIVE")));
        app.clock.advance_ms(60_000);
        assert_eq!(app.get(&path, &app.admin_token).await.assert_ok()["status"], json!("ENDED"));
        let res = app.patch(&path, &app.admin_token, json!({"endsAt":at(soon)})).await;
        assert_eq!(res.assert_error(409, "CAMPAIGN_STARTED"), started, "an ended campaign stays as it ended");
        let now = app.clock.now_ms();
        // "End now": an end already past ends a running campaign 5 seconds after the change (what
        // every process needs to see it), and no sooner.
        let running = campaign(app, now - DAY_MS, now + DAY_MS, json!({"bonusCoins":5})).await;
        let running_path = format!("{CAMPAIGNS}/{}", running["campaignId"].as_str().unwrap());
        let ending = app.patch(&running_path, &app.admin_token, json!({"endsAt":at(now - DAY_MS + 1)})).await;
        let ends = coins::clock::parse_rfc3339(ending.assert_ok()["endsAt"].as_str().unwrap()).unwrap();
        assert!((now + 5_000..now + 6_000).contains(&ends) && ending.assert_ok()["status"] == json!("ACTIVE"), "{ending:?}");
        let res = app.patch(&running_path, &app.admin_token, json!({"endsAt":at(now)})).await;
        assert_eq!(res.assert_error(409, "CAMPAIGN_STARTED"), started.replace(&id, running["campaignId"].as_str().unwrap()), "already ending within the notice");
        app.clock.advance_ms(6_000);
        assert_eq!(app.get(&running_path, &app.admin_token).await.assert_ok()["status"], json!("ENDED"));
        let now = app.clock.now_ms();

        // A scheduled one is deleted, and then reads as unknown.
        let later = campaign(app, now + DAY_MS, now + 2 * DAY_MS, json!({"bonusCoins":5})).await;
        let later_path = format!("{CAMPAIGNS}/{}", later["campaignId"].as_str().unwrap());
        let deleted = app.send(reqwest::Method::DELETE, &later_path, Some(&app.admin_token), None).await;
        assert_eq!(deleted.assert_ok(), &later);
        let missing = app.get(&later_path, &app.admin_token).await;
        assert_eq!(missing.assert_error(404, "CAMPAIGN_NOT_FOUND"), format!("campaign {} not found", later["campaignId"].as_str().unwrap()));
        app.get(&format!("{CAMPAIGNS}/CMP1"), &app.admin_token).await.assert_error(404, "CAMPAIGN_NOT_FOUND");

        // Another company's client sees none of it.
        let other = app.company_token(&["OTHER"]).await;
        app.get(&path, &other).await.assert_error(404, "CAMPAIGN_NOT_FOUND");
        app.patch(&path, &other, json!({"name":"x"})).await.assert_error(404, "CAMPAIGN_NOT_FOUND");
        app.get(&format!("{CAMPAIGNS}?companyId=SHOP"), &other).await.assert_error(403, "FORBIDDEN");
        let mine = json!({"companyId":"SHOP","name":"x","startsAt":at(now),"endsAt":at(now + DAY_MS),"bonusCoins":1});
        app.post(CAMPAIGNS, &other, mine).await.assert_error(403, "FORBIDDEN");
    }

    async fn bad_campaigns_are_refused_naming_the_field(app: &TestApp) {
        let now = app.clock.now_ms();
        let (s, e) = (at(now + DAY_MS), at(now + 2 * DAY_MS));
        let cases = [
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":e}), "multiplierBps or bonusCoins is required"),
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":e,"multiplierBps":20000,"bonusCoins":5}), "give multiplierBps or bonusCoins, not both"),
            (json!({"companyId":"SHOP","name":"x","startsAt":e,"endsAt":s,"bonusCoins":5}), "endsAt must be after startsAt"),
            (json!({"companyId":"SHOP","name":"x","startsAt":at(now - 2 * DAY_MS),"endsAt":at(now - DAY_MS),"bonusCoins":5}), "endsAt must be in the future"),
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":at(now + 400 * DAY_MS),"bonusCoins":5}), "endsAt must be at most 366 days after startsAt"),
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":e,"multiplierBps":10000}), "multiplierBps must be a whole number from 10001 to 1000000 (10000 is ×1)"),
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":e,"bonusCoins":0}), "bonusCoins must be a whole number from 1 to 1000000000"),
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":e,"bonusCoins":1.5}), "bonusCoins must be a whole number"),
            (json!({"companyId":"SHOP","name":"x","startsAt":s,"endsAt":e,"bonusCoins":5,"maxTriggersPerUser":0}), "maxTriggersPerUser must be a whole number of allocations between 1 and 1000000, or null"),
            (json!({"companyId":"SHOP","name":" ","startsAt":s,"endsAt":e,"bonusCoins":5}), "name must be 1 to 100 characters of text, not only spaces, without control characters"),
            (json!({"companyId":"SHOP","name":"x","startsAt":"tomorrow","endsAt":e,"bonusCoins":5}), "startsAt must be an RFC 3339 time such as 2027-03-31T23:59:59Z"),
            (json!({"companyId":"SHOP","name":"x","events":[],"startsAt":s,"endsAt":e,"bonusCoins":5}), "events must be null (every event) or a list of 1 to 50 event names"),
            (json!({"companyId":"SHOP","name":"x","events":["A","A"],"startsAt":s,"endsAt":e,"bonusCoins":5}), "events repeats A"),
            (json!({"companyId":"SHOP","name":"x","events":"A","startsAt":s,"endsAt":e,"bonusCoins":5}), "events must be null (every event) or a list of 1 to 50 event names"),
        ];
        for (body, sentence) in cases {
            let res = app.post(CAMPAIGNS, &app.admin_token, body.clone()).await;
            assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), sentence, "{body}");
        }
        let c = campaign(app, now + DAY_MS, now + 2 * DAY_MS, json!({"bonusCoins":5,"multiplierBps":null})).await;
        assert_eq!((&c["bonusCoins"], &c["multiplierBps"]), (&json!(5), &Value::Null), "null is not given");
        let path = format!("{CAMPAIGNS}/{}", c["campaignId"].as_str().unwrap());
        let res = app.patch(&path, &app.admin_token, json!({})).await;
        assert!(res.assert_error(400, "VALIDATION_FAILED").starts_with("at least one of name, events"));
        let res = app.patch(&path, &app.admin_token, json!({"endsAt":at(now)})).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "endsAt must be after startsAt");
        assert_eq!(app.get(&path, &app.admin_token).await.assert_ok(), &c, "a refused change changes nothing");
    }

    async fn a_campaign_applies_only_inside_its_window_and_returns_with_the_base(app: &TestApp) {
        cashback(app, json!({})).await;
        let now = app.clock.now_ms();
        let c = campaign(app, now + DAY_MS, now + 3 * DAY_MS, json!({"multiplierBps":20000,"events":["BUY"]})).await;
        let id = c["campaignId"].as_str().unwrap().to_owned();
        buy(app, "B0", 100_000).await.assert_ok();
        assert_eq!(record(app, "B0").await["calculation"]["campaignId"], Value::Null, "before the start");
        app.clock.advance_ms(DAY_MS);
        buy(app, "B1", 100_000).await.assert_ok();
        let b1 = record(app, "B1").await;
        assert_eq!((&b1["coins"], &b1["baseCoins"], &b1["state"]), (&json!(200), &json!(100), &json!("ACTIVE")));
        assert_eq!(
            b1["calculation"],
            json!({"amountType":"PERCENT","amountMinor":100000,"rateBps":1000,"minorUnitsPerCoin":100,"multiplierBps":20000,"exact":"200",
                   "rounding":"FLOOR","cappedBy":null,"amount":null,"minAmountMinor":null,"maxCoinsPerAllocation":null,
                   "campaignId":id,"campaignBps":20000,"campaignBonusCoins":null,"tierCode":null,"tierBps":null})
        );
        assert_eq!(app.balance("ASHA").await, 300);

        // A quarter refunded takes back a quarter of the doubled coins; the rest takes the rest.
        let ret = json!({"companyId":"SHOP","requestId":"R1","originalRequestId":"B1","amountMinor":25000});
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, ret).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["coinsRemaining"]), (&json!(-50), &json!(150)));
        let ret = json!({"companyId":"SHOP","requestId":"R2","originalRequestId":"B1"});
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, ret).await;
        assert_eq!((&res.assert_ok()["coins"], &res.assert_ok()["balance"]), (&json!(-150), &json!(100)));
        assert_eq!(record(app, "B1").await["state"], json!("REVERSED"));

        // At endsAt it no longer applies.
        app.clock.advance_ms(2 * DAY_MS);
        buy(app, "B2", 100_000).await.assert_ok();
        let b2 = record(app, "B2").await;
        assert_eq!((&b2["coins"], &b2["calculation"]["campaignId"], &b2["calculation"]["multiplierBps"]), (&json!(100), &Value::Null, &json!(10000)));
        assert_eq!(app.balance("ASHA").await, 200);
    }

    async fn a_fixed_bonus_is_held_with_its_coins_and_goes_with_a_whole_refund(app: &TestApp) {
        cashback(app, json!({"pendingDays":7,"minAmountMinor":50000})).await;
        let now = app.clock.now_ms();
        campaign(app, now, now + DAY_MS, json!({"bonusCoins":30})).await;
        buy(app, "SMALL", 40_000).await.assert_ok();
        let small = record(app, "SMALL").await;
        assert_eq!((&small["state"], &small["coins"], &small["reason"], &small["calculation"]["campaignId"]), (&json!("ZERO"), &json!(0), &json!("BELOW_MINIMUM"), &Value::Null));
        buy(app, "BIG", 100_000).await.assert_ok();
        let big = record(app, "BIG").await;
        assert_eq!((&big["state"], &big["coins"], &big["baseCoins"], &big["calculation"]["campaignBonusCoins"]), (&json!("PENDING"), &json!(130), &json!(100), &json!(30)));
        let u = app.get("/api/v0/coins/users/ASHA", &app.admin_token).await;
        assert_eq!((&u.assert_ok()["balance"], &u.assert_ok()["pendingBalance"]), (&json!(0), &json!(130)), "the bonus is held with the coins");
        // Refunding down to below the minimum spend takes everything, the bonus too.
        let ret = json!({"companyId":"SHOP","requestId":"R1","originalRequestId":"BIG","amountMinor":60000});
        let res = app.post("/api/v0/coins/reverse", &app.admin_token, ret).await;
        assert_eq!((&res.assert_ok()["kind"], &res.assert_ok()["coins"], &res.assert_ok()["coinsRemaining"]), (&json!("CANCEL"), &json!(-130), &json!(0)));
    }

    async fn the_best_campaign_wins_and_a_used_up_limit_gives_way_to_the_next(app: &TestApp) {
        cashback(app, json!({})).await;
        let now = app.clock.now_ms();
        let double = campaign(app, now, now + DAY_MS, json!({"multiplierBps":20000})).await;
        let triple = campaign(app, now, now + DAY_MS, json!({"multiplierBps":30000,"maxTriggersPerUser":1})).await;
        // On 100 coins ×3 (300) beats +150 (250) and ×2 (200); on 10 coins +150 wins.
        let bonus = campaign(app, now, now + DAY_MS, json!({"bonusCoins":150,"maxTriggersPerUser":1})).await;
        let applied = |r: &Value| r["calculation"]["campaignId"].clone();
        buy(app, "B1", 100_000).await.assert_ok();
        assert_eq!((applied(&record(app, "B1").await), record(app, "B1").await["coins"].clone()), (triple["campaignId"].clone(), json!(300)));
        buy(app, "B2", 100_000).await.assert_ok();
        assert_eq!((applied(&record(app, "B2").await), record(app, "B2").await["coins"].clone()), (bonus["campaignId"].clone(), json!(250)));
        buy(app, "B3", 100_000).await.assert_ok();
        assert_eq!((applied(&record(app, "B3").await), record(app, "B3").await["coins"].clone()), (double["campaignId"].clone(), json!(200)));
        // A simulation shows the campaign the allocation would get, and writes nothing.
        let sim = json!({"operation":"ALLOCATE","companyId":"SHOP","event":"BUY","requestId":"B4","userId":"ASHA","amountMinor":10000});
        let res = app.post("/api/v0/coins/simulate", &app.admin_token, sim).await;
        let s = res.assert_ok();
        assert_eq!((&s["coins"], &s["baseCoins"], &s["calculation"]["campaignId"]), (&json!(20), &json!(10), &double["campaignId"]));
        assert_eq!(app.balance("ASHA").await, 750);
    }

    async fn a_per_user_limit_holds_under_20_concurrent_allocations(app: &TestApp) {
        app.config("CUSTOM", "SHOP", "BUY", 10).await;
        let now = app.clock.now_ms();
        let c = campaign(app, now, now + DAY_MS, json!({"bonusCoins":5,"maxTriggersPerUser":3})).await;
        // ASHA is new: the first allocations also race to open her account.
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (http, url, token) = (app.http.clone(), app.url(ALLOCATE), app.admin_token.clone());
            calls.spawn(async move {
                let body = json!({"companyId":"SHOP","event":"BUY","requestId":format!("R{i}"),"userId":"ASHA"});
                http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
            });
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        let mut bonused = 0;
        for i in 0..20 {
            let r = record(app, &format!("R{i}")).await;
            if r["calculation"]["campaignId"] == c["campaignId"] {
                assert_eq!(r["coins"], json!(15));
                bonused += 1;
            } else {
                assert_eq!((&r["coins"], &r["calculation"]["campaignId"]), (&json!(10), &Value::Null));
            }
        }
        assert_eq!(bonused, 3, "exactly the limit");
        assert_eq!(app.balance("ASHA").await, 20 * 10 + 3 * 5);
    }
}
