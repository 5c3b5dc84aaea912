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
use crate::store::UserRecord;
use cxauth_proto::Session;
use std::sync::Arc;

/// Whose a RingEX token is, as RingEX says: the extension (user) and the RingEX account it is
/// in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingexIdentity {
    /// The RingEX extension id: cxauth's `rc_user_id`.
    pub extension_id: i64,
    /// The RingEX account id, when RingEX named one. The exchange compares it with the link of
    /// the user's main account (`cxauth admin account link`), so a linked account takes tokens
    /// of its own RingEX account only.
    pub account_id: Option<String>,
}

/// Says whose RingEX token this is.
#[async_trait::async_trait]
pub trait RingexResolver: Send + Sync {
    /// The RingEX extension and account the token belongs to: [`AuthError::RingexRefused`] if
    /// RingEX does not accept it, [`AuthError::UpstreamUnavailable`] if RingEX cannot be asked.
    async fn resolve(&self, token: &str) -> Result<RingexIdentity, AuthError>;
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
        let identity = gate.throttled_exchange_check(ctx.client(), check).await?;
        self.start_session(sessions, &identity, include_refresh, ctx)
            .await
    }

    /// Once RingEX has said whose token it is: starts a session of the cxauth user holding its
    /// extension id, exactly like a direct login, marked `ssoLogin`, if the user's main account
    /// takes tokens of that RingEX account (see [`Exchange::account_refusal`]).
    async fn start_session(
        &self,
        sessions: &Sessions,
        identity: &RingexIdentity,
        include_refresh: bool,
        ctx: &AuditContext,
    ) -> Result<Session, AuthError> {
        let rc_user_id = identity.extension_id;
        let refusal = match self.deps.store.user_by_rc_user_id(rc_user_id).await? {
            Some(u) if u.enabled => match self.account_refusal(&u, identity).await? {
                None => Ok(u),
                Some(detail) => Err(detail),
            },
            _ => Err(format!("no enabled user holds RingEX user id {rc_user_id}")),
        };
        let user = match refusal {
            Ok(u) => u,
            Err(detail) => {
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
        } = match sessions
            .start_exchange(&user, |now| {
                let entry = audit::Entry {
                    user_id: Some(user.id),
                    username: Some(&user.username),
                    ..audit::Entry::of(Event::RingexExchange, Outcome::Success)
                };
                audit::stored(ctx, now, entry)
            })
            .await
        {
            Ok(started) => started,
            Err(crate::store::StoreError::Conflict(_)) => return Err(AuthError::RingexRefused),
            Err(e) => return Err(e.into()),
        };
        audit::count(Event::RingexExchange, Outcome::Success);
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

    /// Why `user` may not take a token of `identity`'s RingEX account, if it may not: a main
    /// account linked to a RingEX account takes tokens of that account only (a token whose
    /// answer names no account is refused too). An unlinked main account takes the extension
    /// id alone, as before links existed: RingEX extension ids are unique across RingEX.
    async fn account_refusal(
        &self,
        user: &UserRecord,
        identity: &RingexIdentity,
    ) -> Result<Option<String>, AuthError> {
        let linked = self
            .deps
            .store
            .account_info(user.main_account_id)
            .await?
            .and_then(|a| a.rc_account_id);
        Ok(match (linked, identity.account_id.as_deref()) {
            (None, _) => None,
            (Some(linked), Some(got)) if linked == got => None,
            (Some(linked), got) => Some(format!(
                "the RingEX token is of account {}, user {}'s main account is linked to {linked}",
                got.unwrap_or("(none named)"),
                user.id
            )),
        })
    }
}
