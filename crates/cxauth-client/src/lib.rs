//! Async client for cxauth and the RingCX authentication API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cxauth_client::Error> {
//! use cxauth_client::{Client, Credential};
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let session = client.login("admin", "secret", "aws80").await?;
//! let bearer = Credential::Bearer(session.access_token.clone());
//! let api_token = client.create_api_token(&bearer).await?;
//! let accounts = client.accounts(&Credential::XAuthToken(api_token)).await?;
//! # let _ = accounts; Ok(()) }
//! ```
//!
//! This first version covers the calls of the contract one to one. Session management (refresh
//! before expiry, single-flight refresh, retries) belongs here too and comes next.

pub use cxauth_proto::{Account, ErrorBody, Jwks, Session, User};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::time::Duration;

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
    /// The server answered 2xx with a body that is not what the contract says.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The base URL is not usable.
    #[error("invalid server URL: {0}")]
    Url(String),
}

impl Error {
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
}

/// The client. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    prefix: &'static str,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`), using the
    /// `/voice/api/v1` admin prefix and a 30 s timeout.
    pub fn new(base: &str) -> Result<Self, Error> {
        let parsed = url::Url::parse(base).map_err(|e| Error::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Url(format!("{base}: use http:// or https://")));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("cxauth-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            prefix: PREFIX_VOICE,
        })
    }

    /// The same client using another admin prefix ([`PREFIX_LEGACY`] for `/api/v1`).
    pub fn with_prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    fn admin(&self, method: Method, path: &str, cred: &Credential) -> RequestBuilder {
        let req = self.request(method, &format!("{}{}", self.prefix, path));
        match cred {
            Credential::Bearer(t) => req.bearer_auth(t),
            Credential::XAuthToken(t) => req.header("X-Auth-Token", t),
        }
    }

    async fn send(req: RequestBuilder) -> Result<Response, Error> {
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

    async fn json<T: serde::de::DeserializeOwned>(req: RequestBuilder) -> Result<T, Error> {
        let res = Self::send(req).await?;
        let bytes = res.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn text(req: RequestBuilder) -> Result<String, Error> {
        Ok(Self::send(req).await?.text().await?)
    }

    /// Direct login (`POST /api/auth/login/admin`), credentials in a form body.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        platform_id: &str,
    ) -> Result<Session, Error> {
        Self::json(self.request(Method::POST, "/api/auth/login/admin").form(&[
            ("username", username),
            ("password", password),
            ("platformId", platform_id),
        ]))
        .await
    }

    /// Trades a refresh token for a new session (`POST /api/auth/token/refresh`).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, Error> {
        Self::json(
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
        expect_true(Self::text(self.request(Method::DELETE, &path)).await?)
    }

    /// Mints a permanent API token (`POST …/admin/token`).
    pub async fn create_api_token(&self, cred: &Credential) -> Result<String, Error> {
        Self::text(self.admin(Method::POST, "/admin/token", cred)).await
    }

    /// The caller's API tokens, oldest first (`GET …/admin/token`).
    pub async fn list_api_tokens(&self, cred: &Credential) -> Result<Vec<String>, Error> {
        Self::json(self.admin(Method::GET, "/admin/token", cred)).await
    }

    /// Deletes an API token (`DELETE …/admin/token/{token}`, the token percent-encoded).
    pub async fn delete_api_token(&self, cred: &Credential, token: &str) -> Result<(), Error> {
        let path = format!("/admin/token/{}", utf8_percent_encode(token, SEGMENT));
        expect_true(Self::text(self.admin(Method::DELETE, &path, cred)).await?)
    }

    /// The sub-accounts the caller may use (`GET …/admin/accounts`).
    pub async fn accounts(&self, cred: &Credential) -> Result<Vec<Account>, Error> {
        Self::json(self.admin(Method::GET, "/admin/accounts", cred)).await
    }

    /// The caller and its descendants (`GET …/admin/users`).
    pub async fn users(
        &self,
        cred: &Credential,
        flatten: bool,
        active_only: bool,
    ) -> Result<Vec<User>, Error> {
        Self::json(self.admin(Method::GET, "/admin/users", cred).query(&[
            ("flatten", flatten.to_string()),
            ("activeOnly", active_only.to_string()),
        ]))
        .await
    }

    /// The server's public signing keys (`GET /.well-known/jwks.json`).
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        Self::json(self.request(Method::GET, "/.well-known/jwks.json")).await
    }

    /// Whether the server answers (`GET /healthz`).
    pub async fn healthz(&self) -> Result<(), Error> {
        Self::send(self.request(Method::GET, "/healthz"))
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
