//! The storage interface every backend implements, and the records it deals in.
//!
//! The trait speaks in domain terms (rotate this refresh token, revoke that session) rather than
//! rows, so each backend can make each operation atomic in its own way (SQLite: one `BEGIN
//! IMMEDIATE` transaction; PostgreSQL: row locks). Times are epoch milliseconds from the injected
//! clock, never the database's own clock, so tests control them.

use async_trait::async_trait;
use std::sync::Arc;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The operation would break a uniqueness rule (e.g. a duplicate username).
    #[error("{0}")]
    Conflict(String),
    /// Something the operation refers to does not exist (an unknown parent or account).
    #[error("{0}")]
    NotFound(String),
    /// The input breaks a rule of the data model.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: a bug or corrupted data. Logged, never shown to clients.
    #[error("storage error: {0}")]
    Internal(String),
}

/// Role that may do everything, including listing users.
pub const ROLE_SUPER_USER: &str = "SUPER_USER";
/// Role that may list users.
pub const ROLE_MANAGE_USERS: &str = "MANAGE_USERS";

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Numeric id, also `adminId` and the JWT `sub`.
    pub id: i64,
    /// Unique login name.
    pub username: String,
    /// Platform the user logs in to.
    pub platform_id: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Disabled users cannot log in and their credentials are refused.
    pub enabled: bool,
    /// The parent in the user tree.
    pub parent_id: Option<i64>,
    /// Ancestor ids from the root down joined by `.`; empty for a root user.
    pub parent_path: String,
    /// The main account the user belongs to.
    pub main_account_id: i64,
    /// Role names.
    pub roles: Vec<String>,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// The RingEX extension id this user answers to in the token exchange, if any.
    pub rc_user_id: Option<i64>,
}

impl std::fmt::Debug for UserRecord {
    /// Leaves out the password hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// The `parent_path` this user's children carry.
    pub fn path_for_children(&self) -> String {
        if self.parent_path.is_empty() {
            self.id.to_string()
        } else {
            format!("{}.{}", self.parent_path, self.id)
        }
    }

    /// Whether `other` is a strict ancestor of this user.
    pub fn has_ancestor(&self, other: i64) -> bool {
        self.parent_path
            .split('.')
            .any(|p| p.parse::<i64>().ok() == Some(other))
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// What `create_user` needs. The backend resolves the parent and grants inside its transaction.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// Argon2id PHC string (hashed by the caller: the store never sees a password).
    pub password_hash: String,
    /// Platform id.
    pub platform_id: String,
    /// Username of the parent, if any.
    pub parent: Option<String>,
    /// Account ids granted (main or sub).
    pub grants: Vec<i64>,
    /// Role names.
    pub roles: Vec<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// RingEX extension id (unique where set), for the token exchange.
    pub rc_user_id: Option<i64>,
    /// Creation time, epoch ms.
    pub now: i64,
}

/// What a first start creates.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Name of the main account.
    pub main_account_name: String,
    /// Name of its sub-account.
    pub sub_account_name: String,
    /// The super user, granted the main account (its `parent` and `grants` are ignored).
    pub user: NewUser,
}

/// A sub-account with its main account, as the accounts endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Sub-account id.
    pub id: i64,
    /// Sub-account name.
    pub name: String,
    /// Main account id.
    pub main_id: i64,
    /// Main account name.
    pub main_name: String,
    /// Whether the main account is active.
    pub main_active: bool,
}

/// A signing key as stored: public key in clear, private key sealed under the master key.
#[derive(Clone)]
pub struct StoredSigningKey {
    /// Key id, the JWT `kid`.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Ed25519 seed, sealed with [`crate::crypto::Secrets::seal`] (aad: the kid).
    pub sealed_private_key: Vec<u8>,
    /// Creation time, epoch ms.
    pub created_at: i64,
}

/// A new session with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Random session id, carried in the access token's `sid` claim.
    pub session_id: String,
    /// Owner.
    pub user_id: i64,
    /// Keyed digest of the first refresh token.
    pub refresh_digest: [u8; 32],
    /// The password hash the login was checked against: if it changed meanwhile (a password
    /// change raced the login), no session is made. `None` for logins without a password.
    pub expected_password_hash: Option<String>,
    /// Now, epoch ms.
    pub now: i64,
    /// When the refresh token stops working, epoch ms.
    pub refresh_expires_at: i64,
    /// Made by the RingEX token exchange (`ssoLogin: true`), not by a direct login.
    pub sso_login: bool,
    /// Most live sessions the user may hold: the oldest beyond it are ended with this one's
    /// start, so a login loop cannot pile up sessions (0: no limit).
    pub max_sessions: u32,
}

/// A refresh to perform atomically.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Digest of the presented token.
    pub presented: [u8; 32],
    /// Digest of its successor.
    pub successor: [u8; 32],
    /// Now, epoch ms.
    pub now: i64,
    /// How long after its rotation a token may still be presented (lost-response retry), ms.
    pub grace_ms: i64,
    /// Expiry of the successor, epoch ms.
    pub successor_expires_at: i64,
}

/// What a refresh attempt came to.
#[derive(Debug, Clone)]
pub enum RotateOutcome {
    /// The successor is now the session's only live refresh token.
    Rotated {
        /// The session that goes on.
        session_id: String,
        /// Its owner (boxed: the other outcomes are small).
        user: Box<UserRecord>,
        /// Whether the session was made by the RingEX token exchange.
        sso_login: bool,
    },
    /// Unknown, expired, or of an ended session, or of a disabled user.
    Invalid,
    /// A token rotated longer ago than the grace window: the session has been revoked.
    Reused {
        /// The session that was revoked.
        session_id: String,
        /// Its owner.
        user_id: i64,
    },
}

/// Whether a session still stands, with its owner, for the check of every bearer request.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// Whether the session has ended (logout, reuse, disable, password change).
    pub revoked: bool,
    /// The owner.
    pub user: UserRecord,
}

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

/// A legacy portal auth token as stored (only its keyed digest identifies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyToken {
    /// When it stops working unless used, epoch ms.
    pub expires_at: i64,
    /// How far each use pushes `expires_at` past now, ms (1 hour, or 2 weeks with
    /// `stayLoggedIn`).
    pub lifetime_ms: i64,
}

/// Why a session ended, kept for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// A rotated refresh token came back after the grace window.
    Reuse,
    /// The user was disabled.
    Disabled,
    /// The password changed.
    PasswordChanged,
    /// An administrator ended every credential of the user (`cxauth admin user revoke-tokens`).
    Revoked,
}

impl RevokeReason {
    /// The string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Reuse => "reuse",
            RevokeReason::Disabled => "disabled",
            RevokeReason::PasswordChanged => "password-changed",
            RevokeReason::Revoked => "revoked",
        }
    }
}

/// Storage for everything cxauth keeps. Implementations must make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A value of the key/value metadata table.
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a metadata value unless one exists; returns the value now stored.
    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// All signing keys, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
    /// Adds a signing key (key rotation).
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;
    /// Retires every signing key older than the newest key created at or before `cutoff`
    /// (epoch ms): those have been superseded since at least `cutoff`. Never retires the newest
    /// key. A retired key's private half is deleted; its public half moves to
    /// [`Store::retired_signing_keys`] with `cutoff` as its `retired_at`. Returns the key ids
    /// retired.
    async fn retire_signing_keys(&self, cutoff: i64) -> Result<Vec<String>, StoreError>;
    /// Adds `key` only if there is no signing key yet, atomically, so instances starting
    /// together on an empty database agree on one key; returns whether it was added.
    async fn init_signing_key(&self, key: &StoredSigningKey) -> Result<bool, StoreError>;

    /// On an empty database (no accounts, no users), creates in one transaction the main
    /// account, its first sub-account and the super user; returns false, changing nothing, if
    /// the database is not empty.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<bool, StoreError>;

    /// Creates a main account; returns its id (a multiple of 10000).
    async fn create_main_account(&self, name: &str, now: i64) -> Result<i64, StoreError>;
    /// Creates a sub-account of `main_id`; returns its id (`main_id` + n).
    async fn create_sub_account(
        &self,
        main_id: i64,
        name: &str,
        now: i64,
    ) -> Result<i64, StoreError>;
    /// The sub-accounts a user may use, ordered by id.
    async fn accounts_for_user(&self, user_id: i64) -> Result<Vec<AccountRow>, StoreError>;

    /// Creates a user; resolves its main account from the parent or the first grant.
    async fn create_user(&self, user: &NewUser) -> Result<i64, StoreError>;
    /// Looks a user up by login name.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Looks a user up by id.
    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError>;
    /// The user and all its descendants, ordered by id.
    async fn user_subtree(&self, root: &UserRecord) -> Result<Vec<UserRecord>, StoreError>;
    /// All users, ordered by id.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Enables or disables a user. Disabling ends, in the same transaction and for good, its
    /// sessions, legacy auth tokens and RingEX emulator credentials; its API tokens are only
    /// refused while it stays disabled. False if no such user.
    async fn set_user_enabled(
        &self,
        username: &str,
        enabled: bool,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Replaces a password hash and ends, in the same transaction, the user's sessions, legacy
    /// auth tokens and RingEX emulator credentials (API tokens stay). False if no such user.
    async fn set_password_hash(
        &self,
        username: &str,
        hash: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Starts a session with its first refresh token; [`StoreError::Conflict`] if the user was
    /// disabled or its password changed since the login read it.
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError>;
    /// Whether a session stands, with its owner; `None` if unknown.
    async fn session_state(&self, session_id: &str) -> Result<Option<SessionState>, StoreError>;
    /// Uses a refresh token: rotation, grace retry, or reuse detection, atomically.
    async fn rotate_refresh_token(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;
    /// Ends the session a refresh token belongs to; returns its owner, or `None` if the token
    /// is unknown or expired.
    async fn revoke_session_by_refresh(
        &self,
        digest: &[u8; 32],
        reason: RevokeReason,
        now: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Stores a new API token.
    async fn insert_api_token(
        &self,
        user_id: i64,
        digest: &[u8; 32],
        sealed: &[u8],
        now: i64,
    ) -> Result<i64, StoreError>;
    /// The API token with this digest and its owner.
    async fn api_token_by_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError>;
    /// A user's API tokens, oldest first.
    async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<StoredApiToken>, StoreError>;
    /// Deletes an API token; false if it was already gone.
    async fn delete_api_token(&self, id: i64) -> Result<bool, StoreError>;

    /// Looks a user up by its RingEX extension id.
    async fn user_by_rc_user_id(&self, rc_user_id: i64) -> Result<Option<UserRecord>, StoreError>;

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

    /// Deletes at most `batch` rows from each table holding rows that can never be used again:
    /// expired refresh tokens, expired or ended sessions (with their refresh tokens), expired
    /// legacy tokens and emulator access tokens. Small batches keep each write transaction short
    /// so a purge never stalls logins; call again while [`PurgeCounts::is_full`] says a table
    /// had more (see [`crate::admin::purge`]).
    async fn purge_expired(&self, now: i64, batch: i64) -> Result<PurgeCounts, StoreError>;

    /// Removes at most `batch` audit events older than `before` (epoch ms); returns how many.
    async fn purge_audit(&self, before: i64, batch: i64) -> Result<u64, StoreError>;

    /// Appends a security event to the audit trail, durably (committed when this returns).
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Audit events matching `filter`, oldest first.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// The connection pool's use right now, for the metrics.
    fn pool_stats(&self) -> PoolStats;
    /// How many tokens and sessions are stored, for the metrics (tables stay bounded).
    async fn stored_counts(&self) -> Result<StoredCounts, StoreError>;

    // Login throttling (see `crate::throttle`).

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

    /// Closes the connection pool, waiting for connections in use to come back, so a stopping
    /// server leaves the database cleanly (SQLite checkpoints its WAL on the last close).
    async fn close(&self);

    // ---- Revocation that evicts, the per-user API-token cap, retired signing keys (issue 11).
    // Each method is one transaction under the user's lock, so it is serialised with the
    // API-token creations it races on every instance.

    /// Ends, in one transaction, credentials of `username`: always its sessions, legacy auth
    /// tokens, RingEX emulator JWT credentials and emulator access tokens; its API tokens too
    /// when [`EndCredentials::api_tokens`]. Sets a new password hash first when one is given.
    /// Returns what it ended, or `None` if there is no such user.
    async fn end_user_credentials(
        &self,
        username: &str,
        end: &EndCredentials<'_>,
        now: i64,
    ) -> Result<Option<RevokedCounts>, StoreError>;
    /// Stores a new API token unless its owner already holds `cap` of them or the credential
    /// that asked for it no longer stands (ended by a revocation that raced the request), all
    /// under the owner's lock so concurrent creations cannot overshoot the cap.
    async fn insert_api_token_checked(
        &self,
        token: &NewApiToken<'_>,
    ) -> Result<ApiTokenInsert, StoreError>;
    /// The RingEX emulator JWT credentials (never their digests), of one user or of all,
    /// ordered by id.
    async fn ringex_jwts(&self, username: Option<&str>) -> Result<Vec<RingexJwtInfo>, StoreError>;
    /// Deletes one RingEX emulator JWT credential, and the emulator access tokens of its user
    /// (they cannot be told apart by the credential that minted them); `None` if no such id.
    async fn revoke_ringex_jwt(&self, id: i64) -> Result<Option<RingexJwtInfo>, StoreError>;
    /// Public keys of retired signing keys, oldest first.
    async fn retired_signing_keys(&self) -> Result<Vec<RetiredSigningKey>, StoreError>;
    /// Forgets retired public keys retired before `before` (epoch ms); returns their key ids.
    async fn forget_retired_signing_keys(&self, before: i64) -> Result<Vec<String>, StoreError>;

    // ---- Listing accounts and deleting users (`cxauth admin`, issue 12).

    /// Every account, main accounts and sub-accounts, ordered by id.
    async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError>;
    /// Deletes user `username` in one transaction under its lock, with everything that lets
    /// it in or names it: sessions (and their refresh tokens), API tokens, legacy auth tokens,
    /// RingEX emulator JWT credentials and access tokens, remembered login addresses and
    /// grants. Refused while other users have it as their parent (they would be orphaned and
    /// their parent path would name a missing user). Audit events keep its id and name.
    async fn delete_user(&self, username: &str) -> Result<DeleteUser, StoreError>;
}

/// An account as `cxauth admin account list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountInfo {
    /// Account id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Its main account: itself for a main account.
    pub main_account_id: i64,
    /// Whether the account is active (RingCX refuses logins to inactive main accounts).
    pub active: bool,
}

/// What [`Store::delete_user`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteUser {
    /// Deleted, with what of its credentials went with it (sessions counted whether live or not).
    Deleted {
        /// Its id.
        id: i64,
        /// Credentials deleted with it.
        ended: RevokedCounts,
    },
    /// There is no such user.
    NoSuchUser,
    /// Refused: these users (usernames, ordered) have it as their parent.
    HasChildren(Vec<String>),
}

/// What [`Store::end_user_credentials`] does besides ending sessions, legacy auth tokens and
/// RingEX emulator credentials.
#[derive(Debug, Clone, Copy)]
pub struct EndCredentials<'a> {
    /// A new Argon2id password hash to set in the same transaction.
    pub new_password_hash: Option<&'a str>,
    /// Also delete every API token (`revoke-tokens`); a plain password change keeps them.
    pub api_tokens: bool,
    /// Recorded on the ended sessions.
    pub reason: RevokeReason,
}

/// What a revocation ended, per kind of credential, for the admin to see and the audit trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RevokedCounts {
    /// API tokens deleted.
    pub api_tokens: u64,
    /// Legacy auth tokens deleted.
    pub legacy_tokens: u64,
    /// Sessions ended (their access and refresh tokens are refused from the next request).
    pub sessions: u64,
    /// RingEX emulator JWT credentials deleted.
    pub ringex_jwts: u64,
    /// RingEX emulator access tokens deleted.
    pub ringex_tokens: u64,
}

impl RevokedCounts {
    /// One line for the audit trail, e.g. `api_tokens=2 legacy_tokens=1 sessions=3 ...`.
    pub fn summary(&self) -> String {
        format!(
            "api_tokens={} legacy_tokens={} sessions={} ringex_jwts={} ringex_tokens={}",
            self.api_tokens,
            self.legacy_tokens,
            self.sessions,
            self.ringex_jwts,
            self.ringex_tokens
        )
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

/// A new API token for [`Store::insert_api_token_checked`].
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

/// What [`Store::insert_api_token_checked`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTokenInsert {
    /// Stored, with this row id.
    Created(i64),
    /// The owner already holds the cap; nothing stored.
    CapReached,
    /// The credential of the request was ended meanwhile, or the user disabled; nothing stored.
    CredentialGone,
}

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

/// The public half of a retired signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredSigningKey {
    /// Key id, the JWT `kid`.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The cutoff it was retired with, epoch ms: no instance has signed with it since (give
    /// or take two key reloads), so no access token it signed outlives this by more than the
    /// access-token lifetime.
    pub retired_at: i64,
}

/// Rows removed by a purge, per table, so operators see what housekeeping did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeCounts {
    /// Expired refresh tokens (not counting those removed with their session).
    pub refresh_tokens: u64,
    /// Expired or ended sessions.
    pub sessions: u64,
    /// Expired legacy auth tokens.
    pub legacy_tokens: u64,
    /// Expired RingEX emulator access tokens.
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

/// One security event of the audit trail. Holds who, what, when and from where, never a
/// secret: no password, token or token digest ever goes in here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// Row id, increasing (0 for an event not yet stored); `--follow` reads past the last one.
    pub id: i64,
    /// When, epoch ms.
    pub at: i64,
    /// What happened, e.g. `login` or `session.end` (see [`crate::audit`]).
    pub event: String,
    /// How it ended, e.g. `success`, `failure`, `throttled`.
    pub outcome: String,
    /// The user concerned, when known.
    pub user_id: Option<i64>,
    /// The user's name, or the name a failed login tried.
    pub username: Option<String>,
    /// The client address; `None` for the local admin command.
    pub addr: Option<String>,
    /// The request id of the HTTP request, to find its log lines.
    pub request_id: Option<String>,
    /// Anything else worth knowing (a reason, a key id), never a secret.
    pub detail: String,
}

/// Which audit events to read.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    /// Only events concerning this username.
    pub username: Option<String>,
    /// Only events at or after this time, epoch ms.
    pub since: i64,
    /// Only events with a larger id (for following the trail).
    pub after_id: i64,
    /// At most this many events.
    pub limit: i64,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            username: None,
            since: i64::MIN,
            after_id: 0,
            limit: 1000,
        }
    }
}

/// Shared handle to a store.
pub type SharedStore = Arc<dyn Store>;
