//! Pages in headless Chromium (Debian's `chromium`, driven by Playwright from PyPI): the scripts
//! are in `tests/browser/`, each cut off from every host but the server under test, each saving a
//! screenshot under `target/screenshots/`. `.ci/run` installs both; outside CI their absence skips,
//! loudly.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::*;

/// Whether Chromium and Playwright are here; in CI their absence fails the test.
pub fn browser_available() -> bool {
    let chromium = std::path::Path::new(&std::env::var("COINS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())).exists();
    let playwright = Command::new("python3").args(["-c", "import playwright"]).output().is_ok_and(|o| o.status.success());
    if chromium && playwright {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!in_ci, "browser tests need Debian's chromium and PyPI's playwright; .ci/run installs both");
    eprintln!("\n!!! SKIPPED: browser test (chromium: {chromium}, playwright: {playwright}) !!!\n");
    false
}

pub fn screenshot(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `tests/browser/<script>` with these arguments; panics with its output if it fails.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser");
    let out = Command::new("python3").arg(dir.join(script)).args(args).current_dir(&dir).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_lists_every_operation_and_tries_one_with_no_internet() {
    if !browser_available() {
        return;
    }
    let Some(app) = spawn_app(Backend::Sqlite).await else { return };
    let shot = screenshot("docs.png");
    let (base, token) = (app.base.clone(), app.admin_token.clone());
    let out = tokio::task::spawn_blocking(move || run_script("docs.py", &[&base, &token, &shot.to_string_lossy()])).await.unwrap();
    eprintln!("{out}");
    app.stop().await;
}
