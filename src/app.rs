//! Building and running the server: bind first (so callers learn the real port, even for
//! port 0), then serve until a shutdown signal, finishing in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::ServeSettings;
use crate::http::limits::RateLimits;
use crate::http::{self, AppState, HttpSettings};
use crate::server::{self, ConnectionLimits};
use crate::store::Store;
use crate::webhooks::worker::Worker;

pub struct App {
    listener: TcpListener,
    /// `COINS_METRICS_LISTEN`: `/metrics` without authentication, on an address of its own.
    metrics: Option<(TcpListener, axum::Router)>,
    router: axum::Router,
    sweeper: Sweeper,
    /// Webhook delivery; `None` without a key to open signing secrets.
    worker: Option<Worker>,
    connections: ConnectionLimits,
    limits: Arc<RateLimits>,
}

/// How often rate-limit buckets of idle keys are dropped.
const FORGET_IDLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// How often the webhook outbox depth gauge is refreshed.
const OUTBOX_DEPTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The expiry sweeper: every interval, writes the EXPIRE entries of lots past expiry (and the
/// activations of held coins due). Reads never wait for it (they leave expired coins out
/// themselves); it makes the ledger say so. Then it sends the expiry reminders due. Safe in
/// several processes at once: each user's lots are expired under that user's lock, once, and each
/// reminder is recorded once.
struct Sweeper {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    interval: std::time::Duration,
}

impl Sweeper {
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            // A pass handles a bounded number of users; keep going while there is work, unless told to stop.
            loop {
                let pass = self.store.sweep_expired(self.clock.now_ms()).await;
                if let Ok(report) = &pass {
                    crate::metrics::sweep(report.users_failed);
                    crate::metrics::moved(crate::metrics::Movement::Expired, report.lots_expired, report.coins_expired);
                }
                match pass {
                    // Users that failed are logged by the store and retried next interval.
                    Ok(report) if report.lots_expired == 0 => break,
                    Ok(report) => tracing::info!(lots = report.lots_expired, users_failed = report.users_failed, "expired lots"),
                    Err(e) => {
                        tracing::error!(error = %crate::store::error::chain(&e), "expiry sweep failed; retrying next interval");
                        break;
                    }
                }
                if *stop.borrow() {
                    return;
                }
            }
            self.remind(&stop).await;
        }
    }

    /// Sends the expiry reminders that came due, after the expiries (so that coins that just
    /// expired are not announced as expiring), a page per lead time at a time.
    async fn remind(&self, stop: &tokio::sync::watch::Receiver<bool>) {
        loop {
            match crate::store::reminders::remind(self.store.as_ref(), self.clock.now_ms()).await {
                Ok(report) => {
                    crate::metrics::reminders_sent(report.sent);
                    if report.sent > 0 {
                        tracing::info!(sent = report.sent, "sent expiry reminders");
                    }
                    if !report.more || *stop.borrow() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %crate::store::error::chain(&e), "expiry reminders failed; retrying next interval");
                    return;
                }
            }
        }
    }
}

impl App {
    pub async fn build(settings: &ServeSettings, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> std::io::Result<App> {
        let listener = TcpListener::bind(settings.listen).await?;
        let sweeper = Sweeper { store: store.clone(), clock: clock.clone(), interval: settings.sweep_interval };
        let metrics = match settings.metrics_listen {
            Some(addr) => {
                let store = store.clone();
                let router = axum::Router::new().route("/metrics", axum::routing::get(move || async move { http::docs::metrics_text(&*store) }));
                Some((TcpListener::bind(addr).await?, router))
            }
            None => None,
        };
        // Installed before the first request, so nothing it counts is lost.
        crate::metrics::handle();
        let limits = Arc::new(RateLimits::new(settings.rates));
        let webhooks = Arc::new(settings.webhooks.clone());
        let worker = match webhooks.key {
            Some(_) if webhooks.concurrency == 0 => {
                tracing::info!(
                    "COINS_WEBHOOK_CONCURRENCY=0: this process writes webhook messages to the outbox but delivers none; a process with delivery on sends them"
                );
                None
            }
            Some(_) => Some(Worker::new(store.clone(), clock.clone(), webhooks.clone(), http::wire::events::body).map_err(std::io::Error::other)?),
            None => {
                tracing::info!("no COINS_SECRET_KEY: webhooks cannot be registered and none are delivered by this process");
                None
            }
        };
        let state = AppState {
            store,
            clock,
            settings: Arc::new(HttpSettings {
                token_ttl_secs: settings.token_ttl_secs,
                lockout: settings.lockout,
                request_timeout: settings.request_timeout,
                webhooks: webhooks.clone(),
                member_link_ttl_secs: settings.member_link_ttl_secs,
                public_url: settings.public_url.clone(),
            }),
            tokens: Arc::default(),
            limits: limits.clone(),
        };
        Ok(App { listener, metrics, router: http::router(state, crate::dashboard::routes()), sweeper, worker, connections: settings.connections, limits })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is also served on, when `COINS_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests end and
    /// stops the sweeper between passes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let store = self.sweeper.store.clone();
        // The outbox depth gauge, whether or not this process delivers.
        let depth = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(OUTBOX_DEPTH_INTERVAL);
            // After a stall, one refresh, not every one missed.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Ok(depth) = store.outbox_depth().await {
                    crate::metrics::outbox_depth(depth);
                }
            }
        });
        let sweeper = tokio::spawn(self.sweeper.run(stop_rx.clone()));
        let worker = self.worker.map(|w| tokio::spawn(w.run(stop_rx)));
        let limits = self.limits.clone();
        let forgetter = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(FORGET_IDLE_INTERVAL);
            loop {
                ticker.tick().await;
                limits.forget_idle();
            }
        });
        let metrics = self.metrics.map(|(listener, router)| tokio::spawn(async move { axum::serve(listener, router).await }));
        server::serve(self.listener, self.router, self.connections, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
        forgetter.abort();
        depth.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        let _ = sweeper.await;
        if let Some(w) = worker {
            let _ = w.await;
        }
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: a signal sent as soon as start-up says "listening" must stop
/// the server gracefully, not kill it by the default action (seen in CI as a failed exit status).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        [(signal(SignalKind::terminate()), "SIGTERM"), (signal(SignalKind::interrupt()), "SIGINT")]
    };
    async move {
        #[cfg(unix)]
        {
            let [term, int] = signals.map(|(installed, name)| {
                Box::pin(async move {
                    match installed {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot listen for {name}");
                            std::future::pending::<()>().await;
                        }
                    }
                })
            });
            tokio::select! {
                () = term => {},
                () = int => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}
