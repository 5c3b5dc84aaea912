//! The cxauth test kit: everything an HTTP, CLI or SDK test needs, in one place.
//!
//! - [`Backend`] and [`TestDb`]: a fresh database on SQLite (a temporary file) or PostgreSQL (a
//!   new schema on `CXAUTH_TEST_POSTGRES`), chosen by `CXAUTH_TEST_BACKEND` (`sqlite`, the
//!   default, or `postgres`), so one suite runs on both backends.
//! - [`TestApp`]: the real server, in process, on port 0, with a [`ManualClock`] for time travel,
//!   an SDK [`Client`](cxauth_client::Client) and a helper per endpoint ([`api`]).
//! - [`UserBuilder`]: users with parents, account grants, roles and RingEX ids.
//! - [`cli`]: the `cxauth` binary as a child process (`cxauth serve` on port 0, `cxauth admin`).
//! - [`logs`]: server logs on stderr only when `CXAUTH_TEST_LOG=1`, and captured for a test
//!   that reads them ([`logs::Capture`]).
//!
//! Set-up that cannot go on (no database, a server that does not start) panics with the reason
//! and the backend: that is the test's first assertion. Functions that may fail for a reason a
//! test wants to look at return a `Result` ([`TestApp::try_start`], [`TestDb::fresh`]).
//!
//! [`ManualClock`]: cxauth_core::clock::ManualClock

pub mod api;
mod app;
mod backend;
pub mod cli;
pub mod logs;
mod users;

pub use api::{Reply, bearer, http, raw, send, x_auth};
pub use app::{ADMIN_PASSWORD, PLATFORM, TestApp, config_for};
pub use backend::{Backend, KitError, TestDb};
pub use users::UserBuilder;
