//! Which database a test runs on, and a fresh one of it.

use cxauth_store::DatabaseUrl;
use cxauth_store::testing::{Scratch, postgres_required, scratch_schema};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable that picks the backend: `sqlite` (the default) or `postgres`.
pub const BACKEND_VAR: &str = "CXAUTH_TEST_BACKEND";

/// Why the kit could not set something up.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// `CXAUTH_TEST_BACKEND` names no backend.
    #[error("{BACKEND_VAR}={0:?} names no backend (use `sqlite` or `postgres`)")]
    UnknownBackend(String),
    /// PostgreSQL was asked for but cannot be reached.
    #[error("PostgreSQL was selected but is not available: {0}")]
    PostgresUnavailable(String),
    /// A file-system step (temporary directory, master key) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The database URL the kit made was refused.
    #[error("database URL: {0}")]
    Url(#[from] cxauth_store::UrlError),
    /// PostgreSQL is required but unreachable, or refused a scratch schema.
    #[error("{0}")]
    Scratch(#[from] cxauth_store::testing::ScratchError),
    /// The master key could not be made.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The server did not start.
    #[error("the server did not start: {0}")]
    Startup(#[from] cxauth_server::StartupError),
    /// The SDK client could not be built.
    #[error("client: {0}")]
    Client(#[from] cxauth_client::Error),
}

/// A database backend the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema on the PostgreSQL server `CXAUTH_TEST_POSTGRES` names.
    Postgres,
}

impl Backend {
    /// The backend `CXAUTH_TEST_BACKEND` selects (SQLite when unset or empty).
    pub fn from_env() -> Result<Backend, KitError> {
        match std::env::var(BACKEND_VAR).unwrap_or_default().as_str() {
            "" | "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            other => Err(KitError::UnknownBackend(other.to_owned())),
        }
    }

    /// [`Backend::from_env`], asserting that the variable is valid.
    pub fn selected() -> Backend {
        Backend::from_env().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A fresh, empty database of one backend, and a temporary directory for its files: the SQLite
/// file and its key beside it, or the master key file PostgreSQL instances share. Clones share
/// the database (several instances on one database); the directory goes with the last clone.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    url: String,
    dir: Arc<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database on `backend`. PostgreSQL that is selected but unreachable is an error,
    /// never a skip.
    pub async fn fresh(backend: Backend) -> Result<TestDb, KitError> {
        let dir = tempfile::tempdir().map_err(|source| KitError::Io {
            what: "temporary directory",
            source,
        })?;
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("cxauth.db").display()),
            Backend::Postgres => {
                // The one place the kit reaches `cxauth_store::testing`.
                let url = match scratch_schema().await? {
                    Scratch::Ready(url) => url,
                    Scratch::Skip(why) => return Err(KitError::PostgresUnavailable(why)),
                };
                // A shared database has no default key file: every instance names the same one.
                cxauth_core::crypto::MasterKey::generate()
                    .and_then(|k| k.write_new(&dir.path().join("master.key")))
                    .map_err(|e| KitError::MasterKey(e.to_string()))?;
                url
            }
        };
        Ok(TestDb {
            backend,
            url,
            dir: Arc::new(dir),
        })
    }

    /// A fresh PostgreSQL database whatever the selected backend, or `None` (with the reason
    /// printed) where PostgreSQL is neither reachable nor required: for tests that are about
    /// PostgreSQL (several instances sharing one database, an outage of the database server).
    pub async fn postgres_or_skip() -> Option<TestDb> {
        match TestDb::fresh(Backend::Postgres).await {
            Ok(db) => Some(db),
            Err(KitError::PostgresUnavailable(why)) if !postgres_required() => {
                eprintln!("skipping: {why}");
                None
            }
            Err(e) => panic!("no PostgreSQL test database: {e}"),
        }
    }

    /// A fresh database on the selected backend, asserting that it can be had.
    pub async fn selected() -> TestDb {
        let backend = Backend::selected();
        TestDb::fresh(backend)
            .await
            .unwrap_or_else(|e| panic!("no test database on {backend}: {e}"))
    }

    /// [`Self::fresh`] for a synchronous test (the CLI suites): runs on a thread of its own with
    /// its own runtime, so it works inside and outside an async test.
    pub fn fresh_blocking(backend: Backend) -> Result<TestDb, KitError> {
        let made = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| KitError::Io {
                    what: "a runtime for the test database",
                    source,
                })?
                .block_on(TestDb::fresh(backend))
        })
        .join();
        match made {
            Ok(db) => db,
            Err(_) => Err(KitError::PostgresUnavailable(
                "the set-up thread panicked".into(),
            )),
        }
    }

    /// A fresh database on the selected backend for a synchronous test, asserting that it can be
    /// had.
    pub fn selected_blocking() -> TestDb {
        Self::on_blocking(Backend::selected())
    }

    /// A fresh database on `backend` for a synchronous test, asserting that it can be had.
    pub fn on_blocking(backend: Backend) -> TestDb {
        TestDb::fresh_blocking(backend)
            .unwrap_or_else(|e| panic!("no test database on {backend}: {e}"))
    }

    /// The database URL, as `--database` / `CXAUTH_DATABASE` take it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The parsed URL, for a [`ServerConfig`](cxauth_server::config::ServerConfig).
    pub fn database(&self) -> Result<DatabaseUrl, KitError> {
        Ok(DatabaseUrl::parse(&self.url)?)
    }

    /// The temporary directory the database's files live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The master key file to name explicitly: PostgreSQL's shared one, `None` on SQLite (the
    /// server keeps the key beside the database file).
    pub fn master_key_file(&self) -> Option<PathBuf> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(self.dir.path().join("master.key")),
        }
    }

    /// Where the master key is, on either backend.
    pub fn key_path(&self) -> PathBuf {
        match self.backend {
            Backend::Sqlite => self.dir.path().join("cxauth.db.key"),
            Backend::Postgres => self.dir.path().join("master.key"),
        }
    }

    /// The SQLite file, on SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| self.dir.path().join("cxauth.db"))
    }

    /// Runs a query that returns one integer (a `COUNT(*)`) on the database, as the store's own
    /// connections see it: for checks of stored rows that no endpoint shows.
    pub async fn count(&self, sql: &'static str) -> i64 {
        use sqlx::Connection as _;
        let counted = match self.backend {
            Backend::Sqlite => match sqlx::SqliteConnection::connect(&self.url).await {
                Ok(mut c) => sqlx::query_scalar(sql).fetch_one(&mut c).await,
                Err(e) => Err(e),
            },
            Backend::Postgres => match sqlx::PgConnection::connect(&self.url).await {
                Ok(mut c) => sqlx::query_scalar(sql).fetch_one(&mut c).await,
                Err(e) => Err(e),
            },
        };
        counted.unwrap_or_else(|e| panic!("{sql} on {}: {e}", self.backend))
    }

    /// The environment a `cxauth` child needs for this database: `CXAUTH_DATABASE` and, on
    /// PostgreSQL, `CXAUTH_MASTER_KEY_FILE`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("CXAUTH_DATABASE".to_owned(), self.url.clone())];
        if let Some(key) = self.master_key_file() {
            env.push((
                "CXAUTH_MASTER_KEY_FILE".to_owned(),
                key.display().to_string(),
            ));
        }
        env
    }
}
