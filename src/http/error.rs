//! The one error type of the HTTP edge. Every failure becomes the SPEC §2 envelope here, with
//! its status and `error_code` decided in one place; internal detail is logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::{Refusal, StoreError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    payload: &'a str,
    response_code: u8,
    response_message: &'a str,
    error_code: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", format!("method {method} is not allowed on {path}"))
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", format!("request body is larger than {limit_bytes} bytes"))
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "request body must be application/json")
    }

    pub fn unavailable(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the service is busy; retry shortly")
        }
    }

    /// Logs `cause` (with the request's span, so its id) and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error; the x-request-id response header identifies it in the server log",
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let code = match &r {
            Refusal::ConfigNotFound { .. } | Refusal::UnknownConfig(_) => {
                return ApiError::not_found("COIN_CONFIG_NOT_FOUND", r.to_string());
            }
            Refusal::UserNotFound(_) => return ApiError::not_found("USER_NOT_FOUND", r.to_string()),
            Refusal::OriginalNotFound(_) => return ApiError::not_found("NOT_FOUND", r.to_string()),
            Refusal::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Refusal::AlreadyReversed(_) => "ALREADY_REVERSED",
            Refusal::NotReversible(_) => "NOT_REVERSIBLE",
            Refusal::DuplicateConfig { .. } => "DUPLICATE_COIN_CONFIG",
            Refusal::RequestIdConflict(_) => "REQUEST_ID_CONFLICT",
            Refusal::UserCompanyMismatch { .. } => "USER_COMPANY_MISMATCH",
            Refusal::LimitReached(_) => "LIMIT_REACHED",
            Refusal::BalanceOverflow(_) => "BALANCE_OVERFLOW",
            Refusal::ConcurrentUpdate(_) => "CONCURRENT_UPDATE",
        };
        ApiError::new(StatusCode::CONFLICT, code, r.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => r.into(),
            StoreError::Unique(detail) => {
                tracing::info!(%detail, "unique key conflict");
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", "the request conflicts with a concurrent change; retry it")
            }
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::unavailable(1)
            }
            StoreError::Db(detail) => ApiError::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorEnvelope {
            payload: &self.message,
            response_code: 1,
            response_message: &self.message,
            error_code: self.code,
        })
        .unwrap_or_default();
        let mut res = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
