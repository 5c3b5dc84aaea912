//! The credential change log: one row per change that ends or alters a credential, written in
//! the transaction that makes the change, so that every instance's in-memory credential cache
//! (see [`crate::credcache`]) learns what to forget, whoever made the change (another instance,
//! `cxauth admin`).

use super::StoreError;
use async_trait::async_trait;
use std::sync::Arc;

/// What a change row names, and so what a cache must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// One session ended (logout, refresh-token reuse): the key is the session id.
    Session,
    /// Something of one user changed (enabled flag, password, every credential ended, an API
    /// token deleted, sessions over the cap ended, the user deleted): the key is the user id.
    User,
    /// The account tree changed (a sub-account created, a RingEX link set): every user's list
    /// of accounts may have changed.
    Accounts,
}

impl ChangeKind {
    /// The string stored in the `kind` column.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Session => "session",
            ChangeKind::User => "user",
            ChangeKind::Accounts => "accounts",
        }
    }

    /// The kind a stored string names; `None` for one this version does not know (a newer
    /// instance wrote it), which a reader must treat as "forget everything".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(ChangeKind::Session),
            "user" => Some(ChangeKind::User),
            "accounts" => Some(ChangeKind::Accounts),
            _ => None,
        }
    }
}

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialChange {
    /// Position in the log; rows become visible in this order.
    pub seq: i64,
    /// What changed; `None` for a kind this version does not know.
    pub kind: Option<ChangeKind>,
    /// Which one (see [`ChangeKind`]).
    pub key: String,
}

/// What a read of the log returned.
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    /// The rows after the position asked for, in order (at most the limit asked for).
    pub changes: Vec<CredentialChange>,
    /// The oldest row still kept, if any: a reader whose position is older than the row before
    /// it may have missed pruned rows and must forget everything.
    pub oldest: Option<i64>,
}

/// Called with a change's position when the database announces it (PostgreSQL `NOTIFY`), so a
/// reader can apply it before its next periodic read.
pub type ChangeWaker = Arc<dyn Fn(i64) + Send + Sync>;

/// Called, in the writing process, with each change a write of this process committed (or
/// tried to commit), right after its commit and before the write returns: what makes a change
/// reach this process's cache at once, whatever code path made it (a request, `admin::*`
/// called in process).
pub type LocalChangeListener = dyn Fn(&ChangeKind, &str) + Send + Sync;

/// The change log of credentials.
#[async_trait]
pub trait ChangeLogStore: Send + Sync {
    /// Rows with `seq > after`, oldest first, at most `limit`, and the oldest row kept.
    async fn credential_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<ChangeBatch, StoreError>;

    /// The position of the newest row (0 for an empty log): where a fresh reader starts.
    async fn latest_credential_change(&self) -> Result<i64, StoreError>;

    /// Deletes rows written before `before` (epoch ms), always keeping the newest one (so a
    /// reader can tell a gap from an empty log); returns how many went.
    async fn prune_credential_changes(&self, before: i64) -> Result<u64, StoreError>;

    /// Starts announcing new rows to `wake` as the database reports them, reconnecting when the
    /// channel drops; a backend without announcements does nothing (readers poll).
    fn watch_credential_changes(&self, wake: ChangeWaker) {
        let _ = wake;
    }

    /// Calls `listener` with every change a write through any store of this process commits,
    /// until the last strong reference to it is dropped.
    fn on_local_credential_change(&self, listener: std::sync::Weak<LocalChangeListener>);
}
