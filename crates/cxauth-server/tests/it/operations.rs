//! Operations endpoints and behaviour: readiness, and graceful, bounded shutdown.

use cxauth_core::clock::Clock as _;
use cxauth_testkit::{TestApp, http, send};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let s = TestApp::spawn().await;
    let (status, _, body) = send(s.get("/healthz")).await.parts();
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _, body) = send(s.get("/readyz")).await.parts();
    assert_eq!((status, body.as_str()), (200, "ready"));
    // Once the database is closed, the instance is no longer ready.
    s.state.auth.store().close().await;
    let (status, headers, _) = send(s.get("/readyz")).await.parts();
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
    let s = TestApp::spawn().await;
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
    let s = TestApp::spawn_with(|c| c.shutdown_timeout = Duration::from_millis(300)).await;
    let _conn = half_sent_request(&s.base).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(8), s.stop())
        .await
        .expect("stops despite a client that never finishes");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn security_events_reach_the_audit_trail_without_secrets() {
    let s = TestApp::spawn().await;
    let res = s
        .post("/api/auth/login/admin")
        .header("x-request-id", "audit-req-1")
        .form(&[
            ("username", "admin"),
            ("password", cxauth_testkit::ADMIN_PASSWORD),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let session: cxauth_proto::Session = res.json().await.expect("session");
    let cred = cxauth_testkit::bearer(&session);
    let token = s.client.create_api_token(&cred).await.expect("token");
    s.client
        .delete_api_token(&cred, &token)
        .await
        .expect("delete");
    let refresh = session.refresh_token.clone().expect("refresh");
    s.client.logout(&refresh).await.expect("logout");
    assert!(
        s.client
            .login("nobody", "guess-for-nobody", "aws80")
            .await
            .is_err()
    );
    // Wrong passwords until the throttle steps in (admin logged in from this address before:
    // its own budget here has 20 free failures).
    let mut throttled = false;
    for _ in 0..22 {
        let status = s
            .post("/api/auth/login/admin")
            .form(&[
                ("username", "admin"),
                ("password", "wrong-guess-xyz"),
                ("platformId", "aws80"),
            ])
            .send()
            .await
            .expect("login")
            .status();
        throttled |= status == 429;
    }
    assert!(throttled);

    let trail = s.audit_trail().await;
    let find = |event: &str, outcome: &str| {
        trail
            .iter()
            .find(|e| e.event == event && e.outcome == outcome)
            .unwrap_or_else(|| panic!("no {event}/{outcome} in {trail:#?}"))
    };
    let admin_id = session.admin_id;
    assert_eq!(
        find("user.create", "success").username.as_deref(),
        Some("admin")
    );
    assert!(find("key.create", "success").detail.starts_with("kid "));
    let login = find("login", "success");
    assert_eq!(login.request_id.as_deref(), Some("audit-req-1"));
    assert_eq!(login.addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(login.user_id, Some(admin_id));
    assert_eq!(find("api_token.create", "success").user_id, Some(admin_id));
    assert_eq!(find("api_token.delete", "success").user_id, Some(admin_id));
    assert_eq!(find("session.end", "success").user_id, Some(admin_id));
    // An unknown username is kept only as a keyed digest (it may be a mistyped password).
    let unknown = find("login", "failure");
    assert!(
        unknown
            .username
            .as_deref()
            .is_some_and(|u| u.starts_with("unknown-user:") && !u.contains("nobody")),
        "{:?}",
        unknown.username
    );
    assert_eq!(unknown.user_id, None);
    assert!(unknown.request_id.is_some());
    assert_eq!(
        find("login", "throttled").username.as_deref(),
        Some("admin")
    );

    let text = serde_json::to_string(&trail).expect("json");
    for secret in [
        cxauth_testkit::ADMIN_PASSWORD,
        "guess-for-nobody",
        "wrong-guess-xyz",
        token.as_str(),
        refresh.as_str(),
        session.access_token.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in the audit trail");
    }
}

#[tokio::test]
async fn refresh_reuse_is_audited() {
    let s = TestApp::spawn().await;
    let first = s.login_admin().await;
    let rt = first.refresh_token.clone().expect("refresh");
    s.client.refresh(&rt).await.expect("rotate");
    s.clock.advance(Duration::from_secs(120));
    assert!(s.client.refresh(&rt).await.is_err());
    let trail = s.audit_trail().await;
    let reuse = trail
        .iter()
        .find(|e| e.event == "refresh.reuse")
        .expect("reuse audited");
    assert_eq!(
        (reuse.outcome.as_str(), reuse.user_id),
        ("reuse", Some(first.admin_id))
    );
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

async fn jwks_kids(s: &TestApp) -> Vec<String> {
    let jwks: serde_json::Value = s
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test]
async fn rotated_key_signs_old_tokens_stay_valid_and_old_keys_retire() {
    let s = TestApp::spawn().await;
    let old = s.login_admin().await;
    let old_kid = kid_of(&old.access_token);
    let key_file = s.master_key_file();
    let secrets = cxauth_core::crypto::Secrets::derive(
        &cxauth_core::crypto::MasterKey::load(&key_file).expect("master key"),
    );
    s.clock.advance(Duration::from_secs(1));
    let store = s.state.auth.store().clone();
    let new_kid =
        cxauth_core::admin::rotate_signing_key(store.as_ref(), &secrets, s.clock.now_ms())
            .await
            .expect("rotate");
    // What housekeeping does every minute.
    assert_eq!(s.state.auth.reload_keys().await.expect("reload"), 2);
    let mut kids = jwks_kids(&s).await;
    kids.sort();
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(kids, both);
    let new = s.login_admin().await;
    assert_eq!(kid_of(&new.access_token), new_kid);
    s.client
        .accounts(&cxauth_testkit::bearer(&old))
        .await
        .expect("a token of the old key stays valid");
    // Not yet: tokens of the old key may still be alive.
    assert!(s.state.auth.retire_keys().await.expect("retire").is_empty());
    s.clock
        .advance(s.config.access_token_ttl + Duration::from_secs(2 * 60 + 1));
    assert_eq!(
        s.state.auth.retire_keys().await.expect("retire"),
        [old_kid.as_str()]
    );
    assert_eq!(jwks_kids(&s).await, [new_kid.as_str()]);
    let trail = s.audit_trail().await;
    assert!(
        trail
            .iter()
            .any(|e| e.event == "key.retire" && e.detail.contains(&old_kid))
    );
    assert!(
        trail
            .iter()
            .any(|e| e.event == "key.create" && e.detail.contains(&new_kid))
    );
}

/// Housekeeping reloads the key ring every minute and requests naming an unknown key reload it
/// too; those reloads overlap a rotation. Once a reload that began after the rotation has
/// returned, the new key must stay in the ring: an overlapping reload that read the store before
/// the rotation may not swap its older ring in afterwards (that once made the first login after
/// a rotation sign with the superseded key).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_key_reloads_never_bring_back_an_older_ring() {
    let s = TestApp::spawn().await;
    let secrets = cxauth_core::crypto::Secrets::derive(
        &cxauth_core::crypto::MasterKey::load(&s.master_key_file()).expect("master key"),
    );
    let store = s.state.auth.store().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reloaders: Vec<_> = (0..6)
        .map(|_| {
            let (auth, stop) = (s.state.auth.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    auth.reload_keys().await.expect("reload");
                }
            })
        })
        .collect();
    for round in 0..30 {
        s.clock.advance(Duration::from_secs(1));
        let kid =
            cxauth_core::admin::rotate_signing_key(store.as_ref(), &secrets, s.clock.now_ms())
                .await
                .expect("rotate");
        s.state.auth.reload_keys().await.expect("reload");
        // Watch the ring while the other reloads go on.
        let until = std::time::Instant::now() + Duration::from_millis(20);
        while std::time::Instant::now() < until {
            assert!(
                s.state.auth.jwks().keys.iter().any(|k| k.kid == kid),
                "round {round}: an overlapping reload brought back a ring without {kid}"
            );
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in reloaders {
        r.await.expect("reloader");
    }
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener() {
    let s = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let at = listener.local_addr().expect("addr");
    tokio::spawn(cxauth_server::metrics::serve(
        listener,
        s.state.clone(),
        std::future::pending(),
    ));
    let session = s.login_admin().await;
    s.client
        .refresh(session.refresh_token.as_deref().expect("refresh"))
        .await
        .expect("refresh");
    assert!(s.client.login("admin", "wrong", "aws80").await.is_err());
    // One API token used: its last use waits in memory until the next flush.
    let bearer = cxauth_client::Credential::Bearer(session.access_token.clone());
    let token = s.client.create_api_token(&bearer).await.expect("token");
    s.client
        .accounts(&cxauth_client::Credential::XAuthToken(token))
        .await
        .expect("accounts with the token");
    let (status, _, _) = send(s.get("/metrics")).await.parts();
    assert_eq!(status, 404, "not on the public listener");

    let (status, headers, text) = send(http().get(format!("http://{at}/metrics")))
        .await
        .parts();
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    for needle in [
        r#"cxauth_http_requests_total{route="/api/auth/login/admin",method="POST",status="200"}"#,
        r#"cxauth_http_requests_total{route="unmatched",method="GET",status="404"}"#,
        r#"cxauth_http_request_duration_seconds_bucket{route="/api/auth/login/admin",le="0.5"}"#,
        r#"cxauth_logins_total{kind="login",outcome="success"}"#,
        r#"cxauth_logins_total{kind="login",outcome="failure"}"#,
        r#"cxauth_refreshes_total{outcome="success"}"#,
        "cxauth_hash_pool_queue_depth ",
        r#"cxauth_db_pool_connections{state="in_use"}"#,
        r#"cxauth_stored_rows{kind="live_sessions"}"#,
        "cxauth_database_up 1",
        "cxauth_api_token_uses_held 1\n",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // Token segments never become label values.
    let t = session.refresh_token.as_deref().expect("refresh");
    assert!(!text.contains(t));
}

/// Housekeeping's first pass, which starts with the server, purges expired rows of every kind
/// (a session and its refresh token, a legacy auth token, the RingEX emulator's access and
/// refresh tokens, a remembered login address, audit events): a server restarted after a long
/// stop does not keep them for another ten minutes (the next purge).
#[tokio::test]
async fn the_first_housekeeping_pass_purges_expired_rows() {
    /// Makes one row of each kind that expires, and returns how far past all their lifetimes
    /// the clock must move.
    async fn rows_of_every_kind(s: &TestApp, retention: Duration) -> Duration {
        // A session, its refresh token, the address it came from, and audit events.
        let session = s.login_admin().await;
        assert!(session.refresh_token.is_some());
        // A legacy auth token, kept longest (`stayLoggedIn`).
        s.client
            .legacy_login("admin", cxauth_testkit::ADMIN_PASSWORD, true)
            .await
            .expect("legacy login");
        // The RingEX emulator's access and refresh tokens, from its JWT grant.
        let emu = crate::ringex_refresh::setup(s, "rex", 4_000_001).await;
        crate::ringex_refresh::login(s, &emu).await;
        let auth = &s.state.auth;
        [
            auth.config().refresh_token_ttl,
            auth.config().ringex_emulator_access_ttl,
            auth.config().ringex_emulator_refresh_ttl,
            cxauth_core::login::LEGACY_TOKEN_TTL_STAY,
            auth.throttle().config().remember_address_for,
            retention,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
            + Duration::from_secs(24 * 60 * 60)
    }
    /// What a purge at the server's time finds to remove now.
    async fn purge_now(s: &TestApp, retention: Duration) -> cxauth_core::store::PurgeCounts {
        let now = s.clock.now_ms();
        cxauth_core::admin::purge(
            s.state.auth.store().as_ref(),
            now,
            cxauth_core::admin::audit_cutoff(now, retention),
            cxauth_core::admin::PURGE_BATCH,
        )
        .await
        .expect("purge")
    }

    // Without a restart, a purge past every lifetime finds a row of each kind: the restart below
    // has something to purge.
    let emulator = |c: &mut cxauth_server::config::ServerConfig| c.ringex_emulator = true;
    let s = TestApp::spawn_with(emulator).await;
    let retention = s.config.audit_retention;
    let past = rows_of_every_kind(&s, retention).await;
    s.clock.advance(past);
    let found = purge_now(&s, retention).await;
    assert!(
        found.sessions > 0
            && found.legacy_tokens > 0
            && found.ringex_tokens > 0
            && found.login_throttle > 0
            && found.audit_events > 0,
        "no row of some kind to purge: {found:?}"
    );

    let s = TestApp::spawn_with(emulator).await;
    let past = rows_of_every_kind(&s, retention).await;
    let (db, config, clock) = s.stop().await;
    // Past every lifetime: the rows are expired, still stored.
    clock.advance(past);
    // The kit hands the server over after its first pass.
    let s = TestApp::start(db, config, clock).await;
    let left = purge_now(&s, retention).await;
    assert_eq!(
        left,
        cxauth_core::store::PurgeCounts::default(),
        "the first pass left expired rows"
    );
}
