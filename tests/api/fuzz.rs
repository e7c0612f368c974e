//! A short run of every `cargo fuzz` target (fuzz/fuzz_targets: JSON bodies, query strings,
//! cursors, Authorization headers, the token form), each starting from its committed seed corpus
//! (`fuzz/seeds/<target>`: valid inputs of every route), so the fuzz targets build and hold in CI.
//! `COINS_FUZZ_SECS` per target (default 10); `scripts/fuzz` runs them long. This short run is
//! optimised, with debug assertions and overflow checks (cargo-fuzz's default build), in 16
//! codegen units: the build takes about 5 minutes on 2 cores instead of most of 10, and runs
//! about as fast. Needs cargo-fuzz (`.ci/run` installs it and builds the targets with these
//! very flags before the tests, so the test spends its time fuzzing); outside CI its absence
//! skips, loudly.

use std::process::Command;

const TARGETS: [&str; 5] = ["json_body", "query_string", "cursor", "auth_header", "token_form"];

#[test]
fn every_fuzz_target_survives_a_short_run() {
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "cargo-fuzz is not installed; CI must run the fuzz targets");
        eprintln!("\n!!! SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz) !!!\n");
        return;
    }
    let secs = std::env::var("COINS_FUZZ_SECS").unwrap_or_else(|_| "10".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in TARGETS {
        // Inputs found go to the local corpus (kept out of git); the committed seeds — valid
        // inputs of every route — are where the search starts.
        let corpus = format!("fuzz/corpus/{target}");
        std::fs::create_dir_all(root.join(&corpus)).expect("corpus directory");
        let seeds = format!("fuzz/seeds/{target}");
        assert!(root.join(&seeds).is_dir(), "fuzz target {target} has no seed corpus in {seeds}");
        let mut cargo = Command::new("cargo");
        // The variables cargo and nextest set for this test would reach the fuzz build and change
        // its fingerprint, so it would rebuild what `.ci/run` built: run it as a shell would.
        for (name, _) in std::env::vars() {
            if (name.starts_with("CARGO") && name != "CARGO_HOME") || name.starts_with("NEXTEST") || name.starts_with("RUST_TEST") {
                cargo.env_remove(name);
            }
        }
        let out = cargo
            .args(["fuzz", "run", target, "-s", "none", "--codegen-units", "16", &corpus, &seeds, "--", &format!("-max_total_time={secs}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo fuzz");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fuzz target {target} failed:\n{}", stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n"));
        let done = stderr.lines().find(|l| l.starts_with("Done ")).unwrap_or("?");
        eprintln!("fuzz {target}: {done}");
    }
}
