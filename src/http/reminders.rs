//! Expiry reminders: a company's lead times (the sweeper sends the `coins.expiring` events).

use axum::Json as JsonResponse;
use axum::extract::State;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::{Json, Query};
use super::wire::reminders::{ReminderDays, ReminderQuery, ReminderSettingsRequest, ReminderSettingsView};
#[allow(unused_imports)]
use super::wire::{Envelope, ErrorEnvelope};
#[allow(unused_imports)]
use serde_json::json;

type Answer<T> = Result<JsonResponse<Envelope<T>>, ApiError>;

/// Sets when members hear that their coins expire soon: up to three lead times in days. Each
/// member with unspent coins expiring at an instant gets a `coins.expiring` event once per
/// lead time (only the shortest one due when several are); `[]` turns reminders off.
#[utoipa::path(put, path = "/api/v0/coins/reminders", tag = "webhooks", operation_id = "setExpiryReminders",
    request_body(content = ReminderSettingsRequest, example = json!({"companyId":"SHOP","expiryReminderDays":[30,7,1]})),
    responses(
        (status = 200, description = "The lead times now in force, longest first", body = Envelope<ReminderSettingsView>,
            example = json!({"payload":{"companyId":"SHOP","expiryReminderDays":[30,7,1]},"response_code":0,"response_message":"Success"})),
        (status = 400, description = "VALIDATION_FAILED: more than three values, a repeat, or a value outside 1–365", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn put(State(state): State<AppState>, auth: Auth, Json(body): Json<ReminderSettingsRequest>) -> Answer<ReminderSettingsView> {
    auth.require_company(&body.company_id)?;
    let leads = body.expiry_reminder_days.0;
    state.store.set_reminder_days(&body.company_id, &leads, &auth.0.client_id, state.clock.now_ms()).await?;
    Ok(JsonResponse(Envelope::ok(ReminderSettingsView { company_id: body.company_id, expiry_reminder_days: ReminderDays(leads) })))
}

/// The company's expiry-reminder lead times (`[]` when off or never set).
#[utoipa::path(get, path = "/api/v0/coins/reminders", tag = "webhooks", operation_id = "getExpiryReminders", params(ReminderQuery),
    responses(
        (status = 200, description = "The lead times in force, longest first", body = Envelope<ReminderSettingsView>),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn get(State(state): State<AppState>, auth: Auth, Query(q): Query<ReminderQuery>) -> Answer<ReminderSettingsView> {
    auth.require_company(&q.company_id)?;
    let leads = state.store.reminder_days(&q.company_id).await?;
    Ok(JsonResponse(Envelope::ok(ReminderSettingsView { company_id: q.company_id, expiry_reminder_days: ReminderDays(leads) })))
}
