//! The RingEX emulator's apps, JWT credentials, access tokens and refresh tokens.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use crate::sql::{DbResult as _, UserRow, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{
    NewRingexLogin, RingexJwtInfo, RingexRotated, RingexRotation, RingexStore, StoreError,
    UserRecord,
};

#[async_trait]
impl RingexStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(client_id))]
    async fn insert_ringex_app(
        &self,
        client_id: &str,
        secret_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.single_write().await;
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
        let _turn = self.single_write().await;
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
        for sql in [
            "DELETE FROM ringex_tokens WHERE user_id = $1",
            "DELETE FROM ringex_refresh_tokens WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .db()?;
        }
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
        let _turn = self.single_write().await;
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

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = login.user_id))]
    async fn insert_ringex_login(&self, login: &NewRingexLogin<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ringex_tokens \
             (digest, user_id, issued_at, expires_at, login_id, client_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(login.access_digest.as_slice())
        .bind(login.user_id)
        .bind(login.now)
        .bind(login.access_expires_at)
        .bind(login.login_id)
        .bind(login.client_id)
        .execute(&mut *tx)
        .await
        .db()?;
        sqlx::query(
            "INSERT INTO ringex_refresh_tokens \
             (login_id, digest, user_id, client_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(login.login_id)
        .bind(login.refresh_digest.as_slice())
        .bind(login.user_id)
        .bind(login.client_id)
        .bind(login.now)
        .bind(login.refresh_expires_at)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate_ringex_refresh(
        &self,
        r: &RingexRotation<'_>,
    ) -> Result<Option<RingexRotated>, StoreError> {
        let mut tx = self.begin_write().await?;
        // One statement replaces the digest: a concurrent rotation of the same token waits for
        // this row (PostgreSQL) or for the write lock (SQLite), then no longer finds the old
        // digest, so exactly one wins.
        let row: Option<(String, i64)> = sqlx::query_as(
            "UPDATE ringex_refresh_tokens SET digest = $1, issued_at = $2, expires_at = $3 \
             WHERE digest = $4 AND client_id = $5 AND expires_at > $2 \
             RETURNING login_id, user_id",
        )
        .bind(r.refresh_digest.as_slice())
        .bind(r.now)
        .bind(r.refresh_expires_at)
        .bind(r.presented.as_slice())
        .bind(r.client_id)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some((login_id, user_id)) = row else {
            return Ok(None);
        };
        let sql = concat!("SELECT ", user_columns!(""), " FROM users WHERE id = $1");
        let user = sqlx::query_as::<_, UserRow>(sql)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?
            .map(UserRecord::from);
        // A disabled user, or one without a RingEX id any more: refused, and dropping the
        // transaction undoes the rotation (the token stays as it was).
        let Some(user) = user.filter(|u| u.enabled && u.rc_user_id.is_some()) else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO ringex_tokens \
             (digest, user_id, issued_at, expires_at, login_id, client_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(r.access_digest.as_slice())
        .bind(user_id)
        .bind(r.now)
        .bind(r.access_expires_at)
        .bind(&login_id)
        .bind(r.client_id)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(Some(RingexRotated { user, login_id }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_ringex_login(
        &self,
        client_id: &str,
        access_digest: &[u8; 32],
        refresh_digest: &[u8; 32],
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let by_refresh: Option<(String, i64)> = sqlx::query_as(
            "SELECT login_id, user_id FROM ringex_refresh_tokens \
             WHERE digest = $1 AND client_id = $2",
        )
        .bind(refresh_digest.as_slice())
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let (login_id, user_id) = match by_refresh {
            Some(found) => found,
            None => {
                let by_access: Option<(Option<String>, i64, Option<String>)> = sqlx::query_as(
                    "SELECT login_id, user_id, client_id FROM ringex_tokens WHERE digest = $1",
                )
                .bind(access_digest.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .db()?;
                match by_access {
                    // Another client's login is not this client's to end.
                    None => return Ok(None),
                    Some((_, _, Some(owner))) if owner != client_id => return Ok(None),
                    Some((Some(login_id), user_id, _)) => (login_id, user_id),
                    // A token of before logins were recorded: it alone.
                    Some((None, user_id, _)) => {
                        sqlx::query("DELETE FROM ringex_tokens WHERE digest = $1")
                            .bind(access_digest.as_slice())
                            .execute(&mut *tx)
                            .await
                            .db()?;
                        tx.commit().await.db()?;
                        return Ok(Some(user_id));
                    }
                }
            }
        };
        // The refresh token first: on PostgreSQL that waits for a rotation of it in flight, so
        // the access tokens deleted next include the one that rotation issued.
        for sql in [
            "DELETE FROM ringex_refresh_tokens WHERE login_id = $1",
            "DELETE FROM ringex_tokens WHERE login_id = $1",
        ] {
            sqlx::query(sql)
                .bind(&login_id)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        tx.commit().await.db()?;
        Ok(Some(user_id))
    }
}
