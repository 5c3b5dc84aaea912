//! Login throttling entries and remembered login addresses.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use crate::sql::{DbResult as _, no_limit};
use async_trait::async_trait;
use cxauth_core::store::{StoreError, ThrottleStore};

#[async_trait]
impl ThrottleStore for Backend {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn throttle_update(
        &self,
        key: &[u8; 32],
        update: cxauth_core::throttle::ThrottleUpdate<'_>,
    ) -> Result<Option<cxauth_core::throttle::ThrottleEntry>, StoreError> {
        use cxauth_core::store::ThrottleEntry;
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
        .db()?;
        // A placeholder row (all zero) made by the lock is no entry.
        let old = row.filter(|r| r.0 > 0 || r.3 > 0).map(
            |(failures, last_failure, blocked_until, expires_at)| ThrottleEntry {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                last_failure,
                blocked_until,
                expires_at,
            },
        );
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
                .db()?;
            }
            None => {
                sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
                    .bind(key.as_slice())
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
        }
        tx.commit().await.db()?;
        Ok(old)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn login_address_known(
        &self,
        pair: &[u8; 32],
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT expires_at FROM login_addresses WHERE pair = $1 AND expires_at > $2",
        )
        .bind(pair.as_slice())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn remember_login_address(
        &self,
        pair: &[u8; 32],
        user_id: i64,
        now: i64,
        expires_at: i64,
        keep: u32,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // PostgreSQL: logins of one user on every instance take their turn on the user's row,
        // so each trim below sees the addresses the others remembered and the bound holds
        // exactly. SQLite: the write transaction already serialises.
        Self::lock_user(&mut tx, user_id).await?;
        sqlx::query(REMEMBER_ADDRESS)
            .bind(pair.as_slice())
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .db()?;
        // Bounded per user: the oldest addresses beyond `keep` are forgotten.
        sqlx::query(FORGET_OLD_ADDRESSES)
            .bind(user_id)
            .bind(i64::from(keep))
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()
    }
}

/// Remembers a login address: `$1` the pair digest, `$2` the user, `$3` now, `$4` until when.
/// Shared with the SQLite writer thread (`sqlite/writer.rs`), as is the next one.
pub(crate) const REMEMBER_ADDRESS: &str = "INSERT INTO login_addresses \
     (pair, user_id, last_login, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (pair) \
     DO UPDATE SET user_id = excluded.user_id, last_login = excluded.last_login, \
     expires_at = excluded.expires_at";

/// Forgets the user's (`$1`) oldest addresses beyond the `$2` most recent. "No limit" is a
/// literal, not a parameter: see `crate::sql::no_limit!`.
pub(crate) const FORGET_OLD_ADDRESSES: &str = concat!(
    "DELETE FROM login_addresses WHERE pair IN (SELECT pair FROM login_addresses \
     WHERE user_id = $1 ORDER BY last_login DESC, pair LIMIT ",
    no_limit!(),
    " OFFSET $2)"
);
