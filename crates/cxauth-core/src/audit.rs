//! The audit trail: security events written durably to the database, with time, user, source
//! address, request id and outcome, never a secret.
//!
//! Events are written by the service and the admin functions, after the work they describe
//! (after the password hash on a failed login, so the write cannot tell a known user from an
//! unknown one by timing). A failed write is logged and does not fail the operation: an outage
//! of the audit table must not lock everybody out.

use crate::store::{AuditEvent, Store};
use std::net::IpAddr;

/// A login attempt (direct or legacy); outcomes `success`, `failure`, `throttled`.
pub const LOGIN: &str = "login";
/// A legacy portal login; outcomes `success`, `failure`, `throttled`.
pub const LEGACY_LOGIN: &str = "legacy_login";
/// A RingEX token exchange; outcomes `success`, `failure`.
pub const RINGEX_EXCHANGE: &str = "ringex.exchange";
/// A rotated refresh token came back after the grace window; outcome `reuse` (session ended).
pub const REFRESH_REUSE: &str = "refresh.reuse";
/// A session ended by logout; outcome `success`.
pub const SESSION_END: &str = "session.end";
/// An API token was created; outcome `success`.
pub const API_TOKEN_CREATE: &str = "api_token.create";
/// An API token was deleted; outcome `success`.
pub const API_TOKEN_DELETE: &str = "api_token.delete";
/// A user was created; outcome `success`.
pub const USER_CREATE: &str = "user.create";
/// A user was disabled; outcome `success`.
pub const USER_DISABLE: &str = "user.disable";
/// A user was enabled again; outcome `success`.
pub const USER_ENABLE: &str = "user.enable";
/// A user was deleted (`cxauth admin user delete`); outcome `success`, the detail counts the
/// credentials deleted with it.
pub const USER_DELETE: &str = "user.delete";
/// A password was changed; outcome `success`.
pub const PASSWORD_CHANGE: &str = "password.change";
/// A signing key was created (first start or rotation); outcome `success`.
pub const KEY_CREATE: &str = "key.create";
/// Old signing keys were retired; outcome `success`.
pub const KEY_RETIRE: &str = "key.retire";
/// Every credential of a user was ended (`cxauth admin user revoke-tokens`); outcome
/// `success`, the detail counts what ended per kind.
pub const CREDENTIALS_REVOKE: &str = "credentials.revoke";
/// A RingEX emulator JWT credential was revoked; outcome `success`.
pub const RINGEX_JWT_REVOKE: &str = "ringex_jwt.revoke";
/// An API token was refused because its owner holds the cap; outcome `failure`.
pub const API_TOKEN_CAP: &str = "api_token.cap";

/// Outcome of an operation that worked.
pub const SUCCESS: &str = "success";
/// Outcome of an operation that was refused.
pub const FAILURE: &str = "failure";

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
    /// One of the event names of this module.
    pub event: &'static str,
    /// [`SUCCESS`], [`FAILURE`] or another outcome word.
    pub outcome: &'static str,
    /// The user concerned, when known.
    pub user_id: Option<i64>,
    /// The user's name, or the name a failed login tried.
    pub username: Option<&'a str>,
    /// A reason or a key id; never a secret.
    pub detail: &'a str,
}

/// Writes one event; a failure is logged, never returned (see the module documentation).
pub async fn record(store: &dyn Store, ctx: &AuditContext, now: i64, entry: Entry<'_>) {
    let event = AuditEvent {
        id: 0,
        at: now,
        event: entry.event.to_owned(),
        outcome: entry.outcome.to_owned(),
        user_id: entry.user_id,
        username: entry.username.map(str::to_owned),
        addr: ctx.addr.map(|a| a.to_string()),
        request_id: ctx.request_id.clone(),
        detail: entry.detail.to_owned(),
    };
    // `client=1.2.3.4` (or `client=local` for the admin command), not a Rust `Some(…)`.
    let client = event.addr.as_deref().unwrap_or("local");
    tracing::info!(target: "audit", event = entry.event, outcome = entry.outcome,
        user_id = entry.user_id, client = %client, detail = entry.detail, "audit");
    if let Err(e) = store.append_audit(&event).await {
        tracing::warn!(error = %e, event = entry.event, "could not write the audit event");
    }
}
