use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = coins::cli::Cli::parse();
    coins::init_tracing(&cli.log, &cli.log_format);
    coins::run(cli).await
}
