//! Signing keys: the live ones, retirement, and the public halves of retired ones.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::{Backend, Conn};
use crate::sql::{DbResult as _, LOCK_SIGNING_KEYS};
use async_trait::async_trait;
use cxauth_core::store::{KeyStore, RetiredSigningKey, StoreError, StoredSigningKey};
use sqlx::Row as _;

#[async_trait]
impl KeyStore for Backend {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, public_key, sealed_private_key, created_at FROM signing_keys \
                 ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(|r| StoredSigningKey {
                kid: r.get(0),
                public_key: r.get(1),
                sealed_private_key: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kid = %key.kid))]
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_signing_key_in(&mut tx, key).await?;
        tx.commit().await.db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(cutoff))]
    async fn retire_signing_keys(&self, cutoff: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_global(&mut tx, LOCK_SIGNING_KEYS).await?;
        // The public half stays, to classify expired tokens it signed (issue 11).
        sqlx::query(
            "INSERT INTO retired_signing_keys (kid, public_key, created_at, retired_at) \
                 SELECT kid, public_key, created_at, $1 FROM signing_keys WHERE created_at < \
                 (SELECT MAX(created_at) FROM signing_keys WHERE created_at <= $1) \
                 ON CONFLICT (kid) DO NOTHING",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .db()?;
        let kids: Vec<String> = sqlx::query_scalar(
            "DELETE FROM signing_keys WHERE created_at < \
                 (SELECT MAX(created_at) FROM signing_keys WHERE created_at <= $1) \
                 RETURNING kid",
        )
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(kids)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kid = %key.kid))]
    async fn init_signing_key(&self, key: &StoredSigningKey) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_global(&mut tx, LOCK_SIGNING_KEYS).await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut *tx)
            .await
            .db()?;
        if existing > 0 {
            return Ok(false);
        }
        insert_signing_key_in(&mut tx, key).await?;
        tx.commit().await.db()?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn retired_signing_keys(&self) -> Result<Vec<RetiredSigningKey>, StoreError> {
        let rows: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT kid, public_key, retired_at FROM retired_signing_keys ORDER BY retired_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(|(kid, public_key, retired_at)| RetiredSigningKey {
                kid,
                public_key,
                retired_at,
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(before))]
    async fn forget_retired_signing_keys(&self, before: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let kids: Vec<String> = sqlx::query_scalar(
            "DELETE FROM retired_signing_keys WHERE retired_at < $1 RETURNING kid",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(kids)
    }
}

pub(super) async fn insert_signing_key_in(
    conn: &mut Conn,
    key: &StoredSigningKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, public_key, sealed_private_key, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.kid)
    .bind(&key.public_key)
    .bind(&key.sealed_private_key)
    .bind(key.created_at)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}
