//! Login throttling: per-key failure entries and remembered (username, address) pairs.

use super::StoreError;
use async_trait::async_trait;

/// One budget's state: failures (reservations included) and the block they caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleEntry {
    /// Failures counted, reservations in flight included.
    pub failures: u32,
    /// Time of the latest failure (or reservation), epoch ms.
    pub last_failure: i64,
    /// No attempt before this time, epoch ms (0: none).
    pub blocked_until: i64,
    /// After this time the entry means nothing and may be dropped, epoch ms.
    pub expires_at: i64,
}

/// A successful login's address to remember: what
/// [`ThrottleStore::remember_login_address`] takes, as one value for
/// [`SessionStore::create_login_session`](super::SessionStore::create_login_session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberAddress {
    /// The (username, address) pair digest.
    pub pair: [u8; 32],
    /// The user who logged in.
    pub user_id: i64,
    /// When, epoch ms.
    pub now: i64,
    /// Remembered until, epoch ms.
    pub expires_at: i64,
    /// How many of the user's most recent addresses are kept.
    pub keep: u32,
}

/// Moves one entry from its current state (`None`: no entry) to the next (`None`: delete it).
pub type ThrottleUpdate<'a> =
    &'a (dyn Fn(Option<ThrottleEntry>) -> Option<ThrottleEntry> + Send + Sync);

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
        update: ThrottleUpdate<'_>,
    ) -> Result<Option<ThrottleEntry>, StoreError>;

    /// Until when (epoch ms) the (username, address) pair digest `pair` is remembered, if its
    /// successful login is still remembered at `now`; `None` if it is not. A login compares it
    /// with what it would write, and writes only when it would move it a step (see
    /// `LoginGate::address_to_remember`).
    async fn login_address_known(
        &self,
        pair: &[u8; 32],
        now: i64,
    ) -> Result<Option<i64>, StoreError>;

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
