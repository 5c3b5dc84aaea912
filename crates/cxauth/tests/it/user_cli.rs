//! The user commands of the `cxauth` binary end to end: a real `cxauth serve` child on port 0,
//! and every command run in a temporary HOME, as a person or a script would.

use assert_cmd::Command;
use predicates::prelude::*;

use cxauth_testkit::TestDb;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const PASSWORD: &str = "cli-test-password";

/// A `cxauth serve` child on a fresh database of its own, of the selected backend.
struct Server {
    served: cxauth_testkit::cli::Served,
    db: TestDb,
}

impl std::ops::Deref for Server {
    type Target = cxauth_testkit::cli::Served;
    fn deref(&self) -> &cxauth_testkit::cli::Served {
        &self.served
    }
}

fn serve(envs: &[(&str, &str)]) -> Server {
    let db = TestDb::selected_blocking();
    let mut all = vec![("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)];
    all.extend_from_slice(envs);
    Server {
        served: cxauth_testkit::cli::serve_on::<&str>(&db, &[], &all),
        db,
    }
}

/// A user's home: `cxauth` commands run with HOME and XDG_CONFIG_HOME inside it.
struct Home {
    dir: tempfile::TempDir,
}

fn home() -> Home {
    Home {
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Home {
    fn cmd(&self) -> Command {
        let mut c = assert_cmd::Command::new(cxauth_testkit::cli::cxauth_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("CXAUTH_") || k == "XDG_CONFIG_HOME" {
                c.env_remove(k);
            }
        }
        c.env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .timeout(Duration::from_secs(60));
        c
    }

    fn run(&self, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Out {
        let out = self
            .cmd()
            .args(args)
            .envs(envs.iter().copied())
            .write_stdin(stdin)
            .output()
            .expect("runs");
        Out {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8(out.stdout).expect("utf8"),
            stderr: String::from_utf8(out.stderr).expect("utf8"),
        }
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, "", &[]);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout
    }

    /// Runs and expects exit `code` with a one-line error containing `says`; nothing on stdout.
    fn fails(&self, args: &[&str], stdin: &str, envs: &[(&str, &str)], code: i32, says: &str) {
        let out = self.run(args, stdin, envs);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
        assert!(out.stderr.starts_with("cxauth: error: "), "{}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }

    fn login(&self, server: &str, profile: &str) {
        let out = self.run(
            &[
                "login",
                "--server",
                server,
                "--username",
                "admin",
                "--platform-id",
                "aws80",
                "--password-stdin",
                "--profile",
                profile,
            ],
            &format!("{PASSWORD}\n"),
            &[],
        );
        assert_eq!(out.code, 0, "login: {}", out.stderr);
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr.contains("logged in to") && out.stderr.contains("as admin"),
            "{}",
            out.stderr
        );
    }

    /// The files in the profile directory, sorted (none if it does not exist).
    fn profile_files(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.dir.path().join("config/cxauth/profiles"))
                .map(|d| {
                    d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
        names.sort();
        names
    }

    fn profile_path(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("config/cxauth/profiles")
            .join(format!("{name}.json"))
    }

    fn profile(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.profile_path(name)).expect("profile"))
            .expect("json")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("json output")
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
}

#[test]
fn login_tokens_accounts_users_whoami_and_logout_end_to_end() {
    let server = serve(&[]);
    let h = home();
    h.login(&server.base, "default");
    let path = h.profile_path("default");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
    let saved = std::fs::read_to_string(&path).expect("profile");
    assert!(!saved.contains(PASSWORD), "no password on disk");
    let profile = h.profile("default");
    let access = profile["session"]["accessToken"]
        .as_str()
        .expect("at")
        .to_owned();
    let refresh = profile["session"]["refreshToken"]
        .as_str()
        .expect("rt")
        .to_owned();

    // whoami checks the session and says who it is.
    let me = h.json(&["whoami"]);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["server"], server.base.as_str());
    assert_eq!(me["mainAccountId"], "10000000");
    let table = h.ok(&["whoami", "--output", "table"]);
    assert!(
        table.contains("admin") && table.contains("10000000"),
        "{table}"
    );

    // token create prints the token alone; list shows it (JSON when piped, or a table).
    let created = h.ok(&["token", "create"]);
    assert!(
        created.ends_with('\n') && created.lines().count() == 1,
        "{created:?}"
    );
    let token = created.trim().to_owned();
    assert!(token.starts_with("aws80:"), "{token}");
    assert_eq!(h.json(&["token", "list"]), serde_json::json!([token]));
    let table = h.ok(&["token", "list", "--output", "table"]);
    assert!(
        table.contains(&token) && table.contains("API token"),
        "{table}"
    );

    // Accounts and users.
    let accounts = h.json(&["accounts"]);
    assert_eq!(accounts[0]["accountId"], "10000001");
    assert_eq!(accounts[0]["mainAccount"]["mainAccountId"], "10000000");
    let table = h.ok(&["accounts", "--output", "table"]);
    assert!(
        table.contains("10000001") && table.contains("Default"),
        "{table}"
    );
    // Agents of a sub-account (made with the admin command on the server's database).
    cxauth_testkit::cli::admin(&server.db)
        .args([
            "agent",
            "create",
            "--account",
            "10000001",
            "--username",
            "ada.agent",
        ])
        .args(["--first-name", "Ada", "--rc-user-id", "7"])
        .assert()
        .success();
    let agents = h.json(&["agents", "10000001"]);
    assert_eq!(agents[0]["username"], "ada.agent");
    assert_eq!(agents[0]["rcUserId"], 7);
    let table = h.ok(&["agents", "10000001", "--output", "table"]);
    assert!(
        table.contains("ada.agent") && table.contains("AGENT"),
        "{table}"
    );
    let users = h.json(&["users", "--flatten"]);
    assert_eq!(users[0]["userName"], "admin");
    let table = h.ok(&["users", "--output", "table"]);
    assert!(table.contains("SUPER_USER"), "{table}");

    // The API token works instead of the session, and is never refreshed.
    let api = h.run(
        &["accounts"],
        "",
        &[
            ("CXAUTH_API_TOKEN", &token),
            ("CXAUTH_SERVER", &server.base),
            ("CXAUTH_PROFILE", "nobody"),
        ],
    );
    assert_eq!(api.code, 0, "{}", api.stderr);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&api.stdout).expect("json"),
        accounts
    );

    // Delete it; deleting again is a clear error.
    let out = h.run(&["token", "delete", &token], "", &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    assert_eq!(h.json(&["token", "list"]), serde_json::json!([]));
    h.fails(
        &["token", "delete", &token],
        "",
        &[],
        1,
        "no such API token",
    );
    h.fails(
        &["accounts"],
        "",
        &[
            ("CXAUTH_API_TOKEN", &token),
            ("CXAUTH_SERVER", &server.base),
        ],
        3,
        "refused the API token",
    );

    // Logout ends the session on the server and forgets it here.
    let out = h.run(&["logout"], "", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("logged out"), "{}", out.stderr);
    assert!(!path.exists());
    h.fails(
        &["accounts"],
        "",
        &[],
        3,
        "not logged in (profile default): run `cxauth login`",
    );
    let res = outside::refresh_status(&server.base, &refresh);
    assert_eq!(res, 401, "the refresh token is dead on the server");
    // Logging out again is harmless.
    assert_eq!(h.run(&["logout"], "", &[]).code, 0);

    // No token or password ever reached stderr (only `token create`/`list` print tokens).
    let all = [
        h.run(&["whoami"], "", &[]).stderr,
        h.run(&["accounts"], "", &[]).stderr,
    ]
    .join("\n");
    for secret in [PASSWORD, &access, &refresh] {
        assert!(!all.contains(secret));
    }
}

/// A tiny blocking refresh, to check from outside that the server really ended the session.
mod outside {
    pub fn refresh_status(base: &str, refresh_token: &str) -> u16 {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let client = cxauth_client::Client::new(base).expect("client");
            match client.refresh(refresh_token).await {
                Ok(_) => 200,
                Err(e) => e.status().map(|s| s.as_u16()).unwrap_or(0),
            }
        })
    }
}

#[test]
fn bad_password_and_server_down_are_one_line_errors_with_their_exit_codes() {
    let server = serve(&[]);
    let h = home();
    let login = |server: &str| -> Vec<String> {
        [
            "login",
            "--server",
            server,
            "--username",
            "admin",
            "--platform-id",
            "aws80",
            "--password-stdin",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let args = login(&server.base);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.fails(
        &args,
        "not-the-password\n",
        &[],
        1,
        "login failed: wrong username, password or platform id",
    );
    assert!(!h.profile_path("default").exists(), "nothing saved");

    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let args = login(&closed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.fails(
        &args,
        "pw\n",
        &[],
        4,
        &format!("cannot reach {closed}: connection refused"),
    );

    // The server goes away after login.
    h.login(&server.base, "default");
    let base = server.base.clone();
    drop(server);
    h.fails(
        &["accounts"],
        "",
        &[],
        4,
        &format!("cannot reach {base}: connection refused"),
    );
    // The session is kept, so it can be used once the server is back.
    assert!(h.profile_path("default").exists());
    // But `logout` always forgets it here, says the server could not be told, and succeeds.
    let out = h.run(&["logout"], "", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("could not end it on") && out.stderr.contains("connection refused"),
        "{}",
        out.stderr
    );
    assert!(!h.profile_path("default").exists());
    assert_eq!(h.profile_files(), Vec::<String>::new(), "no lock file left");
}

#[test]
fn a_session_the_server_ended_says_run_cxauth_login() {
    // The password is changed by `cxauth admin` (another process): with no credential cache the
    // server sees it on the very next request, which is what the messages below are about (the
    // cache's own bound is tested in credcache_cli.rs).
    let server = serve(&[("CXAUTH_CREDENTIAL_CACHE_STALENESS", "0s")]);
    let h = home();
    h.login(&server.base, "default");
    // Logging in again replaces the saved session and ends the one it replaces.
    let replaced = h.profile("default")["session"]["refreshToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    h.login(&server.base, "default");
    assert_eq!(outside::refresh_status(&server.base, &replaced), 401);
    h.login(&server.base, "work");
    h.ok(&["accounts"]);
    // A password change ends every session of the user.
    assert_cmd::Command::new(cxauth_testkit::cli::cxauth_bin())
        .args(["admin", "--database", server.db.url()])
        .args(["user", "set-password", "admin", "--password-stdin"])
        .write_stdin("a-brand-new-password\n")
        .assert()
        .success();
    h.fails(
        &["accounts"],
        "",
        &[],
        3,
        "session ended: run `cxauth login`",
    );
    h.fails(
        &["token", "list", "--profile", "work"],
        "",
        &[],
        3,
        "session ended: run `cxauth login --profile work`",
    );
    h.fails(
        &["whoami"],
        "",
        &[("CXAUTH_PROFILE", "work")],
        3,
        "session ended: run `cxauth login --profile work`",
    );
    // Logout of an ended session just forgets it.
    assert_eq!(h.run(&["logout"], "", &[]).code, 0);
    assert!(!h.profile_path("default").exists());
}

#[test]
fn later_commands_refresh_the_saved_session_and_save_the_rotation() {
    // Access tokens live three seconds and are due 300 ms before that (a tenth of the
    // lifetime): after DUE the next command refreshes first. Long enough that six processes
    // started together on a loaded CI machine all see the one fresh token.
    const DUE: Duration = Duration::from_millis(2_800);
    let server = serve(&[
        ("CXAUTH_ACCESS_TOKEN_TTL", "3s"),
        ("CXAUTH_REFRESH_GRACE", "500ms"),
    ]);
    let h = home();
    h.login(&server.base, "default");
    let before = h.profile("default");
    std::thread::sleep(DUE);
    h.ok(&["accounts"]);
    let after = h.profile("default");
    assert_ne!(
        before["session"]["refreshToken"], after["session"]["refreshToken"],
        "rotated and saved"
    );
    assert_ne!(
        before["session"]["accessToken"],
        after["session"]["accessToken"]
    );
    assert_eq!(after["username"], "admin");
    assert_eq!(mode(&h.profile_path("default")), 0o600);
    // The saved rotation is the live one: the next command (due again) refreshes with it.
    std::thread::sleep(DUE);
    h.ok(&["token", "list"]);
    assert_ne!(
        h.profile("default")["session"]["refreshToken"],
        after["session"]["refreshToken"]
    );

    // Several commands at once on a due session: the profile lock lets one refresh and the
    // others use its result, so the saved session is the one the server keeps.
    std::thread::sleep(DUE);
    let refreshes = server.requests_to("/api/auth/token/refresh");
    assert_eq!(refreshes, 2, "one refresh per due command so far");
    let children: Vec<_> = (0..6)
        .map(|_| {
            let mut c = std::process::Command::new(cxauth_testkit::cli::cxauth_bin());
            c.arg("accounts")
                .env("HOME", h.dir.path())
                .env("XDG_CONFIG_HOME", h.dir.path().join("config"))
                .env_remove("CXAUTH_API_TOKEN")
                .env_remove("CXAUTH_PROFILE")
                .env_remove("CXAUTH_SERVER")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        server.requests_to("/api/auth/token/refresh"),
        refreshes + 1,
        "six processes, one refresh"
    );
    // Due again: the saved refresh token must be the live one.
    std::thread::sleep(DUE);
    h.ok(&["whoami"]);
}

#[test]
fn usage_errors_help_and_completions() {
    let h = home();
    h.fails(
        &[
            "login",
            "--username",
            "a",
            "--platform-id",
            "aws80",
            "--password-stdin",
        ],
        "pw\n",
        &[],
        2,
        "--server URL or CXAUTH_SERVER",
    );
    h.fails(
        &["accounts"],
        "",
        &[("CXAUTH_API_TOKEN", "aws80:x")],
        2,
        "CXAUTH_API_TOKEN is set",
    );
    h.fails(
        &["accounts", "--profile", "../x"],
        "",
        &[],
        1,
        "profile name",
    );
    h.fails(
        &[
            "login",
            "--server",
            "ftp://x",
            "--username",
            "a",
            "--platform-id",
            "p",
            "--password-stdin",
        ],
        "pw\n",
        &[],
        2,
        "invalid server URL",
    );
    // A saved session is never sent to another server.
    let server = serve(&[]);
    h.login(&server.base, "default");
    h.fails(
        &["accounts", "--server", "http://127.0.0.1:9"],
        "",
        &[],
        2,
        "is logged in to",
    );
    h.cmd().args(["token"]).assert().code(2);
    h.cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "3  not logged in, or the session ended",
        ))
        .stdout(predicate::str::contains(
            "4  the server could not be reached",
        ))
        .stdout(predicate::str::contains("CXAUTH_API_TOKEN"));
    for shell in ["bash", "zsh", "fish"] {
        h.cmd()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains("whoami"));
    }
}

/// `cxauth ARGS` with stdout a pipe whose reader has already gone, as in `cxauth … | head -0`:
/// returns the exit code and stderr.
fn run_into_closed_pipe(mut cmd: std::process::Command) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stderr).expect("utf8"),
    )
}

#[test]
fn global_options_go_before_or_after_the_command_and_pipes_close_quietly() {
    let server = serve(&[]);
    let h = home();
    // Before the subcommand, as `git -C` or `kubectl -n`.
    let out = h.run(
        &[
            "--server",
            &server.base,
            "--profile",
            "sales",
            "login",
            "--username",
            "admin",
            "--platform-id",
            "aws80",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(h.profile_path("sales").exists());
    let before = h.ok(&["--profile", "sales", "--output", "json", "accounts"]);
    let after = h.ok(&["accounts", "--profile", "sales", "--output", "json"]);
    assert_eq!(before, after);
    assert!(before.trim_start().starts_with('['), "{before}");
    let who = h.ok(&["--output", "json", "--profile", "sales", "whoami"]);
    assert!(who.contains("\"username\": \"admin\""), "{who}");
    // `text` is another name for the table.
    let table = h.ok(&["--output", "text", "--profile", "sales", "whoami"]);
    assert!(table.contains("admin") && !table.contains('{'), "{table}");
    // A global option that means nothing to a command is refused, not ignored.
    let out = h.run(&["serve", "--profile", "sales"], "", &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--profile applies to the user commands"),
        "{}",
        out.stderr
    );

    // `cxauth accounts | head -0`: no "Broken pipe", exit 0, as `ls | head` does.
    let mut cmd = std::process::Command::new(cxauth_testkit::cli::cxauth_bin());
    cmd.env("HOME", h.dir.path())
        .env("XDG_CONFIG_HOME", h.dir.path().join("config"))
        .env_remove("CXAUTH_API_TOKEN")
        .args(["accounts", "--profile", "sales", "--output", "table"]);
    let (code, stderr) = run_into_closed_pipe(cmd);
    assert_eq!((code, stderr.as_str()), (0, ""));

    // A mistyped profile leaves no lock file behind; logging out leaves nothing at all.
    h.fails(
        &["whoami", "--profile", "nope"],
        "",
        &[],
        3,
        "not logged in (profile nope)",
    );
    h.fails(
        &["--profile", "nope", "token", "list"],
        "",
        &[],
        3,
        "not logged in",
    );
    assert_eq!(h.profile_files(), vec!["sales.json", "sales.lock"]);
    assert_eq!(h.run(&["logout", "--profile", "nope"], "", &[]).code, 0);
    assert_eq!(h.run(&["--profile", "sales", "logout"], "", &[]).code, 0);
    assert_eq!(h.profile_files(), Vec::<String>::new());
}

#[test]
fn the_bootstrap_password_hint_names_its_database() {
    // SQLite only: the hint is checked to name the database file.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("hinted.db");
    let served =
        cxauth_testkit::cli::serve(&[std::ffi::OsStr::new("--database"), db.as_os_str()], &[]);
    let hint = served
        .first_lines
        .iter()
        .find(|l| l.contains("set-password admin"))
        .expect("hint printed");
    assert!(
        hint.contains(&format!(
            "`cxauth admin --database sqlite://{} user set-password admin --password-stdin`",
            db.display()
        )),
        "{hint}"
    );
}

#[test]
fn token_names_expiry_and_the_long_list() {
    let server = serve(&[]);
    let h = home();
    h.login(&server.base, "default");
    let plain = h.ok(&["token", "create"]).trim().to_owned();
    let out = h.run(
        &[
            "token",
            "create",
            "--name",
            "ci deploy",
            "--expires-in",
            "30d",
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "the token alone: {}",
        out.stdout
    );
    let named = out.stdout.trim().to_owned();
    assert!(named.starts_with("aws80:"), "{named}");
    assert!(out.stderr.contains("expires at"), "{}", out.stderr);

    // The bare list is unchanged; --long shows details and never a whole token.
    let bare = h.json(&["token", "list"]);
    assert_eq!(bare, serde_json::json!([plain, named]));
    let long = h.json(&["token", "list", "--long"]);
    let rows = long.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert!(!long.to_string().contains(&named) && !long.to_string().contains(&plain));
    let row = rows
        .iter()
        .find(|r| r["name"] == "ci deploy")
        .expect("named row");
    assert!(
        row["expiresAt"].is_string() && row["lastUsedAt"].is_null(),
        "{row}"
    );
    assert_eq!(
        row["hint"],
        format!("\u{2026}{}", &named[named.len() - 4..])
    );
    let id = row["id"].as_i64().expect("id").to_string();
    let table = h.ok(&["token", "list", "-l", "--output", "table"]);
    for col in [
        "Id",
        "Name",
        "Created",
        "Expires",
        "Last used",
        "Hint",
        "ci deploy",
        "never",
    ] {
        assert!(table.contains(col), "{col} in {table}");
    }
    assert!(!table.contains(&named), "{table}");

    // Rename, clear, delete by id.
    let renamed = h.json(&["token", "rename", &id, "nightly"]);
    assert_eq!(renamed[0]["name"], "nightly");
    let cleared = h.json(&["token", "rename", &id, "--clear"]);
    assert!(cleared[0]["name"].is_null());
    let out = h.run(&["token", "delete", "--id", &id], "", &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    assert_eq!(h.json(&["token", "list"]), serde_json::json!([plain]));
    h.fails(
        &["token", "delete", "--id", &id],
        "",
        &[],
        1,
        "no API token",
    );

    // Bad input: clap refuses bad durations; the server refuses bad names and lifetimes.
    for bad in ["30x", "d", "-5d", "99999999999999999999w"] {
        let out = h.run(&["token", "create", "--expires-in", bad], "", &[]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
    }
    h.fails(
        &["token", "create", "--expires-in", "10s"],
        "",
        &[],
        1,
        "expiresIn",
    );
    h.fails(
        &["token", "create", "--expires-in", "1000d"],
        "",
        &[],
        1,
        "expiresIn",
    );
    h.fails(&["token", "create", "--name", ""], "", &[], 1, "name");
    let out = h.run(&["token", "rename", &id], "", &[]);
    assert_eq!(out.code, 2, "a name or --clear: {}", out.stderr);
    let out = h.run(&["token", "delete"], "", &[]);
    assert_eq!(out.code, 2, "a token or --id: {}", out.stderr);
    assert_eq!(
        h.json(&["token", "list"]),
        serde_json::json!([plain]),
        "nothing made"
    );
}

/// A stand-in for a RingCX server: it knows the RingCX token list and nothing of `/cxauth/v1`.
fn fake_ringcx() -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        for _ in 0..3 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (status, body) = if head.starts_with("GET /voice/api/v1/admin/token ") {
                (
                    "200 OK",
                    r#"["aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"]"#,
                )
            } else {
                ("404 Not Found", r#"{"error":"not found"}"#)
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, handle)
}

#[test]
fn against_ringcx_the_long_list_falls_back_and_names_are_refused() {
    let h = home();
    let (base, server) = fake_ringcx();
    let envs = [
        (
            "CXAUTH_API_TOKEN",
            "aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9",
        ),
        ("CXAUTH_SERVER", base.as_str()),
    ];
    let out = h.run(&["token", "list", "--long"], "", &envs);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("json"),
        serde_json::json!(["aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"])
    );
    assert!(out.stderr.contains("not supported"), "{}", out.stderr);
    h.fails(
        &["token", "create", "--name", "x"],
        "",
        &envs,
        1,
        "names and expiry are not supported",
    );
    server.join().expect("fake server");
}
