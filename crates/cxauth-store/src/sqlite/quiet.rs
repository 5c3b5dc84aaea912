//! Reads of the credential change log that find nothing new cost no sqlx round trip (issue 14:
//! an idle server's CPU).
//!
//! Every instance with the credential cache on reads the change log every half staleness bound
//! (125 ms by default) to learn of revocations made elsewhere (`cxauth admin`, another process
//! on the file). Each read was two queries through sqlx's worker thread: ~0.6 ms of CPU, almost
//! all of it the wake-ups and hand-offs around the worker, and most of what an idle server
//! spent (docs/benchmarks-history.md, fourteenth round).
//!
//! SQLite's `PRAGMA data_version` tells, on one connection, whether any *other* connection (of
//! this process or of another) committed since that connection last asked; it starts a read
//! transaction, which locks and reads the WAL index in shared memory (two `fcntl` calls, no disk
//! I/O). So the store keeps its last read that found no rows, with the version taken before
//! that read began. A read of the same rows while the version has not moved would find the same
//! nothing, and is answered from memory. Every commit moves the version, so an answer from
//! memory is what a query made now would return: the cache's staleness bound is untouched.

use super::writer::open_connection;
use cxauth_core::store::{ChangeBatch, StoreError};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// `PRAGMA data_version` on `conn`: it moves whenever another connection (of any process)
/// commits; `None` if SQLite cannot say at once. Shared with the checkpointer, which skips its
/// ticks while it stands still.
pub(super) fn data_version(conn: &rusqlite::Connection) -> Option<i64> {
    let mut statement = conn.prepare_cached("PRAGMA data_version").ok()?;
    statement.query_row([], |row| row.get(0)).ok()
}

/// The last empty read of the change log, and how to tell whether it still holds.
#[derive(Debug)]
pub(super) struct QuietLog {
    /// A connection of its own that only asks `PRAGMA data_version`. It never writes, so every
    /// commit its version counts is another connection's.
    conn: Mutex<rusqlite::Connection>,
    /// The last read that found no rows.
    last: Mutex<Option<EmptyRead>>,
    /// Reads answered from memory (for the tests that show the memory is used).
    #[cfg(test)]
    pub(super) answered: std::sync::atomic::AtomicUsize,
}

/// A read of the rows after `after` that found none, begun at data version `version`.
#[derive(Debug, Clone, Copy)]
struct EmptyRead {
    version: i64,
    after: i64,
    oldest: Option<i64>,
}

impl QuietLog {
    /// Opens the connection that asks for the data version, on the database file at `path`.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        // No busy wait: a version that cannot be had at once is no answer, and the read goes
        // to the database as it would without this.
        let conn = open_connection(path, Duration::ZERO).map_err(|e| {
            StoreError::Internal(format!("cannot open the change log's version check: {e}"))
        })?;
        Ok(QuietLog {
            conn: Mutex::new(conn),
            last: Mutex::new(None),
            #[cfg(test)]
            answered: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The database's data version as this connection sees it, or `None` when it cannot be
    /// had without waiting (another task is asking, SQLite is busy): then the caller reads the
    /// database as usual. A few microseconds, on the caller's thread.
    pub(super) fn version(&self) -> Option<i64> {
        data_version(&*self.conn.try_lock().ok()?)
    }

    /// The answer to a read of the rows after `after`, if the last empty read was of the same
    /// rows and nothing was committed since it began (`version` is the version now).
    pub(super) fn answer(&self, version: i64, after: i64) -> Option<ChangeBatch> {
        let last = (*self.last.lock().unwrap_or_else(|p| p.into_inner()))?;
        if last.version != version || last.after != after {
            return None;
        }
        #[cfg(test)]
        self.answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(ChangeBatch {
            changes: Vec::new(),
            oldest: last.oldest,
        })
    }

    /// Records what a read of the rows after `after`, begun at `version`, found: kept if it
    /// found nothing. Of two reads that end together, either may be kept: each is true of the
    /// version it was begun at.
    pub(super) fn remember(&self, version: i64, after: i64, batch: &ChangeBatch) {
        if batch.changes.is_empty() {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(EmptyRead {
                version,
                after,
                oldest: batch.oldest,
            });
        }
    }
}
