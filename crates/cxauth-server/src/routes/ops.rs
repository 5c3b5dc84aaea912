//! Operations: liveness and readiness, and the answers to unknown paths and wrong methods.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::State;

/// `GET /healthz`: answers once the server accepts requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness", description = "Answers `ok` once the server accepts requests.", responses((status = 200, description = "`ok`: the process is up")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: answers `ready` once the database is reachable and the signing keys are
/// loaded, 503 otherwise (unlike `/healthz`, which only says the process is up).
#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness", description = "Answers `ready` once the database is reachable and the signing keys are loaded, 503 otherwise.", responses((status = 200, description = "`ready`: database reachable, keys loaded"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.auth.ready().await?;
    Ok("ready")
}

/// Unknown paths.
pub async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// Known paths, wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}
