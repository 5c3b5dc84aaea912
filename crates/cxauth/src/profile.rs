//! Saved sessions, one JSON file per profile under the user's config directory.
//!
//! `$XDG_CONFIG_HOME/cxauth/profiles/<name>.json` (or `~/.config/…`), mode 0600 in a 0700
//! directory: the file holds a refresh token, which is as good as the password until it is used.
//! Every write goes to a fresh temporary file that is renamed over the old one, so a crash or a
//! concurrent command never leaves half a session behind.

use anyhow::Context as _;
use cxauth_client::Session;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What `cxauth login` saves and later commands resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Server the session belongs to; its tokens are never sent anywhere else.
    pub server: String,
    /// Who logged in, for `whoami` and messages.
    pub username: String,
    /// Platform logged in to.
    pub platform_id: String,
    /// The latest session (rotated by every refresh).
    pub session: Session,
}

/// Where profiles live, and how to read and write them.
#[derive(Debug, Clone)]
pub struct ProfileDir {
    dir: PathBuf,
}

impl ProfileDir {
    /// The store in the user's config directory (`XDG_CONFIG_HOME` honoured).
    pub fn from_env() -> anyhow::Result<Self> {
        let base = dirs::config_dir()
            .context("cannot find a config directory: set XDG_CONFIG_HOME or HOME")?;
        Ok(ProfileDir {
            dir: base.join("cxauth").join("profiles"),
        })
    }

    /// The file of profile `name`.
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            anyhow::bail!(
                "profile name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
            );
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Profile `name`, or `None` if nobody logged in under it.
    pub fn load(&self, name: &str) -> anyhow::Result<Option<Profile>> {
        let path = self.path(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let profile = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is damaged: delete it and run `cxauth login`",
                path.display()
            )
        })?;
        Ok(Some(profile))
    }

    /// Saves profile `name` atomically with mode 0600.
    pub fn save(&self, name: &str, profile: &Profile) -> anyhow::Result<()> {
        let path = self.path(name)?;
        create_private_dir(&self.dir)?;
        let json = serde_json::to_vec_pretty(profile)?;
        let tmp = self.dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let result = write_private(&tmp, &json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Waits for, then holds until dropped, the exclusive lock of profile `name`.
    ///
    /// Two `cxauth` commands running at once on one profile would otherwise both refresh the same
    /// refresh token and save different successors; the server keeps only one, so the session
    /// could end. Holding the lock from loading the profile to saving its rotation makes refreshes
    /// single-flight across processes too (the SDK does it within one).
    ///
    /// The lock file lives only as long as the profile (see [`ProfileDir::unlock_unused`]). Since a
    /// holder may delete it, a lock taken on a file that is no longer the one at its path is
    /// let go and taken again on the current file, so two commands never hold "the" lock at once.
    pub fn lock(&self, name: &str) -> anyhow::Result<std::fs::File> {
        self.path(name)?;
        create_private_dir(&self.dir)?;
        let path = self.lock_path(name);
        // Bounded: a path whose metadata cannot be read would otherwise be retried forever.
        for _ in 0..100 {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let file = o
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
            if still_at(&file, &path) {
                return Ok(file);
            }
        }
        anyhow::bail!(
            "cannot lock {}: it keeps being deleted or replaced",
            path.display()
        )
    }

    /// Deletes the lock file of profile `name`, whose lock `lock` the caller holds, when no
    /// profile is saved under that name (nobody logged in, or just logged out): a lock file is
    /// kept only beside the session it protects, so no `NAME.lock` is left behind by a mistyped
    /// `--profile`.
    pub fn unlock_unused(&self, name: &str, lock: std::fs::File) -> anyhow::Result<()> {
        if !self.path(name)?.exists() {
            let path = self.lock_path(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delete {}", path.display()));
                }
            }
        }
        drop(lock);
        Ok(())
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    /// Forgets profile `name`; forgetting a missing profile is fine.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
    }
}

/// Whether `file` is still the file at `path` (not deleted or replaced since it was opened).
#[cfg(unix)]
fn still_at(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_at(_: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_cannot_escape_the_directory() {
        let s = ProfileDir {
            dir: PathBuf::from("/x"),
        };
        for bad in ["", "../a", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(s.path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            s.path("work-2").expect("valid"),
            PathBuf::from("/x/work-2.json")
        );
    }
}
