//! The SQLite backend: one file, WAL journal, every write in a `BEGIN IMMEDIATE` transaction.
//!
//! `BEGIN IMMEDIATE` takes the database's write lock up front, so two writers never both read
//! and then fail to upgrade (SQLite's deadlock-by-`SQLITE_BUSY`); the busy timeout queues them
//! instead. Because that lock already serialises every write transaction, the row and advisory
//! locks the PostgreSQL backend needs are no-ops here. `synchronous = FULL` makes each commit
//! durable before it is acknowledged.

use crate::StoreOptions;
use crate::url::DatabaseUrl;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::time::Duration;

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
            .map_err(map_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        Ok(SqliteStore { pool })
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
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

crate::sql::sql_store!(SqliteStore, Sqlite, SqliteConnection);
