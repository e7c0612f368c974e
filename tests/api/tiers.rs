//! Status tiers on both backends, with exact wire shapes: the scheme set, read and removed;
//! qualifying coins from activated base coins only (redemption and expiry never lower a tier,
//! pending coins do not qualify); the upgrading allocation earning at the old multiplier and the
//! next at the new; a buy-to-upgrade-then-return losing the tier at once while a small later
//! return does not; the sweeper renewing and downgrading at `tierExpiresAt` (clock moved, no
//! sleeping); manual floors; `tierMultiplier: false`; a campaign on top of a tier; a scheme set
//! up after the history counts it; simulate's `tierBefore`/`tierAfter`; the `tier.*` webhooks.

use std::time::Duration;

use coins::clock::Clock;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::webhooks::{Receiver, first_deliveries};

const ALLOCATE: &str = "/api/v0/enkash-coins/allocate-coin";
const TIERS: &str = "/api/v0/coins/tiers";
const DAY_MS: i64 = 86_400_000;

/// Bronze ×1 from 0, Silver ×1.5 from 100, Gold ×2 from 1,000 qualifying coins.
fn three_tiers(basis: &str, window: Value, retention: Value, downgrade: &str) -> Value {
    json!({"companyId":"SHOP","basis":basis,"windowDays":window,"retentionDays":retention,"downgrade":downgrade,"tiers":[
        {"code":"BRONZE","name":"Bronze","threshold":0,"earnMultiplierBps":10000},
        {"code":"SILVER","name":"Silver","threshold":100,"earnMultiplierBps":15000},
        {"code":"GOLD","name":"Gold","threshold":1000,"earnMultiplierBps":20000}]})
}

async fn put_tiers(app: &TestApp, body: Value) -> Resp {
    app.send(reqwest::Method::PUT, TIERS, Some(&app.admin_token), Some(&body)).await
}

/// 10 % cashback on BUY (100 paise a coin: ₹1,000 earns 100 coins), with `extra` fields.
async fn cashback(app: &TestApp, extra: Value) {
    let mut body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"BUY","amountType":"PERCENT","rateBps":1000});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_config(&app.admin_token, body).await.assert_ok();
}

/// ASHA buys for `amount_minor`; the allocation's record.
async fn buy(app: &TestApp, request_id: &str, amount_minor: i64) -> Value {
    let body = json!({"companyId":"SHOP","event":"BUY","requestId":request_id,"userId":"ASHA","amountMinor":amount_minor});
    app.post(ALLOCATE, &app.admin_token, body).await.assert_ok();
    record(app, request_id).await
}

async fn record(app: &TestApp, request_id: &str) -> Value {
    app.get(&format!("/api/v0/coins/allocations/{request_id}?companyId=SHOP"), &app.admin_token).await.assert_ok().clone()
}

async fn tier(app: &TestApp, user: &str) -> Value {
    app.get(&format!("/api/v0/coins/users/{user}"), &app.admin_token).await.assert_ok()["tier"].clone()
}

async fn ret(app: &TestApp, body: Value) -> Value {
    let mut body = body;
    body["companyId"] = json!("SHOP");
    app.post("/api/v0/coins/reverse", &app.admin_token, body).await.assert_ok().clone()
}

fn at(ms: i64) -> Value {
    json!(coins::clock::rfc3339(ms))
}

fn ms(time: &Value) -> i64 {
    coins::clock::parse_rfc3339(time.as_str().unwrap_or_else(|| panic!("not a time: {time}"))).unwrap()
}

both_backends! {
    async fn a_scheme_is_set_read_and_removed_and_a_member_shows_their_tier(app: &TestApp) {
        let missing = app.get(&format!("{TIERS}?companyId=SHOP"), &app.admin_token).await;
        assert_eq!(missing.assert_error(404, "TIERS_NOT_CONFIGURED"), "company SHOP has no tier scheme");
        let mut bad = three_tiers("LIFETIME", Value::Null, json!(365), "ONE_DOWN");
        bad["tiers"][0]["threshold"] = json!(5);
        assert_eq!(put_tiers(app, bad).await.assert_error(400, "VALIDATION_FAILED"), "the first tier's threshold must be 0");
        let mut bad = three_tiers("LIFETIME", Value::Null, json!(365), "ONE_DOWN");
        bad["tiers"][2]["threshold"] = json!(100);
        assert_eq!(
            put_tiers(app, bad).await.assert_error(400, "VALIDATION_FAILED"),
            "tiers[2].threshold must be greater than the tier before it (at most 1000000000000)"
        );
        let bad = three_tiers("ROLLING", Value::Null, json!(365), "ONE_DOWN");
        assert_eq!(put_tiers(app, bad).await.assert_error(400, "VALIDATION_FAILED"), "windowDays is required with basis ROLLING: 1 to 3650");
        let mut bad = three_tiers("LIFETIME", Value::Null, json!(365), "ONE_DOWN");
        bad["tiers"][1]["earnMultiplierBps"] = json!(100001);
        assert_eq!(put_tiers(app, bad).await.assert_error(400, "VALIDATION_FAILED"), "tiers[1].earnMultiplierBps must be a whole number from 10000 to 100000");
        let bad = json!({"companyId":"SHOP","basis":"FOREVER","downgrade":"NEVER","tiers":[]});
        assert_eq!(put_tiers(app, bad).await.assert_error(400, "VALIDATION_FAILED"), "basis must be LIFETIME or ROLLING");

        let put = put_tiers(app, three_tiers("ROLLING", json!(365), json!(180), "ONE_DOWN")).await;
        let scheme = put.assert_ok().clone();
        let stamp = scheme["updatedAt"].clone();
        assert_eq!(
            scheme,
            json!({"companyId":"SHOP","basis":"ROLLING","windowDays":365,"retentionDays":180,"downgrade":"ONE_DOWN","tiers":[
                {"code":"BRONZE","name":"Bronze","threshold":0,"earnMultiplierBps":10000},
                {"code":"SILVER","name":"Silver","threshold":100,"earnMultiplierBps":15000},
                {"code":"GOLD","name":"Gold","threshold":1000,"earnMultiplierBps":20000}],"updatedAt":stamp})
        );
        assert_eq!(app.get(&format!("{TIERS}?companyId=SHOP"), &app.admin_token).await.assert_ok(), &scheme);

        cashback(app, json!({})).await;
        buy(app, "P1", 50_000).await;
        let user = app.get("/api/v0/coins/users/ASHA", &app.admin_token).await;
        assert_eq!(
            user.assert_ok()["tier"],
            json!({"code":"BRONZE","name":"Bronze","enteredAt":null,"expiresAt":null,"qualifyingCoins":50,"nextTier":"SILVER",
                   "coinsToNextTier":50,"earnMultiplierBps":10000,"floor":null,"floorReason":null})
        );

        // Another company's client sees none of it.
        let other = app.company_token(&["OTHER"]).await;
        app.get(&format!("{TIERS}?companyId=SHOP"), &other).await.assert_error(403, "FORBIDDEN");
        let body = three_tiers("LIFETIME", Value::Null, Value::Null, "NEVER");
        app.send(reqwest::Method::PUT, TIERS, Some(&other), Some(&body)).await.assert_error(403, "FORBIDDEN");

        let deleted = app.send(reqwest::Method::DELETE, &format!("{TIERS}?companyId=SHOP"), Some(&app.admin_token), None).await;
        assert_eq!(deleted.assert_ok(), &scheme);
        app.get(&format!("{TIERS}?companyId=SHOP"), &app.admin_token).await.assert_error(404, "TIERS_NOT_CONFIGURED");
        assert_eq!(tier(app, "ASHA").await, Value::Null);
        let again = app.send(reqwest::Method::DELETE, &format!("{TIERS}?companyId=SHOP"), Some(&app.admin_token), None).await;
        again.assert_error(404, "TIERS_NOT_CONFIGURED");
    }

    async fn pending_coins_do_not_qualify_and_redemption_and_expiry_never_lower_a_tier(app: &TestApp) {
        put_tiers(app, three_tiers("LIFETIME", Value::Null, json!(365), "TO_QUALIFYING")).await.assert_ok();
        // Held for 7 days, expiring 10 days after they become spendable.
        cashback(app, json!({"pendingDays":7,"validityDays":10})).await;
        let held = buy(app, "P1", 150_000).await;
        assert_eq!(held["coins"], json!(150));
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("BRONZE"), &json!(0)), "held coins do not qualify");

        // The hold ends: the activation qualifies them and upgrades at once.
        app.clock.advance_ms(7 * DAY_MS + 1);
        let before = app.clock.now_ms();
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(150)));
        let entered = ms(&t["enteredAt"]);
        assert!((before..=app.clock.now_ms()).contains(&entered), "{t}");
        assert_eq!(ms(&t["expiresAt"]), entered + 365 * DAY_MS);

        // Spending all of it and letting the rest expire leaves the tier where it is.
        app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId":"SHOP","userId":"ASHA","requestId":"D1","coins":100})).await.assert_ok();
        app.clock.advance_ms(11 * DAY_MS);
        assert_eq!(app.balance("ASHA").await, 0, "the other 50 expired");
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(150)));
    }

    async fn the_upgrading_allocation_earns_at_the_old_multiplier_and_the_next_at_the_new(app: &TestApp) {
        put_tiers(app, three_tiers("LIFETIME", Value::Null, Value::Null, "NEVER")).await.assert_ok();
        cashback(app, json!({})).await;
        let first = buy(app, "P1", 100_000).await;
        assert_eq!(first["coins"], json!(100), "earned at Bronze, then upgraded");
        assert_eq!(tier(app, "ASHA").await["code"], json!("SILVER"));
        let second = buy(app, "P2", 100_000).await;
        assert_eq!(second["coins"], json!(150), "Silver earns ×1.5");
        let r = record(app, "P2").await;
        assert_eq!((&r["coins"], &r["baseCoins"]), (&json!(150), &json!(100)));
        let calc = &r["calculation"];
        assert_eq!((&calc["multiplierBps"], &calc["tierCode"], &calc["tierBps"]), (&json!(15000), &json!("SILVER"), &json!(15000)));
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["qualifyingCoins"], &t["coinsToNextTier"], &t["expiresAt"]), (&json!(200), &json!(800), &Value::Null), "multiplied coins never qualify");

        // A campaign multiplies on top of the tier; a configuration that opts out earns ×1.
        let now = app.clock.now_ms();
        let campaign = json!({"companyId":"SHOP","name":"Double week","startsAt":coins::clock::rfc3339(now - 1000),"endsAt":coins::clock::rfc3339(now + DAY_MS),"multiplierBps":20000});
        app.post("/api/v0/coins/campaigns", &app.admin_token, campaign).await.assert_ok();
        let third = buy(app, "P3", 100_000).await;
        assert_eq!(third["coins"], json!(300), "×1.5 tier × ×2 campaign");
        let calc = record(app, "P3").await["calculation"].clone();
        assert_eq!((&calc["multiplierBps"], &calc["tierBps"], &calc["campaignBps"]), (&json!(30000), &json!(15000), &json!(20000)));
        let body = json!({"configuration":"CUSTOM","companyId":"SHOP","event":"REVIEW","amount":10,"tierMultiplier":false});
        let config = app.create_config(&app.admin_token, body).await;
        assert_eq!(config.assert_ok()["tierMultiplier"], json!(false));
        app.post(ALLOCATE, &app.admin_token, json!({"companyId":"SHOP","event":"REVIEW","requestId":"V1","userId":"ASHA"})).await.assert_ok();
        assert_eq!(record(app, "V1").await["coins"], json!(20), "the campaign's ×2 only");
    }

    async fn a_buy_to_upgrade_then_return_loses_the_tier_at_once_while_a_small_later_return_does_not(app: &TestApp) {
        put_tiers(app, three_tiers("LIFETIME", Value::Null, json!(365), "ONE_DOWN")).await.assert_ok();
        cashback(app, json!({})).await;
        buy(app, "P1", 100_000).await;
        assert_eq!(tier(app, "ASHA").await["code"], json!("SILVER"));
        // A big purchase lifts ASHA to Gold; returning it places her again at once.
        let big = buy(app, "BIG", 1_000_000).await;
        assert_eq!(big["coins"], json!(1500));
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("GOLD"), &json!(1100)));
        ret(app, json!({"requestId":"RET-BIG","originalRequestId":"BIG"})).await;
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(100)), "the return of the upgrading allocation re-places at once");

        // Gold again by another purchase; a small later return of an older one only counts at
        // the next evaluation.
        buy(app, "BIG2", 1_000_000).await;
        assert_eq!(tier(app, "ASHA").await["code"], json!("GOLD"));
        let half = ret(app, json!({"requestId":"RET-P1","originalRequestId":"P1","amountMinor":50_000})).await;
        assert_eq!(half["coins"], json!(-50));
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("GOLD"), &json!(1050)));
        // A partial return of the upgrading allocation takes its share of the base coins and
        // places the member again at once: still Gold after 30 of its 1,500 coins (980 of its
        // 1,000 base coins kept), Silver after 300 more (780 kept).
        ret(app, json!({"requestId":"RET-BIG2-1","originalRequestId":"BIG2","coins":30})).await;
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("GOLD"), &json!(1030)));
        ret(app, json!({"requestId":"RET-BIG2-2","originalRequestId":"BIG2","coins":300})).await;
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(830)));
    }

    async fn the_sweeper_renews_or_downgrades_at_tier_expires_at_and_floors_hold(app: &TestApp) {
        // Rolling 30-day window, tiers kept 30 days, one tier down at a time.
        put_tiers(app, three_tiers("ROLLING", json!(30), json!(30), "ONE_DOWN")).await.assert_ok();
        cashback(app, json!({})).await;
        buy(app, "P1", 1_000_000).await;
        let t = tier(app, "ASHA").await;
        assert_eq!(t["code"], json!("GOLD"));
        let entered = ms(&t["enteredAt"]);
        assert_eq!(ms(&t["expiresAt"]), entered + 30 * DAY_MS);
        // Day 20 another purchase: by day 30 the window still holds 1,000 of the second one's
        // base coins (Gold earns ×2: 2,000 coins, 1,000 qualifying).
        app.clock.advance_ms(20 * DAY_MS);
        buy(app, "P2", 1_000_000).await;
        app.clock.advance_ms(10 * DAY_MS + 1);
        app.store().sweep_expired(app.clock.now_ms()).await.unwrap();
        let t = tier(app, "ASHA").await;
        assert_eq!(
            (&t["code"], &t["enteredAt"], &t["expiresAt"], &t["qualifyingCoins"]),
            (&json!("GOLD"), &at(entered), &at(entered + 60 * DAY_MS), &json!(1000)),
            "renewed: the window still reaches Gold"
        );
        // Day 61: nothing in the window. One tier down, then another a retention later.
        app.clock.advance_ms(31 * DAY_MS);
        app.store().sweep_expired(app.clock.now_ms()).await.unwrap();
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(0)));

        // A floor holds the member where staff put them.
        let floor = json!({"companyId":"SHOP","tierCode":"SILVER","reason":"Status match"});
        let set = app.send(reqwest::Method::PUT, "/api/v0/coins/users/ASHA/tier", Some(&app.admin_token), Some(&floor)).await;
        assert_eq!((&set.assert_ok()["floor"], &set.assert_ok()["floorReason"]), (&json!("SILVER"), &json!("Status match")));
        app.clock.advance_ms(31 * DAY_MS);
        app.store().sweep_expired(app.clock.now_ms()).await.unwrap();
        assert_eq!(tier(app, "ASHA").await["code"], json!("SILVER"), "the floor holds");

        // A floor above the tier places the member in it at once; refusals are clear.
        let gold = json!({"companyId":"SHOP","tierCode":"GOLD","reason":"Partner airline status"});
        let set = app.send(reqwest::Method::PUT, "/api/v0/coins/users/NEW/tier", Some(&app.admin_token), Some(&gold)).await;
        let set = set.assert_ok();
        let entered = ms(&set["enteredAt"]);
        assert_eq!(
            set,
            &json!({"code":"GOLD","name":"Gold","enteredAt":at(entered),"expiresAt":at(entered + 30 * DAY_MS),"qualifyingCoins":0,"nextTier":null,
                    "coinsToNextTier":null,"earnMultiplierBps":20000,"floor":"GOLD","floorReason":"Partner airline status"})
        );
        let bad = json!({"companyId":"SHOP","tierCode":"PLATINUM","reason":"x"});
        let res = app.send(reqwest::Method::PUT, "/api/v0/coins/users/NEW/tier", Some(&app.admin_token), Some(&bad)).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "tierCode PLATINUM is not a tier of the company's scheme");
        let bad = json!({"companyId":"SHOP","tierCode":"GOLD"});
        let res = app.send(reqwest::Method::PUT, "/api/v0/coins/users/NEW/tier", Some(&app.admin_token), Some(&bad)).await;
        assert_eq!(res.assert_error(400, "VALIDATION_FAILED"), "reason is required with a tierCode");
        let other = json!({"companyId":"ELSE","tierCode":"GOLD","reason":"x"});
        let res = app.send(reqwest::Method::PUT, "/api/v0/coins/users/NEW/tier", Some(&app.admin_token), Some(&other)).await;
        assert_eq!(res.assert_error(404, "TIERS_NOT_CONFIGURED"), "company ELSE has no tier scheme");
    }

    async fn a_scheme_set_up_after_the_history_counts_it_and_simulate_shows_the_tier(app: &TestApp) {
        cashback(app, json!({})).await;
        buy(app, "P1", 500_000).await;
        buy(app, "P2", 700_000).await;
        ret(app, json!({"requestId":"RET-P2","originalRequestId":"P2","amountMinor":200_000})).await;
        // A qualifying staff credit and one that does not qualify.
        let adjust = |id: &str, q: bool| json!({"companyId":"SHOP","userId":"RAVI","requestId":id,"coins":300,"reason":"Goodwill","qualifying":q});
        app.post("/api/v0/coins/adjust", &app.admin_token, adjust("A1", true)).await.assert_ok();
        app.post("/api/v0/coins/adjust", &app.admin_token, adjust("A2", false)).await.assert_ok();
        put_tiers(app, three_tiers("LIFETIME", Value::Null, Value::Null, "NEVER")).await.assert_ok();
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"], &t["expiresAt"]), (&json!("GOLD"), &json!(1000), &Value::Null));
        assert!(ms(&t["enteredAt"]) <= app.clock.now_ms());
        let t = tier(app, "RAVI").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(300)));

        let sim = |user: &str, id: &str, amount: i64| {
            json!({"operation":"ALLOCATE","companyId":"SHOP","event":"BUY","requestId":id,"userId":user,"amountMinor":amount})
        };
        let s = app.post("/api/v0/coins/simulate", &app.admin_token, sim("RAVI", "S1", 700_000)).await;
        let s = s.assert_ok();
        assert_eq!((&s["coins"], &s["baseCoins"], &s["tierBefore"], &s["tierAfter"]), (&json!(1050), &json!(700), &json!("SILVER"), &json!("GOLD")));
        assert_eq!(tier(app, "RAVI").await["code"], json!("SILVER"), "a simulation writes nothing");
        let s = app.post("/api/v0/coins/simulate", &app.admin_token, sim("NOBODY", "S2", 10_000)).await;
        assert_eq!((&s.assert_ok()["tierBefore"], &s.assert_ok()["tierAfter"]), (&json!("BRONZE"), &json!("BRONZE")));
    }
}

both_backends! {
    async fn a_fixed_event_in_bulk_earns_each_members_multiplier_and_a_first_tier_above_one_applies_from_the_first_allocation(app: &TestApp) {
        // Every member earns at least ×1.2 here, the very first allocation included.
        let mut body = three_tiers("LIFETIME", Value::Null, Value::Null, "NEVER");
        body["tiers"][0]["earnMultiplierBps"] = json!(12000);
        put_tiers(app, body).await.assert_ok();
        app.config("CUSTOM", "SHOP", "VISIT", 100).await;
        let visit = |id: &str, user: &str| json!({"companyId":"SHOP","event":"VISIT","requestId":id,"userId":user});
        let bulk = app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, json!({"allocations":[visit("V1", "NEW"), visit("V2", "NEW"), visit("V3", "OTHER")]})).await;
        let coins: Vec<Value> = bulk.assert_ok()["results"].as_array().unwrap().iter().map(|r| r["coins"].clone()).collect();
        assert_eq!(coins, [json!(120), json!(150), json!(120)], "Bronze ×1.2, then Silver ×1.5 once 100 base coins qualify");
        let t = tier(app, "NEW").await;
        assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(200)));
    }

    async fn a_tier_whose_retention_is_up_is_evaluated_before_an_allocation_earns_on_it(app: &TestApp) {
        put_tiers(app, three_tiers("ROLLING", json!(30), json!(30), "TO_QUALIFYING")).await.assert_ok();
        cashback(app, json!({})).await;
        buy(app, "P1", 100_000).await;
        // A floor on Gold, then a new scheme without Gold: the floor goes with the tier.
        let gold = json!({"companyId":"SHOP","tierCode":"GOLD","reason":"VIP"});
        app.send(reqwest::Method::PUT, "/api/v0/coins/users/ASHA/tier", Some(&app.admin_token), Some(&gold)).await.assert_ok();
        let mut two = three_tiers("ROLLING", json!(30), json!(30), "TO_QUALIFYING");
        two["tiers"].as_array_mut().unwrap().pop();
        put_tiers(app, two).await.assert_ok();
        let t = tier(app, "ASHA").await;
        assert_eq!((&t["code"], &t["floor"], &t["floorReason"]), (&json!("SILVER"), &Value::Null, &Value::Null));
        // 31 days on, no sweep and no read yet: P1 is out of the window, so the next purchase
        // finds Silver's retention up, evaluates it first (down to Bronze) and earns ×1, not ×1.5;
        // its 100 qualifying coins then make her Silver again.
        app.clock.advance_ms(31 * DAY_MS);
        assert_eq!(buy(app, "P2", 100_000).await["coins"], json!(100));
        let (company, user) = (coins::domain::CompanyId::parse("SHOP").unwrap(), coins::domain::UserId::parse("ASHA").unwrap());
        let changes = app.store().tier_history(&company, &user, 2).await.unwrap();
        let seen: Vec<(&str, &str, &str, Option<&str>)> = changes.iter().map(|c| (c.kind.as_str(), c.to.as_str(), c.cause.as_str(), c.request_id.as_deref())).collect();
        assert_eq!(seen, [("UPGRADED", "SILVER", "QUALIFYING_COINS", Some("P2")), ("DOWNGRADED", "BRONZE", "EVALUATION", None)]);
    }

    async fn a_scheme_set_up_while_members_earn_counts_every_credit_once(app: &TestApp) {
        cashback(app, json!({})).await;
        app.config("CUSTOM", "SHOP", "VISIT", 10).await;
        let earning = async {
            for i in 0..60 {
                let user = format!("M{}", i % 6);
                let visit = json!({"companyId":"SHOP","event":"VISIT","requestId":format!("V{i}"),"userId":user});
                let bulk = json!({"allocations":[{"companyId":"SHOP","event":"VISIT","requestId":format!("W{i}"),"userId":user}]});
                let (a, b) = tokio::join!(app.post(ALLOCATE, &app.admin_token, visit), app.post("/api/v0/enkash-coins/allocate-coins", &app.admin_token, bulk));
                a.assert_ok();
                b.assert_ok();
            }
        };
        let setting_up = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            put_tiers(app, three_tiers("LIFETIME", Value::Null, Value::Null, "NEVER")).await.assert_ok();
        };
        tokio::join!(earning, setting_up);
        // Every credit counted once: 20 visits of 10 base coins each, whichever side of the
        // setup they fell on (verify, after the test, checks each one against its record).
        for m in 0..6 {
            let t = tier(app, &format!("M{m}")).await;
            assert_eq!((&t["code"], &t["qualifyingCoins"]), (&json!("SILVER"), &json!(200)), "M{m}");
        }
    }
}

/// The `tier.*` events arrive signed, with the documented body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_changes_are_sent_as_webhooks() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(rx) = Receiver::start() else { return };
        let Some(app) = spawn_app(backend).await else { continue };
        let events = json!(["tier.upgraded", "tier.downgraded", "tier.renewed"]);
        let hook = app.post("/api/v0/coins/webhooks", &app.admin_token, json!({"companyId":"SHOP","url":rx.url(),"events":events})).await;
        rx.set_secrets(&[hook.assert_ok()["secret"].as_str().unwrap()]);
        put_tiers(&app, three_tiers("LIFETIME", Value::Null, json!(365), "ONE_DOWN")).await.assert_ok();
        cashback(&app, json!({})).await;
        buy(&app, "P1", 100_000).await;
        ret(&app, json!({"requestId":"RET-1","originalRequestId":"P1"})).await;
        // Silver again, then a scheme whose Gold starts at 100 places her there at once.
        buy(&app, "P2", 100_000).await;
        let mut lower = three_tiers("LIFETIME", Value::Null, json!(365), "ONE_DOWN");
        lower["tiers"][2]["threshold"] = json!(100);
        lower["tiers"][1]["threshold"] = json!(50);
        put_tiers(&app, lower).await.assert_ok();
        let records = rx.wait_for("four tier events", Duration::from_secs(20), |r| first_deliveries(r).len() >= 4).await;
        let got = first_deliveries(&records);
        let expires = tier_expiry(&got[0]);
        assert_eq!(got[0]["type"], json!("tier.upgraded"));
        assert_eq!(
            got[0]["data"],
            json!({"userId":"ASHA","fromTier":"BRONZE","toTier":"SILVER","qualifyingCoins":100,"tierExpiresAt":expires,"cause":"QUALIFYING_COINS","requestId":"P1"})
        );
        assert_eq!(got[1]["type"], json!("tier.downgraded"));
        assert_eq!(
            got[1]["data"],
            json!({"userId":"ASHA","fromTier":"SILVER","toTier":"BRONZE","qualifyingCoins":0,"tierExpiresAt":null,"cause":"RETURN","requestId":"RET-1"})
        );
        assert_eq!((&got[2]["type"], &got[2]["data"]["cause"]), (&json!("tier.upgraded"), &json!("QUALIFYING_COINS")));
        let expires = tier_expiry(&got[3]);
        assert_eq!(got[3]["type"], json!("tier.upgraded"));
        assert_eq!(
            got[3]["data"],
            json!({"userId":"ASHA","fromTier":"SILVER","toTier":"GOLD","qualifyingCoins":100,"tierExpiresAt":expires,"cause":"SCHEME_CHANGE","requestId":null})
        );
        assert_eq!(got.len(), 4, "{got:#?}");
        app.assert_ledger_consistent().await;
        app.stop().await;
    }
}

fn tier_expiry(event: &Value) -> Value {
    let expires = event["data"]["tierExpiresAt"].clone();
    assert!(expires.is_string(), "{event}");
    expires
}
