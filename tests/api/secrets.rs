//! Nothing secret or derived from a secret is ever logged, at `debug`, on either backend: the
//! real server runs every credential flow (both client authentications, the password grant,
//! refresh, failures, a lockout, API calls) while its log is captured; then every secret,
//! password, token and their stored hashes is looked for in that log.

use serde_json::{Value, json};

use crate::helpers::*;

const ADMIN_ID: &str = "log-admin";
const ADMIN_SECRET: &str = "log-admin-secret-0123456789";
const PASSWORD: &str = "user-password-9876543210";

async fn stored_hashes(backend: Backend, url: &str) -> Vec<String> {
    let sql = "SELECT secret_hash FROM clients UNION ALL SELECT password_hash FROM password_users UNION ALL SELECT token_hash FROM tokens";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query(sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
        }
    }
}

async fn nothing_secret_in_the_debug_log(backend: Backend) {
    let Some(db) = test_db(backend).await else { return };
    let log = std::env::temp_dir().join(format!("coins-log-{}.txt", coins::crypto::random_token::<8>()));
    let env = [("COINS_ADMIN_CLIENT_ID", ADMIN_ID), ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET), ("COINS_LOG", "debug")];
    let (mut child, base) = start_coins_serve_logging(&db.url, &env, Some(&log));
    let http = reqwest::Client::new();
    let mut secrets: Vec<String> = vec![ADMIN_SECRET.into(), PASSWORD.into()];
    let token_of = |v: &Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned();

    let res =
        http.post(format!("{base}/oauth/token")).basic_auth(ADMIN_ID, Some(ADMIN_SECRET)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    let first: Value = res.json().await.unwrap();
    let admin = token_of(&first, "access_token");
    secrets.extend([admin.clone(), token_of(&first, "refresh_token")]);
    // A company client and a password user, made the way an operator makes them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coins"))
        .args(["client", "create", "--name", "shop", "--company", "C"])
        .env("COINS_DATABASE_URL", &db.url)
        .env("COINS_LOG", "debug")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| printed.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_else(|| panic!("{k} in {printed}")).trim().to_owned();
    let (id, secret) = (field("client_id:"), field("client_secret:"));
    secrets.push(secret.clone());
    let cli_log = String::from_utf8_lossy(&out.stderr).into_owned();
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_coins"))
        .args(["client", "add-user", &id, "--username", "asha"])
        .env("COINS_USER_PASSWORD", PASSWORD)
        .env("COINS_DATABASE_URL", &db.url)
        .env("COINS_LOG", "debug")
        .output()
        .unwrap();
    assert!(added.status.success());
    let cli_log = cli_log + &String::from_utf8_lossy(&added.stderr);

    let form = [("grant_type", "password"), ("username", "asha"), ("password", PASSWORD), ("client_id", id.as_str()), ("client_secret", secret.as_str())];
    let res: Value = http.post(format!("{base}/oauth/token")).form(&form).send().await.unwrap().json().await.unwrap();
    let user_token = token_of(&res, "access_token");
    let refresh = token_of(&res, "refresh_token");
    secrets.extend([user_token.clone(), refresh.clone()]);
    let res: Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.extend([token_of(&res, "access_token"), token_of(&res, "refresh_token")]);
    // Failures: a wrong password, wrong secrets until the client locks, a refresh token reused.
    let wrong = "wrong-password-5555";
    http.post(format!("{base}/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "password"), ("username", "asha"), ("password", wrong)])
        .send()
        .await
        .unwrap();
    for _ in 0..6 {
        http.post(format!("{base}/oauth/token")).basic_auth(&id, Some(wrong)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    }
    http.post(format!("{base}/oauth/token"))
        .basic_auth(ADMIN_ID, Some(ADMIN_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    secrets.push(wrong.into());
    // API traffic with bearer tokens, good and bad.
    let body = json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":5});
    http.post(format!("{base}/api/v0/enkash-coins/create-coins-config")).bearer_auth(&admin).json(&body).send().await.unwrap();
    let alloc = json!({"companyId":"C","event":"E","requestId":"R1","userId":"U"});
    assert_eq!(
        http.post(format!("{base}/api/v0/enkash-coins/allocate-coin")).bearer_auth(&user_token).json(&alloc).send().await.unwrap().status().as_u16(),
        200
    );
    let forged = format!("{user_token}x");
    http.get(format!("{base}/api/v0/coins/balance?userId=U")).bearer_auth(&forged).send().await.unwrap();
    secrets.push(forged);

    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    let server_log = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(server_log.lines().count() > 20 && server_log.contains("DEBUG"), "the log is not at debug: {server_log}");
    let hashes = stored_hashes(backend, &db.url).await;
    assert!(hashes.len() >= 8, "{hashes:?}");
    let derived: Vec<String> = secrets.iter().map(|s| coins::crypto::token_hash(s)).collect();
    for needle in secrets.iter().chain(&hashes).chain(&derived) {
        for (what, text) in [("server", &server_log), ("CLI", &cli_log)] {
            assert!(!text.contains(needle.as_str()), "the {what} log holds a secret or its hash ({} chars)", needle.len());
        }
        // Argon2 PHC strings: their salt and digest parts alone must not appear either.
        for part in needle.split('$').filter(|p| p.len() >= 16) {
            assert!(!server_log.contains(part), "the server log holds part of a stored hash");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_hash_reaches_the_debug_log_on_sqlite() {
    nothing_secret_in_the_debug_log(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_hash_reaches_the_debug_log_on_postgres() {
    nothing_secret_in_the_debug_log(Backend::Postgres).await;
}
