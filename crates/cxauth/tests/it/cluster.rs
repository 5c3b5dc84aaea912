//! Several `cxauth serve` processes on one PostgreSQL database behave as one server.
//!
//! Each test gets a fresh schema on the test PostgreSQL server (`cxauth_testkit::TestDb`), whatever
//! backend is selected: required in CI, skipped with a printed reason on a machine without
//! PostgreSQL.

use cxauth_client::Credential;
use cxauth_testkit::TestDb;
use cxauth_testkit::cli::Served;
use reqwest::StatusCode;
use std::collections::HashSet;
use std::time::Duration;

const PASSWORD: &str = "cluster-admin-password";

/// One database, one master key, for the instances of a test.
struct Cluster {
    url: String,
    key: std::path::PathBuf,
    _db: TestDb,
}

async fn cluster() -> Option<Cluster> {
    // PostgreSQL whatever the selected backend: several instances share one database.
    let db = TestDb::postgres_or_skip().await?;
    Some(Cluster {
        url: db.url().to_owned(),
        key: db.master_key_file().expect("PostgreSQL names its key file"),
        _db: db,
    })
}

impl Cluster {
    /// Starts `n` instances at once (they race to migrate and bootstrap the empty schema).
    fn start(&self, n: usize) -> Vec<Served> {
        let key = self.key.to_str().expect("utf8 path");
        let envs = [
            ("CXAUTH_DATABASE", self.url.as_str()),
            ("CXAUTH_MASTER_KEY_FILE", key),
            ("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD),
        ];
        let starting: Vec<_> = (0..n)
            .map(|_| cxauth_testkit::cli::spawn(&["serve", "--listen", "127.0.0.1:0"], &envs))
            .collect();
        starting
            .into_iter()
            .map(cxauth_testkit::cli::Starting::ready)
            .collect()
    }

    fn admin(&self, args: &[&str], stdin: &str) {
        assert_cmd::Command::new(cxauth_testkit::cli::cxauth_bin())
            .arg("admin")
            .args(args)
            .env("CXAUTH_DATABASE", &self.url)
            .write_stdin(stdin)
            .assert()
            .success();
    }

    async fn count(&self, sql: &'static str) -> i64 {
        let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
        sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count")
    }
}

fn bearer(s: &cxauth_client::Session) -> Credential {
    Credential::Bearer(s.access_token.clone())
}

#[tokio::test]
async fn instances_agree_on_keys_tokens_and_revocations_at_once() {
    let Some(c) = cluster().await else { return };
    let nodes = c.start(2);
    let (a, b) = (&nodes[0].client(), &nodes[1].client());

    // Started together on an empty database: one bootstrap, one signing key, trusted by both.
    let jwks_a = a.jwks().await.expect("jwks");
    assert_eq!(jwks_a, b.jwks().await.expect("jwks"));
    assert_eq!(jwks_a.keys.len(), 1);
    assert_eq!(c.count("SELECT COUNT(*) FROM users").await, 1);

    let session = a
        .login("admin", PASSWORD, "aws80")
        .await
        .expect("login on A");
    b.accounts(&bearer(&session))
        .await
        .expect("A's access token on B");
    let token = a
        .create_api_token(&bearer(&session))
        .await
        .expect("token on A");
    let api = Credential::XAuthToken(token.clone());
    assert_eq!(
        b.list_api_tokens(&api).await.expect("list on B"),
        vec![token.clone()]
    );

    // Deleted on B: refused by A on the very next request.
    b.delete_api_token(&api, &token).await.expect("delete on B");
    let err = a.accounts(&api).await.expect_err("deleted");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));

    // Logged out on B: the session's access token is refused by A within the credential
    // cache's bound (A checked it before, so it is in A's cache; NOTIFY makes it milliseconds).
    b.logout(session.refresh_token.as_deref().expect("rt"))
        .await
        .expect("logout on B");
    let since = std::time::Instant::now();
    while a.accounts(&bearer(&session)).await.is_ok() {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "ended within the bound"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        a.accounts(&bearer(&session))
            .await
            .expect_err("ended")
            .status(),
        Some(StatusCode::UNAUTHORIZED)
    );

    // Disabled with the admin CLI: both refuse within the bound; a refresh on either fails too.
    c.admin(
        &[
            "user",
            "create",
            "--username",
            "ops",
            "--password-stdin",
            "--parent",
            "admin",
        ],
        "ops-pw\n",
    );
    let ops = b.login("ops", "ops-pw", "aws80").await.expect("login on B");
    let ops_token = a.create_api_token(&bearer(&ops)).await.expect("token");
    c.admin(&["user", "disable", "ops"], "");
    // Another process's change: announced by NOTIFY, honoured within the credential cache's
    // bound (in practice milliseconds; see docs/decisions.md, "Credential cache").
    let since = std::time::Instant::now();
    for n in [a, b] {
        for cred in [bearer(&ops), Credential::XAuthToken(ops_token.clone())] {
            while n.accounts(&cred).await.is_ok() {
                assert!(
                    since.elapsed() < Duration::from_secs(1),
                    "disabled within the bound"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert!(
        a.refresh(ops.refresh_token.as_deref().expect("rt"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_across_instances_keep_one_chain() {
    let Some(c) = cluster().await else { return };
    let nodes = c.start(3);
    let clients: Vec<_> = nodes.iter().map(Served::client).collect();
    let session = clients[0]
        .login("admin", PASSWORD, "aws80")
        .await
        .expect("login");
    let rt = session.refresh_token.clone().expect("rt");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = clients[i % clients.len()].clone();
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move { client.refresh(&rt).await }));
    }
    let mut sids = HashSet::new();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(s) => {
                ok += 1;
                let payload = s
                    .access_token
                    .split('.')
                    .nth(1)
                    .expect("payload")
                    .to_owned();
                sids.insert(payload_sid(&payload));
            }
            Err(e) => assert_ne!(e.status(), Some(StatusCode::INTERNAL_SERVER_ERROR), "{e}"),
        }
    }
    assert!(ok > 0);
    assert_eq!(sids.len(), 1, "one session, never two");
    assert_eq!(c.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(
        c.count("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL")
            .await,
        1,
        "one live successor"
    );
    assert_eq!(
        c.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

fn payload_sid(payload: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    v["sid"].as_str().expect("sid").to_owned()
}

#[tokio::test]
async fn postgres_needs_an_existing_master_key_file() {
    let Some(c) = cluster().await else { return };
    let missing = c.key.with_file_name("missing.key");
    let out = assert_cmd::Command::new(cxauth_testkit::cli::cxauth_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CXAUTH_DATABASE", &c.url)
        .env("CXAUTH_MASTER_KEY_FILE", &missing)
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("generate-master-key"), "{err}");
    assert!(!missing.exists());
    let out = assert_cmd::Command::new(cxauth_testkit::cli::cxauth_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CXAUTH_DATABASE", &c.url)
        .env_remove("CXAUTH_MASTER_KEY_FILE")
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("CXAUTH_MASTER_KEY_FILE"));
    // The password in a URL never reaches an error message.
    let out = assert_cmd::Command::new(cxauth_testkit::cli::cxauth_bin())
        .args([
            "admin",
            "--database",
            "postgres://someone:s3cret-pw@127.0.0.1:1/none",
            "user",
            "list",
        ])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
