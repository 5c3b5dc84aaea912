//! The legacy portal login (`POST /api/v1/auth/login`) and its auth tokens, over HTTP.

use cxauth_client::{PREFIX_LEGACY, PREFIX_VOICE};
use cxauth_core::clock::Clock as _;
use cxauth_testkit::*;
use serde_json::Value;
use std::time::Duration;

const LOGIN: &str = "/api/v1/auth/login";

async fn legacy_login(
    s: &TestApp,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    send(s.post(LOGIN).header("x-auth-token", "").form(form))
        .await
        .parts()
}

async fn auth_token(s: &TestApp, user: &str, password: &str, stay: bool) -> String {
    let mut form = vec![("username", user), ("password", password)];
    if stay {
        form.push(("stayLoggedIn", "true"));
    }
    let (status, _, body) = legacy_login(s, &form).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["authToken"].as_str().expect("authToken").to_owned()
}

/// Status and body of `GET …/admin/accounts` with `X-Auth-Token: token`.
async fn use_token(s: &TestApp, token: &str) -> (u16, String) {
    let (status, _, body) = send(
        s.get("/api/v1/admin/accounts")
            .header("x-auth-token", token),
    )
    .await
    .parts();
    (status, body)
}

#[tokio::test]
async fn legacy_login_answers_the_portal_shape_and_its_token_works_everywhere() {
    let s = TestApp::spawn().await;
    let (status, headers, body) =
        legacy_login(&s, &[("username", "admin"), ("password", ADMIN_PASSWORD)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let v: Value = serde_json::from_str(&body).expect("json");
    let token = v["authToken"].as_str().expect("authToken").to_owned();
    assert!(
        cxauth_core::service::is_legacy_token_shape(&token),
        "{token}"
    );
    assert_eq!(v["platformHost"], s.base.trim_start_matches("http://"));
    assert_eq!(v["user"]["userName"], "admin");
    assert_eq!(v["user"]["roles"][0], "SUPER_USER");
    assert!(v["user"]["children"].as_array().is_some_and(Vec::is_empty));
    assert_eq!(v["accounts"][0]["accountId"], "10000001");
    assert!(!body.contains(ADMIN_PASSWORD));

    // The auth token is an X-Auth-Token on every admin endpoint, under both prefixes.
    for prefix in [PREFIX_VOICE, PREFIX_LEGACY] {
        let c = s.client.clone().with_prefix(prefix);
        let cred = x_auth(&token);
        let api = c.create_api_token(&cred).await.expect("create");
        assert_eq!(
            c.list_api_tokens(&cred).await.expect("list"),
            vec![api.clone()]
        );
        assert_eq!(
            c.accounts(&cred).await.expect("accounts")[0].account_id,
            "10000001"
        );
        assert_eq!(
            c.users(&cred, true, false).await.expect("users")[0].user_name,
            "admin"
        );
        c.delete_api_token(&cred, &api).await.expect("delete");
        assert!(c.list_api_tokens(&cred).await.expect("list").is_empty());
    }

    // Query-string style with a JSON content type and an empty body; stayLoggedIn accepted.
    let (status, _, body) = send(
        s.post(&format!(
            "{LOGIN}?username=admin&password={ADMIN_PASSWORD}&stayLoggedIn=true"
        ))
        .header("content-type", "application/json")
        .body(""),
    )
    .await
    .parts();
    assert_eq!(status, 200, "{body}");

    // Other shapes that are not a live legacy token are the generic bearer 401.
    for bad in [
        token.to_uppercase(),
        uuid::Uuid::new_v4().to_string(),
        token.replace('-', ""),
    ] {
        let (status, body) = use_token(&s, &bad).await;
        assert_eq!(
            (status, body.as_str()),
            (401, "Jwt verification fails"),
            "{bad}"
        );
    }

    // A disabled user's auth tokens are refused.
    s.create_user("ann", None, &[10_000_001], &[]).await;
    let ann = auth_token(&s, "ann", "ann-pw", false).await;
    assert_eq!(use_token(&s, &ann).await.0, 200);
    cxauth_core::admin::set_enabled(s.state.auth.store().as_ref(), "ann", false, 0)
        .await
        .expect("disable");
    assert_eq!(use_token(&s, &ann).await.0, 401);
}

#[tokio::test]
async fn legacy_login_failures_are_generic_and_throttled() {
    let s = TestApp::spawn().await;
    s.create_user("ann", None, &[10_000_001], &[]).await;
    let mut bodies = Vec::new();
    for form in [
        vec![("username", "ann"), ("password", "wrong")],
        vec![("username", "ghost"), ("password", "ann-pw")],
    ] {
        let (status, headers, body) = legacy_login(&s, &form).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["errorCode"], "authentication.failed");
        assert!(!body.to_lowercase().contains("expired"));
        bodies.push((v["generalMessage"].clone(), v["details"].clone()));
    }
    assert_eq!(
        bodies[0], bodies[1],
        "the reason of a failure is not revealed"
    );
    let (status, _, body) = legacy_login(&s, &[("username", "ann")]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = legacy_login(
        &s,
        &[
            ("username", "ann"),
            ("password", "x"),
            ("stayLoggedIn", "maybe"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // The username's budget: 5 failures are free (one spent above), then back-off.
    for _ in 0..4 {
        let (status, _, _) = legacy_login(&s, &[("username", "ann"), ("password", "wrong")]).await;
        assert_eq!(status, 401);
    }
    let (status, headers, body) =
        legacy_login(&s, &[("username", "ann"), ("password", "ann-pw")]).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    // The budget is shared with direct login.
    let err = s
        .client
        .login("ann", "ann-pw", PLATFORM)
        .await
        .expect_err("throttled");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(429));
    s.clock.advance(Duration::from_secs(2));
    let (status, _, body) = legacy_login(&s, &[("username", "ann"), ("password", "ann-pw")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn legacy_tokens_slide_one_hour_or_two_weeks_past_their_last_use() {
    let s = TestApp::spawn().await;
    let hour = Duration::from_secs(3600);
    let minute = Duration::from_secs(60);

    let t = auth_token(&s, "admin", ADMIN_PASSWORD, false).await;
    // Each use moves the end to an hour after it.
    for _ in 0..3 {
        s.clock.advance(hour - minute);
        assert_eq!(use_token(&s, &t).await.0, 200);
    }
    // A use less than a minute after the last written one is not written: the end may come up
    // to a minute before an hour after the very last use, never later.
    s.clock.advance(Duration::from_secs(30));
    assert_eq!(use_token(&s, &t).await.0, 200);
    s.clock.advance(hour - minute);
    assert_eq!(
        use_token(&s, &t).await.0,
        200,
        "within the hour of the last written use"
    );
    s.clock.advance(hour + minute);
    let (status, body) = use_token(&s, &t).await;
    assert_eq!((status, body.as_str()), (401, "Jwt verification fails"));

    let stay = auth_token(&s, "admin", ADMIN_PASSWORD, true).await;
    let day = Duration::from_secs(86_400);
    s.clock.advance(day * 13);
    assert_eq!(use_token(&s, &stay).await.0, 200);
    s.clock.advance(day * 13);
    assert_eq!(use_token(&s, &stay).await.0, 200);
    s.clock.advance(day * 15);
    assert_eq!(use_token(&s, &stay).await.0, 401);

    // Expired tokens are purged.
    let purged = s
        .state
        .auth
        .store()
        .purge_expired(s.clock.now_ms(), 100)
        .await
        .expect("purge")
        .total();
    assert!(purged >= 2, "{purged}");
}
