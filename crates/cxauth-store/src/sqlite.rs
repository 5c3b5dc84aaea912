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
use crate::sql::DbResult as _;
use crate::url::DatabaseUrl;
use cxauth_core::store::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// SQLite implementation of [`Store`](cxauth_core::store::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(url: &DatabaseUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        let base = SqliteConnectOptions::new()
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .synchronous(SqliteSynchronous::Full);
        if let Some(path) = url.sqlite_path() {
            create_private(path)?;
        }
        let (connect, max_conns) = match url.sqlite_path() {
            Some(path) => (
                base.filename(path).journal_mode(SqliteJournalMode::Wal),
                options.max_connections,
            ),
            // One connection: each in-memory connection would otherwise be its own database.
            None => (base.in_memory(true), 1),
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_conns)
            .min_connections(1)
            // sqlx pings every connection it hands out; a ping is a round trip to the
            // connection's worker thread and cannot fail for a local file, yet it doubled the
            // cost of each query (see BENCHMARKS.md).
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .db()?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        if let Some(path) = url.sqlite_path() {
            // The journal files exist now (WAL mode and the first connection made them).
            for suffix in ["-wal", "-shm"] {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                narrow_to_owner(Path::new(&name));
            }
        }
        Ok(SqliteStore { pool })
    }

    /// The permissions of the database's files: read and write for the owner only.
    pub const FILE_MODE: u32 = 0o600;

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.db()
    }

    async fn lock_global(_: &mut SqliteConnection, _key: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_user(_: &mut SqliteConnection, _id: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_session(_: &mut SqliteConnection, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_throttle(_: &mut SqliteConnection, _key: &[u8; 32]) -> Result<(), StoreError> {
        Ok(())
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
