//! The one error type of the HTTP edge. Every failure becomes the error envelope (README, "API") here, with
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

/// Declares every `error_code`: its wire name, its HTTP status and the one sentence that says
/// what it means (the API document lists them from here).
macro_rules! error_codes {
    ($($variant:ident = $name:literal, $status:ident, $meaning:literal;)*) => {
        /// Every `error_code` a client can receive.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// What the code means, in one sentence.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    MalformedJson = "MALFORMED_JSON", BAD_REQUEST, "The body is not JSON, or its framing is broken.";
    ValidationFailed = "VALIDATION_FAILED", BAD_REQUEST, "A field or parameter is missing, of the wrong type or out of range; the sentence names it.";
    Unauthenticated = "UNAUTHENTICATED", UNAUTHORIZED, "No, malformed, unknown, expired or revoked bearer token.";
    Forbidden = "FORBIDDEN", FORBIDDEN, "The client may not act for this company, or the action is admin-only.";
    NotFound = "NOT_FOUND", NOT_FOUND, "No such route, asset or original request in the company.";
    CoinConfigNotFound = "COIN_CONFIG_NOT_FOUND", NOT_FOUND, "No such coin configuration, or no active one applies to this company and event.";
    UserNotFound = "USER_NOT_FOUND", NOT_FOUND, "The user was never credited (or is another company's, which reads the same).";
    WebhookNotFound = "WEBHOOK_NOT_FOUND", NOT_FOUND, "No such webhook, or another company's.";
    MessageNotFound = "MESSAGE_NOT_FOUND", NOT_FOUND, "No such event for this webhook.";
    CampaignNotFound = "CAMPAIGN_NOT_FOUND", NOT_FOUND, "No such campaign, or another company's.";
    TiersNotConfigured = "TIERS_NOT_CONFIGURED", NOT_FOUND, "The company has no tier scheme (none was set up, or it was deleted).";
    MethodNotAllowed = "METHOD_NOT_ALLOWED", METHOD_NOT_ALLOWED, "The route exists but not with this method.";
    RequestTimeout = "REQUEST_TIMEOUT", REQUEST_TIMEOUT, "The request did not arrive within the server's time limit.";
    DuplicateCoinConfig = "DUPLICATE_COIN_CONFIG", CONFLICT, "A configuration already holds this slot (one DEFAULT per event, one CUSTOM per company and event); the sentence names it.";
    RequestIdConflict = "REQUEST_ID_CONFLICT", CONFLICT, "The requestId was already used for a different operation.";
    OrderIdConflict = "ORDER_ID_CONFLICT", CONFLICT, "A live allocation already holds this orderId for the event, for another user or purchase value.";
    UserCompanyMismatch = "USER_COMPANY_MISMATCH", CONFLICT, "The user belongs to another company.";
    InsufficientBalance = "INSUFFICIENT_BALANCE", CONFLICT, "The user has fewer coins than the operation needs; nothing was changed.";
    LimitReached = "LIMIT_REACHED", CONFLICT, "A configured limit is reached (a per-user cap, a webhook count, an amount too large); nothing was changed.";
    AlreadyReversed = "ALREADY_REVERSED", CONFLICT, "The original was already reversed in full (or canceled).";
    NotReversible = "NOT_REVERSIBLE", CONFLICT, "The original is a return or an activation: only allocations and redemptions are returned.";
    ReversalExceedsRemaining = "REVERSAL_EXCEEDS_REMAINING", CONFLICT, "A return asks for more than the original has left; the sentence says what remains.";
    AmountNotRecorded = "AMOUNT_NOT_RECORDED", CONFLICT, "A return by refunded amount of an allocation that recorded no amountMinor.";
    CampaignStarted = "CAMPAIGN_STARTED", CONFLICT, "The campaign has started (or starts within 5 seconds): it cannot be deleted, and only its end can be moved earlier.";
    BalanceOverflow = "BALANCE_OVERFLOW", CONFLICT, "The balance would overflow 64 bits.";
    ConcurrentUpdate = "CONCURRENT_UPDATE", CONFLICT, "The configuration changed concurrently; retry.";
    Conflict = "CONFLICT", CONFLICT, "A concurrent change conflicted with this request; retry it.";
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", PAYLOAD_TOO_LARGE, "The body is over the size limit.";
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MEDIA_TYPE, "The body is not application/json.";
    RateLimited = "RATE_LIMITED", TOO_MANY_REQUESTS, "This client is over its rate; Retry-After says when to retry.";
    Internal = "INTERNAL", INTERNAL_SERVER_ERROR, "An internal error; the x-request-id response header identifies it in the server log.";
    Unavailable = "UNAVAILABLE", SERVICE_UNAVAILABLE, "The database is unreachable or busy; retry after Retry-After, with the same requestId for a write.";
    KeyNotConfigured = "KEY_NOT_CONFIGURED", SERVICE_UNAVAILABLE, "Webhooks and member links need COINS_SECRET_KEY set on the server.";
}

#[derive(Debug)]
pub struct ApiError {
    /// Always `code.status()`.
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// What went wrong inside, for the log (5xx and a few 409s); never sent.
    cause: Option<String>,
}

/// The cause of a failure, handed from the response to the request log line.
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), retry_after_secs: None, cause: None }
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MalformedJson, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(ErrorCode::MethodNotAllowed, format!("method {method} is not allowed on {path}"))
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {limit_bytes} bytes"))
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(ErrorCode::UnsupportedMediaType, "request body must be application/json")
    }

    /// 503: the caller should retry shortly (with the same request id, for a write).
    pub fn unavailable(message: &str, retry_after_secs: u64) -> Self {
        Self { retry_after_secs: Some(retry_after_secs), ..Self::new(ErrorCode::Unavailable, message) }
    }

    /// 429: this client is over its rate; retry after `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self { retry_after_secs: Some(secs), ..Self::new(ErrorCode::RateLimited, format!("too many requests from this client; retry after {secs} s")) }
    }

    /// 500: a cause that is ours, not the client's; logged with the request id, hidden.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, "internal error; the x-request-id response header identifies it in the server log").with_cause(cause.to_string())
    }

    pub fn with_cause(mut self, cause: String) -> Self {
        self.cause = Some(cause);
        self
    }
}

/// The sentences clients read for refusals, and their status and code.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        use ErrorCode as C;
        let conflict = ApiError::new;
        match r {
            Refusal::ConfigNotFound { company, event } => {
                ApiError::new(C::CoinConfigNotFound, format!("no active coin configuration for event {event} and company {company}"))
            }
            Refusal::UnknownConfig(id) => ApiError::new(C::CoinConfigNotFound, format!("coin configuration {id} not found")),
            Refusal::UserNotFound(user) => ApiError::new(C::UserNotFound, format!("userId {user} has never been credited")),
            Refusal::OriginalNotFound(id) => ApiError::new(C::NotFound, format!("originalRequestId {id} not found for this company")),
            Refusal::AllocationNotFound(id) => ApiError::new(C::NotFound, format!("originalRequestId {id} is not an allocation of this company")),
            Refusal::OrderNotFound { event, order } => {
                ApiError::new(C::NotFound, format!("no allocation of event {event} carries orderId {order} for this company"))
            }
            Refusal::DuplicateConfig { existing, kind, event, company } => {
                let scope = match kind {
                    ConfigKind::Default => String::new(),
                    ConfigKind::Custom => format!(" and company {company}"),
                };
                conflict(C::DuplicateCoinConfig, format!("a {} configuration for event {event}{scope} already exists: {existing}", kind.as_str()))
            }
            Refusal::RequestIdConflict(id) => conflict(C::RequestIdConflict, format!("requestId {id} was already used for a different operation")),
            Refusal::UserCompanyMismatch { user, company } => {
                conflict(C::UserCompanyMismatch, format!("userId {user} belongs to another company than {company}"))
            }
            Refusal::LimitReached { cap, limit, user, event, company } => {
                let name = match cap {
                    Cap::PerDay => "maxPerUserPerDay",
                    Cap::Ever => "maxPerUser",
                };
                conflict(C::LimitReached, format!("userId {user} has reached {name} ({limit}) for event {event} of company {company}"))
            }
            Refusal::AmountTooLarge => conflict(C::LimitReached, "the redemption amount is too large".into()),
            Refusal::BalanceOverflow(user) => conflict(C::BalanceOverflow, format!("the balance of userId {user} would overflow")),
            Refusal::ConcurrentUpdate(id) => conflict(C::ConcurrentUpdate, format!("configuration {id} was changed concurrently; retry")),
            Refusal::InsufficientBalance { user, needed, available, pending: 0 } => {
                conflict(C::InsufficientBalance, format!("userId {user} has {available} coins available, {needed} are needed"))
            }
            Refusal::InsufficientBalance { user, needed, available, pending } => {
                let held = format!("userId {user} has {available} coins available and {pending} pending (held until they activate), {needed} are needed");
                conflict(C::InsufficientBalance, held)
            }
            Refusal::AlreadyReversed(id) => conflict(C::AlreadyReversed, format!("originalRequestId {id} was already reversed")),
            Refusal::NotReversible(id) => conflict(
                C::NotReversible,
                format!("originalRequestId {id} is a return or an activation, not an allocation or a redemption: it cannot be returned"),
            ),
            Refusal::OrderIdConflict(holder) => {
                conflict(C::OrderIdConflict, format!("orderId is already held by requestId {holder} for another user or purchase value"))
            }
            Refusal::ReversalExceedsRemaining { original, remaining_coins, remaining_minor } => {
                let minor = remaining_minor.map_or(String::new(), |m| format!(" and {m} of its amountMinor"));
                conflict(C::ReversalExceedsRemaining, format!("originalRequestId {original} has {remaining_coins} coins{minor} left to return"))
            }
            Refusal::AmountMinorRequired(event) => ApiError::new(
                C::ValidationFailed,
                format!("amountMinor is required: the configuration of event {event} earns on the purchase value or has a minimum spend"),
            ),
            Refusal::ExpiryPassed => ApiError::new(C::ValidationFailed, "expiresAt must be in the future"),
            Refusal::CurrencyMismatch { given, expected } => {
                ApiError::new(C::ValidationFailed, format!("currency must be {expected}, the company's coin-value currency (got {given})"))
            }
            Refusal::AmountNotRecorded(original) => {
                conflict(C::AmountNotRecorded, format!("originalRequestId {original} recorded no amountMinor; return it by coins"))
            }
            Refusal::CampaignNotFound(id) => ApiError::new(C::CampaignNotFound, format!("campaign {id} not found")),
            Refusal::CampaignStarted(id) => conflict(
                C::CampaignStarted,
                format!("campaign {id} has started (or starts within 5 seconds): it cannot be deleted, and only an earlier endsAt can be set"),
            ),
            Refusal::CampaignInvalid(sentence) => ApiError::new(C::ValidationFailed, sentence),
            Refusal::TiersNotConfigured(company) => ApiError::new(C::TiersNotConfigured, format!("company {company} has no tier scheme")),
            Refusal::TierUnknown(code) => ApiError::new(C::ValidationFailed, format!("tierCode {code} is not a tier of the company's scheme")),
        }
    }
}

/// Retry-After for a busy or unreachable database: long enough for a failover to finish.
const RETRY_AFTER_SECS: u64 = 1;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => r.into(),
            StoreError::Unique(_) | StoreError::Stale(_) => {
                ApiError::new(ErrorCode::Conflict, "the request conflicts with a concurrent change; retry it").with_cause(chain(&e))
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
        let body =
            serde_json::to_vec(&ErrorEnvelope { payload: &self.message, response_code: 1, response_message: &self.message, error_code: self.code.as_str() })
                .unwrap_or_default();
        let mut res = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        self.mark(&mut res);
        res
    }
}

impl ApiError {
    /// Puts on a response answering this error (the API's JSON, or a dashboard page) what a
    /// retrying client and the request's log line need: `Retry-After`, and the cause.
    pub fn mark(&self, res: &mut Response) {
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(cause) = &self.cause {
            res.extensions_mut().insert(FailureCause(cause.clone()));
        }
    }
}
