//! Database URLs: what `--database` / `CXAUTH_DATABASE` accept.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a database URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// A scheme this build does not serve.
    #[error(
        "unsupported database URL scheme {0:?}: use sqlite://PATH (or a plain file path) or \
         postgres://USER@HOST/DATABASE"
    )]
    UnsupportedScheme(String),
    /// Nothing after the scheme.
    #[error("the database URL has no path")]
    Empty,
    /// Text before `://` that is not a URL scheme at all (it may be a password typed in the wrong
    /// place), so it is not repeated.
    #[error(
        "the database URL has no valid scheme before \"://\": use sqlite://PATH (or a plain file \
         path) or postgres://USER@HOST/DATABASE"
    )]
    BadScheme,
    /// A `postgres:` / `postgresql:` URL that cannot be what was meant. Only the scheme is shown:
    /// the rest may hold a password in the wrong place (`postgres:///user:secret@host/db`).
    #[error(
        "malformed database URL {scheme}://…: {problem}; expected \
         {scheme}://USER[:PASSWORD]@HOST[:PORT]/DATABASE, with '@', ':', '/', '?', '#' and '%' in \
         a password written as %40, %3A, %2F, %3F, %23 and %25"
    )]
    MalformedPostgres {
        /// `postgres` or `postgresql`, as the input spelled it (in lower case).
        scheme: &'static str,
        /// What is wrong, in words that quote nothing from the input.
        problem: &'static str,
    },
}

/// A PostgreSQL URL, which may hold a password: shown only with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL as given, password included, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                // A placeholder of URL-safe characters, swapped for `[redacted]` afterwards:
                // the URL type would show the brackets percent-encoded (`%5Bredacted%5D`).
                const MARK: &str = "cxauthredactedpassword";
                let had_password = u.password().is_some();
                if had_password {
                    let _ = u.set_password(Some(MARK));
                }
                // Query parameters may carry a password too (`?password=`), and so may a
                // fragment (the tail of a password with an unencoded `#`): leave both out.
                u.set_query(None);
                u.set_fragment(None);
                if had_password {
                    f.write_str(&u.as_str().replacen(&format!(":{MARK}@"), ":[redacted]@", 1))
                } else {
                    f.write_str(u.as_str())
                }
            }
            Err(_) => f.write_str("postgres://[unparsable URL]"),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A parsed database location.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite database file, or an in-memory database when `path` is `None`.
    Sqlite {
        /// The file.
        path: Option<PathBuf>,
    },
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://…` or `postgresql://…`.
        url: SecretUrl,
    },
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` (or just `memory`), a bare file
    /// path, or `postgres://…` / `postgresql://…`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(UrlError::Empty);
        }
        // `memory`: the integrators' stand-in (`cxauth serve --database memory`); a file of
        // that name is still reachable as `./memory` or `sqlite://memory`.
        if s == "memory" {
            return Ok(DatabaseUrl::Sqlite { path: None });
        }
        if let Some(scheme) = postgres_scheme(s) {
            return parse_postgres(scheme, s);
        }
        let rest = if let Some(r) = s.strip_prefix("sqlite://") {
            r
        } else if let Some(r) = s.strip_prefix("sqlite:") {
            r
        } else if let Some((scheme, _)) = s.split_once("://") {
            return Err(if is_scheme(scheme) {
                UrlError::UnsupportedScheme(scheme.to_owned())
            } else {
                UrlError::BadScheme
            });
        } else {
            s
        };
        // Query parameters (sqlx style `?mode=rwc`) are not needed: we always create if missing.
        let rest = rest.split('?').next().unwrap_or_default();
        if rest.is_empty() {
            return Err(UrlError::Empty);
        }
        if rest == ":memory:" {
            return Ok(DatabaseUrl::Sqlite { path: None });
        }
        Ok(DatabaseUrl::Sqlite {
            path: Some(PathBuf::from(rest)),
        })
    }

    /// The file of an SQLite database, if it has one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DatabaseUrl::Sqlite { path } => path.as_deref(),
            DatabaseUrl::Postgres { .. } => None,
        }
    }

    /// Whether the database lives only as long as the process (`sqlite::memory:`).
    pub fn is_in_memory(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite { path: None })
    }

    /// Where the master key lives by default: beside the database file, as `FILE.key`.
    pub fn default_key_file(&self) -> Option<PathBuf> {
        self.sqlite_path().map(|p| {
            let mut s = p.as_os_str().to_owned();
            s.push(".key");
            PathBuf::from(s)
        })
    }
}

/// `postgres` or `postgresql` when `s` starts with that scheme and a colon, in any case: every
/// such input is meant as a PostgreSQL URL, so none of it may fall through to the SQLite path
/// (`postgres:/user:secret@host/db` would otherwise be an SQLite file, shown whole).
fn postgres_scheme(s: &str) -> Option<&'static str> {
    let (scheme, _) = s.split_once(':')?;
    if scheme.eq_ignore_ascii_case("postgres") {
        Some("postgres")
    } else if scheme.eq_ignore_ascii_case("postgresql") {
        Some("postgresql")
    } else {
        None
    }
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, `+`, `-` or `.`. Anything else before
/// `://` is not a scheme and is not echoed back.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && s.len() <= 32
}

/// Accepts a PostgreSQL URL only in the shape the driver and [`SecretUrl`]'s redaction agree on:
/// `//` then a host, a password (if any) in the user part, and a plain database name as the path.
/// Every way a password can land elsewhere (one slash too many, an unencoded `/`, `?`, `#` or `@`
/// in it) breaks one of these rules, and the error names the rule, not the input.
fn parse_postgres(scheme: &'static str, s: &str) -> Result<DatabaseUrl, UrlError> {
    let bad = |problem| UrlError::MalformedPostgres { scheme, problem };
    let after_colon = &s[scheme.len() + 1..];
    if !after_colon.starts_with("//") {
        return Err(bad("the scheme must be followed by \"//\""));
    }
    let u = url::Url::parse(s).map_err(|e| bad(parse_problem(e)))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host (one '/' too many after the scheme?)"));
    }
    if u.fragment().is_some() {
        return Err(bad(
            "it has a '#' (a '#' in a password must be written %23)",
        ));
    }
    let Some(database) = u.path().strip_prefix('/').filter(|d| !d.is_empty()) else {
        return Err(bad("no database name after the host"));
    };
    let decoded = percent_decode(database);
    if decoded.contains(['@', ':', '/']) {
        return Err(bad(
            "the database name holds '@', ':' or '/' (is a user or password in the path?)",
        ));
    }
    Ok(DatabaseUrl::Postgres {
        url: SecretUrl(s.to_owned()),
    })
}

/// The URL parser's complaint in words that help with a database URL.
fn parse_problem(e: url::ParseError) -> &'static str {
    match e {
        url::ParseError::InvalidPort => {
            "the port is not a number (a ':' in the host, or an unencoded '/', '?' or '#' in a \
             password?)"
        }
        url::ParseError::EmptyHost => "no host",
        url::ParseError::InvalidIpv6Address | url::ParseError::InvalidIpv4Address => {
            "the host is not a valid IP address"
        }
        _ => "it is not a valid URL",
    }
}

/// The bytes `%XX` stands for, for the database-name check only (invalid escapes stay as typed).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                // Both digits are below 16, so the byte fits.
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite { path: None } => f.write_str("sqlite::memory:"),
            DatabaseUrl::Sqlite { path: Some(p) } => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres { url } => fmt::Display::fmt(url, f),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a caller may print for a parse result: the URL as displayed, or the error.
    fn shown(r: &Result<DatabaseUrl, UrlError>) -> String {
        match r {
            Ok(u) => u.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// The shapes a PostgreSQL URL takes when typed slightly wrong: the scheme in any case, zero
    /// to four slashes, the user part before or after the host or in the path, an empty host, and
    /// a password with unencoded reserved characters.
    fn mistyped_postgres_url() -> impl Strategy<Value = (String, String)> {
        (
            prop::sample::select(vec!["postgres", "postgresql", "POSTGRES", "PostgreSQL"]),
            prop::sample::select(vec!["", "/", "//", "///", "////"]),
            "[a-z]{0,8}",
            // A marker no user, host or short tail will contain by chance, with or without
            // reserved characters inside.
            (
                "[A-Za-z0-9_-]{6,20}",
                "[/?#@:%\\[\\] ]{0,2}",
                "[A-Za-z0-9_-]{0,6}",
            )
                .prop_map(|(a, sep, b)| format!("Pw9_{a}{sep}{b}")),
            prop::sample::select(vec!["", "db.internal", "127.0.0.1:5432", "[::1]"]),
            0..4usize,
            "[ -~]{0,20}",
        )
            .prop_map(|(scheme, slashes, user, pw, host, layout, tail)| {
                let url = match layout {
                    0 => format!("{scheme}:{slashes}{user}:{pw}@{host}/db{tail}"),
                    1 => format!("{scheme}:{slashes}{host}/{user}:{pw}@x/db{tail}"),
                    2 => format!("{scheme}:{slashes}{host}/db?password={pw}{tail}"),
                    _ => format!("{scheme}:{slashes}:{pw}@{tail}"),
                };
                (url, pw)
            })
    }

    proptest! {
        /// The mirror of the `database_url` fuzz target: parsing never panics, and a
        /// PostgreSQL password (and anything after `?` or `#`) never shows, neither in the
        /// displayed URL nor in the error that refuses it.
        #[test]
        fn a_postgres_password_never_shows(
            user in "[a-z]{1,8}",
            pw in "[A-Za-z0-9_-]{6,20}",
            host in "[a-z]{1,10}",
            tail in "[ -~]{0,30}",
        ) {
            // A marker no user, host or short tail will contain by chance.
            let pw = format!("Pw9_{pw}");
            let url = format!("postgres://{user}:{pw}@{host}/db{tail}");
            let url = shown(&DatabaseUrl::parse(&url));
            prop_assert!(!url.contains(&pw), "{}", url);
            let q = format!("postgres://{host}/db?password={pw}#{tail}");
            let q = shown(&DatabaseUrl::parse(&q));
            prop_assert!(!q.contains(&pw), "{}", q);
        }

        /// The shapes the first mirror missed (`postgresql:///user:secret@host/db`): whatever is
        /// accepted shows no password, and a refusal quotes nothing of the input but the scheme.
        #[test]
        fn a_mistyped_postgres_url_shows_no_password((url, pw) in mistyped_postgres_url()) {
            let r = DatabaseUrl::parse(&url);
            let out = shown(&r);
            // The password's first part: its marker and the characters before any separator.
            let end = pw.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            let head = &pw[..end.unwrap_or(pw.len())];
            prop_assert!(!out.contains(head), "{} -> {}", url, out);
            if r.is_err() {
                prop_assert!(!out.contains("db.internal") && !out.contains("127.0.0.1"), "{}", out);
            }
        }

        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            if let Ok(url) = DatabaseUrl::parse(&s) {
                let _ = (url.to_string(), url.default_key_file(), url.is_in_memory());
            }
        }
    }

    /// The `database_url` fuzz target's finding (issue 17) and the typo it stands for: one slash
    /// too many puts the user part in the path, which used to be accepted and shown whole.
    #[test]
    fn a_postgres_url_without_a_host_is_refused_and_not_shown() {
        let crash = format!(
            "postgresql:////:sq{}@:sts%DD%8C%F2%8D%8C%8C",
            "T".repeat(40)
        );
        for input in [
            crash.as_str(),
            "postgresql:///user:secret@host/db",
            "postgres:///user:secret@host/db",
            "postgres:////user:secret@host/db",
            "postgres://user:secret@/db",
            "postgres://:secret@",
        ] {
            let err = DatabaseUrl::parse(input).expect_err(input).to_string();
            assert!(err.contains("no host"), "{input}: {err}");
            assert!(!err.contains("secret") && !err.contains("TTTT"), "{err}");
        }
    }

    #[test]
    fn malformed_postgres_urls_are_refused_with_the_scheme_only() {
        for (input, problem) in [
            ("postgres:/user:secret@host/db", "followed by \"//\""),
            ("PostgreSQL:user:secret@host/db", "followed by \"//\""),
            ("postgres://user:se/cret@host/db", "port is not a number"),
            ("postgres://user:se?cret@host/db", "port is not a number"),
            ("postgres://user:123#secret@host/db", "'#'"),
            ("postgres://user:123?secret@host/db", "no database name"),
            ("postgres://host", "no database name"),
            ("postgres://host/", "no database name"),
            ("postgres://host/user:secret@db", "database name holds"),
            ("postgres://host/user%3Asecret%40db", "database name holds"),
            ("postgres://host/db/secret", "database name holds"),
            ("postgres://u:secret@[::1/db", "not a valid IP address"),
        ] {
            let err = DatabaseUrl::parse(input).expect_err(input);
            let msg = err.to_string();
            assert!(
                matches!(err, UrlError::MalformedPostgres { .. }),
                "{input}: {msg}"
            );
            assert!(msg.contains(problem), "{input}: {msg}");
            assert!(!msg.contains("secret") && !msg.contains("host/"), "{msg}");
        }
        // Text before `://` that is not a scheme is not echoed back either.
        let err = DatabaseUrl::parse("me:secret@db.internal://x").expect_err("no scheme");
        assert!(matches!(err, UrlError::BadScheme), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn accepts_the_documented_forms() {
        let p = |s| DatabaseUrl::parse(s).expect(s);
        assert_eq!(
            p("sqlite://cxauth.db").sqlite_path(),
            Some(Path::new("cxauth.db"))
        );
        assert_eq!(
            p("sqlite:///var/lib/x.db").sqlite_path(),
            Some(Path::new("/var/lib/x.db"))
        );
        assert_eq!(
            p("sqlite:x.db?mode=rwc").sqlite_path(),
            Some(Path::new("x.db"))
        );
        assert_eq!(
            p("/tmp/a b.db").sqlite_path(),
            Some(Path::new("/tmp/a b.db"))
        );
        assert_eq!(p("sqlite::memory:").sqlite_path(), None);
        assert!(p("memory").is_in_memory());
        assert_eq!(p("./memory").sqlite_path(), Some(Path::new("./memory")));
        assert_eq!(
            p("postgres://u:secret@h/db").to_string(),
            "postgres://u:[redacted]@h/db"
        );
        assert_eq!(
            p("sqlite://cxauth.db").default_key_file(),
            Some(PathBuf::from("cxauth.db.key"))
        );
        assert!(matches!(
            DatabaseUrl::parse("mysql://x"),
            Err(UrlError::UnsupportedScheme(_))
        ));
        for ok in [
            "postgres://cxauth:secret@db.internal/cxauth",
            "postgresql://u@127.0.0.1:5432/test?sslmode=disable",
            "POSTGRES://u:p%2Fw%40x@[::1]:5432/db",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
        ] {
            let url = p(ok);
            assert!(matches!(url, DatabaseUrl::Postgres { .. }), "{ok}");
        }
        assert_eq!(
            p("postgres://cxauth:secret@db.internal/cxauth").to_string(),
            "postgres://cxauth:[redacted]@db.internal/cxauth"
        );
        assert!(matches!(DatabaseUrl::parse(""), Err(UrlError::Empty)));
        assert!(matches!(
            DatabaseUrl::parse("sqlite://"),
            Err(UrlError::Empty)
        ));
    }
}
