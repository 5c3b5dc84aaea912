//! The one place where failures become HTTP responses.
//!
//! Handlers return [`ApiError`]. Its `IntoResponse` sets the status, the headers and, for bearer
//! failures, the contract's exact plain-text body. For every other error it attaches an
//! [`ErrorReport`] and leaves the body to [`crate::context`], the outermost middleware, which
//! knows the request's path, method and id and writes the contract's JSON error body. Error
//! responses made outside our handlers (timeouts, unknown routes, panics) pass through the same
//! middleware and get the same JSON shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxauth_core::emulator::{EmulatorError, OAuthError};
use cxauth_core::jwt::TokenError;
use cxauth_core::service::AuthError;
use std::time::Duration;

/// The parts of the JSON error body that depend on the error (the rest depends on the request).
#[derive(Debug, Clone)]
pub struct ErrorReport {
    /// `errorCode`.
    pub code: &'static str,
    /// `generalMessage`.
    pub general: &'static str,
    /// `details`.
    pub details: String,
}

impl ErrorReport {
    /// The report for an error response that carries none (made by a layer, not by us).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, general) = match status {
            StatusCode::BAD_REQUEST => ("bad.request", "Bad request"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "Authentication is required"),
            StatusCode::FORBIDDEN => ("access.denied.exception", "Access denied"),
            StatusCode::NOT_FOUND => ("not.found", "Not found"),
            StatusCode::METHOD_NOT_ALLOWED => ("method.not.allowed", "Method not allowed"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload.too.large", "Request body too large"),
            StatusCode::TOO_MANY_REQUESTS => ("too.many.requests", "Too many requests"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
                ("service.unavailable", "Service temporarily unavailable")
            }
            s if s.is_client_error() => ("bad.request", "Bad request"),
            _ => ("internal.error", "Internal error"),
        };
        ErrorReport {
            code,
            general,
            details: general.to_owned(),
        }
    }
}

/// Marks an error response whose body is already final (the RingEX emulator's OAuth errors,
/// which clients parse in OAuth's shape), so [`crate::context`] leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct OwnBody;

/// The OAuth error body of the RingEX emulator (RFC 6749 §5.2), with RingEX's `errors` array.
fn oauth_error(e: &OAuthError) -> Response {
    let status = match e {
        OAuthError::InvalidClient | OAuthError::InvalidToken => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = serde_json::json!({
        "error": e.code(),
        "error_description": e.description(),
        "errors": [{"errorCode": e.code(), "message": e.description()}],
    });
    let mut res = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if matches!(e, OAuthError::InvalidClient) {
            "Basic realm=\"cxauth-ringex-emulator\""
        } else {
            BEARER_INVALID
        };
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    res.extensions_mut().insert(OwnBody);
    res
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain failure.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The body exceeded the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// No such route.
    #[error("no such endpoint")]
    NoRoute,
    /// The route exists, not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The RingEX token exchange on a server with neither `--ringex-server` nor the emulator:
    /// 501 without `Retry-After`, since only its operator can change that (a 503 would tell
    /// clients to retry, and retrying can never help).
    #[error("no RingEX server is configured")]
    RingexNotConfigured,
    /// An OAuth error of the built-in RingEX emulator, answered in OAuth's own JSON shape.
    #[error("RingEX emulator: {0}")]
    OAuth(#[from] OAuthError),
}

/// The emulator's errors: its OAuth errors in OAuth's shape, the service's failures underneath
/// (throttled, busy, storage) like any other.
impl From<EmulatorError> for ApiError {
    fn from(e: EmulatorError) -> Self {
        match e {
            EmulatorError::OAuth(e) => ApiError::OAuth(e),
            EmulatorError::Service(e) => ApiError::Auth(e),
        }
    }
}

fn retry_after(d: Duration) -> HeaderValue {
    // Whole seconds, rounded up, at least 1: a client must never be told to retry at once.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// What a failed login is told, whatever the reason; the web console shows the same words.
pub const LOGIN_FAILED_DETAILS: &str = "Invalid username, password or platform";

const BEARER_INVALID: &str = "Bearer realm=\"cxauth\", error=\"invalid_token\"";
const BEARER_REALM: &str = "Bearer realm=\"cxauth\"";

fn plain_401(token: TokenError) -> Response {
    let (body, challenge) = match token {
        TokenError::Missing => (cxauth_proto::JWT_MISSING, BEARER_REALM),
        TokenError::Expired => (cxauth_proto::JWT_EXPIRED, BEARER_INVALID),
        TokenError::Invalid => (cxauth_proto::JWT_VERIFICATION_FAILS, BEARER_INVALID),
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::WWW_AUTHENTICATE, challenge),
        ],
        body,
    )
        .into_response()
}

fn json_error(
    status: StatusCode,
    code: &'static str,
    general: &'static str,
    details: String,
) -> Response {
    let mut res = status.into_response();
    res.extensions_mut().insert(ErrorReport {
        code,
        general,
        details,
    });
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let auth = match self {
            ApiError::PayloadTooLarge => {
                let max = "The request body is larger than the server accepts".to_owned();
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload.too.large",
                    "Request body too large",
                    max,
                );
            }
            ApiError::NoRoute => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "not.found",
                    "Not found",
                    "No such endpoint".into(),
                );
            }
            ApiError::MethodNotAllowed => {
                return json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method.not.allowed",
                    "Method not allowed",
                    "This endpoint does not accept this method".into(),
                );
            }
            ApiError::RingexNotConfigured => {
                return json_error(
                    StatusCode::NOT_IMPLEMENTED,
                    "ringex.not.configured",
                    "RingEX token exchange not configured",
                    "This server has no RingEX server to check RingEX tokens with; its operator \
                     must start it with --ringex-server URL (CXAUTH_RINGEX_SERVER)"
                        .into(),
                );
            }
            ApiError::OAuth(e) => return oauth_error(&e),
            ApiError::Auth(a) => a,
        };
        match auth {
            AuthError::Token(t) => plain_401(t),
            AuthError::BadRequest(details) => json_error(
                StatusCode::BAD_REQUEST,
                "bad.request",
                "Bad request",
                details,
            ),
            AuthError::LoginFailed => {
                let mut res = json_error(
                    StatusCode::UNAUTHORIZED,
                    "authentication.failed",
                    "Authentication failed",
                    LOGIN_FAILED_DETAILS.into(),
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BEARER_REALM),
                );
                res
            }
            AuthError::RefreshFailed => {
                let mut res = json_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid.refresh.token",
                    "Invalid refresh token",
                    "The refresh token is not valid; log in again".into(),
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BEARER_INVALID),
                );
                res
            }
            AuthError::Throttled { retry_after: d } => {
                let mut res = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too.many.requests",
                    "Too many login attempts",
                    "Too many login attempts from this user or address; retry after the delay in Retry-After".into(),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(d));
                res
            }
            AuthError::Busy { retry_after: d } => {
                let mut res = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service.busy",
                    "Service busy",
                    "The server is busy; retry after the delay in Retry-After".into(),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(d));
                res
            }
            AuthError::Forbidden => json_error(
                StatusCode::FORBIDDEN,
                "access.denied.exception",
                "Access denied",
                "You do not have permission for this operation".into(),
            ),
            AuthError::NotFound => json_error(
                StatusCode::NOT_FOUND,
                "not.found",
                "Not found",
                "Not found".into(),
            ),
            AuthError::Unavailable(cause) => {
                tracing::error!(%cause, "storage unavailable");
                let mut res = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service.unavailable",
                    "Service temporarily unavailable",
                    "Storage is unavailable; retry after the delay in Retry-After".into(),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(Duration::from_secs(2)));
                res
            }
            AuthError::RingexRefused => {
                let mut res = json_error(
                    StatusCode::UNAUTHORIZED,
                    "authentication.failed",
                    "Authentication failed",
                    "The RingEX token was not accepted, or no user holds its RingEX user id".into(),
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BEARER_INVALID),
                );
                res
            }
            AuthError::UpstreamUnavailable(cause) => {
                tracing::warn!(%cause, "RingEX unavailable");
                let mut res = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ringex.unavailable",
                    "RingEX unavailable",
                    "RingEX could not be reached to check the token; retry after the delay in \
                     Retry-After"
                        .into(),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(Duration::from_secs(5)));
                res
            }
            AuthError::TooManyApiTokens { cap } => json_error(
                StatusCode::CONFLICT,
                "api.token.limit.exceeded",
                "API token limit reached",
                format!(
                    "A user may hold at most {cap} API tokens; delete one you no longer use                      (DELETE /voice/api/v1/admin/token/{{token}}) before creating another"
                ),
            ),
            AuthError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal.error",
                    "Internal error",
                    "The server failed to handle the request".into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract: no error body other than `Jwt is expired` may contain "expired".
    #[test]
    fn no_error_but_the_expired_jwt_mentions_expired() {
        let all = [
            AuthError::BadRequest("x".into()),
            AuthError::LoginFailed,
            AuthError::RefreshFailed,
            AuthError::Throttled {
                retry_after: Duration::from_millis(1),
            },
            AuthError::Busy {
                retry_after: Duration::ZERO,
            },
            AuthError::Token(TokenError::Missing),
            AuthError::Token(TokenError::Invalid),
            AuthError::Forbidden,
            AuthError::NotFound,
            AuthError::Unavailable("x".into()),
            AuthError::Internal("x".into()),
            AuthError::RingexRefused,
            AuthError::UpstreamUnavailable("x".into()),
        ];
        for e in all {
            let res = ApiError::from(e).into_response();
            if let Some(r) = res.extensions().get::<ErrorReport>() {
                let text = format!("{} {} {}", r.code, r.general, r.details).to_lowercase();
                assert!(!text.contains("expired"), "{text}");
            }
            if let Some(ra) = res.headers().get(header::RETRY_AFTER) {
                assert_ne!(ra, "0");
            }
        }
        for e in [
            OAuthError::InvalidClient,
            OAuthError::InvalidGrant,
            OAuthError::UnsupportedGrantType,
            OAuthError::InvalidRequest("x".into()),
            OAuthError::InvalidToken,
        ] {
            let res = ApiError::from(EmulatorError::from(e)).into_response();
            assert!(res.extensions().get::<OwnBody>().is_some());
        }
        for s in [400u16, 401, 403, 404, 405, 408, 413, 429, 500, 503] {
            let r = ErrorReport::for_status(StatusCode::from_u16(s).expect("status"));
            assert!(!r.details.to_lowercase().contains("expired"));
        }
    }
}
