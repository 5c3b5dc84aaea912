//! The PostgreSQL backend, for several stateless cxauth instances on one database.
//!
//! Transactions run at READ COMMITTED; what must not interleave is serialised explicitly:
//! rotations of one session lock the session row (`FOR UPDATE`), so concurrent refreshes of one
//! token on any number of instances queue and see each other's result; a login's new session
//! locks the user row, so a concurrent disable or password change cannot be overtaken; account
//! id allocation, bootstrap and the first signing key take transaction-scoped advisory locks.
//! Migrations are applied on start under sqlx's advisory lock, so instances may start together.

// Each file under `sql/` is compiled once per dialect, here and in the other backend module.
#![allow(clippy::duplicate_mod)]

use crate::StoreOptions;
use crate::sql::{DbResult as _, map_err};
use crate::url::DatabaseUrl;
use cxauth_core::store::{ChangeWaker, RotateOutcome, Rotation, StoreError};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::str::FromStr as _;

/// PostgreSQL implementation of [`Store`](cxauth_core::store::Store).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates.
    pub async fn open(url: &DatabaseUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        let DatabaseUrl::Postgres { url } = url else {
            return Err(StoreError::Invalid("not a PostgreSQL URL".into()));
        };
        let connect = PgConnectOptions::from_str(url.expose())
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?
            .application_name("cxauth");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .db()?;
        crate::migrations::POSTGRES
            .run(&pool)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => map_err(e),
                other => StoreError::Internal(format!("migration failed: {other}")),
            })?;
        Ok(PgStore { pool })
    }

    /// One rotation in its own transaction, under the session's row lock: PostgreSQL lets
    /// rotations of different sessions commit in parallel, so there is nothing to group.
    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let (outcome, change) = sessions::rotate_in(&mut tx, r).await?;
        let committed = tx.commit().await.db();
        if let Some(change) = change {
            change.announce(self.local_key());
        }
        committed?;
        Ok(outcome)
    }

    /// Nothing to wait for: PostgreSQL takes concurrent writers itself (SQLite's backend queues
    /// its single-statement writes here).
    async fn single_write(&self) {}

    /// Declines: PostgreSQL writes a login's session (or legacy token), address and audit
    /// event one after the other (`create_login_session`, `create_legacy_login`), as before the
    /// SQLite writer took them as one.
    async fn login_in_one_commit(
        &self,
        _: crate::sql::LoginStart<'_>,
        _: Option<&cxauth_core::store::RememberAddress>,
        _: &cxauth_core::store::AuditEvent,
    ) -> Option<Result<(), StoreError>> {
        None
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.db()
    }

    async fn lock_global(conn: &mut PgConnection, key: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(conn)
            .await
            .db()?;
        Ok(())
    }

    async fn lock_user(conn: &mut PgConnection, id: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(conn)
            .await
            .db()?;
        Ok(())
    }

    /// Locks the session the refresh token `digest` belongs to, in one statement; `false` if
    /// no such token exists.
    async fn lock_session_of_refresh(
        conn: &mut PgConnection,
        digest: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let locked = sqlx::query(
            "SELECT s.id FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id \
             WHERE t.digest = $1 FOR UPDATE OF s",
        )
        .bind(digest.as_slice())
        .fetch_optional(conn)
        .await
        .db()?;
        Ok(locked.is_some())
    }

    /// The writes of a rotation as one statement (data-modifying CTEs all run, to completion,
    /// whether or not the main statement reads them), so they cost one round trip instead of
    /// three ($1 successor digest, $2 session id, $3 now, $4 the successor's expiry, $5 the
    /// session's if it must move).
    pub(crate) const ROTATE_WRITES: &str = concat!(
        "WITH retired AS (UPDATE refresh_tokens SET rotated_at = $3 ",
        "WHERE session_id = $2 AND rotated_at IS NULL), ",
        "extended AS (UPDATE sessions SET expires_at = $5 WHERE id = $2 AND expires_at < $4) ",
        "INSERT INTO refresh_tokens (digest, session_id, issued_at, expires_at) ",
        "VALUES ($1, $2, $3, $4)"
    );

    async fn lock_throttle(conn: &mut PgConnection, key: &[u8; 32]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO login_throttle \
             (throttle_key, failures, last_failure, blocked_until, expires_at) \
             VALUES ($1, 0, 0, 0, 0) ON CONFLICT (throttle_key) DO NOTHING",
        )
        .bind(key.as_slice())
        .execute(&mut *conn)
        .await
        .db()?;
        sqlx::query("SELECT throttle_key FROM login_throttle WHERE throttle_key = $1 FOR UPDATE")
            .bind(key.as_slice())
            .execute(&mut *conn)
            .await
            .db()?;
        Ok(())
    }
}

impl crate::sql::Watch for PgStore {
    /// Listens for the change log's `NOTIFY` on a connection of its own, reconnecting after a
    /// second whenever it drops, until the pool closes. Each (re)connection wakes the reader
    /// too, since rows may have committed while nobody listened; in between, the reader's own
    /// periodic read is the backstop.
    fn watch(&self, wake: ChangeWaker) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while !pool.is_closed() {
                if let Err(e) = listen(&pool, &wake).await
                    && !pool.is_closed()
                {
                    tracing::warn!(error = %e, "the credential change channel dropped; reconnecting");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

/// One life of the change listener: returns when its connection fails.
async fn listen(pool: &PgPool, wake: &ChangeWaker) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(crate::sql::CHANGES_CHANNEL).await?;
    wake(0);
    loop {
        match listener.try_recv().await? {
            Some(n) => wake(n.payload().parse().unwrap_or(0)),
            // The connection was lost (and is re-established by the next call): anything
            // announced meanwhile is gone, so the reader reads the log now.
            None => wake(0),
        }
    }
}

// The store traits, one file per concern under `sql/`, compiled here for this dialect (see
// `crate::sql`).
type Backend = PgStore;
type Db = Postgres;
type Conn = PgConnection;

#[path = "sql/accounts.rs"]
mod accounts;
#[path = "sql/agents.rs"]
mod agents;
#[path = "sql/api_tokens.rs"]
mod api_tokens;
#[path = "sql/audit.rs"]
mod audit;
#[path = "sql/changes.rs"]
mod changes;
#[path = "sql/housekeeping.rs"]
mod housekeeping;
#[path = "sql/keys.rs"]
mod keys;
#[path = "sql/legacy.rs"]
mod legacy;
#[path = "sql/meta.rs"]
mod meta;
#[path = "sql/ringex.rs"]
mod ringex;
#[path = "sql/sessions.rs"]
mod sessions;
#[path = "sql/throttle.rs"]
mod throttle;
#[path = "sql/users.rs"]
mod users;

#[cfg(test)]
mod tests {
    use super::*;

    /// The write of last uses finds each token by its primary key, never through the digest's
    /// unique index, a random page per use: with 1M tokens, 100,000 first uses took 24% less
    /// time by the primary key (docs/decisions.md). PostgreSQL picked the digest's index for a
    /// check on both columns whatever the table's size, so the fresh schema shows it too.
    #[tokio::test]
    async fn the_last_use_write_finds_tokens_by_primary_key_not_by_digest() {
        let Some(url) = crate::testing::scratch_url_or_skip("postgres plan").await else {
            return;
        };
        let store = PgStore::open(
            &DatabaseUrl::parse(&url).expect("url"),
            &StoreOptions::default(),
        )
        .await
        .expect("open");
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN {}",
            api_tokens::uses_upsert(2)
        )))
        .bind(1_i64)
        .bind(vec![1_u8; 32])
        .bind(5_i64)
        .bind(2_i64)
        .bind(vec![2_u8; 32])
        .bind(5_i64)
        .fetch_all(&store.pool)
        .await
        .expect("explain");
        assert!(
            plan.iter().any(|l| l.contains("using api_tokens_pkey")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|l| l.contains("api_tokens_digest_key")),
            "{plan:#?}"
        );
    }
}
