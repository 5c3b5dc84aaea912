//! Users: creation, look-ups, the user tree, enabling, passwords, and ending a user's credentials.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::changes::{record_change, wall_ms};
use super::{Backend, Conn, Db};
use crate::sql::{DbResult as _, USER_COLUMNS, UserRow, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{
    ChangeKind, DeleteUser, EndCredentials, NewUser, RevokeReason, RevokedCounts, StoreError,
    UserRecord, UserStore,
};
use sqlx::Row as _;

#[async_trait]
impl UserStore for Backend {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_user(&self, user: &NewUser) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut grant_mains = Vec::new();
        for account in &user.grants {
            let main: Option<Option<i64>> =
                sqlx::query_scalar("SELECT main_id FROM accounts WHERE id = $1")
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await
                    .db()?;
            match main {
                None => {
                    return Err(StoreError::NotFound(format!(
                        "no account with id {account}"
                    )));
                }
                Some(main) => grant_mains.push(main.unwrap_or(*account)),
            }
        }
        let (parent_id, parent_path, main_account_id) = match &user.parent {
            Some(parent_name) => {
                let parent = user_where(&mut tx, "username = $1", parent_name.as_str())
                    .await?
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("no parent user named {parent_name:?}"))
                    })?;
                (
                    Some(parent.id),
                    parent.path_for_children(),
                    parent.main_account_id,
                )
            }
            None => match grant_mains.first() {
                Some(main) => (None, String::new(), *main),
                None => {
                    return Err(StoreError::Invalid(
                        "a user needs a parent or an account grant".into(),
                    ));
                }
            },
        };
        if let Some(foreign) = grant_mains.iter().find(|m| **m != main_account_id) {
            return Err(StoreError::Invalid(format!(
                "cannot grant an account of main account {foreign} to a user of main account \
                     {main_account_id}"
            )));
        }
        let id = insert_user(&mut tx, user, parent_id, &parent_path, main_account_id).await?;
        tx.commit().await.db()?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.db()?;
        user_where(&mut conn, "username = $1", username).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.db()?;
        user_where(&mut conn, "id = $1", id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(rc_user_id))]
    async fn user_by_rc_user_id(&self, rc_user_id: i64) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.db()?;
        user_where(&mut conn, "rc_user_id = $1", rc_user_id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(root_id = root.id))]
    async fn user_subtree(&self, root: &UserRecord) -> Result<Vec<UserRecord>, StoreError> {
        let path = root.path_for_children();
        // Paths hold only digits and dots, so the LIKE pattern has no wildcard to escape.
        let sql = concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE id = $1 OR parent_path = $2 OR parent_path LIKE $3 ORDER BY id"
        );
        sqlx::query_as::<_, UserRow>(sql)
            .bind(root.id)
            .bind(&path)
            .bind(format!("{path}.%"))
            .fetch_all(&self.pool)
            .await
            .map(|rows| rows.into_iter().map(UserRecord::from).collect())
            .db()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(""), " FROM users ORDER BY id");
        sqlx::query_as::<_, UserRow>(sql)
            .fetch_all(&self.pool)
            .await
            .map(|rows| rows.into_iter().map(UserRecord::from).collect())
            .db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(enabled))]
    async fn set_user_enabled(
        &self,
        username: &str,
        enabled: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET enabled = $1, updated_at = $2 WHERE username = $3 RETURNING id",
        )
        .bind(enabled)
        .bind(now)
        .bind(username)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some(id) = id else { return Ok(false) };
        if !enabled {
            // For good: enabling again brings back API tokens only.
            end_credentials_in(&mut tx, id, false, RevokeReason::Disabled, now).await?;
        }
        let change = record_change(&mut tx, ChangeKind::User, &id.to_string(), now).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_password_hash(
        &self,
        username: &str,
        hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE username = $3 RETURNING id",
        )
        .bind(hash)
        .bind(now)
        .bind(username)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some(id) = id else { return Ok(false) };
        end_credentials_in(&mut tx, id, false, RevokeReason::PasswordChanged, now).await?;
        let change = record_change(&mut tx, ChangeKind::User, &id.to_string(), now).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(true)
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(api_tokens = end.api_tokens, reason = end.reason.as_str())
    )]
    async fn end_user_credentials(
        &self,
        username: &str,
        end: &EndCredentials<'_>,
        now: i64,
    ) -> Result<Option<RevokedCounts>, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        let Some(id) = id else { return Ok(None) };
        // Serialised with every API-token creation of the user (they take this lock too).
        Self::lock_user(&mut tx, id).await?;
        if let Some(hash) = end.new_password_hash {
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        let counts = end_credentials_in(&mut tx, id, end.api_tokens, end.reason, now).await?;
        let change = record_change(&mut tx, ChangeKind::User, &id.to_string(), now).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(Some(counts))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_user(&self, username: &str) -> Result<DeleteUser, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        let Some(id) = id else {
            return Ok(DeleteUser::NoSuchUser);
        };
        // Serialised with API-token creations and revocations of the user.
        Self::lock_user(&mut tx, id).await?;
        let children: Vec<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE parent_id = $1 ORDER BY username")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .db()?;
        if !children.is_empty() {
            return Ok(DeleteUser::HasChildren(children));
        }
        let mut delete = async |sql: &'static str| -> Result<u64, StoreError> {
            Ok(sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .db()?
                .rows_affected())
        };
        // Explicitly, not by ON DELETE CASCADE: SQLite enforces foreign keys only when
        // asked to per connection.
        delete(
            "DELETE FROM refresh_tokens WHERE session_id IN \
                 (SELECT id FROM sessions WHERE user_id = $1)",
        )
        .await?;
        let sessions = delete("DELETE FROM sessions WHERE user_id = $1").await?;
        let api_tokens = delete("DELETE FROM api_tokens WHERE user_id = $1").await?;
        let legacy_tokens = delete("DELETE FROM legacy_tokens WHERE user_id = $1").await?;
        let ringex_jwts = delete("DELETE FROM ringex_jwts WHERE user_id = $1").await?;
        let ringex_tokens = delete("DELETE FROM ringex_tokens WHERE user_id = $1").await?;
        delete("DELETE FROM ringex_refresh_tokens WHERE user_id = $1").await?;
        delete("DELETE FROM login_addresses WHERE user_id = $1").await?;
        delete("DELETE FROM user_grants WHERE user_id = $1").await?;
        delete("DELETE FROM users WHERE id = $1").await?;
        let change = record_change(&mut tx, ChangeKind::User, &id.to_string(), wall_ms()).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(DeleteUser::Deleted {
            id,
            ended: RevokedCounts {
                api_tokens,
                legacy_tokens,
                sessions,
                ringex_jwts,
                ringex_tokens,
            },
        })
    }
}

pub(super) async fn user_where(
    conn: &mut Conn,
    clause: &'static str,
    bind: impl for<'q> sqlx::Encode<'q, Db> + sqlx::Type<Db> + Send,
) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}");
    sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(bind)
        .fetch_optional(conn)
        .await
        .map(|r| r.map(UserRecord::from))
        .db()
}

pub(super) async fn insert_user(
    tx: &mut Conn,
    user: &NewUser,
    parent_id: Option<i64>,
    parent_path: &str,
    main_account_id: i64,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO users (username, platform_id, password_hash, first_name, last_name, enabled, \
         parent_id, parent_path, main_account_id, roles, created_at, updated_at, rc_user_id) \
         VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $8, $9, $10, $10, $11) RETURNING id",
    )
    .bind(&user.username)
    .bind(&user.platform_id)
    .bind(&user.password_hash)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(parent_id)
    .bind(parent_path)
    .bind(main_account_id)
    .bind(user.roles.join(","))
    .bind(user.now)
    .bind(user.rc_user_id)
    .fetch_one(&mut *tx)
    .await
    .db()
    .map_err(|e| match e {
        StoreError::Conflict(m) if m.contains("rc_user_id") => StoreError::Conflict(format!(
            "another user already has RingEX user id {}",
            user.rc_user_id.unwrap_or_default()
        )),
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("a user named {:?} already exists", user.username))
        }
        other => other,
    })?;
    let id: i64 = row.get(0);
    for account in &user.grants {
        sqlx::query("INSERT INTO user_grants (user_id, account_id) VALUES ($1, $2)")
            .bind(id)
            .bind(account)
            .execute(&mut *tx)
            .await
            .db()?;
    }
    Ok(id)
}

// ---- Revocation that evicts (issue 11).

/// Ends, inside the caller's transaction, the user's sessions, legacy auth tokens,
/// RingEX emulator JWT credentials and emulator access tokens, and with `api_tokens` its
/// API tokens; returns how many of each.
pub(super) async fn end_credentials_in(
    tx: &mut Conn,
    user_id: i64,
    api_tokens: bool,
    reason: RevokeReason,
    now: i64,
) -> Result<RevokedCounts, StoreError> {
    let sessions = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(user_id)
    .execute(&mut *tx)
    .await
    .db()?
    .rows_affected();
    let mut delete = async |sql: &'static str| -> Result<u64, StoreError> {
        Ok(sqlx::query(sql)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected())
    };
    let legacy_tokens = delete("DELETE FROM legacy_tokens WHERE user_id = $1").await?;
    let ringex_jwts = delete("DELETE FROM ringex_jwts WHERE user_id = $1").await?;
    let ringex_tokens = delete("DELETE FROM ringex_tokens WHERE user_id = $1").await?;
    // The emulator's refresh tokens end with its access tokens (counted as those).
    delete("DELETE FROM ringex_refresh_tokens WHERE user_id = $1").await?;
    let api_tokens = if api_tokens {
        delete("DELETE FROM api_tokens WHERE user_id = $1").await?
    } else {
        0
    };
    Ok(RevokedCounts {
        api_tokens,
        legacy_tokens,
        sessions,
        ringex_jwts,
        ringex_tokens,
    })
}
