//! The authentication service: every operation the HTTP layer exposes, in domain terms.
//!
//! Nothing here knows about HTTP. Errors are [`AuthError`], which the server maps to status codes
//! and bodies in one place.

use crate::audit::{self, AuditContext};
use crate::clock::{SharedClock, duration_ms};
use crate::crypto::{CryptoError, DigestKind, Secrets, random_bytes};
use crate::jwt::{Claims, KeyRing, KeyRingError, LAPP_ADMIN, TokenError, generate_signing_key};
use crate::password::{MAX_PASSWORD_LEN, PasswordPool, PoolError};
use crate::store::{
    AccountRow, ApiTokenInsert, CredentialProof, LegacyToken, NewApiToken, NewSession,
    ROLE_MANAGE_USERS, ROLE_SUPER_USER, RevokeReason, RotateOutcome, Rotation, SharedStore,
    StoreError, UserRecord,
};
use crate::throttle::{AttemptKeys, Refusal, Throttle};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_proto::{ADMIN_URL, AGENT_URL, ApiToken, Jwks, Session, is_token_alphabet};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a legacy auth token lives past its last use.
pub const LEGACY_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a legacy auth token lives past its last use with `stayLoggedIn`.
pub const LEGACY_TOKEN_TTL_STAY: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// A legacy token's expiry is written again only when a use would move it by at least this
/// much, so a busy token costs a write a minute rather than one per request.
pub const LEGACY_EXTEND_STEP: Duration = Duration::from_secs(60);

/// Longest username accepted.
pub const MAX_USERNAME_LEN: usize = 255;
/// Longest refresh or access token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Verified access tokens remembered (about 400 bytes each).
const VERIFIED_TOKEN_CACHE: usize = 20_000;
/// Metadata key of the master key fingerprint.
pub const META_KEY_FINGERPRINT: &str = "master_key_fingerprint";

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
    /// An OAuth error of the built-in RingEX emulator, answered in OAuth's own JSON shape.
    #[error("RingEX emulator: {0}")]
    OAuth(#[from] crate::emulator::OAuthError),
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
    /// ([`AuthError::TooManyApiTokens`]).
    pub api_token_cap: u64,
}

/// Default of [`AuthConfig::api_token_cap`]: far more than any integration needs, few enough
/// that a stolen credential cannot fill the table.
pub const DEFAULT_API_TOKEN_CAP: u64 = 100;

/// The login fields, already taken from wherever the request carried them.
pub struct LoginInput {
    /// Username.
    pub username: String,
    /// Password.
    pub password: SecretString,
    /// Platform id.
    pub platform_id: String,
}

/// A credential as presented on an admin endpoint.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// None at all.
    None,
    /// `Authorization: Bearer …`: must be an access token.
    Bearer(&'a str),
    /// `X-Auth-Token: …`: an API token, a legacy auth token or an access token.
    XAuthToken(&'a str),
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: UserRecord,
    /// The session of the access token used, if one was.
    pub session_id: Option<String>,
    /// The credential the caller presented, checked again when it mints an API token, so a
    /// revocation racing the request cannot leave a fresh token behind.
    pub via: Via,
}

/// What a [`Principal`] authenticated with (keyed digests only, never a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An access token; its session is [`Principal::session_id`].
    AccessToken,
    /// The API token with this keyed digest.
    ApiToken([u8; 32]),
    /// The legacy auth token with this keyed digest.
    LegacyToken([u8; 32]),
    /// A password, in the request itself (a login's answer); it mints nothing.
    Password,
}

/// The service. Shared by all request handlers.
pub struct Auth {
    pub(crate) store: SharedStore,
    pub(crate) clock: SharedClock,
    pub(crate) secrets: Secrets,
    keys: std::sync::RwLock<Arc<KeyRing>>,
    /// When the key ring was last reloaded because of an unknown key id; rate-limits reloads.
    /// Wall-clock (not the injected clock): a protection against load, not domain time.
    keys_reloaded_at: std::sync::Mutex<Option<std::time::Instant>>,
    pub(crate) passwords: PasswordPool,
    throttle: Throttle,
    config: AuthConfig,
    /// Access tokens whose signature already verified (the session is still checked each time).
    verified: crate::cache::VerifiedTokens,
    /// Start and count of the current second's audit rows for throttled attempts: a storm of
    /// throttled guesses (refused before any hashing) must not become a storm of writes.
    throttled_audits: std::sync::Mutex<(std::time::Instant, u32)>,
}

/// How often housekeeping reloads the signing keys, so every instance starts signing with a
/// rotated key within this long.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Most audit rows written per second for throttled login attempts; the rest are only counted.
const THROTTLED_AUDITS_PER_SECOND: u32 = 10;

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn new_refresh_token() -> Result<String, CryptoError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

impl Auth {
    /// Checks the master key against the database, loads (or on first start creates) the
    /// signing key, and returns the ready service.
    pub async fn start(
        store: SharedStore,
        clock: SharedClock,
        secrets: Secrets,
        passwords: PasswordPool,
        throttle: Throttle,
        config: AuthConfig,
    ) -> Result<Self, StartError> {
        let fp = secrets.fingerprint();
        if store.init_meta(META_KEY_FINGERPRINT, &fp).await? != fp {
            return Err(StartError::WrongMasterKey);
        }
        let mut stored = store.signing_keys().await?;
        if stored.is_empty() {
            let key = generate_signing_key(&secrets, clock.now_ms())?;
            if store.init_signing_key(&key).await? {
                audit::record(
                    store.as_ref(),
                    &AuditContext::local(),
                    clock.now_ms(),
                    audit::Entry {
                        event: audit::KEY_CREATE,
                        outcome: audit::SUCCESS,
                        user_id: None,
                        username: None,
                        detail: &format!("kid {}", key.kid),
                    },
                )
                .await;
            }
            stored = store.signing_keys().await?;
        }
        let keys = KeyRing::from_stored(&secrets, &stored)?
            .with_retired(&store.retired_signing_keys().await?);
        Ok(Auth {
            store,
            clock,
            secrets,
            keys: std::sync::RwLock::new(Arc::new(keys)),
            keys_reloaded_at: std::sync::Mutex::new(None),
            passwords,
            throttle,
            config,
            verified: crate::cache::VerifiedTokens::new(VERIFIED_TOKEN_CACHE),
            throttled_audits: std::sync::Mutex::new((std::time::Instant::now(), 0)),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The login throttle (for periodic purging).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The password hashing pool (for its queue depth in the metrics).
    pub fn password_pool(&self) -> &PasswordPool {
        &self.passwords
    }

    /// The store (for housekeeping).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Whether this instance can serve logins: the database answers and signing keys are
    /// loaded. Behind `/readyz`, so a load balancer stops sending traffic to an instance that
    /// lost its database.
    pub async fn ready(&self) -> Result<(), AuthError> {
        self.store
            .get_meta(META_KEY_FINGERPRINT)
            .await?
            .ok_or_else(|| AuthError::Unavailable("the database has no master key yet".into()))?;
        if self.keys().jwks().keys.is_empty() {
            return Err(AuthError::Unavailable("no signing key loaded".into()));
        }
        Ok(())
    }

    /// The public signing keys.
    pub fn jwks(&self) -> Jwks {
        self.keys().jwks().clone()
    }

    fn keys(&self) -> Arc<KeyRing> {
        // Nothing can panic while the lock is held (a pointer swap), so poisoning is moot.
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the key ring from the store when a token names a key this instance has not seen
    /// (another instance rotated keys). At most once a second, so tokens with made-up key ids
    /// cannot turn into a database query each.
    async fn reload_keys_for(&self, token: &str) -> Result<bool, AuthError> {
        let Some(kid) = crate::jwt::token_kid(token) else {
            return Ok(false);
        };
        if self.keys().knows(&kid) {
            return Ok(false);
        }
        {
            let mut last = self
                .keys_reloaded_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
                return Ok(false);
            }
            *last = Some(now);
        }
        self.reload_keys().await?;
        Ok(self.keys().knows(&kid))
    }

    /// Reloads the key ring from the store, so a key added by `cxauth admin keys rotate` (or
    /// by another instance) starts signing here and retired keys stop verifying. Housekeeping
    /// calls it every [`KEY_RELOAD_INTERVAL`]. Returns how many keys are loaded.
    pub async fn reload_keys(&self) -> Result<usize, AuthError> {
        let stored = self.store.signing_keys().await?;
        let retired = self.store.retired_signing_keys().await?;
        let ring = KeyRing::from_stored(&self.secrets, &stored)
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .with_retired(&retired);
        let (changed, dropped) = {
            let current = self.keys();
            let live: std::collections::HashSet<&str> =
                stored.iter().map(|k| k.kid.as_str()).collect();
            let dropped = current
                .jwks()
                .keys
                .iter()
                .any(|k| !live.contains(k.kid.as_str()));
            (
                dropped
                    || stored.len() != current.jwks().keys.len()
                    || stored.iter().any(|k| !current.knows(&k.kid)),
                dropped,
            )
        };
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        if dropped {
            // A key retired: tokens it signed must not be served from the cache any more.
            self.verified.clear();
        }
        if changed {
            tracing::info!(keys = stored.len(), "reloaded signing keys");
        }
        Ok(stored.len())
    }

    /// Retires signing keys no valid token can still need: those superseded by a newer key
    /// longer ago than the access-token lifetime plus two reload intervals (every instance has
    /// been signing with the newer key for at least one access-token lifetime). Their private
    /// halves are deleted; their public halves are kept for one refresh-token lifetime (plus two
    /// reload intervals) so that an expired access token they signed still answers
    /// `Jwt is expired` and its client refreshes instead of logging in again; after that no
    /// refresh could succeed anyway. Audited; returns the retired key ids.
    pub async fn retire_keys(&self) -> Result<Vec<String>, AuthError> {
        let reloads = 2 * duration_ms(KEY_RELOAD_INTERVAL);
        let keep = duration_ms(self.config.access_token_ttl).saturating_add(reloads);
        let now = self.clock.now_ms();
        let forgotten = self
            .store
            .forget_retired_signing_keys(
                now.saturating_sub(duration_ms(self.config.refresh_token_ttl))
                    .saturating_sub(reloads),
            )
            .await?;
        let retired = self
            .store
            .retire_signing_keys(now.saturating_sub(keep))
            .await?;
        if retired.is_empty() && !forgotten.is_empty() {
            self.reload_keys().await?;
        }
        if !retired.is_empty() {
            let detail = format!("kid {}", retired.join(", "));
            self.audit(
                &AuditContext::local(),
                audit::KEY_RETIRE,
                audit::SUCCESS,
                None,
                None,
                &detail,
            )
            .await;
            self.reload_keys().await?;
        }
        Ok(retired)
    }

    /// The throttle keys of an attempt at `subject` (a username, or an emulator client id, told
    /// apart by `kind`) from `client`: keyed digests, case-insensitive in the subject.
    pub(crate) fn attempt_keys(
        &self,
        kind: &[u8],
        subject: &str,
        client: std::net::IpAddr,
    ) -> AttemptKeys {
        let subject = subject.to_lowercase();
        let addr = crate::throttle::address_key(client);
        let digest = |parts: &[&[u8]]| {
            self.secrets
                .digest(DigestKind::Throttle, parts.concat().as_slice())
        };
        AttemptKeys {
            subject: digest(&[kind, b"\0", subject.as_bytes()]),
            address: digest(&[b"addr\0", &addr]),
            pair: digest(&[b"pair\0", &addr, kind, b"\0", subject.as_bytes()]),
        }
    }

    /// Checks a secret under the login throttle: `hash` is looked up only once the attempt holds
    /// its share of the password pool and its reservation in the budgets; `accept` says whether
    /// a right secret is enough (the user is enabled, the platform matches, …). Returns what
    /// `hash` found when the secret was right and accepted; [`AuthError::LoginFailed`] otherwise
    /// (counted: the reservation stays as a failure).
    pub(crate) async fn throttled_check<T, F, Fut>(
        &self,
        keys: &AttemptKeys,
        secret: SecretString,
        lookup: F,
        accept: impl FnOnce(&T) -> bool,
    ) -> Result<Result<T, Option<T>>, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<(T, String)>, StoreError>>,
    {
        let known = self
            .store
            .login_address_known(&keys.pair, self.clock.now_ms())
            .await?;
        // Budgets first: an attempt they refuse never takes a place in the pool's fair share.
        let reservation = self.throttle.reserve(keys, known).await?;
        let _share = match self.throttle.enter(keys, known) {
            Ok(share) => share,
            Err(refusal) => {
                self.throttle.settle(reservation, false).await;
                return Err(refusal);
            }
        };
        let found = match lookup().await {
            Ok(found) => found,
            Err(e) => {
                self.throttle.settle(reservation, false).await;
                return Err(e.into());
            }
        };
        let (item, hash) = match found {
            Some((item, hash)) => (Some(item), Some(hash)),
            None => (None, None),
        };
        let verified = match self.passwords.verify(hash.as_deref(), secret).await {
            Ok(v) => v,
            Err(e) => {
                // Never checked (the pool is full): not a failure.
                self.throttle.settle(reservation, false).await;
                return Err(Refusal::Pool(e));
            }
        };
        match item {
            Some(item) if verified && accept(&item) => {
                self.throttle.settle(reservation, false).await;
                Ok(Ok(item))
            }
            other => {
                self.throttle.settle(reservation, true).await;
                Ok(Err(other))
            }
        }
    }

    /// Checks a username and password under the login throttle; `accept` adds what else the
    /// login requires of the user (its platform, its RingEX extension). Every failure is the same
    /// [`AuthError::LoginFailed`] and is counted. A success is subject to the per-user rate limit
    /// of successful logins.
    pub(crate) async fn check_password(
        &self,
        username: &str,
        password: SecretString,
        accept: impl FnOnce(&UserRecord) -> bool,
        event: &'static str,
        ctx: &AuditContext,
    ) -> Result<UserRecord, AuthError> {
        use secrecy::ExposeSecret as _;
        if username.len() > MAX_USERNAME_LEN {
            return Err(AuthError::BadRequest(format!(
                "username is longer than {MAX_USERNAME_LEN} bytes"
            )));
        }
        if password.expose_secret().len() > MAX_PASSWORD_LEN {
            return Err(AuthError::BadRequest(format!(
                "password is longer than {MAX_PASSWORD_LEN} bytes"
            )));
        }
        let keys = self.attempt_keys(b"user", username, ctx.client());
        let store = self.store.clone();
        let lookup = || async move {
            Ok(store.user_by_username(username).await?.map(|u| {
                let hash = u.password_hash.clone();
                (u, hash)
            }))
        };
        let accept = |u: &UserRecord| u.enabled && accept(u);
        match self.throttled_check(&keys, password, lookup, accept).await {
            Ok(Ok(user)) => {
                if let Err(retry_after) = self.throttle.take_success(&keys.subject) {
                    return Err(self.throttled(retry_after, event, ctx, username).await);
                }
                Ok(user)
            }
            Ok(Err(user)) => Err(self.login_failed(username, user.as_ref(), event, ctx).await),
            Err(Refusal::Wait(retry_after)) => {
                Err(self.throttled(retry_after, event, ctx, username).await)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Runs `check` — asking RingEX whose token an exchange presents — under the client
    /// address's login budget: a token RingEX refuses counts as a failed attempt of the address,
    /// so forged tokens cannot turn cxauth into a way of flooding the RingEX server.
    pub async fn throttled_exchange_check<T>(
        &self,
        client: std::net::IpAddr,
        check: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let keys = self.attempt_keys(b"ringex", "", client);
        let reservation = match self.throttle.reserve_address(&keys.address).await {
            Ok(r) => r,
            Err(refusal) => {
                if matches!(refusal, Refusal::Wait(_)) {
                    metrics::counter!("cxauth_logins_total", "kind" => audit::RINGEX_EXCHANGE, "outcome" => "throttled")
                        .increment(1);
                }
                return Err(refusal.into());
            }
        };
        let result = check.await;
        let failed = matches!(result, Err(AuthError::RingexRefused));
        self.throttle.settle(reservation, failed).await;
        result
    }

    /// Counts, and audits (at most [`THROTTLED_AUDITS_PER_SECOND`] a second), a throttled
    /// attempt; returns its error.
    async fn throttled(
        &self,
        retry_after: Duration,
        event: &'static str,
        ctx: &AuditContext,
        username: &str,
    ) -> AuthError {
        metrics::counter!("cxauth_logins_total", "kind" => event, "outcome" => "throttled")
            .increment(1);
        if self.may_audit_throttled() {
            let user = self.store.user_by_username(username).await.ok().flatten();
            let shown = self.audited_username(username, user.as_ref());
            self.audit(
                ctx,
                event,
                "throttled",
                user.as_ref().map(|u| u.id),
                Some(&shown),
                "",
            )
            .await;
        }
        AuthError::Throttled { retry_after }
    }

    /// The username as the audit trail keeps it: the user's own name when the user exists, else
    /// only a keyed digest, since what was typed may be a password typed in the wrong field.
    pub(crate) fn audited_username(&self, typed: &str, user: Option<&UserRecord>) -> String {
        match user {
            Some(u) => u.username.clone(),
            None => {
                let d = self
                    .secrets
                    .digest(DigestKind::AuditUsername, typed.to_lowercase().as_bytes());
                let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("unknown-user:{hex}")
            }
        }
    }

    /// Audits a failed login; returns the one error every failure gets. The audit row is the
    /// same write whether the user exists or not, so it reveals nothing by timing. (The failure
    /// was already counted by the throttle: its reservation stays.)
    pub(crate) async fn login_failed(
        &self,
        username: &str,
        user: Option<&UserRecord>,
        event: &'static str,
        ctx: &AuditContext,
    ) -> AuthError {
        let shown = self.audited_username(username, user);
        self.audit(ctx, event, audit::FAILURE, None, Some(&shown), "")
            .await;
        AuthError::LoginFailed
    }

    /// Whether this throttled attempt may still be written to the audit trail this second.
    fn may_audit_throttled(&self) -> bool {
        let mut w = self
            .throttled_audits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(w.0) >= std::time::Duration::from_secs(1) {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= THROTTLED_AUDITS_PER_SECOND
    }

    /// Writes an audit event at the clock's now (see [`crate::audit`]).
    pub(crate) async fn audit(
        &self,
        ctx: &AuditContext,
        event: &'static str,
        outcome: &'static str,
        user_id: Option<i64>,
        username: Option<&str>,
        detail: &str,
    ) {
        match event {
            audit::LOGIN | audit::LEGACY_LOGIN | audit::RINGEX_EXCHANGE
                if outcome != "throttled" =>
            {
                metrics::counter!("cxauth_logins_total", "kind" => event, "outcome" => outcome)
                    .increment(1);
            }
            audit::REFRESH_REUSE => metrics::counter!("cxauth_refresh_reuse_total").increment(1),
            _ => {}
        }
        audit::record(
            self.store.as_ref(),
            ctx,
            self.clock.now_ms(),
            audit::Entry {
                event,
                outcome,
                user_id,
                username,
                detail,
            },
        )
        .await;
    }

    /// Remembers the address of a successful login, so that this user's later attempts from it
    /// get a budget of their own (see [`crate::throttle`]). A failure to remember is logged, not
    /// fatal: the login itself succeeded.
    pub(crate) async fn login_succeeded(
        &self,
        username: &str,
        user: &UserRecord,
        ctx: &AuditContext,
    ) {
        let keys = self.attempt_keys(b"user", username, ctx.client());
        let now = self.clock.now_ms();
        let c = self.throttle.config();
        let until = now.saturating_add(duration_ms(c.remember_address_for));
        if let Err(e) = self
            .store
            .remember_login_address(&keys.pair, user.id, now, until, c.known_addresses_per_user)
            .await
        {
            tracing::warn!(error = %e, "cannot remember the address of a successful login");
        }
    }

    /// Starts a session for `user` and returns its id, its first refresh token and the time.
    /// [`StoreError::Conflict`] if the user was disabled (or its password changed, when
    /// `expected_password_hash` is given) since it was read.
    async fn start_session(
        &self,
        user: &UserRecord,
        expected_password_hash: Option<String>,
        sso_login: bool,
    ) -> Result<(String, String, i64), StoreError> {
        let now = self.clock.now_ms();
        let refresh = new_refresh_token().map_err(|e| StoreError::Internal(e.to_string()))?;
        let session_id = uuid::Uuid::new_v4().to_string();
        self.store
            .create_session(&NewSession {
                session_id: session_id.clone(),
                user_id: user.id,
                refresh_digest: self
                    .secrets
                    .digest(DigestKind::RefreshToken, refresh.as_bytes()),
                expected_password_hash,
                now,
                refresh_expires_at: now.saturating_add(duration_ms(self.config.refresh_token_ttl)),
                sso_login,
                max_sessions: self.config.max_sessions_per_user,
            })
            .await?;
        Ok((session_id, refresh, now))
    }

    /// Direct login with username, password and platform id.
    pub async fn login(&self, input: LoginInput, ctx: &AuditContext) -> Result<Session, AuthError> {
        let user = self
            .check_password(
                &input.username,
                input.password,
                |u| u.platform_id == input.platform_id,
                audit::LOGIN,
                ctx,
            )
            .await?;
        let (session_id, refresh, now) = match self
            .start_session(&user, Some(user.password_hash.clone()), false)
            .await
        {
            Ok(started) => started,
            // Disabled or password changed between the check and now: the login loses the race.
            Err(StoreError::Conflict(_)) => {
                return Err(self
                    .login_failed(&input.username, Some(&user), audit::LOGIN, ctx)
                    .await);
            }
            Err(e) => return Err(e.into()),
        };
        self.login_succeeded(&input.username, &user, ctx).await;
        self.audit(
            ctx,
            audit::LOGIN,
            audit::SUCCESS,
            Some(user.id),
            Some(&user.username),
            "",
        )
        .await;
        self.session_response(&user, &session_id, Some(refresh), now)
    }

    /// The RingEX token exchange, once RingEX has said whose token it is: starts a session of the
    /// cxauth user holding `rc_user_id`, exactly like a direct login (refresh, logout and
    /// revocation work the same), marked `ssoLogin`. The refresh token is returned only when
    /// asked for (`includeRefresh=true`); the session has one either way.
    pub async fn exchange_ringex(
        &self,
        rc_user_id: i64,
        include_refresh: bool,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let user = match self.store.user_by_rc_user_id(rc_user_id).await? {
            Some(u) if u.enabled => u,
            _ => {
                let detail = format!("no enabled user holds RingEX user id {rc_user_id}");
                self.audit(
                    ctx,
                    audit::RINGEX_EXCHANGE,
                    audit::FAILURE,
                    None,
                    None,
                    &detail,
                )
                .await;
                return Err(AuthError::RingexRefused);
            }
        };
        let (session_id, refresh, now) = match self.start_session(&user, None, true).await {
            Ok(started) => started,
            Err(StoreError::Conflict(_)) => return Err(AuthError::RingexRefused),
            Err(e) => return Err(e.into()),
        };
        self.audit(
            ctx,
            audit::RINGEX_EXCHANGE,
            audit::SUCCESS,
            Some(user.id),
            Some(&user.username),
            "",
        )
        .await;
        let mut session =
            self.session_response(&user, &session_id, include_refresh.then_some(refresh), now)?;
        session.sso_login = true;
        Ok(session)
    }

    /// The legacy portal login: checks the password like a direct login (same throttle, same
    /// generic failure) and issues a legacy auth token, a lowercase UUID that works as
    /// `X-Auth-Token` for [`LEGACY_TOKEN_TTL`] (or [`LEGACY_TOKEN_TTL_STAY`]) past its last use.
    pub async fn legacy_login(
        &self,
        username: &str,
        password: SecretString,
        stay_logged_in: bool,
        ctx: &AuditContext,
    ) -> Result<(String, UserRecord), AuthError> {
        let user = self
            .check_password(username, password, |_| true, audit::LEGACY_LOGIN, ctx)
            .await?;
        let token = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now_ms();
        let lifetime_ms = duration_ms(if stay_logged_in {
            LEGACY_TOKEN_TTL_STAY
        } else {
            LEGACY_TOKEN_TTL
        });
        let stored = self
            .store
            .insert_legacy_token(
                user.id,
                &self
                    .secrets
                    .digest(DigestKind::LegacyToken, token.as_bytes()),
                &LegacyToken {
                    expires_at: now.saturating_add(lifetime_ms),
                    lifetime_ms,
                },
                now,
                Some(&user.password_hash),
            )
            .await;
        match stored {
            Ok(()) => {}
            // Disabled or password changed since the check: the login loses the race.
            Err(StoreError::Conflict(_)) => {
                return Err(self
                    .login_failed(username, Some(&user), audit::LEGACY_LOGIN, ctx)
                    .await);
            }
            Err(e) => return Err(e.into()),
        }
        self.login_succeeded(username, &user, ctx).await;
        self.audit(
            ctx,
            audit::LEGACY_LOGIN,
            audit::SUCCESS,
            Some(user.id),
            Some(&user.username),
            "",
        )
        .await;
        Ok((token, user))
    }

    fn session_response(
        &self,
        user: &UserRecord,
        session_id: &str,
        refresh_token: Option<String>,
        now_ms: i64,
    ) -> Result<Session, AuthError> {
        let ttl = self.config.access_token_ttl;
        let iat = now_ms.div_euclid(1000);
        // JWT times are whole seconds: round the lifetime up so a sub-second TTL still works.
        let ttl_secs = ((duration_ms(ttl) + 999) / 1000).max(1);
        let exp = iat.saturating_add(ttl_secs);
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: user.id.to_string(),
            iat,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session_id.to_owned(),
            platform_id: user.platform_id.clone(),
            main_account_id: user.main_account_id.to_string(),
            lapp: LAPP_ADMIN.to_owned(),
            esu: user.has_role(ROLE_SUPER_USER),
        };
        let access_token = self
            .keys()
            .sign(&claims)
            .map_err(|e| AuthError::Internal(format!("signing failed: {e}")))?;
        Ok(Session {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: u64::try_from(exp - iat).unwrap_or(0),
            platform_id: user.platform_id.clone(),
            main_account_id: user.main_account_id.to_string(),
            admin_id: user.id,
            admin_url: ADMIN_URL.into(),
            agent_url: AGENT_URL.into(),
            agent_details: Vec::new(),
            sso_login: false,
        })
    }

    fn refresh_digest(&self, token: &str) -> Result<[u8; 32], AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || !is_token_alphabet(token) {
            return Err(AuthError::RefreshFailed);
        }
        Ok(self
            .secrets
            .digest(DigestKind::RefreshToken, token.as_bytes()))
    }

    /// Trades a refresh token for a new access token and a new refresh token.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let presented = self.refresh_digest(refresh_token)?;
        let successor = new_refresh_token()?;
        let now = self.clock.now_ms();
        let outcome = self
            .store
            .rotate_refresh_token(&Rotation {
                presented,
                successor: self
                    .secrets
                    .digest(DigestKind::RefreshToken, successor.as_bytes()),
                now,
                grace_ms: duration_ms(self.config.refresh_grace),
                successor_expires_at: now
                    .saturating_add(duration_ms(self.config.refresh_token_ttl)),
            })
            .await?;
        match outcome {
            RotateOutcome::Rotated {
                session_id,
                user,
                sso_login,
            } => {
                let mut session =
                    self.session_response(&user, &session_id, Some(successor), now)?;
                session.sso_login = sso_login;
                metrics::counter!("cxauth_refreshes_total", "outcome" => "success").increment(1);
                Ok(session)
            }
            RotateOutcome::Reused {
                session_id,
                user_id,
            } => {
                tracing::warn!(user_id, session = %session_id,
                    "a rotated refresh token was presented after the grace window; session revoked");
                self.audit(
                    ctx,
                    audit::REFRESH_REUSE,
                    "reuse",
                    Some(user_id),
                    None,
                    "session ended",
                )
                .await;
                Err(AuthError::RefreshFailed)
            }
            RotateOutcome::Invalid => {
                metrics::counter!("cxauth_refreshes_total", "outcome" => "failure").increment(1);
                Err(AuthError::RefreshFailed)
            }
        }
    }

    /// Ends the session a refresh token belongs to.
    pub async fn logout(&self, refresh_token: &str, ctx: &AuditContext) -> Result<(), AuthError> {
        let digest = self.refresh_digest(refresh_token)?;
        let now = self.clock.now_ms();
        match self
            .store
            .revoke_session_by_refresh(&digest, RevokeReason::Logout, now)
            .await?
        {
            Some(user_id) => {
                self.audit(
                    ctx,
                    audit::SESSION_END,
                    audit::SUCCESS,
                    Some(user_id),
                    None,
                    "logout",
                )
                .await;
                Ok(())
            }
            None => Err(AuthError::RefreshFailed),
        }
    }

    /// Checks a credential of an admin endpoint and says who is calling.
    pub async fn authenticate(&self, credential: Credential<'_>) -> Result<Principal, AuthError> {
        match credential {
            Credential::None => Err(TokenError::Missing.into()),
            Credential::Bearer(t) => self.authenticate_jwt(t).await,
            Credential::XAuthToken(t) => {
                if ApiToken::parse(t).is_some() {
                    self.authenticate_api_token(t).await
                } else if is_legacy_token_shape(t) {
                    self.authenticate_legacy_token(t).await
                } else if t.bytes().filter(|b| *b == b'.').count() == 2 {
                    self.authenticate_jwt(t).await
                } else {
                    Err(TokenError::Invalid.into())
                }
            }
        }
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid.into());
        }
        let now = self.clock.now_ms();
        let claims = match self.verified.get(token, now) {
            Some(hit) => hit?,
            None => {
                let mut ring = self.keys();
                let claims = Arc::new(match ring.verify(token, now) {
                    Err(TokenError::Invalid) if self.reload_keys_for(token).await? => {
                        ring = self.keys();
                        ring.verify(token, self.clock.now_ms())?
                    }
                    other => other?,
                });
                // Not if the ring changed meanwhile (a key may have retired and the cache been
                // cleared): the next request verifies again.
                if Arc::ptr_eq(&ring, &self.keys()) {
                    self.verified.insert(token, claims.clone(), now);
                }
                claims
            }
        };
        let state = self
            .store
            .session_state(&claims.sid)
            .await?
            .ok_or(TokenError::Invalid)?;
        if state.revoked || !state.user.enabled || claims.sub.parse() != Ok(state.user.id) {
            return Err(TokenError::Invalid.into());
        }
        Ok(Principal {
            user: state.user,
            session_id: Some(claims.sid.clone()),
            via: Via::AccessToken,
        })
    }

    /// `token` has passed [`ApiToken::parse`], which accepts only the canonical form, so its
    /// text is exactly what was digested when it was minted.
    async fn authenticate_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = self.secrets.digest(DigestKind::ApiToken, token.as_bytes());
        let (_, user) = self
            .store
            .api_token_by_digest(&digest)
            .await?
            .ok_or(TokenError::Invalid)?;
        if !user.enabled {
            return Err(TokenError::Invalid.into());
        }
        Ok(Principal {
            user,
            session_id: None,
            via: Via::ApiToken(digest),
        })
    }

    async fn authenticate_legacy_token(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = self
            .secrets
            .digest(DigestKind::LegacyToken, token.as_bytes());
        let now = self.clock.now_ms();
        let (stored, user) = self
            .store
            .legacy_token_by_digest(&digest, now)
            .await?
            .ok_or(TokenError::Invalid)?;
        if !user.enabled {
            return Err(TokenError::Invalid.into());
        }
        let extended = now.saturating_add(stored.lifetime_ms);
        if extended - stored.expires_at >= duration_ms(LEGACY_EXTEND_STEP) {
            self.store.extend_legacy_token(&digest, extended).await?;
        }
        Ok(Principal {
            user,
            session_id: None,
            via: Via::LegacyToken(digest),
        })
    }

    fn api_token_aad(user_id: i64) -> Vec<u8> {
        format!("api-token:{user_id}").into_bytes()
    }

    /// Mints a new permanent API token for the caller, unless it holds
    /// [`AuthConfig::api_token_cap`] already ([`AuthError::TooManyApiTokens`]) or the credential
    /// it called with was revoked since it was checked (refused like that credential).
    pub async fn create_api_token(
        &self,
        who: &Principal,
        ctx: &AuditContext,
    ) -> Result<String, AuthError> {
        let token = ApiToken::generate(&who.user.platform_id)
            .ok_or_else(|| AuthError::Internal("user has an invalid platform id".into()))?
            .to_string();
        let digest = self.secrets.digest(DigestKind::ApiToken, token.as_bytes());
        let sealed = self
            .secrets
            .seal(&Self::api_token_aad(who.user.id), token.as_bytes())?;
        let proof = match (&who.via, &who.session_id) {
            (Via::AccessToken, Some(sid)) => CredentialProof::Session(sid),
            (Via::ApiToken(d), _) => CredentialProof::ApiToken(d),
            (Via::LegacyToken(d), _) => CredentialProof::LegacyToken(d),
            _ => return Err(TokenError::Invalid.into()),
        };
        let cap = self.config.api_token_cap;
        let outcome = self
            .store
            .insert_api_token_checked(&NewApiToken {
                user_id: who.user.id,
                digest: &digest,
                sealed: &sealed,
                now: self.clock.now_ms(),
                cap,
                proof,
            })
            .await?;
        match outcome {
            ApiTokenInsert::Created(_) => {}
            ApiTokenInsert::CredentialGone => return Err(TokenError::Invalid.into()),
            ApiTokenInsert::CapReached => {
                let detail = format!("cap {cap}");
                self.audit(
                    ctx,
                    audit::API_TOKEN_CAP,
                    audit::FAILURE,
                    Some(who.user.id),
                    Some(&who.user.username),
                    &detail,
                )
                .await;
                return Err(AuthError::TooManyApiTokens { cap });
            }
        }
        self.audit(
            ctx,
            audit::API_TOKEN_CREATE,
            audit::SUCCESS,
            Some(who.user.id),
            Some(&who.user.username),
            "",
        )
        .await;
        Ok(token)
    }

    /// The caller's API tokens, oldest first.
    pub async fn list_api_tokens(&self, who: &Principal) -> Result<Vec<String>, AuthError> {
        let aad = Self::api_token_aad(who.user.id);
        let mut out = Vec::new();
        for t in self.store.api_tokens_of(who.user.id).await? {
            match self.secrets.open(&aad, &t.sealed) {
                Some(plain) => out.push(String::from_utf8_lossy(&plain).into_owned()),
                None => tracing::error!(
                    token_id = t.id,
                    "stored API token does not decrypt; skipped"
                ),
            }
        }
        Ok(out)
    }

    /// Deletes an API token owned by the caller or by one of its descendants. Everything else,
    /// including a malformed token, is [`AuthError::NotFound`]: existence is not revealed.
    pub async fn delete_api_token(
        &self,
        who: &Principal,
        token: &str,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        let api = ApiToken::parse(token).ok_or(AuthError::NotFound)?;
        let digest = self
            .secrets
            .digest(DigestKind::ApiToken, api.to_string().as_bytes());
        let (stored, owner) = self
            .store
            .api_token_by_digest(&digest)
            .await?
            .ok_or(AuthError::NotFound)?;
        if owner.id != who.user.id && !owner.has_ancestor(who.user.id) {
            return Err(AuthError::NotFound);
        }
        if !self.store.delete_api_token(stored.id).await? {
            return Err(AuthError::NotFound);
        }
        let detail = format!("token of user id {}", owner.id);
        self.audit(
            ctx,
            audit::API_TOKEN_DELETE,
            audit::SUCCESS,
            Some(who.user.id),
            Some(&who.user.username),
            &detail,
        )
        .await;
        Ok(())
    }

    /// The sub-accounts the caller may use.
    pub async fn accounts(&self, who: &Principal) -> Result<Vec<cxauth_proto::Account>, AuthError> {
        Ok(self
            .store
            .accounts_for_user(who.user.id)
            .await?
            .into_iter()
            .map(account_to_wire)
            .collect())
    }

    /// The caller and its descendants, nested by `children` unless `flatten`.
    pub async fn users(
        &self,
        who: &Principal,
        flatten: bool,
        active_only: bool,
    ) -> Result<Vec<cxauth_proto::User>, AuthError> {
        if !who.user.has_role(ROLE_SUPER_USER) && !who.user.has_role(ROLE_MANAGE_USERS) {
            return Err(AuthError::Forbidden);
        }
        let mut users = self.store.user_subtree(&who.user).await?;
        if active_only {
            users.retain(|u| u.enabled);
        }
        if flatten {
            return Ok(users.iter().map(user_to_wire).collect());
        }
        Ok(nest_users(&users, who.user.id))
    }
}

/// Whether an `X-Auth-Token` has the shape of a legacy auth token: a UUID in lowercase
/// canonical form. API tokens are `<platform>:<uuid>` and access tokens hold dots, so the shapes
/// never collide.
pub fn is_legacy_token_shape(t: &str) -> bool {
    t.len() == 36 && uuid::Uuid::parse_str(t).is_ok_and(|u| u.hyphenated().to_string() == t)
}

/// The wire form of an account row.
pub fn account_to_wire(a: AccountRow) -> cxauth_proto::Account {
    cxauth_proto::Account {
        account_id: a.id.to_string(),
        account_name: a.name,
        main_account_id: a.main_id.to_string(),
        main_account_name: a.main_name.clone(),
        main_account: cxauth_proto::MainAccountRef {
            main_account_id: a.main_id.to_string(),
            main_account_name: a.main_name,
            is_active: a.main_active,
        },
    }
}

/// RFC 3339 form of an epoch-millisecond time.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The wire form of a user, without children.
pub fn user_to_wire(u: &UserRecord) -> cxauth_proto::User {
    cxauth_proto::User {
        user_id: u.id,
        user_name: u.username.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        full_name: format!("{} {}", u.first_name, u.last_name)
            .trim()
            .to_owned(),
        enabled: u.enabled,
        root_user: u.parent_id.is_none(),
        parent_path: u.parent_path.clone(),
        roles: u.roles.clone(),
        creation_date: rfc3339(u.created_at),
        children: Vec::new(),
    }
}

/// Nests `users` (ordered by id, so parents come before children) under `root_id`. A user whose
/// parent was filtered out hangs from its nearest listed ancestor, so nobody disappears.
fn nest_users(users: &[UserRecord], root_id: i64) -> Vec<cxauth_proto::User> {
    let listed: std::collections::HashSet<i64> = users.iter().map(|u| u.id).collect();
    let mut children: BTreeMap<i64, Vec<&UserRecord>> = BTreeMap::new();
    let mut roots = Vec::new();
    for u in users {
        let parent = u
            .parent_path
            .rsplit('.')
            .filter_map(|p| p.parse::<i64>().ok())
            .find(|p| listed.contains(p));
        match parent {
            Some(p) if u.id != root_id => children.entry(p).or_default().push(u),
            _ => roots.push(u),
        }
    }
    fn build(u: &UserRecord, children: &BTreeMap<i64, Vec<&UserRecord>>) -> cxauth_proto::User {
        let mut w = user_to_wire(u);
        w.children = children
            .get(&u.id)
            .map(|cs| cs.iter().map(|c| build(c, children)).collect())
            .unwrap_or_default();
        w
    }
    roots.iter().map(|u| build(u, &children)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, path: &str, enabled: bool) -> UserRecord {
        UserRecord {
            id,
            username: format!("u{id}"),
            platform_id: "aws80".into(),
            password_hash: String::new(),
            first_name: "F".into(),
            last_name: String::new(),
            enabled,
            parent_id: path.rsplit('.').next().and_then(|p| p.parse().ok()),
            parent_path: path.into(),
            main_account_id: 10_000_000,
            roles: vec![],
            created_at: 0,
            rc_user_id: None,
        }
    }

    #[test]
    fn nesting_follows_parent_paths_and_skips_missing_parents() {
        let all = vec![
            user(1, "", true),
            user(2, "1", true),
            user(4, "1.2", true),
            user(5, "1", true),
        ];
        let tree = nest_users(&all, 1);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree[0].children.len(), 2);
        assert_eq!(tree[0].children[0].children[0].user_id, 4);
        assert_eq!(tree[0].full_name, "F");
        // Without user 2, user 4 hangs from user 1.
        let partial = vec![all[0].clone(), all[2].clone()];
        let tree = nest_users(&partial, 1);
        assert_eq!(tree[0].children[0].user_id, 4);
    }

    #[test]
    fn legacy_token_shape_is_a_lowercase_canonical_uuid() {
        assert!(is_legacy_token_shape(
            "c2353445-bc74-4f1a-a850-1d55a371c0a9"
        ));
        assert!(!is_legacy_token_shape(
            "C2353445-BC74-4F1A-A850-1D55A371C0A9"
        ));
        assert!(!is_legacy_token_shape("c2353445bc744f1aa8501d55a371c0a9"));
        assert!(!is_legacy_token_shape(
            "aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"
        ));
        assert!(!is_legacy_token_shape("a.b.c"));
    }

    #[test]
    fn rfc3339_formats_epoch_ms() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
