//! [`SessionClient`]: the tokens of one login, kept fresh, shared by every caller.
//!
//! The rules RingCX clients get wrong, in one place:
//!
//! - refresh *before* the access token expires (its JWT `exp`, or `expiresIn` when the token
//!   cannot be read), with a margin of 30 s or a tenth of the lifetime, whichever is smaller;
//! - if the server still answers 401 `Jwt is expired` (clock skew), refresh once and retry once;
//! - never two refreshes of the same refresh token: the tokens sit behind one async mutex held
//!   across the refresh, so callers arriving meanwhile wait for its result, and a caller whose
//!   401 was for an older token than the one now stored uses the stored one instead of
//!   refreshing again (a second refresh after the server's grace window would end the session);
//! - every rotated session goes to the `on_rotate` hook, so it can be saved;
//! - an API token (`X-Auth-Token`) is permanent: it is never refreshed.

use crate::{
    Account, Agent, ApiTokenDetails, Client, CreatedApiToken, Credential, Error, Session, User,
};
use base64::Engine as _;
use reqwest::StatusCode;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// Called with each new session after a refresh, while no other refresh can run, so a hook that
/// writes the session to disk always writes them in order.
pub type RotateHook = Arc<dyn Fn(&Session) + Send + Sync>;

/// The client's idea of "now", in epoch milliseconds. Injected so tests can move time.
pub type NowFn = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Longest refresh margin: refresh at most this long before `exp`.
const MAX_MARGIN_MS: i64 = 30_000;

/// A logged-in session (or an API token) that the client keeps usable.
///
/// Cheap to clone; clones share the tokens, so one refresh serves them all. Settings made with
/// [`on_rotate`](Self::on_rotate) or [`clock`](Self::clock) apply to the value they are called on
/// and to clones made afterwards.
#[derive(Clone)]
pub struct SessionClient {
    client: Client,
    mode: Arc<Mode>,
    on_rotate: Option<RotateHook>,
    now: NowFn,
}

impl std::fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &*self.mode {
            Mode::Session { .. } => "session",
            Mode::ApiToken(_) => "api-token",
        };
        f.debug_struct("SessionClient")
            .field("server", &self.client.base_url())
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

// One `Mode` exists per session, behind an `Arc`: boxing the bigger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Mode {
    Session {
        tokens: Mutex<Tokens>,
        /// Refreshes done, for tests and diagnostics.
        refreshes: AtomicU64,
    },
    ApiToken(String),
}

struct Tokens {
    session: Session,
    /// When the access token expires, epoch ms.
    exp_ms: i64,
    /// How long before `exp_ms` to refresh.
    margin_ms: i64,
    /// Bumped on every rotation, so a caller can tell whether its token is still the current one.
    generation: u64,
    /// Set once the server refused the session; later calls fail without a round trip.
    ended: bool,
}

impl Tokens {
    fn new(session: Session, now_ms: i64) -> Self {
        let (exp_ms, lifetime_ms) = expiry(&session, now_ms);
        Tokens {
            session,
            exp_ms,
            margin_ms: (lifetime_ms / 10).clamp(0, MAX_MARGIN_MS),
            generation: 0,
            ended: false,
        }
    }

    fn needs_refresh(&self, now_ms: i64) -> bool {
        now_ms >= self.exp_ms.saturating_sub(self.margin_ms)
    }
}

/// `exp` and lifetime of the access token in ms: from the JWT payload (read without verifying:
/// the client only needs to know when to refresh) or else from `expiresIn` counted from now.
fn expiry(session: &Session, now_ms: i64) -> (i64, i64) {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: i64,
        iat: Option<i64>,
    }
    let claims = session
        .access_token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok());
    let expires_in_ms = i64::try_from(session.expires_in)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    match claims {
        Some(c) => {
            let exp_ms = c.exp.saturating_mul(1000);
            let lifetime = match c.iat {
                Some(iat) => exp_ms.saturating_sub(iat.saturating_mul(1000)),
                None => expires_in_ms,
            };
            (exp_ms, lifetime)
        }
        None => (now_ms.saturating_add(expires_in_ms), expires_in_ms),
    }
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl SessionClient {
    /// Logs in directly (`username`, `password`, `platformId`) and keeps the session.
    pub async fn login(
        client: Client,
        username: &str,
        password: &str,
        platform_id: &str,
    ) -> Result<Self, Error> {
        let session = client.login(username, password, platform_id).await?;
        Ok(Self::from_session(client, session))
    }

    /// Resumes a session saved earlier (e.g. by an [`on_rotate`](Self::on_rotate) hook).
    pub fn from_session(client: Client, session: Session) -> Self {
        let now: NowFn = Arc::new(system_now_ms);
        let tokens = Tokens::new(session, now());
        SessionClient {
            client,
            mode: Arc::new(Mode::Session {
                tokens: Mutex::new(tokens),
                refreshes: AtomicU64::new(0),
            }),
            on_rotate: None,
            now,
        }
    }

    /// Uses a permanent API token, sent as `X-Auth-Token`; never refreshes.
    pub fn with_api_token(client: Client, api_token: impl Into<String>) -> Self {
        SessionClient {
            client,
            mode: Arc::new(Mode::ApiToken(api_token.into())),
            on_rotate: None,
            now: Arc::new(system_now_ms),
        }
    }

    /// Calls `hook` with every rotated session (new access **and** refresh token). Persist it:
    /// the previous refresh token stops working after the server's grace window.
    pub fn on_rotate(mut self, hook: impl Fn(&Session) + Send + Sync + 'static) -> Self {
        self.on_rotate = Some(Arc::new(hook));
        self
    }

    /// Replaces the clock used to decide when to refresh (epoch ms). For tests; the default is
    /// the system clock.
    pub fn clock(mut self, now: NowFn) -> Self {
        self.now = now;
        self
    }

    /// The low-level client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The current session, or `None` in API-token mode.
    pub async fn session(&self) -> Option<Session> {
        match &*self.mode {
            Mode::Session { tokens, .. } => Some(tokens.lock().await.session.clone()),
            Mode::ApiToken(_) => None,
        }
    }

    /// How many refreshes this session has done (shared by clones).
    pub fn refresh_count(&self) -> u64 {
        match &*self.mode {
            Mode::Session { refreshes, .. } => refreshes.load(Ordering::SeqCst),
            Mode::ApiToken(_) => 0,
        }
    }

    /// Refreshes now, whatever the expiry; returns the new session. Fails in API-token mode.
    pub async fn refresh(&self) -> Result<Session, Error> {
        let Mode::Session { tokens, refreshes } = &*self.mode else {
            return Err(Error::Unsupported("an API token is never refreshed"));
        };
        let mut t = tokens.lock().await;
        self.rotate(&mut t, refreshes).await?;
        Ok(t.session.clone())
    }

    /// Ends the session on the server (`DELETE /api/auth/logout/{refreshToken}`). Afterwards
    /// every call fails with [`Error::SessionEnded`]. A session the server had already ended
    /// counts as logged out.
    pub async fn logout(&self) -> Result<(), Error> {
        let Mode::Session { tokens, .. } = &*self.mode else {
            return Err(Error::Unsupported("an API token has no session to end"));
        };
        let mut t = tokens.lock().await;
        if t.ended {
            return Ok(());
        }
        let Some(rt) = t.session.refresh_token.clone() else {
            return Err(Error::Unsupported("this session has no refresh token"));
        };
        match self.client.logout(&rt).await {
            Ok(()) => {}
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {}
            Err(e) => return Err(e),
        }
        t.ended = true;
        Ok(())
    }

    /// Mints a permanent API token.
    pub async fn create_api_token(&self) -> Result<String, Error> {
        self.call(|c, cred| async move { c.create_api_token(&cred).await })
            .await
    }

    /// The caller's API tokens, oldest first.
    pub async fn list_api_tokens(&self) -> Result<Vec<String>, Error> {
        self.call(|c, cred| async move { c.list_api_tokens(&cred).await })
            .await
    }

    /// Deletes one of the caller's (or a descendant's) API tokens.
    pub async fn delete_api_token(&self, token: &str) -> Result<(), Error> {
        self.call(|c, cred| {
            let token = token.to_owned();
            async move { c.delete_api_token(&cred, &token).await }
        })
        .await
    }

    /// The caller's API tokens with their details; see [`Client::api_token_details`].
    pub async fn api_token_details(&self) -> Result<Vec<ApiTokenDetails>, Error> {
        self.call(|c, cred| async move { c.api_token_details(&cred).await })
            .await
    }

    /// Mints an API token with a name and a lifetime; see [`Client::create_api_token_with`].
    pub async fn create_api_token_with(
        &self,
        name: Option<&str>,
        expires_in: Option<std::time::Duration>,
    ) -> Result<CreatedApiToken, Error> {
        self.call(|c, cred| {
            let name = name.map(str::to_owned);
            async move {
                c.create_api_token_with(&cred, name.as_deref(), expires_in)
                    .await
            }
        })
        .await
    }

    /// Sets or clears an API token's name; see [`Client::rename_api_token`].
    pub async fn rename_api_token(
        &self,
        id: i64,
        name: Option<&str>,
    ) -> Result<ApiTokenDetails, Error> {
        self.call(|c, cred| {
            let name = name.map(str::to_owned);
            async move { c.rename_api_token(&cred, id, name.as_deref()).await }
        })
        .await
    }

    /// Deletes an API token by id; see [`Client::delete_api_token_by_id`].
    pub async fn delete_api_token_by_id(&self, id: i64) -> Result<(), Error> {
        self.call(|c, cred| async move { c.delete_api_token_by_id(&cred, id).await })
            .await
    }

    /// The sub-accounts the caller may use.
    pub async fn accounts(&self) -> Result<Vec<Account>, Error> {
        self.call(|c, cred| async move { c.accounts(&cred).await })
            .await
    }

    /// The agents of a sub-account the caller may use.
    pub async fn agents(&self, account_id: &str) -> Result<Vec<Agent>, Error> {
        self.call(|c, cred| async move { c.agents(&cred, account_id).await })
            .await
    }

    /// The caller and its descendants, nested by `children` unless `flatten`.
    pub async fn users(&self, flatten: bool, active_only: bool) -> Result<Vec<User>, Error> {
        self.call(|c, cred| async move { c.users(&cred, flatten, active_only).await })
            .await
    }

    /// Runs one admin call with a fresh credential, refreshing once on `Jwt is expired`.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(Client, Credential) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let (tokens, refreshes) = match &*self.mode {
            Mode::ApiToken(t) => {
                return f(self.client.clone(), Credential::XAuthToken(t.clone())).await;
            }
            Mode::Session { tokens, refreshes } => (tokens, refreshes),
        };
        let (access, generation) = {
            let mut t = tokens.lock().await;
            if t.ended {
                return Err(Error::SessionEnded { request_id: None });
            }
            if t.needs_refresh((self.now)()) {
                self.rotate(&mut t, refreshes).await?;
            }
            (t.session.access_token.clone(), t.generation)
        };
        let first = f(self.client.clone(), Credential::Bearer(access)).await;
        match first {
            Err(e) if e.is_token_expired() => {}
            other => return self.ended_on_refusal(tokens, other).await,
        }
        let access = {
            let mut t = tokens.lock().await;
            if t.ended {
                return Err(Error::SessionEnded { request_id: None });
            }
            // Someone else refreshed while our request was out: use theirs, do not refresh again.
            if t.generation == generation {
                self.rotate(&mut t, refreshes).await?;
            }
            t.session.access_token.clone()
        };
        let second = f(self.client.clone(), Credential::Bearer(access)).await;
        self.ended_on_refusal(tokens, second).await
    }

    /// A 401 that is not "expired" on a fresh access token means the server revoked the session
    /// (logout elsewhere, password change, disabled user): report it as such.
    async fn ended_on_refusal<T>(
        &self,
        tokens: &Mutex<Tokens>,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        match result {
            Err(Error::Status {
                status,
                request_id,
                message,
                ..
            }) if status == StatusCode::UNAUTHORIZED && !message.contains("expired") => {
                tokens.lock().await.ended = true;
                Err(Error::SessionEnded { request_id })
            }
            other => other,
        }
    }

    /// Trades the refresh token for a new session. The caller holds the lock, which is what makes
    /// refreshes single-flight.
    async fn rotate(&self, t: &mut Tokens, refreshes: &AtomicU64) -> Result<(), Error> {
        let Some(rt) = t.session.refresh_token.clone() else {
            t.ended = true;
            return Err(Error::SessionEnded { request_id: None });
        };
        match self.client.refresh(&rt).await {
            Ok(mut new) => {
                if new.refresh_token.is_none() {
                    new.refresh_token = Some(rt);
                }
                let generation = t.generation + 1;
                *t = Tokens::new(new, (self.now)());
                t.generation = generation;
                refreshes.fetch_add(1, Ordering::SeqCst);
                if let Some(hook) = &self.on_rotate {
                    hook(&t.session);
                }
                Ok(())
            }
            Err(Error::Status {
                status, request_id, ..
            }) if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST => {
                t.ended = true;
                Err(Error::SessionEnded { request_id })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(access_token: &str, expires_in: u64) -> Session {
        serde_json::from_value(serde_json::json!({
            "accessToken": access_token, "refreshToken": "r", "tokenType": "Bearer",
            "expiresIn": expires_in, "platformId": "aws80", "mainAccountId": "10000000",
            "adminId": 1, "adminUrl": "/voice/admin/", "agentUrl": "/voice/agent/",
            "agentDetails": [], "ssoLogin": false
        }))
        .expect("session")
    }

    fn jwt(payload: &str) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", b.encode("{}"), b.encode(payload))
    }

    #[test]
    fn expiry_comes_from_the_jwt_and_falls_back_to_expires_in() {
        let s = session(&jwt(r#"{"exp":1000,"iat":700}"#), 999);
        assert_eq!(expiry(&s, 5), (1_000_000, 300_000));
        let t = Tokens::new(s, 5);
        assert_eq!(t.margin_ms, 30_000, "a tenth of 300 s, at most 30 s");
        assert!(!t.needs_refresh(969_999));
        assert!(t.needs_refresh(970_000));
        // Short lifetimes refresh at 90 %.
        let t = Tokens::new(session(&jwt(r#"{"exp":10,"iat":8}"#), 2), 0);
        assert_eq!((t.exp_ms, t.margin_ms), (10_000, 200));
        // An opaque token: expiresIn from now.
        assert_eq!(expiry(&session("opaque", 60), 5_000), (65_000, 60_000));
    }

    #[test]
    fn a_session_without_expires_in_still_reads() {
        // The real RingCX sends no expiresIn; the JWT's exp is what counts.
        let v = serde_json::json!({
            "accessToken": jwt(r#"{"exp":50}"#), "refreshToken": "r", "tokenType": "Bearer",
            "platformId": "aws80", "mainAccountId": "10000000", "adminId": 1,
            "adminUrl": "/voice/admin/", "agentUrl": "/voice/agent/", "agentDetails": [],
            "ssoLogin": false
        });
        let s: Session = serde_json::from_value(v).expect("reads");
        assert_eq!(s.expires_in, 0);
        assert_eq!(expiry(&s, 0).0, 50_000);
    }
}
