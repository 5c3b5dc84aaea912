//! Operations endpoints and behaviour: readiness, and graceful, bounded shutdown.

mod common;

use common::{TestServer, http, raw};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let s = TestServer::spawn().await;
    let (status, _, body) = raw(http().get(s.url("/healthz")).send().await.expect("get")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _, body) = raw(http().get(s.url("/readyz")).send().await.expect("get")).await;
    assert_eq!((status, body.as_str()), (200, "ready"));
    // Once the database is closed, the instance is no longer ready.
    s.state.auth.store().close().await;
    let (status, headers, _) = raw(http().get(s.url("/readyz")).send().await.expect("get")).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
}

/// A request whose headers arrived before the shutdown signal, and whose body comes after it.
async fn half_sent_request(base: &str) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(
        format!(
            "POST /api/auth/token/refresh HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    // Let the server read the headers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_closes_the_database() {
    let s = TestServer::spawn().await;
    let mut conn = half_sent_request(&s.base).await;
    let store = s.state.auth.store().clone();
    let stopped = tokio::spawn(s.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopped.is_finished(),
        "the server waits for the request in flight"
    );
    // The request in flight is still answered.
    conn.write_all(b"refresh_token=abcdef").await.expect("body");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stops once the request is answered")
        .expect("task");
    assert!(store.get_meta("x").await.is_err(), "the pool is closed");
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_timeout() {
    let s = TestServer::spawn_with(|c| c.shutdown_timeout = Duration::from_millis(300)).await;
    let _conn = half_sent_request(&s.base).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(8), s.stop())
        .await
        .expect("stops despite a client that never finishes");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
