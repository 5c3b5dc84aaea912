//! API tokens, and the checked insert that holds the owner's lock.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use super::changes::{record_change, wall_ms};
use crate::sql::{DbResult as _, UserRow, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{
    ApiTokenInsert, ApiTokenStore, ChangeKind, CredentialProof, NewApiToken, StoreError,
    StoredApiToken, UserRecord,
};
use sqlx::Row as _;

#[async_trait]
impl ApiTokenStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn insert_api_token(
        &self,
        user_id: i64,
        digest: &[u8; 32],
        sealed: &[u8],
        now: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, digest, sealed, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id",
        )
        .bind(user_id)
        .bind(digest.as_slice())
        .bind(sealed)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = t.user_id))]
    async fn insert_api_token_checked(
        &self,
        t: &NewApiToken<'_>,
    ) -> Result<ApiTokenInsert, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_user(&mut tx, t.user_id).await?;
        let enabled: Option<bool> = sqlx::query_scalar("SELECT enabled FROM users WHERE id = $1")
            .bind(t.user_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        if enabled != Some(true) {
            return Ok(ApiTokenInsert::CredentialGone);
        }
        let stands: Option<i64> = match t.proof {
            CredentialProof::Session(sid) => {
                sqlx::query_scalar(
                    "SELECT user_id FROM sessions \
                     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                )
                .bind(sid)
                .bind(t.user_id)
                .fetch_optional(&mut *tx)
                .await
            }
            CredentialProof::ApiToken(d) => {
                sqlx::query_scalar(
                    "SELECT user_id FROM api_tokens WHERE digest = $1 AND user_id = $2",
                )
                .bind(d.as_slice())
                .bind(t.user_id)
                .fetch_optional(&mut *tx)
                .await
            }
            CredentialProof::LegacyToken(d) => {
                sqlx::query_scalar(
                    "SELECT user_id FROM legacy_tokens \
                     WHERE digest = $1 AND user_id = $2 AND expires_at > $3",
                )
                .bind(d.as_slice())
                .bind(t.user_id)
                .bind(t.now)
                .fetch_optional(&mut *tx)
                .await
            }
        }
        .db()?;
        if stands.is_none() {
            return Ok(ApiTokenInsert::CredentialGone);
        }
        // Counts at most `cap` rows: the cost stays bounded by the cap, not the table.
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT id FROM api_tokens WHERE user_id = $1 LIMIT $2) held",
        )
        .bind(t.user_id)
        .bind(i64::try_from(t.cap).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        if u64::try_from(held).unwrap_or(0) >= t.cap {
            return Ok(ApiTokenInsert::CapReached);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, digest, sealed, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id",
        )
        .bind(t.user_id)
        .bind(t.digest.as_slice())
        .bind(t.sealed)
        .bind(t.now)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(ApiTokenInsert::Created(id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn api_token_by_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError> {
        // Runs on every API-token request: static SQL, nothing formatted.
        let sql = concat!(
            "SELECT t.id AS token_id, t.sealed, ",
            user_columns!("u."),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.digest = $1"
        );
        let row = sqlx::query(sql)
            .bind(digest.as_slice())
            .fetch_optional(&self.pool)
            .await
            .db()?;
        let Some(row) = row else { return Ok(None) };
        let user: UserRecord = <UserRow as sqlx::FromRow<_>>::from_row(&row).db()?.into();
        Ok(Some((
            StoredApiToken {
                id: row.get("token_id"),
                user_id: user.id,
                sealed: row.get("sealed"),
            },
            user,
        )))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<StoredApiToken>, StoreError> {
        let rows = sqlx::query("SELECT id, sealed FROM api_tokens WHERE user_id = $1 ORDER BY id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .db()?;
        Ok(rows
            .into_iter()
            .map(|r| StoredApiToken {
                id: r.get(0),
                user_id,
                sealed: r.get(1),
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn delete_api_token(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let owner: Option<i64> =
            sqlx::query_scalar("DELETE FROM api_tokens WHERE id = $1 RETURNING user_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .db()?;
        let Some(owner) = owner else {
            return Ok(false);
        };
        let change =
            record_change(&mut tx, ChangeKind::User, &owner.to_string(), wall_ms()).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(true)
    }
}
