//! The connection layer under the router: accepting, capping and timing connections, so that no
//! client can hold the server open.
//!
//! - At most `max_connections` are open at once; past that the server stops accepting and new
//!   connections wait in the kernel's backlog.
//! - A request's headers must be complete within `header_read` of their first byte (a client
//!   sending one byte a second is cut off), and a connection with no request in flight that
//!   sends nothing for `idle` is closed (idle keep-alive). hyper's own header timer runs from
//!   the moment a connection waits for a request, which would make the two one setting; the
//!   [`HeadTimer`] below starts it at the first byte instead, and [`Watched`] counts the bytes.
//! - The whole request, body included, must be answered within `request` (the router's
//!   middleware, `http::request_context`).
//!
//! On shutdown it stops accepting, asks every connection to finish its request in flight and
//! close, and waits for them (at most [`DRAIN_MAX`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::rt::{Read, ReadBufCursor, Sleep, Timer, Write};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How long shutdown waits for open connections to finish their requests.
pub const DRAIN_MAX: Duration = Duration::from_secs(30);

/// The connection limits (settings `COINS_MAX_CONNECTIONS`, `COINS_HEADER_READ_TIMEOUT_SECS`,
/// `COINS_IDLE_TIMEOUT_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read: Duration,
    pub idle: Duration,
}

/// What one connection has done, shared by its IO wrapper, its timer and its watchdog.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `start` of the last byte read; 0 before any.
    last_read_ms: AtomicU64,
    /// Milliseconds since `start` of the last byte read or written.
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
    start: std::sync::OnceLock<Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        // +1 so that "never" (0) and "at the first millisecond" differ.
        self.start.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }
}

/// The TCP stream, noting every byte read or written.
struct Watched {
    io: TokioIo<TcpStream>,
    activity: Arc<Activity>,
}

impl Read for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        // A cursor cannot report how much it received; any completed read of a live connection
        // counts as activity (an EOF ends the connection anyway).
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if polled.is_ready() {
            let now = self.activity.now_ms();
            self.activity.last_read_ms.store(now, Ordering::Relaxed);
            self.activity.last_io_ms.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl Write for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            let now = self.activity.now_ms();
            self.activity.last_io_ms.store(now, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's header timer, started at the first byte of the head rather than when the connection
/// begins to wait for one (idle waiting is the watchdog's business).
struct HeadTimer {
    activity: Arc<Activity>,
    header_read: Duration,
}

struct HeadSleep {
    activity: Arc<Activity>,
    header_read: Duration,
    armed_at_ms: u64,
    fire: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fire.is_none() {
            // hyper polls this again whenever bytes arrive; until the first one, never fire.
            let last_read = self.activity.last_read_ms.load(Ordering::Relaxed);
            if last_read < self.armed_at_ms {
                return Poll::Pending;
            }
            let elapsed = Duration::from_millis(self.activity.now_ms().saturating_sub(last_read));
            let at = tokio::time::Instant::now() + self.header_read.saturating_sub(elapsed);
            self.fire = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        match self.fire.as_mut() {
            Some(fire) => fire.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl Sleep for HeadSleep {}

impl Timer for HeadTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.head_sleep()
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.head_sleep()
    }
}

impl HeadTimer {
    fn head_sleep(&self) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep { activity: self.activity.clone(), header_read: self.header_read, armed_at_ms: self.activity.now_ms(), fire: None })
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains.
pub async fn serve(listener: TcpListener, router: axum::Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, stop) = (router.clone(), stop_rx.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, router, limits, stop).await;
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it closes: holding them all means all are closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_MAX, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open after the shutdown drain period; closing them");
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, router: axum::Router, limits: ConnectionLimits, mut stop: watch::Receiver<bool>) {
    let activity = Arc::new(Activity::default());
    activity.now_ms();
    let io = Watched { io: TokioIo::new(stream), activity: activity.clone() };
    let counter = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let (router, counter) = (router.clone(), counter.clone());
        counter.in_flight.fetch_add(1, Ordering::Relaxed);
        async move {
            let res = router.oneshot(req.map(axum::body::Body::new)).await;
            counter.last_io_ms.store(counter.now_ms(), Ordering::Relaxed);
            counter.in_flight.fetch_sub(1, Ordering::Relaxed);
            res
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(HeadTimer { activity: activity.clone(), header_read: limits.header_read }).header_read_timeout(limits.header_read);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        // With a request in flight the connection is not idle: look again a full period later.
        let idle_for = Duration::from_millis(activity.now_ms().saturating_sub(activity.last_io_ms.load(Ordering::Relaxed)));
        let idle_left = if activity.in_flight.load(Ordering::Relaxed) > 0 { limits.idle } else { limits.idle.saturating_sub(idle_for) };
        let idle_left = idle_left.max(Duration::from_millis(10));
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(idle_left), if !closing => {
                let quiet = Duration::from_millis(activity.now_ms().saturating_sub(activity.last_io_ms.load(Ordering::Relaxed)));
                if quiet >= limits.idle && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "closing an idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
