//! Test support: a private schema on a test PostgreSQL server, so test runs never collide.
//!
//! Built only with the `testing` feature, which the workspace's test suites enable from their
//! dev-dependencies: it is never part of a release build.
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

/// Why [`scratch_schema`] could give neither a schema nor a reason to skip.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// PostgreSQL is required for this run (see [`postgres_required`]) but cannot be reached.
    #[error("PostgreSQL is required for this run but {url} is unreachable: {source}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Why the connection failed.
        source: sqlx::Error,
    },
    /// The server was reached but refused to create the schema.
    #[error("cannot create a test schema on {url}: {source}")]
    CreateSchema {
        /// The server's URL.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
}

/// Whether this run must test PostgreSQL (in CI, or when a server was named).
pub fn postgres_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("CXAUTH_TEST_POSTGRES").is_some()
}

/// [`scratch_schema`] for a test that runs without PostgreSQL where it is not required: the
/// schema's URL, or `None` with the reason printed ("`who`: skipping PostgreSQL: …"). Panics
/// where PostgreSQL is required but cannot be had, so CI fails rather than skips.
pub async fn scratch_url_or_skip(who: &str) -> Option<String> {
    match scratch_schema().await.expect("a PostgreSQL test schema") {
        Scratch::Ready(url) => Some(url),
        Scratch::Skip(why) => {
            eprintln!("{who}: skipping PostgreSQL: {why}");
            None
        }
    }
}

/// Creates a fresh schema and returns a URL that uses it, or why PostgreSQL is skipped. An
/// error if PostgreSQL is required but unreachable, so CI fails rather than skips.
pub async fn scratch_schema() -> Result<Scratch, ScratchError> {
    let url =
        std::env::var("CXAUTH_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.into());
    let mut conn = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(source) if postgres_required() => {
            return Err(ScratchError::Unreachable { url, source });
        }
        Err(e) => {
            return Ok(Scratch::Skip(format!(
                "PostgreSQL at {url} is unreachable ({e})"
            )));
        }
    };
    let schema = format!("cxauth_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(source) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
    {
        return Err(ScratchError::CreateSchema { url, source });
    }
    let _ = conn.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(Scratch::Ready(format!(
        "{url}{sep}options=-c%20search_path%3D{schema}"
    )))
}
