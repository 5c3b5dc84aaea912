//! `--config FILE`: precedence (flags > environment > file > defaults), secrets from files,
//! unknown keys refused by name, and `cxauth config check`.

mod common;

use assert_cmd::Command;
use std::ffi::OsStr;

fn cxauth() -> Command {
    let mut c = Command::cargo_bin("cxauth").expect("binary");
    for (k, _) in std::env::vars() {
        if k.starts_with("CXAUTH_") {
            c.env_remove(k);
        }
    }
    c
}

fn check(args: &[&OsStr], envs: &[(&str, &str)]) -> String {
    let out = cxauth()
        .args(["config", "check"])
        .args(args)
        .envs(envs.iter().copied())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).expect("utf8")
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("db-url");
    std::fs::write(&url, "postgres://cx:hunter2-db@db.example:5432/cxauth\n").expect("write");
    let pw = dir.path().join("admin-pw");
    std::fs::write(&pw, "hunter2-admin\n").expect("write");
    let file = dir.path().join("cxauth.toml");
    std::fs::write(
        &file,
        format!(
            "platform_id = \"from-file\"\naccess_token_ttl = \"2m\"\nrefresh_grace = \"45s\"\n\
             database_file = {:?}\nbootstrap_admin_password_file = {:?}\n\
             trusted_proxies = [\"10.0.0.1\"]\nmetrics_listen = \"off\"\n",
            url.display().to_string(),
            pw.display().to_string()
        ),
    )
    .expect("write");
    let out = check(
        &[
            OsStr::new("--config"),
            file.as_os_str(),
            OsStr::new("--platform-id"),
            OsStr::new("from-flag"),
            OsStr::new("--master-key-file"),
            OsStr::new("/etc/cxauth/key"),
        ],
        &[
            ("CXAUTH_ACCESS_TOKEN_TTL", "3m"),
            ("CXAUTH_PLATFORM_ID", "from-env"),
        ],
    );
    for line in [
        "platform_id = \"from-flag\"",
        "access_token_ttl = \"3m\"",
        "refresh_grace = \"45s\"",
        "refresh_token_ttl = \"7d\"",
        "trusted_proxies = [\"10.0.0.1\"]",
        "metrics_listen = \"off\"",
        "# bootstrap admin password: set ([redacted])",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
    }
    assert!(out.contains("db.example"), "{out}");
    assert!(!out.contains("hunter2"), "a secret was printed:\n{out}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cxauth.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\naccess_tokn_ttl = \"5m\"\n",
    )
    .expect("write");
    cxauth()
        .args(["config", "check", "--config"])
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("access_tokn_ttl"));
    std::fs::write(&file, "refresh_grace = \"soon\"\n").expect("write");
    cxauth()
        .args(["config", "check", "--config"])
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("refresh_grace"));
    cxauth()
        .args(["config", "check", "--config"])
        .arg(dir.path().join("missing.toml"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("does not exist"));
}

#[test]
fn the_example_file_is_valid() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cxauth.example.toml");
    check(&[OsStr::new("--config"), example.as_os_str()], &[]);
}

#[tokio::test]
async fn serve_runs_with_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("admin-pw");
    std::fs::write(&pw, "password-from-a-file\n").expect("write");
    let file = dir.path().join("cxauth.toml");
    std::fs::write(
        &file,
        format!(
            "database = \"sqlite://{}\"\nbootstrap_admin_password_file = {:?}\n\
             platform_id = \"filep\"\nmetrics_listen = \"off\"\n",
            dir.path().join("f.db").display(),
            pw.display().to_string()
        ),
    )
    .expect("write");
    let served = common::serve(&[OsStr::new("--config"), file.as_os_str()], &[]);
    served
        .client()
        .login("admin", "password-from-a-file", "filep")
        .await
        .expect("the file's password, database and platform are used");
    assert!(dir.path().join("f.db").exists());
}
