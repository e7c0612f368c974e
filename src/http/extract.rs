//! Request extraction at the edge: JSON bodies (content type, size, syntax) and typed fields
//! with the SPEC §2 validation messages, each naming its field.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::domain::coins::AMOUNT_MAX;
use crate::domain::config::{CAP_MAX, VALIDITY_DAYS_MAX};
use crate::domain::ids::IdError;
use crate::domain::{Coins, CompanyId, ConfigKind, EventName, RequestId, UserId};

/// Largest JSON body accepted by single-item endpoints (SPEC §2: 64 KiB).
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// Oversized bodies up to this size are read and discarded before the 413 is sent: a server that
/// closes while the client is still uploading can make the client's kernel reset the connection
/// and lose the 413. Larger ones are cut off (the reset is then the cheaper outcome).
const DRAIN_BYTES_MAX: usize = 1024 * 1024;

/// A JSON object body, checked for content type (415), size (413) and syntax (400).
pub struct JsonObject(pub Map<String, Value>);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_object(req, BODY_BYTES_MAX).await.map(JsonObject)
    }
}

pub async fn read_object(req: Request, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !is_json(content_type) {
        return Err(ApiError::unsupported_media_type());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES_MAX) {
            let _ = axum::body::to_bytes(req.into_body(), DRAIN_BYTES_MAX).await;
        }
        return Err(ApiError::payload_too_large(limit));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| ApiError::payload_too_large(limit))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::validation("request body must be a JSON object")),
        Err(e) => Err(ApiError::malformed_json(format!("request body is not valid JSON: {e}"))),
    }
}

fn id_message(field: &str, rule: &str, e: IdError) -> String {
    match e {
        IdError::Empty | IdError::TooLong | IdError::BadChar => format!("{field} must be {rule}"),
    }
}

/// Typed access to one object's fields. Absent and `null` are both "missing" for required fields.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    fn str(&self, field: &str) -> Result<&'a str, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(ApiError::validation(format!("{field} is required"))),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ApiError::validation(format!("{field} must be a string"))),
        }
    }

    pub fn company(&self, field: &str) -> Result<CompanyId, ApiError> {
        let s = self.str(field)?;
        CompanyId::parse(s).map_err(|e| ApiError::validation(id_message(field, CompanyId::RULE, e)))
    }

    pub fn user(&self, field: &str) -> Result<UserId, ApiError> {
        parse_user(field, self.str(field)?)
    }

    pub fn request_id(&self, field: &str) -> Result<RequestId, ApiError> {
        let s = self.str(field)?;
        RequestId::parse(s).map_err(|e| ApiError::validation(id_message(field, RequestId::RULE, e)))
    }

    pub fn event(&self, field: &str) -> Result<EventName, ApiError> {
        let s = self.str(field)?;
        EventName::parse(s).map_err(|e| ApiError::validation(id_message(field, EventName::RULE, e)))
    }

    pub fn configuration(&self, field: &str) -> Result<ConfigKind, ApiError> {
        let s = self.str(field).map_err(|_| ApiError::validation(format!("{field} must be DEFAULT or CUSTOM")))?;
        ConfigKind::parse(s).ok_or_else(|| ApiError::validation(format!("{field} must be DEFAULT or CUSTOM")))
    }

    pub fn amount(&self, field: &str) -> Result<Coins, ApiError> {
        self.0
            .get(field)
            .and_then(Value::as_i64)
            .and_then(Coins::amount)
            .ok_or_else(|| ApiError::validation(format!("{field} must be a whole number of coins between 1 and {AMOUNT_MAX}")))
    }

    /// A nullable whole number in `1..=max`: `Ok(None)` when absent, `Ok(Some(None))` for `null`.
    fn nullable_int(&self, field: &str, max: i64, unit: &str) -> Result<Option<Option<i64>>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v
                .as_i64()
                .filter(|n| (1..=max).contains(n))
                .map(|n| Some(Some(n)))
                .ok_or_else(|| ApiError::validation(format!("{field} must be a whole number of {unit} between 1 and {max}, or null"))),
        }
    }

    pub fn validity_days(&self) -> Result<Option<Option<i64>>, ApiError> {
        self.nullable_int("validityDays", VALIDITY_DAYS_MAX, "days")
    }

    pub fn cap(&self, field: &str) -> Result<Option<Option<i64>>, ApiError> {
        self.nullable_int(field, CAP_MAX, "allocations")
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::validation(format!("{field} must be true or false"))),
        }
    }
}

pub fn parse_user(field: &str, s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s).map_err(|e| ApiError::validation(id_message(field, UserId::RULE, e)))
}

/// A path segment (`{coinConfigId}`, `{userId}`): like axum's `Path<String>`, but a segment that
/// is not valid percent-encoded UTF-8 gets the API's 400 envelope, not axum's plain text.
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| PathParam(p))
            .map_err(|e| ApiError::validation(format!("bad path parameter: {e}")))
    }
}
