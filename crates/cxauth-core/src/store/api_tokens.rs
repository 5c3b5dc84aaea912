//! API tokens, and the checked insert that a concurrent revocation cannot race.

use super::{StoreError, UserRecord};
use async_trait::async_trait;

/// An API token as stored.
#[derive(Debug, Clone)]
pub struct StoredApiToken {
    /// Row id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// The token sealed with [`crate::crypto::Secrets::seal`] (aad: owner id).
    pub sealed: Vec<u8>,
}

/// The credential an API-token creation was authenticated with, checked again inside the
/// insert's transaction: a revocation that commits between the request's authentication and
/// its insert must not let the request mint a fresh token on a revoked credential's authority.
#[derive(Debug, Clone, Copy)]
pub enum CredentialProof<'a> {
    /// An access token of this session (the session must not have ended).
    Session(&'a str),
    /// The API token with this keyed digest (it must still exist).
    ApiToken(&'a [u8; 32]),
    /// The legacy auth token with this keyed digest (it must still exist, unexpired).
    LegacyToken(&'a [u8; 32]),
}

/// A new API token for [`ApiTokenStore::insert_api_token_checked`].
#[derive(Debug, Clone, Copy)]
pub struct NewApiToken<'a> {
    /// Owner.
    pub user_id: i64,
    /// Keyed digest of the token.
    pub digest: &'a [u8; 32],
    /// The token sealed for listing.
    pub sealed: &'a [u8],
    /// Now, epoch ms.
    pub now: i64,
    /// Most API tokens a user may hold.
    pub cap: u64,
    /// What the request was authenticated with.
    pub proof: CredentialProof<'a>,
}

/// What [`ApiTokenStore::insert_api_token_checked`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTokenInsert {
    /// Stored, with this row id.
    Created(i64),
    /// The owner already holds the cap; nothing stored.
    CapReached,
    /// The credential of the request was ended meanwhile, or the user disabled; nothing stored.
    CredentialGone,
}

/// API tokens: long-lived credentials a user mints for scripts, capped per user.
#[async_trait]
pub trait ApiTokenStore: Send + Sync {
    /// Stores a new API token.
    async fn insert_api_token(
        &self,
        user_id: i64,
        digest: &[u8; 32],
        sealed: &[u8],
        now: i64,
    ) -> Result<i64, StoreError>;

    /// Stores a new API token unless its owner already holds `cap` of them or the credential
    /// that asked for it no longer stands (ended by a revocation that raced the request), all
    /// under the owner's lock so concurrent creations cannot overshoot the cap.
    async fn insert_api_token_checked(
        &self,
        token: &NewApiToken<'_>,
    ) -> Result<ApiTokenInsert, StoreError>;

    /// The API token with this digest and its owner.
    async fn api_token_by_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError>;

    /// A user's API tokens, oldest first.
    async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<StoredApiToken>, StoreError>;

    /// Deletes an API token; false if it was already gone.
    async fn delete_api_token(&self, id: i64) -> Result<bool, StoreError>;
}
