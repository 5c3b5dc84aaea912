//! Storage backends for cxauth, behind [`cxauth_core::store::Store`].
//!
//! [`open`] picks the backend from the database URL. SQLite is the embedded default; the
//! PostgreSQL backend will live beside it in this crate and pass the same conformance suite.

mod sqlite;
mod url;

pub use sqlite::SqliteStore;
pub use url::{DatabaseUrl, UrlError};

use cxauth_core::store::{SharedStore, StoreError};
use std::sync::Arc;

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

/// Opens the store `url` names and brings its schema up to date.
pub async fn open(url: &DatabaseUrl) -> Result<SharedStore, OpenError> {
    match url {
        DatabaseUrl::Sqlite { .. } => {
            let store = SqliteStore::open(url)
                .await
                .map_err(|source| OpenError::Open {
                    url: url.to_string(),
                    source,
                })?;
            Ok(Arc::new(store))
        }
    }
}
