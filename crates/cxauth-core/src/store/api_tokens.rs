//! API tokens, and the checked insert that a concurrent revocation cannot race.

use super::{AuditEvent, StoreError, UserRecord};
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
    /// What the owner calls it, if anything (tokens of the RingCX endpoints have no name).
    pub name: Option<String>,
    /// When it was minted, epoch ms.
    pub created_at: i64,
    /// When it stops being accepted, epoch ms; `None`: never.
    pub expires_at: Option<i64>,
    /// A recent use as last flushed, epoch ms; `None`: never used (or not flushed yet).
    pub last_used_at: Option<i64>,
}

impl StoredApiToken {
    /// Whether the token is past its expiry at `now` (epoch ms): it is then refused and
    /// listed nowhere, exactly like a deleted one.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
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

/// A use of an API token, noted in memory and written later by
/// [`ApiTokenStore::record_api_token_uses`]. It carries the row id the token was found under,
/// so that the store can write uses in its table's order without reading them first; the
/// digest makes sure the row is still that token's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTokenUse {
    /// The token's row id ([`StoredApiToken::id`]).
    pub id: i64,
    /// Its keyed digest.
    pub digest: [u8; 32],
    /// When it was used, epoch ms.
    pub at: i64,
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
    /// Most API tokens a user may hold (expired ones are deleted first and do not count).
    pub cap: u64,
    /// What the owner calls it.
    pub name: Option<&'a str>,
    /// When it stops being accepted, epoch ms; `None`: never.
    pub expires_at: Option<i64>,
    /// What the request was authenticated with.
    pub proof: CredentialProof<'a>,
    /// The audit event of the creation, written in its transaction (one commit, and no token
    /// whose creation a crash left unaudited), if any.
    pub audit: Option<CreationAudit<'a>>,
}

/// The audit event of an API token's creation, made by the caller once the store knows the new
/// row's id (the event names the token by it). The store writes it best effort, as the audit
/// trail's contract says: an audit table that refuses the row does not refuse the token.
#[derive(Clone, Copy)]
pub struct CreationAudit<'a>(pub &'a (dyn Fn(i64) -> AuditEvent + Send + Sync));

impl std::fmt::Debug for CreationAudit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreationAudit(..)")
    }
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
    /// under the owner's lock so concurrent creations cannot overshoot the cap. The owner's
    /// expired tokens are deleted first (with a credential change-log row, like any delete), so
    /// they neither count against the cap nor pile up.
    async fn insert_api_token_checked(
        &self,
        token: &NewApiToken<'_>,
    ) -> Result<ApiTokenInsert, StoreError>;

    /// The API token with this digest and its owner (expired or not: the caller decides).
    async fn api_token_by_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError>;

    /// The API token with row id `id` and its owner (expired or not: the caller decides).
    async fn api_token_by_id(
        &self,
        id: i64,
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError>;

    /// A user's API tokens, oldest first (expired ones included: the caller filters).
    async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<StoredApiToken>, StoreError>;

    /// Deletes an API token; false if it was already gone.
    async fn delete_api_token(&self, id: i64) -> Result<bool, StoreError>;

    /// Sets (or with `None` clears) an API token's name; false if the token is gone. A name is
    /// no credential, so nothing is written to the change log.
    async fn rename_api_token(&self, id: i64, name: Option<&str>) -> Result<bool, StoreError>;

    /// Records recent uses: a time never moves back (an older use than the one stored, or than
    /// another of the same token in `uses`, is ignored), and a use whose token is gone is
    /// skipped. A token's row id is never reused, so a use can never land on another token; a
    /// backend may compare the use's digest with the token's only on the token's first use
    /// (SQLite does, to keep the wide token table out of the steady-state write). Returns the
    /// rows changed. Called with a whole flush's uses, off the request path, never per
    /// request: the backend writes them in row id order in short transactions, so a failure
    /// may leave some written (writing them again changes nothing).
    async fn record_api_token_uses(&self, uses: &[ApiTokenUse]) -> Result<u64, StoreError>;
}
