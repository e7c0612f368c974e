use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = coins::cli::Cli::parse();
    coins::init_tracing(&cli.log, cli.log_format);
    // Before any thread can start SQLite, which fixes its configuration.
    if !coins::store::sqlite::install_page_cache() {
        tracing::warn!("SQLite's page cache could not be replaced; commits scan the whole cache");
    }
    // Blocking threads serve Argon2 checks and the rarer SQLite scans; a few suffice, and each
    // idle one would keep its own malloc arena.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(16).build();
    match runtime {
        Ok(rt) => rt.block_on(coins::run(cli)),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
