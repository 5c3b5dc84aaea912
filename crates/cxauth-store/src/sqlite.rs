//! The SQLite backend: one file, WAL journal, every write in a `BEGIN IMMEDIATE` transaction.
//!
//! `BEGIN IMMEDIATE` takes the database's write lock up front, so two writers never both read
//! and then fail to upgrade (SQLite's deadlock-by-`SQLITE_BUSY`); the busy timeout queues them
//! instead. Because that lock already serialises every write transaction, the row and advisory
//! locks the PostgreSQL backend needs are no-ops here. `synchronous = FULL` makes each commit
//! durable before it is acknowledged.
//!
//! The files hold password hashes and sealed secrets, so they are the service's alone: the
//! database file is created 0600 before SQLite opens it, whatever the umask (SQLite gives its
//! `-wal` and `-shm` the database file's mode), and an older file (or `-wal`/`-shm`) readable
//! by others is narrowed to 0600 at open, with a warning.

// Each file under `sql/` is compiled once per dialect, here and in the other backend module.
#![allow(clippy::duplicate_mod)]

use crate::StoreOptions;
use crate::sql::{DbResult as _, RecordedChange};
use crate::url::DatabaseUrl;
use cxauth_core::store::{ChangeBatch, RotateOutcome, Rotation, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The text of [`ROTATE_RETIRE`], a macro so that `ROTATE_WRITES` can `concat!` it.
macro_rules! rotate_retire {
    () => {
        "UPDATE refresh_tokens SET rotated_at = $3 WHERE session_id = $2 AND rotated_at IS NULL"
    };
}
/// The text of [`ROTATE_INSERT`] (see [`rotate_retire!`]).
macro_rules! rotate_insert {
    () => {
        "INSERT INTO refresh_tokens (digest, session_id, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4)"
    };
}
/// The text of [`ROTATE_EXTEND`] (see [`rotate_retire!`]).
macro_rules! rotate_extend {
    () => {
        "UPDATE sessions SET expires_at = $5 WHERE id = $2 AND expires_at < $4"
    };
}
/// A rotation's first write: retire every live token of the session ($2 session id, $3 now).
const ROTATE_RETIRE: &str = rotate_retire!();
/// Its second: store the successor ($1 its digest, $2, $3, $4 its expiry).
const ROTATE_INSERT: &str = rotate_insert!();
/// Its third: if the successor ($4 its expiry) would outlive the session ($2), move the
/// session's expiry to $5, a step later (see `Rotation::session_expires_at`); else write nothing.
const ROTATE_EXTEND: &str = rotate_extend!();

/// Creates the database file with mode 0600 if it does not exist (an existing one is narrowed
/// to 0600 instead), so that the umask never makes it readable by others.
fn create_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SqliteStore::FILE_MODE)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => narrow_to_owner(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                return Err(StoreError::Internal(format!(
                    "the directory {} does not exist: create it, or give a database path in an \
                     existing directory",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(StoreError::Internal(format!(
                    "cannot create the database file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Takes group and other permissions off an existing file, saying so; a file that cannot be
/// changed (another owner) is left as it is, with a warning.
fn narrow_to_owner(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(mode & 0o700 | SqliteStore::FILE_MODE),
        ) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{mode:o}"),
                "the database file was readable by others: narrowed to 0600"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "the database file is readable by others and could not be narrowed to 0600"
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// SQLite implementation of [`Store`](cxauth_core::store::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The turn to write. SQLite lets one writer in at a time; without this, the writers of this
    /// process that arrive together would all start `BEGIN IMMEDIATE` and the losers would sleep
    /// and retry in SQLite's busy handler, in no order, some for a second or more (issue 14
    /// measured refresh p99 at 1.2 s with 4+ concurrent writers). Waiting on a fair (FIFO) lock
    /// instead serves them in arrival order with no sleeping. Writers of other processes
    /// (`cxauth admin`) still meet the busy handler, which is rare.
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// Rotations waiting for the next group commit (see [`SqliteStore::rotate`]).
    pending_rotations: Arc<std::sync::Mutex<Vec<PendingRotation>>>,
    /// Where group commits run on a database file: a `rusqlite` connection on a thread of its
    /// own (`sqlite/writer.rs`), a fraction of sqlx's cost per rotation. `None` in memory,
    /// where a second connection would see a database of its own: there groups run on the
    /// pool's one connection through sqlx ([`commit_group`]).
    writer: Option<Arc<writer::RotationWriter>>,
    /// Copies the WAL into the database file in the background, off every commit's path
    /// (`sqlite/checkpoint.rs`); `None` in memory (no WAL).
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
    /// Answers the change-log polls that find nothing new without a query
    /// (`sqlite/quiet.rs`); `None` in memory, where another connection would see another
    /// database.
    quiet: Option<Arc<quiet::QuietLog>>,
}

/// How long a connection waits for another process's write lock before giving up (BUSY).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A rotation waiting to be committed with others, and where its outcome goes.
struct PendingRotation {
    rotation: Rotation,
    reply: tokio::sync::oneshot::Sender<Result<RotateOutcome, StoreError>>,
}

impl std::fmt::Debug for PendingRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRotation").finish_non_exhaustive()
    }
}

/// Most rotations one commit carries; more wait for the next.
const MAX_GROUP: usize = 64;

/// A write transaction that holds the process's turn to write until it commits or is dropped.
/// It dereferences to the connection, as a `Transaction` does, so the shared `sql/` code uses
/// it the same way on both backends.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(url: &DatabaseUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        let base = SqliteConnectOptions::new()
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full)
            // Sorts and temporary tables in memory, not in temporary files: a request never
            // opens a file, so it cannot fail when the process is out of descriptors.
            .pragma("temp_store", "memory");
        if let Some(path) = url.sqlite_path() {
            create_private(path)?;
        }
        let (connect, max_conns) = match url.sqlite_path() {
            Some(path) => (
                base.filename(path)
                    .journal_mode(SqliteJournalMode::Wal)
                    // No commit checkpoints (an fsync of the database file on a request's
                    // path): the checkpointer does it in the background.
                    .pragma("wal_autocheckpoint", "0"),
                options.max_connections,
            ),
            // One connection: each in-memory connection would otherwise be its own database.
            None => (base.in_memory(true), 1),
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_conns)
            // No minimum: with one, and no idle timeout or lifetime, sqlx opens a connection in
            // a maintenance task while `connect_with` opens another, two at once on a new file
            // whose switch to WAL then meets the other's lock ("database is locked" at start,
            // seen once in CI). The connections are all opened below, one after another.
            .min_connections(0)
            // Connections are kept once opened (a local file's connection never goes stale),
            // and all are opened at start, below.
            .idle_timeout(None)
            .max_lifetime(None)
            // sqlx pings every connection it hands out; a ping is a round trip to the
            // connection's worker thread and cannot fail for a local file, yet it doubled the
            // cost of each query (see docs/benchmarks-history.md, "Optimisations").
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .db()?;
        crate::migrations::SQLITE
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        // Every connection is opened now, one after another (opened together on a new file,
        // their switches to WAL would meet SQLite's lock), and kept: a request never opens the
        // database, which fails (SQLITE_CANTOPEN) when the process is out of descriptors, where
        // a flood of connections can put it (see the listener's shedding).
        let mut opened = Vec::with_capacity(max_conns as usize);
        for _ in 0..max_conns {
            opened.push(pool.acquire().await.db()?);
        }
        drop(opened);
        if let Some(path) = url.sqlite_path() {
            // The journal files exist now (WAL mode and the first connection made them).
            for suffix in ["-wal", "-shm"] {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                narrow_to_owner(Path::new(&name));
            }
        }
        let mut store = SqliteStore {
            pool,
            write_turn: Arc::new(tokio::sync::Mutex::new(())),
            pending_rotations: Arc::new(std::sync::Mutex::new(Vec::new())),
            writer: None,
            checkpointer: None,
            quiet: None,
        };
        if let Some(path) = url.sqlite_path() {
            // Opened after the migrations, on the schema they made.
            store.writer = Some(Arc::new(writer::RotationWriter::start(
                path,
                BUSY_TIMEOUT,
                store.local_key(),
            )?));
            store.checkpointer = Some(Arc::new(
                checkpoint::Checkpointer::start(path, BUSY_TIMEOUT, store.write_turn.clone())
                    .map_err(StoreError::Internal)?,
            ));
            store.quiet = Some(Arc::new(quiet::QuietLog::open(path)?));
        }
        Ok(store)
    }

    /// The permissions of the database's files: read and write for the owner only.
    pub const FILE_MODE: u32 = 0o600;

    /// A refresh-token rotation, committed together with the rotations that arrive while
    /// another commit is in flight (group commit): every refresh needs a durable commit (an
    /// fsync), and SQLite commits one transaction at a time, so one fsync for a group raises
    /// the rate from one rotation per fsync to many.
    ///
    /// Each caller queues its rotation and waits for the turn to write; whoever gets the turn
    /// takes every queued rotation, its own or not, and runs them in one transaction, each
    /// inside a savepoint (one failing rolls back only itself), in arrival order, so each sees
    /// the ones before it exactly as if they had run one after another: the conformance
    /// guarantees (one winner per token outside the grace window, reuse detection) hold
    /// unchanged. No outcome is answered before the commit that holds it, so a crash loses only
    /// rotations nobody was told about. The group runs on the rusqlite writer's thread (a
    /// database file) or in a task of its own (in memory), so a client that goes away
    /// mid-commit cannot cancel the others' rotations.
    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.pending_rotations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PendingRotation {
                rotation: r.clone(),
                reply,
            });
        let turn = self.write_turn.clone().lock_owned().await;
        let group: Vec<PendingRotation> = {
            let mut pending = self
                .pending_rotations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = pending.len().min(MAX_GROUP);
            pending.drain(..n).collect()
        };
        if group.is_empty() {
            // An earlier group took this rotation; its outcome is on its way.
            drop(turn);
        } else if let Some(writer) = &self.writer {
            // The writer thread commits the group and then releases the turn.
            writer.submit(group, turn);
        } else {
            let pool = self.pool.clone();
            let local = self.local_key();
            tokio::spawn(async move {
                commit_group(&pool, local, group).await;
                drop(turn);
            });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the rotation's group commit was abandoned".into(),
            ))
        })
    }

    /// A login's session or legacy token, remembered address (if any) and audit event in one
    /// commit on the writer thread (`sqlite/writer.rs`): one hand-off and one durable write
    /// instead of up to three transactions of 3–6 hand-offs each through sqlx. `None` in memory,
    /// where there is no writer thread and `create_login_session` (`create_legacy_login`)
    /// writes them one after the other. Like a rotation's group, the commit goes on if the
    /// caller goes away.
    async fn login_in_one_commit(
        &self,
        start: crate::sql::LoginStart<'_>,
        address: Option<&cxauth_core::store::RememberAddress>,
        audit: &cxauth_core::store::AuditEvent,
    ) -> Option<Result<(), StoreError>> {
        let writer = self.writer.as_ref()?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let turn = self.write_turn.clone().lock_owned().await;
        writer.submit_login(
            writer::PendingLogin {
                start: start.into_owned(),
                address: address.cloned(),
                audit: audit.clone(),
                reply,
            },
            turn,
        );
        Some(outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the login's commit was abandoned".into(),
            ))
        }))
    }

    /// This process's turn to write, for a single statement that writes outside a transaction:
    /// it waits in the same fair queue as the transactions rather than in SQLite's busy handler.
    async fn single_write(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.write_turn.clone().lock_owned().await
    }

    /// Waits for this process's turn to write (see [`SqliteStore::write_turn`]), then starts
    /// an immediate transaction.
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.write_turn.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db()?;
        Ok(WriteTx { tx, _turn: turn })
    }

    async fn lock_global(_: &mut SqliteConnection, _key: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_user(_: &mut SqliteConnection, _id: i64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Says `true` without looking: `BEGIN IMMEDIATE` already holds the database, and the
    /// rotation's own read finds out whether the token exists.
    async fn lock_session_of_refresh(
        _: &mut SqliteConnection,
        _digest: &[u8; 32],
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// The writes of a rotation as one call to the driver: SQLite runs the statements of a
    /// query in order, binding `$n` in each, so the three cost one round trip to the
    /// connection's worker thread instead of three ($1 successor digest, $2 session id, $3 now,
    /// $4 the successor's expiry, $5 the session's if it must move). The rusqlite writer runs the same three texts one by one
    /// ([`ROTATE_RETIRE`], [`ROTATE_INSERT`], [`ROTATE_EXTEND`]).
    pub(crate) const ROTATE_WRITES: &str = concat!(
        rotate_retire!(),
        "; ",
        rotate_insert!(),
        "; ",
        rotate_extend!()
    );

    async fn lock_throttle(_: &mut SqliteConnection, _key: &[u8; 32]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Readers poll the change log (no `NOTIFY` in SQLite); a poll that finds nothing new is
/// answered without a query while SQLite's data version stands still (`sqlite/quiet.rs`).
impl crate::sql::Watch for SqliteStore {
    fn quiet_changes(&self, after: i64) -> crate::sql::BeforeRead {
        use crate::sql::BeforeRead;
        let Some(quiet) = &self.quiet else {
            return BeforeRead::Ask(None);
        };
        let Some(version) = quiet.version() else {
            return BeforeRead::Ask(None);
        };
        match quiet.answer(version, after) {
            Some(batch) => BeforeRead::Known(batch),
            None => BeforeRead::Ask(Some(version)),
        }
    }

    fn read_changes(&self, mark: Option<i64>, after: i64, batch: &ChangeBatch) {
        if let (Some(quiet), Some(version)) = (&self.quiet, mark) {
            quiet.remember(version, after, batch);
        }
    }
}

// The store traits, one file per concern under `sql/`, compiled here for this dialect (see
// `crate::sql`).
type Backend = SqliteStore;
type Db = Sqlite;
type Conn = SqliteConnection;

#[path = "sql/accounts.rs"]
mod accounts;
#[path = "sql/agents.rs"]
mod agents;
#[path = "sql/api_tokens.rs"]
mod api_tokens;
#[path = "sql/audit.rs"]
mod audit;
#[path = "sql/changes.rs"]
mod changes;
#[path = "sql/housekeeping.rs"]
mod housekeeping;
#[path = "sql/keys.rs"]
mod keys;
#[path = "sql/legacy.rs"]
mod legacy;
#[path = "sql/meta.rs"]
mod meta;
#[path = "sql/ringex.rs"]
mod ringex;
#[path = "sql/sessions.rs"]
mod sessions;
#[path = "sql/throttle.rs"]
mod throttle;
#[path = "sql/users.rs"]
mod users;

/// Runs `group` in one transaction (each rotation in a savepoint), commits once, tells the
/// caches of this store (`local`) about the sessions that reuse ended, then answers every
/// rotation: its own outcome if the commit succeeded, the commit's error otherwise. The sqlx
/// path, for in-memory databases; a database file's groups run the same steps through
/// rusqlite (`sqlite/writer.rs`).
async fn commit_group(pool: &SqlitePool, local: usize, group: Vec<PendingRotation>) {
    let mut outcomes = Vec::with_capacity(group.len());
    let mut changes = Vec::new();
    let committed: Result<(), StoreError> = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.db()?;
        if let [single] = group.as_slice() {
            // Alone (the usual case when commits are quick): no savepoint round trips; an
            // error rolls the whole transaction back.
            let (outcome, change) = sessions::rotate_in(&mut tx, &single.rotation).await?;
            outcomes.push(Ok(outcome));
            changes.extend(change);
            return tx.commit().await.db();
        }
        for p in &group {
            sqlx::query("SAVEPOINT rotation")
                .execute(&mut *tx)
                .await
                .db()?;
            let outcome = sessions::rotate_in(&mut tx, &p.rotation).await;
            let end = if outcome.is_ok() {
                "RELEASE rotation"
            } else {
                "ROLLBACK TO rotation; RELEASE rotation"
            };
            sqlx::query(end).execute(&mut *tx).await.db()?;
            outcomes.push(outcome.map(|(outcome, change)| {
                changes.extend(change);
                outcome
            }));
        }
        tx.commit().await.db()
    }
    .await;
    answer_group(local, group, outcomes, changes, committed);
}

/// After a group's transaction, committed or not: records the group's size, tells this store's
/// caches (`local`) about the sessions that reuse ended, then answers every rotation: its own
/// outcome if the commit succeeded, the commit's error otherwise. Shared by both drivers' group
/// commits (sqlx here, rusqlite in `writer.rs`).
fn answer_group(
    local: usize,
    group: Vec<PendingRotation>,
    outcomes: Vec<Result<RotateOutcome, StoreError>>,
    changes: Vec<RecordedChange>,
    committed: Result<(), StoreError>,
) {
    metrics::histogram!("cxauth_refresh_group_size").record(group.len() as f64);
    // Committed or not, the caches forget the sessions concerned (forgetting is always safe).
    for change in changes {
        change.announce(local);
    }
    match committed {
        Ok(()) => {
            for (p, outcome) in group.into_iter().zip(outcomes) {
                // The caller may be gone (its client disconnected): nothing to tell.
                let _ = p.reply.send(outcome);
            }
        }
        // A lone rotation gets its own error as it is (a conflict stays a conflict); a group
        // whose commit failed tells each member the database is unavailable: none of it holds.
        Err(e) if group.len() == 1 => {
            if let Some(p) = group.into_iter().next() {
                let _ = p.reply.send(Err(e));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for p in group {
                let _ = p.reply.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
    }
}

/// Runs `work`, one job of one of the store's own threads (the writer, the checkpointer), and
/// says whether it panicked. A panic is logged as `what` and goes no further: the thread takes
/// its next job.
///
/// Why: each of these threads is the only one doing its work. If the writer's thread ended,
/// every refresh and login after it would fail until a restart; if a checkpoint thread ended,
/// the WAL would grow without bound and without a word. A panic there is a bug, and none is
/// known, but it must cost the jobs in hand, not the service. Every job leaves nothing behind
/// that the next one trusts: the writer rolls back what the job left open (see
/// `writer::RotationWriter::start`), SQLite keeps the WAL's state, and the checkpointer's
/// mutex ignores poisoning.
fn survive(what: &str, work: impl FnOnce()) -> bool {
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err();
    if panicked {
        tracing::error!("{what} panicked (a bug); the thread goes on with its next job");
    }
    panicked
}

mod checkpoint;
mod quiet;
mod writer;

#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;
