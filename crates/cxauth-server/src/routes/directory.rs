//! The caller's accounts, their agents, and the caller's users.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::params::Params;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use cxauth_core::service::AuthError;

/// 7. `GET …/admin/accounts`.
#[utoipa::path(get, path = "/admin/accounts", tag = "admin", summary = "List the caller's accounts", description = "The sub-accounts the caller may use.", security(("bearer" = []), ("X-Auth-Token" = [])), responses((status = 200, description = "The sub-accounts the caller may use"), (status = 401, description = "Missing or bad credential")))]
pub async fn accounts(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    // The same bytes `Json(state.auth.accounts(&who))` makes, serialised once per cache entry.
    let json = state.auth.accounts_json(&who).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        axum::body::Bytes::from_owner(json),
    )
        .into_response())
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

/// `GET …/admin/accounts/{accountId}/agents`: the agents of a sub-account the caller may use.
#[utoipa::path(get, path = "/admin/accounts/{accountId}/agents", tag = "admin", summary = "List the agents of a sub-account", description = "The agents of a sub-account the caller may use, by id, in RingCX's AgentV2 shape. A sub-account of the caller's main account that it may not use is a 403; any other account id (another main account's, or unknown) a 404.", security(("bearer" = []), ("X-Auth-Token" = [])), params(("accountId" = String, Path, description = "The sub-account id, a numeric string")), responses((status = 200, description = "The agents of the sub-account"), (status = 400, description = "accountId is not a number"), (status = 401, description = "Missing or bad credential"), (status = 403, description = "A sub-account of the caller's main account that it may not use"), (status = 404, description = "No such account visible to the caller")))]
pub async fn agents(
    State(state): State<AppState>,
    Caller(who): Caller,
    account_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<cxauth_proto::Agent>>, ApiError> {
    let account_id = account_id
        .ok()
        .and_then(|Path(id)| id.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| AuthError::BadRequest("accountId must be a numeric account id".into()))?;
    Ok(Json(state.auth.agents(&who, account_id).await?))
}
