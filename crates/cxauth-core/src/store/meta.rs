//! Metadata: values the service sets once and reads on start.

use super::StoreError;
use async_trait::async_trait;

/// Small settings kept in the database's key/value metadata table.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// A value of the key/value metadata table.
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a metadata value unless one exists; returns the value now stored.
    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError>;
}
