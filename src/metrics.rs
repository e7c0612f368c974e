//! Prometheus metrics, registered here in one place; each is recorded
//! beside what it measures through the small functions below. Labels come from small fixed sets
//! only (route templates, methods, statuses, kinds): never a user, request or client id.
//!
//! `GET /metrics` on the API port needs an admin token; `COINS_METRICS_LISTEN` also serves it,
//! without authentication, on an address of its own (for a scraper on a private network).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const REQUEST_SECONDS: &str = "coins_http_request_duration_seconds";
const BATCH_SIZE: &str = "coins_group_commit_batch_size";

/// The process's recorder (one per process; later calls return the same handle).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.into()), &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_lag_seconds".into()), &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
            });
        let handle = match builder.map(PrometheusBuilder::install_recorder) {
            Ok(Ok(handle)) => handle,
            // Another recorder is installed (an embedding program): render from a detached one.
            _ => PrometheusBuilder::new().build_recorder().handle(),
        };
        describe();
        export_known_labels();
        handle
    })
}

/// The text exposition, with histograms brought up to date.
pub fn render() -> String {
    let h = handle();
    h.run_upkeep();
    h.render()
}

fn describe() {
    describe_counter!("coins_http_requests_total", "HTTP requests answered, by method, route template and status");
    describe_histogram!(REQUEST_SECONDS, metrics::Unit::Seconds, "Time to answer, by method and route template");
    describe_counter!("coins_ledger_coins_total", "Coins moved, by movement: allocated, redeemed, reversed, expired");
    describe_counter!("coins_ledger_operations_total", "Ledger operations applied (replays not counted), by movement");
    describe_histogram!(BATCH_SIZE, "Writes committed together in one group-commit transaction");
    describe_gauge!("coins_write_queue_depth", "Writes waiting for the group-commit writer");
    describe_gauge!("coins_db_connections", "Database connections, by state: in_use, idle, waiting (callers waiting for one)");
    describe_counter!("coins_cache_lookups_total", "Cache lookups, by cache (balance, config, token) and result (hit, miss)");
    describe_counter!("coins_sweeper_runs_total", "Expiry sweeper passes");
    describe_counter!("coins_sweeper_users_failed_total", "Users whose expiry failed in a pass (skipped, retried next pass)");
    describe_counter!("coins_expiry_reminders_total", "Expiry reminders recorded and queued as coins.expiring events");
    describe_counter!("coins_webhook_deliveries_total", "Webhook delivery attempts, by outcome: delivered, failed");
    describe_histogram!("coins_webhook_lag_seconds", metrics::Unit::Seconds, "From the ledger commit to the end of a delivery attempt, by outcome");
    describe_gauge!("coins_webhook_outbox_depth", "Webhook messages waiting to be delivered (pending, retries included)");
    describe_counter!("coins_rate_limited_total", "Calls refused by a rate limit, by limit: client, token");
}

/// Every counter whose labels are known in advance, at 0 from the start, so rates and alerts
/// work on a fresh server (Prometheus' guidance for known label values).
fn export_known_labels() {
    for movement in Movement::ALL {
        counter!("coins_ledger_operations_total", "movement" => movement.label()).increment(0);
        counter!("coins_ledger_coins_total", "movement" => movement.label()).increment(0);
    }
    for outcome in ["delivered", "failed"] {
        counter!("coins_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    for limit in ["client", "token"] {
        counter!("coins_rate_limited_total", "limit" => limit).increment(0);
    }
    for cache in ["balance", "config", "token"] {
        for result in ["hit", "miss"] {
            counter!("coins_cache_lookups_total", "cache" => cache, "result" => result).increment(0);
        }
    }
    counter!("coins_sweeper_runs_total").increment(0);
    counter!("coins_sweeper_users_failed_total").increment(0);
    counter!("coins_expiry_reminders_total").increment(0);
}

/// One answered request.
pub fn request(method: &str, route: &str, status: u16, elapsed: Duration) {
    counter!("coins_http_requests_total", "method" => method.to_owned(), "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "method" => method.to_owned(), "route" => route.to_owned()).record(elapsed.as_secs_f64());
}

/// What a ledger operation moved.
#[derive(Debug, Clone, Copy)]
pub enum Movement {
    Allocated,
    Redeemed,
    Reversed,
    Expired,
    /// Staff adjustments, credits and debits alike.
    Adjusted,
}

impl Movement {
    const ALL: [Movement; 5] = [Movement::Allocated, Movement::Redeemed, Movement::Reversed, Movement::Expired, Movement::Adjusted];

    fn label(self) -> &'static str {
        match self {
            Movement::Allocated => "allocated",
            Movement::Redeemed => "redeemed",
            Movement::Reversed => "reversed",
            Movement::Expired => "expired",
            Movement::Adjusted => "adjusted",
        }
    }
}

/// `operations` newly applied that moved `coins` (never negative; a reversal counts its size).
pub fn moved(movement: Movement, operations: u64, coins: u64) {
    if operations > 0 {
        counter!("coins_ledger_operations_total", "movement" => movement.label()).increment(operations);
        counter!("coins_ledger_coins_total", "movement" => movement.label()).increment(coins);
    }
}

/// One group-commit transaction of `size` writes, with `queued` still waiting behind it.
pub fn batch(backend: &'static str, size: usize, queued: usize) {
    histogram!(BATCH_SIZE, "backend" => backend).record(size as f64);
    gauge!("coins_write_queue_depth", "backend" => backend).set(queued as f64);
}

/// The database connections as of now.
pub fn connections(backend: &'static str, in_use: usize, idle: usize, waiting: usize) {
    gauge!("coins_db_connections", "backend" => backend, "state" => "in_use").set(in_use as f64);
    gauge!("coins_db_connections", "backend" => backend, "state" => "idle").set(idle as f64);
    gauge!("coins_db_connections", "backend" => backend, "state" => "waiting").set(waiting as f64);
}

/// A cache lookup.
pub fn cache(name: &'static str, hit: bool) {
    counter!("coins_cache_lookups_total", "cache" => name, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

/// One sweeper pass.
pub fn sweep(users_failed: u64) {
    counter!("coins_sweeper_runs_total").increment(1);
    counter!("coins_sweeper_users_failed_total").increment(users_failed);
}

/// Expiry reminders a pass recorded (each queued for every subscribed endpoint).
pub fn reminders_sent(sent: u64) {
    counter!("coins_expiry_reminders_total").increment(sent);
}

/// A call refused by a rate limit (`client`: API calls; `token`: the token endpoint).
pub fn rate_limited(limit: &'static str) {
    counter!("coins_rate_limited_total", "limit" => limit).increment(1);
}

/// One webhook delivery attempt, `lag_secs` after its entry was committed.
pub fn webhook_delivery(delivered: bool, lag_secs: f64) {
    let outcome = if delivered { "delivered" } else { "failed" };
    counter!("coins_webhook_deliveries_total", "outcome" => outcome).increment(1);
    histogram!("coins_webhook_lag_seconds", "outcome" => outcome).record(lag_secs.max(0.0));
}

/// Messages waiting in the outbox.
pub fn outbox_depth(depth: i64) {
    gauge!("coins_webhook_outbox_depth").set(depth as f64);
}
