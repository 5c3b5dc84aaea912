//! What the SQL backends share: the queries, written once, and the mapping of driver errors.
//!
//! SQLite and PostgreSQL run the same portable SQL (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`), so the [`Store`](cxauth_core::store::Store) implementation is written once in
//! [`sql_store!`] and expanded for each backend with its concrete types. A macro rather than a
//! generic type because sqlx's per-database trait bounds would otherwise have to be spelled out
//! on every query. The backends differ only in how a write transaction starts and how rows are
//! locked (see the `begin_write`, `lock_global`, `lock_user` and `lock_session` functions each
//! backend module defines).

use cxauth_core::store::{StoreError, UserRecord};

/// Advisory lock key serialising account id allocation and bootstrap.
pub(crate) const LOCK_ACCOUNTS: i64 = 0x6378_6175_7468_0001;
/// Advisory lock key serialising the creation of the first signing key.
pub(crate) const LOCK_SIGNING_KEYS: i64 = 0x6378_6175_7468_0002;
/// Sub-accounts a main account can hold: ids run from `main + 1` to `main + 9999`.
pub(crate) const MAX_SUB_ACCOUNTS: i64 = 9_999;
/// First main account id.
pub(crate) const FIRST_MAIN_ACCOUNT: i64 = 10_000_000;

/// Maps a driver error to the store's vocabulary: what a retry may fix is `Unavailable`.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: BUSY / LOCKED (and extended codes). PostgreSQL: connection exceptions
            // (08xxx), shutdown (57P0x), too many connections (53300), serialization (40001).
            let transient = matches!(code.as_ref(), "5" | "6" | "261" | "517" | "53300" | "40001")
                || code.starts_with("08")
                || code.starts_with("57P0");
            if transient {
                StoreError::Unavailable(format!("database: {}", db.message()))
            } else {
                StoreError::Internal(e.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: i64,
    username: String,
    platform_id: String,
    password_hash: String,
    first_name: String,
    last_name: String,
    enabled: bool,
    parent_id: Option<i64>,
    parent_path: String,
    main_account_id: i64,
    roles: String,
    created_at: i64,
    rc_user_id: Option<i64>,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: r.id,
            username: r.username,
            platform_id: r.platform_id,
            password_hash: r.password_hash,
            first_name: r.first_name,
            last_name: r.last_name,
            enabled: r.enabled,
            parent_id: r.parent_id,
            parent_path: r.parent_path,
            main_account_id: r.main_account_id,
            roles: r
                .roles
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: r.created_at,
            rc_user_id: r.rc_user_id,
        }
    }
}

/// The columns of [`UserRow`], each prefixed with `$p` (`""`, or `"u."` in joins): one list,
/// expanded at compile time, so the per-request look-ups run static SQL with no formatting.
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "username, ",
            $p,
            "platform_id, ",
            $p,
            "password_hash, ",
            $p,
            "first_name, ",
            $p,
            "last_name, ",
            $p,
            "enabled, ",
            $p,
            "parent_id, ",
            $p,
            "parent_path, ",
            $p,
            "main_account_id, ",
            $p,
            "roles, ",
            $p,
            "created_at, ",
            $p,
            "rc_user_id"
        )
    };
}
pub(crate) use user_columns;

/// [`user_columns!`] without a prefix, for the few queries that add their own clause.
pub(crate) const USER_COLUMNS: &str = user_columns!("");

/// Expands the [`Store`](cxauth_core::store::Store) implementation for `$Store`, whose pool is
/// `self.pool`, on database `$Db` with connection type `$Conn`.
macro_rules! sql_store {
    ($Store:ident, $Db:ty, $Conn:ty) => {
        use crate::sql::{
            map_err, UserRow, FIRST_MAIN_ACCOUNT, LOCK_ACCOUNTS, LOCK_SIGNING_KEYS,
            MAX_SUB_ACCOUNTS, USER_COLUMNS, user_columns,
        };
        use async_trait::async_trait;
        use cxauth_core::store::{
            AccountRow, AuditEvent, AuditFilter, Bootstrap, LegacyToken, PoolStats, StoredCounts, NewSession, NewUser, PurgeCounts, RevokeReason,
            RotateOutcome, Rotation, SessionState, Store, StoreError, StoredApiToken, StoredSigningKey, UserRecord,
        };
        use cxauth_core::store::{
            ApiTokenInsert, CredentialProof, EndCredentials, NewApiToken, RetiredSigningKey, RevokedCounts,
            RingexJwtInfo,
        };
        use cxauth_core::store::{AccountInfo, DeleteUser};
        use sqlx::Row as _;

        async fn user_where(
            conn: &mut $Conn,
            clause: &'static str,
            bind: impl for<'q> sqlx::Encode<'q, $Db> + sqlx::Type<$Db> + Send,
        ) -> Result<Option<UserRecord>, StoreError> {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}");
            sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
                .bind(bind)
                .fetch_optional(conn)
                .await
                .map(|r| r.map(UserRecord::from))
                .map_err(map_err)
        }

        async fn insert_user(
            tx: &mut $Conn,
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
            .map_err(|e| match map_err(e) {
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
                    .map_err(map_err)?;
            }
            Ok(id)
        }

        #[async_trait]
        impl Store for $Store {
            async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(stored)
            }

            async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
                let rows = sqlx::query(
                    "SELECT kid, public_key, sealed_private_key, created_at FROM signing_keys \
                     ORDER BY created_at, kid",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
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

            async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                insert_signing_key_in(&mut tx, key).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn init_signing_key(&self, key: &StoredSigningKey) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                Self::lock_global(&mut tx, LOCK_SIGNING_KEYS).await?;
                let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if existing > 0 {
                    return Ok(false);
                }
                insert_signing_key_in(&mut tx, key).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn bootstrap(&self, b: &Bootstrap) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
                let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if users > 0 || accounts > 0 {
                    return Ok(false);
                }
                let now = b.user.now;
                let main = create_main_in(&mut tx, &b.main_account_name, now).await?;
                create_sub_in(&mut tx, main, &b.sub_account_name, now).await?;
                let user = NewUser {
                    parent: None,
                    grants: vec![main],
                    ..b.user.clone()
                };
                insert_user(&mut tx, &user, None, "", main).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn create_main_account(&self, name: &str, now: i64) -> Result<i64, StoreError> {
                let mut tx = self.begin_write().await?;
                Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
                let id = create_main_in(&mut tx, name, now).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(id)
            }

            async fn create_sub_account(
                &self,
                main_id: i64,
                name: &str,
                now: i64,
            ) -> Result<i64, StoreError> {
                let mut tx = self.begin_write().await?;
                Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
                let id = create_sub_in(&mut tx, main_id, name, now).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(id)
            }

            async fn accounts_for_user(&self, user_id: i64) -> Result<Vec<AccountRow>, StoreError> {
                // A grant of a main account covers its sub-accounts; a grant of a sub-account, itself.
                let rows = sqlx::query(
                    "SELECT DISTINCT s.id, s.name, m.id, m.name, m.is_active \
                     FROM user_grants g \
                     JOIN accounts s ON s.id = g.account_id OR s.main_id = g.account_id \
                     JOIN accounts m ON m.id = s.main_id \
                     WHERE g.user_id = $1 \
                     ORDER BY s.id",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| AccountRow {
                        id: r.get(0),
                        name: r.get(1),
                        main_id: r.get(2),
                        main_name: r.get(3),
                        main_active: r.get(4),
                    })
                    .collect())
            }

            async fn create_user(&self, user: &NewUser) -> Result<i64, StoreError> {
                let mut tx = self.begin_write().await?;
                let mut grant_mains = Vec::new();
                for account in &user.grants {
                    let main: Option<Option<i64>> =
                        sqlx::query_scalar("SELECT main_id FROM accounts WHERE id = $1")
                            .bind(account)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(map_err)?;
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
                tx.commit().await.map_err(map_err)?;
                Ok(id)
            }

            async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
                let mut conn = self.pool.acquire().await.map_err(map_err)?;
                user_where(&mut conn, "username = $1", username).await
            }

            async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
                let mut conn = self.pool.acquire().await.map_err(map_err)?;
                user_where(&mut conn, "id = $1", id).await
            }

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
                    .map_err(map_err)
            }

            async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
                let sql = concat!("SELECT ", user_columns!(""), " FROM users ORDER BY id");
                sqlx::query_as::<_, UserRow>(sql)
                    .fetch_all(&self.pool)
                    .await
                    .map(|rows| rows.into_iter().map(UserRecord::from).collect())
                    .map_err(map_err)
            }

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
                .map_err(map_err)?;
                let Some(id) = id else { return Ok(false) };
                if !enabled {
                    // For good: enabling again brings back API tokens only.
                    end_credentials_in(&mut tx, id, false, RevokeReason::Disabled, now).await?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

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
                .map_err(map_err)?;
                let Some(id) = id else { return Ok(false) };
                end_credentials_in(&mut tx, id, false, RevokeReason::PasswordChanged, now).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                // The login checked a password against a hash read earlier; a password change or a
                // disable committed since must win, or the new session would outlive it.
                Self::lock_user(&mut tx, s.user_id).await?;
                let current: Option<(String, bool)> =
                    sqlx::query_as("SELECT password_hash, enabled FROM users WHERE id = $1")
                        .bind(s.user_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                match current {
                    Some((hash, true))
                        if s.expected_password_hash.as_deref().is_none_or(|h| h == hash) => {}
                    _ => return Err(StoreError::Conflict("the user changed during login".into())),
                }
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, created_at, expires_at, sso_login) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&s.session_id)
                .bind(s.user_id)
                .bind(s.now)
                .bind(s.refresh_expires_at)
                .bind(s.sso_login)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if s.max_sessions > 0 {
                    // The user row is locked (or the database is, on SQLite): concurrent logins of
                    // one user count each other, so the cap holds exactly.
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id IN \
                         (SELECT id FROM sessions WHERE user_id = $3 AND revoked_at IS NULL \
                         AND expires_at > $1 AND id <> $6 ORDER BY created_at DESC, id DESC \
                         LIMIT $4 OFFSET $5)",
                    )
                    .bind(s.now)
                    .bind("session_cap")
                    .bind(s.user_id)
                    .bind(i64::MAX)
                    .bind(i64::from(s.max_sessions) - 1)
                    .bind(&s.session_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                sqlx::query(
                    "INSERT INTO refresh_tokens (digest, session_id, issued_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(s.refresh_digest.as_slice())
                .bind(&s.session_id)
                .bind(s.now)
                .bind(s.refresh_expires_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

            async fn session_state(&self, session_id: &str) -> Result<Option<SessionState>, StoreError> {
                // Runs on every bearer request: static SQL, nothing formatted.
                let sql = concat!(
                    "SELECT s.revoked_at IS NOT NULL AS revoked, ",
                    user_columns!("u."),
                    " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
                );
                let row = sqlx::query(sql)
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let revoked: bool = row.get(0);
                let user = <UserRow as sqlx::FromRow<_>>::from_row(&row).map_err(map_err)?;
                Ok(Some(SessionState {
                    revoked,
                    user: user.into(),
                }))
            }

            async fn rotate_refresh_token(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
                let mut tx = self.begin_write().await?;
                let session_id: Option<String> =
                    sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE digest = $1")
                        .bind(r.presented.as_slice())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                let Some(session_id) = session_id else {
                    return Ok(RotateOutcome::Invalid);
                };
                // Every rotation of one session runs under the session's lock, so concurrent refreshes
                // (on any instance) see each other's results and the session never forks.
                Self::lock_session(&mut tx, &session_id).await?;
                let row = sqlx::query(
                    "SELECT t.session_id, t.expires_at, t.rotated_at, s.revoked_at, s.user_id, s.sso_login \
                     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.digest = $1",
                )
                .bind(r.presented.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some(row) = row else {
                    return Ok(RotateOutcome::Invalid);
                };
                let session_id: String = row.get(0);
                let expires_at: i64 = row.get(1);
                let rotated_at: Option<i64> = row.get(2);
                let revoked_at: Option<i64> = row.get(3);
                let user_id: i64 = row.get(4);
                let sso_login: bool = row.get(5);
                if revoked_at.is_some() || expires_at <= r.now {
                    return Ok(RotateOutcome::Invalid);
                }
                if let Some(rotated) = rotated_at
                    && r.now - rotated > r.grace_ms
                {
                    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3")
                        .bind(r.now)
                        .bind(RevokeReason::Reuse.as_str())
                        .bind(&session_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    return Ok(RotateOutcome::Reused {
                        session_id,
                        user_id,
                    });
                }
                let Some(user) = user_where(&mut tx, "id = $1", user_id).await? else {
                    return Ok(RotateOutcome::Invalid);
                };
                if !user.enabled {
                    return Ok(RotateOutcome::Invalid);
                }
                // Retire every live token of the session (the presented one, or on a grace retry the
                // successor issued moments ago), so the session always has exactly one live token.
                sqlx::query(
                    "UPDATE refresh_tokens SET rotated_at = $1 WHERE session_id = $2 AND rotated_at IS NULL",
                )
                .bind(r.now)
                .bind(&session_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (digest, session_id, issued_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(r.successor.as_slice())
                .bind(&session_id)
                .bind(r.now)
                .bind(r.successor_expires_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id = $2")
                    .bind(r.successor_expires_at)
                    .bind(&session_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(RotateOutcome::Rotated {
                    session_id,
                    user: Box::new(user),
                    sso_login,
                })
            }

            async fn revoke_session_by_refresh(
                &self,
                digest: &[u8; 32],
                reason: RevokeReason,
                now: i64,
            ) -> Result<Option<i64>, StoreError> {
                let mut tx = self.begin_write().await?;
                let found: Option<(String, i64)> = sqlx::query_as(
                    "SELECT r.session_id, s.user_id FROM refresh_tokens r \
                     JOIN sessions s ON s.id = r.session_id \
                     WHERE r.digest = $1 AND r.expires_at > $2",
                )
                .bind(digest.as_slice())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some((session_id, user_id)) = found else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                     WHERE id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(reason.as_str())
                .bind(&session_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(Some(user_id))
            }

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
                .map_err(map_err)
            }

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
                    .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let user: UserRecord = <UserRow as sqlx::FromRow<_>>::from_row(&row)
                    .map_err(map_err)?
                    .into();
                Ok(Some((
                    StoredApiToken {
                        id: row.get("token_id"),
                        user_id: user.id,
                        sealed: row.get("sealed"),
                    },
                    user,
                )))
            }

            async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<StoredApiToken>, StoreError> {
                let rows = sqlx::query("SELECT id, sealed FROM api_tokens WHERE user_id = $1 ORDER BY id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| StoredApiToken {
                        id: r.get(0),
                        user_id,
                        sealed: r.get(1),
                    })
                    .collect())
            }

            async fn delete_api_token(&self, id: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn user_by_rc_user_id(&self, rc_user_id: i64) -> Result<Option<UserRecord>, StoreError> {
                let mut conn = self.pool.acquire().await.map_err(map_err)?;
                user_where(&mut conn, "rc_user_id = $1", rc_user_id).await
            }

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
                let current: Option<(String, bool)> =
                    sqlx::query_as("SELECT password_hash, enabled FROM users WHERE id = $1")
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                match current {
                    Some((hash, true)) if expected_password_hash.is_none_or(|h| h == hash) => {}
                    _ => return Err(StoreError::Conflict("the user changed during login".into())),
                }
                sqlx::query(
                    "INSERT INTO legacy_tokens (digest, user_id, created_at, expires_at, lifetime_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(digest.as_slice())
                .bind(user_id)
                .bind(now)
                .bind(token.expires_at)
                .bind(token.lifetime_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

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
                    .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let user: UserRecord = <UserRow as sqlx::FromRow<_>>::from_row(&row)
                    .map_err(map_err)?
                    .into();
                Ok(Some((
                    LegacyToken {
                        expires_at: row.get("token_expires_at"),
                        lifetime_ms: row.get("lifetime_ms"),
                    },
                    user,
                )))
            }

            async fn extend_legacy_token(
                &self,
                digest: &[u8; 32],
                expires_at: i64,
            ) -> Result<bool, StoreError> {
                // Never shortens: concurrent uses may arrive out of order.
                let done = sqlx::query(
                    "UPDATE legacy_tokens SET expires_at = $1 WHERE digest = $2 AND expires_at < $1",
                )
                .bind(expires_at)
                .bind(digest.as_slice())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            }

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
                .map_err(map_err)?;
                Ok(())
            }

            async fn ringex_app_secret_hash(&self, client_id: &str) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("SELECT secret_hash FROM ringex_apps WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

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
                    .map_err(map_err)?;
                Ok(())
            }

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
                    .map_err(map_err)
            }

            async fn insert_ringex_token(
                &self,
                digest: &[u8; 32],
                user_id: i64,
                now: i64,
                expires_at: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO ringex_tokens (digest, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(digest.as_slice())
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

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
                    .map_err(map_err)
            }

            async fn purge_expired(
                &self,
                now: i64,
                batch: i64,
            ) -> Result<PurgeCounts, StoreError> {
                // One short transaction per table and batch: a purge never holds the write lock
                // for long, so logins keep flowing while it runs.
                let mut counts = [0u64; 6];
                for (n, sql) in [
                    "DELETE FROM refresh_tokens WHERE digest IN \
                     (SELECT digest FROM refresh_tokens WHERE expires_at <= $1 LIMIT $2)",
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                     WHERE expires_at <= $1 OR revoked_at <= $1 LIMIT $2)",
                    "DELETE FROM legacy_tokens WHERE digest IN \
                     (SELECT digest FROM legacy_tokens WHERE expires_at <= $1 LIMIT $2)",
                    "DELETE FROM ringex_tokens WHERE digest IN \
                     (SELECT digest FROM ringex_tokens WHERE expires_at <= $1 LIMIT $2)",
                    "DELETE FROM login_throttle WHERE throttle_key IN \
                     (SELECT throttle_key FROM login_throttle WHERE expires_at <= $1 LIMIT $2)",
                    "DELETE FROM login_addresses WHERE pair IN \
                     (SELECT pair FROM login_addresses WHERE expires_at <= $1 LIMIT $2)",
                ]
                .into_iter()
                .enumerate()
                {
                    let mut tx = self.begin_write().await?;
                    counts[n] = sqlx::query(sql)
                        .bind(now)
                        .bind(batch)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?
                        .rows_affected();
                    tx.commit().await.map_err(map_err)?;
                }
                Ok(PurgeCounts {
                    refresh_tokens: counts[0],
                    sessions: counts[1],
                    legacy_tokens: counts[2],
                    ringex_tokens: counts[3],
                    audit_events: 0,
                    login_throttle: counts[4] + counts[5],
                })
            }

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
                .map_err(map_err)?;
                let kids: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM signing_keys WHERE created_at < \
                     (SELECT MAX(created_at) FROM signing_keys WHERE created_at <= $1) \
                     RETURNING kid",
                )
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(kids)
            }

            async fn purge_audit(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query(
                    "DELETE FROM audit_events WHERE id IN \
                     (SELECT id FROM audit_events WHERE at < $1 LIMIT $2)",
                )
                .bind(before)
                .bind(batch)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                tx.commit().await.map_err(map_err)?;
                Ok(n)
            }

            async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO audit_events \
                     (at, event, outcome, user_id, username, addr, request_id, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(e.at)
                .bind(&e.event)
                .bind(&e.outcome)
                .bind(e.user_id)
                .bind(&e.username)
                .bind(&e.addr)
                .bind(&e.request_id)
                .bind(&e.detail)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn audit_events(
                &self,
                f: &AuditFilter,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                type Row = (
                    i64,
                    i64,
                    String,
                    String,
                    Option<i64>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    String,
                );
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT id, at, event, outcome, user_id, username, addr, request_id, detail \
                     FROM audit_events \
                     WHERE at >= $1 AND id > $2 AND ($3 IS NULL OR username = $3) \
                     ORDER BY id LIMIT $4",
                )
                .bind(f.since)
                .bind(f.after_id)
                .bind(&f.username)
                .bind(f.limit)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(id, at, event, outcome, user_id, username, addr, request_id, detail)| {
                            AuditEvent {
                                id,
                                at,
                                event,
                                outcome,
                                user_id,
                                username,
                                addr,
                                request_id,
                                detail,
                            }
                        },
                    )
                    .collect())
            }

            fn pool_stats(&self) -> PoolStats {
                PoolStats {
                    open: self.pool.size(),
                    idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn stored_counts(&self) -> Result<StoredCounts, StoreError> {
                let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
                    "SELECT \
                     (SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL), \
                     (SELECT COUNT(*) FROM sessions), \
                     (SELECT COUNT(*) FROM refresh_tokens), \
                     (SELECT COUNT(*) FROM api_tokens), \
                     (SELECT COUNT(*) FROM legacy_tokens), \
                     (SELECT COUNT(*) FROM audit_events)",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(StoredCounts {
                    live_sessions: row.0,
                    sessions: row.1,
                    refresh_tokens: row.2,
                    api_tokens: row.3,
                    legacy_tokens: row.4,
                    audit_events: row.5,
                })
            }

            // Login throttling.

            async fn throttle_update(
                &self,
                key: &[u8; 32],
                update: cxauth_core::throttle::ThrottleUpdate<'_>,
            ) -> Result<Option<cxauth_core::throttle::ThrottleEntry>, StoreError> {
                use cxauth_core::throttle::ThrottleEntry;
                let mut tx = self.begin_write().await?;
                // PostgreSQL: makes sure the row exists, then locks it, so concurrent updates from
                // every instance queue on it. SQLite: the write transaction already serialises.
                Self::lock_throttle(&mut tx, key).await?;
                let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT failures, last_failure, blocked_until, expires_at \
                     FROM login_throttle WHERE throttle_key = $1",
                )
                .bind(key.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                // A placeholder row (all zero) made by the lock is no entry.
                let old = row
                    .filter(|r| r.0 > 0 || r.3 > 0)
                    .map(|(failures, last_failure, blocked_until, expires_at)| ThrottleEntry {
                        failures: u32::try_from(failures).unwrap_or(u32::MAX),
                        last_failure,
                        blocked_until,
                        expires_at,
                    });
                match update(old) {
                    Some(e) => {
                        sqlx::query(
                            "INSERT INTO login_throttle \
                             (throttle_key, failures, last_failure, blocked_until, expires_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (throttle_key) DO UPDATE SET \
                             failures = excluded.failures, last_failure = excluded.last_failure, \
                             blocked_until = excluded.blocked_until, expires_at = excluded.expires_at",
                        )
                        .bind(key.as_slice())
                        .bind(i64::from(e.failures))
                        .bind(e.last_failure)
                        .bind(e.blocked_until)
                        .bind(e.expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    }
                    None => {
                        sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
                            .bind(key.as_slice())
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                    }
                }
                tx.commit().await.map_err(map_err)?;
                Ok(old)
            }

            async fn login_address_known(&self, pair: &[u8; 32], now: i64) -> Result<bool, StoreError> {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT user_id FROM login_addresses WHERE pair = $1 AND expires_at > $2",
                )
                .bind(pair.as_slice())
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(found.is_some())
            }

            async fn remember_login_address(
                &self,
                pair: &[u8; 32],
                user_id: i64,
                now: i64,
                expires_at: i64,
                keep: u32,
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO login_addresses (pair, user_id, last_login, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (pair) DO UPDATE SET \
                     user_id = excluded.user_id, last_login = excluded.last_login, \
                     expires_at = excluded.expires_at",
                )
                .bind(pair.as_slice())
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                // Bounded per user: the oldest addresses beyond `keep` are forgotten.
                sqlx::query(
                    "DELETE FROM login_addresses WHERE pair IN (SELECT pair FROM login_addresses \
                     WHERE user_id = $1 ORDER BY last_login DESC, pair LIMIT $2 OFFSET $3)",
                )
                .bind(user_id)
                .bind(i64::MAX)
                .bind(i64::from(keep))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            // ---- Revocation that evicts, the API-token cap, retired signing keys (issue 11).

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
                    .map_err(map_err)?;
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
                        .map_err(map_err)?;
                }
                let counts = end_credentials_in(&mut tx, id, end.api_tokens, end.reason, now).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(Some(counts))
            }

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
                    .map_err(map_err)?;
                if enabled != Some(true) {
                    return Ok(ApiTokenInsert::CredentialGone);
                }
                let stands: Option<i64> = match t.proof {
                    CredentialProof::Session(sid) => sqlx::query_scalar(
                        "SELECT user_id FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                    )
                    .bind(sid)
                    .bind(t.user_id)
                    .fetch_optional(&mut *tx)
                    .await,
                    CredentialProof::ApiToken(d) => {
                        sqlx::query_scalar("SELECT user_id FROM api_tokens WHERE digest = $1 AND user_id = $2")
                            .bind(d.as_slice())
                            .bind(t.user_id)
                            .fetch_optional(&mut *tx)
                            .await
                    }
                    CredentialProof::LegacyToken(d) => sqlx::query_scalar(
                        "SELECT user_id FROM legacy_tokens WHERE digest = $1 AND user_id = $2 AND expires_at > $3",
                    )
                    .bind(d.as_slice())
                    .bind(t.user_id)
                    .bind(t.now)
                    .fetch_optional(&mut *tx)
                    .await,
                }
                .map_err(map_err)?;
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
                .map_err(map_err)?;
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
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(ApiTokenInsert::Created(id))
            }

            async fn ringex_jwts(&self, username: Option<&str>) -> Result<Vec<RingexJwtInfo>, StoreError> {
                let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
                    "SELECT j.id, j.user_id, u.username, j.created_at \
                     FROM ringex_jwts j JOIN users u ON u.id = j.user_id \
                     WHERE $1 IS NULL OR u.username = $1 ORDER BY j.id",
                )
                .bind(username)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
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

            async fn revoke_ringex_jwt(&self, id: i64) -> Result<Option<RingexJwtInfo>, StoreError> {
                let mut tx = self.begin_write().await?;
                let row: Option<(i64, String, i64)> = sqlx::query_as(
                    "SELECT j.user_id, u.username, j.created_at \
                     FROM ringex_jwts j JOIN users u ON u.id = j.user_id WHERE j.id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some((user_id, username, created_at)) = row else { return Ok(None) };
                Self::lock_user(&mut tx, user_id).await?;
                sqlx::query("DELETE FROM ringex_jwts WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query("DELETE FROM ringex_tokens WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(Some(RingexJwtInfo {
                    id,
                    user_id,
                    username,
                    created_at,
                }))
            }

            async fn retired_signing_keys(&self) -> Result<Vec<RetiredSigningKey>, StoreError> {
                let rows: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT kid, public_key, retired_at FROM retired_signing_keys ORDER BY retired_at, kid",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(kid, public_key, retired_at)| RetiredSigningKey {
                        kid,
                        public_key,
                        retired_at,
                    })
                    .collect())
            }

            async fn forget_retired_signing_keys(&self, before: i64) -> Result<Vec<String>, StoreError> {
                let mut tx = self.begin_write().await?;
                let kids: Vec<String> =
                    sqlx::query_scalar("DELETE FROM retired_signing_keys WHERE retired_at < $1 RETURNING kid")
                        .bind(before)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(kids)
            }

            // ---- Listing accounts and deleting users (issue 12).

            async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
                let rows: Vec<(i64, String, Option<i64>, bool)> = sqlx::query_as(
                    "SELECT id, name, main_id, is_active FROM accounts ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, main_id, active)| AccountInfo {
                        id,
                        name,
                        main_account_id: main_id.unwrap_or(id),
                        active,
                    })
                    .collect())
            }

            async fn delete_user(&self, username: &str) -> Result<DeleteUser, StoreError> {
                let mut tx = self.begin_write().await?;
                let id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let Some(id) = id else { return Ok(DeleteUser::NoSuchUser) };
                // Serialised with API-token creations and revocations of the user.
                Self::lock_user(&mut tx, id).await?;
                let children: Vec<String> =
                    sqlx::query_scalar("SELECT username FROM users WHERE parent_id = $1 ORDER BY username")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                if !children.is_empty() {
                    return Ok(DeleteUser::HasChildren(children));
                }
                let mut delete = async |sql: &'static str| -> Result<u64, StoreError> {
                    Ok(sqlx::query(sql)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?
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
                delete("DELETE FROM login_addresses WHERE user_id = $1").await?;
                delete("DELETE FROM user_grants WHERE user_id = $1").await?;
                delete("DELETE FROM users WHERE id = $1").await?;
                tx.commit().await.map_err(map_err)?;
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

        async fn insert_signing_key_in(
            conn: &mut $Conn,
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
            .map_err(map_err)?;
            Ok(())
        }

        async fn create_main_in(
            tx: &mut $Conn,
            name: &str,
            now: i64,
        ) -> Result<i64, StoreError> {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(id) FROM accounts WHERE main_id IS NULL")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
            let id = last.map_or(FIRST_MAIN_ACCOUNT, |l| l + MAX_SUB_ACCOUNTS + 1);
            sqlx::query("INSERT INTO accounts (id, name, main_id, is_active, created_at) VALUES ($1, $2, NULL, TRUE, $3)")
                .bind(id)
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            Ok(id)
        }

        async fn create_sub_in(
            tx: &mut $Conn,
            main_id: i64,
            name: &str,
            now: i64,
        ) -> Result<i64, StoreError> {
            let main: Option<Option<i64>> =
                sqlx::query_scalar("SELECT main_id FROM accounts WHERE id = $1")
                    .bind(main_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
            match main {
                None => {
                    return Err(StoreError::NotFound(format!(
                        "no main account with id {main_id}"
                    )));
                }
                Some(Some(_)) => {
                    return Err(StoreError::Invalid(format!(
                        "account {main_id} is a sub-account; give the id of a main account"
                    )));
                }
                Some(None) => {}
            }
            let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM accounts WHERE main_id = $1")
                .bind(main_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
            let id = last.unwrap_or(main_id) + 1;
            if id - main_id > MAX_SUB_ACCOUNTS {
                return Err(StoreError::Invalid(format!(
                    "main account {main_id} already holds {MAX_SUB_ACCOUNTS} sub-accounts"
                )));
            }
            sqlx::query("INSERT INTO accounts (id, name, main_id, is_active, created_at) VALUES ($1, $2, $3, TRUE, $4)")
                .bind(id)
                .bind(name)
                .bind(main_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            Ok(id)
        }

        // ---- Revocation that evicts (issue 11).

        /// Ends, inside the caller's transaction, the user's sessions, legacy auth tokens,
        /// RingEX emulator JWT credentials and emulator access tokens, and with `api_tokens` its
        /// API tokens; returns how many of each.
        async fn end_credentials_in(
            tx: &mut $Conn,
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
            .map_err(map_err)?
            .rows_affected();
            let mut delete = async |sql: &'static str| -> Result<u64, StoreError> {
                Ok(sqlx::query(sql)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected())
            };
            let legacy_tokens = delete("DELETE FROM legacy_tokens WHERE user_id = $1").await?;
            let ringex_jwts = delete("DELETE FROM ringex_jwts WHERE user_id = $1").await?;
            let ringex_tokens = delete("DELETE FROM ringex_tokens WHERE user_id = $1").await?;
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
    };
}

pub(crate) use sql_store;
