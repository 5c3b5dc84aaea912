//! Async client for cxauth and the RingCX (Engage Voice) authentication API.
//!
//! Two layers:
//!
//! - [`Client`]: one method per call of the contract (login, refresh, logout, API tokens,
//!   accounts, users), each taking an explicit [`Credential`]. Nothing happens behind your back.
//! - [`SessionClient`]: what most programs want. It holds the tokens of a login, refreshes the
//!   access token shortly before its `exp` (and, as a fallback, once after a 401 `Jwt is
//!   expired`), lets concurrent callers share a single refresh, hands every rotated session to a
//!   hook so you can persist it, and never refreshes in API-token mode.
//!
//! The same code works against cxauth and against the real RingCX hosts
//! (`https://ringcx.ringcentral.com`, `https://engage.ringcentral.com`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cxauth_client::Error> {
//! use cxauth_client::{Client, SessionClient};
//!
//! let client = Client::builder("http://127.0.0.1:8080").build()?;
//! let session = SessionClient::login(client, "admin", "secret", "aws80")
//!     .await?
//!     // Called with every rotated session: save it, or the next run must log in again.
//!     .on_rotate(|s| println!("new session for user {}", s.admin_id));
//! for account in session.accounts().await? {
//!     println!("{} {}", account.account_id, account.account_name);
//! }
//! let token = session.create_api_token().await?; // permanent: `aws80:<uuid>`
//! session.delete_api_token(&token).await?;
//! session.logout().await?;
//! # Ok(()) }
//! ```
//!
//! Errors are one enum, [`Error`], that keeps what the server said: status, `errorCode`,
//! message and request id.

mod retry;
mod session;

pub use retry::RetryPolicy;
pub use session::{NowFn, RotateHook, SessionClient};

pub use cxauth_proto::{
    Account, Agent, ApiTokenDetails, CreatedApiToken, ErrorBody, Jwks, LegacyLogin, Session, User,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::time::Duration;

/// cxauth's own API-token endpoints (not on a RingCX server).
const API_TOKENS: &str = "/cxauth/v1/api-tokens";

/// Admin API prefix of current RingCX hosts.
pub const PREFIX_VOICE: &str = "/voice/api/v1";
/// Legacy admin API prefix.
pub const PREFIX_LEGACY: &str = "/api/v1";

/// Everything but unreserved characters is encoded in a path segment (so `:` becomes `%3A`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A credential for the admin endpoints.
#[derive(Clone)]
pub enum Credential {
    /// An access token, sent as `Authorization: Bearer`.
    Bearer(String),
    /// An API token (or any token), sent as `X-Auth-Token`.
    XAuthToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer([redacted])"),
            Credential::XAuthToken(_) => f.write_str("XAuthToken([redacted])"),
        }
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// `errorCode` of a JSON error body; `None` for the plain-text bearer errors.
        error_code: Option<String>,
        /// `details` of a JSON error body, or the plain-text body.
        message: String,
        /// `x-request-id` of the response, to find the request in the server log.
        request_id: Option<String>,
        /// `Retry-After`, on 429 and 503.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached, or the connection failed.
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    /// The session cannot be used any more: its refresh token was refused (logout, reuse,
    /// password change, disabled user, or simply too old) or the server revoked its access
    /// token. Only a new login helps.
    #[error("session ended: log in again")]
    SessionEnded {
        /// `x-request-id` of the refusal, if the server sent one.
        request_id: Option<String>,
    },
    /// The call makes no sense in this mode, e.g. logging out of an API token.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The server answered 2xx with a body that is not what the contract says.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The base URL is not usable.
    #[error("invalid server URL: {0}")]
    Url(String),
}

impl Error {
    /// Whether the server has no such endpoint: a 404 from listing or creating on cxauth's own
    /// additions (`/cxauth/v1/api-tokens`) means the server is RingCX itself, which lacks them.
    /// (On rename and delete by id, a 404 means no such token of the caller.)
    pub fn is_not_supported(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether this is the one refusal a client should answer with a refresh: 401 `Jwt is
    /// expired` (RingCX clients test for the word "expired").
    pub fn is_token_expired(&self) -> bool {
        matches!(self, Error::Status { status, message, .. }
            if *status == StatusCode::UNAUTHORIZED && message.contains("expired"))
    }

    /// `x-request-id` of the failed response, to find the request in the server log.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Status { request_id, .. } | Error::SessionEnded { request_id } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// `Retry-After` of a 429 or 503 the client gave up on.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The client. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    prefix: &'static str,
    retry: RetryPolicy,
}

/// Settings of a [`Client`], so new ones can be added without breaking callers.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    prefix: &'static str,
    timeout: Duration,
    retry: RetryPolicy,
}

impl ClientBuilder {
    /// The admin API prefix ([`PREFIX_VOICE`] by default, [`PREFIX_LEGACY`] for `/api/v1`).
    pub fn prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    /// Longest a single request may take (30 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How 429 and 503 answers are retried ([`RetryPolicy::default`] unless set).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The client; fails only on a base URL that is not `http://` or `https://`.
    pub fn build(self) -> Result<Client, Error> {
        let parsed = url::Url::parse(&self.base).map_err(|e| Error::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::Url(format!(
                "{}: use http://HOST or https://HOST",
                self.base
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(concat!("cxauth-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base: self.base.trim_end_matches('/').to_owned(),
            prefix: self.prefix,
            retry: self.retry,
        })
    }
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`), using the
    /// `/voice/api/v1` admin prefix, a 30 s timeout and **no retries**: every method sends
    /// exactly one request, which is what conformance tests want. Programs usually prefer
    /// [`Client::builder`], which retries 429 and 503.
    pub fn new(base: &str) -> Result<Self, Error> {
        Self::builder(base).retry(RetryPolicy::none()).build()
    }

    /// Starts a [`ClientBuilder`] for the server at `base`.
    pub fn builder(base: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.to_owned(),
            prefix: PREFIX_VOICE,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// The same client using another admin prefix ([`PREFIX_LEGACY`] for `/api/v1`).
    pub fn with_prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    /// The server URL, without a trailing `/`: for messages such as "cannot reach URL".
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    fn admin(&self, method: Method, path: &str, cred: &Credential) -> RequestBuilder {
        self.authed(method, &format!("{}{}", self.prefix, path), cred)
    }

    fn authed(&self, method: Method, path: &str, cred: &Credential) -> RequestBuilder {
        let req = self.request(method, path);
        match cred {
            Credential::Bearer(t) => req.bearer_auth(t),
            Credential::XAuthToken(t) => req.header("X-Auth-Token", t),
        }
    }

    /// Sends `req`, retrying 429 and 503 as the [`RetryPolicy`] says.
    async fn send(&self, mut req: RequestBuilder) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            // Form and empty bodies always clone; a streaming body would not, and is sent once.
            let retry_copy = req_clone(&req, attempt < self.retry.max_retries);
            match Self::send_once(req).await {
                Err(e) => match (retry_copy, self.retry.wait_before_retry(&e, attempt)) {
                    (Some(again), Some(wait)) => {
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        req = again;
                    }
                    _ => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    async fn send_once(req: RequestBuilder) -> Result<Response, Error> {
        let res = req.send().await?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let request_id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = res.text().await.unwrap_or_default();
        let (error_code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (Some(b.error_code), b.details),
            Err(_) => (None, text),
        };
        Err(Error::Status {
            status,
            error_code,
            message,
            request_id,
            retry_after,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, Error> {
        let res = self.send(req).await?;
        let bytes = res.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn text(&self, req: RequestBuilder) -> Result<String, Error> {
        Ok(self.send(req).await?.text().await?)
    }

    /// The RingEX token exchange (`POST /api/auth/login/rc/accesstoken`): trades a RingEX
    /// (RingCentral) access token for a session (`ssoLogin: true`). The session carries a refresh
    /// token only when `include_refresh` is set, as with RingCX.
    pub async fn exchange_ringex_token(
        &self,
        rc_access_token: &str,
        include_refresh: bool,
    ) -> Result<Session, Error> {
        let path = if include_refresh {
            "/api/auth/login/rc/accesstoken?includeRefresh=true"
        } else {
            "/api/auth/login/rc/accesstoken"
        };
        self.json(self.request(Method::POST, path).form(&[
            ("rcAccessToken", rc_access_token),
            ("rcTokenType", "Bearer"),
        ]))
        .await
    }

    /// The legacy portal login (`POST /api/v1/auth/login`): an `authToken` to send as
    /// `X-Auth-Token` (see [`Credential::XAuthToken`]), living one hour past its last use, or two
    /// weeks with `stay_logged_in`.
    pub async fn legacy_login(
        &self,
        username: &str,
        password: &str,
        stay_logged_in: bool,
    ) -> Result<LegacyLogin, Error> {
        self.json(self.request(Method::POST, "/api/v1/auth/login").form(&[
            ("username", username),
            ("password", password),
            (
                "stayLoggedIn",
                if stay_logged_in { "true" } else { "false" },
            ),
        ]))
        .await
    }

    /// Direct login (`POST /api/auth/login/admin`), credentials in a form body.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        platform_id: &str,
    ) -> Result<Session, Error> {
        self.json(self.request(Method::POST, "/api/auth/login/admin").form(&[
            ("username", username),
            ("password", password),
            ("platformId", platform_id),
        ]))
        .await
    }

    /// Trades a refresh token for a new session (`POST /api/auth/token/refresh`).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, Error> {
        self.json(
            self.request(Method::POST, "/api/auth/token/refresh")
                .form(&[("refresh_token", refresh_token), ("rcTokenType", "Bearer")]),
        )
        .await
    }

    /// Ends the session of a refresh token (`DELETE /api/auth/logout/{token}`).
    pub async fn logout(&self, refresh_token: &str) -> Result<(), Error> {
        let path = format!(
            "/api/auth/logout/{}",
            utf8_percent_encode(refresh_token, SEGMENT)
        );
        expect_true(self.text(self.request(Method::DELETE, &path)).await?)
    }

    /// Mints a permanent API token (`POST …/admin/token`).
    pub async fn create_api_token(&self, cred: &Credential) -> Result<String, Error> {
        self.text(self.admin(Method::POST, "/admin/token", cred))
            .await
    }

    /// The caller's API tokens, oldest first (`GET …/admin/token`).
    pub async fn list_api_tokens(&self, cred: &Credential) -> Result<Vec<String>, Error> {
        self.json(self.admin(Method::GET, "/admin/token", cred))
            .await
    }

    /// Deletes an API token (`DELETE …/admin/token/{token}`, the token percent-encoded).
    pub async fn delete_api_token(&self, cred: &Credential, token: &str) -> Result<(), Error> {
        let path = format!("/admin/token/{}", utf8_percent_encode(token, SEGMENT));
        expect_true(self.text(self.admin(Method::DELETE, &path, cred)).await?)
    }

    /// The caller's API tokens with name, expiry, last use and a hint instead of the token
    /// (`GET /cxauth/v1/api-tokens`), most recently used first. A cxauth addition: a RingCX
    /// server answers 404 ([`Error::is_not_supported`]); use [`Client::list_api_tokens`] there.
    pub async fn api_token_details(
        &self,
        cred: &Credential,
    ) -> Result<Vec<ApiTokenDetails>, Error> {
        self.json(self.authed(Method::GET, API_TOKENS, cred)).await
    }

    /// Mints an API token with an optional name and lifetime (`POST /cxauth/v1/api-tokens`,
    /// `expiresIn` in whole seconds, 60 s to two years); the answer is the only time the token is
    /// shown. A cxauth addition: a RingCX server answers 404.
    pub async fn create_api_token_with(
        &self,
        cred: &Credential,
        name: Option<&str>,
        expires_in: Option<Duration>,
    ) -> Result<CreatedApiToken, Error> {
        let mut body = serde_json::Map::new();
        if let Some(n) = name {
            body.insert("name".into(), n.into());
        }
        if let Some(d) = expires_in {
            body.insert("expiresIn".into(), d.as_secs().into());
        }
        self.json(self.authed(Method::POST, API_TOKENS, cred).json(&body))
            .await
    }

    /// Sets (`Some`) or clears (`None`) the name of API token `id`
    /// (`PATCH /cxauth/v1/api-tokens/{id}`).
    pub async fn rename_api_token(
        &self,
        cred: &Credential,
        id: i64,
        name: Option<&str>,
    ) -> Result<ApiTokenDetails, Error> {
        let path = format!("{API_TOKENS}/{id}");
        self.json(
            self.authed(Method::PATCH, &path, cred)
                .json(&serde_json::json!({ "name": name })),
        )
        .await
    }

    /// Deletes API token `id` (`DELETE /cxauth/v1/api-tokens/{id}`).
    pub async fn delete_api_token_by_id(&self, cred: &Credential, id: i64) -> Result<(), Error> {
        let path = format!("{API_TOKENS}/{id}");
        self.send(self.authed(Method::DELETE, &path, cred)).await?;
        Ok(())
    }

    /// The sub-accounts the caller may use (`GET …/admin/accounts`).
    pub async fn accounts(&self, cred: &Credential) -> Result<Vec<Account>, Error> {
        self.json(self.admin(Method::GET, "/admin/accounts", cred))
            .await
    }

    /// The agents of a sub-account the caller may use
    /// (`GET …/admin/accounts/{accountId}/agents`).
    pub async fn agents(&self, cred: &Credential, account_id: &str) -> Result<Vec<Agent>, Error> {
        let path = format!(
            "/admin/accounts/{}/agents",
            utf8_percent_encode(account_id, NON_ALPHANUMERIC)
        );
        self.json(self.admin(Method::GET, &path, cred)).await
    }

    /// The caller and its descendants (`GET …/admin/users`).
    pub async fn users(
        &self,
        cred: &Credential,
        flatten: bool,
        active_only: bool,
    ) -> Result<Vec<User>, Error> {
        self.json(self.admin(Method::GET, "/admin/users", cred).query(&[
            ("flatten", flatten.to_string()),
            ("activeOnly", active_only.to_string()),
        ]))
        .await
    }

    /// The server's public signing keys (`GET /.well-known/jwks.json`).
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        self.json(self.request(Method::GET, "/.well-known/jwks.json"))
            .await
    }

    /// Whether the server answers (`GET /healthz`).
    pub async fn healthz(&self) -> Result<(), Error> {
        self.send(self.request(Method::GET, "/healthz"))
            .await
            .map(drop)
    }
}

fn expect_true(body: String) -> Result<(), Error> {
    if body.trim() == "true" {
        Ok(())
    } else {
        Err(Error::Decode(format!("expected `true`, got {body:?}")))
    }
}

fn req_clone(req: &RequestBuilder, wanted: bool) -> Option<RequestBuilder> {
    if wanted { req.try_clone() } else { None }
}
