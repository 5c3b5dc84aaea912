//! Sessions: started by a login or an exchange, kept alive by refresh-token rotation (with a
//! grace window for a lost response, and reuse detection after it), ended by logout; and the
//! access tokens minted for them.

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::clock::duration_ms;
use crate::config::AuthConfig;
use crate::crypto::{CryptoError, DigestKind, random_bytes};
use crate::deps::Deps;
use crate::error::AuthError;
use crate::jwt::{Claims, LAPP_ADMIN};
use crate::keys::SigningKeys;
use crate::limits::MAX_TOKEN_LEN;
use crate::store::{
    AuditEvent, NewSession, ROLE_SUPER_USER, RememberAddress, RevokeReason, RotateOutcome,
    Rotation, StoreError, UserRecord,
};
use crate::wire::{agent_to_wire, rc_user_to_wire};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_proto::{ADMIN_URL, AGENT_URL, Session, is_token_alphabet};
use std::sync::Arc;

/// A session just started: what [`Sessions::mint`] needs to answer for it.
pub(crate) struct Started {
    /// The session id.
    pub(crate) session_id: String,
    /// Its first refresh token.
    pub(crate) refresh_token: String,
    /// When it started (epoch ms).
    pub(crate) now: i64,
}

/// Starts, refreshes, ends sessions and mints their access tokens.
pub(crate) struct Sessions {
    deps: Deps,
    keys: Arc<SigningKeys>,
    config: AuthConfig,
}

/// The longest step a stored expiry moves by ([`expiry_step`]): how far past its newest refresh
/// token's expiry a rotation sets a session's expiry when it must move it (the rotations within
/// the step leave the session's row alone, see [`session_expiry`]), and how far past the 30 days
/// a login writes a remembered address's.
const EXPIRY_STEP: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// The session expiry a rotation writes if the successor would outlive the session: a step past
/// the successor's expiry (`ttl_ms` after now), the step being [`EXPIRY_STEP`] or an
/// eighth of the lifetime, whichever is shorter.
///
/// Why a step: each rotation used to move the session's expiry to its successor's, rewriting
/// the session's row and its place in the expiry index: 2 of the ~9 pages a rotation wrote to
/// the WAL. The price: a session stays in the purge's and the session cap's eyes up to one step
/// longer than its last refresh token (an hour of a 7-day lifetime by default). Its tokens do
/// not: a refresh needs a live token, whatever the session's row says.
fn session_expiry(successor_expires_at: i64, ttl_ms: i64) -> i64 {
    successor_expires_at.saturating_add(expiry_step(ttl_ms))
}

/// The step by which a stored expiry of `lifetime_ms` moves (a session's, a remembered login
/// address's): [`EXPIRY_STEP`] or an eighth of the lifetime, whichever is shorter.
pub(crate) fn expiry_step(lifetime_ms: i64) -> i64 {
    (lifetime_ms / 8).clamp(0, duration_ms(EXPIRY_STEP))
}

/// Bytes of the issue time a refresh token leads with (epoch ms, big-endian).
const ISSUED_LEN: usize = 8;
/// Characters of a refresh token: its issue time and 32 random bytes, base64url without padding.
/// Tokens issued before the issue time was added are 43 characters: 32 random bytes alone.
const REFRESH_TOKEN_CHARS: usize = ((ISSUED_LEN + 32) * 8).div_ceil(6);

/// A new refresh token issued at `now_ms`: its issue time, then 32 random bytes (the secret).
/// The issue time is there for [`refresh_key`], not as a claim: nothing trusts it.
fn new_refresh_token(now_ms: i64) -> Result<String, CryptoError> {
    let mut raw = [0u8; ISSUED_LEN + 32];
    raw[..ISSUED_LEN].copy_from_slice(&u64::try_from(now_ms).unwrap_or(0).to_be_bytes());
    raw[ISSUED_LEN..].copy_from_slice(&random_bytes::<32>()?);
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// The key a refresh token is stored and found by: its issue time, then the first 24 bytes of
/// its keyed digest (the digest covers the whole token, issue time included).
///
/// Why not the digest alone: the store's unique index over the keys then takes every new token
/// at a random place, so every rotation dirtied a different page of it, and every page it dirties
/// is written to the WAL and again to the database file. On the twenty-third round's AMD host
/// those pages were 226 of the 342 the database file's flush wrote per WAL restart, and the
/// flush's writes set the half-load refresh tail (`BENCHMARKS.md`). Keys that lead with the issue
/// time land at the index's end, where the tokens of one group commit share a page.
///
/// 24 bytes of an HMAC-SHA-256 (192 bits) still cannot be found without the token, and a key
/// of this form never equals a whole digest but by a 2^-192 chance, so tokens issued before
/// (43 characters, found by their whole digest) keep working. A token of the new length that is
/// not valid base64url (or was forged with another issue time) is looked up by its whole digest
/// or by a key no token has: refused as unknown either way.
fn refresh_key(secrets: &crate::crypto::Secrets, token: &str) -> [u8; 32] {
    let digest = secrets.digest(DigestKind::RefreshToken, token.as_bytes());
    if token.len() != REFRESH_TOKEN_CHARS {
        return digest;
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else {
        return digest;
    };
    let mut key = [0u8; 32];
    key[..ISSUED_LEN].copy_from_slice(&raw[..ISSUED_LEN]);
    key[ISSUED_LEN..].copy_from_slice(&digest[..32 - ISSUED_LEN]);
    key
}

/// The first 8 characters of a session id: enough to follow one session through the logs,
/// too few to matter if a log leaks (session ids are not credentials anyway).
pub(crate) fn sid_prefix(session_id: &str) -> &str {
    session_id.get(..8).unwrap_or(session_id)
}

impl Sessions {
    pub(crate) fn new(deps: Deps, keys: Arc<SigningKeys>, config: AuthConfig) -> Self {
        Sessions { deps, keys, config }
    }

    /// Starts the session of a direct login for `user`, and writes what the login leaves behind
    /// with it: the address to remember (if any) and the audit event, both made by `record` at the
    /// session's start time (see [`crate::store::SessionStore::create_login_session`]).
    /// [`StoreError::Conflict`] if the user was disabled, or its password changed from
    /// `expected_password_hash`, since it was read.
    pub(crate) async fn start_login(
        &self,
        user: &UserRecord,
        expected_password_hash: String,
        record: impl FnOnce(i64) -> (Option<RememberAddress>, AuditEvent),
    ) -> Result<Started, StoreError> {
        let now = self.deps.clock.now_ms();
        let (address, event) = record(now);
        let hash = Some(expected_password_hash);
        self.begin(now, user, hash, false, address, event).await
    }

    /// Starts the session of a RingEX exchange for `user` (`ssoLogin`), and writes its audit
    /// event with it, made by `event` at the session's start time: one commit on SQLite, so a
    /// crash never keeps an exchanged session without its audit event. An exchange remembers
    /// no address: a remembered address keys the password attempts of a username from it, and
    /// an exchange presents neither. [`StoreError::Conflict`] if the user was disabled since it
    /// was read.
    pub(crate) async fn start_exchange(
        &self,
        user: &UserRecord,
        event: impl FnOnce(i64) -> AuditEvent,
    ) -> Result<Started, StoreError> {
        let now = self.deps.clock.now_ms();
        let event = event(now);
        self.begin(now, user, None, true, None, event).await
    }

    /// The work of [`Sessions::start_login`] and [`Sessions::start_exchange`], at `now`: the
    /// login's address (if any) and audit event go to the store with the session, and the
    /// audit line is logged once they are written.
    async fn begin(
        &self,
        now: i64,
        user: &UserRecord,
        expected_password_hash: Option<String>,
        sso_login: bool,
        address: Option<RememberAddress>,
        event: AuditEvent,
    ) -> Result<Started, StoreError> {
        let refresh = new_refresh_token(now).map_err(|e| StoreError::Internal(e.to_string()))?;
        let session_id = uuid::Uuid::new_v4().to_string();
        let session = NewSession {
            session_id: session_id.clone(),
            user_id: user.id,
            refresh_digest: refresh_key(&self.deps.secrets, &refresh),
            expected_password_hash,
            now,
            refresh_expires_at: now.saturating_add(duration_ms(self.config.refresh_token_ttl)),
            sso_login,
            max_sessions: self.config.max_sessions_per_user,
        };
        let created = self
            .deps
            .store
            .create_login_session(&session, address.as_ref(), &event)
            .await;
        if created.is_ok() {
            audit::log(&event);
        }
        // The session cap may have ended older sessions of the user (whatever the outcome
        // says: a failed commit may still have committed).
        if self.config.max_sessions_per_user > 0 {
            self.deps.creds.forget_user(user.id);
        }
        created?;
        tracing::Span::current().record("session", sid_prefix(&session_id));
        Ok(Started {
            session_id,
            refresh_token: refresh,
            now,
        })
    }

    /// Answers a session of `user`: an access token of `session_id` minted at `now_ms`,
    /// `refresh_token` if one is to be shown, the user's agents, and for an exchanged session
    /// (`sso_login`) its RingEX user.
    pub(crate) async fn answer(
        &self,
        user: &UserRecord,
        session_id: &str,
        refresh_token: Option<String>,
        now_ms: i64,
        sso_login: bool,
    ) -> Result<Session, AuthError> {
        let mut session = self.mint(user, session_id, refresh_token, now_ms)?;
        session.sso_login = sso_login;
        session.rc_user = sso_login.then(|| rc_user_to_wire(user));
        // Agents link to users by RingEX user id: a user without one has none (and costs no
        // query, which keeps most refreshes at one round trip).
        if let Some(rc_user_id) = user.rc_user_id {
            session.agent_details = self
                .deps
                .store
                .agents_of_rc_user(rc_user_id, user.main_account_id)
                .await?
                .into_iter()
                .map(agent_to_wire)
                .collect();
        }
        Ok(session)
    }

    /// Mints an access token of `session_id` for `user` at `now_ms` and answers the session
    /// (with `refresh_token` if one is to be shown), without agents, as a direct login.
    fn mint(
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
        let access_token = self.keys.sign(&claims)?;
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
            rc_user: None,
            admin_password_reset: false,
        })
    }

    /// The key a presented refresh token is found by ([`refresh_key`]); a token that cannot be
    /// one of ours (empty, too long, outside the token alphabet) is refused before any digest.
    fn refresh_digest(&self, token: &str) -> Result<[u8; 32], AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || !is_token_alphabet(token) {
            return Err(AuthError::RefreshFailed);
        }
        Ok(refresh_key(&self.deps.secrets, token))
    }

    /// Trades a refresh token for a new access token and a new refresh token.
    #[tracing::instrument(skip_all, fields(user_id, session, outcome))]
    pub(crate) async fn refresh(
        &self,
        refresh_token: &str,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let span = tracing::Span::current();
        let presented = self.refresh_digest(refresh_token)?;
        let now = self.deps.clock.now_ms();
        let successor = new_refresh_token(now)?;
        let ttl_ms = duration_ms(self.config.refresh_token_ttl);
        let successor_expires_at = now.saturating_add(ttl_ms);
        let outcome = self
            .deps
            .store
            .rotate_refresh_token(&Rotation {
                presented,
                successor: refresh_key(&self.deps.secrets, &successor),
                now,
                grace_ms: duration_ms(self.config.refresh_grace),
                successor_expires_at,
                session_expires_at: session_expiry(successor_expires_at, ttl_ms),
            })
            .await
            // A failure may hide a committed reuse revocation: forget all, to be safe.
            .inspect_err(|_| self.deps.creds.forget_all())?;
        match outcome {
            RotateOutcome::Rotated {
                session_id,
                user,
                sso_login,
            } => {
                span.record("user_id", user.id);
                span.record("session", sid_prefix(&session_id));
                span.record("outcome", "success");
                let session = self
                    .answer(&user, &session_id, Some(successor), now, sso_login)
                    .await?;
                metrics::counter!("cxauth_refreshes_total", "outcome" => "success").increment(1);
                Ok(session)
            }
            RotateOutcome::Reused {
                session_id,
                user_id,
            } => {
                span.record("user_id", user_id);
                span.record("session", sid_prefix(&session_id));
                span.record("outcome", "reuse");
                self.deps.creds.forget_session(&session_id);
                tracing::warn!(user_id, session = %session_id,
                    "a rotated refresh token was presented after the grace window; session revoked");
                self.deps
                    .audit
                    .record(
                        ctx,
                        audit::Entry {
                            user_id: Some(user_id),
                            detail: "session ended",
                            ..audit::Entry::of(Event::RefreshReuse, Outcome::Reuse)
                        },
                    )
                    .await;
                Err(AuthError::RefreshFailed)
            }
            RotateOutcome::Invalid => {
                span.record("outcome", "failure");
                metrics::counter!("cxauth_refreshes_total", "outcome" => "failure").increment(1);
                Err(AuthError::RefreshFailed)
            }
        }
    }

    /// Ends the session a refresh token belongs to.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub(crate) async fn logout(
        &self,
        refresh_token: &str,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        let digest = self.refresh_digest(refresh_token)?;
        let now = self.deps.clock.now_ms();
        match self
            .deps
            .store
            .revoke_session_by_refresh(&digest, RevokeReason::Logout, now)
            .await
            .inspect_err(|_| self.deps.creds.forget_all())?
        {
            Some(user_id) => {
                // The store names the owner, not the session: forget all of the owner's.
                self.deps.creds.forget_user(user_id);
                tracing::Span::current().record("user_id", user_id);
                self.deps
                    .audit
                    .record(
                        ctx,
                        audit::Entry {
                            user_id: Some(user_id),
                            detail: "logout",
                            ..audit::Entry::of(Event::SessionEnd, Outcome::Success)
                        },
                    )
                    .await;
                Ok(())
            }
            None => Err(AuthError::RefreshFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{MasterKey, Secrets};
    use proptest::prelude::*;

    fn secrets() -> Secrets {
        Secrets::derive(&MasterKey::generate().expect("random"))
    }

    #[test]
    fn a_new_token_leads_with_its_issue_time_and_its_key_too() {
        let s = secrets();
        let now = 1_764_950_400_123_i64;
        let token = new_refresh_token(now).expect("random");
        assert_eq!(token.len(), REFRESH_TOKEN_CHARS);
        assert_eq!(REFRESH_TOKEN_CHARS, 54);
        assert!(is_token_alphabet(&token), "{token}");
        let raw = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
        assert_eq!(raw[..ISSUED_LEN], now.to_be_bytes());
        let key = refresh_key(&s, &token);
        let digest = s.digest(DigestKind::RefreshToken, token.as_bytes());
        assert_eq!(key[..ISSUED_LEN], now.to_be_bytes());
        assert_eq!(key[ISSUED_LEN..], digest[..32 - ISSUED_LEN]);
        // The secret part is random: two tokens of one millisecond differ, and so do their keys.
        let twin = new_refresh_token(now).expect("random");
        assert_ne!(twin, token);
        assert_ne!(refresh_key(&s, &twin), key);
    }

    #[test]
    fn a_token_issued_before_issue_times_is_found_by_its_whole_digest() {
        let s = secrets();
        let old = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(old.len(), 43);
        assert_eq!(
            refresh_key(&s, &old),
            s.digest(DigestKind::RefreshToken, old.as_bytes())
        );
    }

    #[test]
    fn a_forged_issue_time_or_a_malformed_token_of_the_new_length_finds_another_key() {
        let s = secrets();
        let token = new_refresh_token(1_000).expect("random");
        let key = refresh_key(&s, &token);
        let mut raw = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
        raw[ISSUED_LEN - 1] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_ne!(refresh_key(&s, &forged), key);
        // 54 characters whose last one carries bits past the 40 bytes: not base64url of them.
        let mut bad = token.clone();
        bad.replace_range(53.., "B");
        assert!(URL_SAFE_NO_PAD.decode(&bad).is_err(), "{bad}");
        assert_eq!(
            refresh_key(&s, &bad),
            s.digest(DigestKind::RefreshToken, bad.as_bytes())
        );
    }

    #[test]
    fn a_session_expiry_is_a_step_past_its_token_an_hour_at_most() {
        let day = 24 * 60 * 60 * 1000;
        assert_eq!(session_expiry(1_000, 7 * day), 1_000 + 60 * 60 * 1000);
        assert_eq!(session_expiry(1_000, 80_000), 11_000);
        assert_eq!(session_expiry(1_000, 0), 1_000);
        assert_eq!(session_expiry(i64::MAX - 1, 7 * day), i64::MAX);
    }

    proptest! {
        /// Keys sort in issue order (what puts new tokens at the end of the store's index),
        /// whatever the secrets, for any two issue times from the epoch to the year 10000.
        #[test]
        fn keys_sort_in_issue_order(a in 0i64..253_402_300_800_000, b in 0i64..253_402_300_800_000) {
            prop_assume!(a != b);
            let s = secrets();
            let ka = refresh_key(&s, &new_refresh_token(a).expect("random"));
            let kb = refresh_key(&s, &new_refresh_token(b).expect("random"));
            prop_assert_eq!(a < b, ka < kb);
        }

        /// Any string of the token alphabet (of any length, the new one included) gets a key,
        /// never a panic.
        #[test]
        fn any_token_gets_a_key(token in "[A-Za-z0-9_-]{0,80}") {
            let _ = refresh_key(&secrets(), &token);
        }
    }
}
