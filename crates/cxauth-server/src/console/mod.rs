//! The web console under `/console/`: server-rendered HTML pages (askama templates compiled into
//! the binary, one embedded style sheet and one small script), for the people who hold API
//! tokens and the managers of users. It is not part of the OpenAPI document: it is HTML for
//! people, not an API.
//!
//! - [`session`]: the console's session (two HttpOnly cookies holding the access and refresh
//!   tokens of an ordinary login), refreshed through the core's rotation when the access token
//!   has expired; the form token (CSRF) of every state-changing form; the same-origin check.
//! - [`pages`]: the templates and the rows they show.
//! - [`handlers`]: one function per page or form.
//! - [`error`]: the console's errors, rendered as HTML pages in one place.
//!
//! Every page calls the same core operations as the API (`Auth::login`, `Auth::authenticate`,
//! the API-token and directory calls, the delegated user administration of
//! `cxauth_core::user_admin`), so throttling, audit and authorisation are the API's own.
//! Security headers (a strict Content-Security-Policy without inline script or style,
//! `Cache-Control: no-store`) are set for the whole prefix in [`crate::security_headers`].

pub mod cookies;
pub mod error;
pub mod handlers;
pub mod pages;
pub mod session;

use crate::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};

const CSS: &str = include_str!("../../assets/console/console.css");
const JS: &str = include_str!("../../assets/console/console.js");
/// The console's icon, linked from every page: without it a browser asks for `/favicon.ico` on
/// each visit, which is not ours to answer and left a 404 in the access log.
const ICON: &str = include_str!("../../assets/console/icon.svg");

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The console's routes, to merge into the application's router. Any other path under the
/// prefix is the console's own "not found" page.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/tokens") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/tokens") }),
        )
        .route(
            "/console/login",
            get(handlers::login_page).post(handlers::login_submit),
        )
        .route("/console/logout", post(handlers::logout))
        .route(
            "/console/tokens",
            get(handlers::tokens_page).post(handlers::token_create),
        )
        .route("/console/tokens/delete", post(handlers::token_delete))
        .route("/console/accounts", get(handlers::accounts_page))
        .route(
            "/console/users",
            get(handlers::users_page).post(handlers::user_create),
        )
        .route("/console/users/{id}/{action}", post(handlers::user_action))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/assets/icon.svg", get(icon))
        .route("/console/{*rest}", any(handlers::not_found))
}
