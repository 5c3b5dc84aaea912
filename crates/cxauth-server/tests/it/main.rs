//! The HTTP suites, in one test binary (one link instead of twelve): each module drives a real
//! server on port 0 through `cxauth-testkit`, on the backend `CXAUTH_TEST_BACKEND` selects
//! (SQLite by default; `postgres` uses a fresh schema on `CXAUTH_TEST_POSTGRES` per server).
//! Tests that are about one backend say so and spawn it explicitly.
//!
//! `canary.rs` stays a binary of its own: it installs the process's global tracing subscriber.

mod agents;
mod api;
mod attack;
mod authz;
mod console;
mod credcache;
mod edge;
mod hostile;
mod legacy;
mod openapi;
mod operations;
mod outage;
mod revocation;
mod ringex;
mod ringex_refresh;
mod shapes;
mod throttle;
mod token_meta;
