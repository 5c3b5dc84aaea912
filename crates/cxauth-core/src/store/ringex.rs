//! The RingEX emulator's state: apps, JWT credentials, and the logins it started (their access
//! tokens and their refresh token).

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

/// A login the RingEX emulator starts (a password or JWT grant): its first access token and its
/// refresh token, both as keyed digests, bound to the user and to the client that asked.
#[derive(Debug, Clone, Copy)]
pub struct NewRingexLogin<'a> {
    /// The login's id: its RingEX `endpoint_id`, kept across refreshes, by which a revoke finds
    /// every access token of the login.
    pub login_id: &'a str,
    /// The user logged in.
    pub user_id: i64,
    /// The emulator app that obtained the tokens; only it may refresh or revoke them.
    pub client_id: &'a str,
    /// Keyed digest of the access token.
    pub access_digest: &'a [u8; 32],
    /// Keyed digest of the refresh token.
    pub refresh_digest: &'a [u8; 32],
    /// Issue time, epoch ms.
    pub now: i64,
    /// End of the access token, epoch ms.
    pub access_expires_at: i64,
    /// End of the refresh token, epoch ms.
    pub refresh_expires_at: i64,
}

/// A refresh at the RingEX emulator: the refresh token presented, and the new pair that replaces
/// it (the login keeps its id).
#[derive(Debug, Clone, Copy)]
pub struct RingexRotation<'a> {
    /// Keyed digest of the refresh token presented.
    pub presented: &'a [u8; 32],
    /// The authenticated client; a token another client obtained is refused.
    pub client_id: &'a str,
    /// Keyed digest of the new access token.
    pub access_digest: &'a [u8; 32],
    /// Keyed digest of the new refresh token.
    pub refresh_digest: &'a [u8; 32],
    /// Now, epoch ms: the presented token must end after it.
    pub now: i64,
    /// End of the new access token, epoch ms.
    pub access_expires_at: i64,
    /// End of the new refresh token, epoch ms (RingEX restarts the lifetime at each refresh).
    pub refresh_expires_at: i64,
}

/// A refresh that won: the login's user and id.
#[derive(Debug, Clone)]
pub struct RingexRotated {
    /// The user, as the rotation found it (enabled, with a RingEX user id).
    pub user: UserRecord,
    /// The login's id (its `endpoint_id`).
    pub login_id: String,
}

/// The RingEX emulator's apps, JWT credentials, access tokens and refresh tokens.
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

    /// Deletes one RingEX emulator JWT credential, and the emulator access and refresh tokens of
    /// its user (they cannot be told apart by the credential that minted them); `None` if no
    /// such id.
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

    /// Stores a new emulator login: its access token and its refresh token, in one transaction.
    async fn insert_ringex_login(&self, login: &NewRingexLogin<'_>) -> Result<(), StoreError>;

    /// Rotates a refresh token, atomically: if the presented one is live (unexpired, not yet
    /// rotated or revoked), of `client_id`, and its user enabled with a RingEX user id, it is
    /// replaced by the new one and the new access token is stored; of two concurrent rotations
    /// of one token exactly one wins. `None` (nothing changed) otherwise.
    async fn rotate_ringex_refresh(
        &self,
        rotation: &RingexRotation<'_>,
    ) -> Result<Option<RingexRotated>, StoreError>;

    /// Ends the emulator login a token belongs to, found by the digest of an access token or of
    /// a refresh token (the caller does not know which it holds): every access token of that
    /// login and its refresh token. Only a login of `client_id` is ended (an access token
    /// issued before logins were recorded, of no client, is deleted alone). Returns the user of
    /// what was ended; `None` if nothing matched.
    async fn revoke_ringex_login(
        &self,
        client_id: &str,
        access_digest: &[u8; 32],
        refresh_digest: &[u8; 32],
    ) -> Result<Option<i64>, StoreError>;
}
