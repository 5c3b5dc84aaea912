//! The cxauth HTTP service. Where a request goes, from the outside in:
//!
//! - [`startup`]: [`App::build`] makes the application from a [`config::ServerConfig`] (store,
//!   [`master_key`], seed, service, [`bootstrap`] of the first user, router); [`serve`] runs it
//!   on a bound listener until shutdown, with [`housekeeping`] in the background.
//! - [`listener`]: the accept loop and the connection limits (header-read and keep-alive
//!   timeouts, a connection cap that sheds the idlest).
//! - [`context`] (request id, log line, JSON error bodies, the [`security_headers`]), a panic
//!   catcher, the request timeout and the body limit: the middleware of [`routes::router`].
//! - [`routes`]: one file per concern (auth, tokens, directory, legacy, ringex, ops), each
//!   handler registered with its OpenAPI description; [`openapi`] the document's fixed parts.
//! - [`extract`]: what handlers take from a request (parameters, the caller's credential, the
//!   client address, the audit context); [`params`] reads parameters from query, form or JSON.
//! - [`error`]: the one mapping of errors to HTTP answers; [`ringex`]: who a RingEX token
//!   belongs to; [`metrics`]: the Prometheus endpoint.
//! - [`console`]: the web console under `/console/` (server-rendered HTML, not in the OpenAPI
//!   document).
//! - [`config`]: the settings and their one layered chain (defaults, file, environment, flags).

pub mod bootstrap;
pub mod config;
pub mod console;
pub mod context;
pub mod error;
pub mod extract;
pub mod housekeeping;
pub mod listener;
pub mod master_key;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod ringex;
pub mod routes;
pub mod security_headers;
pub mod startup;

pub use master_key::load_or_create as master_key;
pub use openapi::ApiDoc;
pub use routes::{api_routes, router};
pub use startup::{App, AppState, SharedState, StartupError, announce_admin_password, serve};
