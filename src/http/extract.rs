//! Reading requests at the edge into the types of `wire/`: JSON bodies (content type, size,
//! framing, syntax, then each field), query strings and path segments. Every rejection is the
//! error envelope.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::Value;

use super::error::ApiError;
use super::wire::{FromJsonObject, FromQuery};

/// Largest JSON body accepted by single-item endpoints.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Body limit of the bulk endpoint: 1,000 items of up to ~1 KiB each.
pub const BULK_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Oversized bodies up to this size are read and discarded before the 413 is sent: a server that
/// closes while the client is still uploading can make the client's kernel reset the connection
/// and lose the 413. Larger ones are cut off (the reset is then the cheaper outcome).
const DRAIN_BYTES_MAX: usize = 1024 * 1024;

/// A JSON body of type `T`, at most `LIMIT` bytes.
pub struct Json<T, const LIMIT: usize = BODY_BYTES_MAX>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether reading a body failed because it was longer than allowed (not because its framing was
/// broken, e.g. an invalid chunk size, which is the client's malformed request: 400).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Reads a whole body of at most `limit` bytes: 413 over the limit, 400 for broken framing.
pub async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let done = req.extensions().get::<super::BodyRead>().cloned();
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES_MAX) {
            let _ = axum::body::to_bytes(req.into_body(), DRAIN_BYTES_MAX).await;
        }
        return Err(ApiError::payload_too_large(limit));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        if is_length_limit(&e) { ApiError::payload_too_large(limit) } else { ApiError::malformed_json(format!("the request body could not be read: {e}")) }
    })?;
    if let Some(done) = done {
        done.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(bytes)
}

impl<S: Send + Sync, T: FromJsonObject, const LIMIT: usize> FromRequest<S> for Json<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = read_body(req, LIMIT).await?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => T::from_object(&object).map(Json).map_err(ApiError::validation),
            Ok(_) => Err(ApiError::validation("request body must be a JSON object")),
            Err(e) => Err(ApiError::malformed_json(format!("request body is not valid JSON: {e}"))),
        }
    }
}

/// A query string read into `T`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: FromQuery> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(params) = axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(format!("bad query string: {e}")))?;
        T::from_query(&params).map(Query).map_err(ApiError::validation)
    }
}

/// A path segment (`{coinConfigId}`, `{userId}`): like axum's `Path<String>`, but a segment that
/// is not valid percent-encoded UTF-8 gets the API's 400 envelope, not axum's plain text.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| PathParam(p))
            .map_err(|e| ApiError::validation(format!("bad path parameter: {e}")))
    }
}
