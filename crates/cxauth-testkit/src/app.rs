//! The real server, in process, on port 0.

use crate::backend::{Backend, KitError, TestDb};
use cxauth_client::{Client, Session};
use cxauth_core::clock::ManualClock;
use cxauth_server::config::ServerConfig;
use cxauth_server::{App, AppState};
use secrecy::SecretString;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The bootstrap admin's password in every test app.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The platform id users are created on.
pub const PLATFORM: &str = "aws80";
/// How long a start waits at most for the server's first housekeeping pass.
const FIRST_HOUSEKEEPING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A running server with its database, clock and SDK client.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An SDK client for it.
    pub client: Client,
    /// The server's clock: advance it to travel in time.
    pub clock: Arc<ManualClock>,
    /// The server's state (the service and its store), for set-up and checks below HTTP.
    pub state: AppState,
    /// The database (and its directory) the server runs on.
    pub db: TestDb,
    /// The configuration it was started with.
    pub config: ServerConfig,
    /// Dropped (with the app) or sent: the server shuts down.
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The test configuration for `db`: port 0, the bootstrap admin, two hash workers, and the
/// master key PostgreSQL needs. The one place the kit builds a [`ServerConfig`].
pub fn config_for(db: &TestDb) -> Result<ServerConfig, KitError> {
    let mut c = ServerConfig::new(db.database()?);
    c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.bootstrap_admin_password = Some(SecretString::from(ADMIN_PASSWORD));
    c.hash_workers = 2;
    c.master_key_file = db.master_key_file();
    Ok(c)
}

impl TestApp {
    /// A server on a fresh database of the selected backend.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`Self::spawn`], with the configuration changed first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::spawn_on_with(Backend::selected(), tweak).await
    }

    /// A server on `backend`, whatever is selected: for tests that are about one backend.
    pub async fn spawn_on(backend: Backend) -> Self {
        Self::spawn_on_with(backend, |_| {}).await
    }

    /// [`Self::spawn_on`] with the configuration changed first.
    pub async fn spawn_on_with(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::spawn_on_tuned(backend, tweak, |_| {}).await
    }

    /// Like [`Self::spawn_with`], and the built [`App`] changed by `tune` before it serves: for
    /// tests of what the server's settings do not reach (housekeeping's schedule).
    pub async fn spawn_tuned(
        tweak: impl FnOnce(&mut ServerConfig),
        tune: impl FnOnce(&mut App),
    ) -> Self {
        Self::spawn_on_tuned(Backend::selected(), tweak, tune).await
    }

    /// A server on a fresh database of `backend`, its configuration changed by `tweak` and its
    /// [`App`] by `tune`, asserting that it starts.
    async fn spawn_on_tuned(
        backend: Backend,
        tweak: impl FnOnce(&mut ServerConfig),
        tune: impl FnOnce(&mut App),
    ) -> Self {
        let db = TestDb::fresh(backend)
            .await
            .unwrap_or_else(|e| panic!("no test database on {backend}: {e}"));
        let mut config =
            config_for(&db).unwrap_or_else(|e| panic!("test config on {backend}: {e}"));
        tweak(&mut config);
        Self::try_start_tuned(db, config, ManualClock::starting_now(), tune)
            .await
            .unwrap_or_else(|e| panic!("test server on {backend}: {e}"))
    }

    /// Starts a server on `db` with `config`, asserting that it starts.
    pub async fn start(db: TestDb, config: ServerConfig, clock: Arc<ManualClock>) -> Self {
        let backend = db.backend;
        Self::try_start(db, config, clock)
            .await
            .unwrap_or_else(|e| panic!("test server on {backend}: {e}"))
    }

    /// Starts a server on `db` with `config`.
    pub async fn try_start(
        db: TestDb,
        config: ServerConfig,
        clock: Arc<ManualClock>,
    ) -> Result<Self, KitError> {
        Self::try_start_tuned(db, config, clock, |_| {}).await
    }

    /// [`Self::try_start`], with the built [`App`] changed by `tune` before it serves. This and
    /// [`Self::stop`] are the one place the kit calls the server's start-up API.
    pub async fn try_start_tuned(
        db: TestDb,
        config: ServerConfig,
        clock: Arc<ManualClock>,
        tune: impl FnOnce(&mut App),
    ) -> Result<Self, KitError> {
        crate::logs::init();
        let mut app = App::build(&config, clock.clone()).await?;
        tune(&mut app);
        let (first_pass, first_pass_done) = oneshot::channel();
        app.first_housekeeping = Some(first_pass);
        let state = app.state.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| KitError::Io {
                what: "bind the test listener",
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| KitError::Io {
            what: "the test listener's address",
            source,
        })?;
        let base = format!("http://{addr}");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(cxauth_server::serve(listener, app, async {
            let _ = rx.await;
        }));
        // Tests start after housekeeping's first pass, not during it (it writes the API token
        // uses noted so far); the next pass is a minute away. The wait is bounded for servers
        // started on a database that does not answer; a server that failed ends it at once.
        let _ = tokio::time::timeout(FIRST_HOUSEKEEPING_WAIT, first_pass_done).await;
        Ok(TestApp {
            client: Client::new(&base)?,
            base,
            clock,
            state,
            db,
            config,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the server (graceful shutdown) and hands back its database, configuration and
    /// clock, to start it again. Asserts that it served and stopped cleanly.
    pub async fn stop(mut self) -> (TestDb, ServerConfig, Arc<ManualClock>) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the test server failed: {e}"),
                Err(e) => panic!("the test server task: {e}"),
            }
        }
        let TestApp {
            db, config, clock, ..
        } = self;
        (db, config, clock)
    }

    /// The backend this server runs on.
    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `host:port`, for raw TCP.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The master key file this server reads: the one named in its configuration (every
    /// PostgreSQL app names one), else the one beside its SQLite file.
    pub fn master_key_file(&self) -> std::path::PathBuf {
        self.config
            .master_key_file
            .clone()
            .or_else(|| self.config.database.default_key_file())
            .expect("a test server always has a master key file")
    }

    /// Logs the bootstrap admin in through the SDK.
    pub async fn login_admin(&self) -> Session {
        self.client
            .login("admin", ADMIN_PASSWORD, PLATFORM)
            .await
            .expect("admin login")
    }

    /// Logs in a user made by [`Self::user`] (password `USERNAME-pw`).
    pub async fn login(&self, username: &str) -> Session {
        self.client
            .login(username, &format!("{username}-pw"), PLATFORM)
            .await
            .expect("login")
    }

    /// Creates a user through the same code path as `cxauth admin user create`.
    pub async fn create_user(
        &self,
        username: &str,
        parent: Option<&str>,
        grants: &[i64],
        roles: &[&str],
    ) -> i64 {
        let mut b = self.user(username).grants(grants).roles(roles);
        if let Some(p) = parent {
            b = b.parent(p);
        }
        b.create().await
    }

    /// The whole audit trail, oldest first, read from the store (the server's own checks of
    /// what it recorded, below HTTP).
    pub async fn audit_trail(&self) -> Vec<cxauth_core::store::AuditEvent> {
        self.state
            .auth
            .store()
            .audit_events(&cxauth_core::store::AuditFilter::default())
            .await
            .expect("the audit trail")
    }

    /// Like [`Self::create_user`], with a RingEX user id.
    pub async fn create_rc_user(&self, username: &str, grants: &[i64], rc_user_id: i64) -> i64 {
        self.user(username)
            .grants(grants)
            .rc_user_id(rc_user_id)
            .create()
            .await
    }
}
