//! The cxauth HTTP service.
//!
//! [`App::build`] opens the store, checks or creates the master key, loads the signing keys,
//! bootstraps an empty database, and assembles the router; [`serve`] runs it on a listener the
//! caller bound (port 0 in tests) with the connection limits of [`listener`]. The layering, from
//! the outside in: security headers, request context (id, log, JSON error bodies), panic
//! catcher, timeout, body limit, routes.

pub mod config;
pub mod context;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod params;
pub mod ringex;
pub mod routes;
pub mod security_headers;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use config::ServerConfig;
use cxauth_core::admin::{BootstrapOutcome, bootstrap};
use cxauth_core::clock::SharedClock;
use cxauth_core::crypto::{MasterKey, Secrets};
use cxauth_core::password::PasswordPool;
use cxauth_core::service::{Auth, AuthConfig, META_KEY_FINGERPRINT};
use cxauth_core::store::SharedStore;
use cxauth_core::throttle::{StoreThrottleTable, Throttle, ThrottleConfig};
use cxauth_store::DatabaseUrl;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The service.
    pub auth: Arc<Auth>,
    /// The clock (error timestamps).
    pub clock: SharedClock,
    /// Proxies whose `X-Forwarded-For` is believed (see [`routes::ClientAddr`]).
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Renders the process's metrics (see [`metrics`]).
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
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
    /// How long [`serve`] lets in-flight requests finish once told to stop.
    pub shutdown_timeout: Duration,
    /// How long audit events are kept (housekeeping deletes older ones).
    pub audit_retention: Duration,
    /// Header-read and keep-alive timeouts of [`serve`].
    pub header_read_timeout: Duration,
    /// See [`ServerConfig::keep_alive_timeout`].
    pub keep_alive_timeout: Duration,
    /// The connection cap of [`serve`]; `None`: derived from the descriptor limit.
    pub max_connections: Option<usize>,
}

/// Loads the master key, or creates it on a database that has never had one. A database that
/// was set up with a key is never given a new one: that would orphan everything sealed under
/// the old key, so the server refuses to start instead. Public so that `cxauth admin keys
/// rotate` finds the key by exactly the same rule as `cxauth serve`.
pub async fn master_key(
    config: &ServerConfig,
    store: &dyn cxauth_core::store::Store,
) -> Result<MasterKey, StartupError> {
    let path = config
        .master_key_file
        .clone()
        .or_else(|| config.database.default_key_file());
    let initialised = store.get_meta(META_KEY_FINGERPRINT).await?.is_some();
    let Some(path) = path else {
        if config.database.is_in_memory() {
            // Nothing outlives the process, so neither does its key.
            return MasterKey::generate().map_err(|e| StartupError::MasterKey(e.to_string()));
        }
        // A shared database: every instance needs the same key, so none may invent one.
        return Err(StartupError::MasterKey(format!(
            "the database {} is not a file, so there is no default place for the master key: \
             create one with `cxauth generate-master-key FILE` and give the same FILE to every \
             instance with CXAUTH_MASTER_KEY_FILE",
            config.database
        )));
    };
    if path.exists() {
        return MasterKey::load(&path).map_err(|e| StartupError::MasterKey(e.to_string()));
    }
    if !matches!(config.database, cxauth_store::DatabaseUrl::Sqlite { .. }) {
        // Instances of a shared database must all hold the same key: refuse to invent one.
        return Err(StartupError::MasterKey(format!(
            "the master key file {} does not exist; create it once with `cxauth \
             generate-master-key {}` and give the same file to every instance",
            path.display(),
            path.display()
        )));
    }
    if initialised {
        return Err(StartupError::MasterKey(format!(
            "the database {} was initialised with a master key, but the key file {} does not \
             exist; restore it or set CXAUTH_MASTER_KEY_FILE to its location (a new key would \
             make every stored token and signing key unreadable)",
            config.database,
            path.display()
        )));
    }
    let key = MasterKey::generate().map_err(|e| StartupError::MasterKey(e.to_string()))?;
    key.write_new(&path)
        .map_err(|e| StartupError::MasterKey(e.to_string()))?;
    tracing::info!(path = %path.display(), "created a new master key file");
    Ok(key)
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
        let key = master_key(config, store.as_ref()).await?;
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
            },
        )
        .await?;
        let auth = match ringex::resolver(config, clock.clone(), auth.emulator())
            .map_err(StartupError::Config)?
        {
            Some(resolver) => auth.with_ringex_resolver(resolver),
            None => auth,
        };
        let generated_admin_password = first_user(config, store.as_ref(), &clock).await?;
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
        let state = AppState {
            auth: Arc::new(auth),
            clock,
            trusted_proxies: config.trusted_proxies.clone().into(),
            metrics: metrics::handle().map_err(StartupError::Config)?,
        };
        Ok(App {
            router: router(state.clone(), config),
            state,
            generated_admin_password,
            shutdown_timeout: config.shutdown_timeout,
            audit_retention: config.audit_retention,
            header_read_timeout: config.header_read_timeout,
            keep_alive_timeout: config.keep_alive_timeout,
            max_connections: config.max_connections,
        })
    }
}

/// Makes sure somebody can log in (see docs/decisions.md, "Bootstrap"): an empty database gets
/// the account `Main`, its sub-account `Default` and the super user `admin`; a database with
/// accounts but no user gets `admin` as super user of its first main account; a database whose
/// users are all disabled is refused, with the command that enables one. Returns the password
/// to show once when one was generated. A bootstrap password given for a database that has
/// users already is reported as ignored.
async fn first_user(
    config: &ServerConfig,
    store: &dyn cxauth_core::store::Store,
    clock: &SharedClock,
) -> Result<Option<SecretString>, StartupError> {
    let database = &config.database;
    match bootstrap(
        store,
        &config.platform_id,
        config.bootstrap_admin_password.clone(),
        clock.now_ms(),
    )
    .await?
    {
        BootstrapOutcome::CreatedWithPassword(p) => return Ok(Some(p)),
        BootstrapOutcome::Created => {
            tracing::info!("empty database: created account Main and user admin");
            return Ok(None);
        }
        BootstrapOutcome::AlreadyInitialised => {}
    }
    let users = store.list_users().await?;
    if users.is_empty() {
        // Accounts but no user (made with `cxauth admin account create` before the first
        // start): without a user nobody could log in, so `admin` is made as on an empty
        // database, in the first main account.
        let (password, generated) = match config.bootstrap_admin_password.clone() {
            Some(p) => (p, false),
            None => (cxauth_core::admin::random_password()?, true),
        };
        let spec = cxauth_core::admin::UserSpec {
            username: cxauth_core::admin::BOOTSTRAP_USERNAME.into(),
            password: password.clone(),
            platform_id: config.platform_id.clone(),
            parent: None,
            grants: vec![cxauth_store::FIRST_MAIN_ACCOUNT_ID],
            roles: vec![cxauth_core::store::ROLE_SUPER_USER.into()],
            first_name: "Admin".into(),
            last_name: String::new(),
            rc_user_id: None,
        };
        match cxauth_core::admin::create_user(store, spec, clock.now_ms()).await {
            Ok(_) => {
                tracing::info!(
                    main_account = cxauth_store::FIRST_MAIN_ACCOUNT_ID,
                    "the database had accounts but no user: created user admin, super user of \
                     the first main account"
                );
                return Ok(generated.then_some(password));
            }
            // Another instance starting at the same moment made it.
            Err(cxauth_core::admin::AdminError::Store(
                cxauth_core::store::StoreError::Conflict(_),
            )) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    if !users.iter().any(|u| u.enabled) {
        let name = users
            .iter()
            .find(|u| {
                u.roles
                    .iter()
                    .any(|r| r == cxauth_core::store::ROLE_SUPER_USER)
            })
            .unwrap_or(&users[0])
            .username
            .clone();
        return Err(StartupError::NoLogin(format!(
            "every user of the database {database} is disabled, so nobody could log in: enable \
             one with `cxauth admin --database '{database}' user enable {name}` and start again"
        )));
    }
    if config.bootstrap_admin_password.is_some() {
        tracing::warn!(
            "CXAUTH_BOOTSTRAP_ADMIN_PASSWORD (or bootstrap_admin_password_file) was ignored: \
             the database {database} has users \
             already, and the bootstrap password only sets the password of the first admin of \
             an empty database. To change a password: `cxauth admin --database '{database}' \
             user set-password admin --password-stdin`"
        );
    }
    Ok(None)
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

/// The fixed parts of the OpenAPI document; its paths come from the handlers' `utoipa::path`
/// annotations as [`api_routes`] registers them, so the document and the router cannot drift.
/// The security schemes are the two headers admin endpoints read ([`routes::credential`]);
/// each admin operation lists both as alternatives, so Swagger UI's Authorize dialog offers
/// them and "Try it out" sends whichever was filled in. Auth endpoints list none: they ignore
/// both headers. The emulator's tag and schemes are added by [`api_routes`] only when it is on,
/// so the page shows no empty section.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "cxauth",
        description = "A self-hostable, wire-compatible RingCX (Engage Voice) authentication \
                       server. Admin endpoints are served under both /voice/api/v1 and /api/v1. \
                       To call them here, log in (POST /api/auth/login/admin), then give the \
                       answer's accessToken to Authorize as the bearer token."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Logins, refresh, logout, token exchange, public keys"),
        (name = "admin", description = "API tokens, accounts and users of the caller"),
        (name = "operations", description = "Health and readiness")
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` and `X-Auth-Token` security schemes to [`ApiDoc`].
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Authorization: Bearer with an access token (the accessToken of a login)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "X-Auth-Token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Token",
                "An API token, a legacy auth token or an access token",
            ))),
        );
    }
}

/// Adds the emulator's tag and its two credentials (the app's client id and secret as HTTP
/// Basic; a RingEX access token as bearer) to the document of a server that runs it.
fn document_emulator(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::openapi::tag::TagBuilder;
    doc.tags.get_or_insert_with(Vec::new).push(
        TagBuilder::new()
            .name("ringex-emulator")
            .description(Some(
                "The built-in RingEX emulator (development and tests only)",
            ))
            .build(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "ringex-client",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some("An emulator app's client id and secret"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "ringex-bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A RingEX access token issued by the emulator"))
                .build(),
        ),
    );
}

/// Every endpoint with its OpenAPI description: one registration makes both the route and its
/// entry in the document.
pub fn api_routes(config: &ServerConfig) -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    use utoipa_axum::routes;
    let admin = utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(routes::create_token, routes::list_tokens))
        .routes(routes!(routes::delete_token))
        .routes(routes!(routes::accounts))
        .routes(routes!(routes::users));
    let mut doc = ApiDoc::openapi();
    if config.ringex_emulator {
        document_emulator(&mut doc);
    }
    let mut api = utoipa_axum::router::OpenApiRouter::with_openapi(doc)
        .routes(routes!(routes::login))
        .routes(routes!(routes::ringex_exchange))
        .routes(routes!(routes::legacy_login))
        .routes(routes!(routes::refresh))
        .routes(routes!(routes::logout))
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::jwks))
        .nest("/voice/api/v1", admin.clone())
        .nest("/api/v1", admin);
    if config.ringex_emulator {
        api = api
            .routes(routes!(routes::ringex_emulator_token))
            .routes(routes!(routes::ringex_emulator_extension));
    }
    api
}

/// Operation ids must be unique in a document (Swagger UI keys its expanded sections and "Try
/// it out" state by them), but each admin handler is registered under both prefixes with the
/// handler's name as id: the short `/api/v1` copies get a `_api_v1` suffix.
fn unique_operation_ids(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/admin") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(id) = &mut op.operation_id {
                id.push_str("_api_v1");
            }
        }
    }
}

/// The routes of the contract, under both admin prefixes, plus `/openapi.json` and the API page
/// `/docs` (Swagger UI served from the binary: it works offline), with the middleware stack.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let (routes, mut api) = api_routes(config).split_for_parts();
    unique_operation_ids(&mut api);
    let routes = routes.merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", api));
    routes
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            state.clock.clone(),
            context::request_context,
        ))
        .layer(axum::middleware::from_fn(
            security_headers::security_headers,
        ))
        .with_state(state)
}

/// Housekeeping ticks ([`cxauth_core::service::KEY_RELOAD_INTERVAL`]) between two purges of
/// expired rows (the first tick purges too).
const PURGE_EVERY_TICKS: u64 = 10;

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for at most `shutdown_timeout`, and closes the database. Raises
/// the open file limit and enforces the connection limits of [`listener`] (header-read and
/// keep-alive timeouts, a connection cap that sheds the idlest). Also runs housekeeping
/// (purging expired rows and stale throttle entries).
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let auth = app.state.auth.clone();
    let clock = app.state.clock.clone();
    let audit_retention = app.audit_retention;
    let housekeeping = tokio::spawn(async move {
        // Keys every tick (a rotation reaches this instance within a minute); rows less often.
        let mut tick = tokio::time::interval(cxauth_core::service::KEY_RELOAD_INTERVAL);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = auth.reload_keys().await {
                tracing::warn!(error = %e, "reload of the signing keys failed");
            }
            match auth.retire_keys().await {
                Ok(kids) if !kids.is_empty() => tracing::info!(?kids, "retired old signing keys"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retiring old signing keys failed"),
            }
            ticks += 1;
            if ticks % PURGE_EVERY_TICKS != 1 {
                continue;
            }
            auth.throttle().purge();
            let now = clock.now_ms();
            match cxauth_core::admin::purge(
                auth.store().as_ref(),
                now,
                now.saturating_sub(cxauth_core::clock::duration_ms(audit_retention)),
                cxauth_core::admin::PURGE_BATCH,
            )
            .await
            {
                Ok(n) if n.total() > 0 => {
                    tracing::info!(removed = ?n, "purged expired sessions and tokens")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge of expired rows failed"),
            }
        }
    });
    // Connections are file descriptors: take all the process may have, and keep the cap below.
    let fd_limit = crate::listener::raise_fd_limit();
    let max_connections = app
        .max_connections
        .unwrap_or_else(|| crate::listener::default_max_connections(fd_limit.unwrap_or(1024)));
    if let Some(limit) = fd_limit
        && u64::try_from(max_connections).unwrap_or(u64::MAX)
            > limit.saturating_sub(crate::listener::FD_RESERVE)
    {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "the connection cap leaves fewer than {} descriptors for the database and files; \
             accept will fail before the cap is reached (idle connections are then shed)",
            crate::listener::FD_RESERVE
        );
    }
    tracing::info!(
        open_file_limit = ?fd_limit,
        max_connections,
        header_read_timeout = ?app.header_read_timeout,
        keep_alive_timeout = ?app.keep_alive_timeout,
        "connection limits"
    );
    let limits = crate::listener::ConnectionLimits {
        header_read_timeout: app.header_read_timeout,
        keep_alive_timeout: app.keep_alive_timeout,
        max_connections,
    };
    let result =
        crate::listener::run(listener, app.router, limits, shutdown, app.shutdown_timeout).await;
    housekeeping.abort();
    // Bounded too: a request cut off above may still hold a connection for a moment.
    if tokio::time::timeout(Duration::from_secs(5), app.state.auth.store().close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use after 5s; stopping without them");
    }
    result
}

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
