//! `cxauth admin` (another process) disabling a user while `cxauth serve` answers that user's
//! credentials from its in-memory cache, on SQLite (issue 14): the server refuses them within
//! the staleness bound, p99 over 100 revocations (measured from the command's exit, printed),
//! and serves them again after `user enable` as quickly.

use cxauth_client::Credential;
use cxauth_testkit::cli::{admin, serve_on};
use cxauth_testkit::{Backend, PLATFORM, TestDb};
use std::time::{Duration, Instant};

const PASSWORD: &str = "cache-admin-password";

async fn status(client: &cxauth_client::Client, cred: &Credential) -> u16 {
    match client.accounts(cred).await {
        Ok(_) => 200,
        Err(e) => e.status().map_or(0, |s| s.as_u16()),
    }
}

/// Waits until the server answers `want` for `cred`; how long that took. Panics after 10 s.
async fn until(client: &cxauth_client::Client, cred: &Credential, want: u16) -> Duration {
    let since = Instant::now();
    while status(client, cred).await != want {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "not {want} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_disabled_by_the_cli_is_refused_by_a_caching_server_within_the_bound() {
    let db = TestDb::on_blocking(Backend::Sqlite);
    let served = serve_on(
        &db,
        &[] as &[&str],
        &[("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)],
    );
    let client = served.client();
    let session = client
        .login("admin", PASSWORD, PLATFORM)
        .await
        .expect("login");
    let bearer = Credential::Bearer(session.access_token.clone());
    let token = client.create_api_token(&bearer).await.expect("token");
    let cred = Credential::XAuthToken(token);
    assert_eq!(status(&client, &cred).await, 200);
    let mut refused = Vec::new();
    let mut served_again = Vec::new();
    for _ in 0..100 {
        // Served (from the cache after the first request).
        assert_eq!(status(&client, &cred).await, 200);
        admin(&db)
            .args(["user", "disable", "admin"])
            .assert()
            .success();
        refused.push(until(&client, &cred, 401).await);
        admin(&db)
            .args(["user", "enable", "admin"])
            .assert()
            .success();
        served_again.push(until(&client, &cred, 200).await);
    }
    refused.sort();
    served_again.sort();
    let p = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    println!(
        "credential cache, SQLite, `cxauth admin user disable`: refused after p50 {:?}, p99 {:?}, \
         max {:?}; `user enable`: served again after p50 {:?}, p99 {:?} (100 each, default \
         staleness)",
        p(&refused, 50),
        p(&refused, 99),
        refused[refused.len() - 1],
        p(&served_again, 50),
        p(&served_again, 99),
    );
    assert!(p(&refused, 99) < Duration::from_secs(1));
    assert!(p(&served_again, 99) < Duration::from_secs(1));
}
