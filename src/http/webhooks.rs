//! Webhook subscriptions: register, list, read, change, delete, rotate the
//! secret, send a test event, read the delivery log and retry an event. Scoped like everything
//! else: a company client sees and manages only its companies' subscriptions (another company's
//! reads exactly like one that does not exist); admin clients, any.

use axum::Json as JsonResponse;
use axum::extract::State;
#[allow(unused_imports)]
use serde_json::json;

use super::AppState;
use super::auth::Auth;
use super::error::{ApiError, ErrorCode};
use super::extract::{Json, PathParam, Query};
use super::wire::webhooks::{
    AttemptPageView, CreateWebhookRequest, DeliveriesQuery, PatchWebhookRequest, PatchWebhookSchema, QueuedView, WebhookListQuery, WebhookSecretView,
    WebhookView, encode_cursor, mask,
};
use super::wire::{Envelope, ErrorEnvelope};
use crate::clock::rfc3339;
use crate::keys::{self, SealingKey};
use crate::store::webhooks::parse_message_id;
use crate::store::{WebhookChange, WebhookRecord};
use crate::webhooks::{ROTATION_OVERLAP_MS, target};

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// Subscriptions one company may hold.
pub const WEBHOOKS_PER_COMPANY_MAX: usize = 20;

/// The server's secret key, or why webhooks and member links cannot be made on this server.
pub fn key(state: &AppState) -> Result<&SealingKey, ApiError> {
    state
        .settings
        .webhooks
        .key
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::KeyNotConfigured, "webhooks and member links need COINS_SECRET_KEY set on the server"))
}

fn not_found(raw: &str) -> ApiError {
    ApiError::new(ErrorCode::WebhookNotFound, format!("webhook {raw} not found"))
}

/// The subscription the path names, if the caller may see it.
async fn visible(state: &AppState, auth: &Auth, raw: &str) -> Result<WebhookRecord, ApiError> {
    let well_formed = raw.len() <= 64 && raw.starts_with("wh_") && raw[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(not_found(raw));
    }
    let webhook = state.store.get_webhook(raw).await?.ok_or_else(|| not_found(raw))?;
    if !auth.0.can_act_for(&webhook.company) {
        return Err(not_found(raw));
    }
    Ok(webhook)
}

/// Checks a URL against the target settings, its resolved addresses included.
async fn allowed_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let policy = state.settings.webhooks.targets;
    let parsed = target::parse(url, policy).map_err(ApiError::validation)?;
    target::check_resolved(&parsed, policy).await.map_err(ApiError::validation)?;
    Ok(url.to_owned())
}

fn with_secret(webhook: &WebhookRecord, secret: &secrecy::SecretString) -> WebhookSecretView {
    use secrecy::ExposeSecret;
    WebhookSecretView {
        webhook: WebhookView::from(webhook),
        secret: secret.expose_secret().to_owned(),
        previous_secret_expires_at: webhook.previous_until.filter(|_| webhook.previous_sealed.is_some()).map(rfc3339),
    }
}

/// Registers an endpoint for a company's coin events; answers its signing secret, once.
#[utoipa::path(post, path = "/api/v0/coins/webhooks", tag = "webhooks", operation_id = "createWebhook",
    request_body(content = CreateWebhookRequest, example = json!({"companyId":"SHOP","url":"https://hooks.example.com/coins","events":["coins.allocated","coins.redeemed"],"description":"CRM"})),
    responses(
        (status = 200, description = "The subscription, with its secret (shown only now)", body = Envelope<WebhookSecretView>),
        (status = 400, description = "VALIDATION_FAILED: a field, or a URL that is not https:// or resolves to a private address", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
        (status = 409, description = "LIMIT_REACHED: the company already has 20 subscriptions", body = ErrorEnvelope),
        (status = 503, description = "KEY_NOT_CONFIGURED: the server has no COINS_SECRET_KEY", body = ErrorEnvelope),
    ))]
pub async fn create(State(state): State<AppState>, auth: Auth, Json(body): Json<CreateWebhookRequest>) -> Answer<WebhookSecretView> {
    auth.require_company(&body.company_id)?;
    let key = key(&state)?;
    let url = allowed_url(&state, &body.url.0).await?;
    if state.store.list_webhooks(Some(&body.company_id)).await?.len() >= WEBHOOKS_PER_COMPANY_MAX {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!("companyId {} already has {WEBHOOKS_PER_COMPANY_MAX} webhooks; delete one first", body.company_id),
        ));
    }
    let now = state.clock.now_ms();
    let webhook_id = format!("wh_{}", hex::encode(crate::crypto::random_bytes::<12>()));
    let secret = keys::new_secret();
    let webhook = WebhookRecord {
        secret_sealed: key.seal(&webhook_id, &secret),
        webhook_id,
        company: body.company_id,
        url,
        event_mask: mask(&body.events),
        description: body.description.0.map(|d| d.0),
        enabled: true,
        disabled_reason: None,
        previous_sealed: None,
        previous_until: None,
        failing_since: None,
        created_by: auth.0.client_id.clone(),
        created_at: now,
        updated_at: now,
    };
    state.store.create_webhook(webhook.clone()).await?;
    Ok(JsonResponse(Envelope::ok(with_secret(&webhook, &secret))))
}

/// Lists the subscriptions the caller may see, oldest first.
#[utoipa::path(get, path = "/api/v0/coins/webhooks", tag = "webhooks", operation_id = "listWebhooks", params(WebhookListQuery),
    responses(
        (status = 200, description = "The subscriptions, oldest first (never their secrets)", body = Envelope<Vec<WebhookView>>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn list(State(state): State<AppState>, auth: Auth, Query(q): Query<WebhookListQuery>) -> Answer<Vec<WebhookView>> {
    if let Some(c) = &q.company_id {
        auth.require_company(c)?;
    }
    let all = state.store.list_webhooks(q.company_id.as_ref()).await?;
    Ok(JsonResponse(Envelope::ok(all.iter().filter(|w| auth.0.can_act_for(&w.company)).map(WebhookView::from).collect())))
}

/// Reads a subscription.
#[utoipa::path(get, path = "/api/v0/coins/webhooks/{webhookId}", tag = "webhooks", operation_id = "getWebhook",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12")),
    responses(
        (status = 200, description = "The subscription", body = Envelope<WebhookView>),
        (status = 404, description = "WEBHOOK_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
    ))]
pub async fn get(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<WebhookView> {
    let webhook = visible(&state, &auth, &raw).await?;
    Ok(JsonResponse(Envelope::ok(WebhookView::from(&webhook))))
}

/// Changes a subscription's URL, events, description or `enabled`. Enabling a disabled one
/// resumes its backlog.
#[utoipa::path(patch, path = "/api/v0/coins/webhooks/{webhookId}", tag = "webhooks", operation_id = "changeWebhook",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12")),
    request_body(content = PatchWebhookSchema, example = json!({"enabled": true})),
    responses(
        (status = 200, description = "The subscription as changed", body = Envelope<WebhookView>),
        (status = 400, description = "VALIDATION_FAILED", body = ErrorEnvelope),
        (status = 404, description = "WEBHOOK_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
    ))]
pub async fn patch(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam, Json(change): Json<PatchWebhookRequest>) -> Answer<WebhookView> {
    visible(&state, &auth, &raw).await?;
    let url = match &change.url {
        Some(u) => Some(allowed_url(&state, &u.0).await?),
        None => None,
    };
    let change =
        WebhookChange { url, event_mask: change.events.as_ref().map(mask), description: change.description.map(|d| d.0.map(|d| d.0)), enabled: change.enabled };
    let webhook = state.store.update_webhook(&raw, change, state.clock.now_ms()).await?.ok_or_else(|| not_found(&raw))?;
    Ok(JsonResponse(Envelope::ok(WebhookView::from(&webhook))))
}

/// Deletes a subscription, its queued events and its delivery log.
#[utoipa::path(delete, path = "/api/v0/coins/webhooks/{webhookId}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12")),
    responses(
        (status = 200, description = "Deleted: the webhook id", body = Envelope<String>),
        (status = 404, description = "WEBHOOK_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
    ))]
pub async fn delete(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<String> {
    visible(&state, &auth, &raw).await?;
    if !state.store.delete_webhook(&raw).await? {
        return Err(not_found(&raw));
    }
    Ok(JsonResponse(Envelope::ok(raw)))
}

/// Replaces the signing secret; the previous one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/api/v0/coins/webhooks/{webhookId}/rotate-secret", tag = "webhooks", operation_id = "rotateWebhookSecret",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12")),
    responses(
        (status = 200, description = "The subscription with its new secret (shown only now)", body = Envelope<WebhookSecretView>),
        (status = 404, description = "WEBHOOK_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
        (status = 503, description = "KEY_NOT_CONFIGURED: the server has no COINS_SECRET_KEY", body = ErrorEnvelope),
    ))]
pub async fn rotate_secret(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<WebhookSecretView> {
    let key = key(&state)?;
    visible(&state, &auth, &raw).await?;
    let now = state.clock.now_ms();
    let secret = keys::new_secret();
    if !state.store.rotate_webhook_secret(&raw, key.seal(&raw, &secret), now + ROTATION_OVERLAP_MS, now).await? {
        return Err(not_found(&raw));
    }
    let webhook = state.store.get_webhook(&raw).await?.ok_or_else(|| not_found(&raw))?;
    Ok(JsonResponse(Envelope::ok(with_secret(&webhook, &secret))))
}

/// Queues a `webhook.test` event for this endpoint.
#[utoipa::path(post, path = "/api/v0/coins/webhooks/{webhookId}/test", tag = "webhooks", operation_id = "testWebhook",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12")),
    responses(
        (status = 200, description = "The event queued; its attempts appear in the delivery log", body = Envelope<QueuedView>),
        (status = 404, description = "WEBHOOK_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
    ))]
pub async fn test(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam) -> Answer<QueuedView> {
    let webhook = visible(&state, &auth, &raw).await?;
    let now = state.clock.now_ms();
    let seq = state.store.enqueue_test_message(&raw, &webhook.company, now).await?;
    Ok(JsonResponse(Envelope::ok(QueuedView { message_id: crate::store::webhooks::message_id(seq), next_attempt_at: rfc3339(now) })))
}

/// The delivery log: every attempt, newest first, keyset-paginated.
#[utoipa::path(get, path = "/api/v0/coins/webhooks/{webhookId}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12"), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of attempts, newest first", body = Envelope<AttemptPageView>),
        (status = 404, description = "WEBHOOK_NOT_FOUND: none, or another company's", body = ErrorEnvelope),
    ))]
pub async fn deliveries(State(state): State<AppState>, auth: Auth, PathParam(raw): PathParam, Query(q): Query<DeliveriesQuery>) -> Answer<AttemptPageView> {
    visible(&state, &auth, &raw).await?;
    let mut attempts = state.store.webhook_attempts(&raw, q.before_attempt_id, q.limit + 1).await?;
    let more = attempts.len() as i64 > q.limit;
    attempts.truncate(q.limit as usize);
    let next_cursor = if more { attempts.last().map(|a| encode_cursor(a.attempt_id)) } else { None };
    Ok(JsonResponse(Envelope::ok(AttemptPageView { attempts: attempts.into_iter().map(Into::into).collect(), next_cursor })))
}

/// Sends an event to this endpoint again now, whatever became of it (delivered, failed, waiting).
#[utoipa::path(post, path = "/api/v0/coins/webhooks/{webhookId}/deliveries/{messageId}/retry", tag = "webhooks", operation_id = "retryWebhookDelivery",
    params(("webhookId" = String, Path, example = "wh_5f2b0c9a1e7d4b3a8c6f0e12"), ("messageId" = String, Path, example = "msg_1042")),
    responses(
        (status = 200, description = "The event queued again", body = Envelope<QueuedView>),
        (status = 404, description = "WEBHOOK_NOT_FOUND, or MESSAGE_NOT_FOUND: no such event for this endpoint", body = ErrorEnvelope),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    auth: Auth,
    axum::extract::Path((raw, message)): axum::extract::Path<(String, String)>,
) -> Answer<QueuedView> {
    visible(&state, &auth, &raw).await?;
    let missing = || ApiError::new(ErrorCode::MessageNotFound, format!("event {message} not found for webhook {raw}"));
    let target = parse_message_id(&message).ok_or_else(missing)?;
    let now = state.clock.now_ms();
    if !state.store.retry_message(&raw, &target, now).await? {
        return Err(missing());
    }
    Ok(JsonResponse(Envelope::ok(QueuedView { message_id: message.clone(), next_attempt_at: rfc3339(now) })))
}
