//! The console's errors and the one place they become HTML answers. Statuses follow the API's
//! mapping (403 for a page the caller may not use, 404 for what it may not see, 429 with
//! `Retry-After` when throttled, 503 when storage is down), but the body is a page a person can
//! read, with a way back.

use super::pages::{Chrome, ErrorPage, render};
use crate::error::OwnBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cxauth_core::service::AuthError;
use std::time::Duration;

/// Why a console request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A failure of the service, mapped like the API maps it.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No valid session: answered with a redirect to the login page (cookies cleared).
    #[error("not signed in")]
    SignIn,
    /// A state-changing form without the session's form token, or sent from another site.
    #[error("form token missing or wrong, or cross-site request")]
    Forgery,
    /// The form could not be read or a field breaks a rule; the message is safe to show.
    #[error("{0}")]
    BadForm(String),
    /// The body is over the server's limit.
    #[error("request body too large")]
    TooLarge,
    /// No such page or object.
    #[error("not found")]
    NotFound,
}

fn retry_after(d: Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// An error page with `status`, a title and a message, linking back to `back`.
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str, back: &str) -> Response {
    let page = ErrorPage {
        chrome: Chrome::anonymous(),
        title,
        message,
        back,
        back_label: if back == "/console/login" {
            "Go to the login page"
        } else {
            "Go back"
        },
    };
    let mut res = (status, render(&page)).into_response();
    // The body is final: the JSON error body of the API must not replace it.
    res.extensions_mut().insert(OwnBody);
    res
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        self.page("/console/tokens")
    }
}

impl ConsoleError {
    /// The error's page, linking back to `back` (the page whose form failed).
    pub fn page(self, back: &str) -> Response {
        match self {
            ConsoleError::SignIn => {
                let mut res = Redirect::to("/console/login").into_response();
                for c in super::cookies::clear_cookies() {
                    res.headers_mut().append(header::SET_COOKIE, c);
                }
                res
            }
            ConsoleError::Forgery => error_page(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form has expired or did not come from this console. Reload the page and \
                 try again.",
                back,
            ),
            ConsoleError::BadForm(m) => {
                error_page(StatusCode::BAD_REQUEST, "Cannot do that", &m, back)
            }
            ConsoleError::TooLarge => error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too much data",
                "The form is larger than the server accepts.",
                back,
            ),
            ConsoleError::NotFound | ConsoleError::Auth(AuthError::NotFound) => error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page, or nothing here you may see.",
                back,
            ),
            ConsoleError::Auth(e) => auth_error(e, back),
        }
    }
}

fn auth_error(e: AuthError, back: &str) -> Response {
    match e {
        AuthError::Token(_) | AuthError::RefreshFailed => ConsoleError::SignIn.into_response(),
        AuthError::BadRequest(m) => error_page(StatusCode::BAD_REQUEST, "Cannot do that", &m, back),
        AuthError::LoginFailed | AuthError::RingexRefused => error_page(
            StatusCode::UNAUTHORIZED,
            "Login failed",
            crate::error::LOGIN_FAILED_DETAILS,
            "/console/login",
        ),
        AuthError::Forbidden => error_page(
            StatusCode::FORBIDDEN,
            "Access denied",
            "You do not have permission for this page or operation.",
            back,
        ),
        AuthError::NotFound => ConsoleError::NotFound.into_response(),
        AuthError::TooManyApiTokens { cap } => error_page(
            StatusCode::CONFLICT,
            "Too many API tokens",
            &format!(
                "You already hold {cap} API tokens, the most a user may have. Delete one first."
            ),
            back,
        ),
        AuthError::Throttled { retry_after: d } => {
            let mut res = error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "Too many login attempts from this user or address. Wait a little and try again.",
                back,
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, retry_after(d));
            res
        }
        AuthError::Busy { retry_after: d } => {
            let mut res = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Server busy",
                "The server is busy. Try again in a moment.",
                back,
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, retry_after(d));
            res
        }
        AuthError::Unavailable(cause) | AuthError::UpstreamUnavailable(cause) => {
            tracing::error!(%cause, "console: service unavailable");
            let mut res = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "The service is temporarily unavailable. Try again in a moment.",
                back,
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, retry_after(Duration::from_secs(2)));
            res
        }
        AuthError::Internal(cause) => {
            tracing::error!(%cause, "console: internal error");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not do this. The error is logged.",
                back,
            )
        }
    }
}
