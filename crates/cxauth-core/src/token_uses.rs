//! Recent API token uses, noted in memory by authentication and written in batches later, so
//! "last used" costs no write per request.
//!
//! [`UseNotes`] is a sharded map of atomics: on the hot path a read lock and an atomic load, a
//! compare-and-swap at most once per [`LAST_USE_STEP`] per token, and for a token not seen since
//! the last flush one insert under its shard's write lock. The server's housekeeping drains the
//! notes every minute ([`crate::service::Auth::flush_api_token_uses`]) and writes them in
//! batches; a clean stop drains them once more. A crash loses at most the uses noted since the
//! last flush (about a minute), which is acceptable for a "last used" column.

use crate::clock::duration_ms;
use crate::store::ApiTokenUse;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A token's last use is noted (and later written) at most once per this step: "last used"
/// is at most this much behind, and a busy token costs one write a minute, not one per request.
pub const LAST_USE_STEP: Duration = Duration::from_secs(60);
/// Most tokens whose uses are held between two flushes; uses of further tokens are dropped
/// until the next flush (memory stays bounded whatever is presented; only valid tokens are
/// noted, so this is a count of live tokens in use within a minute).
pub const MAX_NOTED: usize = 100_000;
/// Shards of [`UseNotes`]: a new token's first note takes one shard's write lock, not all.
const SHARDS: usize = 16;

/// One token's notes: its row id, when a use was last noted, and the newest use not yet
/// written.
struct Slot {
    id: i64,
    noted: AtomicI64,
    pending: AtomicI64,
}

/// "Nothing" in a [`Slot`] field.
const NONE: i64 = i64::MIN;

impl Slot {
    fn new(id: i64) -> Self {
        Slot {
            id,
            noted: AtomicI64::new(NONE),
            pending: AtomicI64::new(NONE),
        }
    }

    /// Notes a use at `now` unless one was noted less than [`LAST_USE_STEP`] before; of many
    /// concurrent uses, one wins the swap.
    fn note(&self, now: i64) {
        let prev = self.noted.load(Ordering::Acquire);
        if prev != NONE && now.saturating_sub(prev) < duration_ms(LAST_USE_STEP) {
            return;
        }
        if self
            .noted
            .compare_exchange(prev, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.pending.fetch_max(now, Ordering::AcqRel);
        }
    }
}

/// Recent API token uses, held in memory until the next flush; see the module documentation.
pub struct UseNotes {
    shards: [RwLock<HashMap<[u8; 32], Slot>>; SHARDS],
}

impl std::fmt::Debug for UseNotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UseNotes").finish_non_exhaustive()
    }
}

impl Default for UseNotes {
    fn default() -> Self {
        UseNotes {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
        }
    }
}

impl UseNotes {
    fn shard(&self, digest: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Slot>> {
        &self.shards[usize::from(digest[0]) % SHARDS]
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Notes a use of the token with keyed digest `digest` and row id `id` at `now` (epoch
    /// ms). On the request path: a read lock and an atomic load, and for a token not seen
    /// within the last flush period one insert under its shard's write lock. Never touches the
    /// database.
    pub(crate) fn note(&self, digest: &[u8; 32], id: i64, now: i64) {
        let shard = self.shard(digest);
        if let Some(slot) = shard.read().unwrap_or_else(|p| p.into_inner()).get(digest) {
            slot.note(now);
            return;
        }
        let mut slots = shard.write().unwrap_or_else(|p| p.into_inner());
        if !slots.contains_key(digest) && slots.len() >= MAX_NOTED / SHARDS {
            // Full until the next flush: this use is not recorded (bounded memory wins), and
            // the metrics say so.
            metrics::counter!("cxauth_api_token_uses_dropped_total").increment(1);
            return;
        }
        slots
            .entry(*digest)
            .or_insert_with(|| Slot::new(id))
            .note(now);
    }

    /// Takes the uses not yet written, and forgets tokens idle for a step (they are noted
    /// afresh at their next use).
    pub(crate) fn take(&self, now: i64) -> Vec<ApiTokenUse> {
        let mut out = Vec::new();
        let step = duration_ms(LAST_USE_STEP);
        for shard in &self.shards {
            let mut idle = Vec::new();
            {
                let slots = shard.read().unwrap_or_else(|p| p.into_inner());
                for (digest, slot) in slots.iter() {
                    let at = slot.pending.swap(NONE, Ordering::AcqRel);
                    if at != NONE {
                        out.push(ApiTokenUse {
                            id: slot.id,
                            digest: *digest,
                            at,
                        });
                    } else if now.saturating_sub(slot.noted.load(Ordering::Acquire)) >= step {
                        idle.push(*digest);
                    }
                }
            }
            if !idle.is_empty() {
                let mut slots = shard.write().unwrap_or_else(|p| p.into_inner());
                for digest in idle {
                    // Noted again meanwhile: keep it.
                    if slots.get(&digest).is_some_and(|s| {
                        s.pending.load(Ordering::Acquire) == NONE
                            && now.saturating_sub(s.noted.load(Ordering::Acquire)) >= step
                    }) {
                        slots.remove(&digest);
                    }
                }
            }
        }
        out
    }

    /// Puts back uses a failed flush could not write, for the next flush.
    pub(crate) fn restore(&self, uses: &[ApiTokenUse]) {
        for u in uses {
            let mut slots = self
                .shard(&u.digest)
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(u.digest).or_insert_with(|| Slot::new(u.id));
            slot.pending.fetch_max(u.at, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight threads note 200,000 different tokens at once: the notes stop at the bound, every
    /// shard full and none over, and a flush frees the room again.
    #[test]
    fn the_bound_holds_under_concurrent_first_uses() {
        let notes = UseNotes::default();
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let notes = &notes;
                s.spawn(move || {
                    for i in 0..25_000u32 {
                        let mut d = [0u8; 32];
                        d[..4].copy_from_slice(&(t * 25_000 + i).to_le_bytes());
                        notes.note(&d, 1, 1_000);
                    }
                });
            }
        });
        assert_eq!(notes.len(), MAX_NOTED);
        assert_eq!(
            notes.take(1_000).len(),
            MAX_NOTED,
            "each held token flushed once"
        );
        notes.take(1_000 + duration_ms(LAST_USE_STEP));
        assert_eq!(notes.len(), 0, "room again after the flush");
    }

    #[test]
    fn many_uses_within_a_step_note_one_time() {
        let notes = UseNotes::default();
        let d = [7u8; 32];
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        notes.note(&d, 1, 5_000);
                    }
                });
            }
        });
        notes.note(&d, 1, 5_000 + duration_ms(LAST_USE_STEP) - 1);
        assert_eq!(
            notes.take(6_000),
            vec![ApiTokenUse {
                id: 1,
                digest: d,
                at: 5_000
            }]
        );
        assert!(notes.take(6_000).is_empty(), "taken once");
        notes.note(&d, 1, 5_000 + duration_ms(LAST_USE_STEP));
        let later = notes.take(6_000);
        assert_eq!(
            later,
            vec![ApiTokenUse {
                id: 1,
                digest: d,
                at: 5_000 + duration_ms(LAST_USE_STEP)
            }]
        );
        notes.restore(&later);
        assert_eq!(notes.take(6_000), later, "restored for the next flush");
        assert_eq!(notes.len(), 1);
        notes.take(i64::MAX);
        assert_eq!(notes.len(), 0, "idle tokens are forgotten");
    }
}
