//! The RingEX token exchange: a RingEX access token becomes a cxauth session of the user who
//! holds its RingEX user id.
//!
//! Who a RingEX token belongs to is asked of a [`RingexResolver`], injected at start: the
//! server's HTTP client of a real RingEX server, or the built-in emulator
//! ([`crate::emulator::Emulator`]). The asking runs under the client address's login budget.

use crate::audit::{self, AuditContext, Event, Outcome};
use crate::deps::Deps;
use crate::error::AuthError;
use crate::limits::MAX_TOKEN_LEN;
use crate::login::LoginGate;
use crate::sessions::{Sessions, Started};
use cxauth_proto::Session;
use std::sync::Arc;

/// Says whose RingEX token this is.
#[async_trait::async_trait]
pub trait RingexResolver: Send + Sync {
    /// The RingEX extension (user) id the token belongs to: [`AuthError::RingexRefused`] if
    /// RingEX does not accept it, [`AuthError::UpstreamUnavailable`] if RingEX cannot be asked.
    async fn resolve(&self, token: &str) -> Result<i64, AuthError>;
}

/// A shared resolver.
pub type SharedResolver = Arc<dyn RingexResolver>;

/// Runs exchanges.
pub(crate) struct Exchange {
    deps: Deps,
    resolver: Option<SharedResolver>,
}

impl Exchange {
    pub(crate) fn new(deps: Deps, resolver: Option<SharedResolver>) -> Self {
        Exchange { deps, resolver }
    }

    /// Whether tokens can be checked at all (a resolver is set).
    pub(crate) fn configured(&self) -> bool {
        self.resolver.is_some()
    }

    /// Asks the resolver whose `token` it is, under `ctx`'s address budget, and starts a session
    /// of that user; see [`crate::service::Auth::exchange_ringex_token`].
    #[tracing::instrument(skip_all, fields(user_id, session))]
    pub(crate) async fn exchange(
        &self,
        gate: &LoginGate,
        sessions: &Sessions,
        token: &str,
        include_refresh: bool,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let Some(resolver) = &self.resolver else {
            return Err(AuthError::UpstreamUnavailable(
                "no RingEX server is configured (--ringex-server URL) and the emulator is off"
                    .into(),
            ));
        };
        let check = async {
            if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                return Err(AuthError::RingexRefused);
            }
            resolver.resolve(token).await
        };
        let rc_user_id = gate.throttled_exchange_check(ctx.client(), check).await?;
        self.start_session(sessions, rc_user_id, include_refresh, ctx)
            .await
    }

    /// Once RingEX has said whose token it is: starts a session of the cxauth user holding
    /// `rc_user_id`, exactly like a direct login, marked `ssoLogin`.
    async fn start_session(
        &self,
        sessions: &Sessions,
        rc_user_id: i64,
        include_refresh: bool,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let user = match self.deps.store.user_by_rc_user_id(rc_user_id).await? {
            Some(u) if u.enabled => u,
            _ => {
                let detail = format!("no enabled user holds RingEX user id {rc_user_id}");
                let entry = audit::Entry {
                    detail: &detail,
                    ..audit::Entry::of(Event::RingexExchange, Outcome::Failure)
                };
                self.deps.audit.record(ctx, entry).await;
                return Err(AuthError::RingexRefused);
            }
        };
        tracing::Span::current().record("user_id", user.id);
        let Started {
            session_id,
            refresh_token,
            now,
        } = match sessions.start(&user, None, true).await {
            Ok(started) => started,
            Err(crate::store::StoreError::Conflict(_)) => return Err(AuthError::RingexRefused),
            Err(e) => return Err(e.into()),
        };
        let entry = audit::Entry {
            user_id: Some(user.id),
            username: Some(&user.username),
            ..audit::Entry::of(Event::RingexExchange, Outcome::Success)
        };
        self.deps.audit.record(ctx, entry).await;
        sessions
            .answer(
                &user,
                &session_id,
                include_refresh.then_some(refresh_token),
                now,
                true,
            )
            .await
    }
}
