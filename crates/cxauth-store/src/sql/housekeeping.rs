//! Purges, counts for the metrics, pool use and close.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use crate::sql::DbResult as _;
use async_trait::async_trait;
use cxauth_core::store::{Housekeeping, PoolStats, PurgeCounts, StoreError, StoredCounts};

#[async_trait]
impl Housekeeping for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(batch))]
    async fn purge_expired(&self, now: i64, batch: i64) -> Result<PurgeCounts, StoreError> {
        // One short transaction per table and batch: a purge never holds the write lock
        // for long, so logins keep flowing while it runs.
        let mut counts = [0u64; 7];
        for (n, sql) in [
            "DELETE FROM refresh_tokens WHERE digest IN (SELECT digest FROM refresh_tokens \
                 WHERE expires_at <= $1 LIMIT CAST($2 AS BIGINT))",
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE expires_at <= $1 OR revoked_at <= $1 LIMIT CAST($2 AS BIGINT))",
            "DELETE FROM legacy_tokens WHERE digest IN (SELECT digest FROM legacy_tokens \
                 WHERE expires_at <= $1 LIMIT CAST($2 AS BIGINT))",
            "DELETE FROM ringex_tokens WHERE digest IN (SELECT digest FROM ringex_tokens \
                 WHERE expires_at <= $1 LIMIT CAST($2 AS BIGINT))",
            "DELETE FROM login_throttle WHERE throttle_key IN (SELECT throttle_key \
                 FROM login_throttle WHERE expires_at <= $1 LIMIT CAST($2 AS BIGINT))",
            "DELETE FROM login_addresses WHERE pair IN (SELECT pair FROM login_addresses \
                 WHERE expires_at <= $1 LIMIT CAST($2 AS BIGINT))",
            "DELETE FROM ringex_refresh_tokens WHERE login_id IN (SELECT login_id \
                 FROM ringex_refresh_tokens WHERE expires_at <= $1 LIMIT CAST($2 AS BIGINT))",
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
                .db()?
                .rows_affected();
            tx.commit().await.db()?;
        }
        Ok(PurgeCounts {
            refresh_tokens: counts[0],
            sessions: counts[1],
            legacy_tokens: counts[2],
            // The emulator's refresh tokens are counted with its access tokens: one kind of
            // credential for operators, and the counts' shape stays as the CLI prints it.
            ringex_tokens: counts[3] + counts[6],
            audit_events: 0,
            login_throttle: counts[4] + counts[5],
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(batch))]
    async fn purge_audit(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE at < $1 LIMIT CAST($2 AS BIGINT))",
        )
        .bind(before)
        .bind(batch)
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        tx.commit().await.db()?;
        Ok(n)
    }

    #[tracing::instrument(level = "debug", skip_all)]
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
        .db()?;
        Ok(StoredCounts {
            live_sessions: row.0,
            sessions: row.1,
            refresh_tokens: row.2,
            api_tokens: row.3,
            legacy_tokens: row.4,
            audit_events: row.5,
        })
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn close(&self) {
        self.pool.close().await;
    }
}
