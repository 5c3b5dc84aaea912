//! The legacy portal login, whose auth token works as `X-Auth-Token`.

use super::NO_STORE;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Audit, params, required};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxauth_core::service::{AuthError, Principal};
use secrecy::SecretString;

/// `POST /api/v1/auth/login`: the legacy portal login. `username`, `password`, optional
/// `stayLoggedIn`, from a form body, JSON or the query string.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", summary = "Legacy portal login", description = "Legacy portal login: `username`, `password` and optional `stayLoggedIn`. The answer's `authToken` works as `X-Auth-Token`.", params(("username" = String, Query), ("password" = String, Query), ("stayLoggedIn" = Option<bool>, Query)), responses((status = 200, description = "The portal login body with its auth token"), (status = 401, description = "Wrong credentials")))]
pub async fn legacy_login(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut p = params(query, body)?;
    let stay = p
        .flag("stayLoggedIn")
        .map_err(AuthError::BadRequest)?
        .unwrap_or(false);
    let username = required(&mut p, "username")?;
    let password = SecretString::from(required(&mut p, "password")?);
    let (auth_token, user) = state
        .auth
        .legacy_login(&username, password, stay, &ctx)
        .await?;
    let who = Principal {
        user: std::sync::Arc::new(user),
        session_id: None,
        via: cxauth_core::service::Via::Password,
    };
    let accounts = state.auth.accounts(&who).await?;
    let user = state.auth.me(&who).await?;
    let platform_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = cxauth_proto::LegacyLogin {
        auth_token,
        platform_host,
        user,
        accounts,
    };
    Ok((StatusCode::OK, NO_STORE, Json(body)).into_response())
}
