//! `cxauth serve` start-up: the listeners before the database, who gets bootstrapped, what is
//! said about it, the integrators' stand-in (`--database memory --seed FILE`), and the messages
//! of a start that cannot work.

use assert_cmd::Command;
mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn cxauth() -> Command {
    let mut c = Command::cargo_bin("cxauth").expect("binary");
    for (k, _) in std::env::vars() {
        if k.starts_with("CXAUTH_") {
            c.env_remove(k);
        }
    }
    c.timeout(Duration::from_secs(60));
    c
}

/// The example the README documents, as the repository ships it.
fn example_seed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed.toml")
}

/// `cxauth ARGS` expected to fail with `code`; returns stderr.
fn fails(args: &[&OsStr], code: i32) -> String {
    let out = cxauth().args(args).assert().code(code).get_output().clone();
    String::from_utf8(out.stderr).expect("utf8")
}

const FIXED_TOKEN: &str = "aws80:0b6f7a34-6f1e-4b8e-9c5a-2f6f3c1d9e21";

#[tokio::test]
async fn the_example_seed_runs_in_memory_and_its_users_and_fixed_token_work() {
    let seed = example_seed();
    let served = common::serve(
        &[
            OsStr::new("--database"),
            OsStr::new("memory"),
            OsStr::new("--seed"),
            seed.as_os_str(),
            OsStr::new("--metrics-listen"),
            OsStr::new("off"),
        ],
        &[],
    );
    // Users came from the seed: no admin was bootstrapped, no password shown, no key file made.
    let lines = served.first_lines.join("\n");
    assert!(!lines.contains("password:"), "{lines}");
    assert!(!lines.contains("master key file"), "{lines}");
    let client = served.client();

    let session = client
        .login("acme-admin", "acme-admin-password", "aws80")
        .await
        .expect("a seeded user logs in");
    let bearer = cxauth_client::Credential::Bearer(session.access_token.clone());
    let mut accounts: Vec<String> = client
        .accounts(&bearer)
        .await
        .expect("accounts")
        .into_iter()
        .map(|a| format!("{} {}", a.account_id, a.account_name))
        .collect();
    accounts.sort();
    assert_eq!(accounts, ["10000001 Sales", "10000002 Support"]);

    // The fixed token works as a credential and lists like a minted one.
    let fixed = cxauth_client::Credential::XAuthToken(FIXED_TOKEN.into());
    assert_eq!(
        client.list_api_tokens(&fixed).await.expect("fixed token"),
        vec![FIXED_TOKEN.to_owned()]
    );
    let users = client.users(&fixed, true, false).await.expect("users");
    assert_eq!(users.len(), 2, "acme-admin and its child acme-agent");

    let agent = client
        .login("acme-agent", "acme-agent-password", "aws80")
        .await
        .expect("the child logs in");
    let agent = cxauth_client::Credential::Bearer(agent.access_token);
    let sales: Vec<String> = client
        .accounts(&agent)
        .await
        .expect("accounts")
        .into_iter()
        .map(|a| a.account_name)
        .collect();
    assert_eq!(sales, ["Sales"]);

    client
        .login("globex-admin", "globex-admin-password", "aws82")
        .await
        .expect("another platform");
    client
        .login("acme-admin", "wrong", "aws80")
        .await
        .expect_err("a wrong password is still wrong");
    // Audit lines of the log name the client plainly.
    let log = served.log().join("\n");
    assert!(log.contains("client=127.0.0.1"), "{log}");
    assert!(!log.contains("client=Some("), "{log}");
}

#[tokio::test]
async fn a_seed_is_idempotent_and_json_works_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("seeded.db");
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"{
          "accounts": [{"name": "Acme", "sub_accounts": ["Sales"]}],
          "users": [{"username": "ann", "password": "ann-password", "grants": ["Acme"],
                     "roles": ["SUPER_USER"], "api_tokens": ["aws80:0b6f7a34-6f1e-4b8e-9c5a-2f6f3c1d9e21"]}]
        }"#,
    )
    .expect("write seed");
    let args = [
        OsStr::new("--database"),
        db.as_os_str(),
        OsStr::new("--seed"),
        seed.as_os_str(),
        OsStr::new("--metrics-listen"),
        OsStr::new("off"),
    ];
    let first = common::serve(&args, &[]);
    let log = first.log().join("\n");
    assert!(
        log.contains(
            "accounts_created=2 users_created=1 api_tokens_created=1 agents_created=0 unchanged=0"
        ),
        "{log}"
    );
    drop(first);

    let again = common::serve(&args, &[]);
    let log = again.log().join("\n");
    assert!(
        log.contains(
            "accounts_created=0 users_created=0 api_tokens_created=0 agents_created=0 unchanged=4"
        ),
        "{log}"
    );
    let client = again.client();
    let session = client
        .login("ann", "ann-password", "aws80")
        .await
        .expect("login");
    let bearer = cxauth_client::Credential::Bearer(session.access_token);
    assert_eq!(client.accounts(&bearer).await.expect("accounts").len(), 1);
    assert_eq!(
        client.list_api_tokens(&bearer).await.expect("tokens"),
        vec![FIXED_TOKEN.to_owned()]
    );

    // A bad seed fails the start, naming the entry.
    std::fs::write(
        &seed,
        r#"{"users": [{"username": "bob", "password": "x", "grants": ["Nope"]}]}"#,
    )
    .expect("write seed");
    let err = fails(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--metrics-listen"),
            OsStr::new("off"),
            OsStr::new("--database"),
            db.as_os_str(),
            OsStr::new("--seed"),
            seed.as_os_str(),
        ],
        1,
    );
    assert!(err.contains("seed user \"bob\": grant \"Nope\""), "{err}");
}

#[tokio::test]
async fn a_seed_declares_agents_and_ringex_links_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("agents.db");
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"{
          "accounts": [{"name": "Acme", "sub_accounts": ["Sales", "Support"], "rc_account_id": "37439510"}],
          "users": [{"username": "ann", "password": "ann-password", "grants": ["Acme"], "rc_user_id": 4242},
                    {"username": "bob", "password": "bob-password", "grants": ["Acme"]}],
          "agents": [{"username": "ann.support", "account": "Acme/Support", "user": "ann"},
                     {"username": "ann.sales", "account": "Acme/Sales", "rc_user_id": 4242,
                      "agent_type": "SUPERVISOR"},
                     {"username": "nobody", "account": "Acme/Sales"}]
        }"#,
    )
    .expect("write seed");
    let args = [
        OsStr::new("--database"),
        db.as_os_str(),
        OsStr::new("--seed"),
        seed.as_os_str(),
        OsStr::new("--metrics-listen"),
        OsStr::new("off"),
    ];
    let first = common::serve(&args, &[]);
    let log = first.log().join("\n");
    assert!(log.contains("agents_created=3"), "{log}");
    drop(first);
    // Again: nothing is added (agents are found by username).
    let again = common::serve(&args, &[]);
    let log = again.log().join("\n");
    assert!(log.contains("agents_created=0 unchanged=8"), "{log}");
    let client = again.client();
    let session = client
        .login("ann", "ann-password", "aws80")
        .await
        .expect("login");
    let agents: Vec<(&str, Option<&str>)> = session
        .agent_details
        .iter()
        .map(|a| (a.account_id.as_str(), a.agent_type.as_deref()))
        .collect();
    assert_eq!(
        agents,
        vec![
            ("10000001", Some("SUPERVISOR")),
            ("10000002", Some("AGENT"))
        ]
    );
    let bearer = cxauth_client::Credential::Bearer(session.access_token);
    let accounts = client.accounts(&bearer).await.expect("accounts");
    assert_eq!(accounts[0].rc_account_id.as_deref(), Some("37439510"));
    drop(again);

    // An agent linked by a user without a RingEX user id fails the start, naming the agent.
    std::fs::write(
        &seed,
        r#"{"agents": [{"username": "bob.agent", "account": 10000001, "user": "bob"}]}"#,
    )
    .expect("write seed");
    let err = fails(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--metrics-listen"),
            OsStr::new("off"),
            OsStr::new("--database"),
            db.as_os_str(),
            OsStr::new("--seed"),
            seed.as_os_str(),
        ],
        1,
    );
    assert!(
        err.contains("seed agent \"bob.agent\": user \"bob\" has no RingEX user id"),
        "{err}"
    );
}

#[test]
fn a_busy_port_fails_before_any_database_or_admin_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("never.db");
    let err = fails(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new(&addr),
            OsStr::new("--metrics-listen"),
            OsStr::new("off"),
            OsStr::new("--database"),
            db.as_os_str(),
        ],
        1,
    );
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!err.contains("password"), "{err}");
    assert!(!db.exists(), "no database");
    assert!(!dir.path().join("never.db.key").exists(), "no key file");
}

#[tokio::test]
async fn a_bootstrap_password_for_a_bootstrapped_database_is_reported_as_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("boot.db");
    let args = [
        OsStr::new("--database"),
        db.as_os_str(),
        OsStr::new("--metrics-listen"),
        OsStr::new("off"),
    ];
    let first = common::serve(&args, &[]);
    let hint = first
        .first_lines
        .iter()
        .find(|l| l.contains("change it with"))
        .expect("hint")
        .clone();
    assert!(
        hint.contains(&format!(
            "cxauth admin --database sqlite://{} user set-password admin",
            db.display()
        )),
        "the hint names the database: {hint}"
    );
    drop(first);
    let again = common::serve(&args, &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", "too-late")]);
    let log = again.log().join("\n");
    assert!(
        log.contains(
            "CXAUTH_BOOTSTRAP_ADMIN_PASSWORD (or bootstrap_admin_password_file) was ignored"
        ),
        "{log}"
    );
    assert!(log.contains(&db.display().to_string()), "{log}");
    assert!(!log.contains("too-late"), "never the password itself");
}

#[tokio::test]
async fn accounts_without_users_get_an_admin_and_all_disabled_users_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("accounts.db");
    let url = format!("sqlite://{}", db.display());
    cxauth()
        .args([
            "admin",
            "--database",
            &url,
            "account",
            "create",
            "--name",
            "Sales",
        ])
        .assert()
        .success();
    let args = [
        OsStr::new("--database"),
        db.as_os_str(),
        OsStr::new("--metrics-listen"),
        OsStr::new("off"),
    ];
    let served = common::serve(&args, &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", "pw-admin")]);
    let client = served.client();
    let session = client
        .login("admin", "pw-admin", "aws80")
        .await
        .expect("admin was made");
    let bearer = cxauth_client::Credential::Bearer(session.access_token);
    client.accounts(&bearer).await.expect("its accounts");
    drop(served);

    cxauth()
        .args(["admin", "--database", &url, "user", "disable", "admin"])
        .assert()
        .success();
    let mut all = vec![
        OsStr::new("serve"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
    ];
    all.extend(args);
    let err = fails(&all, 1);
    assert!(
        err.contains(&format!(
            "`cxauth admin --database '{url}' user enable admin`"
        )),
        "{err}"
    );
}

#[test]
fn messages_name_the_root_cause_once() {
    // PostgreSQL not listening: "connection refused", at once, the password redacted readably.
    let err = fails(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--metrics-listen"),
            OsStr::new("off"),
            OsStr::new("--database"),
            OsStr::new("postgres://cx:hunter2@127.0.0.1:1/cx"),
        ],
        1,
    );
    assert!(err.contains("connection refused"), "{err}");
    assert!(
        err.contains("postgres://cx:[redacted]@127.0.0.1:1/cx"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2") && !err.contains("pool timed out"),
        "{err}"
    );
    assert_eq!(err.matches("cannot open database").count(), 1, "{err}");

    // A missing directory is named.
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir");
    let err = fails(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--metrics-listen"),
            OsStr::new("off"),
            OsStr::new("--database"),
            missing.join("x.db").as_os_str(),
        ],
        1,
    );
    let said = format!("the directory {} does not exist", missing.display());
    assert_eq!(err.matches(&said).count(), 1, "{err}");

    // `--port` says what to write instead.
    let err = fails(
        &[
            OsStr::new("serve"),
            OsStr::new("--port"),
            OsStr::new("8081"),
        ],
        2,
    );
    assert!(err.contains("use --listen 127.0.0.1:8081"), "{err}");
    assert!(!err.contains("platform-id"), "{err}");

    // A misspelt key of the configuration file gets a suggestion.
    let file = dir.path().join("cx.toml");
    std::fs::write(&file, "listn = \"127.0.0.1:9\"\n").expect("write");
    let err = fails(
        &[
            OsStr::new("config"),
            OsStr::new("check"),
            OsStr::new("--config"),
            file.as_os_str(),
        ],
        1,
    );
    assert!(
        err.contains("unknown key \"listn\"; did you mean \"listen\"?"),
        "{err}"
    );
    assert!(!err.contains("default.") && !err.contains('`'), "{err}");
}

#[test]
fn listen_takes_a_port_alone_and_host_names() {
    for (given, shown) in [
        ("8081", "127.0.0.1:8081"),
        (":8082", "127.0.0.1:8082"),
        ("localhost:8083", "127.0.0.1:8083"),
    ] {
        let out = cxauth()
            .args(["config", "check", "--listen", given, "--database", "memory"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let out = String::from_utf8(out).expect("utf8");
        assert!(
            out.contains(&format!("listen = \"{shown}\"")),
            "{given}: {out}"
        );
        assert!(out.contains("database = \"sqlite::memory:\""), "{out}");
    }
}
