//! The RingEX emulator's apps, JWT credentials and access tokens.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use crate::sql::{DbResult as _, UserRow, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{RingexJwtInfo, RingexStore, StoreError, UserRecord};

#[async_trait]
impl RingexStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(client_id))]
    async fn insert_ringex_app(
        &self,
        client_id: &str,
        secret_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ringex_apps (client_id, secret_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(client_id)
        .bind(secret_hash)
        .bind(now)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(client_id))]
    async fn ringex_app_secret_hash(&self, client_id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT secret_hash FROM ringex_apps WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn insert_ringex_jwt(
        &self,
        digest: &[u8; 32],
        user_id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO ringex_jwts (digest, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(digest.as_slice())
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .db()?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ringex_jwt_user(&self, digest: &[u8; 32]) -> Result<Option<UserRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!("u."),
            " FROM ringex_jwts j JOIN users u ON u.id = j.user_id WHERE j.digest = $1"
        );
        sqlx::query_as::<_, UserRow>(sql)
            .bind(digest.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map(|r| r.map(UserRecord::from))
            .db()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ringex_jwts(&self, username: Option<&str>) -> Result<Vec<RingexJwtInfo>, StoreError> {
        let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
            "SELECT j.id, j.user_id, u.username, j.created_at \
                 FROM ringex_jwts j JOIN users u ON u.id = j.user_id \
                 WHERE $1 IS NULL OR u.username = $1 ORDER BY j.id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(|(id, user_id, username, created_at)| RingexJwtInfo {
                id,
                user_id,
                username,
                created_at,
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn revoke_ringex_jwt(&self, id: i64) -> Result<Option<RingexJwtInfo>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT j.user_id, u.username, j.created_at \
                 FROM ringex_jwts j JOIN users u ON u.id = j.user_id WHERE j.id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some((user_id, username, created_at)) = row else {
            return Ok(None);
        };
        Self::lock_user(&mut tx, user_id).await?;
        sqlx::query("DELETE FROM ringex_jwts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query("DELETE FROM ringex_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        Ok(Some(RingexJwtInfo {
            id,
            user_id,
            username,
            created_at,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn insert_ringex_token(
        &self,
        digest: &[u8; 32],
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ringex_tokens (digest, user_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(digest.as_slice())
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ringex_token_user(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!("u."),
            " FROM ringex_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.digest = $1 AND t.expires_at > $2"
        );
        sqlx::query_as::<_, UserRow>(sql)
            .bind(digest.as_slice())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map(|r| r.map(UserRecord::from))
            .db()
    }
}
