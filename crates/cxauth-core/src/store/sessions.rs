//! Sessions and refresh tokens: rotation with a grace window and reuse detection.

use super::{StoreError, UserRecord};
use async_trait::async_trait;

/// A new session with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Random session id, carried in the access token's `sid` claim.
    pub session_id: String,
    /// Owner.
    pub user_id: i64,
    /// The key the first refresh token is stored under: its issue time and 24 bytes of its keyed
    /// digest (the whole keyed digest for tokens of earlier versions); the store only compares
    /// it. See `refresh_key` in the `sessions` module.
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
    /// The key of the presented token (as [`NewSession::refresh_digest`]).
    pub presented: [u8; 32],
    /// The key of its successor.
    pub successor: [u8; 32],
    /// Now, epoch ms.
    pub now: i64,
    /// How long after its rotation a token may still be presented (lost-response retry), ms.
    pub grace_ms: i64,
    /// Expiry of the successor, epoch ms.
    pub successor_expires_at: i64,
    /// The session's expiry to write when it ends before the successor's (`successor_expires_at`
    /// or later). The session's expiry is only ever moved ahead, and only when the successor
    /// would outlive it: set a step past the successor's, the rotations of the next step leave
    /// the session's row and its expiry index unwritten (2 of the ~9 pages a rotation wrote).
    pub session_expires_at: i64,
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

/// Sessions and their refresh tokens: creation, the per-request check, rotation, logout.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Starts a session with its first refresh token; [`StoreError::Conflict`] if the user was
    /// disabled or its password changed since the login read it.
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError>;

    /// Starts a login's session as [`SessionStore::create_session`] does, and also remembers
    /// the login's address (a direct login's, unless it is remembered already; a RingEX
    /// exchange remembers none) and writes its
    /// audit event. Those two are best effort, as when written on their own: if either cannot
    /// be written, the failure is logged and the session still starts. SQLite on a file writes
    /// them all in one commit (one durable write and one hand-off to its writer thread instead
    /// of a commit of several statements each: a login's database work shares the core with its
    /// password hash), so a crash never keeps a session without its audit event; elsewhere they
    /// are written one after the other, in that order.
    async fn create_login_session(
        &self,
        session: &NewSession,
        address: Option<&super::RememberAddress>,
        audit: &super::AuditEvent,
    ) -> Result<(), StoreError>;

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
}
