//! The HTTP edge: router, shared state, and the middleware every response passes through.
//!
//! - `error.rs`: the one error type and its envelope.
//! - `extract.rs`: JSON bodies and validated fields; `auth.rs`: bearer tokens.
//! - `oauth.rs`, `configs.rs`, `coins.rs`, `lifecycle.rs`, `health.rs`: one module per resource.

pub mod auth;
pub mod coins;
pub mod configs;
pub mod error;
pub mod extract;
pub mod health;
pub mod lifecycle;
pub mod oauth;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tracing::Instrument;

use crate::clock::Clock;
use crate::store::{LockoutPolicy, Store};
use error::ApiError;

/// Settings the handlers need, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub token_ttl_secs: i64,
    pub lockout: LockoutPolicy,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<HttpSettings>,
    pub tokens: Arc<auth::TokenCache>,
}

/// The success envelope of SPEC §2.
#[derive(Serialize)]
pub struct Envelope<T> {
    pub payload: T,
    pub response_code: u8,
    pub response_message: &'static str,
}

impl<T: Serialize> Envelope<T> {
    pub fn ok(payload: T) -> axum::Json<Self> {
        axum::Json(Self { payload, response_code: 0, response_message: "Success" })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/api/v0/enkash-coins/create-coins-config", post(configs::create))
        .route("/api/v0/enkash-coins/allocate-coin", post(coins::allocate))
        .route("/api/v0/enkash-coins/allocate-coins", post(lifecycle::allocate_many))
        .route("/api/v0/enkash-coins", get(configs::list))
        .route("/api/v0/enkash-coins/{coinConfigId}", get(configs::get).patch(configs::patch))
        .route("/api/v0/enkash-coins/{coinConfigId}/history", get(configs::history))
        .route("/api/v0/coins/balance", get(coins::balance))
        .route("/api/v0/coins/redeem", post(lifecycle::redeem))
        .route("/api/v0/coins/reverse", post(lifecycle::reverse))
        .route("/api/v0/coins/coin-value", get(lifecycle::get_coin_value).put(lifecycle::put_coin_value))
        .route("/api/v0/coins/users/{userId}", get(lifecycle::user))
        .route("/api/v0/coins/transactions", get(lifecycle::transactions))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(request_context))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found("NOT_FOUND", format!("no route for {} {}", req.method(), req.uri().path()))
}

/// Longest client-sent `x-request-id` echoed back; longer or odd ones are replaced.
const REQUEST_ID_CHARS_MAX: usize = 128;

pub static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

fn client_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get(&X_REQUEST_ID)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= REQUEST_ID_CHARS_MAX && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_owned())
}

/// Request id, one log line per request, and the envelope for the router's own 405s.
async fn request_context(req: Request, next: Next) -> Response {
    let request_id = client_request_id(&req).unwrap_or_else(|| {
        let bytes = crate::crypto::random_bytes::<8>();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let span = tracing::info_span!("request", id = %request_id, %method, %path);
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    if res.status() == StatusCode::METHOD_NOT_ALLOWED && res.headers().get(header::CONTENT_TYPE).is_none() {
        let allow = res.headers().get(header::ALLOW).cloned();
        res = ApiError::method_not_allowed(method.as_str(), &path).into_response();
        if let Some(allow) = allow {
            res.headers_mut().insert(header::ALLOW, allow);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    let status = res.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        if status >= 400 {
            tracing::info!(status, latency_us, "request refused");
        } else {
            tracing::debug!(status, latency_us, "request served");
        }
    });
    res
}
