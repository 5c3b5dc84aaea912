//! Who a RingEX token belongs to, for the token exchange: the HTTP implementation of core's
//! [`RingexResolver`], and the choice of resolver at start.
//!
//! With a RingEX server configured, cxauth asks it (`GET {url}/restapi/v1.0/account/~/extension/~`
//! with the token as bearer) and reads the extension id and its account's id; positive answers
//! are kept for a short time, keyed by a SHA-256 digest of the token (never the token), so a
//! burst of exchanges does not become a burst of upstream calls. Without one, the built-in emulator, if on, answers from
//! the database. With neither, the exchange answers 501 `ringex.not.configured` (retrying cannot
//! help). Refusals are never cached: a token RingEX accepts a moment later must work.

use cxauth_core::clock::{SharedClock, duration_ms};
use cxauth_core::emulator::Emulator;
use cxauth_core::error::AuthError;
use cxauth_core::ringex::{RingexIdentity, RingexResolver, SharedResolver};
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

/// Resolves RingEX tokens to RingEX extension ids (cxauth's `rc_user_id`) and their accounts by
/// asking a RingEX server over HTTP.
pub struct HttpResolver {
    upstream: Upstream,
    clock: SharedClock,
    ttl_ms: i64,
    /// Token digest → (whose it is, valid until, epoch ms).
    cache: Mutex<HashMap<[u8; 32], (RingexIdentity, i64)>>,
}

/// The part of RingEX's extension answer cxauth reads. RingEX sends the ids as numbers; numeric
/// strings are accepted too.
#[derive(serde::Deserialize)]
struct ExtensionInfo {
    id: serde_json::Value,
    account: Option<AccountRef>,
}

/// `account` of RingEX's extension answer: the RingEX account the extension is in.
#[derive(serde::Deserialize)]
struct AccountRef {
    id: serde_json::Value,
}

/// An id RingEX sends as a number or a string, as text; anything else is no id.
fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The resolver `config` asks for: the RingEX server if one is configured, else the emulator
/// if it is on, else none (the exchange then answers 501). Fails only if the HTTP client cannot
/// be built.
pub fn resolver(
    config: &crate::config::ServerConfig,
    clock: SharedClock,
    emulator: &Emulator,
) -> Result<Option<SharedResolver>, String> {
    Ok(match &config.ringex_server {
        Some(url) => Some(std::sync::Arc::new(HttpResolver::new(
            url.as_str(),
            config.ringex_timeout,
            config.ringex_cache_ttl,
            clock,
        )?)),
        None if config.ringex_emulator => Some(std::sync::Arc::new(emulator.clone())),
        None => None,
    })
}

impl HttpResolver {
    /// A resolver asking the RingEX server at `url`, keeping positive answers `cache_ttl`;
    /// fails only if the HTTP client cannot be built.
    pub fn new(
        url: &str,
        timeout: std::time::Duration,
        cache_ttl: std::time::Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let upstream = Upstream {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                // The bearer token must never follow a redirect to another host.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("cxauth/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the RingEX HTTP client: {e}"))?,
            extension_url: format!("{}{EXTENSION_PATH}", url.trim_end_matches('/')),
        };
        Ok(HttpResolver {
            upstream,
            clock,
            ttl_ms: duration_ms(cache_ttl),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (RingexIdentity, i64)>> {
        // Nothing panics while the lock is held (map operations only).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(up: &Upstream, token: &str) -> Result<RingexIdentity, AuthError> {
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
            let extension_id = id.ok_or_else(|| {
                AuthError::UpstreamUnavailable("RingEX answered without an extension id".into())
            })?;
            return Ok(RingexIdentity {
                extension_id,
                account_id: info.account.as_ref().and_then(|a| id_text(&a.id)),
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

#[async_trait::async_trait]
impl RingexResolver for HttpResolver {
    /// [`AuthError::RingexRefused`] if RingEX refuses the token, [`AuthError::UpstreamUnavailable`]
    /// if RingEX cannot be asked.
    async fn resolve(&self, token: &str) -> Result<RingexIdentity, AuthError> {
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = self.clock.now_ms();
        if let Some((identity, until)) = self.lock().get(&key)
            && *until > now
        {
            return Ok(identity.clone());
        }
        let id = Self::ask(&self.upstream, token).await?;
        if self.ttl_ms > 0 {
            let mut cache = self.lock();
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(key, (id.clone(), now.saturating_add(self.ttl_ms)));
        }
        Ok(id)
    }
}
