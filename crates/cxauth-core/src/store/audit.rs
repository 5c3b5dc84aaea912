//! The audit trail: security events, appended durably and read back by filter.

use super::StoreError;
use async_trait::async_trait;

/// One security event of the audit trail. Holds who, what, when and from where, never a
/// secret: no password, token or token digest ever goes in here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// Row id, increasing (0 for an event not yet stored); `--follow` reads past the last one.
    pub id: i64,
    /// When, epoch ms.
    pub at: i64,
    /// What happened, e.g. `login` or `session.end` (see [`crate::audit`]).
    pub event: String,
    /// How it ended, e.g. `success`, `failure`, `throttled`.
    pub outcome: String,
    /// The user concerned, when known.
    pub user_id: Option<i64>,
    /// The user's name, or the name a failed login tried.
    pub username: Option<String>,
    /// The client address; `None` for the local admin command.
    pub addr: Option<String>,
    /// The request id of the HTTP request, to find its log lines.
    pub request_id: Option<String>,
    /// Anything else worth knowing (a reason, a key id), never a secret.
    pub detail: String,
}

/// Which audit events to read.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    /// Only events concerning this username.
    pub username: Option<String>,
    /// Only events at or after this time, epoch ms.
    pub since: i64,
    /// Only events with a larger id (for following the trail).
    pub after_id: i64,
    /// At most this many events.
    pub limit: i64,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            username: None,
            since: i64::MIN,
            after_id: 0,
            limit: 1000,
        }
    }
}

/// The security audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends a security event to the audit trail, durably (committed when this returns).
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Audit events matching `filter`, oldest first.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
}
