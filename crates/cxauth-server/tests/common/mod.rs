//! Spawns a real cxauth server on port 0 with a fresh SQLite database and a manual clock.
#![allow(dead_code, missing_docs)]

use cxauth_client::{Client, Credential, Session};
use cxauth_core::admin::{self, UserSpec};
use cxauth_core::clock::{Clock, ManualClock};
use cxauth_server::config::ServerConfig;
use cxauth_server::{App, AppState};
use cxauth_store::DatabaseUrl;
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const PLATFORM: &str = "aws80";

pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn config_in(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(DatabaseUrl::Sqlite {
        path: Some(dir.join("cxauth.db")),
    });
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.bootstrap_admin_password = Some(SecretString::from(ADMIN_PASSWORD));
    c.hash_workers = 2;
    c
}

impl TestServer {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config_in(dir.path());
        tweak(&mut config);
        Self::start(dir, config, ManualClock::starting_now()).await
    }

    pub async fn start(
        dir: tempfile::TempDir,
        config: ServerConfig,
        clock: Arc<ManualClock>,
    ) -> Self {
        let app = App::build(&config, clock.clone())
            .await
            .expect("server builds");
        let state = app.state.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            cxauth_server::serve(listener, app, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            client: Client::new(&base).expect("client"),
            base,
            clock,
            state,
            dir,
            config,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and returns its directory and config, to start it again.
    pub async fn stop(mut self) -> (tempfile::TempDir, ServerConfig, Arc<ManualClock>) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
        (self.dir, self.config, self.clock)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("cxauth.db")
    }

    pub async fn login_admin(&self) -> Session {
        self.client
            .login("admin", ADMIN_PASSWORD, PLATFORM)
            .await
            .expect("admin login")
    }

    /// Creates a user through the same code path as `cxauth admin user create`.
    pub async fn create_user(
        &self,
        username: &str,
        parent: Option<&str>,
        grants: &[i64],
        roles: &[&str],
    ) -> i64 {
        admin::create_user(
            self.state.auth.store().as_ref(),
            UserSpec {
                username: username.into(),
                password: SecretString::from(format!("{username}-pw")),
                platform_id: PLATFORM.into(),
                parent: parent.map(str::to_owned),
                grants: grants.to_vec(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                first_name: username.to_uppercase(),
                last_name: "Test".into(),
                rc_user_id: None,
            },
            self.clock.now_ms(),
        )
        .await
        .expect("create user")
    }

    /// Like [`Self::create_user`], with a RingEX user id.
    pub async fn create_rc_user(&self, username: &str, grants: &[i64], rc_user_id: i64) -> i64 {
        admin::create_user(
            self.state.auth.store().as_ref(),
            UserSpec {
                username: username.into(),
                password: SecretString::from(format!("{username}-pw")),
                platform_id: PLATFORM.into(),
                parent: None,
                grants: grants.to_vec(),
                roles: vec![],
                first_name: username.to_uppercase(),
                last_name: "Test".into(),
                rc_user_id: Some(rc_user_id),
            },
            self.clock.now_ms(),
        )
        .await
        .expect("create user")
    }

    pub async fn login(&self, username: &str) -> Session {
        self.client
            .login(username, &format!("{username}-pw"), PLATFORM)
            .await
            .expect("login")
    }
}

pub fn bearer(s: &Session) -> Credential {
    Credential::Bearer(s.access_token.clone())
}

pub fn x_auth(t: &str) -> Credential {
    Credential::XAuthToken(t.to_owned())
}

/// Status and text of a raw response.
pub async fn raw(res: reqwest::Response) -> (u16, reqwest::header::HeaderMap, String) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}
