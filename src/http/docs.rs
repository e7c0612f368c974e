//! The API document and its reader: `GET /openapi.json` (generated from the code, see
//! `openapi.rs`), `GET /docs` (Swagger UI, vendored in `web/vendor/swagger-ui/` and embedded in
//! the binary, so it works with no internet access), and `GET /metrics` (Prometheus text, for
//! admin clients).

use std::sync::Arc;

use axum::Extension;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Auth;
use super::error::{ApiError, ErrorCode};
use super::wire::ErrorEnvelope;

/// The document as served, made once at start-up.
#[derive(Clone)]
pub struct ApiDocument(pub Arc<String>);

/// Scripts and styles only from this server; the page calls only this server.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut res = (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    res.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}
/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
pub async fn openapi_json(Extension(doc): Extension<ApiDocument>) -> Response {
    let mut res = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], doc.0.as_str().to_owned()).into_response();
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}
/// The interactive API reference.
#[utoipa::path(get, path = "/docs", tag = "operations", security(()),
    responses((status = 200, description = "The interactive API reference", content_type = "text/html; charset=utf-8", body = String)))]
pub async fn docs_page() -> Response {
    asset("text/html; charset=utf-8", include_bytes!("../../web/docs/index.html"))
}
/// A script or style of the reference.
#[utoipa::path(get, path = "/docs/{asset}", tag = "operations", security(()),
    params(("asset" = String, Path, description = "swagger-ui-bundle.js, swagger-ui.css, init.js or docs.css")),
    responses(
        (status = 200, description = "A script or style of the reference page",
         content((String = "text/javascript; charset=utf-8"), (String = "text/css; charset=utf-8"))),
        (status = 404, description = "NOT_FOUND", body = ErrorEnvelope),
    ))]
pub async fn docs_asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(match name.as_str() {
        "swagger-ui-bundle.js" => asset("text/javascript; charset=utf-8", include_bytes!("../../web/vendor/swagger-ui/swagger-ui-bundle.js")),
        "swagger-ui.css" => asset("text/css; charset=utf-8", include_bytes!("../../web/vendor/swagger-ui/swagger-ui.css")),
        "init.js" => asset("text/javascript; charset=utf-8", include_bytes!("../../web/docs/init.js")),
        "docs.css" => asset("text/css; charset=utf-8", include_bytes!("../../web/docs/docs.css")),
        _ => return Err(ApiError::new(ErrorCode::NotFound, format!("no asset {name}"))),
    })
}

/// Prometheus text exposition for `/metrics` (on the API port, for admins; see `crate::metrics`).
pub fn metrics_text(store: &dyn crate::store::Store) -> Response {
    store.observe();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], crate::metrics::render()).into_response()
}
/// Prometheus metrics (admin clients).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 403, description = "FORBIDDEN: not an admin client", body = ErrorEnvelope),
    ))]
pub async fn metrics(axum::extract::State(state): axum::extract::State<super::AppState>, auth: Auth) -> Result<Response, ApiError> {
    auth.require_admin("read metrics")?;
    Ok(metrics_text(&*state.store))
}
