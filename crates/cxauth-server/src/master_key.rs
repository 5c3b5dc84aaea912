//! The master-key policy: where the key file is, and when a new key may be made. The key
//! seals everything secret in the database, so a database that has had one never gets another.

use crate::StartupError;
use crate::config::ServerConfig;
use cxauth_core::crypto::MasterKey;
use cxauth_core::service::META_KEY_FINGERPRINT;

/// Loads the master key, or creates it on a database that has never had one. A database that
/// was set up with a key is never given a new one: that would orphan everything sealed under
/// the old key, so the server refuses to start instead. Public so that `cxauth admin keys
/// rotate` finds the key by exactly the same rule as `cxauth serve`.
pub async fn load_or_create(
    config: &ServerConfig,
    store: &dyn cxauth_core::store::Store,
) -> Result<MasterKey, StartupError> {
    let path = config
        .master_key_file
        .clone()
        .or_else(|| config.database.default_key_file());
    let initialised = store.get_meta(META_KEY_FINGERPRINT).await?.is_some();
    let Some(path) = path else {
        if config.database.is_in_memory() {
            // Nothing outlives the process, so neither does its key.
            return MasterKey::generate().map_err(|e| StartupError::MasterKey(e.to_string()));
        }
        // A shared database: every instance needs the same key, so none may invent one.
        return Err(StartupError::MasterKey(format!(
            "the database {} is not a file, so there is no default place for the master key: \
             create one with `cxauth generate-master-key FILE` and give the same FILE to every \
             instance with CXAUTH_MASTER_KEY_FILE",
            config.database
        )));
    };
    if path.exists() {
        return MasterKey::load(&path).map_err(|e| StartupError::MasterKey(e.to_string()));
    }
    if !matches!(config.database, cxauth_store::DatabaseUrl::Sqlite { .. }) {
        // Instances of a shared database must all hold the same key: refuse to invent one.
        return Err(StartupError::MasterKey(format!(
            "the master key file {} does not exist; create it once with `cxauth \
             generate-master-key {}` and give the same file to every instance",
            path.display(),
            path.display()
        )));
    }
    if initialised {
        return Err(StartupError::MasterKey(format!(
            "the database {} was initialised with a master key, but the key file {} does not \
             exist; restore it or set CXAUTH_MASTER_KEY_FILE to its location (a new key would \
             make every stored token and signing key unreadable)",
            config.database,
            path.display()
        )));
    }
    let key = MasterKey::generate().map_err(|e| StartupError::MasterKey(e.to_string()))?;
    key.write_new(&path)
        .map_err(|e| StartupError::MasterKey(e.to_string()))?;
    tracing::info!(path = %path.display(), "created a new master key file");
    Ok(key)
}
