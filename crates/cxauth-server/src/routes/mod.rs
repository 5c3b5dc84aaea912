//! The contract's endpoints, one file per concern, and the router that serves them. Each
//! handler is registered here together with its OpenAPI description ([`api_routes`]), so the
//! document and the router cannot drift.

pub mod api_tokens;
pub mod auth;
pub mod directory;
pub mod legacy;
pub mod ops;
pub mod ringex;
pub mod tokens;

pub use crate::extract::{Audit, Caller, ClientAddr, client_addr, credential};

use crate::AppState;
use crate::config::ServerConfig;
use crate::context;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// Tokens, and responses carrying them, must never be cached (RFC 6750 §5.3).
pub(crate) const NO_STORE: [(header::HeaderName, HeaderValue); 2] = [
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (header::PRAGMA, HeaderValue::from_static("no-cache")),
];

/// A plain-text answer, never cached.
pub(crate) fn text(body: impl Into<String>) -> Response {
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

/// A session answered as JSON, never cached.
pub(crate) fn session_response(s: cxauth_proto::Session) -> Response {
    (StatusCode::OK, NO_STORE, Json(s)).into_response()
}

/// `routes!(…)` with `prefix` put before its paths. Routes are registered at their full path
/// rather than under `nest`: axum wraps every nested route in a `StripPrefix` that rebuilds the
/// request's URI each time (~1.5 µs of a ~32 µs accounts read, callgrind), and no handler reads
/// the stripped path.
fn prefixed<S>(
    prefix: &str,
    (schemas, paths, router): utoipa_axum::router::UtoipaMethodRouter<S>,
) -> utoipa_axum::router::UtoipaMethodRouter<S> {
    let mut full = utoipa::openapi::path::Paths::new();
    full.extensions = paths.extensions;
    for (path, item) in paths.paths {
        full.paths.insert(format!("{prefix}{path}"), item);
    }
    (schemas, full, router)
}

/// The admin endpoints of the contract under `prefix` (`/voice/api/v1` or `/api/v1`).
fn admin_routes(prefix: &str) -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(prefixed(
            prefix,
            routes!(tokens::create_token, tokens::list_tokens),
        ))
        .routes(prefixed(prefix, routes!(tokens::delete_token)))
        .routes(prefixed(prefix, routes!(directory::accounts)))
        .routes(prefixed(prefix, routes!(directory::agents)))
        .routes(prefixed(prefix, routes!(directory::users)))
}

/// Every endpoint with its OpenAPI description: one registration makes both the route and its
/// entry in the document.
pub fn api_routes(config: &ServerConfig) -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    use utoipa_axum::routes;
    let mut doc = crate::openapi::ApiDoc::openapi();
    if config.ringex_emulator {
        crate::openapi::document_emulator(&mut doc);
    }
    let own = "/cxauth/v1";
    let mut api = utoipa_axum::router::OpenApiRouter::with_openapi(doc)
        .routes(routes!(auth::login))
        .routes(routes!(ringex::ringex_exchange))
        .routes(routes!(legacy::legacy_login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(auth::jwks))
        .merge(admin_routes("/voice/api/v1"))
        .merge(admin_routes("/api/v1"))
        .routes(prefixed(
            own,
            routes!(api_tokens::api_tokens_list, api_tokens::api_tokens_create),
        ))
        .routes(prefixed(
            own,
            routes!(api_tokens::api_tokens_rename, api_tokens::api_tokens_delete),
        ));
    if config.ringex_emulator {
        api = api
            .routes(routes!(ringex::ringex_emulator_token))
            .routes(routes!(ringex::ringex_emulator_revoke))
            .routes(routes!(ringex::ringex_emulator_extension));
    }
    api
}

/// The routes of the contract, under both admin prefixes, plus `/openapi.json` and the API page
/// `/docs` (Swagger UI served from the binary: it works offline), with the middleware stack.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let (routes, mut api) = api_routes(config).split_for_parts();
    crate::openapi::unique_operation_ids(&mut api);
    let routes = routes.merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", api));
    // The web console: HTML pages, deliberately outside the OpenAPI document.
    let routes = routes.merge(crate::console::router());
    // One `layer` call with the whole stack, outermost first. Each call of `Router::layer` wraps
    // every route in another boxed `Route`, and a request clones each box at every level (15
    // clones, each an allocation, for four separate calls; callgrind).
    let stack = tower::ServiceBuilder::new()
        .layer(context::RequestContextLayer::new(state.clock.clone()))
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit));
    routes
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::wrong_method)
        .layer(stack)
        .with_state(state)
}
