//! Operating the binary: SIGTERM stops it cleanly, `cxauth admin purge` reports what it
//! removed, the log says who called and what the housekeeping and the stop did, and a log file
//! on stderr is written back as it grows.

use std::ffi::OsStr;

const PASSWORD: &str = "operations-test-password";

use cxauth_testkit::TestDb;
use cxauth_testkit::cli::cxauth;

#[tokio::test]
async fn sigterm_drains_and_purge_reports_ended_sessions() {
    let test_db = TestDb::selected().await;
    let db = test_db.url();
    let mut served = cxauth_testkit::cli::serve_on(
        &test_db,
        &["--metrics-listen", "127.0.0.1:0"],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let client = served.client();
    let metrics_url = served
        .log()
        .iter()
        .find_map(|l| {
            let i = l.find("metrics at http://")?;
            l[i + "metrics at ".len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .expect("the metrics address is logged");
    let metrics = reqwest::get(&metrics_url).await.expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .expect("body")
            .contains("cxauth_stored_rows")
    );
    let ready = reqwest::get(format!("{}/readyz", served.base))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.expect("body"), "ready");
    let session = client
        .login("admin", PASSWORD, "aws80")
        .await
        .expect("login");
    client
        .logout(session.refresh_token.as_deref().expect("refresh token"))
        .await
        .expect("logout");

    let status = served.terminate();
    assert!(status.success(), "{status:?}");
    let log = served.log().join("\n");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("cxauth stopped"), "{log}");

    let out = cxauth()
        .args(["admin", "--database"])
        .arg(db)
        .arg("purge")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).expect("utf8");
    assert!(out.contains("sessions\t1\n"), "{out}");
    assert!(out.contains("legacy_tokens\t0\n"), "{out}");
    // Nothing left the second time.
    let again = cxauth()
        .args(["admin", "--database"])
        .arg(db)
        .arg("purge")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(again)
            .expect("utf8")
            .contains("sessions\t0\n")
    );
}

fn admin_ok(db: impl AsRef<OsStr>, args: &[&str], stdin: &str) -> String {
    let out = cxauth()
        .args(["admin", "--database"])
        .arg(db)
        .args(args)
        .write_stdin(stdin)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).expect("utf8")
}

#[test]
fn admin_audit_shows_filters_and_follows_the_trail() {
    let test_db = TestDb::selected_blocking();
    let db = test_db.url();
    let main = admin_ok(db, &["account", "create", "--name", "M"], "");
    let main = main.trim();
    for name in ["bob", "carol"] {
        admin_ok(
            db,
            &[
                "user",
                "create",
                "--username",
                name,
                "--grant",
                main,
                "--password-stdin",
            ],
            "a-secret-password-1\n",
        );
    }
    admin_ok(db, &["user", "disable", "bob"], "");

    let json = admin_ok(db, &["audit", "--user", "bob", "--output", "json"], "");
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(names, ["user.create", "user.disable"], "{json}");
    assert!(events.iter().all(|e| e["username"] == "bob"));
    assert!(!json.contains("a-secret-password-1"));

    let text = admin_ok(db, &["audit", "--since", "1h"], "");
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("TIME\tEVENT\tOUTCOME")
    );
    assert_eq!(lines.count(), 3, "{text}");

    // --follow prints events written after it started.
    let mut follow = std::process::Command::new(cxauth_testkit::cli::cxauth_bin())
        .args(["admin", "--database"])
        .arg(db)
        .args(["audit", "--follow", "--output", "json", "--user", "bob"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let wait = |what: &str| loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("--follow never printed {what}"));
        if line.contains(what) {
            return;
        }
    };
    wait("user.disable");
    admin_ok(db, &["user", "enable", "bob"], "");
    wait("user.enable");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn admin_keys_rotate_needs_the_right_master_key() {
    // SQLite only: about the default key file beside the database file.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keys.db");
    // Not initialised yet: refused, and no key file is made.
    cxauth()
        .args(["admin", "--database"])
        .arg(&db)
        .args(["keys", "rotate"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("start `cxauth serve --database"));
    let served = cxauth_testkit::cli::serve(
        &[OsStr::new("--database"), db.as_os_str()],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    drop(served);
    let kid = admin_ok(&db, &["keys", "rotate"], "");
    let kid = kid.trim();
    assert_eq!(kid.len(), 32, "{kid}");
    let list = admin_ok(&db, &["keys", "list"], "");
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.lines().last().expect("newest").starts_with(kid));
    let audit = admin_ok(&db, &["audit", "--output", "json"], "");
    assert!(audit.contains(&format!("kid {kid} (rotation)")), "{audit}");

    let other = dir.path().join("other.key");
    cxauth()
        .args(["generate-master-key"])
        .arg(&other)
        .assert()
        .success();
    cxauth()
        .args(["admin", "--database"])
        .arg(&db)
        .args(["keys", "rotate", "--master-key-file"])
        .arg(&other)
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "does not belong to this database",
        ));
    assert_eq!(admin_ok(&db, &["keys", "list"], "").lines().count(), 3);
}

/// The access-log line of an authenticated request names its caller, once, and a request
/// without a credential names nobody.
#[tokio::test]
async fn the_access_log_names_the_caller_once() {
    let test_db = TestDb::selected().await;
    let served = cxauth_testkit::cli::serve_on::<&str>(
        &test_db,
        &[],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let client = served.client();
    let session = client
        .login("admin", PASSWORD, "aws80")
        .await
        .expect("login");
    let bearer = cxauth_client::Credential::Bearer(session.access_token.clone());
    client.list_api_tokens(&bearer).await.expect("list");
    reqwest::get(format!("{}/healthz", served.base))
        .await
        .expect("healthz");
    let listed = served.log_lines_with("method=GET path=/voice/api/v1/admin/token");
    let line = listed
        .iter()
        .find(|l| l.contains("status=200"))
        .unwrap_or_else(|| panic!("no access-log line for the list: {listed:?}"));
    assert_eq!(line.matches("user_id=").count(), 1, "{line}");
    assert!(
        line.contains("path=/voice/api/v1/admin/token user_id=1}"),
        "{line}"
    );
    for l in served.log_lines_with("path=/healthz") {
        assert!(!l.contains("user_id"), "{l}");
    }
}

/// The lines an operator (and the benchmark harness, `crates/cxauth-bench`, which reads them
/// from the log to time the first pass and the stop's write) relies on: the first housekeeping
/// pass's end with its time, and a clean stop's write of the API token last uses noted since,
/// with how many and how long. Their words and fields are the interface; this pins them.
#[tokio::test]
async fn the_first_pass_and_the_stops_write_of_last_uses_are_logged_with_their_numbers() {
    let test_db = TestDb::selected().await;
    let mut served = cxauth_testkit::cli::serve_on::<&str>(
        &test_db,
        &[],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        if let Some(l) = served.log_lines_with("first housekeeping pass done").pop() {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no first pass logged:\n{}",
            served.log().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(number_after(&first, "took_ms").is_some(), "{first}");

    let client = served.client();
    let session = client
        .login("admin", PASSWORD, "aws80")
        .await
        .expect("login");
    let bearer = cxauth_client::Credential::Bearer(session.access_token.clone());
    for _ in 0..3 {
        let token = client.create_api_token(&bearer).await.expect("create");
        let api = cxauth_client::Credential::XAuthToken(token);
        client.accounts(&api).await.expect("accounts");
        client.accounts(&api).await.expect("accounts again");
    }

    let status = served.terminate();
    assert!(status.success(), "{status:?}");
    let written = served.log_lines_with("API token last uses written at stop");
    let [line] = written.as_slice() else {
        panic!(
            "one line for the stop's write, not {written:?}:\n{}",
            served.log().join("\n")
        )
    };
    assert_eq!(number_after(line, "written"), Some(3), "{line}");
    assert!(number_after(line, "took_ms").is_some(), "{line}");
}

/// The digits after ` field=` in a log line, as the harness reads them.
fn number_after(line: &str, field: &str) -> Option<u64> {
    let key = format!(" {field}=");
    let rest = &line[line.find(&key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The names of process `pid`'s threads, from `/proc`.
#[cfg(target_os = "linux")]
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the server's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// With stderr on a regular file, `cxauth serve` starts the thread that has its log written
/// back a MiB at a time (`Writeback` in `src/log_sink.rs`; README, "Logs and the database's
/// disk"); with stderr on a pipe, as the test kit starts it, it does not.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_log_file_on_stderr_gets_its_writeback_thread_and_a_pipe_does_not() {
    let test_db = TestDb::selected().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("cxauth.log");
    let mut child = cxauth_testkit::cli::clean_command()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(test_db.env())
        .env("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn cxauth");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("cxauth: listening on ")
    {
        if std::time::Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            panic!(
                "cxauth serve did not start:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let on_file = thread_names(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        on_file.iter().any(|n| n == "log-writeback"),
        "stderr on a file: {on_file:?}"
    );
    assert!(on_file.iter().any(|n| n == "log-writer"), "{on_file:?}");

    let mut served = cxauth_testkit::cli::serve_on::<&str>(
        &test_db,
        &[],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let on_pipe = thread_names(served.pid());
    served.kill9();
    assert!(
        on_pipe.iter().any(|n| n == "log-writer"),
        "stderr on a pipe: {on_pipe:?}"
    );
    assert!(
        !on_pipe.iter().any(|n| n == "log-writeback"),
        "stderr on a pipe: {on_pipe:?}"
    );
}
