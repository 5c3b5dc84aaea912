//! Administrative operations shared by `cxauth admin` and the first start: input rules for
//! accounts and users ([`rules`]), users, accounts and their credentials ([`users`]), agents
//! and RingEX account links ([`agents`]), the
//! bootstrap of an empty database, key rotation and purging ([`ops`]), and seed files
//! ([`seed`]).

use crate::audit::{self, Event, Outcome};
use crate::store::{Store, StoreError};

pub mod agents;
pub mod ops;
pub mod rules;
pub mod seed;
pub mod users;

pub use agents::*;
pub use ops::*;
pub use rules::*;
pub use seed::*;
pub use users::*;

/// Username of the super user made on first start.
pub const BOOTSTRAP_USERNAME: &str = "admin";

/// Why an administrative operation was refused; every message is one line fit for a person.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Audits an operation of the local admin command (no address, no request id).
pub(crate) async fn local_audit(
    store: &dyn Store,
    now: i64,
    event: Event,
    user_id: Option<i64>,
    username: &str,
    detail: &str,
) {
    audit::record(
        store,
        &audit::AuditContext::local(),
        now,
        audit::Entry {
            user_id,
            username: Some(username),
            detail,
            ..audit::Entry::of(event, Outcome::Success)
        },
    )
    .await;
}
