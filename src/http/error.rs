//! The one error type of the HTTP edge. Every failure becomes the SPEC §2 envelope here, with
//! its status, `error_code` and sentence decided in one place — including the wording of every
//! typed [`Refusal`] of the domain. Internal causes never reach the client: they ride on the
//! response (an extension) to the request middleware, which logs them once, with the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::wire::ErrorEnvelope;
use crate::domain::ConfigKind;
use crate::domain::refusal::{Cap, Refusal};
use crate::store::StoreError;
use crate::store::error::chain;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// What went wrong inside, for the log (5xx and a few 409s); never sent.
    cause: Option<String>,
}

/// The cause of a failure, handed from the response to the request log line.
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None, cause: None }
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

    /// 503: the caller should retry shortly (with the same request id, for a write).
    pub fn unavailable(message: &str, retry_after_secs: u64) -> Self {
        Self { retry_after_secs: Some(retry_after_secs), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message) }
    }

    /// 429: this client is over its rate; retry after `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", format!("too many requests from this client; retry after {secs} s"))
        }
    }

    /// 500: a cause that is ours, not the client's; logged with the request id, hidden.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error; the x-request-id response header identifies it in the server log")
            .with_cause(cause.to_string())
    }

    pub fn with_cause(mut self, cause: String) -> Self {
        self.cause = Some(cause);
        self
    }
}

/// The sentences clients read for refusals, and their status and code.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let conflict = |code: &'static str, message: String| ApiError::new(StatusCode::CONFLICT, code, message);
        match r {
            Refusal::ConfigNotFound { company, event } => {
                ApiError::not_found("COIN_CONFIG_NOT_FOUND", format!("no active coin configuration for event {event} and company {company}"))
            }
            Refusal::UnknownConfig(id) => ApiError::not_found("COIN_CONFIG_NOT_FOUND", format!("coin configuration {id} not found")),
            Refusal::UserNotFound(user) => ApiError::not_found("USER_NOT_FOUND", format!("userId {user} has never been credited")),
            Refusal::OriginalNotFound(id) => ApiError::not_found("NOT_FOUND", format!("originalRequestId {id} not found for this company")),
            Refusal::DuplicateConfig { existing, kind, event, company } => {
                let scope = match kind {
                    ConfigKind::Default => String::new(),
                    ConfigKind::Custom => format!(" and company {company}"),
                };
                conflict("DUPLICATE_COIN_CONFIG", format!("a {} configuration for event {event}{scope} already exists: {existing}", kind.as_str()))
            }
            Refusal::RequestIdConflict(id) => conflict("REQUEST_ID_CONFLICT", format!("requestId {id} was already used for a different operation")),
            Refusal::UserCompanyMismatch { user, company } => {
                conflict("USER_COMPANY_MISMATCH", format!("userId {user} belongs to another company than {company}"))
            }
            Refusal::LimitReached { cap, limit, user, event, company } => {
                let name = match cap {
                    Cap::PerDay => "maxPerUserPerDay",
                    Cap::Ever => "maxPerUser",
                };
                conflict("LIMIT_REACHED", format!("userId {user} has reached {name} ({limit}) for event {event} of company {company}"))
            }
            Refusal::AmountTooLarge => conflict("LIMIT_REACHED", "the redemption amount is too large".into()),
            Refusal::BalanceOverflow(user) => conflict("BALANCE_OVERFLOW", format!("the balance of userId {user} would overflow")),
            Refusal::ConcurrentUpdate(id) => conflict("CONCURRENT_UPDATE", format!("configuration {id} was changed concurrently; retry")),
            Refusal::InsufficientBalance { user, needed, available } => {
                conflict("INSUFFICIENT_BALANCE", format!("userId {user} has {available} coins available, {needed} are needed"))
            }
            Refusal::AlreadyReversed(id) => conflict("ALREADY_REVERSED", format!("originalRequestId {id} was already reversed")),
            Refusal::NotReversible(id) => conflict("NOT_REVERSIBLE", format!("originalRequestId {id} is itself a reversal and cannot be reversed")),
            Refusal::OrderIdConflict(holder) => {
                conflict("ORDER_ID_CONFLICT", format!("orderId is already held by requestId {holder} for another user or purchase value"))
            }
            Refusal::ReversalExceedsRemaining { original, remaining_coins, remaining_minor } => {
                let minor = remaining_minor.map_or(String::new(), |m| format!(" and {m} of its amountMinor"));
                conflict("REVERSAL_EXCEEDS_REMAINING", format!("originalRequestId {original} has {remaining_coins} coins{minor} left to return"))
            }
            Refusal::AmountNotRecorded(original) => {
                conflict("AMOUNT_NOT_RECORDED", format!("originalRequestId {original} recorded no amountMinor; return it by coins"))
            }
        }
    }
}

/// Retry-After for a busy or unreachable database: long enough for a failover to finish.
const RETRY_AFTER_SECS: u64 = 1;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => r.into(),
            StoreError::Unique(_) => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", "the request conflicts with a concurrent change; retry it").with_cause(chain(&e))
            }
            StoreError::Busy(_) => ApiError::unavailable("the service is busy; retry shortly", RETRY_AFTER_SECS).with_cause(chain(&e)),
            StoreError::Unavailable(_) => ApiError::unavailable(
                "the database is unavailable; retry shortly (a write answered so may or may not have been applied: retry it with the same requestId)",
                RETRY_AFTER_SECS,
            )
            .with_cause(chain(&e)),
            other => ApiError::internal(chain(&other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorEnvelope { payload: &self.message, response_code: 1, response_message: &self.message, error_code: self.code })
            .unwrap_or_default();
        let mut res = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(cause) = self.cause {
            res.extensions_mut().insert(FailureCause(cause));
        }
        res
    }
}
