//! Storage backends for cxauth, behind [`cxauth_core::store::Store`].
//!
//! [`open`] picks the backend from the database URL: SQLite (the embedded default) or
//! PostgreSQL (several instances on one database). Both run the same SQL (see `sql/`) and pass
//! the same conformance suite (`tests/conformance.rs`).
//!
//! Where things are: `url.rs` parses database URLs; `migrations.rs` holds each backend's schema
//! migrations (embedded by `build.rs`); `sqlite.rs` and `postgres.rs` open the pool, migrate,
//! and say how their dialect starts a write transaction and takes locks; `sql/` holds
//! the queries, one file per store trait of [`cxauth_core::store`], each compiled once per
//! dialect (see `sql/mod.rs`). `testing` (cargo feature `testing`, for test suites only) gives
//! each test a scratch PostgreSQL schema.

mod migrations;
mod postgres;
mod sql;
mod sqlite;
mod url;

#[cfg(feature = "testing")]
pub mod testing;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use url::{DatabaseUrl, SecretUrl, UrlError};

use cxauth_core::store::{SharedStore, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// The id of the first main account a database gets (`Main` on first start): where `cxauth
/// serve` puts the bootstrap `admin` of a database that has accounts but no user.
pub const FIRST_MAIN_ACCOUNT_ID: i64 = 10_000_000;

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections held.
    pub max_connections: u32,
    /// Longest wait for a connection before the request gets a 503: keep it well under the
    /// request timeout, so an unreachable database is reported rather than waited on.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not understood.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The database could not be opened or migrated. The cause is the error's source, not part
    /// of this message, so a cause chain (`{:#}`) names it once.
    #[error("cannot open database {url}")]
    Open {
        /// The URL, with any password redacted.
        url: String,
        /// Why.
        source: StoreError,
    },
}

/// Opens the store `url` names with default options and brings its schema up to date.
pub async fn open(url: &DatabaseUrl) -> Result<SharedStore, OpenError> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the store `url` names and brings its schema up to date.
pub async fn open_with(
    url: &DatabaseUrl,
    options: &StoreOptions,
) -> Result<SharedStore, OpenError> {
    let opened: Result<SharedStore, StoreError> = match url {
        DatabaseUrl::Sqlite { .. } => SqliteStore::open(url, options)
            .await
            .map(|s| Arc::new(s) as SharedStore),
        DatabaseUrl::Postgres { url: secret } => match probe_postgres(secret, options).await {
            Ok(()) => PgStore::open(url, options)
                .await
                .map(|s| Arc::new(s) as SharedStore),
            Err(e) => Err(e),
        },
    };
    opened.map_err(|source| OpenError::Open {
        url: url.to_string(),
        source,
    })
}

/// Makes one connection before the pool does, so that an unreachable server is reported by its
/// root cause ("connection refused", a failed password, a missing database) at once: the pool
/// would only say "pool timed out" after its acquire timeout.
async fn probe_postgres(url: &SecretUrl, options: &StoreOptions) -> Result<(), StoreError> {
    use sqlx::{ConnectOptions as _, Connection as _};
    use std::str::FromStr as _;
    // A URL the driver cannot parse is reported by `PgStore::open`, without echoing it.
    let Ok(connect) = sqlx::postgres::PgConnectOptions::from_str(url.expose()) else {
        return Ok(());
    };
    let at = format!("{}:{}", connect.get_host(), connect.get_port());
    match tokio::time::timeout(options.acquire_timeout, connect.connect()).await {
        Err(_) => Err(StoreError::Unavailable(format!(
            "the PostgreSQL server at {at} did not answer within {:?}",
            options.acquire_timeout
        ))),
        Ok(Err(sqlx::Error::Io(e))) => Err(StoreError::Unavailable(format!(
            "cannot connect to the PostgreSQL server at {at}: {}",
            io_reason(&e)
        ))),
        Ok(Err(sqlx::Error::Database(e))) => Err(StoreError::Unavailable(format!(
            "the PostgreSQL server at {at} refused the connection: {}",
            e.message()
        ))),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!(
            "cannot connect to the PostgreSQL server at {at}: {e}"
        ))),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

/// An I/O error in words, without the `(os error N)` suffix: "connection refused".
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::NotFound => format!("not found ({e})"),
        std::io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_main_account_id_is_the_one_the_store_allocates() {
        assert_eq!(super::FIRST_MAIN_ACCOUNT_ID, crate::sql::FIRST_MAIN_ACCOUNT);
    }
}
