//! Login throttling: per-key failure entries and remembered (username, address) pairs.

use super::StoreError;
use async_trait::async_trait;

/// Login throttling state shared by every instance on one database.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Applies `update` atomically to the login throttle entry of `key` and returns the entry as
    /// it was: concurrent updates of one key, from any instance, are applied one after the other.
    /// Serves as the throttle's [`ThrottleTable`](crate::throttle::ThrottleTable) where several
    /// instances share one database.
    async fn throttle_update(
        &self,
        key: &[u8; 32],
        update: crate::throttle::ThrottleUpdate<'_>,
    ) -> Result<Option<crate::throttle::ThrottleEntry>, StoreError>;

    /// Whether the (username, address) pair digest `pair` had a successful login still
    /// remembered at `now`.
    async fn login_address_known(&self, pair: &[u8; 32], now: i64) -> Result<bool, StoreError>;

    /// Remembers a successful login of `user_id` from `pair` until `expires_at`, keeping only
    /// the user's `keep` most recent addresses.
    async fn remember_login_address(
        &self,
        pair: &[u8; 32],
        user_id: i64,
        now: i64,
        expires_at: i64,
        keep: u32,
    ) -> Result<(), StoreError>;
}
