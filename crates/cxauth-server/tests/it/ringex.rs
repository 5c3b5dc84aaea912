//! The RingEX token exchange and the built-in RingEX emulator, over HTTP against real servers.

use base64::Engine as _;
use cxauth_core::admin;
use cxauth_core::clock::Clock as _;
use cxauth_testkit::*;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use std::time::Duration;

const EXCHANGE: &str = "/api/auth/login/rc/accesstoken";
const TOKEN: &str = "/restapi/oauth/token";
const EXTENSION: &str = "/restapi/v1.0/account/~/extension/~";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An emulator app and a JWT credential of `username`.
struct Emu {
    client_id: String,
    secret: String,
    jwt: String,
}

async fn emulator_setup(s: &TestApp, username: &str) -> Emu {
    let store = s.state.auth.store().as_ref();
    let (client_id, secret) = admin::create_ringex_app(store, 0).await.expect("app");
    let jwt = admin::create_ringex_jwt(store, username, s.clock.now_ms())
        .await
        .expect("jwt");
    Emu {
        client_id,
        secret: secret.expose_secret().to_owned(),
        jwt: jwt.expose_secret().to_owned(),
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn oauth(s: &TestApp, auth: Option<&str>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = s.post(TOKEN).form(form);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let (status, headers, body) = send(req).await.parts();
    assert_eq!(headers["content-type"], "application/json", "{body}");
    assert!(!body.to_lowercase().contains("expired"), "{body}");
    (status, serde_json::from_str(&body).expect("json"))
}

async fn ringex_token(s: &TestApp, e: &Emu) -> String {
    let (status, v) = oauth(
        s,
        Some(&basic(&e.client_id, &e.secret)),
        &[("grant_type", JWT_GRANT), ("assertion", &e.jwt)],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().expect("token").to_owned()
}

async fn exchange_form(s: &TestApp, token: &str) -> (u16, reqwest::header::HeaderMap, String) {
    send(
        s.post(EXCHANGE)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Basic basic")
            .body(format!("rcAccessToken={token}&rcTokenType=Bearer")),
    )
    .await
    .parts()
}

async fn emulator_server() -> TestApp {
    TestApp::spawn_with(|c| c.ringex_emulator = true).await
}

#[tokio::test]
async fn the_emulator_issues_tokens_that_exchange_for_sessions() {
    let s = emulator_server().await;
    let uid = s.create_rc_user("rex", &[10_000_001], 77).await;
    let e = emulator_setup(&s, "rex").await;

    let (status, v) = oauth(
        &s,
        Some(&basic(&e.client_id, &e.secret)),
        &[("grant_type", JWT_GRANT), ("assertion", &e.jwt)],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for f in [
        "access_token",
        "refresh_token",
        "scope",
        "owner_id",
        "endpoint_id",
        "token_type",
    ] {
        assert!(v[f].is_string(), "{f} in {v}");
    }
    for f in ["expires_in", "refresh_token_expires_in"] {
        assert!(v[f].as_i64().is_some_and(|n| n > 0), "{f} in {v}");
    }
    assert_eq!(v["owner_id"], "77");
    let token = v["access_token"].as_str().expect("token");
    assert!(cxauth_proto::is_token_alphabet(token), "{token}");

    // The extension endpoint says whose token it is.
    let (status, _, body) = send(s.get(EXTENSION).bearer_auth(token)).await.parts();
    assert_eq!(status, 200, "{body}");
    let ext: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ext["id"], 77);

    // Form body (the SDK's style); Authorization is ignored; no refresh token unless asked.
    let (status, headers, body) = exchange_form(&s, token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let session: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(session["ssoLogin"], true);
    assert_eq!(session["adminId"], uid);
    assert!(session["refreshToken"].is_null(), "{session}");
    assert_eq!(session["tokenType"], "Bearer");
    let access = session["accessToken"].as_str().expect("access");
    let accounts = s
        .client
        .accounts(&x_auth(access))
        .await
        .expect("accounts with the exchanged token");
    assert_eq!(accounts[0].account_id, "10000001");

    // Query string with a JSON content type and a `""` body, includeRefresh=true.
    let (status, _, body) = send(
        s.post(&format!(
            "{EXCHANGE}?rcAccessToken={token}&rcTokenType=Bearer&includeRefresh=true"
        ))
        .header("content-type", "application/json")
        .header("authorization", "Bearer not-a-token")
        .body("\"\""),
    )
    .await
    .parts();
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).expect("json");
    let refresh = session["refreshToken"].as_str().expect("refresh token");
    // The session behaves like a direct-login session: refresh, then logout ends it.
    let refreshed = s.client.refresh(refresh).await.expect("refresh");
    assert!(
        refreshed.sso_login,
        "a refreshed exchange session stays ssoLogin"
    );
    assert!(
        s.client
            .logout(refreshed.refresh_token.as_deref().expect("rt"))
            .await
            .is_ok()
    );
    let err = s.client.accounts(&bearer(&refreshed)).await;
    assert!(err.is_err(), "a logged-out session still works");

    // Bad input.
    let (status, _, body) = send(s.post(EXCHANGE).form(&[("rcTokenType", "Bearer")]))
        .await
        .parts();
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = send(
        s.post(EXCHANGE)
            .form(&[("rcAccessToken", token), ("rcTokenType", "Basic")]),
    )
    .await
    .parts();
    assert_eq!(status, 400, "{body}");

    // An unknown token, and the token of a user disabled since: one generic 401.
    let (status, headers, body) = exchange_form(&s, "unknown-token").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert!(!body.to_lowercase().contains("expired"), "{body}");
    admin::set_enabled(s.state.auth.store().as_ref(), "rex", false, 0)
        .await
        .expect("disable");
    let (status, _, body) = exchange_form(&s, token).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn the_emulator_answers_oauth_errors() {
    let s = emulator_server().await;
    s.create_rc_user("rex", &[10_000_001], 77).await;
    s.create_user("norc", None, &[10_000_001], &[]).await;
    let e = emulator_setup(&s, "rex").await;
    // A JWT credential needs a user with a RingEX id.
    assert!(
        admin::create_ringex_jwt(s.state.auth.store().as_ref(), "norc", 0)
            .await
            .is_err()
    );
    let good = basic(&e.client_id, &e.secret);
    let pw = |u: &'static str, ext: Option<&'static str>, p: &'static str| {
        let mut f = vec![("grant_type", "password"), ("username", u), ("password", p)];
        if let Some(x) = ext {
            f.push(("extension", x));
        }
        f
    };

    type Case<'a> = (Option<String>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (None, pw("rex", None, "rex-pw"), 401, "invalid_client"),
        (
            Some(basic(&e.client_id, "wrong")),
            pw("rex", None, "rex-pw"),
            401,
            "invalid_client",
        ),
        (
            Some(basic("nobody", &e.secret)),
            pw("rex", None, "rex-pw"),
            401,
            "invalid_client",
        ),
        (
            Some("Basic !!!".into()),
            pw("rex", None, "rex-pw"),
            401,
            "invalid_client",
        ),
        (
            Some(good.clone()),
            vec![("username", "rex")],
            400,
            "invalid_request",
        ),
        (
            Some(good.clone()),
            vec![("grant_type", "client_credentials")],
            400,
            "unsupported_grant_type",
        ),
        (
            Some(good.clone()),
            vec![("grant_type", "password"), ("username", "rex")],
            400,
            "invalid_request",
        ),
        (
            Some(good.clone()),
            vec![("grant_type", JWT_GRANT)],
            400,
            "invalid_request",
        ),
        (
            Some(good.clone()),
            vec![("grant_type", JWT_GRANT), ("assertion", "forged")],
            400,
            "invalid_grant",
        ),
        (
            Some(good.clone()),
            pw("rex", None, "wrong"),
            400,
            "invalid_grant",
        ),
        (
            Some(good.clone()),
            pw("ghost", None, "rex-pw"),
            400,
            "invalid_grant",
        ),
        (
            Some(good.clone()),
            pw("rex", Some("78"), "rex-pw"),
            400,
            "invalid_grant",
        ),
        (
            Some(good.clone()),
            pw("norc", None, "norc-pw"),
            400,
            "invalid_grant",
        ),
    ];
    for (auth, form, want, code) in cases {
        let (status, v) = oauth(&s, auth.as_deref(), &form).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (want, Some(code)),
            "{form:?}: {v}"
        );
        assert!(v["error_description"].is_string(), "{v}");
    }
    // The password grant, with and without the matching extension.
    for ext in [None, Some("77")] {
        let (status, v) = oauth(&s, Some(&good), &pw("rex", ext, "rex-pw")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["owner_id"], "77");
    }
    // The extension endpoint refuses what it did not issue.
    for auth in [None, Some("Bearer forged"), Some("Basic basic")] {
        let mut req = s.get(EXTENSION);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (status, headers, body) = send(req).await.parts();
        assert_eq!(status, 401, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["error"], "invalid_token");
    }
    // Emulator tokens are not RingCX credentials.
    let token = ringex_token(&s, &e).await;
    let (status, _, _) = send(s.get("/voice/api/v1/admin/accounts").bearer_auth(&token))
        .await
        .parts();
    assert_eq!(status, 401);
    // The emulator's tokens stop working after their lifetime.
    s.clock.advance(Duration::from_secs(3601));
    let (status, _, _) = exchange_form(&s, &token).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_emulator_is_off_by_default_and_then_the_exchange_is_unavailable() {
    let s = TestApp::spawn().await;
    for path in [TOKEN, EXTENSION] {
        let (status, _, body) = send(s.post(path)).await.parts();
        assert!(status == 404 || status == 405, "{path}: {status} {body}");
    }
    // Not configured is not an outage: 501, no Retry-After (retrying cannot help), and the
    // body says what the operator must do, in RingCX's JSON error shape.
    let (status, headers, body) = exchange_form(&s, "anything").await;
    assert_eq!(status, 501, "{body}");
    assert!(!headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["errorCode"], "ringex.not.configured", "{body}");
    assert_eq!(v["requestUri"], format!("{EXCHANGE} - POST"), "{body}");
    for field in ["generalMessage", "details", "requestId"] {
        assert!(
            v[field].as_str().is_some_and(|m| !m.is_empty()),
            "{field}: {body}"
        );
    }
    assert!(v["timestamp"].is_i64(), "{body}");
    assert!(
        v["details"]
            .as_str()
            .is_some_and(|d| d.contains("--ringex-server URL")),
        "{body}"
    );
    // A malformed request is still the caller's fault first.
    let (status, _, body) = send(s.post(EXCHANGE)).await.parts();
    assert_eq!(status, 400, "{body}");
    // Asking again, however often, changes nothing and spends no login budget.
    for _ in 0..20 {
        let (status, _, _) = exchange_form(&s, "anything").await;
        assert_eq!(status, 501);
    }
}

#[tokio::test]
async fn an_unreachable_ringex_server_is_503() {
    let s = TestApp::spawn_with(|c| {
        c.ringex_server = Some("http://127.0.0.1:1".parse().expect("url"));
        c.ringex_timeout = Duration::from_secs(2);
    })
    .await;
    s.create_rc_user("rex", &[10_000_001], 77).await;
    let (status, headers, body) = exchange_form(&s, "some-token").await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["errorCode"], "ringex.unavailable");
    assert!(!body.to_lowercase().contains("expired"));
}

#[tokio::test]
async fn an_upstream_ringex_server_is_asked_and_positive_answers_are_cached() {
    // A plays RingEX (its emulator); B exchanges tokens by asking A.
    let a = emulator_server().await;
    a.create_rc_user("rex", &[10_000_001], 77).await;
    a.create_rc_user("other", &[10_000_001], 88).await;
    let e = emulator_setup(&a, "rex").await;
    let store = a.state.auth.store().as_ref();
    let other_jwt = admin::create_ringex_jwt(store, "other", a.clock.now_ms())
        .await
        .expect("jwt");
    let upstream: url::Url = a.base.parse().expect("url");
    let b = TestApp::spawn_with(move |c| {
        c.ringex_server = Some(upstream);
        c.ringex_cache_ttl = Duration::from_secs(30);
    })
    .await;
    let uid = b.create_rc_user("rex-at-b", &[10_000_001], 77).await;

    let token = ringex_token(&a, &e).await;
    let (status, _, body) = exchange_form(&b, &token).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (v["adminId"].as_i64(), v["ssoLogin"].as_bool()),
        (Some(uid), Some(true))
    );

    // A refuses a token it did not issue: a generic 401 at B.
    let (status, _, body) = exchange_form(&b, "forged-token").await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.to_lowercase().contains("expired"));
    // A knows the token, but B has nobody with its RingEX id.
    let other = ringex_token(
        &a,
        &Emu {
            jwt: secrecy::ExposeSecret::expose_secret(&other_jwt).to_owned(),
            ..e
        },
    )
    .await;
    let (status, _, body) = exchange_form(&b, &other).await;
    assert_eq!(status, 401, "{body}");

    // With A gone, B still exchanges the token it saw within the cache lifetime...
    let _ = a.stop().await;
    let (status, _, body) = exchange_form(&b, &token).await;
    assert_eq!(status, 200, "cached answer: {body}");
    // ...and not after it: A is asked again, and is unreachable.
    b.clock.advance(Duration::from_secs(31));
    let (status, _, body) = exchange_form(&b, &token).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn a_linked_main_account_takes_tokens_of_its_own_ringex_account_only() {
    // A plays RingEX (its emulator) and says which RingEX account each token is in; B asks A.
    let a = emulator_server().await;
    a.create_rc_user("rex", &[10_000_001], 77).await;
    let e = emulator_setup(&a, "rex").await;
    let upstream: url::Url = a.base.parse().expect("url");
    // No answer is kept, so each exchange asks A what account the token is in now.
    let b = TestApp::spawn_with(move |c| {
        c.ringex_server = Some(upstream);
        c.ringex_cache_ttl = Duration::ZERO;
    })
    .await;
    let uid = b.create_rc_user("rex-at-b", &[10_000_001], 77).await;
    let a_store = a.state.auth.store().as_ref();
    let b_store = b.state.auth.store().as_ref();
    let token = ringex_token(&a, &e).await;

    // The emulator's extension answer names the account: the link, else the main account.
    let extension = |token: String| {
        let a = &a;
        async move {
            let (status, _, body) = send(a.get(EXTENSION).bearer_auth(token)).await.parts();
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).expect("json")["account"]["id"].clone()
        }
    };
    assert_eq!(extension(token.clone()).await, "10000000");
    admin::link_rc_account(a_store, 10_000_000, Some("400100"))
        .await
        .expect("link at A");
    assert_eq!(extension(token.clone()).await, "400100");

    // B's main account unlinked: the extension id alone decides, as before links.
    let (status, _, body) = exchange_form(&b, &token).await;
    assert_eq!(status, 200, "{body}");
    // Linked to another RingEX account: refused, with the generic 401 and an audit entry.
    admin::link_rc_account(b_store, 10_000_000, Some("400200"))
        .await
        .expect("link at B");
    let (status, _, body) = exchange_form(&b, &token).await;
    assert_eq!(status, 401, "{body}");
    // The time stamp (ms) and the request id (random hex) may hold "400" by chance; every other
    // field is text the server chose, and none of it may name an account.
    let mut refusal: Value = serde_json::from_str(&body).expect("json");
    let fields = refusal.as_object_mut().expect("an object");
    assert!(fields.remove("timestamp").is_some() && fields.remove("requestId").is_some());
    let said = refusal.to_string();
    assert!(
        !said.contains("400"),
        "the refusal names no account: {body}"
    );
    let audit = b.audit_trail().await;
    assert!(
        audit.iter().any(|r| r.event == "ringex.exchange"
            && r.outcome == "failure"
            && r.detail.contains("the RingEX token is of account 400100")
            && r.detail.contains("linked to 400200")),
        "{audit:?}"
    );
    // Linked to the token's account: accepted.
    admin::link_rc_account(b_store, 10_000_000, Some("400100"))
        .await
        .expect("relink at B");
    let (status, _, body) = exchange_form(&b, &token).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["adminId"].as_i64(), Some(uid));
}

#[tokio::test]
async fn the_rust_client_exchanges_ringex_tokens_and_logs_in_the_legacy_way() {
    let s = emulator_server().await;
    let uid = s.create_rc_user("rosa", &[10_000_001], 88).await;
    let e = emulator_setup(&s, "rosa").await;
    let token = ringex_token(&s, &e).await;

    let without = s
        .client
        .exchange_ringex_token(&token, false)
        .await
        .expect("exchange");
    assert!(without.sso_login);
    assert_eq!(without.admin_id, uid);
    assert_eq!(without.refresh_token, None);
    let with = s
        .client
        .exchange_ringex_token(&token, true)
        .await
        .expect("exchange with refresh");
    let refreshed = s
        .client
        .refresh(with.refresh_token.as_deref().expect("refresh token"))
        .await
        .expect("the exchanged session refreshes");
    assert!(refreshed.sso_login);
    let err = s
        .client
        .exchange_ringex_token("not-a-ringex-token", false)
        .await
        .expect_err("refused");
    assert_eq!(err.status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    // Each exchange's session was written with its audit event (one commit on SQLite).
    let audit = s.audit_trail().await;
    let exchanged: Vec<_> = audit
        .iter()
        .filter(|r| r.event == "ringex.exchange" && r.outcome == "success")
        .collect();
    assert_eq!(exchanged.len(), 2, "{audit:?}");
    assert!(
        exchanged.iter().all(|r| r.user_id == Some(uid)
            && r.username.as_deref() == Some("rosa")
            && r.addr.as_deref() == Some("127.0.0.1")
            && r.request_id.is_some()),
        "{exchanged:?}"
    );

    let legacy = s
        .client
        .legacy_login("rosa", "rosa-pw", true)
        .await
        .expect("legacy login");
    assert_eq!(legacy.user.user_name, "rosa");
    let accounts = s
        .client
        .accounts(&x_auth(&legacy.auth_token))
        .await
        .expect("the legacy token works as X-Auth-Token");
    assert_eq!(accounts[0].account_id, "10000001");
    let err = s
        .client
        .legacy_login("rosa", "wrong", false)
        .await
        .expect_err("refused");
    assert_eq!(err.status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    // The legacy token was written with its login's audit event (one commit on SQLite); the
    // refused login has its own.
    let audit = s.audit_trail().await;
    let mut outcomes: Vec<_> = audit
        .iter()
        .filter(|r| r.event == "legacy_login" && r.username.as_deref() == Some("rosa"))
        .map(|r| r.outcome.as_str())
        .collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["failure", "success"], "{audit:?}");
}

#[tokio::test]
async fn emulator_jwt_credentials_are_real_jwts_and_expire() {
    let s = emulator_server().await;
    s.create_rc_user("jay", &[10_000_001], 4_321).await;
    let e = emulator_setup(&s, "jay").await;
    let parts: Vec<&str> = e.jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{}", e.jwt);
    let part = |i: usize| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[i])
                .expect("base64url"),
        )
        .expect("json")
    };
    assert_eq!(part(0)["alg"], "HS256");
    assert_eq!(part(0)["typ"], "JWT");
    let claims = part(1);
    assert_eq!(claims["sub"], "4321");
    assert_eq!(claims["iss"], "https://platform.ringcentral.com");
    assert_eq!(
        claims["aud"],
        "https://platform.ringcentral.com/restapi/oauth/token"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert!(exp > iat, "{claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    let other = emulator_setup(&s, "jay").await;
    assert_ne!(part(1)["jti"], {
        let p: Vec<&str> = other.jwt.split('.').collect();
        let v: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p[1])
                .expect("base64url"),
        )
        .expect("json");
        v["jti"].clone()
    });

    // The JWT grant works until `exp`, and not after.
    ringex_token(&s, &e).await;
    s.clock.advance(std::time::Duration::from_secs(
        u64::try_from(exp - iat).expect("ttl") + 1,
    ));
    let (status, v) = oauth(
        &s,
        Some(&basic(&e.client_id, &e.secret)),
        &[("grant_type", JWT_GRANT), ("assertion", &e.jwt)],
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "invalid_grant");
    // A tampered payload no longer matches the stored digest.
    let forged = format!("{}.{}.{}", parts[0], parts[1].replace('A', "B"), parts[2]);
    let (status, _) = oauth(
        &s,
        Some(&basic(&e.client_id, &e.secret)),
        &[("grant_type", JWT_GRANT), ("assertion", &forged)],
    )
    .await;
    assert_eq!(status, 400);
}
