//! The database goes away and comes back: requests that need it get 503 + Retry-After quickly
//! (never a 500, never a hang), requests that do not keep working, and the server recovers on its
//! own. The connection runs through a TCP proxy this test owns, so the machine's PostgreSQL is
//! never touched.

use cxauth_client::{Client, Error};
use cxauth_core::clock::ManualClock;
use cxauth_testkit::*;
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1:port to an upstream address until cut.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, l) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the database is "down"
                    continue;
                }
                let upstream = upstream.clone();
                l.lock().await.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy {
            port,
            cut,
            links,
            _accept: accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn through_proxy(url: &str, port: u16) -> String {
    let parsed = url::Url::parse(url).expect("url");
    let host = parsed.host_str().expect("host");
    let orig = format!("{host}:{}", parsed.port().unwrap_or(5432));
    url.replacen(&orig, &format!("127.0.0.1:{port}"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_quick_503_and_heals_by_itself() {
    // PostgreSQL whatever the selected backend: the outage is of a database server.
    let Some(db) = TestDb::postgres_or_skip().await else {
        return;
    };
    let url = db.url().to_owned();
    let parsed = url::Url::parse(&url).expect("url");
    let upstream = format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    let mut config = config_for(&db).expect("config");
    config.database =
        cxauth_store::DatabaseUrl::parse(&through_proxy(&url, proxy.port)).expect("url");
    config.database_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(5);
    let s = TestApp::start(db, config, ManualClock::starting_now()).await;

    let session = s.login_admin().await;
    let token = s
        .client
        .create_api_token(&bearer(&session))
        .await
        .expect("token");
    s.client
        .accounts(&x_auth(&token))
        .await
        .expect("works before the outage");

    proxy.cut().await;
    // Whatever needs the database: 503 with Retry-After, well within the request timeout.
    let calls: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "login",
            s.post("/api/auth/login/admin").form(&[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("platformId", "aws80"),
            ]),
        ),
        (
            "refresh",
            s.post("/api/auth/token/refresh").form(&[(
                "refresh_token",
                session.refresh_token.as_deref().expect("rt"),
            )]),
        ),
        (
            "api token",
            s.get("/voice/api/v1/admin/accounts")
                .header("x-auth-token", &token),
        ),
        (
            "bearer",
            s.get("/voice/api/v1/admin/token")
                .bearer_auth(&session.access_token),
        ),
    ];
    for (what, req) in calls {
        let started = Instant::now();
        let (st, h, body) = send(req).await.parts();
        assert_eq!(st, 503, "{what}: {body}");
        assert!(h.contains_key("retry-after"), "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what} took {:?}",
            started.elapsed()
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["errorCode"], "service.unavailable");
    }
    // What does not need the database keeps working.
    s.client.healthz().await.expect("healthz");
    assert_eq!(s.client.jwks().await.expect("jwks").keys.len(), 1);

    proxy.restore();
    // The pool reconnects on its own; allow it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s.client.accounts(&x_auth(&token)).await {
            Ok(_) => break,
            Err(Error::Status { status, .. })
                if status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    }
    let again = s.login_admin().await;
    Client::new(&s.base)
        .expect("client")
        .accounts(&bearer(&again))
        .await
        .expect("after recovery");
    s.client
        .refresh(session.refresh_token.as_deref().expect("rt"))
        .await
        .expect("the old session survived");
}
