//! The signing keys of access tokens: checked against the master key and loaded (or created) at
//! start, reloaded when another instance rotated them, retired when no valid token can need them,
//! and used to sign and verify access tokens (with a cache of tokens already verified).

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::cache::VerifiedTokens;
use crate::clock::duration_ms;
use crate::deps::Deps;
use crate::error::{AuthError, StartError};
use crate::jwt::{Claims, KeyRing, TokenError, generate_signing_key};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Metadata key of the master key fingerprint.
pub const META_KEY_FINGERPRINT: &str = "master_key_fingerprint";

/// How often housekeeping reloads the signing keys, so every instance starts signing with a
/// rotated key within this long.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Verified access tokens remembered (~1.1 KB each: the token's text and its claims).
const VERIFIED_TOKEN_CACHE: usize = 20_000;

/// The key ring in force and what keeps it current.
pub(crate) struct SigningKeys {
    deps: Deps,
    ring: RwLock<Arc<KeyRing>>,
    /// Held by a reload from its first read of the store to its swap of the ring. Reloads run
    /// from housekeeping, from requests naming an unknown key and from retirement; without
    /// this, one that read the store before a rotation could swap its older ring in after one
    /// that read it after, and the instance would sign with the superseded key until the next
    /// reload.
    reloading: tokio::sync::Mutex<()>,
    /// When the key ring was last reloaded because of an unknown key id; rate-limits reloads.
    /// Wall-clock (not the injected clock): a protection against load, not domain time.
    reloaded_at: Mutex<Option<Instant>>,
    /// Access tokens whose signature already verified (the session is still checked each time).
    verified: VerifiedTokens,
}

impl SigningKeys {
    /// Checks the master key against the database, then loads the signing keys, creating the
    /// first one on an empty database (audited).
    pub(crate) async fn load(deps: Deps) -> Result<Self, StartError> {
        let (store, clock, secrets) = (&deps.store, &deps.clock, &deps.secrets);
        let fp = secrets.fingerprint();
        if store.init_meta(META_KEY_FINGERPRINT, &fp).await? != fp {
            return Err(StartError::WrongMasterKey);
        }
        let mut stored = store.signing_keys().await?;
        if stored.is_empty() {
            let key = generate_signing_key(secrets, clock.now_ms())?;
            if store.init_signing_key(&key).await? {
                // Not counted: the first key is no request's doing.
                audit::record(
                    store.as_ref(),
                    &AuditContext::local(),
                    clock.now_ms(),
                    audit::Entry {
                        detail: &format!("kid {}", key.kid),
                        ..audit::Entry::of(Event::KeyCreate, Outcome::Success)
                    },
                )
                .await;
            }
            stored = store.signing_keys().await?;
        }
        let ring = KeyRing::from_stored(secrets, &stored)?
            .with_retired(&store.retired_signing_keys().await?);
        Ok(SigningKeys {
            ring: RwLock::new(Arc::new(ring)),
            reloading: tokio::sync::Mutex::new(()),
            reloaded_at: Mutex::new(None),
            verified: VerifiedTokens::new(VERIFIED_TOKEN_CACHE),
            deps,
        })
    }

    /// The ring in force.
    pub(crate) fn ring(&self) -> Arc<KeyRing> {
        // Nothing can panic while the lock is held (a pointer swap), so poisoning is moot.
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs access-token claims with the current key.
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        self.ring()
            .sign(claims)
            .map_err(|e| AuthError::Internal(format!("signing failed: {e}")))
    }

    /// Verifies an access token's signature and lifetime, from the cache when it verified
    /// before. A token naming a key this instance has not seen reloads the ring first (see
    /// [`Self::reload_for`]).
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = self.deps.clock.now_ms();
        if let Some(hit) = self.verified.get(token, now) {
            return Ok(hit?);
        }
        let mut ring = self.ring();
        let claims = Arc::new(match ring.verify(token, now) {
            Err(TokenError::Invalid) if self.reload_for(token).await? => {
                ring = self.ring();
                ring.verify(token, self.deps.clock.now_ms())?
            }
            other => other?,
        });
        // Not if the ring changed meanwhile (a key may have retired and the cache been
        // cleared): the next request verifies again.
        if Arc::ptr_eq(&ring, &self.ring()) {
            self.verified.insert(token, claims.clone(), now);
        }
        Ok(claims)
    }

    /// Reloads the key ring from the store when a token names a key this instance has not seen
    /// (another instance rotated keys). At most once a second, so tokens with made-up key ids
    /// cannot turn into a database query each.
    async fn reload_for(&self, token: &str) -> Result<bool, AuthError> {
        let Some(kid) = crate::jwt::token_kid(token) else {
            return Ok(false);
        };
        if self.ring().knows(&kid) {
            return Ok(false);
        }
        {
            let mut last = self.reloaded_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                return Ok(false);
            }
            *last = Some(now);
        }
        self.reload().await?;
        Ok(self.ring().knows(&kid))
    }

    /// Reloads the key ring from the store; returns how many keys are loaded. See
    /// [`crate::service::Auth::reload_keys`].
    #[tracing::instrument(skip_all)]
    pub(crate) async fn reload(&self) -> Result<usize, AuthError> {
        let _turn = self.reloading.lock().await;
        let stored = self.deps.store.signing_keys().await?;
        let retired = self.deps.store.retired_signing_keys().await?;
        let ring = KeyRing::from_stored(&self.deps.secrets, &stored)
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .with_retired(&retired);
        let (changed, dropped) = {
            let current = self.ring();
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
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        if dropped {
            // A key retired: tokens it signed must not be served from the cache any more.
            self.verified.clear();
        }
        if changed {
            tracing::info!(keys = stored.len(), "reloaded signing keys");
        }
        Ok(stored.len())
    }

    /// Retires the keys no valid token can still need, given the access and refresh token
    /// lifetimes; see [`crate::service::Auth::retire_keys`].
    #[tracing::instrument(skip_all)]
    pub(crate) async fn retire(
        &self,
        access_token_ttl: Duration,
        refresh_token_ttl: Duration,
    ) -> Result<Vec<String>, AuthError> {
        let reloads = 2 * duration_ms(KEY_RELOAD_INTERVAL);
        let keep = duration_ms(access_token_ttl).saturating_add(reloads);
        let now = self.deps.clock.now_ms();
        let forgotten = self
            .deps
            .store
            .forget_retired_signing_keys(
                now.saturating_sub(duration_ms(refresh_token_ttl))
                    .saturating_sub(reloads),
            )
            .await?;
        let retired = self
            .deps
            .store
            .retire_signing_keys(now.saturating_sub(keep))
            .await?;
        if retired.is_empty() && !forgotten.is_empty() {
            self.reload().await?;
        }
        if !retired.is_empty() {
            let detail = format!("kid {}", retired.join(", "));
            self.deps
                .audit
                .record(
                    &AuditContext::local(),
                    audit::Entry {
                        detail: &detail,
                        ..audit::Entry::of(Event::KeyRetire, Outcome::Success)
                    },
                )
                .await;
            self.reload().await?;
        }
        Ok(retired)
    }
}
