//! The one layered configuration chain: the defaults of [`ServerConfig::default`], then the
//! `--config` file, then `CXAUTH_*` environment variables, then the flags given on the command
//! line; each later layer wins. Every setting is reachable from each layer under one name: the
//! field name in the file (`access_token_ttl`), `CXAUTH_` and the name in capitals in the
//! environment (`CXAUTH_ACCESS_TOKEN_TTL`), and the same name with `-` for `_` as a flag.

use super::ServerConfig;
use figment::providers::{Format as _, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use std::path::{Path, PathBuf};

/// Why a configuration could not be read: a message for a person, naming the file and key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Secrets that can live in files of their own (mode 0600), named in the configuration file
/// with a `*_file` key: the file key, and the setting its content is.
const SECRET_FILES: [(&str, &str); 2] = [
    ("database_file", "database"),
    ("bootstrap_admin_password_file", "bootstrap_admin_password"),
];

/// Settings the configuration file may not hold in clear (only as their `*_file`).
const NOT_IN_FILE: [&str; 1] = ["bootstrap_admin_password"];

/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "CXAUTH_";

impl ServerConfig {
    /// Every setting's name (its key in the file), sorted.
    pub fn keys() -> Vec<String> {
        defaults().into_keys().collect()
    }

    /// The defaults as text, by key, for `--help`; unset settings are left out.
    pub fn default_texts() -> Vec<(String, String)> {
        defaults()
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(_, s) => Some((k, s)),
                Value::Num(_, n) => n.to_u128().map(|n| (k, n.to_string())),
                Value::Array(_, a) if !a.is_empty() => Some((
                    k,
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                _ => None,
            })
            .collect()
    }

    /// Reads the configuration: defaults, then `file` (if any), then the environment, then
    /// `flags` (the settings given on the command line, by key, as text or lists of text), and
    /// checks it with [`ServerConfig::validate`].
    pub fn load(file: Option<&Path>, flags: Dict) -> Result<ServerConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "the configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(SecretFiles(path.to_owned()));
        }
        let config: ServerConfig = figment
            .merge(Layer::environment())
            .merge(Layer::flags(flags))
            // Lossy: the environment and flags are text, `"100"` stands for a number there.
            .extract_lossy()
            .map_err(|e| ConfigError(describe(&e)))?;
        config
            .validate()
            .map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        Ok(config)
    }
}

/// The defaults, by key (every setting has a key here: unset ones hold an empty value).
fn defaults() -> Dict {
    Value::serialize(ServerConfig::default())
        .ok()
        .and_then(Value::into_dict)
        .unwrap_or_default()
}

/// The configuration file, with each `*_file` secret replaced by its file's content.
struct SecretFiles(PathBuf);

impl Provider for SecretFiles {
    fn metadata(&self) -> Metadata {
        Toml::file_exact(&self.0).metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = Toml::file_exact(&self.0).data()?;
        for dict in data.values_mut() {
            for key in NOT_IN_FILE {
                if dict.contains_key(key) {
                    return Err(figment::Error::from(format!(
                        "{key}: a secret is not written in the configuration file; put it in a \
                         file of its own and name that with {key}_file"
                    )));
                }
            }
            for (file_key, key) in SECRET_FILES {
                let Some(path) = dict.remove(file_key) else {
                    continue;
                };
                let path = path.into_string().ok_or_else(|| {
                    figment::Error::from(format!("{file_key}: expected the path of a file"))
                })?;
                let secret = read_secret(Path::new(&path)).map_err(figment::Error::from)?;
                dict.insert(key.to_owned(), Value::from(secret));
            }
        }
        Ok(data)
    }
}

/// The content of a secret file, without its final line break.
fn read_secret(path: &Path) -> Result<String, String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

/// Settings as text, from the environment or the command line.
struct Layer {
    name: &'static str,
    dict: Dict,
}

impl Layer {
    /// `CXAUTH_KEY` for each setting `key`; empty variables count as unset (as clap has it).
    fn environment() -> Self {
        let dict = ServerConfig::keys()
            .into_iter()
            .filter_map(|key| {
                let value = std::env::var(format!("{ENV_PREFIX}{}", key.to_uppercase())).ok()?;
                (!value.is_empty()).then(|| (key, Value::from(value)))
            })
            .collect();
        Layer {
            name: "environment",
            dict,
        }
    }

    fn flags(dict: Dict) -> Self {
        Layer {
            name: "command line",
            dict,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.dict.clone())]))
    }
}

/// Reads a seed file: TOML, or JSON when its name ends in `.json`.
pub fn load_seed(path: &Path) -> Result<cxauth_core::admin::Seed, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the seed file {}: {e}", path.display()))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        Figment::from(Toml::string(&text))
            .extract()
            .map_err(|e| format!("{}: {}", path.display(), describe(&e)))
    }
}

/// A configuration (or seed) file error in words for a person: each problem as `KEY: what`
/// (after the file's name when it came from one), an unknown key with the nearest known one
/// ("did you mean"), and none of figment's internal profile prefix (`default.`) or nested
/// quoting.
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
        let file = e.metadata.as_ref().and_then(|m| match &m.source {
            Some(figment::Source::File(p)) => Some(p.display().to_string()),
            _ => None,
        });
        let line = match file {
            Some(f) => format!("{f}: {line}"),
            None => line,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_gets_a_suggestion_without_internal_prefixes() {
        let e = Figment::from(Toml::string("listn = \"127.0.0.1:1\""))
            .extract::<ServerConfig>()
            .expect_err("unknown key");
        let said = describe(&e);
        assert_eq!(said, "unknown key \"listn\"; did you mean \"listen\"?");
        let e = Figment::from(Toml::string("max_sessions_per_user = \"x\""))
            .extract::<ServerConfig>()
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

    #[test]
    fn the_defaults_survive_their_own_layer() {
        // The defaults layer is the defaults serialized: reading it back changes nothing.
        let read: ServerConfig = Figment::from(Serialized::defaults(ServerConfig::default()))
            .extract_lossy()
            .expect("defaults read back");
        assert_eq!(
            format!("{read:?}"),
            format!("{:?}", ServerConfig::default())
        );
        let keys = ServerConfig::keys();
        for key in [
            "seed",
            "bootstrap_admin_password",
            "hash_workers",
            "log_format",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
    }

    #[test]
    fn flags_beat_the_file_and_text_stands_for_numbers() {
        let dir = std::env::temp_dir().join(format!("cxauth-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "hash_workers = 3\nbody_limit = 1000\nplatform_id = \"f\"\n",
        )
        .expect("write");
        let flags = Dict::from([
            ("body_limit".to_owned(), Value::from("2000".to_owned())),
            ("hash_queue".to_owned(), Value::from("7".to_owned())),
            ("log_format".to_owned(), Value::from("json".to_owned())),
        ]);
        let c = ServerConfig::load(Some(&file), flags).expect("loads");
        assert_eq!((c.hash_workers, c.body_limit, c.hash_queue), (3, 2000, 7));
        assert_eq!(c.platform_id, "f");
        assert_eq!(c.log_format, super::super::LogFormat::Json);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
