//! Webhook subscriptions and their delivery log.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

use super::users::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use super::{FromField, FromJsonObject, FromQuery, Nullable, query_id};
use crate::clock::rfc3339;
use crate::domain::CompanyId;
use crate::domain::webhooks::{EventType, events_of, mask_of};
use crate::request_body;
use crate::store::{AttemptRecord, WebhookRecord};
use crate::webhooks::target::URL_CHARS_MAX;

/// Longest description kept.
pub const DESCRIPTION_CHARS_MAX: usize = 256;

/// A webhook URL as given; its scheme and target are checked against the settings by the handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(pub String);

impl FromField for WebhookUrl {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        match value {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= URL_CHARS_MAX => Ok(Self(s.clone())),
            None | Some(Value::Null) => Err(format!("{name} is required")),
            _ => Err(format!("{name} must be an https:// URL of at most {URL_CHARS_MAX} characters")),
        }
    }
}

/// The event types a subscription receives: a non-empty list of known types, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(pub Vec<EventType>);

/// What `events` must be, naming every type a subscription can ask for.
fn events_rule() -> String {
    let names: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|e| e.as_str()).collect();
    format!("a non-empty list of {}", names.join(", "))
}

impl FromField for EventTypes {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        let items = value.and_then(Value::as_array).filter(|a| !a.is_empty()).ok_or_else(|| format!("{name} must be {}", events_rule()))?;
        let mut events = Vec::new();
        for item in items {
            let event = item
                .as_str()
                .and_then(EventType::parse)
                .filter(|e| EventType::SUBSCRIBABLE.contains(e))
                .ok_or_else(|| format!("{name} must be {}; {item} is not one", events_rule()))?;
            if !events.contains(&event) {
                events.push(event);
            }
        }
        Ok(Self(events))
    }
}

impl Serialize for EventTypes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|e| e.as_str()))
    }
}

/// A free-text note for people, up to 256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(pub String);

impl FromField for Description {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        match value {
            Some(Value::String(s)) if s.chars().count() <= DESCRIPTION_CHARS_MAX && !s.contains('\0') => Ok(Self(s.clone())),
            _ => Err(format!("{name} must be a string of at most {DESCRIPTION_CHARS_MAX} characters, or null")),
        }
    }
}

schema_of!(
    WebhookUrl,
    "WebhookUrl",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(URL_CHARS_MAX))
        .format(Some(utoipa::openapi::schema::SchemaFormat::Custom("uri".into())))
        .pattern(Some("^[Hh][Tt][Tt][Pp][Ss]?://"))
        .examples(["https://hooks.example.com/coins"])
        .description(Some("Where events are POSTed: https:// (http:// only with COINS_WEBHOOK_ALLOW_HTTP); private and loopback targets are refused unless COINS_WEBHOOK_ALLOW_PRIVATE"))
        .into()
);
schema_of!(
    EventTypes,
    "WebhookEventTypes",
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(EventType::SUBSCRIBABLE.map(EventType::as_str))))
        .min_items(Some(1))
        .examples([serde_json::json!(["coins.allocated", "coins.redeemed"])])
        .description(Some("The event types delivered to this endpoint"))
        .into()
);
schema_of!(
    Description,
    "WebhookDescription",
    ObjectBuilder::new()
        .schema_type([Type::String, Type::Null].into_iter().collect::<utoipa::openapi::schema::SchemaType>())
        .max_length(Some(DESCRIPTION_CHARS_MAX))
        .description(Some("A note for people; null: none"))
        .into()
);

request_body! {
    /// `POST /api/v0/coins/webhooks`
    pub struct CreateWebhookRequest {
        "companyId" => pub company_id: CompanyId,
        "url" => pub url: WebhookUrl,
        "events" => pub events: EventTypes,
        #[schema(value_type = Description, required = false)]
        "description" => pub description: Nullable<Description>,
    }
}

/// `PATCH /api/v0/coins/webhooks/{webhookId}`: the fields given replace the stored ones; at
/// least one is required. Enabling a disabled endpoint resumes its backlog.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PatchWebhookFields)]
pub struct PatchWebhookRequest {
    #[schema(value_type = WebhookUrl, required = false)]
    pub url: Option<WebhookUrl>,
    #[schema(value_type = EventTypes, required = false)]
    pub events: Option<EventTypes>,
    /// `null` clears it.
    #[schema(value_type = Description, required = false)]
    pub description: Option<Nullable<Description>>,
    #[schema(value_type = bool, required = false)]
    pub enabled: Option<bool>,
}

/// The fields PATCH understands, in the order they are checked.
pub const PATCHABLE: &[&str] = &["url", "events", "description", "enabled"];

impl FromJsonObject for PatchWebhookRequest {
    fn from_object(o: &Map<String, Value>) -> Result<Self, String> {
        if !PATCHABLE.iter().any(|k| o.contains_key(*k)) {
            return Err(format!("at least one of {} is required", PATCHABLE.join(", ")));
        }
        Ok(Self {
            url: FromField::from_field("url", o.get("url"))?,
            events: FromField::from_field("events", o.get("events"))?,
            description: FromField::from_field("description", o.get("description"))?,
            enabled: FromField::from_field("enabled", o.get("enabled"))?,
        })
    }
}

/// The document's PatchWebhookRequest: the fields, at least one of them given.
pub struct PatchWebhookSchema;

impl utoipa::PartialSchema for PatchWebhookSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder};
        let mut any = AnyOfBuilder::new();
        for field in PATCHABLE {
            any = any.item(ObjectBuilder::new().required(*field));
        }
        AllOfBuilder::new()
            .item(<PatchWebhookRequest as utoipa::PartialSchema>::schema())
            .item(any)
            .description(Some("The fields given replace the stored ones; `null` clears description. At least one is required."))
            .into()
    }
}

impl utoipa::ToSchema for PatchWebhookSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("PatchWebhookRequest")
    }
}

/// `GET /api/v0/coins/webhooks?companyId=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookListQuery {
    /// Only this company's subscriptions; absent: every company the caller may act for.
    #[param(rename = "companyId", value_type = Option<CompanyId>)]
    pub company_id: Option<CompanyId>,
}

impl FromQuery for WebhookListQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_id(q, "companyId")? })
    }
}

/// `GET /api/v0/coins/webhooks/{webhookId}/deliveries?limit=&cursor=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Attempts per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, required = false)]
    pub limit: i64,
    /// The `nextCursor` of the previous page; absent for the newest attempts.
    #[param(rename = "cursor", value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{2,40}$")]
    pub before_attempt_id: Option<i64>,
}

impl FromQuery for DeliveriesQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        let limit = match q.get("limit") {
            None => PAGE_LIMIT_DEFAULT,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=PAGE_LIMIT_MAX).contains(n))
                .ok_or_else(|| format!("limit must be a whole number between 1 and {PAGE_LIMIT_MAX}"))?,
        };
        let before_attempt_id = q.get("cursor").map(|c| decode_cursor(c).ok_or("cursor is not one this API issued")).transpose()?;
        Ok(Self { limit, before_attempt_id })
    }
}

pub fn encode_cursor(attempt_id: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("a{attempt_id}"))
}

pub fn decode_cursor(cursor: &str) -> Option<i64> {
    use base64::Engine;
    let text = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix('a')?.parse().ok().filter(|n: &i64| *n > 0)
}

/// A subscription on the wire (never its secret, except once in [`WebhookSecretView`]).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    #[schema(example = "wh_5f2b0c9a1e7d4b3a8c6f0e12")]
    pub webhook_id: String,
    #[schema(value_type = CompanyId)]
    pub company_id: String,
    pub url: String,
    #[schema(value_type = EventTypes)]
    pub events: EventTypes,
    pub description: Option<String>,
    /// False when turned off, or disabled after failing every delivery for the configured period.
    pub enabled: bool,
    /// `failing` when the engine disabled it; `null` otherwise.
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&WebhookRecord> for WebhookView {
    fn from(w: &WebhookRecord) -> Self {
        Self {
            webhook_id: w.webhook_id.clone(),
            company_id: w.company.to_string(),
            url: w.url.clone(),
            events: EventTypes(events_of(w.event_mask)),
            description: w.description.clone(),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
        }
    }
}

/// A subscription with its signing secret: shown once, when created or rotated.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretView {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes: the key of the HMAC-SHA256 signatures (Standard
    /// Webhooks). Shown only here; store it with the receiver.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwJtQxDsTvmCo=")]
    pub secret: String,
    /// After a rotation, until when the previous secret also signs; `null` otherwise.
    pub previous_secret_expires_at: Option<String>,
}

/// An event queued for delivery (`test`, `retry`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedView {
    /// The `webhook-id` header the endpoint will see.
    #[schema(example = "msg_1042")]
    pub message_id: String,
    pub next_attempt_at: String,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// The event's `webhook-id` (the same on every attempt of it).
    #[schema(example = "msg_1042")]
    pub message_id: String,
    #[schema(example = "coins.allocated")]
    pub event_type: String,
    /// The ledger entry reported; `null` for `webhook.test` and `coins.expiring`.
    pub entry_id: Option<i64>,
    /// `delivered` (a 2xx in time) or `failed`.
    pub status: String,
    /// The endpoint's HTTP status; `null` when none came (refused, timed out).
    pub http_code: Option<i64>,
    pub latency_ms: i64,
    pub attempted_at: String,
    /// When the event is tried again; `null` if it is not (delivered, or given up).
    pub next_attempt_at: Option<String>,
    /// The event now: `pending`, `delivered` or `failed` (retries exhausted).
    pub event_status: String,
    /// The start of the response body (at most 256 characters), or what went wrong.
    pub response_excerpt: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        Self {
            message_id: a.message_key.unwrap_or_else(|| crate::store::webhooks::message_id(a.message_seq)),
            event_type: a.event_type,
            entry_id: a.entry_id,
            status: a.outcome,
            http_code: a.http_status,
            latency_ms: a.latency_ms,
            attempted_at: rfc3339(a.attempted_at),
            next_attempt_at: a.next_attempt_at.map(rfc3339),
            event_status: a.message_state,
            response_excerpt: a.excerpt,
        }
    }
}

/// A page of attempts, newest first; `nextCursor` is `null` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptPageView {
    pub attempts: Vec<AttemptView>,
    pub next_cursor: Option<String>,
}

pub fn mask(events: &EventTypes) -> i64 {
    mask_of(&events.0)
}
