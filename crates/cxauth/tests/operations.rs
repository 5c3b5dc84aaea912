//! Operating the binary: SIGTERM stops it cleanly, and `cxauth admin purge` reports what it
//! removed.

mod common;

use assert_cmd::Command;
use std::ffi::OsStr;

const PASSWORD: &str = "operations-test-password";

fn cxauth() -> Command {
    let mut c = Command::cargo_bin("cxauth").expect("binary");
    for (k, _) in std::env::vars() {
        if k.starts_with("CXAUTH_") {
            c.env_remove(k);
        }
    }
    c
}

#[tokio::test]
async fn sigterm_drains_and_purge_reports_ended_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ops.db");
    let mut served = common::serve(
        &[OsStr::new("--database"), db.as_os_str()],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let client = served.client();
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
        .arg(&db)
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
        .arg(&db)
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
