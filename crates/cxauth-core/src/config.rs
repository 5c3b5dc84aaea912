//! What the service is told at start: token lifetimes, the issuer, per-user caps.

use std::time::Duration;

/// Lifetimes and identity of the tokens the service issues.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of access tokens.
    pub issuer: String,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of each refresh token, from its issue.
    pub refresh_token_ttl: Duration,
    /// How long a just-rotated refresh token still works (a retry after a lost response).
    pub refresh_grace: Duration,
    /// Most live sessions per user; a new one ends the oldest beyond it (0: no limit).
    pub max_sessions_per_user: u32,
    /// Most API tokens one user may hold; creating one more is refused
    /// ([`crate::error::AuthError::TooManyApiTokens`]).
    pub api_token_cap: u64,
    /// Lifetime of the access tokens the built-in RingEX emulator issues (RingEX's 1 hour by
    /// default; shorter in tests that need a RingEX token to run out).
    pub ringex_emulator_access_ttl: Duration,
    /// Lifetime of the emulator's refresh tokens, restarted at each refresh (RingEX's 7 days by
    /// default).
    pub ringex_emulator_refresh_ttl: Duration,
    /// Longest a credential change made elsewhere (another instance, `cxauth admin`) may go
    /// unnoticed by the in-memory credential cache; zero turns the cache off (every request
    /// reads the database).
    pub credential_cache_staleness: Duration,
    /// Most entries in each map of the credential cache.
    pub credential_cache_entries: usize,
}

/// Default of [`AuthConfig::api_token_cap`]: far more than any integration needs, few enough
/// that a stolen credential cannot fill the table.
pub const DEFAULT_API_TOKEN_CAP: u64 = 100;
