//! Handlers of the contract's endpoints, and the extractors they share.

use crate::AppState;
use crate::error::ApiError;
use crate::params::Params;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxauth_core::audit::AuditContext;
use cxauth_core::jwt::TokenError;
use cxauth_core::service::{AuthError, LoginInput, PresentedToken, Principal};
use secrecy::SecretString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Tokens, and responses carrying them, must never be cached (RFC 6750 §5.3).
const NO_STORE: [(header::HeaderName, HeaderValue); 2] = [
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (header::PRAGMA, HeaderValue::from_static("no-cache")),
];

fn text(body: impl Into<String>) -> Response {
    (
        StatusCode::OK,
        NO_STORE,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}

/// The client address, for throttling: the TCP peer, or, when the peer is a trusted reverse
/// proxy, the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy. Without
/// trusted proxies the header is ignored: anyone can write it, and believing it would let an
/// attacker pick a fresh address for every guess. Without connect info (router tests) all
/// callers share the unspecified address, which only makes throttling stricter.
pub struct ClientAddr(pub IpAddr);

/// See [`ClientAddr`].
pub fn client_addr(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return ip,
            // A malformed entry: stop believing the chain at the last good hop.
            Err(_) => return client,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(client_addr(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// The request's origin for the audit trail: client address (as [`ClientAddr`]) and request id.
pub struct Audit(pub AuditContext);

impl FromRequestParts<AppState> for Audit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state).await?;
        let request_id = parts
            .extensions
            .get::<crate::context::RequestId>()
            .map(|r| r.0.clone());
        Ok(Audit(AuditContext {
            request_id,
            addr: Some(addr),
        }))
    }
}

/// The authenticated caller of an admin endpoint.
pub struct Caller(pub Principal);

/// Reads the credential: `Authorization: Bearer` first, then `X-Auth-Token`. Another
/// `Authorization` scheme (the Python SDK sends `Basic basic`) counts as no bearer token.
pub fn credential(headers: &HeaderMap) -> Result<PresentedToken<'_>, TokenError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| TokenError::Invalid)?.trim();
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = token.trim();
            return if token.is_empty() {
                Err(TokenError::Missing)
            } else {
                Ok(PresentedToken::Bearer(token))
            };
        }
    }
    if let Some(v) = headers.get("x-auth-token") {
        let token = v.to_str().map_err(|_| TokenError::Invalid)?.trim();
        return if token.is_empty() {
            Err(TokenError::Missing)
        } else {
            Ok(PresentedToken::XAuthToken(token))
        };
    }
    Ok(PresentedToken::None)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cred = credential(&parts.headers).map_err(AuthError::from)?;
        Ok(Caller(state.auth.authenticate(cred).await?))
    }
}

fn params(query: Option<String>, body: Result<Bytes, BytesRejection>) -> Result<Params, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            AuthError::BadRequest("the request body could not be read".into()).into()
        }
    })?;
    Params::parse(query.as_deref(), &body).map_err(|e| AuthError::BadRequest(e.to_string()).into())
}

fn required(p: &mut Params, name: &str) -> Result<String, ApiError> {
    match p.take(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(AuthError::BadRequest(format!("{name} is required")).into()),
    }
}

fn session_response(s: cxauth_proto::Session) -> Response {
    (StatusCode::OK, NO_STORE, Json(s)).into_response()
}

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
        user,
        session_id: None,
        via: cxauth_core::service::Via::Password,
    };
    let accounts = state.auth.accounts(&who).await?;
    let platform_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = cxauth_proto::LegacyLogin {
        auth_token,
        platform_host,
        user: cxauth_core::service::user_to_wire(&who.user),
        accounts,
    };
    Ok((StatusCode::OK, NO_STORE, Json(body)).into_response())
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
/// `password` or JWT-bearer grant. Errors are OAuth's JSON (`error`, `error_description`).
#[utoipa::path(post, path = "/restapi/oauth/token", tag = "ringex-emulator", summary = "Emulator: issue a RingEX access token", description = "The built-in RingEX emulator's OAuth token endpoint (only with `--ringex-emulator`): the `password` or JWT-bearer grant, with the app's client id and secret as HTTP Basic.", security(("ringex-client" = [])), responses((status = 200, description = "An OAuth token response"), (status = 400, description = "OAuth error"), (status = 401, description = "Bad client credentials")))]
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
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::from(OAuthError::InvalidRequest(
                "the request body could not be read".into(),
            ))
        }
    })?;
    let mut p = Params::parse(query.as_deref(), &body)
        .map_err(|e| ApiError::from(OAuthError::InvalidRequest(e.to_string())))?;
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
        _ => return Err(OAuthError::UnsupportedGrantType.into()),
    };
    let token = emulator.grant(grant).await?;
    Ok((StatusCode::OK, NO_STORE, Json(token)).into_response())
}

/// RingEX emulator: `GET /restapi/v1.0/account/~/extension/~`, the extension the bearer token
/// belongs to (RingEX's field names; `id` is the user's `rc_user_id`).
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
    let user = state.auth.emulator().token_owner(token).await?;
    let id = user.rc_user_id.unwrap_or_default();
    let body = serde_json::json!({
        "id": id,
        "uri": format!("{}/{id}", "/restapi/v1.0/account/~/extension"),
        "extensionNumber": id.to_string(),
        "name": format!("{} {}", user.first_name, user.last_name).trim(),
        "contact": {"firstName": user.first_name, "lastName": user.last_name},
        "type": "User",
        "status": if user.enabled { "Enabled" } else { "Disabled" },
        "account": {"id": user.main_account_id.to_string()},
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

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

/// Unknown paths.
pub async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// Known paths, wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let lb: IpAddr = "10.0.0.2".parse().expect("ip");
        let client: IpAddr = "198.51.100.7".parse().expect("ip");
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            client_addr(Some(lb), &h, &[]),
            lb,
            "no trusted proxy: the peer"
        );
        assert_eq!(
            client_addr(Some(lb), &h, &[lb]),
            client,
            "rightmost untrusted hop"
        );
        assert_eq!(
            client_addr(Some(client), &h, &[lb]),
            client,
            "untrusted peer: header ignored"
        );
        let bad = headers(&[("x-forwarded-for", "junk, 10.0.0.2")]);
        assert_eq!(client_addr(Some(lb), &bad, &[lb]), lb);
        assert_eq!(client_addr(Some(lb), &headers(&[]), &[lb]), lb);
        assert_eq!(
            client_addr(None, &h, &[lb]),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn credential_sources() {
        assert!(matches!(
            credential(&headers(&[])),
            Ok(PresentedToken::None)
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Bearer abc")])),
            Ok(PresentedToken::Bearer("abc"))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "bearer  abc ")])),
            Ok(PresentedToken::Bearer("abc"))
        ));
        assert!(matches!(
            credential(&headers(&[
                ("authorization", "Basic basic"),
                ("x-auth-token", "t")
            ])),
            Ok(PresentedToken::XAuthToken("t"))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Basic basic")])),
            Ok(PresentedToken::None)
        ));
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer ")])).err(),
            Some(TokenError::Missing)
        );
    }
}
