//! Who a RingEX token belongs to, for the token exchange.
//!
//! With a RingEX server configured, cxauth asks it (`GET {url}/restapi/v1.0/account/~/extension/~`
//! with the token as bearer) and reads the extension id; positive answers are kept for a short
//! time, keyed by a SHA-256 digest of the token (never the token), so a burst of exchanges does
//! not become a burst of upstream calls. Without one, the built-in emulator, if on, answers from
//! the database. With neither, the exchange answers 501 `ringex.not.configured` (retrying cannot
//! help). Refusals are never cached: a token RingEX accepts a moment later must work.

use cxauth_core::clock::{SharedClock, duration_ms};
use cxauth_core::emulator::OAuthError;
use cxauth_core::service::{Auth, AuthError, MAX_TOKEN_LEN};
use reqwest::StatusCode;
use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most positive answers kept; beyond it stale ones are dropped, and if none are, all are.
const CACHE_CAPACITY: usize = 10_000;

/// Path of RingEX's "current extension" endpoint.
pub const EXTENSION_PATH: &str = "/restapi/v1.0/account/~/extension/~";

/// The upstream RingEX server.
struct Upstream {
    client: reqwest::Client,
    /// `{url}/restapi/v1.0/account/~/extension/~`.
    extension_url: String,
}

/// Resolves RingEX tokens to RingEX extension ids (cxauth's `rc_user_id`).
pub struct RingexResolver {
    upstream: Option<Upstream>,
    emulator: bool,
    clock: SharedClock,
    ttl_ms: i64,
    /// Token digest → (extension id, valid until, epoch ms).
    cache: Mutex<HashMap<[u8; 32], (i64, i64)>>,
}

/// The part of RingEX's extension answer cxauth reads. RingEX sends the id as a number; a
/// numeric string is accepted too.
#[derive(serde::Deserialize)]
struct ExtensionInfo {
    id: serde_json::Value,
}

impl RingexResolver {
    /// A resolver for `config`; fails only if the HTTP client cannot be built.
    pub fn new(config: &crate::config::ServerConfig, clock: SharedClock) -> Result<Self, String> {
        let upstream = match &config.ringex_server {
            Some(url) => Some(Upstream {
                client: reqwest::Client::builder()
                    .timeout(config.ringex_timeout)
                    .connect_timeout(config.ringex_timeout)
                    // The bearer token must never follow a redirect to another host.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("cxauth/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the RingEX HTTP client: {e}"))?,
                extension_url: format!("{}{EXTENSION_PATH}", url.as_str().trim_end_matches('/')),
            }),
            None => None,
        };
        Ok(RingexResolver {
            upstream,
            emulator: config.ringex_emulator,
            clock,
            ttl_ms: duration_ms(config.ringex_cache_ttl),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether tokens can be checked at all: a RingEX server is configured or the emulator is
    /// on. Without either the exchange answers [`crate::error::ApiError::RingexNotConfigured`]
    /// before asking anyone (and before spending the caller's login budget).
    pub fn configured(&self) -> bool {
        self.upstream.is_some() || self.emulator
    }

    /// The RingEX extension id the token belongs to. [`AuthError::RingexRefused`] if RingEX
    /// refuses it, [`AuthError::UpstreamUnavailable`] if RingEX cannot be asked.
    pub async fn resolve(&self, auth: &Auth, token: &str) -> Result<i64, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::RingexRefused);
        }
        if let Some(up) = &self.upstream {
            let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            let now = self.clock.now_ms();
            if let Some((id, until)) = self.lock().get(&key).copied()
                && until > now
            {
                return Ok(id);
            }
            let id = Self::ask(up, token).await?;
            if self.ttl_ms > 0 {
                let mut cache = self.lock();
                if cache.len() >= CACHE_CAPACITY {
                    cache.retain(|_, (_, until)| *until > now);
                    if cache.len() >= CACHE_CAPACITY {
                        cache.clear();
                    }
                }
                cache.insert(key, (id, now.saturating_add(self.ttl_ms)));
            }
            return Ok(id);
        }
        if self.emulator {
            return match auth.ringex_token_owner(token).await {
                Ok(user) => user.rc_user_id.ok_or(AuthError::RingexRefused),
                Err(AuthError::OAuth(OAuthError::InvalidToken)) => Err(AuthError::RingexRefused),
                Err(e) => Err(e),
            };
        }
        // Not reached from the exchange, which checks `configured` first.
        Err(AuthError::UpstreamUnavailable(
            "no RingEX server is configured (--ringex-server URL) and the emulator is off".into(),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (i64, i64)>> {
        // Nothing panics while the lock is held (map operations only).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(up: &Upstream, token: &str) -> Result<i64, AuthError> {
        let res = up
            .client
            .get(&up.extension_url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            // The error text holds the URL (no token): safe for the log.
            .map_err(|e| AuthError::UpstreamUnavailable(format!("RingEX request failed: {e}")))?;
        let status = res.status();
        if status.is_success() {
            let info: ExtensionInfo = res.json().await.map_err(|e| {
                AuthError::UpstreamUnavailable(format!("RingEX answered unreadable JSON: {e}"))
            })?;
            let id = match &info.id {
                serde_json::Value::Number(n) => n.as_i64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            };
            return id.ok_or_else(|| {
                AuthError::UpstreamUnavailable("RingEX answered without an extension id".into())
            });
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(AuthError::UpstreamUnavailable(format!(
                "RingEX answered {status}"
            )));
        }
        // 401, 403 and any other client error: the token is not good.
        tracing::info!(target: "audit", event = "ringex.exchange.refused", status = status.as_u16(), "RingEX refused the token");
        Err(AuthError::RingexRefused)
    }
}
