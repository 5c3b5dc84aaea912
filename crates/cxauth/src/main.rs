//! `cxauth`: run the server, administer its database, make master keys, and use a server (cxauth
//! or the real RingCX) as a user: log in, API tokens, accounts, users.

mod admin;
mod log_format;
mod log_sink;
mod profile;
mod user_cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cxauth_core::clock::SystemClock;
use cxauth_core::crypto::MasterKey;
use cxauth_server::config::{
    ListenOrOff, LogFormat, MaxConnections, ServerConfig, parse_duration, parse_listen,
    parse_listen_or_off, parse_max_connections, redact_url, short_duration,
};
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

Logging of `serve` goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change its level,
and --log-format json (CXAUTH_LOG_FORMAT=json) for JSON lines.";

/// What `--version` prints after the name: the package version, and "(debug build)" when the
/// binary was built with debug assertions (cargo's debug profile). Measurements (the benchmark
/// harness's `is_debug_build`, which looks for that suffix) ask the binary itself, rather than
/// guessing from the directory it sits in.
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    env!("CARGO_PKG_VERSION")
};

/// cxauth: a self-hostable RingCX (Engage Voice) authentication server, and a command-line client
/// of it and of the real RingCX.
#[derive(Debug, Parser)]
#[command(name = "cxauth", version = VERSION, after_help = AFTER_HELP)]
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

/// The settings of `serve` (and `config check`) as flags. Their defaults live in
/// [`ServerConfig::default`] (shown in `--help` by [`with_defaults`]); clap parses each given
/// flag and `CXAUTH_*` variable only to refuse a bad one early (exit status 2), and
/// [`ServerConfig::load`] reads the flags given on the command line, as text
/// ([`flags_given`]), in its one layered chain. So apart from `config` the fields are not read.
#[derive(Debug, clap::Args)]
#[allow(dead_code)]
struct ServeArgs {
    /// TOML file with any of these settings (keys as the long flags, `_` for `-`; secrets also
    /// as `database_file` and `bootstrap_admin_password_file`). Flags and CXAUTH_* variables
    /// take precedence over it; see cxauth.example.toml.
    #[arg(long, env = "CXAUTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address and port to listen on: HOST:PORT (127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080,
    /// localhost:8080) or a port alone (8080 or :8080, on 127.0.0.1). Port 0 picks a free port.
    #[arg(long, env = "CXAUTH_LISTEN", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Not an option: says to use --listen (clap would suggest --platform-id for --port).
    #[arg(long, hide = true, value_name = "PORT", value_parser = no_port)]
    port: Option<String>,
    /// Not an option: says to use --listen.
    #[arg(long, hide = true, value_name = "HOST", value_parser = no_host)]
    host: Option<String>,
    /// Database: sqlite://PATH (created if missing), a plain file path, `memory` (nothing on
    /// disk, gone when the server stops; also sqlite::memory:), or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE for several instances on one database.
    #[arg(long, env = "CXAUTH_DATABASE")]
    database: Option<String>,
    /// Accounts, users (with passwords, roles, grants, parents) and fixed API tokens to create
    /// at start where missing, from a TOML or JSON file (by its extension); running it again
    /// changes nothing. See examples/seed.toml.
    #[arg(long, env = "CXAUTH_SEED", value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Platform id of this deployment: the prefix of API tokens and the platform of "admin".
    #[arg(long, env = "CXAUTH_PLATFORM_ID")]
    platform_id: Option<String>,
    /// Lifetime of access tokens (e.g. 300ms, 2s, 5m, 7d).
    #[arg(long, env = "CXAUTH_ACCESS_TOKEN_TTL", value_parser = parse_duration)]
    access_token_ttl: Option<Duration>,
    /// Lifetime of each refresh token; must be longer than the access token lifetime.
    #[arg(long, env = "CXAUTH_REFRESH_TOKEN_TTL", value_parser = parse_duration)]
    refresh_token_ttl: Option<Duration>,
    /// How long a just-rotated refresh token may still be used (a retry after a lost response);
    /// later use counts as reuse and ends the session.
    #[arg(long, env = "CXAUTH_REFRESH_GRACE", value_parser = parse_duration)]
    refresh_grace: Option<Duration>,
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
    #[arg(long, env = "CXAUTH_REQUEST_TIMEOUT", value_parser = parse_duration)]
    request_timeout: Option<Duration>,
    /// Longest wait for a database connection before a request is answered 503 (must be
    /// shorter than the request timeout).
    #[arg(long, env = "CXAUTH_DATABASE_TIMEOUT", value_parser = parse_duration)]
    database_timeout: Option<Duration>,
    /// RingEX (RingCentral) server the token exchange asks who a RingEX token belongs to, e.g.
    /// https://platform.ringcentral.com. Unset: the exchange trusts the emulator if it is on,
    /// and answers 503 otherwise.
    #[arg(long, env = "CXAUTH_RINGEX_SERVER", value_name = "URL")]
    ringex_server: Option<url::Url>,
    /// Also serve a built-in RingEX emulator (/restapi/oauth/token and the extension endpoint)
    /// whose tokens the exchange trusts. For offline development and tests only; off by default.
    #[arg(long, env = "CXAUTH_RINGEX_EMULATOR")]
    ringex_emulator: bool,
    /// Lifetime of the RingEX emulator's access tokens (RingEX's 1h; shorter to test a second
    /// RingEX login through its refresh grant).
    #[arg(long, env = "CXAUTH_RINGEX_EMULATOR_ACCESS_TTL", value_parser = parse_duration)]
    ringex_emulator_access_ttl: Option<Duration>,
    /// Lifetime of the RingEX emulator's refresh tokens, restarted at each refresh (must exceed
    /// its access tokens').
    #[arg(long, env = "CXAUTH_RINGEX_EMULATOR_REFRESH_TTL", value_parser = parse_duration)]
    ringex_emulator_refresh_ttl: Option<Duration>,
    /// How long a positive answer of the RingEX server is reused for the same token (0s: never).
    #[arg(long, env = "CXAUTH_RINGEX_CACHE_TTL", value_parser = parse_duration)]
    ringex_cache_ttl: Option<Duration>,
    /// Longest wait for the RingEX server before the exchange answers 503.
    #[arg(long, env = "CXAUTH_RINGEX_TIMEOUT", value_parser = parse_duration)]
    ringex_timeout: Option<Duration>,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish before their
    /// connections are closed anyway, and then how long writing the API token last uses held
    /// in memory may take (at least 2 s).
    #[arg(long, env = "CXAUTH_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// How long audit events are kept; older ones are deleted in the background.
    #[arg(long, env = "CXAUTH_AUDIT_RETENTION", value_parser = parse_duration)]
    audit_retention: Option<Duration>,
    /// Address and port of the Prometheus metrics (`/metrics`), apart from the API so they are
    /// not public; `off` to serve none.
    #[arg(long, env = "CXAUTH_METRICS_LISTEN", value_parser = parse_listen_or_off)]
    metrics_listen: Option<ListenOrOff>,
    /// Most live sessions per user: a new login ends the oldest beyond it (0: no limit).
    #[arg(long, env = "CXAUTH_MAX_SESSIONS_PER_USER")]
    max_sessions_per_user: Option<u32>,
    /// Successful logins allowed per user and minute on each instance (0: no limit); beyond it
    /// 429 with Retry-After.
    #[arg(long, env = "CXAUTH_LOGINS_PER_USER_PER_MINUTE")]
    logins_per_user_per_minute: Option<u32>,
    /// Most password checks one username or one client address may have running or waiting at
    /// once (its share of the password pool; beyond it 429). 0: an eighth of the pool, at least 2.
    #[arg(long, env = "CXAUTH_LOGINS_IN_FLIGHT_PER_SOURCE")]
    logins_in_flight_per_source: Option<u32>,
    /// Most API tokens one user may hold; creating one more answers 409
    /// api.token.limit.exceeded until the user deletes one.
    #[arg(long, env = "CXAUTH_API_TOKEN_CAP", value_parser = clap::value_parser!(u64).range(1..))]
    api_token_cap: Option<u64>,
    /// Longest a credential change made elsewhere (another instance, `cxauth admin`) may go
    /// unnoticed by this server's in-memory credential cache; 0s: no cache (every request
    /// reads the database).
    #[arg(long, env = "CXAUTH_CREDENTIAL_CACHE_STALENESS", value_parser = parse_duration)]
    credential_cache_staleness: Option<Duration>,
    /// Most entries in each map of the credential cache (sessions, API tokens, users,
    /// accounts); a full map is emptied.
    #[arg(long, env = "CXAUTH_CREDENTIAL_CACHE_ENTRIES", value_parser = clap::value_parser!(u64).range(1..))]
    credential_cache_entries: Option<u64>,
    /// Longest a client may take to send a request's headers (from connecting, or from the
    /// first byte of a later request on a kept-alive connection); then it is disconnected.
    #[arg(long, env = "CXAUTH_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    header_read_timeout: Option<Duration>,
    /// How long a kept-alive connection may wait idle for its next request.
    #[arg(long, env = "CXAUTH_KEEP_ALIVE_TIMEOUT", value_parser = parse_duration)]
    keep_alive_timeout: Option<Duration>,
    /// Most client connections held at once; at the cap the connection idle longest (or
    /// slowest to send its headers) is closed for the new one. `auto`: the open file limit
    /// (raised to its hard limit at start) less 128 for the database and files.
    #[arg(long, env = "CXAUTH_MAX_CONNECTIONS", value_parser = parse_max_connections)]
    max_connections: Option<MaxConnections>,
    /// Largest request body accepted, in bytes; a larger one is answered 413.
    #[arg(long, env = "CXAUTH_BODY_LIMIT", value_name = "BYTES")]
    body_limit: Option<usize>,
    /// Password checks running at once (the password pool's workers; on Linux they run 10 nice
    /// values below the rest of the server, so requests come first on a busy core) [default:
    /// the number of cores].
    #[arg(long, env = "CXAUTH_HASH_WORKERS", value_parser = clap::value_parser!(u64).range(1..))]
    hash_workers: Option<u64>,
    /// Password checks that may wait for a worker; beyond it a login is answered 503 at once
    /// [default: 64 per core].
    #[arg(long, env = "CXAUTH_HASH_QUEUE")]
    hash_queue: Option<usize>,
    /// Log format on stderr: text (for people) or json (one object per line, for log
    /// shippers).
    #[arg(long, env = "CXAUTH_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
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

/// Logging of `cxauth serve`, on stderr through [`log_sink`] (batched writes). The guard writes
/// what is left when the process ends; `None` if the writer thread could not start, in which
/// case lines go straight to stderr.
fn init_logging(format: LogFormat) -> Option<log_sink::Guard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = match log_sink::Sink::stderr() {
        Ok((sink, guard)) => {
            log_sink::install(&sink);
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(sink),
                Some(guard),
            )
        }
        Err(e) => {
            eprintln!("cxauth: cannot start the log writer thread ({e}); logging unbuffered");
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
                None,
            )
        }
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // The stock layout, written without its colour machinery when colours are off.
        LogFormat::Text => log
            .with_ansi(ansi)
            .fmt_fields(log_format::PlainFields::default())
            .event_format(log_format::PlainLine::default())
            .init(),
        // For log shippers: one JSON object per line, the event's fields at the top level.
        LogFormat::Json => log.json().flatten_event(true).with_ansi(false).init(),
    }
    guard
}

/// The settings given on the command line, by key, as their text: the top layer of
/// [`ServerConfig::load`]. Flags that set a setting have the setting's key as their id (for
/// `--trusted-proxy`, `trusted_proxies`); values from defaults and variables are left to the
/// lower layers.
fn flags_given(m: &clap::ArgMatches) -> figment::value::Dict {
    use figment::value::Value;
    let keys = ServerConfig::keys();
    m.ids()
        .map(clap::Id::as_str)
        .filter(|id| keys.iter().any(|k| k == id))
        .filter(|id| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .filter_map(|id| {
            let raw: Vec<String> = m
                .get_raw(id)?
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let value = match raw.as_slice() {
                [one] => Value::from(one.clone()),
                many => Value::from(many.to_vec()),
            };
            Some((id.to_owned(), value))
        })
        .collect()
}

/// `cmd` with the defaults of [`ServerConfig::default`] shown in the `--help` of `serve` and
/// `config check` (for show only: the values come from [`ServerConfig::load`]).
fn with_defaults(cmd: clap::Command) -> clap::Command {
    let defaults = ServerConfig::default_texts();
    let show = |mut sub: clap::Command| {
        for (key, text) in &defaults {
            if sub.get_arguments().any(|a| a.get_id() == key.as_str()) {
                // Leaked once per process: clap keeps `&'static` defaults.
                let text: &'static str = Box::leak(text.clone().into_boxed_str());
                sub = sub.mut_arg(key.as_str(), |a| a.default_value(text));
            }
        }
        sub
    };
    cmd.mut_subcommand("serve", show)
        .mut_subcommand("config", |c| c.mut_subcommand("check", show))
}

/// The configuration of `serve`: defaults, the `--config` file, `CXAUTH_*` variables, flags.
fn effective_config(args: &ServeArgs, m: &clap::ArgMatches) -> anyhow::Result<ServerConfig> {
    Ok(ServerConfig::load(args.config.as_deref(), flags_given(m))?)
}

/// `cxauth config check`: the effective configuration as TOML, secrets redacted.
fn config_check(args: &ServeArgs, m: &clap::ArgMatches) -> anyhow::Result<()> {
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
    println!(
        "ringex_emulator_access_ttl = {}",
        d(c.ringex_emulator_access_ttl)
    );
    println!(
        "ringex_emulator_refresh_ttl = {}",
        d(c.ringex_emulator_refresh_ttl)
    );
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
    println!(
        "credential_cache_staleness = {}",
        d(c.credential_cache_staleness)
    );
    println!("credential_cache_entries = {}", c.credential_cache_entries);
    println!("header_read_timeout = {}", d(c.header_read_timeout));
    println!("keep_alive_timeout = {}", d(c.keep_alive_timeout));
    match c.max_connections {
        Some(n) => println!("max_connections = {n}"),
        None => println!("max_connections = \"auto\""),
    }
    println!("body_limit = {}", c.body_limit);
    println!("hash_workers = {}", c.hash_workers);
    println!("hash_queue = {}", c.hash_queue);
    println!(
        "log_format = {:?}",
        match c.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    );
    eprintln!("cxauth: the configuration is valid");
    Ok(())
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
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
    // Printed straight to stderr, after the log lines that came before them.
    log_sink::flush();
    if let Some(p) = &app.generated_admin_password {
        cxauth_server::announce_admin_password(p, &admin::database_flag(&config.database));
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %config.database, "cxauth listening");
    log_sink::flush();
    // In one write: `eprintln!` writes each formatted piece on its own (eleven writes for this
    // line), and a supervisor reading the log file as it grows could see half an address.
    let line = format!("cxauth: listening on http://{addr}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
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
    let matches = with_defaults(<Cli as clap::CommandFactory>::command()).get_matches();
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
    // Held to the end of `main`: dropping it writes the log lines still buffered.
    let mut log_guard = None;
    let result = match cli.command {
        Command::Serve(args) => effective_config(&args, serve_matches).and_then(|config| {
            log_guard = init_logging(config.log_format);
            runtime.block_on(serve(config))
        }),
        Command::Admin(args) => {
            let output = match cli.global.output {
                Some(user_cli::Output::Json) => admin::Output::Json,
                Some(user_cli::Output::Table) | None => admin::Output::Text,
            };
            runtime.block_on(admin::run(args, output))
        }
        Command::Config(ConfigCommand::Check(args)) => config_check(&args, check_matches),
        Command::GenerateMasterKey { file } => generate_master_key(&file),
        Command::User(cmd) => runtime.block_on(user_cli::run(cmd, cli.global)),
        Command::Completions { shell } => {
            let mut cmd = with_defaults(<Cli as clap::CommandFactory>::command());
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "cxauth", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(Into::into)
        }
    };
    // The server's last log lines come before the error that ended it.
    drop(log_guard);
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
