//! Where the throttle's budgets live: the [`ThrottleTable`] trait, kept in this process's memory
//! ([`MemoryThrottleTable`], for SQLite) or in the database ([`StoreThrottleTable`], so every
//! instance shares one budget).

use crate::clock::SharedClock;
use crate::store::StoreError;
// The entry is stored by the database table too, so its type lives with the store.
pub use crate::store::{ThrottleEntry, ThrottleUpdate};
use std::collections::HashMap;
use std::sync::Mutex;

/// Where throttle entries live. Each update is atomic: concurrent updates of one key, from any
/// number of tasks or instances, are applied one after the other.
#[async_trait::async_trait]
pub trait ThrottleTable: Send + Sync + 'static {
    /// Applies `update` to the entry of `key` atomically; returns the entry as it was before.
    async fn update(
        &self,
        key: &[u8; 32],
        update: ThrottleUpdate<'_>,
    ) -> Result<Option<ThrottleEntry>, StoreError>;

    /// Drops entries expired at `now` (the database's are purged with the other expired rows).
    fn purge(&self, _now: i64) {}
}

/// A [`ThrottleTable`] in this process's memory, bounded by `max_entries`.
pub struct MemoryThrottleTable {
    entries: Mutex<HashMap<[u8; 32], ThrottleEntry>>,
    max_entries: usize,
    clock: SharedClock,
}

impl MemoryThrottleTable {
    /// An empty table of at most `max_entries` keys.
    pub fn new(clock: SharedClock, max_entries: usize) -> Self {
        MemoryThrottleTable {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ThrottleEntry>> {
        // Entries are plain copies replaced whole: a poisoned lock holds nothing half-updated.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys held (for tests of the bound).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl ThrottleTable for MemoryThrottleTable {
    async fn update(
        &self,
        key: &[u8; 32],
        update: ThrottleUpdate<'_>,
    ) -> Result<Option<ThrottleEntry>, StoreError> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        let old = map.get(key).copied();
        match update(old) {
            Some(new) => {
                if old.is_none() && map.len() >= self.max_entries {
                    // Full: forget what is expired, then what blocks nobody now (at most a few
                    // free failures each, no more than a fresh address would have). Only a table
                    // full of live blocks refuses new keys.
                    map.retain(|_, e| e.expires_at > now);
                    if map.len() >= self.max_entries {
                        map.retain(|_, e| e.blocked_until > now);
                    }
                    if map.len() >= self.max_entries {
                        // Full of live entries: refuse rather than forget someone's failures.
                        return Err(StoreError::Unavailable(
                            "the login throttle table is full".into(),
                        ));
                    }
                }
                map.insert(*key, new);
            }
            None => {
                map.remove(key);
            }
        }
        Ok(old)
    }

    fn purge(&self, now: i64) {
        self.lock().retain(|_, e| e.expires_at > now);
    }
}

/// The database as a [`ThrottleTable`]: every instance on it shares one budget.
pub struct StoreThrottleTable(pub crate::store::SharedStore);

#[async_trait::async_trait]
impl ThrottleTable for StoreThrottleTable {
    async fn update(
        &self,
        key: &[u8; 32],
        update: ThrottleUpdate<'_>,
    ) -> Result<Option<ThrottleEntry>, StoreError> {
        self.0.throttle_update(key, update).await
    }
}
