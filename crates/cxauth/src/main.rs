//! `cxauth`: run the server, administer its database, make master keys, and use a server (cxauth
//! or the real RingCX) as a user: log in, API tokens, accounts, users.

mod admin;
mod config_file;
mod profile;
mod user_cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cxauth_core::clock::SystemClock;
use cxauth_core::crypto::MasterKey;
use cxauth_server::config::{
    ListenOrOff, MaxConnections, ServerConfig, parse_duration, parse_listen, parse_listen_or_off,
    parse_max_connections, redact_url,
};
use cxauth_store::DatabaseUrl;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the command failed (the reason is printed on stderr, in one line)
  2  the command line is wrong
  3  not logged in, or the session ended: run `cxauth login` (or the API token was refused)
  4  the server could not be reached

Environment of the user commands (login, logout, whoami, token, accounts, users):
  CXAUTH_SERVER     server URL (as --server)
  CXAUTH_PROFILE    saved session to use (as --profile, default \"default\")
  CXAUTH_API_TOKEN  use this API token (X-Auth-Token) instead of a saved session
Sessions are saved in $XDG_CONFIG_HOME/cxauth/profiles/NAME.json (else
~/.config/cxauth/profiles/NAME.json), mode 0600, and refreshed as needed.

Logging of `serve` goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change its level.";

/// cxauth: a self-hostable RingCX (Engage Voice) authentication server, and a command-line client
/// of it and of the real RingCX.
#[derive(Debug, Parser)]
#[command(name = "cxauth", version, after_help = AFTER_HELP)]
struct Cli {
    /// `--server`, `--profile`, `--output`: global, so accepted before or after the subcommand.
    #[command(flatten)]
    global: user_cli::Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    ///
    /// On first start with an empty database it creates the main account "Main" with the
    /// sub-account "Default" and the super user "admin", whose password is taken from
    /// CXAUTH_BOOTSTRAP_ADMIN_PASSWORD or generated and printed once on stderr. It also creates
    /// the master key file (mode 0600) beside an SQLite database unless CXAUTH_MASTER_KEY_FILE
    /// names one. With PostgreSQL the key file must exist (`cxauth generate-master-key`) and be
    /// the same for every instance.
    Serve(ServeArgs),
    /// Check a configuration: `cxauth config check [--config FILE] [serve flags]`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work directly on the database: accounts and users. Safe while the server runs.
    ///
    /// Never creates a database, except `cxauth admin init`: without --database or
    /// CXAUTH_DATABASE, ./cxauth.db must exist.
    Admin(admin::AdminArgs),
    /// Write a new master key file (mode 0600). Never overwrites an existing file.
    ///
    /// Give the same key file to every instance that shares a database, before their first
    /// start, with CXAUTH_MASTER_KEY_FILE.
    GenerateMasterKey {
        /// Where to write the key.
        file: PathBuf,
    },
    #[command(flatten)]
    User(user_cli::UserCommand),
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// E.g. `cxauth completions bash > ~/.local/share/bash-completion/completions/cxauth`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration `cxauth serve` would run with (flags, CXAUTH_* variables,
    /// --config file, defaults) and print it, secrets redacted, as TOML.
    Check(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML file with any of these settings (keys as the long flags, `_` for `-`; secrets also
    /// as `database_file` and `bootstrap_admin_password_file`). Flags and CXAUTH_* variables
    /// take precedence over it; see cxauth.example.toml.
    #[arg(long, env = "CXAUTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address and port to listen on: HOST:PORT (127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080,
    /// localhost:8080) or a port alone (8080 or :8080, on 127.0.0.1). Port 0 picks a free port.
    #[arg(long, env = "CXAUTH_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Not an option: says to use --listen (clap would suggest --platform-id for --port).
    #[arg(long, hide = true, value_name = "PORT", value_parser = no_port)]
    port: Option<String>,
    /// Not an option: says to use --listen.
    #[arg(long, hide = true, value_name = "HOST", value_parser = no_host)]
    host: Option<String>,
    /// Database: sqlite://PATH (created if missing), a plain file path, `memory` (nothing on
    /// disk, gone when the server stops; also sqlite::memory:), or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE for several instances on one database.
    #[arg(long, env = "CXAUTH_DATABASE", default_value = "sqlite://cxauth.db")]
    database: String,
    /// Accounts, users (with passwords, roles, grants, parents) and fixed API tokens to create
    /// at start where missing, from a TOML or JSON file (by its extension); running it again
    /// changes nothing. See examples/seed.toml.
    #[arg(long, env = "CXAUTH_SEED", value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Platform id of this deployment: the prefix of API tokens and the platform of "admin".
    #[arg(long, env = "CXAUTH_PLATFORM_ID", default_value = "aws80")]
    platform_id: String,
    /// Lifetime of access tokens (e.g. 300ms, 2s, 5m, 7d).
    #[arg(long, env = "CXAUTH_ACCESS_TOKEN_TTL", default_value = "5m", value_parser = parse_duration)]
    access_token_ttl: Duration,
    /// Lifetime of each refresh token; must be longer than the access token lifetime.
    #[arg(long, env = "CXAUTH_REFRESH_TOKEN_TTL", default_value = "7d", value_parser = parse_duration)]
    refresh_token_ttl: Duration,
    /// How long a just-rotated refresh token may still be used (a retry after a lost response);
    /// later use counts as reuse and ends the session.
    #[arg(long, env = "CXAUTH_REFRESH_GRACE", default_value = "30s", value_parser = parse_duration)]
    refresh_grace: Duration,
    /// Master key file [default: DATABASE.key beside an SQLite database file].
    #[arg(long, env = "CXAUTH_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Reverse proxy address whose X-Forwarded-For header names the client (for login
    /// throttling); repeat, or comma-separate in the variable. Without it the header is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "CXAUTH_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP"
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Longest a request may take before it is answered 503.
    #[arg(long, env = "CXAUTH_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Longest wait for a database connection before a request is answered 503 (must be
    /// shorter than the request timeout).
    #[arg(long, env = "CXAUTH_DATABASE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    database_timeout: Duration,
    /// RingEX (RingCentral) server the token exchange asks who a RingEX token belongs to, e.g.
    /// https://platform.ringcentral.com. Unset: the exchange trusts the emulator if it is on,
    /// and answers 503 otherwise.
    #[arg(long, env = "CXAUTH_RINGEX_SERVER", value_name = "URL")]
    ringex_server: Option<url::Url>,
    /// Also serve a built-in RingEX emulator (/restapi/oauth/token and the extension endpoint)
    /// whose tokens the exchange trusts. For offline development and tests only; off by default.
    #[arg(long, env = "CXAUTH_RINGEX_EMULATOR")]
    ringex_emulator: bool,
    /// How long a positive answer of the RingEX server is reused for the same token (0s: never).
    #[arg(long, env = "CXAUTH_RINGEX_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    ringex_cache_ttl: Duration,
    /// Longest wait for the RingEX server before the exchange answers 503.
    #[arg(long, env = "CXAUTH_RINGEX_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    ringex_timeout: Duration,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish before their
    /// connections are closed anyway.
    #[arg(long, env = "CXAUTH_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// How long audit events are kept; older ones are deleted in the background.
    #[arg(long, env = "CXAUTH_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    audit_retention: Duration,
    /// Address and port of the Prometheus metrics (`/metrics`), apart from the API so they are
    /// not public; `off` to serve none.
    #[arg(long, env = "CXAUTH_METRICS_LISTEN", default_value = "127.0.0.1:9090", value_parser = parse_listen_or_off)]
    metrics_listen: ListenOrOff,
    /// Most live sessions per user: a new login ends the oldest beyond it (0: no limit).
    #[arg(long, env = "CXAUTH_MAX_SESSIONS_PER_USER", default_value_t = 100)]
    max_sessions_per_user: u32,
    /// Successful logins allowed per user and minute on each instance (0: no limit); beyond it
    /// 429 with Retry-After.
    #[arg(long, env = "CXAUTH_LOGINS_PER_USER_PER_MINUTE", default_value_t = 30)]
    logins_per_user_per_minute: u32,
    /// Most password checks one username or one client address may have running or waiting at
    /// once (its share of the password pool; beyond it 429). 0: an eighth of the pool, at least 2.
    #[arg(long, env = "CXAUTH_LOGINS_IN_FLIGHT_PER_SOURCE", default_value_t = 0)]
    logins_in_flight_per_source: u32,
    /// Most API tokens one user may hold; creating one more answers 409
    /// api.token.limit.exceeded until the user deletes one.
    #[arg(long, env = "CXAUTH_API_TOKEN_CAP", default_value_t = cxauth_core::service::DEFAULT_API_TOKEN_CAP, value_parser = clap::value_parser!(u64).range(1..))]
    api_token_cap: u64,
    /// Longest a client may take to send a request's headers (from connecting, or from the
    /// first byte of a later request on a kept-alive connection); then it is disconnected.
    #[arg(long, env = "CXAUTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// How long a kept-alive connection may wait idle for its next request.
    #[arg(long, env = "CXAUTH_KEEP_ALIVE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    keep_alive_timeout: Duration,
    /// Most client connections held at once; at the cap the connection idle longest (or
    /// slowest to send its headers) is closed for the new one. `auto`: the open file limit
    /// (raised to its hard limit at start) less 128 for the database and files.
    #[arg(long, env = "CXAUTH_MAX_CONNECTIONS", default_value = "auto", value_parser = parse_max_connections)]
    max_connections: MaxConnections,
}

/// The value parser of the hidden `--port`: always an error that says what to write.
fn no_port(port: &str) -> Result<String, String> {
    Err(format!(
        "there is no --port: use --listen 127.0.0.1:{port} (or --listen {port})"
    ))
}

/// The value parser of the hidden `--host`: always an error that says what to write.
fn no_host(host: &str) -> Result<String, String> {
    Err(format!(
        "there is no --host: use --listen {host}:8080 (address and port together)"
    ))
}

/// Reads a seed file: TOML, or JSON when its name ends in `.json`.
fn load_seed(path: &std::path::Path) -> anyhow::Result<cxauth_core::admin::Seed> {
    use figment::providers::Format as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the seed file {}", path.display()))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    } else {
        figment::Figment::from(figment::providers::Toml::string(&text))
            .extract()
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), config_file::describe(&e)))
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The configuration of `serve` from flags, variables, the `--config` file and defaults.
fn effective_config(mut args: ServeArgs, m: &clap::ArgMatches) -> anyhow::Result<ServerConfig> {
    let mut file_password = None;
    if let Some(path) = args.config.clone() {
        let file = config_file::load(&path)?;
        file_password = config_file::apply(&mut args, file, m, &path)?;
    }
    let database = DatabaseUrl::parse(&args.database)?;
    let mut config = ServerConfig::new(database);
    if let Some(path) = &args.seed {
        config.seed = Some(Arc::new(load_seed(path)?));
    }
    config.listen = args.listen;
    config.platform_id = args.platform_id;
    config.access_token_ttl = args.access_token_ttl;
    config.refresh_token_ttl = args.refresh_token_ttl;
    config.refresh_grace = args.refresh_grace;
    config.master_key_file = args.master_key_file;
    config.request_timeout = args.request_timeout;
    config.trusted_proxies = args.trusted_proxies;
    config.database_timeout = args.database_timeout;
    config.ringex_server = args.ringex_server;
    config.ringex_emulator = args.ringex_emulator;
    config.ringex_cache_ttl = args.ringex_cache_ttl;
    config.ringex_timeout = args.ringex_timeout;
    config.shutdown_timeout = args.shutdown_timeout;
    config.audit_retention = args.audit_retention;
    config.metrics_listen = args.metrics_listen.0;
    config.max_sessions_per_user = args.max_sessions_per_user;
    config.logins_per_user_per_minute = args.logins_per_user_per_minute;
    config.logins_in_flight_per_source = args.logins_in_flight_per_source;
    config.api_token_cap = args.api_token_cap;
    config.header_read_timeout = args.header_read_timeout;
    config.keep_alive_timeout = args.keep_alive_timeout;
    config.max_connections = args.max_connections.0;
    config.bootstrap_admin_password = std::env::var("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(SecretString::from)
        .or(file_password);
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(config)
}

/// A duration in the largest whole unit (`90d`, `5m`, `300ms`), as written in configurations.
fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// `cxauth config check`: the effective configuration as TOML, secrets redacted.
fn config_check(args: ServeArgs, m: &clap::ArgMatches) -> anyhow::Result<()> {
    let c = effective_config(args, m)?;
    let d = |d: Duration| format!("{:?}", short_duration(d));
    // Unset settings are printed as comments, so the output stays a valid configuration file.
    let opt = |key: &str, o: Option<String>| match o {
        Some(v) => format!("{key} = {v:?}"),
        None => format!("# {key} is not set"),
    };
    println!("listen = {:?}", c.listen.to_string());
    println!("database = {:?}", c.database.to_string());
    println!("platform_id = {:?}", c.platform_id);
    if let Some(seed) = &c.seed {
        println!(
            "# seed: {} main accounts, {} users (read; applied at start)",
            seed.accounts.len(),
            seed.users.len()
        );
    }
    println!("access_token_ttl = {}", d(c.access_token_ttl));
    println!("refresh_token_ttl = {}", d(c.refresh_token_ttl));
    println!("refresh_grace = {}", d(c.refresh_grace));
    println!(
        "{}",
        opt(
            "master_key_file",
            c.master_key_file
                .clone()
                .or_else(|| c.database.default_key_file())
                .map(|p| p.display().to_string())
        )
    );
    if c.bootstrap_admin_password.is_some() {
        println!("# bootstrap admin password: set ([redacted])");
    } else {
        println!("# bootstrap admin password: not set (generated and printed once on first start)");
    }
    let proxies: Vec<String> = c
        .trusted_proxies
        .iter()
        .map(|p| format!("{:?}", p.to_string()))
        .collect();
    println!("trusted_proxies = [{}]", proxies.join(", "));
    println!("request_timeout = {}", d(c.request_timeout));
    println!("database_timeout = {}", d(c.database_timeout));
    println!(
        "{}",
        opt("ringex_server", c.ringex_server.as_ref().map(redact_url))
    );
    println!("ringex_emulator = {}", c.ringex_emulator);
    println!("ringex_cache_ttl = {}", d(c.ringex_cache_ttl));
    println!("ringex_timeout = {}", d(c.ringex_timeout));
    println!("shutdown_timeout = {}", d(c.shutdown_timeout));
    println!("audit_retention = {}", d(c.audit_retention));
    println!(
        "metrics_listen = {:?}",
        c.metrics_listen
            .map_or_else(|| "off".to_owned(), |a| a.to_string())
    );
    println!("max_sessions_per_user = {}", c.max_sessions_per_user);
    println!(
        "logins_per_user_per_minute = {}",
        c.logins_per_user_per_minute
    );
    println!(
        "logins_in_flight_per_source = {}",
        c.logins_in_flight_per_source
    );
    println!("api_token_cap = {}", c.api_token_cap);
    println!("header_read_timeout = {}", d(c.header_read_timeout));
    println!("keep_alive_timeout = {}", d(c.keep_alive_timeout));
    match c.max_connections {
        Some(n) => println!("max_connections = {n}"),
        None => println!("max_connections = \"auto\""),
    }
    eprintln!("cxauth: the configuration is valid");
    Ok(())
}

async fn serve(args: ServeArgs, m: &clap::ArgMatches) -> anyhow::Result<()> {
    let config = effective_config(args, m)?;

    // Both listeners first: a busy port must fail before a database is created, a master key
    // written or an admin bootstrapped (whose password would be shown for a server that never
    // ran).
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (another server there? choose another with --listen)",
                config.listen
            )
        })?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => match tokio::net::TcpListener::bind(at).await {
            Ok(l) => Some(l),
            // Not fatal: the API matters more than its metrics (and several instances on one
            // host would otherwise need one flag each just to start).
            Err(e) => {
                tracing::error!(addr = %at, error = %e, "cannot listen for metrics; serving without them");
                None
            }
        },
        None => None,
    };
    let app = cxauth_server::App::build(&config, Arc::new(SystemClock)).await?;
    if let Some(p) = &app.generated_admin_password {
        cxauth_server::announce_admin_password(p, &admin::database_flag(&config.database));
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %config.database, "cxauth listening");
    eprintln!("cxauth: listening on http://{addr}");
    let metrics = match metrics_listener {
        Some(l) => {
            let at = l.local_addr()?;
            tracing::info!(addr = %at, "metrics at http://{at}/metrics");
            let state = app.state.clone();
            Some(tokio::spawn(cxauth_server::metrics::serve(
                l,
                state,
                std::future::pending(),
            )))
        }
        None => None,
    };
    cxauth_server::serve(listener, app, shutdown_signal()).await?;
    if let Some(m) = metrics {
        m.abort();
    }
    tracing::info!("cxauth stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn generate_master_key(file: &std::path::Path) -> anyhow::Result<()> {
    if file.exists() {
        anyhow::bail!(
            "{} already exists; a key file is never overwritten",
            file.display()
        );
    }
    MasterKey::generate()?.write_new(file)?;
    eprintln!("cxauth: wrote a new master key to {}", file.display());
    Ok(())
}

/// Whether `e` comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Refuses a global option given on the command line to a command it means nothing to
/// (`cxauth serve --profile x`), rather than ignoring it.
fn check_global_options(command: &Command, m: &clap::ArgMatches) -> Result<(), clap::Error> {
    let ignored: &[&str] = match command {
        Command::User(_) => &[],
        Command::Admin(_) => &["server", "profile"],
        Command::Serve(_)
        | Command::Config(_)
        | Command::GenerateMasterKey { .. }
        | Command::Completions { .. } => &["server", "profile", "output"],
    };
    for id in ignored {
        if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{id} applies to the user commands (login, whoami, token, accounts, \
                     users{}), not here",
                    if *id == "output" {
                        ", and admin lists"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let no_matches = clap::ArgMatches::default();
    let serve_matches = matches.subcommand_matches("serve").unwrap_or(&no_matches);
    let check_matches = matches
        .subcommand_matches("config")
        .and_then(|m| m.subcommand_matches("check"))
        .unwrap_or(&no_matches);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cxauth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = check_global_options(&cli.command, &matches) {
        e.exit();
    }
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging();
            runtime.block_on(serve(args, serve_matches))
        }
        Command::Admin(args) => {
            let output = match cli.global.output {
                Some(user_cli::Output::Json) => admin::Output::Json,
                Some(user_cli::Output::Table) | None => admin::Output::Text,
            };
            runtime.block_on(admin::run(args, output))
        }
        Command::Config(ConfigCommand::Check(args)) => config_check(args, check_matches),
        Command::GenerateMasterKey { file } => generate_master_key(&file),
        Command::User(cmd) => runtime.block_on(user_cli::run(cmd, cli.global)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "cxauth", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`cxauth accounts | head -1`): what it wanted it has; end quietly
        // and successfully, as `ls | head` does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<user_cli::Failure>() {
            Some(f) => {
                eprintln!("cxauth: error: {}", f.message);
                ExitCode::from(f.code)
            }
            None => {
                eprintln!("cxauth: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
