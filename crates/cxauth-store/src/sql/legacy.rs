//! Legacy portal auth tokens, with sliding expiry.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use crate::sql::{DbResult as _, UserRow, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{
    AuditEvent, LegacyToken, LegacyTokenStore, NewLegacyLogin, RememberAddress, StoreError,
    UserRecord,
};
use sqlx::Row as _;

#[async_trait]
impl LegacyTokenStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn insert_legacy_token(
        &self,
        user_id: i64,
        digest: &[u8; 32],
        token: &LegacyToken,
        now: i64,
        expected_password_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // As for a new session: a password change, a disable or a revocation committed
        // since the password was checked must win.
        Self::lock_user(&mut tx, user_id).await?;
        let current: Option<(String, bool)> = sqlx::query_as(super::sessions::SESSION_USER_NOW)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        crate::sql::login_may_start(expected_password_hash, current)?;
        sqlx::query(INSERT_LEGACY_TOKEN)
            .bind(digest.as_slice())
            .bind(user_id)
            .bind(now)
            .bind(token.expires_at)
            .bind(token.lifetime_ms)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = login.user_id))]
    async fn create_legacy_login(
        &self,
        login: &NewLegacyLogin,
        address: Option<&RememberAddress>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let start = crate::sql::LoginStart::Legacy(std::borrow::Cow::Borrowed(login));
        if let Some(done) = self.login_in_one_commit(start, address, audit).await {
            return done;
        }
        let l = login;
        let hash = Some(l.expected_password_hash.as_str());
        self.insert_legacy_token(l.user_id, &l.digest, &l.token, l.now, hash)
            .await?;
        crate::sql::remember_and_audit(self, address, audit).await;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn legacy_token_by_digest(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<Option<(LegacyToken, UserRecord)>, StoreError> {
        let sql = concat!(
            "SELECT t.expires_at AS token_expires_at, t.lifetime_ms, ",
            user_columns!("u."),
            " FROM legacy_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.digest = $1 AND t.expires_at > $2"
        );
        let row = sqlx::query(sql)
            .bind(digest.as_slice())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        let Some(row) = row else { return Ok(None) };
        let user: UserRecord = <UserRow as sqlx::FromRow<_>>::from_row(&row).db()?.into();
        Ok(Some((
            LegacyToken {
                expires_at: row.get("token_expires_at"),
                lifetime_ms: row.get("lifetime_ms"),
            },
            user,
        )))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn extend_legacy_token(
        &self,
        digest: &[u8; 32],
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.single_write().await;
        // Never shortens: concurrent uses may arrive out of order.
        let done = sqlx::query(
            "UPDATE legacy_tokens SET expires_at = $1 WHERE digest = $2 AND expires_at < $1",
        )
        .bind(expires_at)
        .bind(digest.as_slice())
        .execute(&self.pool)
        .await
        .db()?;
        Ok(done.rows_affected() > 0)
    }
}

/// A new legacy token: `$1` its digest, `$2` the user, `$3` now, `$4` its expiry, `$5` its
/// lifetime (ms). Shared by both drivers (rusqlite in `sqlite/writer.rs`).
pub(crate) const INSERT_LEGACY_TOKEN: &str = "INSERT INTO legacy_tokens \
     (digest, user_id, created_at, expires_at, lifetime_ms) VALUES ($1, $2, $3, $4, $5)";
