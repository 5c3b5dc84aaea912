//! Legacy portal auth tokens (only their keyed digests are stored).

use super::{StoreError, UserRecord};
use async_trait::async_trait;

/// A legacy portal auth token as stored (only its keyed digest identifies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyToken {
    /// When it stops working unless used, epoch ms.
    pub expires_at: i64,
    /// How far each use pushes `expires_at` past now, ms (1 hour, or 2 weeks with
    /// `stayLoggedIn`).
    pub lifetime_ms: i64,
}

/// Legacy portal auth tokens, with sliding expiry.
#[async_trait]
pub trait LegacyTokenStore: Send + Sync {
    /// Stores a new legacy auth token. With `expected_password_hash` (a login's), refuses with
    /// [`StoreError::Conflict`] if the user was disabled or its password changed since the
    /// password was checked, so a token checked just before a revocation is not stored after it.
    async fn insert_legacy_token(
        &self,
        user_id: i64,
        digest: &[u8; 32],
        token: &LegacyToken,
        now: i64,
        expected_password_hash: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The unexpired legacy token with this digest, and its owner.
    async fn legacy_token_by_digest(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<Option<(LegacyToken, UserRecord)>, StoreError>;

    /// Moves a legacy token's expiry (sliding expiry); false if it is gone.
    async fn extend_legacy_token(
        &self,
        digest: &[u8; 32],
        expires_at: i64,
    ) -> Result<bool, StoreError>;
}
