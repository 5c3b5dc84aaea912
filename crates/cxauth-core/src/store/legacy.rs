//! Legacy portal auth tokens (only their keyed digests are stored).

use super::{AuditEvent, RememberAddress, StoreError, UserRecord};
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

/// A legacy login's new token, as [`LegacyTokenStore::create_legacy_login`] stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLegacyLogin {
    /// Whose token it is.
    pub user_id: i64,
    /// The token's keyed digest.
    pub digest: [u8; 32],
    /// Its expiry and lifetime.
    pub token: LegacyToken,
    /// When it is made, epoch ms.
    pub now: i64,
    /// The password hash the login checked: if the user's hash is another now (or the user is
    /// disabled), the login lost a race with that change and nothing is stored.
    pub expected_password_hash: String,
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

    /// Stores a legacy login's token as [`LegacyTokenStore::insert_legacy_token`] does (a
    /// [`StoreError::Conflict`] if the user changed since its password was checked), and also
    /// remembers the login's address (if given: `None` when it is remembered already) and
    /// writes its audit event, best effort, as
    /// [`super::SessionStore::create_login_session`] does for a session: one commit on SQLite
    /// on a file, so a crash never keeps a token whose login left no audit event; elsewhere one
    /// after the other, in that order.
    async fn create_legacy_login(
        &self,
        login: &NewLegacyLogin,
        address: Option<&RememberAddress>,
        audit: &AuditEvent,
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
