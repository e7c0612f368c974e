//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers). No auth.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ApiError;
use super::wire::{Envelope, ErrorEnvelope};
use crate::store::error::chain;
/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process answers", body = Envelope<String>, example = json!({"payload":"ok","response_code":0,"response_message":"Success"}))))]
pub async fn healthz() -> Json<Envelope<&'static str>> {
    Json(Envelope::ok("ok"))
}
/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "The database answers", body = Envelope<String>, example = json!({"payload":"ready","response_code":0,"response_message":"Success"})),
        (status = 503, description = "UNAVAILABLE: the database does not answer", body = ErrorEnvelope),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Envelope<&'static str>>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Envelope::ok("ready"))),
        Err(e) => Err(ApiError::unavailable("the database does not answer", 1).with_cause(chain(&e))),
    }
}
