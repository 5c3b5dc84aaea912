//! The server's configuration: one typed struct whose fields are the settings, each with its
//! default written once ([`ServerConfig::default`]) and its spelling written once (the serde
//! adapters of `values`), read through one layered chain ([`ServerConfig::load`]: defaults,
//! file, environment, flags). Tests build it directly ([`ServerConfig::new`]).

mod layers;
mod values;

pub use layers::{ConfigError, ENV_PREFIX, describe, load_seed};
pub use values::{
    ListenOrOff, MaxConnections, parse_duration, parse_listen, parse_listen_or_off,
    parse_max_connections, parse_proxies, short_duration,
};

use cxauth_store::DatabaseUrl;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `cxauth serve` needs to know. `Debug` shows URLs with their credentials
/// redacted (see [`redact_url`]); serializing it (the defaults layer, `--help`) leaves the
/// secrets and the seed out.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(with = "values::listen")]
    pub listen: SocketAddr,
    /// The database.
    #[serde(with = "values::database")]
    pub database: DatabaseUrl,
    /// Platform id of the bootstrap user and of this deployment.
    pub platform_id: String,
    /// Lifetime of access tokens.
    #[serde(with = "values::duration")]
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens.
    #[serde(with = "values::duration")]
    pub refresh_token_ttl: Duration,
    /// How long a just-rotated refresh token may be retried.
    #[serde(with = "values::duration")]
    pub refresh_grace: Duration,
    /// The master key file; by default `DATABASE.key` beside an SQLite file.
    pub master_key_file: Option<PathBuf>,
    /// Password of the bootstrap `admin` user; random (and printed once) if unset.
    #[serde(serialize_with = "values::unset", deserialize_with = "values::secret")]
    pub bootstrap_admin_password: Option<SecretString>,
    /// Longest a request may take before it is answered 503.
    #[serde(with = "values::duration")]
    pub request_timeout: Duration,
    /// Longest wait for a database connection before a request gets 503; well under
    /// `request_timeout`, so an unreachable database is reported instead of waited on.
    #[serde(with = "values::duration")]
    pub database_timeout: Duration,
    /// Reverse proxies (exact addresses) whose `X-Forwarded-For` names the real client, for
    /// throttling. Empty: the TCP peer is the client.
    #[serde(with = "values::proxies")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Password verifications running at once (default: the number of cores).
    pub hash_workers: usize,
    /// Password verifications waiting at most; beyond it logins get 503 at once.
    pub hash_queue: usize,
    /// The RingEX server the token exchange asks who a RingEX token belongs to
    /// (`GET {url}/restapi/v1.0/account/~/extension/~`). Without one, the exchange trusts the
    /// built-in emulator if it is on, and answers 503 otherwise.
    #[serde(with = "values::ringex_server")]
    pub ringex_server: Option<url::Url>,
    /// Serve the built-in RingEX emulator (`/restapi/oauth/token` and the extension endpoint)
    /// and let the exchange trust it. For offline development and tests only.
    pub ringex_emulator: bool,
    /// Lifetime of the access tokens the RingEX emulator issues (RingEX's 1 hour); shorter in
    /// tests where a RingEX token must run out.
    #[serde(with = "values::duration")]
    pub ringex_emulator_access_ttl: Duration,
    /// Lifetime of the RingEX emulator's refresh tokens (RingEX's 7 days), restarted at each
    /// refresh.
    #[serde(with = "values::duration")]
    pub ringex_emulator_refresh_ttl: Duration,
    /// How long a positive answer of the RingEX server is reused for the same token. Short: a
    /// token RingEX revokes keeps working here at most this long.
    #[serde(with = "values::duration")]
    pub ringex_cache_ttl: Duration,
    /// Longest wait for the RingEX server; beyond it the exchange answers 503. (A longer wait
    /// than `request_timeout` is cut short by the request timeout, also with a 503.)
    #[serde(with = "values::duration")]
    pub ringex_timeout: Duration,
    /// How long a stopping server lets in-flight requests finish before it closes their
    /// connections anyway, and then how long it gives the write of the API token last uses it
    /// holds: bounded, so a stuck client or a slow disk cannot hold up a restart.
    #[serde(with = "values::duration")]
    pub shutdown_timeout: Duration,
    /// How long audit events are kept before housekeeping deletes them.
    #[serde(with = "values::duration")]
    pub audit_retention: Duration,
    /// Where Prometheus metrics are served (`/metrics`); `None`: not served. Apart from the
    /// API listener so that they are not public.
    #[serde(with = "values::listen_or_off")]
    pub metrics_listen: Option<SocketAddr>,
    /// Most live sessions per user; a new login ends the oldest beyond it (0: no limit).
    pub max_sessions_per_user: u32,
    /// Successful logins allowed per user and minute on each instance (0: no limit), so one
    /// account logging in in a loop cannot take the password pool or pile up sessions.
    pub logins_per_user_per_minute: u32,
    /// Most password checks one username, or one client address, may have running or waiting
    /// at once: its share of the password pool, beyond which it gets 429 instead of filling the
    /// pool for everyone. 0: an eighth of `hash_workers + hash_queue` (at least 2).
    pub logins_in_flight_per_source: u32,
    /// Most API tokens one user may hold; creating one more answers 409
    /// `api.token.limit.exceeded`. Bounds what a stolen credential can mint.
    pub api_token_cap: u64,
    /// Longest a credential change made elsewhere (another instance, `cxauth admin`) may go
    /// unnoticed: the in-memory credential cache (sessions, API tokens, users, their accounts)
    /// reads the database's change log at least twice in this time, and serves nothing while it
    /// cannot. `0s`: no cache, the database is read on every request.
    #[serde(with = "values::duration")]
    pub credential_cache_staleness: Duration,
    /// Most entries in each map of the credential cache (sessions, API tokens, users,
    /// accounts); a full map is emptied, so memory stays bounded whatever clients send.
    pub credential_cache_entries: usize,
    /// Longest a client may take to send a request's headers, from the moment it connects (or,
    /// on a kept-alive connection, from its first byte): a client that never finishes its
    /// headers is disconnected then, instead of holding a connection for good.
    #[serde(with = "values::duration")]
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may wait idle for its next request before it is closed.
    #[serde(with = "values::duration")]
    pub keep_alive_timeout: Duration,
    /// Most connections held at once; `None`: derived from the file descriptor limit (see
    /// [`crate::listener::default_max_connections`]). At the cap the connection idle longest
    /// (or slowest to send its headers) is closed to make room for the new one.
    #[serde(with = "values::max_connections")]
    pub max_connections: Option<usize>,
    /// How `cxauth serve` writes its log: text for people, JSON lines for log shippers.
    #[serde(deserialize_with = "values::from_text")]
    pub log_format: LogFormat,
    /// Accounts, users and API tokens to create where missing at every start (`--seed FILE`):
    /// the integrators' stand-in for a RingCX tenant.
    #[serde(serialize_with = "values::unset", deserialize_with = "values::seed")]
    pub seed: Option<std::sync::Arc<cxauth_core::admin::Seed>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Written out so that the RingEX server URL, which may carry a user and password, is
        // shown redacted; the database URL and the bootstrap password redact themselves.
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("platform_id", &self.platform_id)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("refresh_grace", &self.refresh_grace)
            .field("master_key_file", &self.master_key_file)
            .field("bootstrap_admin_password", &self.bootstrap_admin_password)
            .field("request_timeout", &self.request_timeout)
            .field("database_timeout", &self.database_timeout)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("body_limit", &self.body_limit)
            .field("hash_workers", &self.hash_workers)
            .field("hash_queue", &self.hash_queue)
            .field(
                "ringex_server",
                &self.ringex_server.as_ref().map(redact_url),
            )
            .field("ringex_emulator", &self.ringex_emulator)
            .field(
                "ringex_emulator_access_ttl",
                &self.ringex_emulator_access_ttl,
            )
            .field(
                "ringex_emulator_refresh_ttl",
                &self.ringex_emulator_refresh_ttl,
            )
            .field("ringex_cache_ttl", &self.ringex_cache_ttl)
            .field("ringex_timeout", &self.ringex_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("audit_retention", &self.audit_retention)
            .field("metrics_listen", &self.metrics_listen)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .field(
                "logins_per_user_per_minute",
                &self.logins_per_user_per_minute,
            )
            .field(
                "logins_in_flight_per_source",
                &self.logins_in_flight_per_source,
            )
            .field("api_token_cap", &self.api_token_cap)
            .field(
                "credential_cache_staleness",
                &self.credential_cache_staleness,
            )
            .field("credential_cache_entries", &self.credential_cache_entries)
            .field("log_format", &self.log_format)
            .field("seed", &self.seed.is_some())
            .finish_non_exhaustive()
    }
}

/// A URL as it may be shown (logs, `cxauth config check`, `Debug`): a password in it is
/// replaced by `[redacted]`, and the query and fragment, which may carry credentials too
/// (`?api_key=`), are left out. The user name stays: it says which account is used and is not
/// a secret by itself. The same rule as the database URL's (`cxauth_store::SecretUrl`).
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let user = u.username().to_owned();
    let had_password = u.password().is_some();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.set_fragment(None);
    let shown = u.to_string();
    // Written by hand: the URL type would percent-encode the brackets of `[redacted]`.
    let credentials = match (user.is_empty(), had_password) {
        (true, false) => return shown,
        (_, true) => format!("{user}:[redacted]@"),
        (false, false) => format!("{user}@"),
    };
    match shown.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{credentials}{rest}"),
        None => shown,
    }
}

/// The format of the log `cxauth serve` writes to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for people (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format: write text or json")),
        }
    }
}

/// The database `cxauth serve` (and `cxauth admin`) use when none is named.
pub const DEFAULT_DATABASE: &str = "sqlite://cxauth.db";

impl Default for ServerConfig {
    /// The defaults documented in the README and cxauth.example.toml: the one place they are
    /// written (the command line shows them in `--help` from here).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseUrl::parse(DEFAULT_DATABASE).expect("the default database parses"),
            platform_id: "aws80".into(),
            access_token_ttl: Duration::from_secs(5 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            refresh_grace: Duration::from_secs(30),
            master_key_file: None,
            bootstrap_admin_password: None,
            request_timeout: Duration::from_secs(30),
            database_timeout: Duration::from_secs(5),
            trusted_proxies: Vec::new(),
            body_limit: 64 * 1024,
            hash_workers: cores,
            hash_queue: 64 * cores,
            ringex_server: None,
            ringex_emulator: false,
            ringex_emulator_access_ttl: cxauth_core::emulator::RINGEX_ACCESS_TOKEN_TTL,
            ringex_emulator_refresh_ttl: cxauth_core::emulator::RINGEX_REFRESH_TOKEN_TTL,
            ringex_cache_ttl: Duration::from_secs(30),
            ringex_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            audit_retention: Duration::from_secs(90 * 86_400),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_connections: None,
            max_sessions_per_user: 100,
            logins_per_user_per_minute: 30,
            logins_in_flight_per_source: 0,
            api_token_cap: cxauth_core::service::DEFAULT_API_TOKEN_CAP,
            credential_cache_staleness: cxauth_core::credcache::DEFAULT_STALENESS,
            credential_cache_entries: cxauth_core::credcache::DEFAULT_ENTRIES,
            log_format: LogFormat::Text,
            seed: None,
        }
    }
}

impl ServerConfig {
    /// The defaults on `database`.
    pub fn new(database: DatabaseUrl) -> Self {
        ServerConfig {
            database,
            ..ServerConfig::default()
        }
    }

    /// The share of the password pool one username or address may hold (see
    /// [`ServerConfig::logins_in_flight_per_source`]).
    pub fn login_share(&self) -> usize {
        match self.logins_in_flight_per_source {
            0 => ((self.hash_workers + self.hash_queue) / 8).max(2),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if !cxauth_proto::is_valid_platform_id(&self.platform_id) {
            return Err(format!(
                "platform id {:?} is not valid: use 1 to 64 of A-Z, a-z, 0-9, '.', '_', '~', '-'",
                self.platform_id
            ));
        }
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err("the access token lifetime must be at least 1s".into());
        }
        if self.refresh_token_ttl <= self.access_token_ttl {
            return Err(format!(
                "the refresh token lifetime ({}) must be longer than the access token lifetime ({})",
                humantime::format_duration(self.refresh_token_ttl),
                humantime::format_duration(self.access_token_ttl)
            ));
        }
        if self.refresh_grace >= self.refresh_token_ttl {
            return Err(
                "the refresh grace window must be shorter than the refresh token lifetime".into(),
            );
        }
        if self.database_timeout >= self.request_timeout {
            return Err("the database timeout must be shorter than the request timeout".into());
        }
        if self.ringex_emulator_access_ttl < Duration::from_secs(1) {
            return Err("the RingEX emulator's access token lifetime must be at least 1s".into());
        }
        if self.ringex_emulator_refresh_ttl <= self.ringex_emulator_access_ttl {
            return Err(format!(
                "the RingEX emulator's refresh token lifetime ({}) must be longer than its access \
                 token lifetime ({})",
                humantime::format_duration(self.ringex_emulator_refresh_ttl),
                humantime::format_duration(self.ringex_emulator_access_ttl)
            ));
        }
        if self.ringex_timeout.is_zero() {
            return Err("the RingEX timeout must be longer than 0s".into());
        }
        if let Some(u) = &self.ringex_server
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(format!(
                "the RingEX server must be an http:// or https:// URL, not {:?}",
                u.scheme()
            ));
        }
        if self.credential_cache_entries == 0 {
            return Err(
                "the credential cache needs at least 1 entry (credential_cache_entries); \
                 turn it off with credential_cache_staleness = \"0s\""
                    .into(),
            );
        }
        if self.api_token_cap == 0 {
            return Err("the API token cap (api_token_cap) must be at least 1".into());
        }
        if self.header_read_timeout.is_zero() {
            return Err("the header read timeout must be longer than 0s".into());
        }
        if self.keep_alive_timeout.is_zero() {
            return Err("the keep-alive timeout must be longer than 0s".into());
        }
        if self.max_connections == Some(0) {
            return Err("the connection cap must be at least 1 (or auto)".into());
        }
        if self.hash_workers == 0 {
            return Err("there must be at least one password hashing worker".into());
        }
        Ok(())
    }
}

/// Default of [`ServerConfig::header_read_timeout`]: ample for any real client (a request's
/// headers arrive in one packet), short enough that a slow-headers attack must keep opening
/// connections.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`ServerConfig::keep_alive_timeout`]: longer than the 60 s after which nginx
/// (`keepalive_timeout` of an upstream) and common load balancers drop an idle connection, so
/// the proxy closes first and never sends a request on a connection cxauth is closing.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_client_defaults_are_bounded() {
        let c = ServerConfig::new(DatabaseUrl::Sqlite { path: None });
        // The bound: a client that never finishes its headers is gone within 60 s.
        assert!(c.header_read_timeout <= Duration::from_secs(60));
        assert!(!c.header_read_timeout.is_zero());
        assert!(c.keep_alive_timeout <= Duration::from_secs(300));
        assert_eq!(c.max_connections, None);
        assert_eq!(parse_max_connections("auto"), Ok(MaxConnections(None)));
        assert_eq!(parse_max_connections("900"), Ok(MaxConnections(Some(900))));
        assert!(parse_max_connections("0").is_err());
        assert!(parse_max_connections("-1").is_err());
        let mut c = c;
        c.header_read_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        let mut c = ServerConfig::new(DatabaseUrl::Sqlite { path: None });
        c.ringex_server = Some(
            "https://svc:hunter2-pw@ringex.example/base?api_key=hunter2-key#hunter2-frag"
                .parse()
                .expect("url"),
        );
        let shown = redact_url(c.ringex_server.as_ref().expect("set"));
        assert_eq!(shown, "https://svc:[redacted]@ringex.example/base");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("ringex.example"), "{debug}");
        let plain: url::Url = "http://ringex.example/".parse().expect("url");
        assert_eq!(redact_url(&plain), "http://ringex.example/");
    }

    #[test]
    fn refuses_refresh_not_outliving_access() {
        let mut c = ServerConfig::new(DatabaseUrl::Sqlite { path: None });
        assert!(c.validate().is_ok());
        c.refresh_token_ttl = c.access_token_ttl;
        assert!(c.validate().is_err());
        c = ServerConfig::new(DatabaseUrl::Sqlite { path: None });
        c.platform_id = "aws 80".into();
        assert!(c.validate().is_err());
        // The same rule for the RingEX emulator's tokens.
        c = ServerConfig::new(DatabaseUrl::Sqlite { path: None });
        c.ringex_emulator_access_ttl = Duration::from_secs(3);
        assert!(c.validate().is_ok());
        c.ringex_emulator_refresh_ttl = Duration::from_secs(3);
        assert!(c.validate().is_err());
        c.ringex_emulator_access_ttl = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
