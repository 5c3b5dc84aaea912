//! Storage backends for cxauth, behind [`cxauth_core::store::Store`].
//!
//! [`open`] picks the backend from the database URL: SQLite (the embedded default) or
//! PostgreSQL (several instances on one database). Both run the same SQL (see `sql.rs`) and pass
//! the same conformance suite (`tests/conformance.rs`).

mod postgres;
mod sql;
mod sqlite;
mod url;

pub mod testing;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use url::{DatabaseUrl, SecretUrl, UrlError};

use cxauth_core::store::{SharedStore, StoreError};
use std::sync::Arc;
use std::time::Duration;

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
    /// The database could not be opened or migrated.
    #[error("cannot open database {url}: {source}")]
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
        DatabaseUrl::Postgres { .. } => PgStore::open(url, options)
            .await
            .map(|s| Arc::new(s) as SharedStore),
    };
    opened.map_err(|source| OpenError::Open {
        url: url.to_string(),
        source,
    })
}
