//! The audit trail: security events written durably to the database, with time, user, source
//! address, request id and outcome, never a secret.
//!
//! Events are written by the service and the admin functions, after the work they describe
//! (after the password hash on a failed login, so the write cannot tell a known user from an
//! unknown one by timing). A failed write is logged and does not fail the operation: an outage
//! of the audit table must not lock everybody out.
//!
//! Events and outcomes are enums; the strings stored in the audit table come from
//! [`Event::as_str`] and [`Outcome::as_str`] only, and the login and refresh-reuse metrics are
//! counted from the variants in [`count`], never by matching strings.

use crate::clock::SharedClock;
use crate::store::{AuditEvent, SharedStore, Store};
use std::net::IpAddr;

/// What happened. The stored name of each event is [`Event::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A direct login attempt; outcomes success, failure, throttled.
    Login,
    /// A legacy portal login; outcomes success, failure, throttled.
    LegacyLogin,
    /// A password grant at the RingEX emulator's token endpoint; outcomes failure, throttled.
    EmulatorLogin,
    /// A refresh token refused at the RingEX emulator's token endpoint (unknown, rotated,
    /// revoked, timed out, another client's); outcome failure.
    EmulatorRefresh,
    /// A revoke at the RingEX emulator (a client's logout); outcome success (a login ended) or
    /// failure (no login of that client held the token; answered 200 all the same).
    EmulatorRevoke,
    /// A RingEX token exchange; outcomes success, failure (throttled ones are only counted).
    RingexExchange,
    /// A rotated refresh token came back after the grace window; outcome reuse (session ended).
    RefreshReuse,
    /// A session ended by logout; outcome success.
    SessionEnd,
    /// An API token was created; outcome success.
    ApiTokenCreate,
    /// An API token was deleted; outcome success.
    ApiTokenDelete,
    /// An API token was renamed; outcome success.
    ApiTokenRename,
    /// An API token was refused because its owner holds the cap; outcome failure.
    ApiTokenCap,
    /// A user was created; outcome success.
    UserCreate,
    /// A user was disabled; outcome success.
    UserDisable,
    /// A user was enabled again; outcome success.
    UserEnable,
    /// A user was deleted (`cxauth admin user delete`); outcome success, the detail counts the
    /// credentials deleted with it.
    UserDelete,
    /// A password was changed; outcome success.
    PasswordChange,
    /// A signing key was created (first start or rotation); outcome success.
    KeyCreate,
    /// Old signing keys were retired; outcome success.
    KeyRetire,
    /// Every credential of a user was ended (`cxauth admin user revoke-tokens`); outcome
    /// success, the detail counts what ended per kind.
    CredentialsRevoke,
    /// A RingEX emulator JWT credential was revoked; outcome success.
    RingexJwtRevoke,
}

impl Event {
    /// The name stored in the audit table and logged (these strings are a stored format: never
    /// change one).
    pub const fn as_str(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::LegacyLogin => "legacy_login",
            Event::EmulatorLogin => "ringex_emulator.login",
            Event::EmulatorRefresh => "ringex_emulator.refresh",
            Event::EmulatorRevoke => "ringex_emulator.revoke",
            Event::RingexExchange => "ringex.exchange",
            Event::RefreshReuse => "refresh.reuse",
            Event::SessionEnd => "session.end",
            Event::ApiTokenCreate => "api_token.create",
            Event::ApiTokenDelete => "api_token.delete",
            Event::ApiTokenRename => "api_token.rename",
            Event::ApiTokenCap => "api_token.cap",
            Event::UserCreate => "user.create",
            Event::UserDisable => "user.disable",
            Event::UserEnable => "user.enable",
            Event::UserDelete => "user.delete",
            Event::PasswordChange => "password.change",
            Event::KeyCreate => "key.create",
            Event::KeyRetire => "key.retire",
            Event::CredentialsRevoke => "credentials.revoke",
            Event::RingexJwtRevoke => "ringex_jwt.revoke",
        }
    }
}

/// How it ended. The stored word of each outcome is [`Outcome::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation worked.
    Success,
    /// The operation was refused.
    Failure,
    /// A login-like attempt was refused by the throttle before any password was checked.
    Throttled,
    /// A rotated refresh token was presented again; its session ended.
    Reuse,
}

impl Outcome {
    /// The word stored in the audit table (a stored format: never change one).
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Throttled => "throttled",
            Outcome::Reuse => "reuse",
        }
    }
}

/// Counts an event in the process metrics: `cxauth_logins_total{kind, outcome}` for logins and
/// exchanges, `cxauth_refresh_reuse_total` for reused refresh tokens. The emulator's password
/// grant counts only its throttled attempts (its other outcomes are a development tool's).
/// [`Auditor::record`] calls it; call it directly for an event counted but not written.
pub fn count(event: Event, outcome: Outcome) {
    match (event, outcome) {
        (Event::Login | Event::LegacyLogin | Event::RingexExchange, _)
        | (Event::EmulatorLogin, Outcome::Throttled) => {
            metrics::counter!("cxauth_logins_total", "kind" => event.as_str(), "outcome" => outcome.as_str())
                .increment(1);
        }
        (Event::RefreshReuse, _) => metrics::counter!("cxauth_refresh_reuse_total").increment(1),
        _ => {}
    }
}

/// Where a request came from, threaded through the service calls that write audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditContext {
    /// The HTTP request id (also in the request's log lines and its `X-Request-Id`).
    pub request_id: Option<String>,
    /// The client address; `None` for the local admin command.
    pub addr: Option<IpAddr>,
}

impl AuditContext {
    /// An HTTP request from `addr` with id `request_id`.
    pub fn http(addr: IpAddr, request_id: impl Into<String>) -> Self {
        AuditContext {
            request_id: Some(request_id.into()),
            addr: Some(addr),
        }
    }

    /// The local admin command (no address, no request).
    pub fn local() -> Self {
        AuditContext::default()
    }

    /// The address the login throttle counts against: the client's, or the unspecified
    /// address for a caller without one (all such callers share one budget).
    pub fn client(&self) -> IpAddr {
        self.addr
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }
}

/// What an audit event says beyond its context and time.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// What happened.
    pub event: Event,
    /// How it ended.
    pub outcome: Outcome,
    /// The user concerned, when known.
    pub user_id: Option<i64>,
    /// The user's name, or the name a failed login tried.
    pub username: Option<&'a str>,
    /// A reason or a key id; never a secret.
    pub detail: &'a str,
}

impl Entry<'_> {
    /// An entry of `event` ending in `outcome`, about nobody in particular, without detail;
    /// fill in the rest with struct update syntax.
    pub const fn of(event: Event, outcome: Outcome) -> Self {
        Entry {
            event,
            outcome,
            user_id: None,
            username: None,
            detail: "",
        }
    }
}

/// Writes one event; a failure is logged, never returned (see the module documentation).
/// Counts nothing: the admin command's events are not the server's metrics.
pub async fn record(store: &dyn Store, ctx: &AuditContext, now: i64, entry: Entry<'_>) {
    let event = stored(ctx, now, entry);
    log(&event);
    if let Err(e) = store.append_audit(&event).await {
        tracing::warn!(error = %e, event = entry.event.as_str(), "could not write the audit event");
    }
}

/// The row `entry` becomes, at `now`, for a store call that writes it along with the work it
/// describes (a login's session); [`log`] it once that work is done.
pub fn stored(ctx: &AuditContext, now: i64, entry: Entry<'_>) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: now,
        event: entry.event.as_str().to_owned(),
        outcome: entry.outcome.as_str().to_owned(),
        user_id: entry.user_id,
        username: entry.username.map(str::to_owned),
        addr: ctx.addr.map(|a| a.to_string()),
        request_id: ctx.request_id.clone(),
        detail: entry.detail.to_owned(),
    }
}

/// The log line of an audit event (target `audit`), written whether or not its row could be.
pub fn log(event: &AuditEvent) {
    // `client=1.2.3.4` (or `client=local` for the admin command), not a Rust `Some(…)`.
    let client = event.addr.as_deref().unwrap_or("local");
    tracing::info!(target: "audit", event = event.event.as_str(),
        outcome = event.outcome.as_str(), user_id = event.user_id, client = %client,
        detail = event.detail.as_str(), "audit");
}

/// The service's audit writer: records at the clock's now and counts the event (see [`count`]).
#[derive(Clone)]
pub struct Auditor {
    store: SharedStore,
    clock: SharedClock,
}

impl Auditor {
    /// An auditor writing to `store` at `clock`'s time.
    pub fn new(store: SharedStore, clock: SharedClock) -> Self {
        Auditor { store, clock }
    }

    /// Counts and writes one event.
    pub async fn record(&self, ctx: &AuditContext, entry: Entry<'_>) {
        count(entry.event, entry.outcome);
        record(self.store.as_ref(), ctx, self.clock.now_ms(), entry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored names are a format other tools read: pin them.
    #[test]
    fn stored_names_are_unchanged() {
        assert_eq!(Event::Login.as_str(), "login");
        assert_eq!(Event::LegacyLogin.as_str(), "legacy_login");
        assert_eq!(Event::EmulatorLogin.as_str(), "ringex_emulator.login");
        assert_eq!(Event::EmulatorRefresh.as_str(), "ringex_emulator.refresh");
        assert_eq!(Event::EmulatorRevoke.as_str(), "ringex_emulator.revoke");
        assert_eq!(Event::RingexExchange.as_str(), "ringex.exchange");
        assert_eq!(Event::RefreshReuse.as_str(), "refresh.reuse");
        assert_eq!(Event::ApiTokenCap.as_str(), "api_token.cap");
        assert_eq!(Outcome::Throttled.as_str(), "throttled");
        assert_eq!(Outcome::Reuse.as_str(), "reuse");
    }
}
