//! The SDK against a real cxauth server on port 0 (a fresh database of the backend
//! `CXAUTH_TEST_BACKEND` selects, manual clock, through `cxauth-testkit`), and its
//! retry rules against a small stub server that answers 429/503 on demand.
#![allow(missing_docs)]

use cxauth_client::{Client, Error, RetryPolicy, Session, SessionClient};
use cxauth_core::clock::Clock;
use cxauth_testkit::TestApp;
use reqwest::StatusCode;
use secrecy::SecretString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "sdk-test-password";
const PLATFORM: &str = "aws80";
const TTL: Duration = Duration::from_secs(120);

/// The real server on the selected backend (`cxauth-testkit`), with this suite's admin password
/// and access-token lifetime.
struct Server(TestApp);

impl std::ops::Deref for Server {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

async fn spawn() -> Server {
    Server(
        TestApp::spawn_with(|c| {
            c.bootstrap_admin_password = Some(SecretString::from(PASSWORD));
            c.access_token_ttl = TTL;
        })
        .await,
    )
}

impl Server {
    fn client(&self) -> Client {
        Client::builder(&self.base).build().expect("client")
    }

    /// A clock for the client that reads the server's manual clock: both sides agree on time.
    fn shared_clock(&self) -> cxauth_client::NowFn {
        let c = self.clock.clone();
        Arc::new(move || c.now_ms())
    }

    /// A session whose own clock is the server's, recording each rotation.
    async fn session(&self) -> (SessionClient, Arc<Mutex<Vec<Session>>>) {
        let rotated = Arc::new(Mutex::new(Vec::new()));
        let r = rotated.clone();
        let s = SessionClient::login(self.client(), "admin", PASSWORD, PLATFORM)
            .await
            .expect("login")
            .clock(self.shared_clock())
            .on_rotate(move |s| r.lock().expect("lock").push(s.clone()));
        (s, rotated)
    }
}

fn frozen_clock() -> cxauth_client::NowFn {
    let now = cxauth_core::clock::SystemClock.now_ms();
    Arc::new(move || now)
}

#[tokio::test]
async fn every_call_works_through_a_session_and_through_an_api_token() {
    let s = spawn().await;
    let (session, rotated) = s.session().await;
    let accounts = session.accounts().await.expect("accounts");
    assert_eq!(accounts[0].account_id, "10000001");
    assert_eq!(session.agents("10000001").await.expect("agents"), vec![]);
    let err = session.agents("~").await.expect_err("not an account id");
    assert!(
        matches!(&err, Error::Status { status, .. } if *status == StatusCode::BAD_REQUEST),
        "{err:?}"
    );
    let nested = session.users(false, false).await.expect("users");
    assert_eq!(nested[0].user_name, "admin");
    let flat = session.users(true, true).await.expect("flat users");
    assert_eq!(flat.len(), 1);

    let current = session.session().await.expect("session");
    let debug = format!("{session:?}");
    assert!(
        !debug.contains(&current.access_token)
            && !debug.contains(current.refresh_token.as_deref().expect("rt")),
        "{debug}"
    );
    let token = session.create_api_token().await.expect("create");
    assert!(token.starts_with("aws80:"), "{token}");
    assert_eq!(
        session.list_api_tokens().await.expect("list"),
        vec![token.clone()]
    );

    let api = SessionClient::with_api_token(s.client(), token.clone());
    assert!(!format!("{api:?}").contains(&token));
    assert_eq!(api.accounts().await.expect("accounts by token"), accounts);
    assert_eq!(
        api.list_api_tokens().await.expect("list"),
        vec![token.clone()]
    );
    assert!(matches!(api.logout().await, Err(Error::Unsupported(_))));
    assert!(matches!(api.refresh().await, Err(Error::Unsupported(_))));
    assert!(api.session().await.is_none());

    session.delete_api_token(&token).await.expect("delete");
    assert!(session.list_api_tokens().await.expect("list").is_empty());
    let err = session.delete_api_token(&token).await.expect_err("gone");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    match err {
        Error::Status {
            error_code,
            request_id,
            ..
        } => {
            assert_eq!(error_code.as_deref(), Some("not.found"));
            assert!(request_id.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
    // The deleted token is refused, and API-token mode reports that as is (no refresh).
    let err = api.accounts().await.expect_err("deleted token");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(session.refresh_count(), 0);
    assert!(rotated.lock().expect("lock").is_empty());

    let forced = session.refresh().await.expect("forced refresh");
    assert_eq!(session.refresh_count(), 1);
    assert_eq!(rotated.lock().expect("lock").as_slice(), &[forced]);

    session.logout().await.expect("logout");
    assert!(matches!(
        session.accounts().await,
        Err(Error::SessionEnded { .. })
    ));
    session.logout().await.expect("logging out twice is fine");
}

#[tokio::test]
async fn bad_password_keeps_the_servers_error_code_status_and_request_id() {
    let s = spawn().await;
    let err = SessionClient::login(s.client(), "admin", "wrong", PLATFORM)
        .await
        .expect_err("refused");
    match &err {
        Error::Status {
            status,
            error_code,
            request_id,
            ..
        } => {
            assert_eq!(*status, StatusCode::UNAUTHORIZED);
            assert_eq!(error_code.as_deref(), Some("authentication.failed"));
            assert!(request_id.as_deref().is_some_and(|r| !r.is_empty()));
            assert_eq!(err.request_id(), request_id.as_deref());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_token_expired());
}

#[tokio::test]
async fn refreshes_shortly_before_exp_without_a_refused_request() {
    let s = spawn().await;
    let (session, rotated) = s.session().await;
    let first = session.session().await.expect("session");
    // 100 s into a 120 s token: outside the 12 s margin, no refresh.
    s.clock.advance(Duration::from_secs(100));
    session.accounts().await.expect("accounts");
    assert_eq!(session.refresh_count(), 0);
    // 110 s: inside the margin; refreshed before the call, which the server accepts.
    s.clock.advance(Duration::from_secs(10));
    session.accounts().await.expect("accounts");
    assert_eq!(session.refresh_count(), 1);
    let now = session.session().await.expect("session");
    assert_ne!(now.access_token, first.access_token);
    assert_ne!(now.refresh_token, first.refresh_token);
    assert_eq!(rotated.lock().expect("lock").as_slice(), &[now]);
    // Many lifetimes later (each refresh token lives 7 days from its issue) it still works.
    for _ in 0..3 {
        s.clock.advance(TTL * 2);
        session.users(true, false).await.expect("users");
    }
    assert_eq!(session.refresh_count(), 4);
}

#[tokio::test]
async fn refreshes_once_after_jwt_is_expired_when_its_own_clock_disagrees() {
    let s = spawn().await;
    let session = SessionClient::login(s.client(), "admin", PASSWORD, PLATFORM)
        .await
        .expect("login")
        .clock(frozen_clock());
    // The server's clock runs ahead: it answers `Jwt is expired` although the client thinks the
    // token fresh. The client refreshes once and retries once.
    s.clock.advance(TTL + Duration::from_secs(1));
    session
        .accounts()
        .await
        .expect("accounts after the 401 fallback");
    assert_eq!(session.refresh_count(), 1);
    session.accounts().await.expect("the new token works");
    assert_eq!(session.refresh_count(), 1);
}

#[tokio::test]
async fn fifty_concurrent_callers_share_one_refresh_before_exp() {
    let s = spawn().await;
    let (session, rotated) = s.session().await;
    s.clock.advance(TTL);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = session.clone();
            tokio::spawn(async move { c.accounts().await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("accounts");
    }
    assert_eq!(session.refresh_count(), 1);
    assert_eq!(rotated.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_callers_share_one_refresh_after_jwt_is_expired() {
    let s = spawn().await;
    let rotations = Arc::new(AtomicUsize::new(0));
    let r = rotations.clone();
    let session = SessionClient::login(s.client(), "admin", PASSWORD, PLATFORM)
        .await
        .expect("login")
        .clock(frozen_clock())
        .on_rotate(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
    s.clock.advance(TTL + Duration::from_secs(1));
    // All 50 send the old token and get 401 `Jwt is expired`; the first to reach the lock
    // refreshes, the others see a newer generation and reuse its token.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = session.clone();
            tokio::spawn(async move { c.users(true, false).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("users");
    }
    assert_eq!(session.refresh_count(), 1);
    assert_eq!(rotations.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_persisted_rotation_resumes_and_a_stale_one_is_refused() {
    let s = spawn().await;
    let (session, rotated) = s.session().await;
    let original = session.session().await.expect("session");
    s.clock.advance(TTL);
    session.accounts().await.expect("refreshes");
    let saved = rotated
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("rotated");

    // A later run resumes from what the hook saved.
    let resumed = SessionClient::from_session(s.client(), saved).clock(s.shared_clock());
    resumed.accounts().await.expect("resumed session works");
    // Past the server's grace window, the refresh token from before the rotation is reuse:
    // the server ends the whole session, and the SDK says so.
    s.clock.advance(Duration::from_secs(60));
    let stale = SessionClient::from_session(s.client(), original);
    let err = stale.refresh().await.expect_err("reuse");
    assert!(matches!(err, Error::SessionEnded { .. }), "{err:?}");
    let err = resumed.accounts().await.expect_err("session revoked");
    assert!(matches!(err, Error::SessionEnded { .. }), "{err:?}");
}

#[tokio::test]
async fn a_session_ends_when_the_server_ends_it_or_the_refresh_token_expires() {
    let s = spawn().await;
    // Ended by the server: a password change ends all sessions of the user.
    let (session, _) = s.session().await;
    session.accounts().await.expect("works");
    cxauth_core::admin::set_password(
        s.state.auth.store().as_ref(),
        "admin",
        &SecretString::from("a-new-password"),
        s.clock.now_ms(),
    )
    .await
    .expect("set password");
    let err = session.accounts().await.expect_err("ended");
    assert!(matches!(err, Error::SessionEnded { .. }), "{err:?}");
    assert!(err.to_string().contains("session ended"), "{err}");

    // Refresh token past its 7-day lifetime.
    let session = SessionClient::login(s.client(), "admin", "a-new-password", PLATFORM)
        .await
        .expect("login")
        .clock(s.shared_clock());
    s.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let err = session.accounts().await.expect_err("too old");
    assert!(matches!(err, Error::SessionEnded { .. }), "{err:?}");
    assert_eq!(session.refresh_count(), 0);
}

#[tokio::test]
async fn api_token_mode_never_refreshes() {
    let s = spawn().await;
    let (session, _) = s.session().await;
    let token = session.create_api_token().await.expect("token");
    let api = SessionClient::with_api_token(s.client(), token).clock(s.shared_clock());
    s.clock.advance(Duration::from_secs(30 * 24 * 3600));
    api.accounts().await.expect("API tokens are permanent");
    assert_eq!(api.refresh_count(), 0);
    // Even a server saying "expired" does not make an API-token client refresh.
    let stub = Stub::start(vec![(401, None, "Jwt is expired"); 3]).await;
    let api = SessionClient::with_api_token(stub.client(RetryPolicy::none()), "aws80:x");
    let err = api.accounts().await.expect_err("refused");
    assert!(err.is_token_expired());
    assert_eq!(stub.hits(), 1, "one request, no refresh, no retry");
}

/// A server that answers the scripted `(status, Retry-After, body)` in turn, then 200 `[]`.
struct Stub {
    base: String,
    hits: Arc<AtomicUsize>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Stub {
    async fn start(script: Vec<(u16, Option<&'static str>, &'static str)>) -> Stub {
        use axum::http::{HeaderMap, HeaderValue, StatusCode};
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let script = Arc::new(script);
        let handler = move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            async move {
                let mut headers = HeaderMap::new();
                match script.get(n) {
                    Some((code, retry_after, body)) => {
                        if let Some(r) = retry_after {
                            headers.insert("retry-after", HeaderValue::from_static(r));
                        }
                        headers.insert("x-request-id", HeaderValue::from_static("stub-req"));
                        (
                            StatusCode::from_u16(*code).expect("status"),
                            headers,
                            (*body).to_owned(),
                        )
                    }
                    None => (StatusCode::OK, headers, "[]".to_owned()),
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Stub {
            base,
            hits,
            _shutdown: tx,
        }
    }

    fn client(&self, retry: RetryPolicy) -> Client {
        Client::builder(&self.base)
            .retry(retry)
            .build()
            .expect("client")
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

const BUSY: &str = r#"{"errorCode":"service.busy","generalMessage":"Busy","details":"try later","requestUri":"/ - GET","timestamp":0,"requestId":"stub-req"}"#;

fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(10),
        max_wait: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn retries_503_and_429_and_honours_retry_after() {
    // Two refusals with Retry-After: 0, one without (back-off), then success.
    let stub = Stub::start(vec![
        (503, Some("0"), BUSY),
        (429, Some("0"), BUSY),
        (503, None, BUSY),
    ])
    .await;
    let accounts = stub
        .client(fast_retries(3))
        .accounts(&cxauth_client::Credential::XAuthToken("t".into()))
        .await
        .expect("succeeds on the fourth try");
    assert!(accounts.is_empty());
    assert_eq!(stub.hits(), 4);

    // Retry-After: 1 is waited out.
    let stub = Stub::start(vec![(503, Some("1"), BUSY)]).await;
    let started = Instant::now();
    stub.client(fast_retries(3))
        .healthz()
        .await
        .expect("after one wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stub.hits(), 2);
}

#[tokio::test]
async fn retries_are_bounded_and_long_waits_are_handed_back() {
    // Out of retries: the last refusal comes back, with everything the server said.
    let stub = Stub::start(vec![(503, Some("0"), BUSY); 5]).await;
    let err = stub
        .client(fast_retries(2))
        .healthz()
        .await
        .expect_err("gives up");
    assert_eq!(stub.hits(), 3);
    match &err {
        Error::Status {
            status,
            error_code,
            message,
            request_id,
            retry_after,
        } => {
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error_code.as_deref(), Some("service.busy"));
            assert_eq!(message, "try later");
            assert_eq!(request_id.as_deref(), Some("stub-req"));
            assert_eq!(*retry_after, Some(Duration::ZERO));
        }
        other => panic!("unexpected {other:?}"),
    }

    // A Retry-After beyond the cap is not slept through: returned at once.
    let stub = Stub::start(vec![(429, Some("900"), BUSY)]).await;
    let started = Instant::now();
    let err = stub
        .client(fast_retries(3))
        .healthz()
        .await
        .expect_err("throttled");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(900)));
    assert_eq!(stub.hits(), 1);

    // Client::new sends exactly one request; other errors are never retried.
    let stub = Stub::start(vec![(503, Some("0"), BUSY)]).await;
    assert!(
        Client::new(&stub.base)
            .expect("client")
            .healthz()
            .await
            .is_err()
    );
    assert_eq!(stub.hits(), 1);
    let stub = Stub::start(vec![(500, None, BUSY)]).await;
    assert!(stub.client(fast_retries(3)).healthz().await.is_err());
    assert_eq!(stub.hits(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = Client::builder(&base)
        .build()
        .expect("client")
        .healthz()
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(&err, Error::Transport(e) if e.is_connect()),
        "{err:?}"
    );
    assert!(matches!(
        Client::new("ftp://example.invalid"),
        Err(Error::Url(_))
    ));
}

/// The README's Rust example (under "From Rust: `cxauth-client`") as printed, run against a real
/// server: `readme_snippet.in` is the README's block with only the server's address replaced
/// (`base`), inside braces so that `include!` takes it as one block, and this test fails if the
/// two differ.
#[tokio::test]
async fn the_readmes_example_runs_as_printed() {
    const README: &str = include_str!("../../../README.md");
    const SNIPPET: &str = include_str!("readme_snippet.in");
    let heading = README
        .find("### From Rust: `cxauth-client`")
        .expect("the README's SDK section");
    let start = heading + README[heading..].find("```rust\n").expect("its Rust block") + 8;
    let end = start + README[start..].find("```\n").expect("the block's end");
    let block = README[start..end].replace("\"http://127.0.0.1:8080\"", "base");
    let inner = SNIPPET
        .strip_prefix("{\n")
        .and_then(|s| s.strip_suffix("}\n"))
        .expect("readme_snippet.in is one block in braces");
    assert_eq!(
        block, inner,
        "README.md's Rust example and tests/readme_snippet.in differ (only the address may)"
    );
    let s = TestApp::spawn_with(|c| {
        c.bootstrap_admin_password = Some(SecretString::from("change-me-now"));
    })
    .await;
    readme_example(&s.base)
        .await
        .expect("the README's example runs");
}

/// The body of [`the_readmes_example_runs_as_printed`]: the README's block, included.
#[allow(clippy::redundant_closure)] // the README spells out the hook's argument
async fn readme_example(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// The README's placeholder for where an application keeps a rotated session.
    fn save_somewhere_private(s: &Session) {
        assert!(!s.access_token.is_empty());
    }
    include!("readme_snippet.in");
    Ok(())
}
