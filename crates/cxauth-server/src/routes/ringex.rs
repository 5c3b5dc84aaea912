//! RingEX: the token exchange, and the built-in emulator (its OAuth token, revoke and extension
//! endpoints, served only with `--ringex-emulator`).

use super::{NO_STORE, session_response};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Audit, ClientAddr, credential, params, required};
use crate::params::Params;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxauth_core::service::{AuthError, PresentedToken};
use secrecy::SecretString;

/// `POST /api/auth/login/rc/accesstoken`: the RingEX token exchange. `rcAccessToken` and
/// `rcTokenType` come in a form body or the query string; `includeRefresh=true` asks for the
/// refresh token. Ignores `Authorization` and `X-Auth-Token` (the SDKs send `Basic basic`).
#[utoipa::path(post, path = "/api/auth/login/rc/accesstoken", tag = "auth", summary = "Exchange a RingEX access token for a session", description = "RingEX token exchange: `rcAccessToken`, `rcTokenType` (Bearer) and optional `includeRefresh`. Needs a RingEX server (`--ringex-server URL`) or the built-in emulator.", params(("rcAccessToken" = String, Query), ("rcTokenType" = Option<String>, Query, description = "Bearer"), ("includeRefresh" = Option<bool>, Query)), responses((status = 200, description = "A session (`ssoLogin: true`)"), (status = 401, description = "RingEX refused the token"), (status = 501, description = "No RingEX server is configured (`--ringex-server URL`) and the emulator is off: retrying cannot help"), (status = 503, description = "The RingEX server could not be reached, with Retry-After")))]
pub async fn ringex_exchange(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut p = params(query, body)?;
    let include_refresh = p
        .flag("includeRefresh")
        .map_err(AuthError::BadRequest)?
        .unwrap_or(false);
    let token = required(&mut p, "rcAccessToken")?;
    // Only bearer tokens exist in RingEX; a missing rcTokenType is read as Bearer.
    if let Some(kind) = p.take("rcTokenType")
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(AuthError::BadRequest("rcTokenType must be Bearer".into()).into());
    }
    // Nobody to ask: a lasting condition of this server, not an outage (see the error).
    if !state.auth.ringex_configured() {
        return Err(ApiError::RingexNotConfigured);
    }
    Ok(session_response(
        state
            .auth
            .exchange_ringex_token(&token, include_refresh, &ctx)
            .await?,
    ))
}

/// The client id and secret of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, SecretString)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), SecretString::from(secret.to_owned())))
}

/// RingEX emulator: `POST /restapi/oauth/token` with HTTP Basic client authentication and the
/// `password`, JWT-bearer or `refresh_token` grant. Errors are OAuth's JSON (`error`,
/// `error_description`).
#[utoipa::path(post, path = "/restapi/oauth/token", tag = "ringex-emulator", summary = "Emulator: issue a RingEX access token", description = "The built-in RingEX emulator's OAuth token endpoint (only with `--ringex-emulator`): the `password`, JWT-bearer or `refresh_token` grant, with the app's client id and secret as HTTP Basic. A refresh rotates the refresh token: the one presented is refused from then on.", security(("ringex-client" = [])), responses((status = 200, description = "An OAuth token response"), (status = 400, description = "OAuth error"), (status = 401, description = "Bad client credentials")))]
pub async fn ringex_emulator_token(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use cxauth_core::emulator::{Grant, OAuthError};
    let (client_id, client_secret) =
        basic_credentials(&headers).ok_or(ApiError::from(OAuthError::InvalidClient))?;
    let mut p = oauth_params(query, body)?;
    let missing =
        |name: &str| ApiError::from(OAuthError::InvalidRequest(format!("{name} is required")));
    let grant_type = p
        .take("grant_type")
        .filter(|g| !g.is_empty())
        .ok_or_else(|| missing("grant_type"))?;
    let emulator = state.auth.emulator();
    emulator
        .check_client(&client_id, client_secret, addr)
        .await?;
    let username;
    let extension;
    let assertion;
    let refresh_token;
    let grant = match grant_type.as_str() {
        "password" => {
            username = p
                .take("username")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing("username"))?;
            extension = p.take("extension").filter(|v| !v.is_empty());
            let password = p
                .take("password")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing("password"))?;
            Grant::Password {
                username: &username,
                extension: extension.as_deref(),
                password: SecretString::from(password),
                client: addr,
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            assertion = p
                .take("assertion")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing("assertion"))?;
            Grant::Jwt {
                assertion: &assertion,
            }
        }
        "refresh_token" => {
            refresh_token = p
                .take("refresh_token")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing("refresh_token"))?;
            Grant::Refresh {
                refresh_token: &refresh_token,
                client: addr,
            }
        }
        _ => return Err(OAuthError::UnsupportedGrantType.into()),
    };
    let token = emulator.grant(&client_id, grant).await?;
    Ok((StatusCode::OK, NO_STORE, Json(token)).into_response())
}

/// RingEX emulator: `POST /restapi/oauth/revoke` (RFC 7009), a client's logout: HTTP Basic
/// client authentication and `token`, an access token or a refresh token of the emulator. Ends
/// the whole login the token belongs to; answers 200 with an empty body whether or not the
/// token was known (RFC 7009 §2.2), so it tells a client nothing about tokens not its own.
#[utoipa::path(post, path = "/restapi/oauth/revoke", tag = "ringex-emulator", summary = "Emulator: revoke a RingEX token (logout)", description = "The built-in RingEX emulator's revoke endpoint (only with `--ringex-emulator`): `token` is an access token or a refresh token the app obtained; the login it belongs to ends (all its access tokens and its refresh token). 200 with an empty body whether or not the token was known.", security(("ringex-client" = [])), params(("token" = String, Query, description = "An access token or a refresh token (also in a form body)")), responses((status = 200, description = "Done (or nothing to do): an empty body"), (status = 400, description = "OAuth error: `token` missing"), (status = 401, description = "Bad client credentials")))]
pub async fn ringex_emulator_revoke(
    State(state): State<AppState>,
    Audit(ctx): Audit,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use cxauth_core::emulator::OAuthError;
    // The same order of checks as the token endpoint: the Basic header, the parameter, then
    // the client's secret.
    let (client_id, client_secret) =
        basic_credentials(&headers).ok_or(ApiError::from(OAuthError::InvalidClient))?;
    let mut p = oauth_params(query, body)?;
    let token = p
        .take("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::from(OAuthError::InvalidRequest("token is required".into())))?;
    let emulator = state.auth.emulator();
    emulator
        .check_client(&client_id, client_secret, ctx.client())
        .await?;
    emulator.revoke(&client_id, &token, &ctx).await?;
    Ok((StatusCode::OK, NO_STORE).into_response())
}

/// The parameters of an emulator OAuth request (form body, query or JSON), a body that cannot
/// be read being an OAuth `invalid_request` (too large stays 413).
fn oauth_params(
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Params, ApiError> {
    use cxauth_core::emulator::OAuthError;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::from(OAuthError::InvalidRequest(
                "the request body could not be read".into(),
            ))
        }
    })?;
    Params::parse(query.as_deref(), &body)
        .map_err(|e| ApiError::from(OAuthError::InvalidRequest(e.to_string())))
}

/// RingEX emulator: `GET /restapi/v1.0/account/~/extension/~`, the extension the bearer token
/// belongs to (RingEX's field names; `id` is the user's `rc_user_id`, `account.id` its main
/// account's RingEX link, or the main account's id when unlinked).
#[utoipa::path(get, path = "/restapi/v1.0/account/~/extension/~", tag = "ringex-emulator", summary = "Emulator: the extension of a RingEX token", description = "The emulator's current-extension endpoint (only with `--ringex-emulator`), with a RingEX access token as bearer.", security(("ringex-bearer" = [])), responses((status = 200, description = "The extension of the token's user"), (status = 401, description = "Bad token")))]
pub async fn ringex_emulator_extension(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use cxauth_core::emulator::OAuthError;
    let token = match credential(&headers) {
        Ok(PresentedToken::Bearer(t)) => t,
        _ => return Err(OAuthError::InvalidToken.into()),
    };
    let emulator = state.auth.emulator();
    let user = emulator.token_owner(token).await?;
    let account_id = emulator.ringex_account_id(&user).await?;
    let id = user.rc_user_id.unwrap_or_default();
    let body = serde_json::json!({
        "id": id,
        "uri": format!("{}/{id}", "/restapi/v1.0/account/~/extension"),
        "extensionNumber": id.to_string(),
        "name": format!("{} {}", user.first_name, user.last_name).trim(),
        "contact": {"firstName": user.first_name, "lastName": user.last_name},
        "type": "User",
        "status": if user.enabled { "Enabled" } else { "Disabled" },
        "account": {"id": account_id},
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}
