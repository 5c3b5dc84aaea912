//! The RingEX emulator's `refresh_token` grant (rotation, lifetimes, refusals) and its revoke
//! endpoint, over HTTP against real servers (on the backend `CXAUTH_TEST_BACKEND` selects).

use base64::Engine as _;
use cxauth_core::admin;
use cxauth_core::clock::Clock as _;
use cxauth_testkit::*;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use std::time::Duration;

const EXCHANGE: &str = "/api/auth/login/rc/accesstoken";
const TOKEN: &str = "/restapi/oauth/token";
const REVOKE: &str = "/restapi/oauth/revoke";
const EXTENSION: &str = "/restapi/v1.0/account/~/extension/~";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An emulator app (its Basic header) and a JWT credential of one user.
pub(crate) struct Emu {
    basic: String,
    jwt: String,
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn app(s: &TestApp) -> String {
    let (id, secret) = admin::create_ringex_app(s.state.auth.store().as_ref(), 0)
        .await
        .expect("app");
    basic(&id, secret.expose_secret())
}

/// A RingEX user `username` (RingEX id `rc_user_id`), a JWT credential of theirs and an app.
/// Also used by the housekeeping test (`operations`), which needs emulator tokens to purge.
pub(crate) async fn setup(s: &TestApp, username: &str, rc_user_id: i64) -> Emu {
    s.create_rc_user(username, &[10_000_001], rc_user_id).await;
    let jwt = admin::create_ringex_jwt(s.state.auth.store().as_ref(), username, s.clock.now_ms())
        .await
        .expect("jwt");
    Emu {
        basic: app(s).await,
        jwt: jwt.expose_secret().to_owned(),
    }
}

/// A call of an emulator OAuth endpoint: status and the JSON body (`Null` for an empty one).
async fn oauth(s: &TestApp, path: &str, auth: Option<&str>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = s.post(path).form(form);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let (status, _, body) = send(req).await.parts();
    assert!(!body.to_lowercase().contains("expired"), "{body}");
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).expect("json")
    };
    (status, v)
}

/// The emulator's JWT grant: a new access token and refresh token, checked to be a 200.
pub(crate) async fn login(s: &TestApp, e: &Emu) -> Value {
    let (status, v) = oauth(
        s,
        TOKEN,
        Some(&e.basic),
        &[("grant_type", JWT_GRANT), ("assertion", &e.jwt)],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn refresh(s: &TestApp, auth: &str, refresh_token: &str) -> (u16, Value) {
    oauth(
        s,
        TOKEN,
        Some(auth),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            // What the RingEX SDKs send along; ignored, as RingEX lets apps only shorten them.
            ("access_token_ttl", "3600"),
            ("refresh_token_ttl", "604800"),
        ],
    )
    .await
}

async fn revoke(s: &TestApp, auth: &str, token: &str) {
    let (status, _, body) = send(
        s.post(REVOKE)
            .header("authorization", auth)
            .form(&[("token", token)]),
    )
    .await
    .parts();
    assert_eq!((status, body.as_str()), (200, ""), "revoke");
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or_else(|| panic!("{name} in {v}"))
}

/// The status of the token exchange of a RingEX access token (200: it exchanged).
async fn exchange(s: &TestApp, access_token: &str) -> u16 {
    send(
        s.post(EXCHANGE)
            .form(&[("rcAccessToken", access_token), ("rcTokenType", "Bearer")]),
    )
    .await
    .parts()
    .0
}

async fn extension(s: &TestApp, access_token: &str) -> u16 {
    send(s.get(EXTENSION).bearer_auth(access_token))
        .await
        .parts()
        .0
}

async fn emulator_server() -> TestApp {
    TestApp::spawn_with(|c| c.ringex_emulator = true).await
}

fn assert_invalid_grant((status, v): (u16, Value), what: &str) {
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{what}: {v}"
    );
    assert_eq!(v["errors"][0]["errorCode"], "invalid_grant", "{what}: {v}");
}

#[tokio::test]
async fn a_refresh_rotates_both_tokens_and_the_old_refresh_token_is_refused() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let first = login(&s, &e).await;
    assert_eq!(first["refresh_token_expires_in"], 604_800);

    s.clock.advance(Duration::from_secs(600));
    let (status, second) = refresh(&s, &e.basic, field(&first, "refresh_token")).await;
    assert_eq!(status, 200, "{second}");
    for f in ["access_token", "refresh_token"] {
        assert_ne!(field(&first, f), field(&second, f), "{f} is new");
        assert!(
            cxauth_proto::is_token_alphabet(field(&second, f)),
            "{second}"
        );
    }
    // RingEX's shape; the login keeps its endpoint; the refresh token's lifetime restarted.
    assert_eq!(second["token_type"], "bearer");
    assert_eq!(second["owner_id"], "77");
    assert_eq!(second["expires_in"], 3600);
    assert_eq!(second["refresh_token_expires_in"], 604_800);
    assert_eq!(second["endpoint_id"], first["endpoint_id"]);
    assert_eq!(second["scope"], first["scope"]);

    // The new access token is a RingEX token of the same user, and exchanges.
    assert_eq!(extension(&s, field(&second, "access_token")).await, 200);
    assert_eq!(exchange(&s, field(&second, "access_token")).await, 200);

    // The rotated refresh token is refused from now on, even by its own client.
    assert_invalid_grant(
        refresh(&s, &e.basic, field(&first, "refresh_token")).await,
        "the rotated refresh token",
    );
    // The new one works (once), and the chain goes on.
    let (status, third) = refresh(&s, &e.basic, field(&second, "refresh_token")).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["endpoint_id"], first["endpoint_id"]);
}

#[tokio::test]
async fn a_refresh_token_lives_its_lifetime_from_its_last_refresh() {
    let s = TestApp::spawn_with(|c| {
        c.ringex_emulator = true;
        c.ringex_emulator_access_ttl = Duration::from_secs(60);
        c.ringex_emulator_refresh_ttl = Duration::from_secs(600);
    })
    .await;
    let e = setup(&s, "rex", 77).await;
    let first = login(&s, &e).await;
    assert_eq!(
        (&first["expires_in"], &first["refresh_token_expires_in"]),
        (&Value::from(60), &Value::from(600)),
        "{first}"
    );
    // The access token ends after its lifetime: the extension and the exchange refuse it.
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(extension(&s, field(&first, "access_token")).await, 401);
    assert_eq!(exchange(&s, field(&first, "access_token")).await, 401);

    // A second login through the refresh grant, 500 s into the refresh token's 600.
    s.clock.advance(Duration::from_secs(439));
    let (status, second) = refresh(&s, &e.basic, field(&first, "refresh_token")).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["refresh_token_expires_in"], 600);
    assert_eq!(exchange(&s, field(&second, "access_token")).await, 200);

    // 599 s later the new refresh token still works (its lifetime restarted), ...
    s.clock.advance(Duration::from_secs(599));
    let (status, third) = refresh(&s, &e.basic, field(&second, "refresh_token")).await;
    assert_eq!(status, 200, "{third}");
    // ... and 600 s after its issue the next one is refused.
    s.clock.advance(Duration::from_secs(600));
    assert_invalid_grant(
        refresh(&s, &e.basic, field(&third, "refresh_token")).await,
        "a refresh token past its lifetime",
    );
}

#[tokio::test]
async fn refresh_refusals_are_oauth_errors() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let other_app = app(&s).await;
    let v = login(&s, &e).await;
    let rt = field(&v, "refresh_token").to_owned();

    // Another client's refresh token is refused, and left working for its own client.
    assert_invalid_grant(refresh(&s, &other_app, &rt).await, "another client's");
    // An access token, or anything else, is no refresh token.
    for bogus in [field(&v, "access_token"), "forged", &"x".repeat(5000)] {
        assert_invalid_grant(refresh(&s, &e.basic, bogus).await, "not a refresh token");
    }
    // The parameter is required; the client is checked first, as for the other grants.
    let (status, body) = oauth(
        &s,
        TOKEN,
        Some(&e.basic),
        &[("grant_type", "refresh_token")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(
        field(&body, "error_description").contains("refresh_token"),
        "{body}"
    );
    for auth in [
        None,
        Some(basic("nobody", "x")),
        Some("Basic !!!".to_owned()),
    ] {
        let (status, body) = oauth(
            &s,
            TOKEN,
            auth.as_deref(),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
    // The unsupported-grant answer names the three grants.
    let (status, body) = oauth(
        &s,
        TOKEN,
        Some(&e.basic),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let description = field(&body, "error_description");
    for grant in ["password", "refresh_token", JWT_GRANT] {
        assert!(description.contains(grant), "{description}");
    }
    // None of those refusals spent the token.
    let (status, _) = refresh(&s, &e.basic, &rt).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_disabled_user_cannot_refresh_even_once_enabled_again() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let v = login(&s, &e).await;
    let store = s.state.auth.store().as_ref();
    admin::set_enabled(store, "rex", false, 0)
        .await
        .expect("disable");
    assert_invalid_grant(
        refresh(&s, &e.basic, field(&v, "refresh_token")).await,
        "a disabled user",
    );
    admin::set_enabled(store, "rex", true, 0)
        .await
        .expect("enable");
    assert_invalid_grant(
        refresh(&s, &e.basic, field(&v, "refresh_token")).await,
        "disabling ended the login",
    );
}

#[tokio::test]
async fn revoking_the_access_token_logs_out_the_whole_login() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let first = login(&s, &e).await;
    let (_, second) = refresh(&s, &e.basic, field(&first, "refresh_token")).await;
    let other = login(&s, &e).await;

    // The SDK's logout: the current access token, as a form.
    revoke(&s, &e.basic, field(&second, "access_token")).await;
    // Both access tokens of the login end: the exchange and the extension refuse them ...
    for t in [
        field(&first, "access_token"),
        field(&second, "access_token"),
    ] {
        assert_eq!(exchange(&s, t).await, 401);
        assert_eq!(extension(&s, t).await, 401);
    }
    // ... and so does its refresh token.
    assert_invalid_grant(
        refresh(&s, &e.basic, field(&second, "refresh_token")).await,
        "the refresh token of a revoked login",
    );
    // The user's other login is untouched.
    assert_eq!(exchange(&s, field(&other, "access_token")).await, 200);
    let (status, _) = refresh(&s, &e.basic, field(&other, "refresh_token")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn revoking_the_refresh_token_ends_the_login_too() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let v = login(&s, &e).await;
    // In the query string this time (RingEX reads both).
    let (status, _, body) = send(
        s.post(&format!("{REVOKE}?token={}", field(&v, "refresh_token")))
            .header("authorization", &e.basic),
    )
    .await
    .parts();
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(exchange(&s, field(&v, "access_token")).await, 401);
    assert_invalid_grant(
        refresh(&s, &e.basic, field(&v, "refresh_token")).await,
        "a revoked refresh token",
    );
}

#[tokio::test]
async fn revoke_answers_200_for_unknown_tokens_and_ends_nothing_of_other_clients() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let other_app = app(&s).await;
    let v = login(&s, &e).await;
    // Unknown, already revoked, or another client's: 200 with nothing done (RFC 7009 §2.2).
    for (auth, token) in [
        (&e.basic, "forged"),
        (&other_app, field(&v, "access_token")),
        (&other_app, field(&v, "refresh_token")),
    ] {
        revoke(&s, auth, token).await;
    }
    assert_eq!(exchange(&s, field(&v, "access_token")).await, 200);
    revoke(&s, &e.basic, field(&v, "access_token")).await;
    revoke(&s, &e.basic, field(&v, "access_token")).await;

    // OAuth errors: bad client 401 with the Basic challenge, no token 400.
    for auth in [None, Some(basic("nobody", "x"))] {
        let mut req = s.post(REVOKE).form(&[("token", "forged")]);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let (status, headers, body) = send(req).await.parts();
        assert_eq!(status, 401, "{body}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .expect("ascii")
                .starts_with("Basic"),
            "{headers:?}"
        );
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["error"], "invalid_client");
    }
    let (status, body) = oauth(&s, REVOKE, Some(&e.basic), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    // The revokes are in the audit trail; no token is.
    let trail = s
        .state
        .auth
        .store()
        .audit_events(&cxauth_core::store::AuditFilter {
            username: None,
            since: 0,
            after_id: 0,
            limit: 1_000,
        })
        .await
        .expect("audit");
    let revokes: Vec<_> = trail
        .iter()
        .filter(|a| a.event == "ringex_emulator.revoke")
        .map(|a| a.outcome.as_str())
        .collect();
    assert!(revokes.contains(&"success"), "{revokes:?}");
    assert!(revokes.contains(&"failure"), "{revokes:?}");
    for a in &trail {
        for secret in [field(&v, "access_token"), field(&v, "refresh_token")] {
            assert!(!a.detail.contains(secret), "{a:?}");
        }
    }
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_have_exactly_one_winner() {
    let s = emulator_server().await;
    let e = setup(&s, "rex", 77).await;
    let v = login(&s, &e).await;
    let rt = field(&v, "refresh_token").to_owned();
    // Four: the client secret is checked under the login throttle, whose per-client budget
    // holds five attempts in flight (the store's own race is run with forty in the
    // conformance suite). They race in the store, not in the throttle.
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (url, auth, rt) = (s.url(TOKEN), e.basic.clone(), rt.clone());
            tokio::spawn(async move {
                let res = http()
                    .post(url)
                    .header("authorization", auth)
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
                    .send()
                    .await
                    .expect("send");
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for r in racers {
        let (status, body) = r.await.expect("join");
        match status {
            200 => winners.push(body),
            _ => assert_invalid_grant((status, body), "a losing refresh"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    // The winner's tokens work.
    assert_eq!(exchange(&s, field(&winners[0], "access_token")).await, 200);
    let (status, _) = refresh(&s, &e.basic, field(&winners[0], "refresh_token")).await;
    assert_eq!(status, 200);
}
