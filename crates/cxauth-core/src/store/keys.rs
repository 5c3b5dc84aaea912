//! Signing keys: rotation, retirement, and the first key of a new database.

use super::StoreError;
use async_trait::async_trait;

/// A signing key as stored: public key in clear, private key sealed under the master key.
#[derive(Clone)]
pub struct StoredSigningKey {
    /// Key id, the JWT `kid`.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Ed25519 seed, sealed with [`crate::crypto::Secrets::seal`] (aad: the kid).
    pub sealed_private_key: Vec<u8>,
    /// Creation time, epoch ms.
    pub created_at: i64,
}

/// The public half of a retired signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredSigningKey {
    /// Key id, the JWT `kid`.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The cutoff it was retired with, epoch ms: no instance has signed with it since (give
    /// or take two key reloads), so no access token it signed outlives this by more than the
    /// access-token lifetime.
    pub retired_at: i64,
}

/// Signing keys: the live ones (private halves sealed), and the public halves of retired ones.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// All signing keys, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;

    /// Adds a signing key (key rotation).
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;

    /// Retires every signing key older than the newest key created at or before `cutoff`
    /// (epoch ms): those have been superseded since at least `cutoff`. Never retires the newest
    /// key. A retired key's private half is deleted; its public half moves to
    /// [`KeyStore::retired_signing_keys`] with `cutoff` as its `retired_at`. Returns the key ids
    /// retired.
    async fn retire_signing_keys(&self, cutoff: i64) -> Result<Vec<String>, StoreError>;

    /// Adds `key` only if there is no signing key yet, atomically, so instances starting
    /// together on an empty database agree on one key; returns whether it was added.
    async fn init_signing_key(&self, key: &StoredSigningKey) -> Result<bool, StoreError>;

    /// Public keys of retired signing keys, oldest first.
    async fn retired_signing_keys(&self) -> Result<Vec<RetiredSigningKey>, StoreError>;

    /// Forgets retired public keys retired before `before` (epoch ms); returns their key ids.
    async fn forget_retired_signing_keys(&self, before: i64) -> Result<Vec<String>, StoreError>;
}
