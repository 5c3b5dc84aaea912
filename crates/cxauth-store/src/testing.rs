//! Test support: a private schema on a test PostgreSQL server, so test runs never collide.
//!
//! The server is `CXAUTH_TEST_POSTGRES` (a URL) or, by default, the local one at
//! `postgres://root@127.0.0.1:5432/test`. Where PostgreSQL is *required* (`CI` or
//! `CXAUTH_TEST_POSTGRES` set) an unreachable server is an error; elsewhere callers may skip.

use sqlx::Connection as _;

/// The default test server.
pub const DEFAULT_TEST_POSTGRES: &str = "postgres://root@127.0.0.1:5432/test";

/// What [`scratch_schema`] found.
#[derive(Debug)]
pub enum Scratch {
    /// A URL whose connections use a new, empty schema.
    Ready(String),
    /// PostgreSQL is not reachable and not required; the reason, for a printed skip message.
    Skip(String),
}

/// Whether this run must test PostgreSQL (in CI, or when a server was named).
pub fn postgres_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("CXAUTH_TEST_POSTGRES").is_some()
}

/// Creates a fresh schema and returns a URL that uses it. Panics if PostgreSQL is required but
/// unreachable, so CI fails rather than skips.
pub async fn scratch_schema() -> Scratch {
    let base =
        std::env::var("CXAUTH_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.into());
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) if postgres_required() => {
            panic!("PostgreSQL is required for this run but {base} is unreachable: {e}")
        }
        Err(e) => return Scratch::Skip(format!("PostgreSQL at {base} is unreachable ({e})")),
    };
    let schema = format!("cxauth_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
    {
        panic!("cannot create a test schema on {base}: {e}");
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Scratch::Ready(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}
