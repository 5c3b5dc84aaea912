//! The suites of the `cxauth` binary, in one test binary: each module runs `cxauth` commands and
//! `cxauth serve` children through `cxauth-testkit` (`cxauth_testkit::cli`), on a fresh database
//! of the backend `CXAUTH_TEST_BACKEND` selects (SQLite by default) unless a test is about one
//! backend and says so.
//!
//! Binaries of their own: `crash.rs` is a timed load test (kill -9 at set moments into the
//! load) that needs the machine to itself, not shared with this binary's parallel tests;
//! `slow_clients.rs` raises the process's open-file limit (process-wide state); `config.rs` and
//! `startup.rs` belong to the configuration work.

mod cli;
mod cluster;
mod credcache_cli;
mod operations;
mod revoke_cli;
mod user_cli;
