//! The edge of the server: slow and idle clients (header-read and keep-alive timeouts, the
//! connection cap and its shedding, shutdown with slow clients connected), browser headers
//! (`nosniff`, the CSP of `/docs`, `no-store` on admin answers), and strict parameter
//! encodings (duplicate JSON keys, invalid UTF-8 in a form).

use cxauth_testkit::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PARTIAL_HEADERS: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: cxauth\r\nX-Slow: ";

fn addr(s: &TestApp) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Waits (at most `limit`) for the server to close `stream`; returns how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            // A response (e.g. a 408 or a keep-alive answer): keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the server has closed `stream`, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

async fn slow_client(s: &TestApp) -> TcpStream {
    slow_client_at(addr(s)).await
}

async fn slow_client_at(addr: String) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(PARTIAL_HEADERS).await.expect("write");
    c
}

async fn healthz_once(s: &TestApp) -> u16 {
    healthz_at(s.url("/healthz")).await
}

async fn healthz_at(url: String) -> u16 {
    http()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("healthz answers")
        .status()
        .as_u16()
}

/// One `GET /healthz` over the kept-alive connection `c`, answered 200.
async fn healthz_on(c: &mut TcpStream) {
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: cxauth\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 8192];
    let n = c.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}

#[tokio::test]
async fn unfinished_headers_are_cut_at_the_header_read_timeout() {
    let s = TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.keep_alive_timeout = Duration::from_secs(30);
    })
    .await;
    // Headers that never end, and a client that connects and says nothing.
    let opened = Instant::now();
    let mut partial = slow_client(&s).await;
    let mut silent = TcpStream::connect(addr(&s)).await.expect("connect");
    // A client that trickles a byte every 200 ms: activity must not extend its time.
    let mut trickle = TcpStream::connect(addr(&s)).await.expect("connect");
    let trickling = tokio::spawn(async move {
        let started = Instant::now();
        for b in PARTIAL_HEADERS.iter().cycle() {
            if trickle.write_all(&[*b]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        started.elapsed()
    });
    for (name, c) in [("partial", &mut partial), ("silent", &mut silent)] {
        assert!(
            closed_within(c, Duration::from_secs(5)).await.is_some(),
            "the {name} client was never disconnected"
        );
        let t = opened.elapsed();
        assert!(
            t >= Duration::from_millis(900) && t < Duration::from_millis(2_500),
            "{name} disconnected after {t:?}"
        );
        eprintln!("{name} client disconnected after {t:?} (header read timeout 1s)");
    }
    let t = trickling.await.expect("trickle task");
    assert!(
        t < Duration::from_secs(3),
        "the trickling client held on {t:?}"
    );
    // Meanwhile the server answers others.
    assert_eq!(healthz_once(&s).await, 200);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_at_the_keep_alive_timeout() {
    let s = TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_millis(500);
        c.keep_alive_timeout = Duration::from_millis(2_000);
    })
    .await;
    let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
    for _ in 0..2 {
        healthz_on(&mut c).await;
        // Longer than the header timeout, shorter than the keep-alive timeout: still open.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    // Now idle: closed about 2 s after the last answer (1 s of which has passed).
    let t = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(
        t >= Duration::from_millis(700) && t < Duration::from_millis(2_500),
        "closed {t:?} after the wait"
    );
}

/// The watcher alone times headers (hyper's own timer is off): a kept-alive connection whose
/// next request has begun gets the header-read timeout from that request's first byte, not the
/// keep-alive timeout.
#[tokio::test]
async fn a_next_request_that_stalls_is_cut_at_the_header_read_timeout() {
    let s = TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_millis(800);
        c.keep_alive_timeout = Duration::from_secs(30);
    })
    .await;
    let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
    healthz_on(&mut c).await;
    // Idle a while (the header timeout does not apply between requests)...
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // ...then begin a request and never finish its headers.
    c.write_all(PARTIAL_HEADERS).await.expect("write");
    let t = closed_within(&mut c, Duration::from_secs(10))
        .await
        .expect("the stalled request's connection is closed");
    assert!(
        t >= Duration::from_millis(600) && t < Duration::from_millis(2_500),
        "closed {t:?} after the request began (header read timeout 800 ms)"
    );
}

#[tokio::test]
async fn at_the_cap_the_idlest_connections_are_shed_and_real_clients_get_in() {
    let s = TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_secs(30);
        c.max_connections = Some(20);
    })
    .await;
    let started = Instant::now();
    let answers = futures_join_all((0..30).map(|_| healthz_at(s.url("/healthz")))).await;
    assert!(answers.iter().all(|&st| st == 200), "{answers:?}");
    eprintln!(
        "30 concurrent /healthz, no slow client, cap 20: {:?}",
        started.elapsed()
    );
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(slow_client(&s).await);
        // Distinct ages, so "oldest first" is observable.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 30 requests at once on new connections: each needs a slot, every slot is held by a
    // slow client.
    let started = Instant::now();
    let answers = futures_join_all((0..30).map(|_| healthz_at(s.url("/healthz")))).await;
    assert!(answers.iter().all(|&st| st == 200), "{answers:?}");
    eprintln!(
        "30 concurrent /healthz against 20 slow clients at a cap of 20: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed: Vec<bool> = slow.iter().map(is_closed).collect();
    let n = closed.iter().filter(|&&c| c).count();
    assert!(n >= 1, "no slow client was shed");
    // The oldest went first: the closed ones are a prefix of the list.
    let first_open = closed.iter().position(|&c| !c).unwrap_or(closed.len());
    assert!(
        closed[first_open..].iter().all(|&c| !c),
        "shedding was not oldest-first: {closed:?}"
    );
    // A login (the password pool, the database) gets through as well.
    let slow_more: Vec<TcpStream> =
        futures_join_all((0..20).map(|_| slow_client_at(addr(&s)))).await;
    s.login_admin().await;
    drop(slow_more);
}

/// `futures::future::join_all` without the dependency: run all, in order.
async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in fs.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out: Vec<(usize, F::Output)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

#[tokio::test]
async fn slow_clients_do_not_hold_up_a_shutdown() {
    let s = TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_secs(60);
        c.shutdown_timeout = Duration::from_secs(30);
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..10 {
        slow.push(slow_client(&s).await);
    }
    // One kept-alive idle connection too.
    let mut idle = TcpStream::connect(addr(&s)).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: cxauth\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let _ = s.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?} for connections with nothing to finish",
        started.elapsed()
    );
    for mut c in slow {
        assert!(
            closed_within(&mut c, Duration::from_secs(1))
                .await
                .is_some()
        );
    }
}

#[tokio::test]
async fn every_answer_says_nosniff_and_docs_have_a_strict_csp() {
    let s = TestApp::spawn().await;
    for path in ["/healthz", "/openapi.json", "/no/such/route", "/docs/"] {
        let res = s.get(path).send().await.expect("get");
        assert_eq!(
            res.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
        let csp = res
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let (status, headers, html) = send(s.get("/docs/")).await.parts();
    assert_eq!(status, 200);
    let csp = headers["content-security-policy"].to_str().expect("ascii");
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .expect("a script-src directive");
    assert_eq!(script_src, "script-src 'self'", "{csp}");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    // The page needs nothing the policy forbids: every script is a file of its own, and every
    // file it names is served from here.
    let mut scripts = 0;
    for part in html.split("<script").skip(1) {
        scripts += 1;
        let (attrs, rest) = part.split_once('>').expect("tag end");
        assert!(
            attrs.contains("src=\"./"),
            "an inline or foreign script: {part}"
        );
        let body = rest.split("</script>").next().unwrap_or_default();
        assert!(body.trim().is_empty(), "inline script code: {body}");
    }
    assert_eq!(scripts, 3, "{html}");
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
        "swagger-ui.css",
        "index.css",
    ] {
        assert!(html.contains(asset), "{asset} not in the page");
        let res = s
            .get(&format!("/docs/{asset}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.headers().contains_key("content-security-policy"));
    }
    // The initializer fetches the document from this origin (connect-src 'self').
    let init = s
        .get("/docs/swagger-initializer.js")
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
}

#[tokio::test]
async fn admin_answers_are_never_stored() {
    let s = TestApp::spawn().await;
    let session = s.login_admin().await;
    for prefix in ["/voice/api/v1", "/api/v1"] {
        for (path, authed) in [
            ("/admin/token", true),
            ("/admin/token", false),
            ("/admin/accounts", true),
            ("/admin/no-such-thing", true),
        ] {
            let mut req = s.get(&format!("{prefix}{path}"));
            if authed {
                req = req.bearer_auth(&session.access_token);
            }
            let res = req.send().await.expect("get");
            assert_eq!(
                res.headers().get("cache-control").map(|v| v.as_bytes()),
                Some(&b"no-store"[..]),
                "{prefix}{path} (authenticated: {authed}) answered {}",
                res.status()
            );
        }
    }
    let res = s.get("/healthz").send().await.expect("get");
    assert!(res.headers().get("cache-control").is_none());
}

#[tokio::test]
async fn duplicate_json_keys_and_invalid_utf8_forms_are_400() {
    let s = TestApp::spawn().await;
    let login = s.url("/api/auth/login/admin");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "application/json",
            format!(
                r#"{{"username":"admin","password":"{ADMIN_PASSWORD}","password":"x","platformId":"{PLATFORM}"}}"#
            )
            .into_bytes(),
            "more than once",
        ),
        (
            "application/json",
            format!(
                r#"{{"username":"admin","password":"{ADMIN_PASSWORD}","password":"{ADMIN_PASSWORD}","platformId":"{PLATFORM}"}}"#
            )
            .into_bytes(),
            "more than once",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("username=admin&password=%FF{ADMIN_PASSWORD}&platformId={PLATFORM}")
                .into_bytes(),
            "UTF-8",
        ),
        (
            "application/x-www-form-urlencoded",
            [
                b"username=admin&platformId=aws80&password=".as_slice(),
                &[0xC3, 0x28],
            ]
            .concat(),
            "UTF-8",
        ),
    ];
    for (ctype, body, says) in cases {
        let (status, _, text) = send(
            http()
                .post(&login)
                .header("content-type", ctype)
                .body(body.clone()),
        )
        .await
        .parts();
        assert_eq!(status, 400, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON error body");
        assert_eq!(v["errorCode"], "bad.request", "{text}");
        assert!(
            v["details"].as_str().unwrap_or_default().contains(says),
            "{text}"
        );
        assert!(v["requestId"].is_string() && v["timestamp"].is_number());
        assert!(!text.contains(ADMIN_PASSWORD));
    }
    // The same login, well formed, succeeds.
    let ok = http()
        .post(&login)
        .json(&serde_json::json!({
            "username": "admin", "password": ADMIN_PASSWORD, "platformId": PLATFORM
        }))
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn the_peer_address_still_reaches_the_handlers() {
    // The accept loop puts ConnectInfo in each request, as axum::serve did: a login from
    // 127.0.0.7 is audited (and throttled) as 127.0.0.7, not as some fixed address.
    let s = TestApp::spawn().await;
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 7]))
        .build()
        .expect("client");
    let res = client
        .post(s.url("/api/auth/login/admin"))
        .header("x-request-id", "edge-peer-1")
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", PLATFORM),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let trail = s.audit_trail().await;
    let login = trail
        .iter()
        .find(|e| e.request_id.as_deref() == Some("edge-peer-1"))
        .expect("the login is audited");
    assert_eq!(login.addr.as_deref(), Some("127.0.0.7"));
}
