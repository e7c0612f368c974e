//! coins: a loyalty-coins engine, wire-compatible with the EnKash Point Management API.
//!
//! Map of the crate:
//! - [`cli`] and [`config`]: the command line and typed settings (flags > env > defaults).
//! - [`app`]: bind, serve, shut down gracefully; [`server`]: connection limits and timeouts.
//!   [`admin`]: the operator commands.
//! - [`domain`]: every rule as a pure function — validated ids and amounts, configuration
//!   resolution, and one plan per ledger operation; no I/O.
//! - [`store`]: small storage traits, the one order every write takes, and the SQLite and
//!   PostgreSQL backends that fetch and write for it.
//! - [`http`]: router, the wire types of every body, extraction, handlers, the error envelope.
//! - [`webhooks`]: signing, target checks and the delivery worker of the outbox.
//! - [`dashboard`]: the staff dashboard and the member page, HTML rendered here.
//! - [`clock`] (injectable time), [`crypto`] (tokens and secret hashes), [`metrics`] (Prometheus).

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod domain;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod server;
pub mod store;
pub mod webhooks;

use std::process::ExitCode;
use std::sync::Arc;

use cli::{Cli, ClientCommand, Command};
use store::error::chain;

/// Sets up logging to stderr in the chosen format and filter.
///
/// Whatever the filter says, the PostgreSQL driver's debug and trace events never pass: they
/// print query parameters, which include password and token hashes. Colour only on a terminal.
pub fn init_tracing(filter: &str, format: cli::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_query_parameters =
        tracing_subscriber::filter::filter_fn(|meta| !(meta.target().starts_with("tokio_postgres") && *meta.level() > tracing::Level::INFO));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        cli::LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).boxed(),
        cli::LogFormat::Text => fmt.boxed(),
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter).with_filter(no_query_parameters)).init();
}

/// Runs one CLI command to completion.
pub async fn run(cli: Cli) -> ExitCode {
    match run_command(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(cli: Cli) -> Result<ExitCode, String> {
    let url = config::database_url(&cli);
    let serving = matches!(cli.command, Command::Serve(_));
    let store = store::open_with(&url, config::store_options(&cli, serving)).await.map_err(|e| format!("opening the database: {}", chain(&e)))?;
    store.migrate().await.map_err(|e| format!("applying migrations: {}", chain(&e)))?;
    let fail = |e: store::StoreError| chain(&e);
    match cli.command {
        Command::Migrate => {
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => admin::verify(store).await.map_err(fail),
        Command::Client(ClientCommand::Create { name, admin, company }) => {
            let companies = admin::parse_companies(&company)?;
            let (id, secret) = admin::create_client(&*store, &name, admin, companies).await.map_err(fail)?;
            println!("client_id: {id}");
            println!("client_secret: {secret}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(ClientCommand::AddUser { id, username, password }) => {
            if username.is_empty() || password.is_empty() {
                return Err("--username and --password must not be empty".into());
            }
            let hash = crypto::hash_secret(&password);
            if store.upsert_password_user(&id, &username, &hash, clock::system_now_ms()).await.map_err(fail)? {
                println!("user {username} can now use the password grant with client {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("no client {id}"))
            }
        }
        Command::Client(ClientCommand::List) => admin::print_clients(store).await.map(|()| ExitCode::SUCCESS).map_err(fail),
        Command::Client(ClientCommand::Revoke { id }) => {
            if store.revoke_client(&id, clock::system_now_ms()).await.map_err(fail)? {
                println!("client {id} revoked; its tokens stop working within 30 s everywhere");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("no client {id}"))
            }
        }
        Command::Serve(args) => {
            let mut settings = config::ServeSettings::from_args(&args)?;
            if settings.webhooks.key.is_none() {
                settings.webhooks.key = config::default_secret_key(&url)?;
            }
            let _serve_lock = store::sqlite_path(&url).map(store::lock_sqlite_for_serve).transpose()?;
            let clock: Arc<dyn clock::Clock> = if args.clock_offset_secs == 0 {
                Arc::new(clock::SystemClock)
            } else {
                let shifted = clock::ShiftedClock::default();
                shifted.advance_ms(args.clock_offset_secs.saturating_mul(1000));
                Arc::new(shifted)
            };
            let app = app::App::build(&settings, store.clone(), clock).await.map_err(|e| format!("binding {}: {e}", settings.listen))?;
            let addr = app.local_addr().map_err(|e| e.to_string())?;
            admin::bootstrap_admin(&*store, &settings, addr).await.map_err(fail)?;
            // Before anyone is told the server is up: from then on a signal must stop it gracefully.
            let stop = app::shutdown_signal();
            tracing::info!(%addr, database = if url.starts_with("postgres") { "postgresql" } else { "sqlite" }, "coins is listening");
            println!("coins listening on http://{addr}");
            if let Some(metrics) = app.metrics_addr() {
                println!("metrics on http://{metrics}/metrics");
            }
            app.run_until(stop).await.map_err(|e| e.to_string())?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
