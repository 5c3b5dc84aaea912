//! `cxauth admin user revoke-tokens`, `user set-password --revoke-tokens`, `ringex jwt
//! list|revoke` and the `--api-token-cap` setting, as scripts and operators use them (issue 11).
//! That the ended credentials stop working over HTTP is tested in
//! `crates/cxauth-server/tests/revocation.rs`; here: what the commands print and store.

use cxauth_core::store::LegacyToken;
use cxauth_testkit::TestDb;

use cxauth_testkit::cli::cxauth;

/// A fresh database of the selected backend.
struct Db(TestDb);

impl Db {
    fn new() -> Self {
        Db(TestDb::selected_blocking())
    }

    fn url(&self) -> String {
        self.0.url().to_owned()
    }

    fn admin(&self, args: &[&str], stdin: &str) -> assert_cmd::assert::Assert {
        cxauth()
            .arg("admin")
            .arg("--database")
            .arg(self.url())
            .args(args)
            .write_stdin(stdin)
            .assert()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> (String, String) {
        let out = self.admin(args, stdin).success().get_output().clone();
        (
            String::from_utf8(out.stdout).expect("utf8"),
            String::from_utf8(out.stderr).expect("utf8"),
        )
    }

    fn err(&self, args: &[&str]) -> String {
        let out = self
            .admin(args, "")
            .failure()
            .code(1)
            .stdout("")
            .get_output()
            .stderr
            .clone();
        String::from_utf8(out).expect("utf8")
    }

    /// A user `rex` (RingEX user id 4242) with two JWT credentials, one API token and one
    /// legacy token (the last two stored directly: minting them needs a running server).
    async fn rex(&self) -> Vec<String> {
        let main = self.ok(&["account", "create", "--name", "M"], "").0;
        self.ok(
            &[
                "user",
                "create",
                "--username",
                "rex",
                "--password-stdin",
                "--grant",
                main.trim(),
                "--rc-user-id",
                "4242",
            ],
            "rex-pw\n",
        );
        let jwts = (0..2)
            .map(|_| {
                self.ok(&["ringex", "jwt", "create", "--username", "rex"], "")
                    .0
                    .trim()
                    .to_owned()
            })
            .collect();
        let store =
            cxauth_store::open(&cxauth_store::DatabaseUrl::parse(&self.url()).expect("url"))
                .await
                .expect("open");
        let uid = store
            .user_by_username("rex")
            .await
            .expect("get")
            .expect("rex")
            .id;
        store
            .insert_api_token(uid, &[1; 32], b"sealed", 0)
            .await
            .expect("api token");
        store
            .insert_legacy_token(
                uid,
                &[2; 32],
                &LegacyToken {
                    expires_at: i64::MAX,
                    lifetime_ms: 1,
                },
                0,
                None,
            )
            .await
            .expect("legacy token");
        store.close().await;
        jwts
    }
}

#[tokio::test]
async fn revoke_tokens_prints_what_it_ended_per_kind() {
    let db = Db::new();
    db.rex().await;
    let (out, err) = db.ok(&["user", "revoke-tokens", "rex"], "");
    assert_eq!(
        out,
        "api_tokens\t1\nlegacy_tokens\t1\nsessions\t0\nringex_jwts\t2\nringex_tokens\t0\n"
    );
    assert!(err.contains("ended every credential"), "{err}");
    // Nothing left; as JSON.
    let (out, _) = db.ok(&["user", "revoke-tokens", "rex", "--output", "json"], "");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"api_tokens": 0, "legacy_tokens": 0, "sessions": 0,
                           "ringex_jwts": 0, "ringex_tokens": 0})
    );
    assert!(
        db.err(&["user", "revoke-tokens", "ghost"])
            .contains("no user named")
    );
    // Audited with the counts.
    let (trail, _) = db.ok(&["audit", "--user", "rex"], "");
    assert!(
        trail
            .lines()
            .any(|l| l.contains("credentials.revoke") && l.contains("ringex_jwts=2")),
        "{trail}"
    );
}

#[tokio::test]
async fn set_password_ends_legacy_tokens_and_with_revoke_tokens_api_tokens_too() {
    let db = Db::new();
    db.rex().await;
    let (out, err) = db.ok(
        &["user", "set-password", "rex", "--password-stdin"],
        "new-pw\n",
    );
    assert_eq!(out, "", "a plain change prints nothing on stdout");
    assert!(
        err.contains("ended 0 sessions, 1 legacy auth tokens and 2 RingEX emulator credentials"),
        "{err}"
    );
    let (out, _) = db.ok(
        &[
            "user",
            "set-password",
            "rex",
            "--password-stdin",
            "--revoke-tokens",
            "--output",
            "json",
        ],
        "newer-pw\n",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["api_tokens"].as_u64(), v["legacy_tokens"].as_u64()),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn ringex_jwts_are_listed_without_secrets_and_revoked_by_id() {
    let db = Db::new();
    let jwts = db.rex().await;
    let (list, _) = db.ok(&["ringex", "jwt", "list"], "");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "ID\tUSER_ID\tUSERNAME\tCREATED");
    assert_eq!(lines.len(), 3, "{list}");
    for secret in &jwts {
        assert!(!list.contains(secret.as_str()), "no secret is shown");
    }
    let first_id = lines[1].split('\t').next().expect("id").to_owned();
    assert!(lines[1].split('\t').nth(2) == Some("rex"), "{list}");
    let (json, _) = db.ok(
        &[
            "ringex",
            "jwt",
            "list",
            "--username",
            "rex",
            "--output",
            "json",
        ],
        "",
    );
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"].to_string(), first_id);
    assert_eq!(
        db.ok(&["ringex", "jwt", "list", "--username", "nobody"], "")
            .0,
        "ID\tUSER_ID\tUSERNAME\tCREATED\n"
    );

    let (out, err) = db.ok(&["ringex", "jwt", "revoke", &first_id], "");
    assert_eq!(out, "");
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(db.ok(&["ringex", "jwt", "list"], "").0.lines().count(), 2);
    assert!(
        db.err(&["ringex", "jwt", "revoke", &first_id])
            .contains("no RingEX emulator JWT credential")
    );
    let (trail, _) = db.ok(&["audit", "--user", "rex"], "");
    assert!(trail.contains("ringex_jwt.revoke"), "{trail}");
}

#[test]
fn the_api_token_cap_is_a_setting_like_the_others() {
    let check = |args: &[&str]| {
        cxauth()
            .args(["config", "check"])
            .args(args)
            .assert()
            .get_output()
            .clone()
    };
    let out = check(&[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("api_token_cap = 100\n"),
        "the default"
    );
    let out = check(&["--api-token-cap", "7"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("api_token_cap = 7\n"));
    let out = check(&["--api-token-cap", "0"]);
    assert!(!out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "api_token_cap = 12\n").expect("write");
    let out = check(&["--config", file.to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("api_token_cap = 12\n"));
    std::fs::write(&file, "api_token_cap = 0\n").expect("write");
    let out = check(&["--config", file.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_token_cap"));
    let help = cxauth()
        .args(["serve", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(help).expect("utf8");
    assert!(help.contains("--api-token-cap") && help.contains("CXAUTH_API_TOKEN_CAP"));
    let help = cxauth()
        .args(["admin", "user", "revoke-tokens", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(help)
            .expect("utf8")
            .contains("legacy auth tokens")
    );
}
