//! The `cxauth` binary as scripts and operators use it: `admin`, `generate-master-key`, `serve`.

use predicates::prelude::*;

use cxauth_testkit::cli::Served;
use cxauth_testkit::{Backend, TestDb};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cxauth_testkit::cli::cxauth;

/// A fresh database; `path` is its file on SQLite.
struct Db {
    db: TestDb,
    path: Option<PathBuf>,
}

/// A fresh database of the selected backend.
fn db() -> Db {
    db_on(Backend::selected())
}

fn db_on(backend: Backend) -> Db {
    let db = TestDb::on_blocking(backend);
    Db {
        path: db.sqlite_path(),
        db,
    }
}

impl Db {
    fn url(&self) -> String {
        self.db.url().to_owned()
    }

    /// Runs `cxauth admin --database URL ARGS` with `stdin`, expecting success; returns stdout.
    fn admin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = cxauth()
            .arg("admin")
            .arg("--database")
            .arg(self.url())
            .args(args)
            .write_stdin(stdin)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).expect("utf8")
    }

    fn admin_err(&self, args: &[&str], stdin: &str) -> String {
        let out = cxauth()
            .arg("admin")
            .arg("--database")
            .arg(self.url())
            .args(args)
            .write_stdin(stdin)
            .assert()
            .failure()
            .code(1)
            .stdout("")
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8(out).expect("utf8");
        assert_eq!(err.trim_end().lines().count(), 1, "one-line error: {err}");
        err
    }

    fn user_count(&self) -> usize {
        self.admin_ok(&["user", "list"], "").lines().count() - 1
    }
}

fn id(out: &str) -> i64 {
    assert!(
        out.ends_with('\n') && out.lines().count() == 1,
        "id alone on stdout: {out:?}"
    );
    out.trim().parse().expect("numeric id")
}

#[test]
fn accounts_and_users_are_created_and_their_ids_printed_alone() {
    let db = db();
    let main = id(&db.admin_ok(&["account", "create", "--name", "Sales"], ""));
    assert_eq!(main % 10_000, 0);
    let sub = id(&db.admin_ok(
        &[
            "account",
            "create",
            "--name",
            "EU",
            "--main",
            &main.to_string(),
        ],
        "",
    ));
    assert_eq!(sub, main + 1);
    let sub2 = id(&db.admin_ok(
        &[
            "account",
            "create",
            "--name",
            "US",
            "--main",
            &main.to_string(),
        ],
        "",
    ));
    assert_eq!(sub2, main + 2);
    let boss = id(&db.admin_ok(
        &[
            "user",
            "create",
            "--username",
            "boss",
            "--password-stdin",
            "--grant",
            &main.to_string(),
            "--role",
            "SUPER_USER",
            "--first-name",
            "Big",
            "--last-name",
            "Boss",
        ],
        "boss-password\n",
    ));
    // --database after the subcommand, and the environment variable, work too.
    let out = cxauth()
        .args([
            "admin",
            "user",
            "create",
            "--username",
            "worker",
            "--password-stdin",
            "--parent",
            "boss",
            "--database",
            &db.url(),
        ])
        .write_stdin("worker-password\n")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let worker = id(&String::from_utf8(out).expect("utf8"));
    assert!(worker > boss);
    let out = cxauth()
        .env("CXAUTH_DATABASE", db.url())
        .args(["admin", "user", "list"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let list = String::from_utf8(out).expect("utf8");
    let worker_line = list
        .lines()
        .find(|l| l.contains("\tworker\t"))
        .expect("worker listed");
    assert!(
        worker_line.contains(&format!("\t{main}\t{boss}\t")),
        "{worker_line}"
    );
    // A bare file path works as a database URL (SQLite only: PostgreSQL has no file).
    if let Some(path) = &db.path {
        cxauth()
            .args(["admin", "--database"])
            .arg(path)
            .args(["user", "list"])
            .assert()
            .success()
            .stdout(predicate::str::contains("boss"));
    }
}

#[test]
fn bad_input_is_a_one_line_error_and_writes_nothing() {
    let db = db();
    let main = id(&db.admin_ok(&["account", "create", "--name", "M"], "")).to_string();
    db.admin_ok(
        &[
            "user",
            "create",
            "--username",
            "taken",
            "--password-stdin",
            "--grant",
            &main,
        ],
        "pw\n",
    );
    let before = db.user_count();
    for (args, stdin, says) in [
        (
            vec![
                "user",
                "create",
                "--username",
                "taken",
                "--password-stdin",
                "--grant",
                &main,
            ],
            "pw\n",
            "already exists",
        ),
        (
            vec![
                "user",
                "create",
                "--username",
                "x",
                "--password-stdin",
                "--parent",
                "ghost",
            ],
            "pw\n",
            "ghost",
        ),
        (
            vec![
                "user",
                "create",
                "--username",
                "x",
                "--password-stdin",
                "--grant",
                "99990000",
            ],
            "pw\n",
            "99990000",
        ),
        (
            vec![
                "user",
                "create",
                "--username",
                "x",
                "--password-stdin",
                "--grant",
                &main,
            ],
            "\n",
            "password must not be empty",
        ),
        (
            vec!["user", "create", "--username", "x", "--password-stdin"],
            "pw\n",
            "--parent",
        ),
        (
            vec![
                "user",
                "create",
                "--username",
                "x y",
                "--password-stdin",
                "--grant",
                &main,
            ],
            "pw\n",
            "username",
        ),
        (
            vec![
                "user",
                "create",
                "--username",
                "x",
                "--password-stdin",
                "--grant",
                &main,
                "--role",
                "boss",
            ],
            "pw\n",
            "role",
        ),
        (
            vec![
                "user",
                "create",
                "--username",
                "x",
                "--password-stdin",
                "--grant",
                &main,
                "--platform",
                "a:b",
            ],
            "pw\n",
            "platform",
        ),
        (vec!["user", "disable", "ghost"], "", "ghost"),
        (
            vec!["user", "set-password", "ghost", "--password-stdin"],
            "pw\n",
            "ghost",
        ),
    ] {
        let err = db.admin_err(&args, stdin);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(db.user_count(), before);
    let err = db.admin_err(&["account", "create", "--name", "S", "--main", "12345"], "");
    assert!(err.contains("12345"), "{err}");
    let err = db.admin_err(&["account", "create", "--name", "  "], "");
    assert!(err.contains("empty"), "{err}");
    // A sub-account is not a main account.
    let sub =
        id(&db.admin_ok(&["account", "create", "--name", "S", "--main", &main], "")).to_string();
    let err = db.admin_err(&["account", "create", "--name", "T", "--main", &sub], "");
    assert!(err.contains("sub-account"), "{err}");
    // Usage errors exit 2 and say how to use the command.
    cxauth()
        .args(["admin", "user", "create", "--username", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--password-stdin"));
    cxauth()
        .args(["serve", "--access-token-ttl", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("duration"));
}

#[test]
fn generate_master_key_writes_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("master.key");
    cxauth()
        .arg("generate-master-key")
        .arg(&key)
        .assert()
        .success()
        .stdout("");
    let first = std::fs::read(&key).expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
    cxauth()
        .arg("generate-master-key")
        .arg(&key)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("never overwritten"));
    assert_eq!(std::fs::read(&key).expect("key"), first);
}

/// `cxauth serve` on the SQLite file `db`. The `serve` tests stay on SQLite: they are about a
/// first start on a new file (the master key made beside it, the bootstrap printed once) and
/// restarts on that file; the cluster tests cover PostgreSQL's start-up.
fn serve(db: &Path, envs: &[(&str, &str)]) -> Served {
    cxauth_testkit::cli::serve(&[OsStr::new("--database"), db.as_os_str()], envs)
}

fn start_fails(db: &Path, envs: &[(&str, &str)]) -> String {
    let out = cxauth()
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(db)
        .envs(envs.iter().copied())
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    String::from_utf8(out).expect("utf8")
}

#[tokio::test]
async fn serve_bootstraps_once_and_the_curl_walkthrough_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("served.db");
    let served = serve(&db, &[]);
    let password = served
        .first_lines
        .iter()
        .find_map(|l| l.strip_prefix("cxauth: created user \"admin\" with password: "))
        .expect("password printed once")
        .trim()
        .to_owned();
    let key = dir.path().join("served.db.key");
    assert!(key.exists(), "key file beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    let client = cxauth_client::Client::new(&served.base).expect("client");
    client.healthz().await.expect("healthz");
    // The README's curl line: credentials in the query string.
    let res = reqwest::Client::new()
        .post(format!(
            "{}/api/auth/login/admin?username=admin&password={password}&platformId=aws80",
            served.base
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let session: cxauth_client::Session = res.json().await.expect("session");
    let bearer = cxauth_client::Credential::Bearer(session.access_token.clone());
    let token = client.create_api_token(&bearer).await.expect("token");
    let api = cxauth_client::Credential::XAuthToken(token.clone());
    assert_eq!(
        client.list_api_tokens(&api).await.expect("list"),
        vec![token.clone()]
    );

    // The admin CLI works on the database while the server runs, and the server sees it at once
    // (a new user) or within the credential cache's bound (a disable).
    let out = cxauth()
        .args(["admin", "--database"])
        .arg(&db)
        .args([
            "user",
            "create",
            "--username",
            "ops",
            "--password-stdin",
            "--parent",
            "admin",
        ])
        .write_stdin("ops-password\n")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    id(&String::from_utf8(out).expect("utf8"));
    client
        .login("ops", "ops-password", "aws80")
        .await
        .expect("new user logs in");
    cxauth()
        .args(["admin", "--database"])
        .arg(&db)
        .args(["user", "disable", "admin"])
        .assert()
        .success();
    // Another process's change reaches the server's credential cache within its staleness
    // bound (250 ms by default; see docs/decisions.md, "Credential cache").
    let since = std::time::Instant::now();
    while client.accounts(&api).await.is_ok() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(1),
            "disabled within the bound"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cxauth()
        .args(["admin", "--database"])
        .arg(&db)
        .args(["user", "enable", "admin"])
        .assert()
        .success();
    let since = std::time::Instant::now();
    while client.accounts(&api).await.is_err() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(1),
            "enabled within the bound"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    client.delete_api_token(&api, &token).await.expect("delete");
    drop(served);

    // The second start prints no password and keeps the data.
    let again = serve(&db, &[]);
    assert!(
        !again.first_lines.iter().any(|l| l.contains("password:")),
        "{:#?}",
        again.first_lines
    );
    let client = cxauth_client::Client::new(&again.base).expect("client");
    client
        .login("admin", &password, "aws80")
        .await
        .expect("same password");
    drop(again);

    // Without its key file the server refuses to start and makes no new key.
    std::fs::rename(&key, dir.path().join("moved.key")).expect("move key");
    let err = start_fails(&db, &[]);
    assert!(err.contains("CXAUTH_MASTER_KEY_FILE"), "{err}");
    assert!(!key.exists());
    // Pointing CXAUTH_MASTER_KEY_FILE at it works.
    let moved = dir.path().join("moved.key");
    let back = serve(
        &db,
        &[("CXAUTH_MASTER_KEY_FILE", moved.to_str().expect("utf8"))],
    );
    cxauth_client::Client::new(&back.base)
        .expect("client")
        .healthz()
        .await
        .expect("up");
}

#[tokio::test]
async fn serve_takes_the_bootstrap_password_and_settings_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("env.db");
    let served = serve(
        &db,
        &[
            ("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", "from-the-env"),
            ("CXAUTH_PLATFORM_ID", "aws82"),
            ("CXAUTH_ACCESS_TOKEN_TTL", "90s"),
            ("RUST_LOG", "debug"),
        ],
    );
    assert!(
        !served
            .first_lines
            .iter()
            .any(|l| l.contains("from-the-env"))
    );
    let client = cxauth_client::Client::new(&served.base).expect("client");
    let session = client
        .login("admin", "from-the-env", "aws82")
        .await
        .expect("login");
    assert_eq!(session.expires_in, 90);
    let token = client
        .create_api_token(&cxauth_client::Credential::Bearer(
            session.access_token.clone(),
        ))
        .await
        .expect("token");
    assert!(token.starts_with("aws82:"));
    client
        .logout(session.refresh_token.as_deref().expect("rt"))
        .await
        .expect("logout");
    // Even at debug level, no secret reaches the log.
    let _ = client
        .login("admin", "wrong-password-canary", "aws82")
        .await
        .expect_err("wrong");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = served.log().join("\n");
    assert!(log.contains("/api/auth/login/admin"), "requests are logged");
    for secret in [
        "from-the-env",
        "wrong-password-canary",
        &session.access_token,
        session.refresh_token.as_deref().expect("rt"),
        &token,
    ] {
        assert!(!log.contains(secret), "secret in log");
    }

    let bad = start_fails(
        &dir.path().join("other.db"),
        &[
            ("CXAUTH_REFRESH_TOKEN_TTL", "1m"),
            ("CXAUTH_ACCESS_TOKEN_TTL", "5m"),
        ],
    );
    assert!(bad.contains("must be longer"), "{bad}");
}

#[test]
fn ringex_emulator_apps_and_jwts_print_their_secrets_alone() {
    // SQLite only: the check that no secret is stored in clear reads the database file.
    let db = db_on(Backend::Sqlite);
    let main = id(&db.admin_ok(&["account", "create", "--name", "M"], "")).to_string();
    let create = |name: &str, rc: Option<&str>| {
        let mut args = vec![
            "user",
            "create",
            "--username",
            name,
            "--password-stdin",
            "--grant",
            &main,
        ];
        if let Some(rc) = rc {
            args.extend(["--rc-user-id", rc]);
        }
        id(&db.admin_ok(&args, "pw\n"))
    };
    create("rex", Some("4242"));
    create("plain", None);

    let app = db.admin_ok(&["ringex", "app", "create"], "");
    let lines: Vec<&str> = app.lines().collect();
    assert!(app.ends_with('\n') && lines.len() == 2, "{app:?}");
    for l in &lines {
        assert!(
            l.len() >= 20
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)),
            "{l:?}"
        );
    }
    assert_ne!(lines[0], lines[1]);
    let again = db.admin_ok(&["ringex", "app", "create"], "");
    assert_ne!(app, again, "each app is new");

    let jwt = db.admin_ok(&["ringex", "jwt", "create", "--username", "rex"], "");
    assert!(jwt.ends_with('\n') && jwt.lines().count() == 1, "{jwt:?}");
    assert!(jwt.trim().len() >= 40);

    // Nothing secret is stored in clear.
    // The database file and its write-ahead log.
    let path = db.path.as_ref().expect("an SQLite file");
    let mut raw = std::fs::read(path).expect("db");
    raw.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    assert!(
        raw.windows(lines[0].len())
            .any(|w| w == lines[0].as_bytes()),
        "the client id is stored (in clear: it is not a secret)"
    );
    for secret in [lines[1], jwt.trim()] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is stored in clear"
        );
    }

    // Bad input: one-line errors, nothing on stdout.
    let e = db.admin_err(&["ringex", "jwt", "create", "--username", "plain"], "");
    assert!(e.contains("RingEX user id"), "{e}");
    let e = db.admin_err(&["ringex", "jwt", "create", "--username", "ghost"], "");
    assert!(e.contains("no user named"), "{e}");
    let e = db.admin_err(
        &[
            "user",
            "create",
            "--username",
            "dup",
            "--password-stdin",
            "--grant",
            &main,
            "--rc-user-id",
            "4242",
        ],
        "pw\n",
    );
    assert!(e.contains("4242"), "{e}");
    let e = db.admin_err(
        &[
            "user",
            "create",
            "--username",
            "neg",
            "--password-stdin",
            "--grant",
            &main,
            "--rc-user-id",
            "0",
        ],
        "pw\n",
    );
    assert!(e.contains("positive"), "{e}");
    cxauth()
        .args([
            "admin",
            "--database",
            &db.url(),
            "user",
            "create",
            "--username",
            "x",
        ])
        .args(["--password-stdin", "--grant", &main, "--rc-user-id", "abc"])
        .write_stdin("pw\n")
        .assert()
        .failure()
        .code(2)
        .stdout("");
    cxauth()
        .args(["admin", "--database", &db.url(), "ringex", "jwt", "create"])
        .assert()
        .failure()
        .code(2)
        .stdout("");
}

/// `--version` says whether the binary is a debug build: the benchmark harness asks it. The
/// binary under test is built in this test's own profile.
#[test]
fn version_says_whether_the_build_is_a_debug_one() {
    let out = cxauth()
        .arg("--version")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let version = env!("CARGO_PKG_VERSION");
    let want = if cfg!(debug_assertions) {
        format!("cxauth {version} (debug build)\n")
    } else {
        format!("cxauth {version}\n")
    };
    assert_eq!(String::from_utf8(out).expect("utf8"), want);
}

#[test]
fn serve_help_documents_the_ringex_settings() {
    let out = cxauth()
        .args(["serve", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).expect("utf8");
    for want in [
        "--ringex-server",
        "CXAUTH_RINGEX_SERVER",
        "--ringex-emulator",
        "CXAUTH_RINGEX_EMULATOR",
        "--ringex-emulator-access-ttl",
        "CXAUTH_RINGEX_EMULATOR_ACCESS_TTL",
        "--ringex-emulator-refresh-ttl",
        "--ringex-cache-ttl",
        "CXAUTH_RINGEX_CACHE_TTL",
        "--ringex-timeout",
    ] {
        assert!(help.contains(want), "{want} missing from serve --help");
    }
}

#[test]
fn admin_never_creates_a_database_by_accident_and_init_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = dir.path().join("cxauth.db");
    for args in [
        vec!["admin", "user", "list"],
        vec!["admin", "account", "create", "--name", "Sales"],
        vec!["admin", "keys", "list"],
    ] {
        let out = cxauth()
            .current_dir(dir.path())
            .args(&args)
            .assert()
            .failure()
            .code(1)
            .stdout("")
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8(out).expect("utf8");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("no database at {}", default.display()))
                && err.contains("--database URL or CXAUTH_DATABASE")
                && err.contains("`cxauth admin init`"),
            "{args:?}: {err}"
        );
        assert!(!default.exists(), "{args:?} created {}", default.display());
    }
    // `admin init` creates it, says where, and is harmless when repeated.
    let out = cxauth()
        .current_dir(dir.path())
        .args(["admin", "init"])
        .assert()
        .success()
        .stdout("")
        .get_output()
        .stderr
        .clone();
    let said = String::from_utf8(out).expect("utf8");
    assert!(
        said.contains(&format!(
            "created the database sqlite://{}",
            default.display()
        )),
        "{said}"
    );
    assert!(default.exists());
    cxauth()
        .current_dir(dir.path())
        .args(["admin", "init"])
        .assert()
        .success()
        .stderr(predicate::str::contains("is ready"));
    // Now the default database exists, and is used.
    cxauth()
        .current_dir(dir.path())
        .args(["admin", "account", "create", "--name", "Sales"])
        .assert()
        .success()
        .stdout("10000000\n");
    // An explicit database is taken as meant (`init --database` too).
    let named = dir.path().join("named.db");
    cxauth()
        .args(["admin", "init", "--database"])
        .arg(&named)
        .assert()
        .success();
    assert!(named.exists());
}

#[test]
fn admin_lists_in_json_account_list_and_user_delete() {
    let db = db();
    let main = id(&db.admin_ok(&["account", "create", "--name", "Sales"], ""));
    let sub = id(&db.admin_ok(
        &[
            "account",
            "create",
            "--name",
            "EU",
            "--main",
            &main.to_string(),
        ],
        "",
    ));
    let list = db.admin_ok(&["account", "list"], "");
    assert_eq!(
        list,
        format!(
            "ID\tNAME\tMAIN_ACCOUNT\tACTIVE\tRC_ACCOUNT\n{main}\tSales\t{main}\ttrue\t-\n{sub}\tEU\t{main}\ttrue\t-\n"
        )
    );
    // --output json before or after the subcommand: one object per line.
    let json = db.admin_ok(&["--output", "json", "account", "list"], "");
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["id"], sub);
    assert_eq!(rows[1]["main_account_id"], main);
    assert_eq!(rows[1]["active"], true);
    let m = main.to_string();
    let mk = |name: &str, parent: Option<&str>| {
        let mut args = vec!["user", "create", "--username", name, "--password-stdin"];
        match parent {
            Some(p) => args.extend(["--parent", p]),
            None => args.extend(["--grant", &m, "--role", "MANAGE_USERS"]),
        }
        id(&db.admin_ok(&args, "pw\n"))
    };
    let boss = mk("boss", None);
    let worker = mk("worker", Some("boss"));
    let users = db.admin_ok(&["user", "list", "--output", "json"], "");
    assert!(
        !users.contains("password") && !users.contains("argon2"),
        "{users}"
    );
    let users: Vec<serde_json::Value> = users
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["username"], "boss");
    assert_eq!(users[0]["roles"], serde_json::json!(["MANAGE_USERS"]));
    assert_eq!(users[1]["parent_path"], boss.to_string());
    for args in [
        &["keys", "list", "--output", "json"][..],
        &["ringex", "jwt", "list", "--output", "json"],
        &["audit", "--output", "json"],
    ] {
        let out = db.admin_ok(args, "");
        for line in out.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("json line");
        }
    }

    // A user with children stays; its child goes, with its credentials, and it is audited.
    let err = db.admin_err(&["user", "delete", "boss"], "");
    assert!(
        err.contains("\"boss\" has 1 child user(s) (worker): delete them first"),
        "{err}"
    );
    let err = db.admin_err(&["user", "delete", "ghost"], "");
    assert!(err.contains("no user named \"ghost\""), "{err}");
    let out = db.admin_ok(&["user", "delete", "worker"], "");
    assert_eq!(
        out,
        "api_tokens\t0\nlegacy_tokens\t0\nsessions\t0\nringex_jwts\t0\nringex_tokens\t0\n"
    );
    let out = db.admin_ok(&["user", "delete", "boss", "--output", "json"], "");
    let ended: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(ended["sessions"], 0);
    assert_eq!(db.user_count(), 0);
    let audit = db.admin_ok(&["audit", "--output", "json"], "");
    let deleted: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|e| e["event"] == "user.delete")
        .collect();
    assert_eq!(deleted.len(), 2, "{audit}");
    assert_eq!(deleted[0]["user_id"], worker);
    assert_eq!(deleted[0]["username"], "worker");

    // `cxauth admin … | head -0`: quiet, exit 0.
    for args in [&["user", "list"][..], &["account", "list"], &["audit"]] {
        let mut cmd = std::process::Command::new(cxauth_testkit::cli::cxauth_bin());
        cmd.env_remove("CXAUTH_DATABASE")
            .arg("admin")
            .arg("--database")
            .arg(db.url())
            .args(args);
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = cmd.stdout(writer).output().expect("runs");
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "{args:?}"
        );
    }
}

#[test]
fn a_mistyped_role_is_refused_with_the_roles_and_a_suggestion() {
    let db = db();
    let main = id(&db.admin_ok(&["account", "create", "--name", "M"], "")).to_string();
    let err = db.admin_err(
        &[
            "user",
            "create",
            "--username",
            "x",
            "--password-stdin",
            "--grant",
            &main,
            "--role",
            "SUPERUSER",
        ],
        "pw\n",
    );
    assert!(
        err.contains("unknown role \"SUPERUSER\": the roles are SUPER_USER, MANAGE_USERS; did you mean SUPER_USER?"),
        "{err}"
    );
    assert_eq!(db.user_count(), 0);
}

#[test]
fn agents_are_created_listed_and_deleted_and_accounts_linked() {
    let db = db();
    let main = id(&db.admin_ok(&["account", "create", "--name", "Sales"], ""));
    let m = main.to_string();
    let sub = id(&db.admin_ok(&["account", "create", "--name", "EU", "--main", &m], ""));
    let s = sub.to_string();
    db.admin_ok(
        &[
            "user",
            "create",
            "--username",
            "ann",
            "--password-stdin",
            "--grant",
            &s,
            "--rc-user-id",
            "4242",
        ],
        "pw\n",
    );
    db.admin_ok(
        &[
            "user",
            "create",
            "--username",
            "bob",
            "--password-stdin",
            "--grant",
            &s,
        ],
        "pw\n",
    );
    // --user takes the user's RingEX id; create prints the id alone.
    let a = id(&db.admin_ok(
        &[
            "agent",
            "create",
            "--account",
            &s,
            "--username",
            "ann.agent",
            "--first-name",
            "Ann",
            "--email",
            "ann@example.com",
            "--user",
            "ann",
        ],
        "",
    ));
    let b = id(&db.admin_ok(
        &[
            "agent",
            "create",
            "--account",
            &s,
            "--username",
            "sup",
            "--type",
            "supervisor",
            "--rc-user-id",
            "77",
            "--no-login-control",
        ],
        "",
    ));
    assert_eq!(
        db.admin_ok(&["agent", "list", "--account", &s], ""),
        format!(
            "ID\tACCOUNT\tUSERNAME\tTYPE\tRC_USER_ID\tFIRST_NAME\tLAST_NAME\n\
             {a}\t{sub}\tann.agent\tAGENT\t4242\tAnn\t\n\
             {b}\t{sub}\tsup\tSUPERVISOR\t77\t\t\n"
        )
    );
    let json = db.admin_ok(&["--output", "json", "agent", "list"], "");
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["allow_login_control"], false);
    assert_eq!(rows[1]["allow_login_updates"], true);

    // Refusals: one line each, nothing written.
    for (args, says) in [
        (
            vec!["agent", "create", "--account", &m, "--username", "x"],
            "main account",
        ),
        (
            vec![
                "agent",
                "create",
                "--account",
                "99990001",
                "--username",
                "x",
            ],
            "no account",
        ),
        (
            vec![
                "agent",
                "create",
                "--account",
                &s,
                "--username",
                "ann.agent",
            ],
            "already exists",
        ),
        (
            vec![
                "agent",
                "create",
                "--account",
                &s,
                "--username",
                "x",
                "--type",
                "boss",
            ],
            "unknown agent type",
        ),
        (
            vec![
                "agent",
                "create",
                "--account",
                &s,
                "--username",
                "x",
                "--user",
                "bob",
            ],
            "no RingEX user id",
        ),
        (
            vec![
                "agent",
                "create",
                "--account",
                &s,
                "--username",
                "x",
                "--user",
                "nobody",
            ],
            "no user named",
        ),
        (
            vec![
                "agent",
                "create",
                "--account",
                &s,
                "--username",
                "x",
                "--email",
                "not-an-address",
            ],
            "email",
        ),
        (vec!["agent", "delete", "999"], "no agent with id 999"),
        (
            vec!["account", "link", "--main", &s, "--rc-account-id", "1"],
            "sub-account",
        ),
        (
            vec!["account", "link", "--main", &m, "--rc-account-id", "12ab"],
            "is a number",
        ),
    ] {
        let err = db.admin_err(&args, "");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(db.admin_ok(&["agent", "list"], "").lines().count(), 3);

    db.admin_ok(&["agent", "delete", &b.to_string()], "");
    assert_eq!(db.admin_ok(&["agent", "list"], "").lines().count(), 2);

    db.admin_ok(
        &[
            "account",
            "link",
            "--main",
            &m,
            "--rc-account-id",
            "37439510",
        ],
        "",
    );
    let list = db.admin_ok(&["account", "list"], "");
    assert!(
        list.contains(&format!("{sub}\tEU\t{main}\ttrue\t37439510\n")),
        "{list}"
    );
    db.admin_ok(&["account", "link", "--main", &m, "--unlink"], "");
    let list = db.admin_ok(&["account", "list"], "");
    assert!(
        list.contains(&format!("{sub}\tEU\t{main}\ttrue\t-\n")),
        "{list}"
    );
}
