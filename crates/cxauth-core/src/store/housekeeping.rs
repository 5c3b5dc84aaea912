//! Housekeeping: purging what can never be used again, counts and pool use for the metrics, close.

use super::StoreError;
use async_trait::async_trait;

/// Rows removed by a purge, per table, so operators see what housekeeping did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeCounts {
    /// Expired refresh tokens (not counting those removed with their session).
    pub refresh_tokens: u64,
    /// Expired or ended sessions.
    pub sessions: u64,
    /// Expired legacy auth tokens.
    pub legacy_tokens: u64,
    /// Expired RingEX emulator access tokens and refresh tokens.
    pub ringex_tokens: u64,
    /// Audit events past their retention.
    pub audit_events: u64,
    /// Expired login throttle entries and remembered login addresses.
    pub login_throttle: u64,
}

impl PurgeCounts {
    /// All rows removed.
    pub fn total(&self) -> u64 {
        self.refresh_tokens
            + self.sessions
            + self.legacy_tokens
            + self.ringex_tokens
            + self.audit_events
            + self.login_throttle
    }

    /// Whether some table gave a whole batch, so more rows may be waiting.
    pub fn is_full(&self, batch: i64) -> bool {
        let batch = u64::try_from(batch).unwrap_or(0);
        [
            self.refresh_tokens,
            self.sessions,
            self.legacy_tokens,
            self.ringex_tokens,
            self.audit_events,
            self.login_throttle,
        ]
        .iter()
        .any(|n| *n >= batch)
    }

    /// Adds the counts of another pass.
    pub fn add(&mut self, other: &PurgeCounts) {
        self.refresh_tokens += other.refresh_tokens;
        self.sessions += other.sessions;
        self.legacy_tokens += other.legacy_tokens;
        self.ringex_tokens += other.ringex_tokens;
        self.audit_events += other.audit_events;
        self.login_throttle += other.login_throttle;
    }
}

/// Use of a store's connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections.
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Most connections the pool opens.
    pub max: u32,
}

/// Rows of the tables that grow with use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCounts {
    /// Sessions not ended.
    pub live_sessions: i64,
    /// All sessions (ended ones wait for the purge).
    pub sessions: i64,
    /// Refresh tokens.
    pub refresh_tokens: i64,
    /// API tokens.
    pub api_tokens: i64,
    /// Legacy auth tokens.
    pub legacy_tokens: i64,
    /// Audit events.
    pub audit_events: i64,
}

/// Purges, counts for the metrics, and closing the pool.
#[async_trait]
pub trait Housekeeping: Send + Sync {
    /// Deletes at most `batch` rows from each table holding rows that can never be used again:
    /// expired refresh tokens, expired or ended sessions (with their refresh tokens), expired
    /// legacy tokens, and emulator access and refresh tokens. Small batches keep each write transaction short
    /// so a purge never stalls logins; call again while [`PurgeCounts::is_full`] says a table
    /// had more (see [`crate::admin::purge`]).
    async fn purge_expired(&self, now: i64, batch: i64) -> Result<PurgeCounts, StoreError>;

    /// Removes at most `batch` audit events older than `before` (epoch ms); returns how many.
    async fn purge_audit(&self, before: i64, batch: i64) -> Result<u64, StoreError>;

    /// How many tokens and sessions are stored, for the metrics (tables stay bounded).
    async fn stored_counts(&self) -> Result<StoredCounts, StoreError>;

    /// The connection pool's use right now, for the metrics.
    fn pool_stats(&self) -> PoolStats;

    /// Closes the connection pool, waiting for connections in use to come back, so a stopping
    /// server leaves the database cleanly (SQLite checkpoints its WAL on the last close).
    async fn close(&self);
}
