//! `cxauth serve --config FILE`: every setting of the command line in a TOML file.
//!
//! Precedence: flags, then `CXAUTH_*` variables, then the file, then the defaults. Clap already
//! merges flags, variables and defaults; a setting of the file is used where clap says the value
//! came from a default. Unknown keys are refused with their name (a typo must not silently fall
//! back to a default). Secrets can live in their own files: `database_file` (a database URL
//! with a password) and `bootstrap_admin_password_file`.

use crate::ServeArgs;
use anyhow::{Context as _, anyhow};
use clap::ArgMatches;
use clap::parser::ValueSource;
use cxauth_server::config::{
    parse_duration, parse_listen, parse_listen_or_off, parse_max_connections,
};
use figment::Figment;
use figment::providers::{Format as _, Toml};
use secrecy::SecretString;
use std::path::{Path, PathBuf};

/// The keys a configuration file may hold: the long flags of `cxauth serve` with `_` for `-`,
/// plus the `*_file` keys for secrets.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<String>,
    database: Option<String>,
    seed: Option<PathBuf>,
    /// A file holding the database URL (it may carry a password).
    database_file: Option<PathBuf>,
    platform_id: Option<String>,
    access_token_ttl: Option<String>,
    refresh_token_ttl: Option<String>,
    refresh_grace: Option<String>,
    master_key_file: Option<PathBuf>,
    /// A file holding the password of the first `admin` user.
    bootstrap_admin_password_file: Option<PathBuf>,
    trusted_proxies: Option<Vec<String>>,
    request_timeout: Option<String>,
    database_timeout: Option<String>,
    ringex_server: Option<String>,
    ringex_emulator: Option<bool>,
    ringex_cache_ttl: Option<String>,
    ringex_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    audit_retention: Option<String>,
    metrics_listen: Option<String>,
    max_sessions_per_user: Option<u32>,
    logins_per_user_per_minute: Option<u32>,
    logins_in_flight_per_source: Option<u32>,
    api_token_cap: Option<u64>,
    header_read_timeout: Option<String>,
    keep_alive_timeout: Option<String>,
    max_connections: Option<CountOrAuto>,
}

/// `max_connections = 5000` or `max_connections = "auto"`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum CountOrAuto {
    /// A number.
    Count(u64),
    /// `"auto"` (or a number in quotes).
    Word(String),
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    if !path.is_file() {
        anyhow::bail!("the configuration file {} does not exist", path.display());
    }
    Figment::from(Toml::file_exact(path))
        .extract()
        .map_err(|e| anyhow!("{}: {}", path.display(), describe(&e)))
}

/// A configuration (or seed) file error in words for a person: each problem as `KEY: what`,
/// an unknown key with the nearest known one ("did you mean"), and none of figment's internal
/// profile prefix (`default.`) or nested quoting.
pub fn describe(error: &figment::Error) -> String {
    use figment::error::Kind;
    let mut out = Vec::new();
    for e in error.clone() {
        let at = e.path.join(".");
        let line = match &e.kind {
            Kind::UnknownField(field, expected) => {
                let key = if at.is_empty() || at == *field {
                    field.clone()
                } else {
                    at.clone()
                };
                let mut line = format!("unknown key {key:?}");
                match nearest(field, expected) {
                    Some(near) => line.push_str(&format!("; did you mean {near:?}?")),
                    None => line.push_str(&format!(" (known keys: {})", expected.join(", "))),
                }
                line
            }
            Kind::MissingField(field) => {
                let key = if at.is_empty() {
                    field.to_string()
                } else {
                    format!("{at}.{field}")
                };
                format!("missing key {key:?}")
            }
            kind if at.is_empty() => kind.to_string(),
            kind => format!("{at}: {kind}"),
        };
        out.push(line.replace('`', "\""));
    }
    out.join("; ")
}

/// The known key closest to `typed` by edit distance, if close enough to be a typo.
fn nearest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

/// Whether the value of `id` is clap's default (neither a flag nor a variable set it).
fn defaulted(m: &ArgMatches, id: &str) -> bool {
    !matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills `args` from the file where flags and variables left defaults; returns the bootstrap
/// password of `bootstrap_admin_password_file`, if any.
pub fn apply(
    args: &mut ServeArgs,
    file: FileConfig,
    m: &ArgMatches,
    path: &Path,
) -> anyhow::Result<Option<SecretString>> {
    let bad = |key: &str, e: String| anyhow!("{}: {key}: {e}", path.display());
    macro_rules! take {
        ($key:ident, $parse:expr) => {
            if let Some(v) = file.$key
                && defaulted(m, stringify!($key))
            {
                args.$key = $parse(v.as_str()).map_err(|e| bad(stringify!($key), e))?;
            }
        };
    }
    let text = |v: &str| Ok::<_, String>(v.to_owned());
    take!(listen, parse_listen);
    take!(database, text);
    take!(platform_id, text);
    take!(access_token_ttl, parse_duration);
    take!(refresh_token_ttl, parse_duration);
    take!(refresh_grace, parse_duration);
    take!(request_timeout, parse_duration);
    take!(database_timeout, parse_duration);
    take!(ringex_cache_ttl, parse_duration);
    take!(ringex_timeout, parse_duration);
    take!(shutdown_timeout, parse_duration);
    take!(audit_retention, parse_duration);
    take!(metrics_listen, parse_listen_or_off);
    macro_rules! take_number {
        ($key:ident) => {
            if let Some(v) = file.$key
                && defaulted(m, stringify!($key))
            {
                args.$key = v;
            }
        };
    }
    take_number!(max_sessions_per_user);
    take_number!(logins_per_user_per_minute);
    take_number!(logins_in_flight_per_source);
    take!(header_read_timeout, parse_duration);
    take!(keep_alive_timeout, parse_duration);
    if let Some(v) = file.max_connections
        && defaulted(m, "max_connections")
    {
        let text = match v {
            CountOrAuto::Count(n) => n.to_string(),
            CountOrAuto::Word(w) => w,
        };
        args.max_connections =
            parse_max_connections(&text).map_err(|e| bad("max_connections", e))?;
    }
    if let Some(f) = file.database_file
        && defaulted(m, "database")
    {
        args.database = read_secret(&f)?;
    }
    if let Some(v) = file.seed
        && defaulted(m, "seed")
    {
        args.seed = Some(v);
    }
    if let Some(v) = file.master_key_file
        && defaulted(m, "master_key_file")
    {
        args.master_key_file = Some(v);
    }
    if let Some(v) = file.ringex_server
        && defaulted(m, "ringex_server")
    {
        args.ringex_server = Some(
            v.parse()
                // The parser's message never echoes the URL, which may hold a password.
                .map_err(|e: url::ParseError| bad("ringex_server", e.to_string()))?,
        );
    }
    if let Some(v) = file.ringex_emulator
        && defaulted(m, "ringex_emulator")
    {
        args.ringex_emulator = v;
    }
    if let Some(v) = file.api_token_cap
        && defaulted(m, "api_token_cap")
    {
        if v == 0 {
            return Err(bad("api_token_cap", "must be at least 1".into()));
        }
        args.api_token_cap = v;
    }
    if let Some(v) = file.trusted_proxies
        && defaulted(m, "trusted_proxies")
    {
        args.trusted_proxies = v
            .iter()
            .map(|p| p.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::net::AddrParseError| bad("trusted_proxies", e.to_string()))?;
    }
    file.bootstrap_admin_password_file
        .map(|f| read_secret(&f).map(SecretString::from))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_gets_a_suggestion_without_internal_prefixes() {
        let e = Figment::from(Toml::string("listn = \"127.0.0.1:1\""))
            .extract::<FileConfig>()
            .expect_err("unknown key");
        let said = describe(&e);
        assert_eq!(said, "unknown key \"listn\"; did you mean \"listen\"?");
        let e = Figment::from(Toml::string("max_sessions_per_user = \"x\""))
            .extract::<FileConfig>()
            .expect_err("wrong type");
        let said = describe(&e);
        assert!(said.starts_with("max_sessions_per_user: "), "{said}");
        assert!(!said.contains("default.") && !said.contains('`'), "{said}");
    }

    #[test]
    fn nothing_far_off_is_suggested() {
        assert_eq!(nearest("zzzzzzzz", &["listen", "database"]), None);
        assert_eq!(
            nearest("databse", &["listen", "database"]),
            Some("database")
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
