//! The RingEX emulator's state: apps, JWT credentials and the access tokens it issued.

use super::{StoreError, UserRecord};
use async_trait::async_trait;

/// A RingEX emulator JWT credential as `cxauth admin ringex jwt list` shows it: no secret and
/// nothing derived from one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RingexJwtInfo {
    /// Row id, to revoke it by.
    pub id: i64,
    /// Owner id.
    pub user_id: i64,
    /// Owner name.
    pub username: String,
    /// Creation time, epoch ms.
    pub created_at: i64,
}

/// The RingEX emulator's apps, JWT credentials and access tokens.
#[async_trait]
pub trait RingexStore: Send + Sync {
    /// Registers a RingEX emulator app; [`StoreError::Conflict`] if the client id exists.
    async fn insert_ringex_app(
        &self,
        client_id: &str,
        secret_hash: &str,
        now: i64,
    ) -> Result<(), StoreError>;

    /// The Argon2id hash of a RingEX emulator app's client secret.
    async fn ringex_app_secret_hash(&self, client_id: &str) -> Result<Option<String>, StoreError>;

    /// Stores the digest of a RingEX emulator JWT credential of a user.
    async fn insert_ringex_jwt(
        &self,
        digest: &[u8; 32],
        user_id: i64,
        now: i64,
    ) -> Result<(), StoreError>;

    /// The owner of the RingEX emulator JWT credential with this digest.
    async fn ringex_jwt_user(&self, digest: &[u8; 32]) -> Result<Option<UserRecord>, StoreError>;

    /// The RingEX emulator JWT credentials (never their digests), of one user or of all,
    /// ordered by id.
    async fn ringex_jwts(&self, username: Option<&str>) -> Result<Vec<RingexJwtInfo>, StoreError>;

    /// Deletes one RingEX emulator JWT credential, and the emulator access tokens of its user
    /// (they cannot be told apart by the credential that minted them); `None` if no such id.
    async fn revoke_ringex_jwt(&self, id: i64) -> Result<Option<RingexJwtInfo>, StoreError>;

    /// Stores the digest of an access token the RingEX emulator issued.
    async fn insert_ringex_token(
        &self,
        digest: &[u8; 32],
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// The owner of the unexpired RingEX emulator access token with this digest.
    async fn ringex_token_user(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<Option<UserRecord>, StoreError>;
}
