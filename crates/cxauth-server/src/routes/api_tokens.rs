//! cxauth's own API-token endpoints, under `/cxauth/v1/api-tokens`: the same tokens as the RingCX
//! `…/admin/token` endpoints, with a name, an expiry and the last use, named by id and shown by
//! a hint. The RingCX endpoints keep their exact answers; these are additions beside them, under
//! a prefix of their own so nothing RingCX may add later can collide.
//!
//! Bodies are JSON (an empty body counts as `{}`); unknown fields, wrong types and out-of-range
//! values are a 400 naming the field. Authentication, throttling and error answers are those of
//! the admin endpoints ([`Caller`], [`ApiError`]); every answer is `Cache-Control: no-store`.

use super::NO_STORE;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Audit, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cxauth_core::clock::duration_ms;
use cxauth_core::service::{AuthError, MAX_API_TOKEN_LIFETIME, MIN_API_TOKEN_LIFETIME};
use serde_json::{Map, Value};

/// The JSON object of a request body; empty means `{}`.
fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            AuthError::BadRequest("the request body could not be read".into()).into()
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(_) => Err(bad("the body is not valid JSON")),
    }
}

fn bad(msg: &str) -> ApiError {
    AuthError::BadRequest(msg.to_owned()).into()
}

/// Refuses fields other than `allowed`, naming the first stranger.
fn only(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => {
            let shown: String = k.chars().take(40).filter(|c| !c.is_control()).collect();
            Err(AuthError::BadRequest(format!(
                "unknown field {shown:?} (accepted: {})",
                allowed.join(", ")
            ))
            .into())
        }
        None => Ok(()),
    }
}

/// `name`: absent or `null` is `None`; otherwise a string (checked by the service).
fn name_of(m: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    match m.get("name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad("name must be a string or null")),
    }
}

/// A path id: a positive integer, or the same 404 as an id of nobody's token.
fn id_of(id: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let Path(id) = id.map_err(|_| AuthError::NotFound)?;
    match id.parse::<i64>() {
        // Canonical digits only: `+5` and `05` name no token.
        Ok(n) if n > 0 && n.to_string() == id => Ok(n),
        _ => Err(AuthError::NotFound.into()),
    }
}

/// `GET /cxauth/v1/api-tokens`.
#[utoipa::path(get, path = "/api-tokens", tag = "cxauth", summary = "List the caller's API tokens with their details", description = "The caller's unexpired API tokens as `[{id, name, createdAt, expiresAt, lastUsedAt, hint}]` (times RFC 3339 or null; `hint` is `…` and the token's last four characters, never the token). Most recently used first, never used last, then newest first. `lastUsedAt` is written about once a minute, so it may lag by up to about two minutes.", security(("bearer" = []), ("X-Auth-Token" = [])), responses((status = 200, description = "The caller's API tokens"), (status = 401, description = "Missing or bad credential")))]
pub async fn api_tokens_list(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    let tokens: Vec<_> = state
        .auth
        .api_token_details(&who)
        .await?
        .iter()
        .map(|t| t.to_wire())
        .collect();
    Ok((StatusCode::OK, NO_STORE, Json(tokens)).into_response())
}

/// `POST /cxauth/v1/api-tokens`.
#[utoipa::path(post, path = "/api-tokens", tag = "cxauth", summary = "Create an API token with a name and an expiry", description = "JSON body `{\"name\"?: string|null, \"expiresIn\"?: seconds|null}` (an empty body is `{}`). `name`: 1 to 100 characters once trimmed, no control or invisible characters. `expiresIn`: whole seconds from 60 to 63072000 (two years); absent or null never expires. Answers 201 with `{token, id, name, createdAt, expiresAt, lastUsedAt, hint}`: the only time the token is shown.", security(("bearer" = []), ("X-Auth-Token" = [])), responses((status = 201, description = "The new token and its details"), (status = 400, description = "A field is malformed or out of range"), (status = 401, description = "Missing or bad credential"), (status = 409, description = "The caller already holds the most API tokens a user may have (`--api-token-cap`)")))]
pub async fn api_tokens_create(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    Caller(who): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let m = object(body)?;
    only(&m, &["name", "expiresIn"])?;
    let name = name_of(&m)?;
    let min = MIN_API_TOKEN_LIFETIME.as_secs();
    let max = MAX_API_TOKEN_LIFETIME.as_secs();
    let expires_at = match m.get("expiresIn") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(secs) if (min..=max).contains(&secs) => {
                let ms = duration_ms(std::time::Duration::from_secs(secs));
                Some(state.clock.now_ms().saturating_add(ms))
            }
            _ => {
                return Err(AuthError::BadRequest(format!(
                    "expiresIn must be whole seconds from {min} to {max}"
                ))
                .into());
            }
        },
    };
    let created = state
        .auth
        .create_api_token_with(&who, name, expires_at, &ctx)
        .await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(created.to_wire())).into_response())
}

/// `PATCH /cxauth/v1/api-tokens/{id}`.
#[utoipa::path(patch, path = "/api-tokens/{id}", tag = "cxauth", summary = "Rename an API token", description = "JSON body `{\"name\": string|null}` (null clears the name; the field is required). The caller's own tokens and those of its descendants; any other id is 404. Answers the token's details.", security(("bearer" = []), ("X-Auth-Token" = [])), params(("id" = i64, Path, description = "The token's id")), responses((status = 200, description = "The renamed token's details"), (status = 400, description = "name is missing or malformed"), (status = 401, description = "Missing or bad credential"), (status = 404, description = "No such token of the caller or its descendants")))]
pub async fn api_tokens_rename(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    Caller(who): Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let m = object(body)?;
    only(&m, &["name"])?;
    if !m.contains_key("name") {
        return Err(bad("name is required (null clears it)"));
    }
    let name = name_of(&m)?;
    let info = state.auth.rename_api_token(&who, id, name, &ctx).await?;
    Ok((StatusCode::OK, NO_STORE, Json(info.to_wire())).into_response())
}

/// `DELETE /cxauth/v1/api-tokens/{id}`.
#[utoipa::path(delete, path = "/api-tokens/{id}", tag = "cxauth", summary = "Delete an API token by id", description = "Deletes a token of the caller or of one of its descendants, like `DELETE …/admin/token/{token}`; any other id is 404.", security(("bearer" = []), ("X-Auth-Token" = [])), params(("id" = i64, Path, description = "The token's id")), responses((status = 204, description = "Deleted"), (status = 401, description = "Missing or bad credential"), (status = 404, description = "No such token of the caller or its descendants")))]
pub async fn api_tokens_delete(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    Caller(who): Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    state.auth.delete_api_token_by_id(&who, id, &ctx).await?;
    Ok((StatusCode::NO_CONTENT, NO_STORE).into_response())
}
