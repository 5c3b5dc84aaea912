//! Sessions: direct login, refresh, logout, and the public keys that verify access tokens.

use super::{session_response, text};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Audit, params, required};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cxauth_core::service::{AuthError, LoginInput};
use secrecy::SecretString;

/// 1. `POST /api/auth/login/admin`. Ignores `Authorization` and `X-Auth-Token` by design.
#[utoipa::path(post, path = "/api/auth/login/admin", tag = "auth", summary = "Log in with a username and password", description = "Direct login: `username`, `password` and `platformId` in the query string, a form or a JSON body. The answer's `accessToken` is the bearer token of the admin endpoints (use **Authorize**).", params(("username" = String, Query), ("password" = String, Query), ("platformId" = String, Query)), responses((status = 200, description = "A session: access token, refresh token, account details"), (status = 401, description = "Wrong credentials"), (status = 429, description = "Throttled, with Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut p = params(query, body)?;
    let username = required(&mut p, "username")?;
    let password = SecretString::from(required(&mut p, "password")?);
    let platform_id = required(&mut p, "platformId")?;
    let session = state
        .auth
        .login(
            LoginInput {
                username,
                password,
                platform_id,
            },
            &ctx,
        )
        .await?;
    Ok(session_response(session))
}

/// 2. `POST /api/auth/token/refresh`. `rcTokenType` may come along and is ignored.
#[utoipa::path(post, path = "/api/auth/token/refresh", tag = "auth", summary = "Refresh a session", description = "Trades `refresh_token` for a new access token and refresh token; the old refresh token stops working.", params(("refresh_token" = String, Query), ("rcTokenType" = Option<String>, Query, description = "Accepted and ignored")), responses((status = 200, description = "The new session tokens"), (status = 401, description = "Unknown, expired or reused refresh token")))]
pub async fn refresh(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut p = params(query, body)?;
    let token = required(&mut p, "refresh_token")?;
    Ok(session_response(state.auth.refresh(&token, &ctx).await?))
}

/// 3. `DELETE /api/auth/logout/{refreshToken}`.
#[utoipa::path(delete, path = "/api/auth/logout/{token}", tag = "auth", summary = "Log out (end a session)", description = "Ends the session of the refresh token given as the last path segment.", params(("token" = String, Path, description = "The refresh token")), responses((status = 200, description = "`true`: the session ended"), (status = 401, description = "Unknown refresh token")))]
pub async fn logout(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(token) = token.map_err(|_| AuthError::RefreshFailed)?;
    state.auth.logout(&token, &ctx).await?;
    Ok(text("true"))
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", summary = "Public keys (JWKS)", description = "The public keys that verify access tokens.", responses((status = 200, description = "The public keys that verify access tokens (JWKS)")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(state.auth.jwks()),
    )
        .into_response()
}
