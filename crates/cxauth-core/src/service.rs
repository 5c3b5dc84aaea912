//! The authentication service: the facade the HTTP layer calls, in domain terms.
//!
//! [`Auth`] holds one part per concern and forwards each operation to it; the logic lives in
//! those modules ([`crate::keys`], [`crate::login`], [`crate::sessions`], [`crate::authn`],
//! [`crate::api_tokens`], [`crate::directory`], [`crate::ringex`], [`crate::emulator`]). Nothing
//! here knows about HTTP. Errors are [`AuthError`], which the server maps to status codes and
//! bodies in one place.
//!
//! The types and constants the server names alongside `Auth` are re-exported here, so a handler
//! needs one import; each is defined (and documented) in its own module.

use crate::api_tokens::ApiTokens;
pub use crate::api_tokens::FlushPace;
use crate::audit::AuditContext;
use crate::authn::Authenticator;
use crate::clock::SharedClock;
use crate::credcache::CredentialCache;
use crate::crypto::{DigestKind, Secrets, same_in_constant_time};
use crate::deps::Deps;
use crate::directory::Directory;
use crate::emulator::Emulator;
use crate::keys::SigningKeys;
use crate::login::LoginGate;
use crate::password::PasswordPool;
use crate::ringex::{Exchange, SharedResolver};
use crate::sessions::Sessions;
use crate::store::{SharedStore, UserRecord};
use crate::throttle::Throttle;
use crate::token_uses::UseNotes;
use crate::user_admin::UserAdmin;
use cxauth_proto::{Jwks, Session};
use secrecy::SecretString;
use std::sync::Arc;

pub use crate::api_tokens::{ApiTokenInfo, CreatedApiToken, check_api_token_name};
pub use crate::authn::{LEGACY_EXTEND_STEP, PresentedToken, Principal, Via, is_legacy_token_shape};
pub use crate::config::{AuthConfig, DEFAULT_API_TOKEN_CAP};
pub use crate::error::{AuthError, StartError};
pub use crate::keys::{KEY_RELOAD_INTERVAL, META_KEY_FINGERPRINT};
pub use crate::limits::{
    MAX_API_TOKEN_LIFETIME, MAX_API_TOKEN_NAME_CHARS, MAX_TOKEN_LEN, MAX_USERNAME_LEN,
    MIN_API_TOKEN_LIFETIME,
};
pub use crate::login::{LEGACY_TOKEN_TTL, LEGACY_TOKEN_TTL_STAY, LoginInput};
pub use crate::token_uses::LAST_USE_STEP;
pub use crate::user_admin::ManagedUserSpec;
pub use crate::wire::{account_to_wire, agent_to_wire, rfc3339, user_to_wire};

/// The service. Shared by all request handlers.
pub struct Auth {
    deps: Deps,
    config: AuthConfig,
    keys: Arc<SigningKeys>,
    gate: Arc<LoginGate>,
    sessions: Sessions,
    authn: Authenticator,
    api_tokens: ApiTokens,
    directory: Directory,
    exchange: Exchange,
    emulator: Emulator,
    user_admin: UserAdmin,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Checks the master key against the database, loads (or on first start creates) the
    /// signing key, and returns the ready service. It has no RingEX resolver until one is
    /// given with [`Auth::with_ringex_resolver`].
    pub async fn start(
        store: SharedStore,
        clock: SharedClock,
        secrets: Secrets,
        passwords: PasswordPool,
        throttle: Throttle,
        config: AuthConfig,
    ) -> Result<Self, StartError> {
        let creds = Arc::new(CredentialCache::new(
            config.credential_cache_staleness,
            config.credential_cache_entries,
        ));
        let deps = Deps::new(store, clock, secrets, creds);
        let keys = Arc::new(SigningKeys::load(deps.clone()).await?);
        let gate = Arc::new(LoginGate::new(deps.clone(), passwords, throttle));
        let uses = Arc::new(UseNotes::default());
        Ok(Auth {
            sessions: Sessions::new(deps.clone(), keys.clone(), config.clone()),
            authn: Authenticator::new(deps.clone(), keys.clone(), uses.clone()),
            api_tokens: ApiTokens::new(deps.clone(), config.api_token_cap, uses),
            directory: Directory::new(deps.store.clone(), deps.creds.clone()),
            exchange: Exchange::new(deps.clone(), None),
            emulator: Emulator::new(deps.clone(), gate.clone(), &config),
            user_admin: UserAdmin::new(deps.clone()),
            keys,
            gate,
            config,
            deps,
        })
    }

    /// The service with `resolver` answering whose RingEX tokens the exchange presents.
    pub fn with_ringex_resolver(mut self, resolver: SharedResolver) -> Self {
        self.exchange = Exchange::new(self.deps.clone(), Some(resolver));
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The login throttle (for periodic purging).
    pub fn throttle(&self) -> &Throttle {
        self.gate.throttle()
    }

    /// The password hashing pool (for its queue depth in the metrics).
    pub fn password_pool(&self) -> &PasswordPool {
        self.gate.passwords()
    }

    /// The in-memory credential cache (its follower runs in the server's background).
    pub fn credential_cache(&self) -> &Arc<CredentialCache> {
        &self.deps.creds
    }

    /// The store (for housekeeping).
    pub fn store(&self) -> &SharedStore {
        &self.deps.store
    }

    /// The built-in RingEX emulator (its endpoints are routed only when it is on).
    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// Whether this instance can serve logins: the database answers and signing keys are
    /// loaded. Behind `/readyz`, so a load balancer stops sending traffic to an instance that
    /// lost its database.
    pub async fn ready(&self) -> Result<(), AuthError> {
        self.deps
            .store
            .get_meta(META_KEY_FINGERPRINT)
            .await?
            .ok_or_else(|| AuthError::Unavailable("the database has no master key yet".into()))?;
        if self.keys.ring().jwks().keys.is_empty() {
            return Err(AuthError::Unavailable("no signing key loaded".into()));
        }
        Ok(())
    }

    /// The public signing keys.
    pub fn jwks(&self) -> Jwks {
        self.keys.ring().jwks().clone()
    }

    /// Reloads the key ring from the store, so a key added by `cxauth admin keys rotate` (or
    /// by another instance) starts signing here and retired keys stop verifying. Housekeeping
    /// calls it every [`KEY_RELOAD_INTERVAL`]. Returns how many keys are loaded.
    pub async fn reload_keys(&self) -> Result<usize, AuthError> {
        self.keys.reload().await
    }

    /// Retires signing keys no valid token can still need: those superseded by a newer key
    /// longer ago than the access-token lifetime plus two reload intervals (every instance has
    /// been signing with the newer key for at least one access-token lifetime). Their private
    /// halves are deleted; their public halves are kept for one refresh-token lifetime (plus two
    /// reload intervals) so that an expired access token they signed still answers
    /// `Jwt is expired` and its client refreshes instead of logging in again; after that no
    /// refresh could succeed anyway. Audited; returns the retired key ids.
    pub async fn retire_keys(&self) -> Result<Vec<String>, AuthError> {
        self.keys
            .retire(self.config.access_token_ttl, self.config.refresh_token_ttl)
            .await
    }

    /// Direct login with username, password and platform id.
    pub async fn login(&self, input: LoginInput, ctx: &AuditContext) -> Result<Session, AuthError> {
        self.gate.login(&self.sessions, input, ctx).await
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
        self.gate
            .legacy_login(username, password, stay_logged_in, ctx)
            .await
    }

    /// Whether the RingEX token exchange can check tokens at all (a RingEX server is configured
    /// or the emulator is on). Without it the exchange is refused before asking anyone (and
    /// before spending the caller's login budget).
    pub fn ringex_configured(&self) -> bool {
        self.exchange.configured()
    }

    /// The RingEX token exchange: asks the resolver whose token it is (under the client
    /// address's login budget: a token RingEX refuses counts as a failed attempt of the
    /// address), then starts a session of the cxauth user holding that RingEX user id, exactly
    /// like a direct login (refresh, logout and revocation work the same), marked `ssoLogin`.
    /// The refresh token is returned only when asked for (`includeRefresh=true`); the session
    /// has one either way.
    pub async fn exchange_ringex_token(
        &self,
        token: &str,
        include_refresh: bool,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        self.exchange
            .exchange(&self.gate, &self.sessions, token, include_refresh, ctx)
            .await
    }

    /// Trades a refresh token for a new access token and a new refresh token.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        self.sessions.refresh(refresh_token, ctx).await
    }

    /// Ends the session a refresh token belongs to.
    pub async fn logout(&self, refresh_token: &str, ctx: &AuditContext) -> Result<(), AuthError> {
        self.sessions.logout(refresh_token, ctx).await
    }

    /// Checks a credential of an admin endpoint and says who is calling.
    pub async fn authenticate(
        &self,
        presented: PresentedToken<'_>,
    ) -> Result<Principal, AuthError> {
        self.authn.authenticate(presented).await
    }

    /// Mints a new permanent API token for the caller, unless it holds
    /// [`AuthConfig::api_token_cap`] already ([`AuthError::TooManyApiTokens`]) or the credential
    /// it called with was revoked since it was checked (refused like that credential).
    pub async fn create_api_token(
        &self,
        who: &Principal,
        ctx: &AuditContext,
    ) -> Result<String, AuthError> {
        self.api_tokens.create(who, ctx).await
    }

    /// The caller's API tokens, oldest first; expired ones are not listed.
    pub async fn list_api_tokens(&self, who: &Principal) -> Result<Vec<String>, AuthError> {
        self.api_tokens.list(who).await
    }

    /// The caller's API tokens with their metadata and a hint instead of the token: most
    /// recently used first, never used last, then newest first. Expired ones are not listed.
    /// For cxauth's own endpoints and the web console.
    pub async fn api_token_details(&self, who: &Principal) -> Result<Vec<ApiTokenInfo>, AuthError> {
        self.api_tokens.details(who).await
    }

    /// Mints an API token with an optional name (checked by [`check_api_token_name`]) and an
    /// optional expiry (epoch ms, in the future and at most [`MAX_API_TOKEN_LIFETIME`] away):
    /// [`AuthError::BadRequest`] otherwise, and the cap and revocation checks of
    /// [`Auth::create_api_token`]. The answer is the only time the token is shown.
    pub async fn create_api_token_with(
        &self,
        who: &Principal,
        name: Option<&str>,
        expires_at: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<CreatedApiToken, AuthError> {
        self.api_tokens
            .create_with(who, name, expires_at, ctx)
            .await
    }

    /// Sets (or with `None` clears) the name of API token `id`, owned by the caller or one of
    /// its descendants; any other id is [`AuthError::NotFound`]. Audited.
    pub async fn rename_api_token(
        &self,
        who: &Principal,
        id: i64,
        name: Option<&str>,
        ctx: &AuditContext,
    ) -> Result<ApiTokenInfo, AuthError> {
        self.api_tokens.rename(who, id, name, ctx).await
    }

    /// Deletes API token `id`, owned by the caller or one of its descendants, exactly like
    /// [`Auth::delete_api_token`]; any other id is [`AuthError::NotFound`].
    pub async fn delete_api_token_by_id(
        &self,
        who: &Principal,
        id: i64,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        self.api_tokens.delete_by_id(who, id, ctx).await
    }

    /// Writes the API token uses noted since the last flush (housekeeping calls it every
    /// minute, paced; a clean stop at full speed; tests call it instead of waiting). Returns
    /// the rows changed. Uses not written, on a store error or when the flush is dropped
    /// half-way, are kept for the next flush.
    pub async fn flush_api_token_uses(&self, pace: FlushPace) -> Result<u64, AuthError> {
        self.api_tokens.flush_uses(pace).await
    }

    /// Tokens whose recent uses are held in memory (bounded; for tests and metrics).
    pub fn api_token_uses_held(&self) -> usize {
        self.api_tokens.noted()
    }

    /// Deletes an API token owned by the caller or by one of its descendants. Everything else,
    /// including a malformed token, is [`AuthError::NotFound`]: existence is not revealed.
    pub async fn delete_api_token(
        &self,
        who: &Principal,
        token: &str,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        self.api_tokens.delete(who, token, ctx).await
    }

    /// The sub-accounts the caller may use.
    pub async fn accounts(&self, who: &Principal) -> Result<Vec<cxauth_proto::Account>, AuthError> {
        self.directory.accounts(who).await
    }

    /// [`Self::accounts`] as the accounts endpoint's answer, a JSON array: serialised once per
    /// credential-cache entry, not per request.
    pub async fn accounts_json(&self, who: &Principal) -> Result<Arc<[u8]>, AuthError> {
        self.directory.accounts_json(who).await
    }

    /// The caller itself as a `User` row, without children (the legacy login's `user`).
    pub async fn me(&self, who: &Principal) -> Result<cxauth_proto::User, AuthError> {
        self.directory.me(who).await
    }

    /// The agents of a sub-account the caller may use (403 for another of its main account's,
    /// 404 for any other account).
    pub async fn agents(
        &self,
        who: &Principal,
        account_id: i64,
    ) -> Result<Vec<cxauth_proto::Agent>, AuthError> {
        self.directory.agents(who, account_id).await
    }

    /// The caller and its descendants, nested by `children` unless `flatten`.
    pub async fn users(
        &self,
        who: &Principal,
        flatten: bool,
        active_only: bool,
    ) -> Result<Vec<cxauth_proto::User>, AuthError> {
        self.directory.users(who, flatten, active_only).await
    }

    /// Whether the caller may manage users (holds `MANAGE_USERS` or `SUPER_USER`): the rule of
    /// `GET …/admin/users` and of the operations below.
    pub fn may_manage_users(&self, who: &Principal) -> bool {
        who.user.may_manage_users()
    }

    /// Creates a user below a manager; see [`crate::user_admin`] for the rules. Returns its id.
    pub async fn create_managed_user(
        &self,
        who: &Principal,
        spec: ManagedUserSpec,
        ctx: &AuditContext,
    ) -> Result<i64, AuthError> {
        self.user_admin
            .create(who, self.gate.passwords(), spec, ctx)
            .await
    }

    /// Disables or enables a user below a manager; see [`crate::user_admin`].
    pub async fn set_managed_user_enabled(
        &self,
        who: &Principal,
        user_id: i64,
        enabled: bool,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        self.user_admin
            .set_enabled(who, user_id, enabled, ctx)
            .await
    }

    /// Sets a new password for a user below a manager, ending its sessions (and its API tokens
    /// with `revoke_api_tokens`); see [`crate::user_admin`].
    pub async fn reset_managed_user_password(
        &self,
        who: &Principal,
        user_id: i64,
        password: SecretString,
        revoke_api_tokens: bool,
        ctx: &AuditContext,
    ) -> Result<crate::store::RevokedCounts, AuthError> {
        self.user_admin
            .reset_password(
                who,
                self.gate.passwords(),
                user_id,
                password,
                revoke_api_tokens,
                ctx,
            )
            .await
    }

    /// Ends every credential of a user below a manager; see [`crate::user_admin`].
    pub async fn revoke_managed_user_tokens(
        &self,
        who: &Principal,
        user_id: i64,
        ctx: &AuditContext,
    ) -> Result<crate::store::RevokedCounts, AuthError> {
        self.user_admin.revoke_tokens(who, user_id, ctx).await
    }

    /// The form token of a session (the web console's CSRF token): a keyed digest of the
    /// session id, so it needs no storage, survives refresh (the session id does not change)
    /// and dies with the session; another session's, or a forged one, does not match.
    pub fn session_form_token(&self, session_id: &str) -> String {
        self.keyed_text(DigestKind::ConsoleForm, session_id.as_bytes())
    }

    /// Whether `presented` is the form token of `session_id`, compared in constant time.
    pub fn check_session_form_token(&self, session_id: &str, presented: &str) -> bool {
        same_in_constant_time(
            self.session_form_token(session_id).as_bytes(),
            presented.as_bytes(),
        )
    }

    /// `token` with a keyed digest binding it to `session_id`: `TOKEN.DIGEST`. The console
    /// carries a new API token from its form to the page that shows it in a short-lived cookie
    /// (post/redirect/get, so that reloading the page never makes a second token); the digest
    /// keeps a cookie planted by anyone else (a sibling host can set cookies for this one) from
    /// being shown as "your new API token".
    pub fn seal_new_token(&self, session_id: &str, token: &str) -> String {
        format!("{token}.{}", self.new_token_digest(session_id, token))
    }

    /// The token of a [`Auth::seal_new_token`] value made for `session_id`, or `None` (another
    /// session's, altered, or not one at all). The digest is compared in constant time.
    pub fn open_new_token<'a>(&self, session_id: &str, sealed: &'a str) -> Option<&'a str> {
        let (token, digest) = sealed.rsplit_once('.')?;
        same_in_constant_time(
            self.new_token_digest(session_id, token).as_bytes(),
            digest.as_bytes(),
        )
        .then_some(token)
    }

    fn new_token_digest(&self, session_id: &str, token: &str) -> String {
        // Length-prefixed, so the two parts cannot be shifted into each other.
        let len = (session_id.len() as u64).to_le_bytes();
        let input = [&len[..], session_id.as_bytes(), token.as_bytes()].concat();
        self.keyed_text(DigestKind::ConsoleNewToken, &input)
    }

    /// A keyed digest of `input` as URL-safe base64 text: what a cookie or a form can carry.
    fn keyed_text(&self, kind: DigestKind, input: &[u8]) -> String {
        use base64::Engine as _;
        let d = self.deps.secrets.digest(kind, input);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
    }
}
