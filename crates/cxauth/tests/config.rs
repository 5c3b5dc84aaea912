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

/// Every setting, a value other than its default, and the line `config check` shows for it.
/// `toml` is the value as the file writes it; the environment and flags take `text`.
struct Setting {
    key: &'static str,
    text: &'static str,
    toml: &'static str,
    shown: &'static str,
}

const fn s(
    key: &'static str,
    text: &'static str,
    toml: &'static str,
    shown: &'static str,
) -> Setting {
    Setting {
        key,
        text,
        toml,
        shown,
    }
}

const EVERY_SETTING: &[Setting] = &[
    s(
        "listen",
        "127.0.0.1:8181",
        "\"127.0.0.1:8181\"",
        "listen = \"127.0.0.1:8181\"",
    ),
    s(
        "database",
        "memory",
        "\"memory\"",
        "database = \"sqlite::memory:\"",
    ),
    s(
        "platform_id",
        "walk1",
        "\"walk1\"",
        "platform_id = \"walk1\"",
    ),
    s(
        "access_token_ttl",
        "2m",
        "\"2m\"",
        "access_token_ttl = \"2m\"",
    ),
    s(
        "refresh_token_ttl",
        "2d",
        "\"2d\"",
        "refresh_token_ttl = \"2d\"",
    ),
    s("refresh_grace", "20s", "\"20s\"", "refresh_grace = \"20s\""),
    s(
        "master_key_file",
        "/tmp/walk.key",
        "\"/tmp/walk.key\"",
        "master_key_file = \"/tmp/walk.key\"",
    ),
    s(
        "trusted_proxies",
        "10.1.2.3",
        "[\"10.1.2.3\"]",
        "trusted_proxies = [\"10.1.2.3\"]",
    ),
    s(
        "request_timeout",
        "20s",
        "\"20s\"",
        "request_timeout = \"20s\"",
    ),
    s(
        "database_timeout",
        "3s",
        "\"3s\"",
        "database_timeout = \"3s\"",
    ),
    s(
        "ringex_server",
        "https://ringex.example/",
        "\"https://ringex.example/\"",
        "ringex_server = \"https://ringex.example/\"",
    ),
    s("ringex_emulator", "true", "true", "ringex_emulator = true"),
    s(
        "ringex_emulator_access_ttl",
        "30s",
        "\"30s\"",
        "ringex_emulator_access_ttl = \"30s\"",
    ),
    s(
        "ringex_emulator_refresh_ttl",
        "2h",
        "\"2h\"",
        "ringex_emulator_refresh_ttl = \"2h\"",
    ),
    s(
        "ringex_cache_ttl",
        "10s",
        "\"10s\"",
        "ringex_cache_ttl = \"10s\"",
    ),
    s("ringex_timeout", "4s", "\"4s\"", "ringex_timeout = \"4s\""),
    s(
        "shutdown_timeout",
        "9s",
        "\"9s\"",
        "shutdown_timeout = \"9s\"",
    ),
    s(
        "audit_retention",
        "30d",
        "\"30d\"",
        "audit_retention = \"30d\"",
    ),
    s(
        "metrics_listen",
        "off",
        "\"off\"",
        "metrics_listen = \"off\"",
    ),
    s(
        "max_sessions_per_user",
        "7",
        "7",
        "max_sessions_per_user = 7",
    ),
    s(
        "logins_per_user_per_minute",
        "8",
        "8",
        "logins_per_user_per_minute = 8",
    ),
    s(
        "logins_in_flight_per_source",
        "9",
        "9",
        "logins_in_flight_per_source = 9",
    ),
    s("api_token_cap", "11", "11", "api_token_cap = 11"),
    s(
        "credential_cache_staleness",
        "120ms",
        "\"120ms\"",
        "credential_cache_staleness = \"120ms\"",
    ),
    s(
        "credential_cache_entries",
        "77",
        "77",
        "credential_cache_entries = 77",
    ),
    s(
        "header_read_timeout",
        "8s",
        "\"8s\"",
        "header_read_timeout = \"8s\"",
    ),
    s(
        "keep_alive_timeout",
        "70s",
        "\"70s\"",
        "keep_alive_timeout = \"70s\"",
    ),
    s("max_connections", "500", "500", "max_connections = 500"),
    s("body_limit", "1000", "1000", "body_limit = 1000"),
    s("hash_workers", "3", "3", "hash_workers = 3"),
    s("hash_queue", "33", "33", "hash_queue = 33"),
    s("log_format", "json", "\"json\"", "log_format = \"json\""),
];

#[test]
fn every_setting_is_reachable_from_the_file_the_environment_and_a_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed.toml");
    let seed = seed.display().to_string();
    let expect = |out: &str, layer: &str| {
        for setting in EVERY_SETTING {
            assert!(
                out.lines().any(|l| l == setting.shown),
                "{layer}: {} not in\n{out}",
                setting.shown
            );
        }
        assert!(
            out.lines().any(|l| l.starts_with("# seed: ")),
            "{layer}:\n{out}"
        );
    };

    // The file.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "walk-password\n").expect("write");
    let mut toml = String::new();
    for setting in EVERY_SETTING {
        toml.push_str(&format!("{} = {}\n", setting.key, setting.toml));
    }
    toml.push_str(&format!("seed = {seed:?}\n"));
    toml.push_str(&format!(
        "bootstrap_admin_password_file = {:?}\n",
        pw.display().to_string()
    ));
    let file = dir.path().join("all.toml");
    std::fs::write(&file, toml).expect("write");
    let out = check(&[OsStr::new("--config"), file.as_os_str()], &[]);
    expect(&out, "file");
    assert!(
        out.contains("# bootstrap admin password: set ([redacted])"),
        "{out}"
    );

    // The environment.
    let names: Vec<String> = EVERY_SETTING
        .iter()
        .map(|s| format!("CXAUTH_{}", s.key.to_uppercase()))
        .collect();
    let mut envs: Vec<(&str, &str)> = names
        .iter()
        .zip(EVERY_SETTING)
        .map(|(n, s)| (n.as_str(), s.text))
        .collect();
    envs.push(("CXAUTH_SEED", &seed));
    envs.push(("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", "walk-password"));
    let out = check(&[], &envs);
    expect(&out, "environment");
    assert!(
        out.contains("# bootstrap admin password: set ([redacted])"),
        "{out}"
    );

    // The flags.
    let mut args: Vec<String> = Vec::new();
    for setting in EVERY_SETTING {
        match setting.key {
            "ringex_emulator" => args.push("--ringex-emulator".into()),
            "trusted_proxies" => args.extend(["--trusted-proxy".into(), setting.text.into()]),
            key => args.extend([format!("--{}", key.replace('_', "-")), setting.text.into()]),
        }
    }
    args.extend(["--seed".into(), seed.clone()]);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    expect(&check(&args, &[]), "flags");
}

#[tokio::test]
async fn the_json_log_format_writes_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("j.db").display());
    let served = common::serve(
        &[
            "--log-format",
            "json",
            "--metrics-listen",
            "off",
            "--database",
            &db,
        ],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", "json-log-password")],
    );
    let logged: Vec<serde_json::Value> = served
        .first_lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l["message"] == "cxauth listening" && l["level"] == "INFO"),
        "{:#?}",
        served.first_lines
    );
    let lines = served.first_lines.join("\n");
    assert!(!lines.contains("json-log-password"), "{lines}");
}
