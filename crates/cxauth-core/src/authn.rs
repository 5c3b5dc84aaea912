//! Authentication of admin-endpoint callers: a presented token becomes a [`Principal`].
//!
//! Four kinds of credential arrive: an access token (`Authorization: Bearer`, or in
//! `X-Auth-Token`), an API token, or a legacy auth token (both in `X-Auth-Token`). Their shapes
//! never collide, so the shape alone says which check applies.

use crate::clock::duration_ms;
use crate::crypto::DigestKind;
use crate::deps::Deps;
use crate::error::AuthError;
use crate::jwt::TokenError;
use crate::keys::SigningKeys;
use crate::limits::MAX_TOKEN_LEN;
use crate::sessions::sid_prefix;
use crate::store::UserRecord;
use crate::token_uses::UseNotes;
use cxauth_proto::ApiToken;
use std::sync::Arc;
use std::time::Duration;

/// A legacy token's expiry is written again only when a use would move it by at least this
/// much, so a busy token costs a write a minute rather than one per request.
pub const LEGACY_EXTEND_STEP: Duration = Duration::from_secs(60);

/// A token as presented on an admin endpoint, before it is checked. (Not the client SDK's
/// `Credential`, which is what a client holds.)
#[derive(Debug, Clone, Copy)]
pub enum PresentedToken<'a> {
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
    /// The user: shared with the credential cache, so authenticating a request copies a
    /// pointer, not the record's strings.
    pub user: Arc<UserRecord>,
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

impl Via {
    /// A word for logs.
    fn name(self) -> &'static str {
        match self {
            Via::AccessToken => "access_token",
            Via::ApiToken(_) => "api_token",
            Via::LegacyToken(_) => "legacy_token",
            Via::Password => "password",
        }
    }
}

/// Whether an `X-Auth-Token` has the shape of a legacy auth token: a UUID in lowercase
/// canonical form. API tokens are `<platform>:<uuid>` and access tokens hold dots, so the shapes
/// never collide.
pub fn is_legacy_token_shape(t: &str) -> bool {
    t.len() == 36 && uuid::Uuid::parse_str(t).is_ok_and(|u| u.hyphenated().to_string() == t)
}

/// Checks presented tokens.
pub(crate) struct Authenticator {
    deps: Deps,
    keys: Arc<SigningKeys>,
    /// Where an accepted API token's use is noted (in memory; written in batches later).
    uses: Arc<UseNotes>,
}

impl Authenticator {
    pub(crate) fn new(deps: Deps, keys: Arc<SigningKeys>, uses: Arc<UseNotes>) -> Self {
        Authenticator { deps, keys, uses }
    }

    /// Checks a credential of an admin endpoint and says who is calling.
    pub(crate) async fn authenticate(
        &self,
        presented: PresentedToken<'_>,
    ) -> Result<Principal, AuthError> {
        use tracing::Instrument as _;
        use tracing::field::Empty;
        // Recorded on this span itself, not on `Span::current()`: when this `debug` span is
        // off, the current span is the caller's (the request's, whose `user_id` the server
        // records), and recording there doubled it.
        let span = tracing::debug_span!(
            "authenticate",
            via = Empty,
            user_id = Empty,
            session = Empty
        );
        let who = self.identify(presented).instrument(span.clone()).await?;
        span.record("via", who.via.name());
        span.record("user_id", who.user.id);
        if let Some(sid) = &who.session_id {
            span.record("session", sid_prefix(sid));
        }
        Ok(who)
    }

    /// The principal behind a presented credential, by its kind.
    async fn identify(&self, presented: PresentedToken<'_>) -> Result<Principal, AuthError> {
        match presented {
            PresentedToken::None => Err(TokenError::Missing.into()),
            PresentedToken::Bearer(t) => self.access_token(t).await,
            PresentedToken::XAuthToken(t) => {
                if ApiToken::parse(t).is_some() {
                    self.api_token(t).await
                } else if is_legacy_token_shape(t) {
                    self.legacy_token(t).await
                } else if t.bytes().filter(|b| *b == b'.').count() == 2 {
                    self.access_token(t).await
                } else {
                    Err(TokenError::Invalid.into())
                }
            }
        }
    }

    async fn access_token(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid.into());
        }
        let claims = self.keys.verify(token).await?;
        let creds = &self.deps.creds;
        let (revoked, user) = match creds.session(&claims.sid) {
            Some((revoked, user)) => (revoked, user),
            None => {
                let ticket = creds.ticket();
                let state = self
                    .deps
                    .store
                    .session_state(&claims.sid)
                    .await?
                    .ok_or(TokenError::Invalid)?;
                creds.put_session(ticket, &claims.sid, state.revoked, &state.user);
                (state.revoked, Arc::new(state.user))
            }
        };
        if revoked || !user.enabled || claims.sub.parse() != Ok(user.id) {
            return Err(TokenError::Invalid.into());
        }
        Ok(Principal {
            user,
            session_id: Some(claims.sid.clone()),
            via: Via::AccessToken,
        })
    }

    /// `token` has passed [`ApiToken::parse`], which accepts only the canonical form, so its
    /// text is exactly what was digested when it was minted. An expired token is refused like
    /// an unknown one, whether the answer came from the cache or the database; an accepted one
    /// has its use noted in memory (never a write here).
    async fn api_token(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = self
            .deps
            .secrets
            .digest(DigestKind::ApiToken, token.as_bytes());
        let creds = &self.deps.creds;
        let (user, token_id, expires_at) = match creds.api_token(&digest) {
            Some(hit) => hit,
            None => {
                let ticket = creds.ticket();
                let (stored, user) = self
                    .deps
                    .store
                    .api_token_by_digest(&digest)
                    .await?
                    .ok_or(TokenError::Invalid)?;
                creds.put_api_token(ticket, &digest, &user, stored.id, stored.expires_at);
                (Arc::new(user), stored.id, stored.expires_at)
            }
        };
        let now = self.deps.clock.now_ms();
        if !user.enabled || expires_at.is_some_and(|at| at <= now) {
            return Err(TokenError::Invalid.into());
        }
        self.uses.note(&digest, token_id, now);
        Ok(Principal {
            user,
            session_id: None,
            via: Via::ApiToken(digest),
        })
    }

    async fn legacy_token(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = self
            .deps
            .secrets
            .digest(DigestKind::LegacyToken, token.as_bytes());
        let now = self.deps.clock.now_ms();
        let (stored, user) = self
            .deps
            .store
            .legacy_token_by_digest(&digest, now)
            .await?
            .ok_or(TokenError::Invalid)?;
        if !user.enabled {
            return Err(TokenError::Invalid.into());
        }
        let extended = now.saturating_add(stored.lifetime_ms);
        if extended - stored.expires_at >= duration_ms(LEGACY_EXTEND_STEP) {
            self.deps
                .store
                .extend_legacy_token(&digest, extended)
                .await?;
        }
        Ok(Principal {
            user: Arc::new(user),
            session_id: None,
            via: Via::LegacyToken(digest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
