//! Hostile and concurrent input against a real server: whatever arrives, the answer is a clear
//! 4xx in the contract's shape, never a 5xx, and concurrent use of one refresh token never
//! forks a session.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_testkit::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::HashSet;

const PLAIN_401: [&str; 3] = ["Jwt is missing", "Jwt is expired", "Jwt verification fails"];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,300}",
        "aws80:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "eyJ[A-Za-z0-9_-]{10,60}\\.[A-Za-z0-9_-]{10,120}\\.[A-Za-z0-9_-]{0,90}",
        "[A-Za-z0-9_-]{43}",
        "[A-Za-z0-9_-]{54}",
    ]
}

#[test]
fn any_credential_is_refused_with_a_contract_401() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(TestApp::spawn());
    let url = s.url("/voice/api/v1/admin/token");
    runner(256)
        .run(&(token_like(), any::<bool>()), |(token, as_bearer)| {
            let (status, body) = rt.block_on(async {
                let req = if as_bearer {
                    http()
                        .get(&url)
                        .header("authorization", format!("Bearer {token}"))
                } else {
                    http().get(&url).header("x-auth-token", &token)
                };
                let (st, _, body) = send(req).await.parts();
                (st, body)
            });
            prop_assert_eq!(status, 401);
            prop_assert!(PLAIN_401.contains(&body.as_str()), "{}", body);
            prop_assert_ne!(body.as_str(), "Jwt is expired");
            Ok(())
        })
        .expect("property holds");
}

#[test]
fn any_login_or_refresh_input_is_a_clear_4xx() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(TestApp::spawn());
    let content_types = prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("application/x-www-form-urlencoded")),
        Just(Some("text/plain")),
    ];
    let input = (
        prop_oneof![Just("/api/auth/login/admin"), Just("/api/auth/token/refresh")],
        proptest::option::of("[ -~]{0,120}"),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            "[ -~]{0,200}".prop_map(String::into_bytes),
            (token_like(), token_like()).prop_map(|(a, b)| {
                serde_json::json!({"username": a, "password": b, "platformId": "aws80", "refresh_token": a})
                    .to_string()
                    .into_bytes()
            }),
        ],
        content_types,
    );
    runner(256)
        .run(&input, |(path, query, body, ct)| {
            let (status, headers, text) = rt.block_on(async {
                let mut url = s.url(path);
                if let Some(q) = &query {
                    url = format!("{url}?{q}");
                }
                let mut req = http().post(url).body(body.clone());
                if let Some(ct) = ct {
                    req = req.header("content-type", ct);
                }
                send(req).await.parts()
            });
            prop_assert!(
                [400, 401, 413, 429].contains(&status),
                "{} {}",
                status,
                text
            );
            prop_assert_eq!(
                headers["content-type"].to_str().expect("ct"),
                "application/json"
            );
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
            prop_assert!(v["errorCode"].is_string() && v["requestId"].is_string());
            prop_assert!(!text.to_lowercase().contains("expired"));
            Ok(())
        })
        .expect("property holds");
}

#[test]
fn any_path_token_is_a_clear_4xx() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(TestApp::spawn());
    let admin = rt.block_on(s.login_admin());
    runner(128)
        .run(&(token_like(), any::<bool>()), |(token, logout)| {
            let seg = percent_encode(&token);
            let (status, text) = rt.block_on(async {
                let req = if logout {
                    s.delete(&format!("/api/auth/logout/{seg}"))
                } else {
                    s.delete(&format!("/api/v1/admin/token/{seg}"))
                        .bearer_auth(&admin.access_token)
                };
                let (st, _, text) = send(req).await.parts();
                (st, text)
            });
            let want = if logout { 401 } else { 404 };
            // An empty segment is another route; it must still be a clear 4xx. So are `.` and
            // `..`: the URL parser removes them as dot-segments (also as %2E), so the request
            // goes to another path.
            if token.is_empty() || token == "." || token == ".." {
                prop_assert!((400..500).contains(&status), "{}", status);
            } else {
                prop_assert_eq!(status, want, "{}", text);
            }
            Ok(())
        })
        .expect("property holds");
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn sid(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).expect("payload");
    let v: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    v["sid"].as_str().expect("sid").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_of_one_token_never_fork_the_session() {
    let s = TestApp::spawn().await;
    let session = s.login_admin().await;
    let rt = session.refresh_token.clone().expect("rt");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = s.client.clone();
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move { c.refresh(&rt).await }));
    }
    let mut sessions = HashSet::new();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(new) => {
                ok += 1;
                sessions.insert(sid(&new.access_token));
            }
            Err(e) => assert_ne!(e.status().map(|s| s.as_u16()), Some(500), "{e}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(
        sessions,
        HashSet::from([sid(&session.access_token)]),
        "one session"
    );
    // Exactly one refresh token of the session is still live.
    let live =
        s.db.count("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL")
            .await;
    assert_eq!(live, 1);
    let n_sessions = s.db.count("SELECT COUNT(*) FROM sessions").await;
    assert_eq!(n_sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_grace_window_a_concurrent_replay_ends_the_session() {
    let s = TestApp::spawn_with(|c| c.refresh_grace = std::time::Duration::ZERO).await;
    let session = s.login_admin().await;
    let rt = session.refresh_token.clone().expect("rt");
    let first = s.client.refresh(&rt).await.expect("first use");
    s.clock.advance(std::time::Duration::from_millis(1));
    assert!(s.client.refresh(&rt).await.is_err(), "replay refused");
    assert!(
        s.client
            .refresh(first.refresh_token.as_deref().expect("rt"))
            .await
            .is_err(),
        "session ended by the replay"
    );
    assert!(s.client.accounts(&bearer(&first)).await.is_err());
}

#[tokio::test]
async fn absurd_headers_and_bodies_are_clear_4xx_and_the_server_stays_up() {
    let s = TestApp::spawn().await;
    let url = s.url("/voice/api/v1/admin/accounts");
    // A 200 KB credential header: refused before it reaches our code, or as a bad token.
    let res = http()
        .get(&url)
        .header("x-auth-token", "a".repeat(200 * 1024))
        .send()
        .await;
    if let Ok(res) = res {
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    // A token longer than any we issue is refused without being digested or verified.
    let (st, _, body) = send(http().get(&url).bearer_auth("e".repeat(8 * 1024)))
        .await
        .parts();
    assert_eq!((st, body.as_str()), (401, "Jwt verification fails"));
    // Hundreds of headers.
    let mut req = http().get(&url);
    for i in 0..500 {
        req = req.header(format!("x-junk-{i}"), "x".repeat(100));
    }
    if let Ok(res) = req.send().await {
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    // A body far over the limit, chunked with no Content-Length: cut off with a 413.
    assert_eq!(chunked_post(&s.base, 4 * 1024 * 1024).await, "413");
    // Invalid UTF-8 in a form body and in a percent-encoded query.
    let res = s
        .post("/api/auth/login/admin?username=%FF%FE")
        .body(vec![0xff, 0xfe, b'=', 0x80])
        .send()
        .await
        .expect("send");
    assert!(res.status().is_client_error());
    s.client.healthz().await.expect("still up");
    s.login_admin().await;
}

/// POSTs `total` bytes to the login endpoint with chunked encoding over a raw socket, stopping
/// early if the server answers; returns the status code of the answer.
async fn chunked_post(base: &str, total: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(
        format!("POST /api/auth/login/admin HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("head");
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
    let mut sent = 0;
    while sent < total {
        if sock.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server stopped reading: its answer is waiting
        }
        sent += 64 * 1024;
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    head.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}
