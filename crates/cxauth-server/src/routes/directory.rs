//! The caller's accounts and users.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::params::Params;
use axum::Json;
use axum::extract::{RawQuery, State};
use cxauth_core::service::AuthError;

/// 7. `GET …/admin/accounts`.
#[utoipa::path(get, path = "/admin/accounts", tag = "admin", summary = "List the caller's accounts", description = "The sub-accounts the caller may use.", security(("bearer" = []), ("X-Auth-Token" = [])), responses((status = 200, description = "The sub-accounts the caller may use"), (status = 401, description = "Missing or bad credential")))]
pub async fn accounts(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<cxauth_proto::Account>>, ApiError> {
    Ok(Json(state.auth.accounts(&who).await?))
}

/// 8. `GET …/admin/users?flatten=&activeOnly=`.
#[utoipa::path(get, path = "/admin/users", tag = "admin", summary = "List the caller and its users", description = "The caller and its descendants, as a tree or (`flatten=true`) a flat list.", security(("bearer" = []), ("X-Auth-Token" = [])), params(("flatten" = Option<bool>, Query, description = "A flat list instead of a tree"), ("activeOnly" = Option<bool>, Query, description = "Only enabled users")), responses((status = 200, description = "The caller and its descendants"), (status = 401, description = "Missing or bad credential"), (status = 403, description = "The caller may not list users")))]
pub async fn users(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<cxauth_proto::User>>, ApiError> {
    let p =
        Params::parse(query.as_deref(), b"").map_err(|e| AuthError::BadRequest(e.to_string()))?;
    let flatten = p
        .flag("flatten")
        .map_err(AuthError::BadRequest)?
        .unwrap_or(false);
    let active_only = p
        .flag("activeOnly")
        .map_err(AuthError::BadRequest)?
        .unwrap_or(false);
    Ok(Json(state.auth.users(&who, flatten, active_only).await?))
}
