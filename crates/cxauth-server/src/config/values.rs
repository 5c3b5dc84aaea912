//! How each kind of setting is written: the parsers the command line uses (so that a bad flag
//! or variable is refused by clap, exit status 2) and the serde adapters that read the same
//! text from the configuration file, the environment and the flags (so that every source
//! accepts exactly the same spellings).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Parses a connection cap: a positive number, or `auto` (derived from the file descriptor
/// limit).
pub fn parse_max_connections(s: &str) -> Result<MaxConnections, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(MaxConnections(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(MaxConnections(Some(n))),
        _ => Err(format!("{s:?} is neither a positive number nor auto")),
    }
}

/// A connection cap or `auto`; see [`parse_max_connections`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxConnections(pub Option<usize>);

/// Parses a listen address: `HOST:PORT` (an IP address, `[::1]:PORT`, or a host name such as
/// `localhost:8080`, resolved now), or a port alone (`8080` or `:8080`), which means
/// 127.0.0.1: listening on every interface must be asked for (`0.0.0.0:8080`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        return port_only
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| format!("{s:?}: a port is a number from 0 to 65535"));
    }
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let wrong = || {
        format!(
            "{s:?} is not an address to listen on: write HOST:PORT (127.0.0.1:8080, \
             0.0.0.0:8080, [::1]:8080, localhost:8080) or a port alone (8080)"
        )
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(wrong());
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(wrong());
    }
    let found: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("{s:?}: cannot resolve the host name {host:?}: {e}"))?
        .collect();
    // IPv4 first: `localhost` then means 127.0.0.1, which every client tries.
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: the host name {host:?} has no address"))
}

/// Parses a listen address as [`parse_listen`] does, or `off` for none (e.g.
/// `--metrics-listen off`).
pub fn parse_listen_or_off(s: &str) -> Result<ListenOrOff, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(ListenOrOff(None));
    }
    parse_listen(s)
        .map(|a| ListenOrOff(Some(a)))
        .map_err(|e| format!("{e}; or off for none"))
}

/// A listen address that can be turned off; see [`parse_listen_or_off`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOrOff(pub Option<SocketAddr>);

/// Parses a duration in human form: `300ms`, `2s`, `5m`, `1h`, `7d`, or combinations (`1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 300ms, 2s, 5m, 7d"))
}

/// A duration in the largest whole unit (`90d`, `5m`, `300ms`), as written in configurations.
pub fn short_duration(d: Duration) -> String {
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

/// Parses a trusted proxy address list: comma-separated (as `CXAUTH_TRUSTED_PROXIES` holds it).
pub fn parse_proxies(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|e| format!("{p:?}: {e}")))
        .collect()
}

/// Text, for settings written as text everywhere.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d)
}

/// Reads a setting as text and parses it with `parse`.
fn parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    parse(&text(d)?).map_err(D::Error::custom)
}

/// The serde adapters, one module per kind of setting, for `#[serde(with = "…")]`.
pub(crate) mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        short_duration(*d).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parsed(d, parse_duration)
    }
}

pub(crate) mod listen {
    use super::*;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        a.to_string().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        parsed(d, parse_listen)
    }
}

/// `metrics_listen`: an address, or `"off"`.
pub(crate) mod listen_or_off {
    use super::*;

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        a.map_or_else(|| "off".to_owned(), |a| a.to_string())
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        parsed(d, parse_listen_or_off).map(|l| l.0)
    }
}

/// `max_connections`: a number (`5000` or `"5000"`), or `"auto"`.
pub(crate) mod max_connections {
    use super::*;

    pub fn serialize<S: Serializer>(n: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => n.serialize(s),
            None => "auto".serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum CountOrWord {
            Count(u64),
            Word(String),
        }
        let text = match CountOrWord::deserialize(d)? {
            CountOrWord::Count(n) => n.to_string(),
            CountOrWord::Word(w) => w,
        };
        parse_max_connections(&text)
            .map(|m| m.0)
            .map_err(D::Error::custom)
    }
}

/// `trusted_proxies`: a list (file, flags), or one comma-separated text (environment).
pub(crate) mod proxies {
    use super::*;

    pub fn serialize<S: Serializer>(p: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
        p.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ListOrText {
            List(Vec<String>),
            Text(String),
        }
        match ListOrText::deserialize(d)? {
            ListOrText::List(l) => l
                .iter()
                .map(|p| p.trim().parse().map_err(|e| format!("{p:?}: {e}")))
                .collect::<Result<_, _>>(),
            ListOrText::Text(t) => parse_proxies(&t),
        }
        .map_err(D::Error::custom)
    }
}

/// `database`: a database URL, shown (and so serialized) with its password redacted.
pub(crate) mod database {
    use super::*;
    use cxauth_store::DatabaseUrl;

    pub fn serialize<S: Serializer>(u: &DatabaseUrl, s: S) -> Result<S::Ok, S::Error> {
        u.to_string().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        parsed(d, |s| DatabaseUrl::parse(s).map_err(|e| e.to_string()))
    }
}

/// `ringex_server`: an optional URL, shown with its credentials redacted.
pub(crate) mod ringex_server {
    use super::*;

    pub fn serialize<S: Serializer>(u: &Option<url::Url>, s: S) -> Result<S::Ok, S::Error> {
        u.as_ref().map(crate::config::redact_url).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                s.trim()
                    .parse()
                    // The parser's message never echoes the URL, which may hold a password.
                    .map_err(|e: url::ParseError| D::Error::custom(e.to_string()))
            })
            .transpose()
    }
}

/// Any setting written as text that `FromStr` reads (the log format).
pub(crate) fn from_text<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    parsed(d, str::parse)
}

/// Secrets and what is read from other files (the bootstrap password, the seed) are never
/// serialized back: they serialize as unset.
pub(crate) fn unset<T, S: Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_none()
}

/// `bootstrap_admin_password`: a secret from the environment or a `*_file`; empty is unset.
pub(crate) fn secret<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<secrecy::SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|p| !p.is_empty())
        .map(secrecy::SecretString::from))
}

/// `seed`: the path of a seed file, read (TOML, or JSON by its extension) as it is deserialized.
pub(crate) fn seed<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::sync::Arc<cxauth_core::admin::Seed>>, D::Error> {
    let Some(path) = Option::<std::path::PathBuf>::deserialize(d)? else {
        return Ok(None);
    };
    super::layers::load_seed(&path)
        .map(|s| Some(std::sync::Arc::new(s)))
        .map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_or_off() {
        assert_eq!(parse_listen_or_off("off"), Ok(ListenOrOff(None)));
        assert_eq!(
            parse_listen_or_off("127.0.0.1:9090"),
            Ok(ListenOrOff(Some(SocketAddr::from(([127, 0, 0, 1], 9090)))))
        );
        assert_eq!(
            parse_listen_or_off("9090"),
            Ok(ListenOrOff(Some(SocketAddr::from(([127, 0, 0, 1], 9090)))))
        );
        assert!(parse_listen_or_off("nine").is_err());
    }

    #[test]
    fn listen_accepts_a_port_alone_and_host_names() {
        let local = |p| SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(parse_listen("8080"), Ok(local(8080)));
        assert_eq!(parse_listen(":8080"), Ok(local(8080)));
        assert_eq!(parse_listen("localhost:8080"), Ok(local(8080)));
        assert_eq!(
            parse_listen("0.0.0.0:80"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 80)))
        );
        assert_eq!(parse_listen("[::1]:80").map(|a| a.is_ipv6()), Ok(true));
        for bad in ["", ":", "70000", "localhost", "host:port"] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_in_human_form() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
        for d in ["300ms", "2s", "5m", "90d", "1500ms"] {
            assert_eq!(short_duration(parse_duration(d).expect("parses")), d);
        }
    }

    #[test]
    fn proxies_comma_separated() {
        assert_eq!(
            parse_proxies("10.0.0.1, ::1"),
            Ok(vec![
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "::1".parse().expect("ip")
            ])
        );
        assert!(parse_proxies("10.0.0").is_err());
    }
}
