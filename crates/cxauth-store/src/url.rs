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
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres {
                url: SecretUrl(s.to_owned()),
            });
        }
        let rest = if let Some(r) = s.strip_prefix("sqlite://") {
            r
        } else if let Some(r) = s.strip_prefix("sqlite:") {
            r
        } else if let Some((scheme, _)) = s.split_once("://") {
            return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
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

    proptest! {
        /// The mirror of the `database_url` fuzz target: parsing never panics, and a
        /// PostgreSQL password (and anything after `?` or `#`) never shows.
        #[test]
        fn a_postgres_password_never_shows(
            user in "[a-z]{1,8}",
            pw in "[A-Za-z0-9_-]{6,20}",
            host in "[a-z]{1,10}",
            tail in "[ -~]{0,30}",
        ) {
            // A marker no user, host or short tail will contain by chance.
            let pw = format!("Pw9_{pw}");
            let url = DatabaseUrl::parse(&format!("postgres://{user}:{pw}@{host}/db{tail}"));
            if let Ok(url) = url {
                prop_assert!(!url.to_string().contains(&pw), "{}", url);
            }
            let q = DatabaseUrl::parse(&format!("postgres://{host}/db?password={pw}#{tail}"));
            if let Ok(q) = q {
                prop_assert!(!q.to_string().contains(&pw), "{}", q);
            }
        }

        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            if let Ok(url) = DatabaseUrl::parse(&s) {
                let _ = (url.to_string(), url.default_key_file(), url.is_in_memory());
            }
        }
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
        assert!(matches!(DatabaseUrl::parse(""), Err(UrlError::Empty)));
        assert!(matches!(
            DatabaseUrl::parse("sqlite://"),
            Err(UrlError::Empty)
        ));
    }
}
