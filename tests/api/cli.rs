//! The `coins` binary itself — client commands, verify, first-run bootstrap, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::both_backends;
use crate::helpers::*;

fn coins(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coins")).args(args).env("COINS_DATABASE_URL", &app.db.url).env("COINS_LOG", "warn").output().expect("run coins");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn field(stdout: &str, name: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("no {name} line in {stdout}")).to_owned()
}

/// Tampers with a stored balance behind the API's back, to prove `verify` notices.
async fn corrupt_a_balance(app: &TestApp) {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&app.db.url).unwrap();
            conn.execute("UPDATE users SET balance = balance + 1", []).unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.execute("UPDATE users SET balance = balance + 1", &[]).await.unwrap();
        }
    }
}

both_backends! {
    async fn client_create_prints_credentials_that_work_and_revoke_ends_them(app: &TestApp) {
        let (ok, stdout, stderr) = tokio::task::block_in_place(|| coins(app, &["client", "create", "--name", "partner", "--company", "CA", "CB"]));
        assert!(ok, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        let (id, secret) = (field(&stdout, "client_id"), field(&stdout, "client_secret"));
        assert!(!stderr.contains(&secret), "the secret is never logged");
        let token = app.token(&id, &secret).await;
        app.config("DEFAULT", "X", "E", 2).await;
        app.allocate(&token, "CB", "E", "R", "U").await.assert_ok();
        app.allocate(&token, "CC", "E", "R", "U2").await.assert_error(403, "FORBIDDEN");

        let (ok, list, _) = tokio::task::block_in_place(|| coins(app, &["client", "list"]));
        assert!(ok && list.contains(&id) && list.contains("CA CB") && !list.contains(&secret), "{list}");

        let (ok, _, stderr) = tokio::task::block_in_place(|| coins(app, &["client", "revoke", &id]));
        assert!(ok, "{stderr}");
        app.clock.advance_ms(coins::http::auth::AUTH_CACHE_TTL_MS);
        app.get("/api/v0/coins/balance?userId=U", &token).await.assert_error(401, "UNAUTHENTICATED");
        let (ok, _, _) = tokio::task::block_in_place(|| coins(app, &["client", "revoke", "cl_missing"]));
        assert!(!ok);
    }

    async fn client_create_needs_a_scope(app: &TestApp) {
        let (ok, _, _) = tokio::task::block_in_place(|| coins(app, &["client", "create", "--name", "x"]));
        assert!(!ok);
        let (ok, _, stderr) = tokio::task::block_in_place(|| coins(app, &["client", "create", "--name", "x", "--company", "bad company"]));
        assert!(!ok && stderr.contains("--company"), "{stderr}");
    }

    async fn add_user_enables_the_password_grant(app: &TestApp) {
        let (_, stdout, _) = tokio::task::block_in_place(|| coins(app, &["client", "create", "--name", "p", "--admin"]));
        let (id, secret) = (field(&stdout, "client_id"), field(&stdout, "client_secret"));
        let (ok, _, stderr) = tokio::task::block_in_place(|| coins(app, &["client", "add-user", &id, "--username", "ops", "--password", "hunter22"]));
        assert!(ok, "{stderr}");
        let res = app.token_request(Some((&id, &secret)), &[("grant_type", "password"), ("username", "ops"), ("password", "hunter22")]).await;
        assert_eq!(res.status.as_u16(), 200, "{}", res.text);
    }

    async fn verify_passes_on_a_sound_ledger_and_fails_on_a_tampered_one(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 5).await;
        for i in 0..5 {
            app.allocate(&app.admin_token, "C", "E", &format!("R{i}"), &format!("U{}", i % 2)).await.assert_ok();
        }
        let (ok, stdout, _) = tokio::task::block_in_place(|| coins(app, &["verify"]));
        assert!(ok && stdout.contains("ledger OK: 2 users, 5 entries"), "{stdout}");
        corrupt_a_balance(app).await;
        let (ok, stdout, _) = tokio::task::block_in_place(|| coins(app, &["verify"]));
        assert!(!ok, "verify must exit non-zero: {stdout}");
        assert!(stdout.contains("MISMATCH") && stdout.contains("C/U0"), "{stdout}");
        // Put it back so the harness's own final check passes.
        match app.backend {
            Backend::Sqlite => {
                rusqlite::Connection::open(&app.db.url).unwrap().execute("UPDATE users SET balance = balance - 1", []).unwrap();
            }
            Backend::Postgres => {
                let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.execute("UPDATE users SET balance = balance - 1", &[]).await.unwrap();
            }
        }
    }

    async fn the_ledger_refuses_updates_and_deletes(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 5).await;
        app.allocate(&app.admin_token, "C", "E", "R", "U").await.assert_ok();
        match app.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&app.db.url).unwrap();
                assert!(conn.execute("UPDATE ledger_entries SET coins = 1", []).is_err());
                assert!(conn.execute("DELETE FROM ledger_entries", []).is_err());
            }
            Backend::Postgres => {
                let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                assert!(client.execute("UPDATE ledger_entries SET coins = 1", &[]).await.is_err());
                assert!(client.execute("DELETE FROM ledger_entries", &[]).await.is_err());
            }
        }
    }
}

/// `serve` on an empty database creates an admin, prints it once, serves, and exits 0 on SIGTERM.
#[test]
fn serve_bootstraps_an_admin_on_first_run_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("coins-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coins"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env_remove("COINS_DATABASE_URL")
        .env_remove("COINS_ADMIN_CLIENT_ID")
        .env_remove("COINS_ADMIN_CLIENT_SECRET")
        .env("COINS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "serve exited early: {printed}");
        printed.push_str(&line);
        if let Some(addr) = line.trim().strip_prefix("coins listening on ") {
            break addr.to_owned();
        }
    };
    let (id, secret) = (field(&printed, "client_id"), field(&printed, "client_secret"));
    assert!(printed.contains("curl"), "prints how to get a token: {printed}");
    assert!(dir.join("coins-data/coins.db").exists(), "default SQLite file under ./coins-data/");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let res = reqwest::Client::new()
            .post(format!("{addr}/oauth/token"))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        res.status().as_u16()
    });
    assert_eq!(status, 200);

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit after SIGTERM: {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains(&secret), "the secret never reaches the log");
    // A second start on the same database creates nothing new and prints no secret.
    let out = Command::new(env!("CARGO_BIN_EXE_coins")).args(["client", "list"]).current_dir(&dir).env_remove("COINS_DATABASE_URL").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "one header line and the one admin");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One `serve` per SQLite file: a second one on the same file refuses to start and says why;
/// CLI commands still work beside the running server; once it is gone (even SIGKILLed, since the
/// OS drops the lock with the process) a new `serve` starts.
#[test]
fn a_second_serve_on_the_same_sqlite_file_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("coins-serve-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("coins.db").to_string_lossy().into_owned();
    let (mut first, _) = start_coins_serve(&db, &[]);

    let second = Command::new(env!("CARGO_BIN_EXE_coins"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("COINS_DATABASE_URL", &db)
        .env("COINS_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second serve must not start: {stderr}");
    assert!(stderr.contains("another `coins serve` is already using") && stderr.contains(&db), "{stderr}");
    let list = Command::new(env!("CARGO_BIN_EXE_coins")).args(["client", "list"]).env("COINS_DATABASE_URL", &db).output().unwrap();
    assert!(list.status.success(), "CLI commands work beside the server: {}", String::from_utf8_lossy(&list.stderr));

    assert!(Command::new("kill").args(["-KILL", &first.id().to_string()]).status().unwrap().success());
    first.wait().unwrap();
    let (mut third, _) = start_coins_serve(&db, &[]);
    assert!(Command::new("kill").args(["-TERM", &third.id().to_string()]).status().unwrap().success());
    assert!(third.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
