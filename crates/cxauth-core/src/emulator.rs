//! The built-in RingEX (RingCentral) emulator, for offline development and tests.
//!
//! It plays the parts of RingEX that the RingCX SDKs and integrations touch: the OAuth token
//! endpoint (the `password`, JWT-bearer and `refresh_token` grants, with HTTP Basic client
//! authentication), the revoke endpoint (a client's logout), and the "who am I" extension
//! endpoint that the token exchange asks. Its users are the cxauth users that
//! hold a RingEX user id (`rc_user_id`): that id is their extension id, so a token the emulator
//! issues exchanges for a session of the same user. Apps and JWT credentials are made by
//! `cxauth admin ringex …` ([`crate::admin::create_ringex_app`],
//! [`crate::admin::create_ringex_jwt`]).
//!
//! Each password or JWT grant starts a *login* (RingEX's endpoint, named by `endpoint_id`): an
//! access token and a refresh token bound to the user and to the client that asked. A refresh
//! rotates the refresh token (the presented one is refused from then on) and adds an access
//! token to the login; a revoke of any of its tokens ends the whole login.
//!
//! Nothing here is a secret in clear in the database: client secrets are Argon2id hashes, JWT
//! credentials SHA-256 digests, access and refresh tokens keyed digests.

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::clock::duration_ms;
use crate::config::AuthConfig;
use crate::crypto::{DigestKind, random_bytes, ringex_jwt_digest};
use crate::deps::Deps;
use crate::error::AuthError;
use crate::limits::MAX_TOKEN_LEN;
use crate::login::LoginGate;
use crate::ringex::{RingexIdentity, RingexResolver};
use crate::store::{NewRingexLogin, RingexRotation, UserRecord};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default lifetime of the access tokens the emulator issues (RingEX's default).
pub const RINGEX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// Default lifetime of the emulator's refresh tokens (RingEX's default), restarted at each
/// refresh.
pub const RINGEX_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The `scope` the emulator grants.
pub const RINGEX_SCOPE: &str = "ReadAccounts";

/// An OAuth 2.0 error of the emulator's token endpoint (RFC 6749 §5.2), or a refused bearer
/// token on its API. None of the descriptions says "expired": RingCX clients would take that for
/// an expired RingCX token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// Client authentication failed (unknown client id, wrong secret, no Basic header).
    #[error("invalid_client")]
    InvalidClient,
    /// The credentials of the grant were refused.
    #[error("invalid_grant")]
    InvalidGrant,
    /// A grant type the emulator does not implement.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// A required parameter is missing or malformed; the message names it (never its value).
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// The bearer token of an API call is unknown, of a disabled user, or past its lifetime.
    #[error("invalid_token")]
    InvalidToken,
}

impl OAuthError {
    /// The OAuth `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidToken => "invalid_token",
        }
    }

    /// The OAuth `error_description`, safe to show.
    pub fn description(&self) -> String {
        match self {
            OAuthError::InvalidClient => "Invalid client credentials".into(),
            OAuthError::InvalidGrant => "Invalid resource owner credentials".into(),
            OAuthError::UnsupportedGrantType => {
                "Unsupported grant type; use password, refresh_token or \
                 urn:ietf:params:oauth:grant-type:jwt-bearer"
                    .into()
            }
            OAuthError::InvalidRequest(m) => m.clone(),
            OAuthError::InvalidToken => "Invalid token".into(),
        }
    }
}

/// What the emulator's token endpoint answers (RingEX's field names).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RingexToken {
    /// The access token, of `[A-Za-z0-9._~:-]` only (the RingCX SDKs paste it unencoded).
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds.
    pub expires_in: i64,
    /// The login's refresh token, for one `refresh_token` grant (each use rotates it).
    pub refresh_token: String,
    /// Seconds the refresh token has left: all its lifetime, which each refresh restarts.
    pub refresh_token_expires_in: i64,
    /// Granted scope.
    pub scope: String,
    /// The extension id of the user (its `rc_user_id`), as RingEX's decimal string.
    pub owner_id: String,
    /// The id of this login, kept across its refreshes.
    pub endpoint_id: String,
}

/// The credentials of a grant at the token endpoint.
pub enum Grant<'a> {
    /// `grant_type=password`.
    Password {
        /// The cxauth username.
        username: &'a str,
        /// If given, must be the user's RingEX user id.
        extension: Option<&'a str>,
        /// The password.
        password: SecretString,
        /// The caller's address, for the login throttle.
        client: IpAddr,
    },
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
    Jwt {
        /// The JWT credential made by `cxauth admin ringex jwt create`.
        assertion: &'a str,
    },
    /// `grant_type=refresh_token`.
    Refresh {
        /// A refresh token the emulator issued to the same client.
        refresh_token: &'a str,
        /// The caller's address, for the audit trail.
        client: IpAddr,
    },
}

/// `iss` of the emulator's JWT credentials: RingCentral's, so integrators' code that reads it
/// sees what the real platform issues.
pub const RINGEX_JWT_ISSUER: &str = "https://platform.ringcentral.com";
/// `aud` of the emulator's JWT credentials: RingCentral's token endpoint.
pub const RINGEX_JWT_AUDIENCE: &str = "https://platform.ringcentral.com/restapi/oauth/token";
/// Lifetime of an emulator JWT credential (RingCentral lets its owner choose; a year here).
pub const RINGEX_JWT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The claims of an emulator JWT credential, as RingCentral's carry them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingexJwtClaims {
    /// Issuer: [`RINGEX_JWT_ISSUER`].
    pub iss: String,
    /// Subject: the RingEX extension (user) id, as a string.
    pub sub: String,
    /// Audience: [`RINGEX_JWT_AUDIENCE`].
    pub aud: String,
    /// Issued at, epoch seconds.
    pub iat: i64,
    /// Expires at, epoch seconds.
    pub exp: i64,
    /// Unique id of the credential.
    pub jti: String,
}

/// Makes a JWT credential for the RingEX user `rc_user_id` at `now_ms`: three base64url parts,
/// HS256-signed with a random key thrown away at once. The emulator recognises a credential by
/// its stored digest (see [`ringex_jwt_digest`]), never by its signature — as with RingCentral,
/// whose credentials only RingCentral can check — so no key needs to be kept, and `cxauth admin
/// ringex jwt create` needs no master key. The claims are real and the grant honours `exp`.
pub fn make_ringex_jwt(rc_user_id: i64, now_ms: i64) -> Result<String, AuthError> {
    let iat = now_ms.div_euclid(1000);
    let claims = RingexJwtClaims {
        iss: RINGEX_JWT_ISSUER.into(),
        sub: rc_user_id.to_string(),
        aud: RINGEX_JWT_AUDIENCE.into(),
        iat,
        exp: iat.saturating_add(duration_ms(RINGEX_JWT_TTL) / 1000),
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let key = random_bytes::<32>()?;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&key),
    )
    .map_err(|e| AuthError::Internal(format!("cannot encode a JWT credential: {e}")))
}

/// The claims of a JWT credential, read without checking its signature (the caller has matched
/// its digest against a stored credential, which is what authenticates it).
pub fn ringex_jwt_claims(credential: &str) -> Option<RingexJwtClaims> {
    let payload = credential.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn random_token() -> Result<String, AuthError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A new access token and refresh token of the emulator, with what the store keeps of them.
struct Pair {
    access_token: String,
    refresh_token: String,
    access_digest: [u8; 32],
    refresh_digest: [u8; 32],
    /// Their issue time, epoch ms.
    now: i64,
    access_expires_at: i64,
    refresh_expires_at: i64,
}

/// Why an emulator call failed: an OAuth error (answered in OAuth's JSON shape), or a failure
/// of the service underneath (throttled, busy, storage), answered like any other.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// An OAuth error of the token endpoint, or a refused bearer token.
    #[error("RingEX emulator: {0}")]
    OAuth(#[from] OAuthError),
    /// The service failed underneath.
    #[error(transparent)]
    Service(#[from] AuthError),
}

impl From<crate::store::StoreError> for EmulatorError {
    fn from(e: crate::store::StoreError) -> Self {
        EmulatorError::Service(e.into())
    }
}

impl From<crate::crypto::CryptoError> for EmulatorError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        EmulatorError::Service(e.into())
    }
}

/// The emulator: its token endpoint and its extension endpoint. Its password grants and client
/// secrets are checked under the same login throttle as cxauth's own logins.
#[derive(Clone)]
pub struct Emulator {
    deps: Deps,
    gate: Arc<LoginGate>,
    /// Lifetime of the access tokens it issues.
    access_ttl: Duration,
    /// Lifetime of its refresh tokens, from their issue (a refresh issues a new one).
    refresh_ttl: Duration,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

impl Emulator {
    pub(crate) fn new(deps: Deps, gate: Arc<LoginGate>, config: &AuthConfig) -> Self {
        Emulator {
            deps,
            gate,
            access_ttl: config.ringex_emulator_access_ttl,
            refresh_ttl: config.ringex_emulator_refresh_ttl,
        }
    }

    /// Authenticates an emulator app by its client id and secret (HTTP Basic), under the login
    /// throttle like a password (the client id takes the username's place), so bogus secrets
    /// cannot monopolise the password pool. An unknown client id costs the same hash as a wrong
    /// secret.
    #[tracing::instrument(skip_all)]
    pub async fn check_client(
        &self,
        client_id: &str,
        client_secret: SecretString,
        client: IpAddr,
    ) -> Result<(), EmulatorError> {
        if client_id.len() > MAX_TOKEN_LEN {
            return Err(OAuthError::InvalidClient.into());
        }
        let keys = self.gate.attempt_keys(b"client", client_id, client);
        let store = self.deps.store.clone();
        let lookup = || async move {
            if client_id.is_empty() {
                return Ok(None);
            }
            Ok(store
                .ringex_app_secret_hash(client_id)
                .await?
                .map(|hash| ((), hash)))
        };
        match self
            .gate
            .verify_secret(&keys, client_secret, lookup, |_| true)
            .await
        {
            Ok(Ok(((), _))) => Ok(()),
            Ok(Err(_)) => Err(OAuthError::InvalidClient.into()),
            Err(refusal) => Err(AuthError::from(refusal).into()),
        }
    }

    /// Runs a grant of the emulator's token endpoint for `client_id` (already authenticated by
    /// [`Emulator::check_client`]) and issues a RingEX access token and refresh token.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn grant(
        &self,
        client_id: &str,
        grant: Grant<'_>,
    ) -> Result<RingexToken, EmulatorError> {
        let user = match grant {
            Grant::Password {
                username,
                extension,
                password,
                client,
            } => {
                // The emulator is a development tool: its logins are audited without request id.
                let ctx = AuditContext {
                    request_id: None,
                    addr: Some(client),
                };
                let ext_ok = |user: &UserRecord| match (user.rc_user_id, extension) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(rc), Some(ext)) => ext.trim() == rc.to_string(),
                };
                // The extension is part of the credentials: a wrong one counts like a wrong
                // password.
                let verified = match self
                    .gate
                    .verify_login(username, password, ext_ok, Event::EmulatorLogin, &ctx)
                    .await
                {
                    Ok(v) => v,
                    Err(AuthError::LoginFailed) => return Err(OAuthError::InvalidGrant.into()),
                    Err(e) => return Err(e.into()),
                };
                self.gate.login_succeeded(username, &verified, &ctx).await;
                verified.user
            }
            Grant::Jwt { assertion } => {
                if assertion.is_empty() || assertion.len() > MAX_TOKEN_LEN {
                    return Err(OAuthError::InvalidGrant.into());
                }
                let user = match self
                    .deps
                    .store
                    .ringex_jwt_user(&ringex_jwt_digest(assertion.as_bytes()))
                    .await?
                {
                    Some(u) if u.enabled && u.rc_user_id.is_some() => u,
                    _ => return Err(OAuthError::InvalidGrant.into()),
                };
                // Credentials made before they became JWTs (opaque strings) carry no claims and
                // no expiry; a JWT one must be unexpired and name its user.
                if let Some(claims) = ringex_jwt_claims(assertion) {
                    let now_s = self.deps.clock.now_ms().div_euclid(1000);
                    let same_user = user.rc_user_id.map(|id| id.to_string()) == Some(claims.sub);
                    if claims.exp <= now_s || !same_user {
                        return Err(OAuthError::InvalidGrant.into());
                    }
                }
                user
            }
            Grant::Refresh {
                refresh_token,
                client,
            } => return self.refresh(client_id, refresh_token, client).await,
        };
        tracing::Span::current().record("user_id", user.id);
        let rc_user_id = user.rc_user_id.ok_or(OAuthError::InvalidGrant)?;
        let pair = self.new_pair()?;
        let login_id = URL_SAFE_NO_PAD.encode(random_bytes::<12>()?);
        self.deps
            .store
            .insert_ringex_login(&NewRingexLogin {
                login_id: &login_id,
                user_id: user.id,
                client_id,
                access_digest: &pair.access_digest,
                refresh_digest: &pair.refresh_digest,
                now: pair.now,
                access_expires_at: pair.access_expires_at,
                refresh_expires_at: pair.refresh_expires_at,
            })
            .await?;
        tracing::info!(target: "audit", event = "ringex_emulator.token_issued", user_id = user.id, "RingEX emulator issued an access token");
        Ok(self.answer(pair, rc_user_id, login_id))
    }

    /// The `refresh_token` grant: rotates the login's refresh token (atomically, so of two
    /// concurrent uses one wins) and issues a new access token and refresh token. Any refusal
    /// is `invalid_grant`, without saying why: an unknown, rotated, revoked or timed-out token,
    /// one another client obtained, or a user disabled or without a RingEX user id.
    async fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        client: IpAddr,
    ) -> Result<RingexToken, EmulatorError> {
        if refresh_token.is_empty() || refresh_token.len() > MAX_TOKEN_LEN {
            return Err(OAuthError::InvalidGrant.into());
        }
        let presented = self
            .deps
            .secrets
            .digest(DigestKind::RingexRefreshToken, refresh_token.as_bytes());
        let pair = self.new_pair()?;
        let rotated = self
            .deps
            .store
            .rotate_ringex_refresh(&RingexRotation {
                presented: &presented,
                client_id,
                access_digest: &pair.access_digest,
                refresh_digest: &pair.refresh_digest,
                now: pair.now,
                access_expires_at: pair.access_expires_at,
                refresh_expires_at: pair.refresh_expires_at,
            })
            .await?;
        let Some(rotated) = rotated else {
            // Audited: a refused refresh token may be a stolen one coming back after rotation.
            let ctx = AuditContext {
                request_id: None,
                addr: Some(client),
            };
            let entry = audit::Entry {
                detail: "refresh token refused",
                ..audit::Entry::of(Event::EmulatorRefresh, Outcome::Failure)
            };
            self.deps.audit.record(&ctx, entry).await;
            return Err(OAuthError::InvalidGrant.into());
        };
        let user = rotated.user;
        tracing::Span::current().record("user_id", user.id);
        let rc_user_id = user.rc_user_id.ok_or(OAuthError::InvalidGrant)?;
        tracing::info!(target: "audit", event = "ringex_emulator.token_refreshed", user_id = user.id, "RingEX emulator refreshed a login");
        Ok(self.answer(pair, rc_user_id, rotated.login_id))
    }

    /// Ends the login `token` belongs to (RingEX's `POST /restapi/oauth/revoke`, RFC 7009):
    /// `token` may be an access token or a refresh token of a login of `client_id` (already
    /// authenticated); every access token of the login and its refresh token end. An unknown
    /// token, or another client's, changes nothing and is no error (RFC 7009 §2.2), so a
    /// client cannot probe which tokens exist.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn revoke(
        &self,
        client_id: &str,
        token: &str,
        ctx: &AuditContext,
    ) -> Result<(), EmulatorError> {
        let ended = if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            None
        } else {
            let secrets = &self.deps.secrets;
            self.deps
                .store
                .revoke_ringex_login(
                    client_id,
                    &secrets.digest(DigestKind::RingexAccessToken, token.as_bytes()),
                    &secrets.digest(DigestKind::RingexRefreshToken, token.as_bytes()),
                )
                .await?
        };
        let entry = match ended {
            Some(user_id) => {
                tracing::Span::current().record("user_id", user_id);
                audit::Entry {
                    user_id: Some(user_id),
                    ..audit::Entry::of(Event::EmulatorRevoke, Outcome::Success)
                }
            }
            None => audit::Entry {
                detail: "no login of this client holds the token",
                ..audit::Entry::of(Event::EmulatorRevoke, Outcome::Failure)
            },
        };
        self.deps.audit.record(ctx, entry).await;
        Ok(())
    }

    /// A fresh access token and refresh token, their digests and their ends from now.
    fn new_pair(&self) -> Result<Pair, EmulatorError> {
        let access_token = random_token()?;
        let refresh_token = random_token()?;
        let secrets = &self.deps.secrets;
        let now = self.deps.clock.now_ms();
        Ok(Pair {
            access_digest: secrets.digest(DigestKind::RingexAccessToken, access_token.as_bytes()),
            refresh_digest: secrets
                .digest(DigestKind::RingexRefreshToken, refresh_token.as_bytes()),
            access_token,
            refresh_token,
            now,
            access_expires_at: now.saturating_add(duration_ms(self.access_ttl)),
            refresh_expires_at: now.saturating_add(duration_ms(self.refresh_ttl)),
        })
    }

    /// The token endpoint's answer for a stored `pair`.
    fn answer(&self, pair: Pair, rc_user_id: i64, login_id: String) -> RingexToken {
        RingexToken {
            access_token: pair.access_token,
            token_type: "bearer".into(),
            expires_in: duration_ms(self.access_ttl) / 1000,
            refresh_token: pair.refresh_token,
            refresh_token_expires_in: (pair.refresh_expires_at - pair.now) / 1000,
            scope: RINGEX_SCOPE.into(),
            owner_id: rc_user_id.to_string(),
            endpoint_id: login_id,
        }
    }

    /// The user a RingEX emulator access token belongs to (the extension endpoint).
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn token_owner(&self, access_token: &str) -> Result<UserRecord, EmulatorError> {
        if access_token.is_empty() || access_token.len() > MAX_TOKEN_LEN {
            return Err(OAuthError::InvalidToken.into());
        }
        let digest = self
            .deps
            .secrets
            .digest(DigestKind::RingexAccessToken, access_token.as_bytes());
        match self
            .deps
            .store
            .ringex_token_user(&digest, self.deps.clock.now_ms())
            .await?
        {
            Some(u) if u.enabled && u.rc_user_id.is_some() => {
                tracing::Span::current().record("user_id", u.id);
                Ok(u)
            }
            _ => Err(OAuthError::InvalidToken.into()),
        }
    }

    /// The RingEX account the emulator says `user` is in: its main account's RingEX link, or,
    /// unlinked, the main account's own id (the emulator's users are cxauth's users).
    pub async fn ringex_account_id(&self, user: &UserRecord) -> Result<String, AuthError> {
        Ok(self
            .deps
            .store
            .account_info(user.main_account_id)
            .await?
            .and_then(|a| a.rc_account_id)
            .unwrap_or_else(|| user.main_account_id.to_string()))
    }
}

/// Without a RingEX server, the emulator answers the token exchange: its own tokens belong to
/// their users' RingEX user ids; any other token is refused.
#[async_trait::async_trait]
impl RingexResolver for Emulator {
    async fn resolve(&self, token: &str) -> Result<RingexIdentity, AuthError> {
        match self.token_owner(token).await {
            Ok(user) => Ok(RingexIdentity {
                extension_id: user.rc_user_id.ok_or(AuthError::RingexRefused)?,
                account_id: Some(self.ringex_account_id(&user).await?),
            }),
            Err(EmulatorError::OAuth(_)) => Err(AuthError::RingexRefused),
            Err(EmulatorError::Service(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_oauth_error_mentions_expired() {
        for e in [
            OAuthError::InvalidClient,
            OAuthError::InvalidGrant,
            OAuthError::UnsupportedGrantType,
            OAuthError::InvalidRequest("grant_type is required".into()),
            OAuthError::InvalidToken,
        ] {
            assert!(!e.description().to_lowercase().contains("expired"));
            assert!(!e.code().contains("expired"));
        }
    }
}
