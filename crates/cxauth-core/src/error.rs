//! Why a service operation or the service's start failed.
//!
//! [`AuthError`] is the service's one error type: each variant has exactly one HTTP rendering,
//! chosen in the server's `error.rs`. The lower layers' errors (store, crypto, password pool,
//! throttle) convert into it here, at the boundary.

use crate::crypto::CryptoError;
use crate::jwt::{KeyRingError, TokenError};
use crate::password::PoolError;
use crate::store::StoreError;
use crate::throttle::Refusal;
use std::time::Duration;

/// Why an operation was refused. Each variant has exactly one HTTP rendering.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed; the message says how, and is safe to show.
    #[error("{0}")]
    BadRequest(String),
    /// Login failed. Deliberately one variant whatever the reason.
    #[error("invalid credentials")]
    LoginFailed,
    /// A refresh or logout token was refused (unknown, used, of an ended session).
    #[error("invalid refresh token")]
    RefreshFailed,
    /// Too many login attempts (failures, concurrent checks or successes); retry later.
    #[error("too many failed attempts")]
    Throttled {
        /// When to retry.
        retry_after: Duration,
    },
    /// The server is saturated (password pool full); retry shortly.
    #[error("server busy")]
    Busy {
        /// When to retry.
        retry_after: Duration,
    },
    /// An access credential was missing or refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The caller may not do this.
    #[error("access denied")]
    Forbidden,
    /// Nothing there, or nothing the caller may see.
    #[error("not found")]
    NotFound,
    /// Storage is unreachable.
    #[error("storage unavailable")]
    Unavailable(String),
    /// A bug or damaged data; logged, never detailed to clients.
    #[error("internal error: {0}")]
    Internal(String),
    /// The RingEX token exchange was refused: RingEX did not accept the token, or it belongs to
    /// no enabled cxauth user. One variant whatever the reason, like a failed login.
    #[error("RingEX token refused")]
    RingexRefused,
    /// The RingEX server could not be asked (unreachable, timed out, failing, or none is
    /// configured); the request may be retried.
    #[error("RingEX unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The caller already holds the most API tokens a user may have; it must delete one first.
    #[error("API token limit reached")]
    TooManyApiTokens {
        /// The limit.
        cap: u64,
    },
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => AuthError::Unavailable(m),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<CryptoError> for AuthError {
    fn from(e: CryptoError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// A throttle's refusal as the service reports it: a wait is [`AuthError::Throttled`], the rest
/// keep their own errors. Callers that count or audit throttled attempts match the wait first.
impl From<Refusal> for AuthError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Wait(retry_after) => AuthError::Throttled { retry_after },
            Refusal::Store(e) => e.into(),
            Refusal::Pool(e) => e.into(),
        }
    }
}

impl From<PoolError> for AuthError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy => AuthError::Busy {
                retry_after: Duration::from_secs(1),
            },
            PoolError::Hash(m) => AuthError::Internal(m),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database was set up with another master key.
    #[error(
        "the master key does not match this database (it was initialised with another key file); \
         point CXAUTH_MASTER_KEY_FILE at the key file created with this database"
    )]
    WrongMasterKey,
    /// Signing keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Randomness or key handling failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The password pool could not be set up.
    #[error(transparent)]
    Pool(#[from] PoolError),
}
