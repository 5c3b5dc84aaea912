//! Logins: a username and password (or an emulator client secret) checked under the login
//! throttle on the password pool, and what a right one starts — a session (direct login) or a
//! legacy auth token (the legacy portal login).
//!
//! The order matters: the throttle's budgets first (an attempt they refuse never takes a place
//! in the pool), then the pool's fair share, then the lookup and the hash, and only then the
//! audit row, so its write cannot tell a known user from an unknown one by timing. The lookup
//! comes after the budgets for the same reason: the answer to a refused attempt is not timed by
//! whether its username exists (apart from the few a second `LoginGate::throttled` audits;
//! see "The user is read after the budgets" in docs/decisions.md, which also says why a
//! login's two reads are not one query).

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::clock::duration_ms;
use crate::crypto::DigestKind;
use crate::deps::Deps;
use crate::error::AuthError;
use crate::limits::{MAX_PASSWORD_LEN, MAX_USERNAME_LEN};
use crate::password::PasswordPool;
use crate::sessions::{Sessions, Started, expiry_step};
use crate::store::{
    AuditEvent, LegacyToken, NewLegacyLogin, RememberAddress, StoreError, UserRecord,
};
use crate::throttle::{AttemptKeys, Refusal, Throttle};
use cxauth_proto::Session;
use secrecy::SecretString;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a legacy auth token lives past its last use.
pub const LEGACY_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a legacy auth token lives past its last use with `stayLoggedIn`.
pub const LEGACY_TOKEN_TTL_STAY: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Most audit rows written per second for throttled login attempts; the rest are only counted.
const THROTTLED_AUDITS_PER_SECOND: u32 = 10;

/// The login fields, already taken from wherever the request carried them.
pub struct LoginInput {
    /// Username.
    pub username: String,
    /// Password.
    pub password: SecretString,
    /// Platform id.
    pub platform_id: String,
}

/// A login whose password was right: its user, and until when (epoch ms) the address it came
/// from is remembered for that username already, if it is (see
/// [`LoginGate::address_to_remember`]).
pub(crate) struct Verified {
    pub(crate) user: UserRecord,
    pub(crate) remembered_until: Option<i64>,
}

/// Checks secrets under the login throttle; shared by the logins and the RingEX emulator.
pub(crate) struct LoginGate {
    deps: Deps,
    passwords: PasswordPool,
    throttle: Throttle,
    /// Start and count of the current second's audit rows for throttled attempts: a storm of
    /// throttled guesses (refused before any hashing) must not become a storm of writes.
    throttled_audits: Mutex<(Instant, u32)>,
}

impl LoginGate {
    pub(crate) fn new(deps: Deps, passwords: PasswordPool, throttle: Throttle) -> Self {
        LoginGate {
            deps,
            passwords,
            throttle,
            throttled_audits: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The login throttle.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The password hashing pool.
    pub(crate) fn passwords(&self) -> &PasswordPool {
        &self.passwords
    }

    /// The throttle keys of an attempt at `subject` (a username, or an emulator client id, told
    /// apart by `kind`) from `client`: keyed digests, case-insensitive in the subject.
    pub(crate) fn attempt_keys(&self, kind: &[u8], subject: &str, client: IpAddr) -> AttemptKeys {
        let subject = subject.to_lowercase();
        let addr = crate::throttle::address_key(client);
        let digest = |parts: &[&[u8]]| {
            self.deps
                .secrets
                .digest(DigestKind::Throttle, parts.concat().as_slice())
        };
        AttemptKeys {
            subject: digest(&[kind, b"\0", subject.as_bytes()]),
            address: digest(&[b"addr\0", &addr]),
            pair: digest(&[b"pair\0", &addr, kind, b"\0", subject.as_bytes()]),
        }
    }

    /// Checks a secret under the login throttle: `lookup` runs only once the attempt holds
    /// its share of the password pool and its reservation in the budgets, and finds the item
    /// and the hash to check against; `accept` says whether a right secret is enough (the user
    /// is enabled, the platform matches, …). `Ok((item, remembered_until))` when the secret was
    /// right and accepted, with until when the attempt's (subject, address) pair is remembered
    /// already, if it is; `Err(found)` otherwise (counted: the reservation stays as a failure).
    pub(crate) async fn verify_secret<T, F, Fut>(
        &self,
        keys: &AttemptKeys,
        secret: SecretString,
        lookup: F,
        accept: impl FnOnce(&T) -> bool,
    ) -> Result<Result<(T, Option<i64>), Option<T>>, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<(T, String)>, StoreError>>,
    {
        let remembered_until = self
            .deps
            .store
            .login_address_known(&keys.pair, self.deps.clock.now_ms())
            .await?;
        let known = remembered_until.is_some();
        // Budgets first: an attempt they refuse never takes a place in the pool's fair share.
        let reservation = self.throttle.reserve(keys, known).await?;
        let _share = match self.throttle.enter(keys, known) {
            Ok(share) => share,
            Err(refusal) => {
                self.throttle.settle(reservation, false).await;
                return Err(refusal);
            }
        };
        let found = match lookup().await {
            Ok(found) => found,
            Err(e) => {
                self.throttle.settle(reservation, false).await;
                return Err(e.into());
            }
        };
        let (item, hash) = match found {
            Some((item, hash)) => (Some(item), Some(hash)),
            None => (None, None),
        };
        let verified = match self.passwords.verify(hash.as_deref(), secret).await {
            Ok(v) => v,
            Err(e) => {
                // Never checked (the pool is full): not a failure.
                self.throttle.settle(reservation, false).await;
                return Err(Refusal::Pool(e));
            }
        };
        match item {
            Some(item) if verified && accept(&item) => {
                self.throttle.settle(reservation, false).await;
                Ok(Ok((item, remembered_until)))
            }
            other => {
                self.throttle.settle(reservation, true).await;
                Ok(Err(other))
            }
        }
    }

    /// Verifies a login: a username and password under the login throttle; `accept` adds what
    /// else the login requires of the user (its platform, its RingEX extension). Every failure
    /// is the same [`AuthError::LoginFailed`], counted and audited as `event`. A success is
    /// subject to the per-user rate limit of successful logins.
    pub(crate) async fn verify_login(
        &self,
        username: &str,
        password: SecretString,
        accept: impl FnOnce(&UserRecord) -> bool,
        event: Event,
        ctx: &AuditContext,
    ) -> Result<Verified, AuthError> {
        use secrecy::ExposeSecret as _;
        if username.len() > MAX_USERNAME_LEN {
            return Err(AuthError::BadRequest(format!(
                "username is longer than {MAX_USERNAME_LEN} bytes"
            )));
        }
        if password.expose_secret().len() > MAX_PASSWORD_LEN {
            return Err(AuthError::BadRequest(format!(
                "password is longer than {MAX_PASSWORD_LEN} bytes"
            )));
        }
        let keys = self.attempt_keys(b"user", username, ctx.client());
        let store = self.deps.store.clone();
        let lookup = || async move {
            Ok(store.user_by_username(username).await?.map(|u| {
                let hash = u.password_hash.clone();
                (u, hash)
            }))
        };
        let accept = |u: &UserRecord| u.enabled && accept(u);
        match self.verify_secret(&keys, password, lookup, accept).await {
            Ok(Ok((user, remembered_until))) => {
                if let Err(retry_after) = self.throttle.take_success(&keys.subject) {
                    return Err(self.throttled(retry_after, event, ctx, username).await);
                }
                tracing::Span::current().record("user_id", user.id);
                Ok(Verified {
                    user,
                    remembered_until,
                })
            }
            Ok(Err(user)) => Err(self.login_failed(username, user.as_ref(), event, ctx).await),
            Err(Refusal::Wait(retry_after)) => {
                Err(self.throttled(retry_after, event, ctx, username).await)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Runs `check` — asking RingEX whose token an exchange presents — under the client
    /// address's login budget: a token RingEX refuses counts as a failed attempt of the address,
    /// so forged tokens cannot turn cxauth into a way of flooding the RingEX server.
    pub(crate) async fn throttled_exchange_check<T>(
        &self,
        client: IpAddr,
        check: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let keys = self.attempt_keys(b"ringex", "", client);
        let reservation = match self.throttle.reserve_address(&keys.address).await {
            Ok(r) => r,
            Err(refusal) => {
                if matches!(refusal, Refusal::Wait(_)) {
                    // Counted, not audited: nothing was asked of anyone.
                    audit::count(Event::RingexExchange, Outcome::Throttled);
                }
                return Err(refusal.into());
            }
        };
        let result = check.await;
        let failed = matches!(result, Err(AuthError::RingexRefused));
        self.throttle.settle(reservation, failed).await;
        result
    }

    /// Counts, and audits (at most [`THROTTLED_AUDITS_PER_SECOND`] a second), a throttled
    /// attempt; returns its error.
    async fn throttled(
        &self,
        retry_after: Duration,
        event: Event,
        ctx: &AuditContext,
        username: &str,
    ) -> AuthError {
        if self.may_audit_throttled() {
            let user = self
                .deps
                .store
                .user_by_username(username)
                .await
                .ok()
                .flatten();
            let shown = self.audited_username(username, user.as_ref());
            let entry = audit::Entry {
                user_id: user.as_ref().map(|u| u.id),
                username: Some(&shown),
                ..audit::Entry::of(event, Outcome::Throttled)
            };
            self.deps.audit.record(ctx, entry).await;
        } else {
            audit::count(event, Outcome::Throttled);
        }
        AuthError::Throttled { retry_after }
    }

    /// Whether this throttled attempt may still be written to the audit trail this second.
    fn may_audit_throttled(&self) -> bool {
        let mut w = self
            .throttled_audits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= THROTTLED_AUDITS_PER_SECOND
    }

    /// The username as the audit trail keeps it: the user's own name when the user exists, else
    /// only a keyed digest, since what was typed may be a password typed in the wrong field.
    fn audited_username(&self, typed: &str, user: Option<&UserRecord>) -> String {
        match user {
            Some(u) => u.username.clone(),
            None => {
                let d = self
                    .deps
                    .secrets
                    .digest(DigestKind::AuditUsername, typed.to_lowercase().as_bytes());
                let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("unknown-user:{hex}")
            }
        }
    }

    /// Audits a failed login; returns the one error every failure gets. The audit row is the
    /// same write whether the user exists or not, so it reveals nothing by timing. (The failure
    /// was already counted by the throttle: its reservation stays.)
    async fn login_failed(
        &self,
        username: &str,
        user: Option<&UserRecord>,
        event: Event,
        ctx: &AuditContext,
    ) -> AuthError {
        let shown = self.audited_username(username, user);
        let entry = audit::Entry {
            username: Some(&shown),
            ..audit::Entry::of(event, Outcome::Failure)
        };
        self.deps.audit.record(ctx, entry).await;
        AuthError::LoginFailed
    }

    /// Remembers the address of a successful login, so that this user's later attempts from it
    /// get a budget of their own (see [`crate::throttle`]), unless it is remembered already. A
    /// failure to remember is logged, not fatal: the login itself succeeded.
    pub(crate) async fn login_succeeded(&self, username: &str, v: &Verified, ctx: &AuditContext) {
        let now = self.deps.clock.now_ms();
        let Some(a) = self.address_to_remember(username, v, ctx, now) else {
            return;
        };
        if let Err(e) = self
            .deps
            .store
            .remember_login_address(&a.pair, a.user_id, a.now, a.expires_at, a.keep)
            .await
        {
            tracing::warn!(error = %e, "cannot remember the address of a successful login");
        }
    }

    /// The address of a successful login `v` as `username` at `now`, to remember; `None` if it
    /// is remembered for at least the throttle's `remember_address_for` (30 days) past `now`
    /// already.
    ///
    /// Written a step (see [`expiry_step`]: an hour of the default 30 days) further than that,
    /// so that the logins of the next step, from the same address, write nothing. Each login
    /// used to rewrite the address's row, its place in two indexes and the trim of the user's
    /// oldest addresses: 6 of ~39 `write` calls and 12 of ~76 KB of a login's commit on SQLite
    /// (measured on the writer thread, benchmark VM, Dec 5 twenty-fifth round). The price: an
    /// address is remembered up to a step longer than the 30 days after its last login, never
    /// shorter, and the user's most recent addresses (the 20 kept) are ranked by logins up to
    /// a step old.
    fn address_to_remember(
        &self,
        username: &str,
        v: &Verified,
        ctx: &AuditContext,
        now: i64,
    ) -> Option<RememberAddress> {
        let c = self.throttle.config();
        let lifetime = duration_ms(c.remember_address_for);
        if v.remembered_until
            .is_some_and(|until| until >= now.saturating_add(lifetime))
        {
            return None;
        }
        let keys = self.attempt_keys(b"user", username, ctx.client());
        Some(RememberAddress {
            pair: keys.pair,
            user_id: v.user.id,
            now,
            expires_at: now
                .saturating_add(lifetime)
                .saturating_add(expiry_step(lifetime)),
            keep: c.known_addresses_per_user,
        })
    }

    /// The audit event of a successful login of `user` as `event` at `now`.
    fn success_event(
        &self,
        user: &UserRecord,
        event: Event,
        ctx: &AuditContext,
        now: i64,
    ) -> AuditEvent {
        let entry = audit::Entry {
            user_id: Some(user.id),
            username: Some(&user.username),
            ..audit::Entry::of(event, Outcome::Success)
        };
        audit::stored(ctx, now, entry)
    }

    /// Direct login with username, password and platform id: a new session.
    #[tracing::instrument(skip_all, fields(platform = %input.platform_id, user_id, session))]
    pub(crate) async fn login(
        &self,
        sessions: &Sessions,
        input: LoginInput,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let verified = self
            .verify_login(
                &input.username,
                input.password,
                |u| u.platform_id == input.platform_id,
                Event::Login,
                ctx,
            )
            .await?;
        let user = &verified.user;
        // The session, the address to remember and the audit event in one store call: on
        // SQLite one commit instead of three (see `create_login_session`).
        let started = sessions
            .start_login(user, user.password_hash.clone(), |now| {
                (
                    self.address_to_remember(&input.username, &verified, ctx, now),
                    self.success_event(user, Event::Login, ctx, now),
                )
            })
            .await;
        let started = match started {
            Ok(started) => started,
            // Disabled or password changed between the check and now: the login loses the race.
            Err(StoreError::Conflict(_)) => {
                return Err(self
                    .login_failed(&input.username, Some(user), Event::Login, ctx)
                    .await);
            }
            Err(e) => return Err(e.into()),
        };
        audit::count(Event::Login, Outcome::Success);
        let Started {
            session_id,
            refresh_token,
            now,
        } = started;
        sessions
            .answer(user, &session_id, Some(refresh_token), now, false)
            .await
    }

    /// The legacy portal login; see [`crate::service::Auth::legacy_login`].
    #[tracing::instrument(skip_all, fields(user_id))]
    pub(crate) async fn legacy_login(
        &self,
        username: &str,
        password: SecretString,
        stay_logged_in: bool,
        ctx: &AuditContext,
    ) -> Result<(String, UserRecord), AuthError> {
        let verified = self
            .verify_login(username, password, |_| true, Event::LegacyLogin, ctx)
            .await?;
        let user = &verified.user;
        let token = uuid::Uuid::new_v4().to_string();
        let now = self.deps.clock.now_ms();
        let lifetime_ms = duration_ms(if stay_logged_in {
            LEGACY_TOKEN_TTL_STAY
        } else {
            LEGACY_TOKEN_TTL
        });
        let login = NewLegacyLogin {
            user_id: user.id,
            digest: self
                .deps
                .secrets
                .digest(DigestKind::LegacyToken, token.as_bytes()),
            token: LegacyToken {
                expires_at: now.saturating_add(lifetime_ms),
                lifetime_ms,
            },
            now,
            expected_password_hash: user.password_hash.clone(),
        };
        // The token, the address to remember and the audit event in one store call: on SQLite
        // one commit instead of three, as for a direct login's session.
        let address = self.address_to_remember(username, &verified, ctx, now);
        let event = self.success_event(user, Event::LegacyLogin, ctx, now);
        let stored = self
            .deps
            .store
            .create_legacy_login(&login, address.as_ref(), &event)
            .await;
        match stored {
            Ok(()) => {
                audit::log(&event);
                audit::count(Event::LegacyLogin, Outcome::Success);
            }
            // Disabled or password changed since the check: the login loses the race.
            Err(StoreError::Conflict(_)) => {
                return Err(self
                    .login_failed(username, Some(user), Event::LegacyLogin, ctx)
                    .await);
            }
            Err(e) => return Err(e.into()),
        }
        Ok((token, verified.user))
    }
}
