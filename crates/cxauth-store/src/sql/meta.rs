//! The key/value metadata table.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use crate::sql::DbResult as _;
use async_trait::async_trait;
use cxauth_core::store::{MetaStore, StoreError};

#[async_trait]
impl MetaStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(key))]
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key))]
    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .db()?;
        let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        Ok(stored)
    }
}
