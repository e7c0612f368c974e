//! Building and running the server: bind first (so callers learn the real port, even for
//! port 0), then serve until a shutdown signal, finishing in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::ServeSettings;
use crate::http::{self, AppState, HttpSettings};
use crate::store::Store;

pub struct App {
    listener: TcpListener,
    router: axum::Router,
}

impl App {
    pub async fn build(settings: &ServeSettings, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> std::io::Result<App> {
        let listener = TcpListener::bind(settings.listen).await?;
        let state = AppState {
            store,
            clock,
            settings: Arc::new(HttpSettings { token_ttl_secs: settings.token_ttl_secs, lockout: settings.lockout }),
            tokens: Arc::default(),
        };
        Ok(App { listener, router: http::router(state) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests end.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
