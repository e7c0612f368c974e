//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers). No auth.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ApiError;
use super::wire::Envelope;
use crate::store::error::chain;

pub async fn healthz() -> Json<Envelope<&'static str>> {
    Json(Envelope::ok("ok"))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Envelope<&'static str>>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Envelope::ok("ready"))),
        Err(e) => Err(ApiError::unavailable("the database does not answer", 1).with_cause(chain(&e))),
    }
}
