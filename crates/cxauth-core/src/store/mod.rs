//! The storage interface every backend implements, and the records it deals in.
//!
//! The interface speaks in domain terms (rotate this refresh token, revoke that session) rather
//! than rows, so each backend can make each operation atomic in its own way (SQLite: one `BEGIN
//! IMMEDIATE` transaction; PostgreSQL: row locks). Times are epoch milliseconds from the injected
//! clock, never the database's own clock, so tests control them.
//!
//! One trait per concern, each in its own file with the records it deals in; [`Store`] is all of
//! them, implemented for every type that implements each. Code holding a [`SharedStore`] or a
//! `&dyn Store` calls any method with no import (a trait object's supertrait methods are in
//! scope); code that names a concern trait or is generic over a store writes
//! `use cxauth_core::store::prelude::*;`.
//!
//! | file | trait | what it keeps |
//! |---|---|---|
//! | `meta.rs` | [`MetaStore`] | the key/value metadata table |
//! | `keys.rs` | [`KeyStore`] | signing keys, live and retired |
//! | `accounts.rs` | [`AccountStore`] | main and sub-accounts, the bootstrap |
//! | `agents.rs` | [`AgentStore`] | agents of sub-accounts, linked to users by RingEX user id |
//! | `users.rs` | [`UserStore`] | users, the user tree, revoking all of a user's credentials |
//! | `sessions.rs` | [`SessionStore`] | sessions and refresh-token rotation |
//! | `api_tokens.rs` | [`ApiTokenStore`] | API tokens and their per-user cap |
//! | `legacy.rs` | [`LegacyTokenStore`] | legacy portal auth tokens |
//! | `ringex.rs` | [`RingexStore`] | the RingEX emulator's apps, JWTs and tokens |
//! | `audit.rs` | [`AuditStore`] | the audit trail |
//! | `throttle.rs` | [`ThrottleStore`] | login throttling and remembered login addresses |
//! | `housekeeping.rs` | [`Housekeeping`] | purges, counts, pool use, close |
//! | `changes.rs` | [`ChangeLogStore`] | the credential change log the caches follow |

use std::sync::Arc;

mod accounts;
mod agents;
mod api_tokens;
mod audit;
mod changes;
mod housekeeping;
mod keys;
mod legacy;
mod meta;
mod ringex;
mod sessions;
mod throttle;
mod users;

pub use accounts::*;
pub use agents::*;
pub use api_tokens::*;
pub use audit::*;
pub use changes::*;
pub use housekeeping::*;
pub use keys::*;
pub use legacy::*;
pub use meta::*;
pub use ringex::*;
pub use sessions::*;
pub use throttle::*;
pub use users::*;

/// Every concern trait, so that one `use cxauth_core::store::prelude::*;` lets a caller call
/// any store method on a [`SharedStore`].
pub mod prelude {
    pub use super::{
        AccountStore, AgentStore, ApiTokenStore, AuditStore, ChangeLogStore, Housekeeping,
        KeyStore, LegacyTokenStore, MetaStore, RingexStore, SessionStore, Store, ThrottleStore,
        UserStore,
    };
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The operation would break a uniqueness rule (e.g. a duplicate username).
    #[error("{0}")]
    Conflict(String),
    /// Something the operation refers to does not exist (an unknown parent or account).
    #[error("{0}")]
    NotFound(String),
    /// The input breaks a rule of the data model.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: a bug or corrupted data. Logged, never shown to clients.
    #[error("storage error: {0}")]
    Internal(String),
}

/// Storage for everything cxauth keeps: every concern trait. Implementations must make each
/// method atomic. Implemented for every type that implements all of them.
pub trait Store:
    MetaStore
    + KeyStore
    + AccountStore
    + AgentStore
    + UserStore
    + SessionStore
    + ApiTokenStore
    + LegacyTokenStore
    + RingexStore
    + AuditStore
    + ThrottleStore
    + Housekeeping
    + ChangeLogStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: MetaStore
        + KeyStore
        + AccountStore
        + AgentStore
        + UserStore
        + SessionStore
        + ApiTokenStore
        + LegacyTokenStore
        + RingexStore
        + AuditStore
        + ThrottleStore
        + Housekeeping
        + ChangeLogStore
        + Send
        + Sync
        + 'static
{
}

/// Shared handle to a store.
pub type SharedStore = Arc<dyn Store>;
