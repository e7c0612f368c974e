//! Schemathesis (PyPI) against `/openapi.json` of the real server, on both backends: thousands of
//! generated requests, valid and not, must get no 5xx, no answer that breaks the document
//! (status, content type, headers, body schema), and acceptance of what the document allows.
//! Bounded by `COINS_SCHEMATHESIS_SECS` (default 60 per backend; README: a longer run). Needs
//! `schemathesis` on the PATH: `.ci/run` installs it; outside CI its absence skips, loudly.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;

const ADMIN_ID: &str = "st-admin";
const ADMIN_SECRET: &str = "st-admin-secret-for-tests";

fn secs() -> String {
    std::env::var("COINS_SCHEMATHESIS_SECS").unwrap_or_else(|_| "60".into())
}

fn available() -> bool {
    let found = Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").is_err_and_not_true(), "schemathesis is not installed (pip install schemathesis); CI must run it");
        eprintln!("\n!!! SKIPPED: schemathesis is not installed (pip install schemathesis) !!!\n");
    }
    found
}

trait NotTrue {
    fn is_err_and_not_true(&self) -> bool;
}

impl NotTrue for Result<String, std::env::VarError> {
    fn is_err_and_not_true(&self) -> bool {
        !matches!(self, Ok(v) if v == "true")
    }
}

async fn run(backend: Backend) {
    if !available() {
        return;
    }
    let Some(db) = test_db(backend).await else { return };
    // A webhook key on both backends: without one, PostgreSQL answers 503 to webhook creation.
    let env = [
        ("COINS_ADMIN_CLIENT_ID", ADMIN_ID),
        ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET),
        ("COINS_RATE_LIMIT_PER_SEC", "0"),
        ("COINS_LOG", "error"),
        ("COINS_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        // The seeded webhook points at a closed port on this machine.
        ("COINS_WEBHOOK_ALLOW_HTTP", "true"),
        ("COINS_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    let (child, base) = start_coins_serve(&db.url, &env);
    // Ended however the test ends: a failing assertion must not leave the server running.
    let mut server = KillOnDrop(child);
    let http = reqwest::Client::new();
    let res =
        http.post(format!("{base}/oauth/token")).basic_auth(ADMIN_ID, Some(ADMIN_SECRET)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    // Seed what the settings file names: configuration WCC100001 and user SEEDUSER with history.
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send();
    let res =
        post("/api/v0/enkash-coins/create-coins-config", json!({"configuration":"DEFAULT","companyId":"SEED","event":"EV","amount":50,"validityDays":30}))
            .await
            .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["payload"]["coinConfigId"], json!("WCC100001"));
    for i in 0..3 {
        let res = post("/api/v0/enkash-coins/allocate-coin", json!({"companyId":"SEED","event":"EV","requestId":format!("SEED{i}"),"userId":"SEEDUSER"}))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    let res =
        post("/api/v0/enkash-coins/allocate-coin", json!({"companyId":"SEED","event":"EV","requestId":"SEED9","userId":"SEEDUSER","orderId":"SEED-ORDER"}))
            .await
            .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // A campaign far in the future, so the campaign routes reach a real one (changes stay open).
    let campaign = json!({"companyId":"SEED","name":"Seeded","startsAt":"2099-01-01T00:00:00Z","endsAt":"2099-01-08T00:00:00Z","bonusCoins":5});
    let res = post("/api/v0/coins/campaigns", campaign).await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["payload"]["campaignId"], json!("CMP100001"));
    // A tier scheme, so the tier routes reach a real one (and SEEDUSER has a tier).
    let tiers = json!({"companyId":"SEED","basis":"LIFETIME","downgrade":"NEVER","tiers":[{"code":"BASE","name":"Base","threshold":0,"earnMultiplierBps":10000},
        {"code":"GOLD","name":"Gold","threshold":100,"earnMultiplierBps":15000}]});
    let res = http.put(format!("{base}/api/v0/coins/tiers")).bearer_auth(&token).json(&tiers).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // A webhook with one event in its log, so the webhook routes reach a real one: their ids are
    // new each run, so they join a copy of the settings file.
    let hook = post("/api/v0/coins/webhooks", json!({"companyId":"SEED","url":"http://127.0.0.1:9/seed","events":["coins.allocated"]})).await.unwrap();
    let webhook_id = hook.json::<Value>().await.unwrap()["payload"]["webhookId"].as_str().expect("a seeded webhook").to_owned();
    let test = post(&format!("/api/v0/coins/webhooks/{webhook_id}/test"), json!({})).await.unwrap();
    let message_id = test.json::<Value>().await.unwrap()["payload"]["messageId"].as_str().expect("a seeded event").to_owned();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/schemathesis.toml")).unwrap();
    let seeded =
        shipped.replacen("[parameters]\n", &format!("[parameters]\n\"path.webhookId\" = \"{webhook_id}\"\n\"path.messageId\" = \"{message_id}\"\n"), 1);
    assert_ne!(seeded, shipped, "the settings file has a [parameters] table");
    let settings = std::env::temp_dir().join(format!("coins-schemathesis-{webhook_id}.toml"));
    std::fs::write(&settings, seeded).unwrap();
    let out = Command::new("schemathesis")
        .args(["--no-color", "--config-file", &settings.to_string_lossy(), "run", &format!("{base}/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {token}"), "--max-time", &secs(), "--seed", "20261202", "--workers", "1"])
        .output()
        .expect("run schemathesis");
    let _ = std::fs::remove_file(&settings);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: String = stdout.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    eprintln!("schemathesis ({backend:?}):\n{summary}");
    assert!(out.status.success(), "schemathesis found failures on {backend:?}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    server.stop();
    let verify = Command::new(env!("CARGO_BIN_EXE_coins")).arg("verify").env("COINS_DATABASE_URL", &db.url).output().unwrap();
    assert!(verify.status.success(), "after schemathesis: {}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_postgres() {
    run(Backend::Postgres).await;
}
