//! The first start's bootstrap, signing-key rotation and the purge of expired rows.

use super::users::{UserSpec, new_user};
use super::{AdminError, BOOTSTRAP_USERNAME, local_audit};
use crate::audit::{self, Event, Outcome};
use crate::crypto::random_bytes;
use crate::store::{Bootstrap, PurgeCounts, ROLE_SUPER_USER, Store, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;

/// What a first start did.
#[derive(Debug)]
pub enum BootstrapOutcome {
    /// The database was not empty; nothing changed.
    AlreadyInitialised,
    /// Created with the password given in the environment.
    Created,
    /// Created with a random password, to be shown once.
    CreatedWithPassword(SecretString),
}

/// Adds a new signing key (key rotation) and returns its id. Running instances start signing
/// with it at their next key reload (within [`crate::service::KEY_RELOAD_INTERVAL`], or at once
/// when they meet a token it signed); tokens signed by older keys stay valid until they expire,
/// and the older keys retire on their own (see [`crate::service::Auth::retire_keys`]).
pub async fn rotate_signing_key(
    store: &dyn Store,
    secrets: &crate::crypto::Secrets,
    now: i64,
) -> Result<String, AdminError> {
    let key = crate::jwt::generate_signing_key(secrets, now)
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    store.insert_signing_key(&key).await?;
    audit::record(
        store,
        &audit::AuditContext::local(),
        now,
        audit::Entry {
            detail: &format!("kid {} (rotation)", key.kid),
            ..audit::Entry::of(Event::KeyCreate, Outcome::Success)
        },
    )
    .await;
    Ok(key.kid)
}

/// Rows each purge pass removes at most per table: small, so each write transaction is short.
pub const PURGE_BATCH: i64 = 500;

/// The `audit_before` of [`purge`] for audit events kept `retention` (`--audit-retention`), in
/// one place: the server's housekeeping, `cxauth admin purge` and the housekeeping test take it
/// from here, so the three cannot disagree on where the retention ends.
pub fn audit_cutoff(now: i64, retention: std::time::Duration) -> i64 {
    now.saturating_sub(crate::clock::duration_ms(retention))
}

/// Removes every row that can never be used again, and audit events older than `audit_before`
/// (epoch ms), in batches of `batch` rows per table, and says how many went. Used by the
/// server's background housekeeping and `cxauth admin purge`.
pub async fn purge(
    store: &dyn Store,
    now: i64,
    audit_before: i64,
    batch: i64,
) -> Result<PurgeCounts, StoreError> {
    let mut total = PurgeCounts::default();
    loop {
        let mut pass = store.purge_expired(now, batch).await?;
        pass.audit_events = store.purge_audit(audit_before, batch).await?;
        total.add(&pass);
        if !pass.is_full(batch) {
            return Ok(total);
        }
        // Let other work in between batches.
        tokio::task::yield_now().await;
    }
}

/// A random password for a bootstrapped `admin` (120 bits, URL-safe), shown once.
pub fn random_password() -> Result<SecretString, AdminError> {
    let bytes = random_bytes::<15>().map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
}

/// On an empty database, creates `Main` with sub-account `Default` and the super user `admin`
/// with `password`, or a random one that the caller must show once.
pub async fn bootstrap(
    store: &dyn Store,
    platform_id: &str,
    password: Option<SecretString>,
    now: i64,
) -> Result<BootstrapOutcome, AdminError> {
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (random_password()?, true),
    };
    let user = new_user(
        UserSpec {
            username: BOOTSTRAP_USERNAME.into(),
            password: password.clone(),
            platform_id: platform_id.into(),
            parent: None,
            grants: vec![0],
            roles: vec![ROLE_SUPER_USER.into()],
            first_name: "Admin".into(),
            last_name: String::new(),
            rc_user_id: None,
        },
        now,
    )?;
    let created = store
        .bootstrap(&Bootstrap {
            main_account_name: "Main".into(),
            sub_account_name: "Default".into(),
            user,
        })
        .await?;
    if created {
        let id = store
            .user_by_username(BOOTSTRAP_USERNAME)
            .await?
            .map(|u| u.id);
        local_audit(
            store,
            now,
            Event::UserCreate,
            id,
            BOOTSTRAP_USERNAME,
            "bootstrap",
        )
        .await;
    }
    Ok(match (created, generated) {
        (false, _) => BootstrapOutcome::AlreadyInitialised,
        (true, false) => BootstrapOutcome::Created,
        (true, true) => BootstrapOutcome::CreatedWithPassword(password),
    })
}
