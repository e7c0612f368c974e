//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers). No auth.

use axum::Json;
use axum::extract::State;

use super::error::ApiError;
use super::{AppState, Envelope};

pub async fn healthz() -> Json<Envelope<&'static str>> {
    Envelope::ok("ok")
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Envelope<&'static str>>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Envelope::ok("ready")),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::unavailable(1))
        }
    }
}
