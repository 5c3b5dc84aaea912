//! Start-up, as a sequence: [`App::build`] opens the store, checks or creates the master key,
//! applies the seed, starts the service and bootstraps an empty database, and assembles the
//! router; [`serve`] runs it on a listener the caller bound (port 0 in tests) with the
//! connection limits of [`crate::listener`] and housekeeping in the background, until told to
//! stop.

use crate::config::{self, ServerConfig};
use crate::{bootstrap, housekeeping, listener, master_key, metrics, ringex, routes};
use axum::Router;
use cxauth_core::clock::SharedClock;
use cxauth_core::crypto::Secrets;
use cxauth_core::password::PasswordPool;
use cxauth_core::service::{Auth, AuthConfig, FlushPace};
use cxauth_core::store::SharedStore;
use cxauth_core::throttle::{StoreThrottleTable, Throttle, ThrottleConfig};
use cxauth_store::DatabaseUrl;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What handlers share, behind one pointer. axum copies the state for every request (the
/// matched route's handler is cloned, and each `State` extractor clones again): one reference
/// count per copy, rather than one per field.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// Wraps what handlers share.
    pub fn new(shared: SharedState) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct SharedState {
    /// The service.
    pub auth: Arc<Auth>,
    /// The clock (error timestamps).
    pub clock: SharedClock,
    /// Proxies whose `X-Forwarded-For` is believed (see [`crate::extract::ClientAddr`]).
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Renders the process's metrics (see [`metrics`]); `None` with metrics off, when no
    /// recorder is installed and nothing is recorded.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Why the server could not start. Each message tells the operator what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad settings.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] cxauth_store::OpenError),
    /// The master key is missing, unreadable or wrong.
    #[error("{0}")]
    MasterKey(String),
    /// The service could not start.
    #[error(transparent)]
    Service(#[from] cxauth_core::service::StartError),
    /// Bootstrap failed.
    #[error("could not create the first user: {0}")]
    Bootstrap(#[from] cxauth_core::admin::AdminError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] cxauth_core::store::StoreError),
    /// The seed file could not be applied.
    #[error("cannot apply the seed: {0}")]
    Seed(cxauth_core::admin::AdminError),
    /// The database has users, but none could log in: serving it would help nobody.
    #[error("{0}")]
    NoLogin(String),
}

/// A built, not yet serving, application.
pub struct App {
    /// Shared state (tests reach the service through it).
    pub state: AppState,
    /// The router.
    pub router: Router,
    /// The random admin password of a first start without `CXAUTH_BOOTSTRAP_ADMIN_PASSWORD`,
    /// to be shown once by the caller.
    pub generated_admin_password: Option<SecretString>,
    /// How long [`serve`] lets in-flight requests finish once told to stop, and then how long
    /// it gives the write of the API token last uses.
    pub shutdown_timeout: Duration,
    /// How long audit events are kept (housekeeping deletes older ones).
    pub audit_retention: Duration,
    /// Header-read and keep-alive timeouts of [`serve`].
    pub header_read_timeout: Duration,
    /// See [`ServerConfig::keep_alive_timeout`].
    pub keep_alive_timeout: Duration,
    /// The connection cap of [`serve`]; `None`: derived from the descriptor limit.
    pub max_connections: Option<usize>,
    /// Told when [`serve`]'s housekeeping has finished its first pass (which runs at once).
    /// `None` from [`App::build`]. The test kit sets it and waits, so that a test starts after
    /// that pass and not during it: the pass writes the API token uses noted so far, and a
    /// test that counts them would otherwise race it.
    pub first_housekeeping: Option<tokio::sync::oneshot::Sender<()>>,
    /// When [`serve`]'s housekeeping passes come: [`housekeeping::Schedule::default`] from
    /// [`App::build`], which a server keeps; tests shorten it.
    pub housekeeping: housekeeping::Schedule,
}

impl App {
    /// Builds the application: see the crate documentation.
    pub async fn build(config: &ServerConfig, clock: SharedClock) -> Result<App, StartupError> {
        config.validate().map_err(StartupError::Config)?;
        let store = cxauth_store::open_with(
            &config.database,
            &cxauth_store::StoreOptions {
                acquire_timeout: config.database_timeout,
                ..cxauth_store::StoreOptions::default()
            },
        )
        .await?;
        let key = master_key::load_or_create(config, store.as_ref()).await?;
        let secrets = Secrets::derive(&key);
        drop(key);
        if let Some(seed) = &config.seed {
            let report = cxauth_core::admin::apply_seed(
                store.as_ref(),
                &secrets,
                seed,
                &config.platform_id,
                clock.now_ms(),
            )
            .await
            .map_err(StartupError::Seed)?;
            tracing::info!(
                accounts_created = report.accounts_created,
                users_created = report.users_created,
                api_tokens_created = report.api_tokens_created,
                agents_created = report.agents_created,
                unchanged = report.unchanged,
                "applied the seed"
            );
        }
        let passwords = PasswordPool::new(config.hash_workers, config.hash_queue)
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let auth = Auth::start(
            store.clone(),
            clock.clone(),
            secrets,
            passwords,
            throttle(config, &store, clock.clone()),
            AuthConfig {
                issuer: "cxauth".into(),
                access_token_ttl: config.access_token_ttl,
                refresh_token_ttl: config.refresh_token_ttl,
                refresh_grace: config.refresh_grace,
                max_sessions_per_user: config.max_sessions_per_user,
                api_token_cap: config.api_token_cap,
                ringex_emulator_access_ttl: config.ringex_emulator_access_ttl,
                ringex_emulator_refresh_ttl: config.ringex_emulator_refresh_ttl,
                credential_cache_staleness: config.credential_cache_staleness,
                credential_cache_entries: config.credential_cache_entries,
            },
        )
        .await?;
        let auth = match ringex::resolver(config, clock.clone(), auth.emulator())
            .map_err(StartupError::Config)?
        {
            Some(resolver) => auth.with_ringex_resolver(resolver),
            None => auth,
        };
        let generated_admin_password =
            bootstrap::first_user(config, store.as_ref(), &clock).await?;
        if config.ringex_emulator {
            tracing::warn!(
                "THE BUILT-IN RINGEX EMULATOR IS ON: this server issues RingEX tokens itself \
                 (/restapi/oauth/token) and the token exchange trusts them. For development and \
                 tests only; never turn it on in production"
            );
        }
        match &config.ringex_server {
            Some(url) => {
                tracing::info!(
                    ringex_server = %config::redact_url(url),
                    "RingEX token exchange asks this server"
                )
            }
            None if !config.ringex_emulator => tracing::info!(
                "no RingEX server configured: the RingEX token exchange \
                 (/api/auth/login/rc/accesstoken) answers 501 ringex.not.configured; to enable \
                 it, start with --ringex-server URL (CXAUTH_RINGEX_SERVER), e.g. \
                 --ringex-server https://platform.ringcentral.com"
            ),
            None => {}
        }
        let state = AppState::new(SharedState {
            auth: Arc::new(auth),
            clock,
            trusted_proxies: config.trusted_proxies.clone().into(),
            metrics: match config.metrics_listen {
                Some(_) => Some(metrics::handle().map_err(StartupError::Config)?),
                None => None,
            },
        });
        Ok(App {
            router: routes::router(state.clone(), config),
            state,
            generated_admin_password,
            shutdown_timeout: config.shutdown_timeout,
            audit_retention: config.audit_retention,
            header_read_timeout: config.header_read_timeout,
            keep_alive_timeout: config.keep_alive_timeout,
            max_connections: config.max_connections,
            first_housekeeping: None,
            housekeeping: housekeeping::Schedule::default(),
        })
    }
}

/// The login throttle `config` asks for: its budgets in the database where several instances
/// may share it (PostgreSQL), in memory otherwise (SQLite: one machine).
fn throttle(config: &ServerConfig, store: &SharedStore, clock: SharedClock) -> Throttle {
    let throttle_config = ThrottleConfig {
        in_flight_per_source: config.login_share(),
        successes_per_minute: config.logins_per_user_per_minute,
        ..ThrottleConfig::default()
    };
    match config.database {
        DatabaseUrl::Postgres { .. } => Throttle::new(
            clock,
            throttle_config,
            Arc::new(StoreThrottleTable(store.clone())),
        ),
        DatabaseUrl::Sqlite { .. } => Throttle::in_memory(clock, throttle_config),
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for at most `shutdown_timeout`, writes the API token last uses it
/// holds (for at most `shutdown_timeout` again), and closes the database. Raises
/// the open file limit and enforces the connection limits of [`listener`] (header-read and
/// keep-alive timeouts, a connection cap that sheds the idlest). Also runs housekeeping
/// (purging expired rows and stale throttle entries) and the follower of the credential change
/// log that keeps the credential cache coherent.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let housekeeping = housekeeping::spawn(
        app.state.auth.clone(),
        app.state.clock.clone(),
        app.audit_retention,
        app.housekeeping,
        app.first_housekeeping,
    );
    // Credential changes made elsewhere reach this instance's cache through the change log.
    let follower = tokio::spawn(
        app.state
            .auth
            .credential_cache()
            .clone()
            .follow(app.state.auth.store().clone(), app.state.clock.clone()),
    );
    // Connections are file descriptors: take all the process may have, and keep the cap below.
    let fd_limit = listener::raise_fd_limit();
    let max_connections = app
        .max_connections
        .unwrap_or_else(|| listener::default_max_connections(fd_limit.unwrap_or(1024)));
    if let Some(limit) = fd_limit
        && u64::try_from(max_connections).unwrap_or(u64::MAX)
            > limit.saturating_sub(listener::FD_RESERVE)
    {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "the connection cap leaves fewer than {} descriptors for the database and files; \
             accept will fail before the cap is reached (idle connections are then shed)",
            listener::FD_RESERVE
        );
    }
    tracing::info!(
        open_file_limit = ?fd_limit,
        max_connections,
        header_read_timeout = ?app.header_read_timeout,
        keep_alive_timeout = ?app.keep_alive_timeout,
        "connection limits"
    );
    let limits = listener::ConnectionLimits {
        header_read_timeout: app.header_read_timeout,
        keep_alive_timeout: app.keep_alive_timeout,
        max_connections,
    };
    let result = listener::run(listener, app.router, limits, shutdown, app.shutdown_timeout).await;
    housekeeping.abort();
    follower.abort();
    // Awaited, so that a minute's write cut off here has put back the uses it had not yet
    // written (`FlushPace`) before the write below takes them.
    let _ = housekeeping.await;
    // A clean stop writes the API token uses noted since the last tick (a crash loses them),
    // within the bound requests in flight had: up to `MAX_NOTED` tokens' uses must fit in it.
    // 2 s was too short on a slower host, where 100,000 tokens' uses took 1.9-2.0 s alone
    // and ran out of it once (docs/decisions.md, "Last uses are written in row id order").
    let flush_started = std::time::Instant::now();
    match tokio::time::timeout(
        app.shutdown_timeout.max(MIN_STOP_WRITE),
        app.state.auth.flush_api_token_uses(FlushPace::Full),
    )
    .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(written)) => tracing::info!(
            written,
            took_ms = flush_started.elapsed().as_millis() as u64,
            "API token last uses written at stop"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "writing API token last uses at stop failed"),
        Err(_) => tracing::warn!("writing API token last uses at stop timed out"),
    }
    // Bounded too: a request cut off above may still hold a connection for a moment.
    if tokio::time::timeout(Duration::from_secs(5), app.state.auth.store().close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use after 5s; stopping without them");
    }
    result
}

/// The least a clean stop gives the write of the API token last uses, whatever
/// `shutdown_timeout` says: `--shutdown-timeout 0s` means "do not wait for requests in flight",
/// not "lose the last uses" (2 s was the whole bound before it followed the setting).
const MIN_STOP_WRITE: Duration = Duration::from_secs(2);

/// Prints the generated admin password once, to stderr, outside the log. `database_flag` is
/// the `--database …` option naming the database it was made in, so the printed command to
/// change it acts on that database wherever it is run from.
pub fn announce_admin_password(password: &SecretString, database_flag: &str) {
    eprintln!(
        "cxauth: created user \"admin\" with password: {}\n\
         cxauth: this password is shown only once; change it with \
         `cxauth admin {database_flag} user set-password admin --password-stdin`",
        password.expose_secret()
    );
}
