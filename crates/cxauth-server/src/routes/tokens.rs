//! API tokens of the caller: create, list, delete.

use super::{NO_STORE, text};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Audit, Caller};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cxauth_core::service::AuthError;

/// 4. `POST …/admin/token`.
#[utoipa::path(post, path = "/admin/token", tag = "admin", summary = "Create an API token", description = "Mints a permanent API token for the caller, answered as plain text.", security(("bearer" = []), ("X-Auth-Token" = [])),  responses((status = 200, description = "The API token, as plain text"), (status = 401, description = "Missing or bad credential"), (status = 409, description = "The caller already holds the most API tokens a user may have (`--api-token-cap`)")))]
pub async fn create_token(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    Ok(text(state.auth.create_api_token(&who, &ctx).await?))
}

/// 5. `GET …/admin/token`.
#[utoipa::path(get, path = "/admin/token", tag = "admin", summary = "List the caller's API tokens", description = "The API tokens the caller holds, as a JSON array of strings.", security(("bearer" = []), ("X-Auth-Token" = [])), responses((status = 200, description = "The caller's API tokens"), (status = 401, description = "Missing or bad credential")))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    let tokens = state.auth.list_api_tokens(&who).await?;
    Ok((StatusCode::OK, NO_STORE, Json(tokens)).into_response())
}

/// 6. `DELETE …/admin/token/{apiToken}`; the path arrives percent-decoded (`%3A` → `:`).
#[utoipa::path(delete, path = "/admin/token/{token}", tag = "admin", summary = "Delete an API token", description = "Deletes an API token of the caller or of one of its descendants.", security(("bearer" = []), ("X-Auth-Token" = [])), params(("token" = String, Path, description = "The API token")), responses((status = 200, description = "`true`"), (status = 401, description = "Missing or bad credential"), (status = 404, description = "No such token of the caller or its descendants")))]
pub async fn delete_token(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    Caller(who): Caller,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(token) = token.map_err(|_| AuthError::NotFound)?;
    state.auth.delete_api_token(&who, &token, &ctx).await?;
    Ok(text("true"))
}
