//! The handles every part of the service shares: storage, time, the derived secrets and the
//! audit writer. Cheap to clone (reference-counted), so each concern holds its own copy.

use crate::audit::Auditor;
use crate::clock::SharedClock;
use crate::credcache::CredentialCache;
use crate::crypto::Secrets;
use crate::store::SharedStore;
use std::sync::Arc;

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct Deps {
    /// Where everything durable lives.
    pub(crate) store: SharedStore,
    /// Domain time (injected, so tests move it instead of sleeping).
    pub(crate) clock: SharedClock,
    /// Keyed digests and sealing, derived from the master key.
    pub(crate) secrets: Arc<Secrets>,
    /// Writes and counts audit events.
    pub(crate) audit: Auditor,
    /// Credential state in memory; every write that ends or changes a credential forgets
    /// what it affects here before it answers.
    pub(crate) creds: Arc<CredentialCache>,
}

impl Deps {
    /// The handles over `store`, `clock`, `secrets` and the credential cache.
    pub(crate) fn new(
        store: SharedStore,
        clock: SharedClock,
        secrets: Secrets,
        creds: Arc<CredentialCache>,
    ) -> Self {
        Deps {
            creds,
            audit: Auditor::new(store.clone(), clock.clone()),
            store,
            clock,
            secrets: Arc::new(secrets),
        }
    }
}
