//! The HTTP edge: router, shared state, and the middleware every response passes through.
//!
//! - `wire/`: every request and response body, as types (what the API description derives from).
//! - `extract.rs`: reading bodies, queries and paths into those types; `auth.rs`: bearer tokens.
//! - `error.rs`: the one error type, the envelope, and the wording of every refusal.
//! - `oauth.rs`, `configs.rs`, `ledger.rs`, `users.rs`, `health.rs`: handlers, one module per
//!   resource; each extracts, calls the store, maps the result.

pub mod allocations;
pub mod auth;
pub mod campaigns;
pub mod configs;
pub mod docs;
pub mod error;
pub mod exports;
pub mod extract;
pub mod health;
pub mod ledger;
pub mod limits;
pub mod oauth;
pub mod openapi;
pub mod reminders;
pub mod tiers;
pub mod users;
pub mod webhooks;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::clock::Clock;
use crate::domain::lockout::LockoutPolicy;
use crate::store::Store;
use error::{ApiError, ErrorCode, FailureCause};

/// Settings the handlers need, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub token_ttl_secs: i64,
    pub lockout: LockoutPolicy,
    /// A request must be answered within this, its body read included.
    pub request_timeout: Duration,
    pub webhooks: Arc<crate::webhooks::WebhookSettings>,
    /// How long a member link opens its page.
    pub member_link_ttl_secs: i64,
    /// `COINS_PUBLIC_URL`: the base of links the server hands out (member pages).
    pub public_url: Option<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<HttpSettings>,
    pub tokens: Arc<auth::TokenCache>,
    pub limits: Arc<limits::RateLimits>,
}

/// The router and the API document, built together from the same registrations. `pages` (the
/// dashboard, mounted by the app) share the edge's middleware and fallback but not the document.
pub fn router_and_document(state: AppState, pages: Router<AppState>) -> (Router, utoipa::openapi::OpenApi) {
    use utoipa::{Modify, OpenApi};
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let (routes, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(oauth::token))
        .routes(routes!(configs::create))
        .routes(routes!(ledger::allocate))
        .routes(routes!(ledger::allocate_many))
        .routes(routes!(configs::list))
        .routes(routes!(configs::get, configs::patch))
        .routes(routes!(configs::history))
        .routes(routes!(users::balance))
        .routes(routes!(ledger::redeem))
        .routes(routes!(ledger::reverse))
        .routes(routes!(ledger::activate))
        .routes(routes!(ledger::adjust))
        .routes(routes!(ledger::simulate))
        .routes(routes!(exports::ledger))
        .routes(routes!(exports::balances))
        .routes(routes!(allocations::by_request))
        .routes(routes!(allocations::by_order))
        .routes(routes!(users::get_coin_value, users::put_coin_value))
        .routes(routes!(users::user))
        .routes(routes!(users::transactions))
        .routes(routes!(users::page_link))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::patch, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::retry))
        .routes(routes!(reminders::put, reminders::get))
        .routes(routes!(campaigns::create, campaigns::list))
        .routes(routes!(campaigns::get, campaigns::patch, campaigns::delete))
        .routes(routes!(tiers::put, tiers::get, tiers::delete))
        .routes(routes!(tiers::put_floor))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(docs::metrics))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::docs_page))
        .routes(routes!(docs::docs_asset))
        .split_for_parts();
    openapi::EdgeResponses.modify(&mut document);
    let json = serde_json::to_string_pretty(&document).unwrap_or_default();
    let router = routes
        .merge(pages)
        .fallback(not_found)
        .layer(axum::Extension(docs::ApiDocument(Arc::new(json))))
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_context))
        .with_state(state);
    (router, document)
}

pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    router_and_document(state, pages).0
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {} {}", req.method(), req.uri().path()))
}

/// Longest client-sent `x-request-id` echoed back; longer or odd ones are replaced.
const REQUEST_ID_CHARS_MAX: usize = 128;

pub static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

fn client_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get(&X_REQUEST_ID)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= REQUEST_ID_CHARS_MAX && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_owned())
}

/// Where the auth extractor leaves the calling client's id for the request's log line.
#[derive(Clone, Default)]
pub struct CallerSlot(pub Arc<OnceLock<String>>);

/// Set once the request's body has been read whole (`extract::read_body`), so a timeout can tell
/// a client that was too slow to send (408) from an answer that was too slow to come (503).
#[derive(Clone, Default)]
pub struct BodyRead(pub Arc<AtomicBool>);

fn timed_out(body_read: &BodyRead, limit: Duration) -> Response {
    let secs = limit.as_secs();
    if body_read.0.load(Ordering::Relaxed) {
        // The answer is late (a slow database): a write may still complete; retrying with the
        // same request id is safe.
        ApiError::unavailable(&format!("the request was not answered within {secs} s; retry it (with the same requestId)"), 1).into_response()
    } else {
        let mut res = ApiError::new(ErrorCode::RequestTimeout, format!("the request was not received within {secs} s")).into_response();
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    }
}

/// Request id, the request timeout, the one log line per request (with the cause of a failure,
/// logged only here), and the envelope for the router's own 405s.
async fn request_context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = client_request_id(&req).unwrap_or_else(|| hex::encode(crate::crypto::random_bytes::<8>()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let caller = CallerSlot::default();
    req.extensions_mut().insert(caller.clone());
    let body_read = BodyRead::default();
    // A request without a body has sent all it will: a late answer to it is ours (503), not its.
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::trim);
    let no_body = declared == Some("0") || (declared.is_none() && !req.headers().contains_key(header::TRANSFER_ENCODING));
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD || no_body {
        body_read.0.store(true, Ordering::Relaxed);
    }
    req.extensions_mut().insert(body_read.clone());
    let span = tracing::info_span!("request", id = %request_id);
    let started = Instant::now();
    let limit = state.settings.request_timeout;
    let mut res = match tokio::time::timeout(limit, next.run(req).instrument(span.clone())).await {
        Ok(res) => res,
        Err(_) => timed_out(&body_read, limit),
    };
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
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let client = caller.0.get().map_or("-", String::as_str);
    let cause = res.extensions().get::<FailureCause>().map(|c| c.0.as_str());
    crate::metrics::request(method.as_str(), &route, status, started.elapsed());
    span.in_scope(|| match cause {
        Some(cause) if status >= 500 && status != 503 => {
            tracing::error!(%method, route, status, latency_ms, client, cause, "request failed")
        }
        Some(cause) => tracing::warn!(%method, route, status, latency_ms, client, cause, "request refused"),
        None => tracing::info!(%method, route, status, latency_ms, client, "request"),
    });
    res
}
