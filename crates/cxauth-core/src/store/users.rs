//! Users, their records, and the revocations that end all of a user's credentials at once.

use super::{RevokeReason, StoreError};
use async_trait::async_trait;

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

    /// Whether the user may manage users at all (holds `MANAGE_USERS` or `SUPER_USER`): the one
    /// rule of `GET …/admin/users` and of the console's user administration.
    pub fn may_manage_users(&self) -> bool {
        self.has_role(ROLE_SUPER_USER) || self.has_role(ROLE_MANAGE_USERS)
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

/// What [`UserStore::delete_user`] did.
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

/// What [`UserStore::end_user_credentials`] does besides ending sessions, legacy auth tokens and
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

/// Users: creation, look-ups, the user tree, enabling, passwords, revocation, deletion.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user; resolves its main account from the parent or the first grant.
    async fn create_user(&self, user: &NewUser) -> Result<i64, StoreError>;

    /// Looks a user up by login name.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Looks a user up by id.
    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError>;

    /// Looks a user up by its RingEX extension id.
    async fn user_by_rc_user_id(&self, rc_user_id: i64) -> Result<Option<UserRecord>, StoreError>;

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

    /// Deletes user `username` in one transaction under its lock, with everything that lets
    /// it in or names it: sessions (and their refresh tokens), API tokens, legacy auth tokens,
    /// RingEX emulator JWT credentials and access tokens, remembered login addresses and
    /// grants. Refused while other users have it as their parent (they would be orphaned and
    /// their parent path would name a missing user). Audit events keep its id and name.
    async fn delete_user(&self, username: &str) -> Result<DeleteUser, StoreError>;
}
