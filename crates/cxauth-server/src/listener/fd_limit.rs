//! File descriptors: every connection holds one, so the process takes all it may have, and
//! the connection cap is derived from what it got.

/// Descriptors kept back from the connection cap when it is derived from the limit: the
/// database pool (an SQLite connection holds the database, its `-wal` and its `-shm`), the
/// listeners, the metrics endpoint's clients, RingEX requests, the runtime's own descriptors
/// (epoll, eventfd), standard streams and the master key being read.
pub const FD_RESERVE: u64 = 128;

/// Descriptor limit assumed when the system reports none (an unlimited `RLIMIT_NOFILE`).
const UNLIMITED_AS: u64 = 1 << 20;

/// The connection cap for a descriptor limit: the limit less [`FD_RESERVE`], but never less
/// than half of it (a tiny limit still leaves room for the database).
pub fn default_max_connections(fd_limit: u64) -> usize {
    let limit = fd_limit.min(UNLIMITED_AS);
    let cap = limit.saturating_sub(FD_RESERVE).max(limit / 2).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (Rust, unlike some runtimes, leaves it at
/// the usual 1,024) and returns the soft limit then in force, or `None` if it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open file limit");
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    }
}
