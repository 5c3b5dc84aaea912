//! The contract's endpoints, driven over HTTP against a real server on port 0.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_client::{Client, Credential, Error, PREFIX_LEGACY, PREFIX_VOICE};
use cxauth_proto::ApiToken;
use cxauth_testkit::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

const JSON: &str = "application/json";

fn assert_json_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    want: u16,
    code: &str,
) -> Value {
    assert_eq!(status, want, "{body}");
    assert_eq!(headers["content-type"], JSON, "{body}");
    let v: Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(v["errorCode"], code, "{body}");
    for f in ["generalMessage", "details", "requestUri", "requestId"] {
        assert!(v[f].is_string(), "{f} missing in {body}");
    }
    assert!(v["timestamp"].is_i64(), "{body}");
    assert_eq!(
        v["requestId"],
        headers["x-request-id"].to_str().expect("id")
    );
    assert!(!body.to_lowercase().contains("expired"), "{body}");
    v
}

fn assert_plain_401(status: u16, headers: &reqwest::header::HeaderMap, body: &str, want: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body, want);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("wa")
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn login_accepts_query_form_and_json_and_ignores_authorization() {
    let s = TestApp::spawn().await;
    let url = s.url("/api/auth/login/admin");
    // 1. Query string, JSON content type, body `""`, and the Python SDK's `Basic basic`.
    let q = format!("{url}?username=admin&password={ADMIN_PASSWORD}&platformId=aws80");
    let (st, h, body) = send(
        http()
            .post(&q)
            .header("content-type", JSON)
            .header("authorization", "Basic basic")
            .body("\"\""),
    )
    .await
    .parts();
    assert_eq!(st, 200, "{body}");
    assert_eq!(h["cache-control"], "no-store");
    // 2. Form body, with a garbage bearer that must be ignored.
    let res = http()
        .post(&url)
        .header("authorization", "Bearer garbage")
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    // 3. JSON body.
    let res = http()
        .post(&url)
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD, "platformId": "aws80"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    // Query and body agreeing is fine; disagreeing is a 400.
    let res = http()
        .post(format!("{url}?username=admin"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let (st, h, body) = send(http().post(format!("{url}?username=other")).form(&[
        ("username", "admin"),
        ("password", ADMIN_PASSWORD),
        ("platformId", "aws80"),
    ]))
    .await
    .parts();
    assert_json_error(st, &h, &body, 400, "bad.request");
}

#[tokio::test]
async fn session_shape_and_access_token_claims() {
    let s = TestApp::spawn().await;
    let res = s
        .post("/api/auth/login/admin")
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("send");
    let v: Value = res.json().await.expect("json");
    for f in [
        "accessToken",
        "refreshToken",
        "platformId",
        "mainAccountId",
        "adminUrl",
        "agentUrl",
    ] {
        assert!(v[f].is_string(), "{f}: {v}");
    }
    assert_eq!(v["tokenType"], "Bearer");
    assert_eq!(v["expiresIn"], 300);
    assert_eq!(v["platformId"], "aws80");
    assert_eq!(v["mainAccountId"], "10000000");
    assert!(v["adminId"].is_i64());
    assert_eq!(v["adminUrl"], "/voice/admin/");
    assert_eq!(v["agentUrl"], "/voice/agent/");
    assert_eq!(v["agentDetails"], serde_json::json!([]));
    assert_eq!(v["ssoLogin"], false);
    for f in ["accessToken", "refreshToken"] {
        assert!(
            cxauth_proto::is_token_alphabet(v[f].as_str().expect("str")),
            "{f}"
        );
    }

    let jwt = v["accessToken"].as_str().expect("jwt");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(header["alg"], "EdDSA");
    for c in ["iss", "sub", "jti", "platformId", "mainAccountId"] {
        assert!(claims[c].is_string(), "{c}: {claims}");
    }
    assert!(claims["iat"].is_i64() && claims["exp"].is_i64());
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        300
    );
    assert_eq!(claims["lapp"], "ADMIN");
    assert_eq!(claims["esu"], true);
    assert_eq!(claims["sub"], v["adminId"].to_string());

    // The JWKS key verifies the token (another service could check it without us).
    let jwks = s.client.jwks().await.expect("jwks");
    let key = jwks
        .keys
        .iter()
        .find(|k| Some(k.kid.as_str()) == header["kid"].as_str())
        .expect("kid in JWKS");
    assert_eq!(
        (key.kty.as_str(), key.crv.as_str(), key.alg.as_str()),
        ("OKP", "Ed25519", "EdDSA")
    );
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(&key.x).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(jwt, &decoding, &validation).expect("signature verifies");
}

#[tokio::test]
async fn failed_logins_are_one_generic_401() {
    let s = TestApp::spawn().await;
    s.create_user("disabled", Some("admin"), &[], &[]).await;
    cxauth_core::admin::set_enabled(s.state.auth.store().as_ref(), "disabled", false, 0)
        .await
        .expect("disable");
    let url = s.url("/api/auth/login/admin");
    let mut bodies = Vec::new();
    for (u, p, plat) in [
        ("admin", "wrong", "aws80"),
        ("nobody", "whatever", "aws80"),
        ("admin", ADMIN_PASSWORD, "aws82"),
        ("disabled", "disabled-pw", "aws80"),
    ] {
        let (st, h, body) =
            send(
                http()
                    .post(&url)
                    .form(&[("username", u), ("password", p), ("platformId", plat)]),
            )
            .await
            .parts();
        let v = assert_json_error(st, &h, &body, 401, "authentication.failed");
        assert!(
            h["www-authenticate"]
                .to_str()
                .expect("wa")
                .starts_with("Bearer")
        );
        bodies.push((
            v["errorCode"].clone(),
            v["generalMessage"].clone(),
            v["details"].clone(),
        ));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    // Missing fields are a 400 naming the field, never a 401 or a 500.
    for (form, missing) in [
        (vec![("password", "x"), ("platformId", "aws80")], "username"),
        (
            vec![("username", "admin"), ("platformId", "aws80")],
            "password",
        ),
        (vec![("username", "admin"), ("password", "x")], "platformId"),
    ] {
        let (st, h, body) = send(http().post(&url).form(&form)).await.parts();
        let v = assert_json_error(st, &h, &body, 400, "bad.request");
        assert!(
            v["details"].as_str().expect("details").contains(missing),
            "{body}"
        );
        assert_eq!(v["requestUri"], "/api/auth/login/admin - POST");
    }
    // Malformed JSON and oversized input.
    let (st, h, body) = send(
        http()
            .post(&url)
            .header("content-type", JSON)
            .body("{\"username\":"),
    )
    .await
    .parts();
    assert_json_error(st, &h, &body, 400, "bad.request");
    let res = http()
        .post(&url)
        .body(vec![b'a'; 200 * 1024])
        .send()
        .await
        .expect("send");
    let (st, h, body) = raw(res).await;
    assert_json_error(st, &h, &body, 413, "payload.too.large");
}

#[tokio::test]
async fn throttling_backs_off_and_recovers() {
    let s = TestApp::spawn().await;
    let url = s.url("/api/auth/login/admin");
    // Five failures are free (the username's budget, from an address admin never used).
    for _ in 0..5 {
        let res = http()
            .post(&url)
            .form(&[
                ("username", "admin"),
                ("password", "bad"),
                ("platformId", "aws80"),
            ])
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 401);
    }
    // Now even the right password is refused until the back-off passes.
    let (st, h, body) = send(http().post(&url).form(&[
        ("username", "admin"),
        ("password", ADMIN_PASSWORD),
        ("platformId", "aws80"),
    ]))
    .await
    .parts();
    assert_json_error(st, &h, &body, 429, "too.many.requests");
    let wait: u64 = h["retry-after"]
        .to_str()
        .expect("ra")
        .parse()
        .expect("secs");
    assert!((1..=30).contains(&wait), "{wait}");
    s.clock.advance(Duration::from_secs(wait));
    s.login_admin().await;
    // This address is now known for admin: its attempts here have a budget of their own.
    let res = http()
        .post(&url)
        .form(&[
            ("username", "admin"),
            ("password", "bad"),
            ("platformId", "aws80"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn refresh_rotates_with_grace_and_reuse_revokes_the_session() {
    let s = TestApp::spawn().await;
    let first = s.login_admin().await;
    let rt1 = first.refresh_token.clone().expect("refresh token");
    // Refresh ignores an expired/garbage bearer, as the Python SDK sends one.
    let (st, h, body) = send(
        s.post("/api/auth/token/refresh")
            .header("authorization", format!("Bearer {}", first.access_token))
            .form(&[("refresh_token", rt1.as_str()), ("rcTokenType", "Bearer")]),
    )
    .await
    .parts();
    assert_eq!(st, 200, "{body}");
    assert_eq!(h["cache-control"], "no-store");
    let second: cxauth_client::Session = serde_json::from_str(&body).expect("session");
    let rt2 = second.refresh_token.clone().expect("rt2");
    assert_ne!(rt2, rt1);
    assert_ne!(second.access_token, first.access_token);
    s.client
        .accounts(&bearer(&second))
        .await
        .expect("new access token works");

    // A retry with rt1 inside the grace window (lost response) still works, and retires rt2.
    s.clock.advance(Duration::from_secs(10));
    let retry = s.client.refresh(&rt1).await.expect("grace retry");
    let rt3 = retry.refresh_token.clone().expect("rt3");
    s.clock.advance(Duration::from_secs(5));
    let fourth = s.client.refresh(&rt3).await.expect("chain goes on");

    // rt1 after the grace window is reuse: the whole session ends.
    s.clock.advance(Duration::from_secs(30));
    let err = s.client.refresh(&rt1).await.expect_err("reuse refused");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!err.to_string().contains("expired"), "{err}");
    let err = s
        .client
        .refresh(fourth.refresh_token.as_deref().expect("rt"))
        .await
        .expect_err("session revoked");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let (st, h, body) = send(
        s.get("/voice/api/v1/admin/accounts")
            .bearer_auth(&fourth.access_token),
    )
    .await
    .parts();
    assert_plain_401(st, &h, &body, "Jwt verification fails");

    // Bad refresh input.
    let (st, h, body) = send(
        s.post("/api/auth/token/refresh")
            .form(&[("rcTokenType", "Bearer")]),
    )
    .await
    .parts();
    assert_json_error(st, &h, &body, 400, "bad.request");
    for bad in ["nope", "with space", &"x".repeat(10_000)] {
        let (st, h, body) = send(
            s.post("/api/auth/token/refresh")
                .form(&[("refresh_token", bad)]),
        )
        .await
        .parts();
        assert_json_error(st, &h, &body, 401, "invalid.refresh.token");
    }
}

#[tokio::test]
async fn a_refresh_token_issued_before_tokens_carried_their_issue_time_still_works() {
    use cxauth_core::clock::Clock as _;
    use cxauth_core::crypto::{DigestKind, MasterKey, Secrets};
    let s = TestApp::spawn().await;
    let admin = s.login_admin().await;
    // Tokens now lead with their issue time: 8 + 32 bytes, 54 characters.
    assert_eq!(admin.refresh_token.as_deref().map(str::len), Some(54));
    // A session as the servers before made it: 32 random bytes (43 characters), stored under
    // their whole keyed digest.
    let secrets = Secrets::derive(&MasterKey::load(&s.master_key_file()).expect("master key"));
    let old = URL_SAFE_NO_PAD.encode([0x5a_u8; 32]);
    assert_eq!(old.len(), 43);
    let now = s.clock.now_ms();
    s.state
        .auth
        .store()
        .create_session(&cxauth_core::store::NewSession {
            session_id: "5f0c1a7e-2b4d-4c8e-9f61-0d3b7a2e8c45".into(),
            user_id: admin.admin_id,
            refresh_digest: secrets.digest(DigestKind::RefreshToken, old.as_bytes()),
            expected_password_hash: None,
            now,
            refresh_expires_at: now + 3_600_000,
            sso_login: false,
            max_sessions: 0,
        })
        .await
        .expect("a session of the old form");
    let next = s
        .client
        .refresh(&old)
        .await
        .expect("the old token refreshes");
    let successor = next.refresh_token.clone().expect("successor");
    assert_eq!(successor.len(), 54, "its successor is of the new form");
    s.client
        .accounts(&bearer(&next))
        .await
        .expect("its access token works");
    // The old token is still found where it was stored once rotated: presented after the grace
    // window it is reuse, and the session ends (a token merely not found would leave it).
    s.clock.advance(Duration::from_secs(60));
    let err = s.client.refresh(&old).await.expect_err("reuse");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let err = s
        .client
        .refresh(&successor)
        .await
        .expect_err("the session ended");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn access_and_refresh_tokens_expire_on_the_injected_clock() {
    let s = TestApp::spawn().await;
    let session = s.login_admin().await;
    s.client
        .accounts(&bearer(&session))
        .await
        .expect("fresh token works");
    s.clock.advance(Duration::from_secs(299));
    s.client
        .accounts(&bearer(&session))
        .await
        .expect("still valid at 299 s");
    s.clock.advance(Duration::from_secs(1));
    for prefix in [PREFIX_VOICE, PREFIX_LEGACY] {
        let (st, h, body) = send(
            s.get(&format!("{prefix}/admin/accounts"))
                .bearer_auth(&session.access_token),
        )
        .await
        .parts();
        assert_plain_401(st, &h, &body, "Jwt is expired");
        assert!(
            h["www-authenticate"]
                .to_str()
                .expect("wa")
                .contains("invalid_token")
        );
        // The same token as X-Auth-Token is just as expired.
        let (st, h, body) = send(
            s.get(&format!("{prefix}/admin/token"))
                .header("x-auth-token", &session.access_token),
        )
        .await
        .parts();
        assert_plain_401(st, &h, &body, "Jwt is expired");
    }
    let err = s
        .client
        .accounts(&bearer(&session))
        .await
        .expect_err("expired");
    assert!(err.is_token_expired());
    let renewed = s
        .client
        .refresh(session.refresh_token.as_deref().expect("rt"))
        .await
        .expect("refresh after expiry");
    s.client
        .accounts(&bearer(&renewed))
        .await
        .expect("renewed token works");

    // A refresh token past its 7 days is refused without the word "expired".
    s.clock.advance(Duration::from_secs(7 * 24 * 3600));
    let err = s
        .client
        .refresh(renewed.refresh_token.as_deref().expect("rt"))
        .await
        .expect_err("refresh token too old");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!err.to_string().to_lowercase().contains("expired"));
}

#[tokio::test]
async fn bearer_failures_have_the_contract_bodies() {
    let s = TestApp::spawn().await;
    let url = s.url("/voice/api/v1/admin/accounts");
    let (st, h, body) = send(http().get(&url).header("content-type", JSON))
        .await
        .parts();
    assert_plain_401(st, &h, &body, "Jwt is missing");
    for bad in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        "aws80:00000000-0000-4000-8000-000000000000",
    ] {
        for (name, value) in [
            ("authorization", format!("Bearer {bad}")),
            ("x-auth-token", bad.to_owned()),
        ] {
            let (st, h, body) = send(http().get(&url).header(name, value)).await.parts();
            assert_plain_401(st, &h, &body, "Jwt verification fails");
            assert!(
                h["www-authenticate"]
                    .to_str()
                    .expect("wa")
                    .contains("invalid_token")
            );
        }
    }
    // A token signed by another server (another key) is refused.
    let other = TestApp::spawn().await;
    let foreign = other.login_admin().await;
    let err = s
        .client
        .accounts(&bearer(&foreign))
        .await
        .expect_err("foreign");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!err.is_token_expired());
}

#[tokio::test]
async fn api_tokens_create_list_delete_on_both_prefixes() {
    let s = TestApp::spawn().await;
    let session = s.login_admin().await;
    for prefix in [PREFIX_VOICE, PREFIX_LEGACY] {
        let c = Client::new(&s.base).expect("client").with_prefix(prefix);
        // Create with a bearer, as text/plain, no quotes, no newline.
        let (st, h, first) = send(
            s.post(&format!("{prefix}/admin/token"))
                .bearer_auth(&session.access_token)
                .header("content-type", JSON),
        )
        .await
        .parts();
        assert_eq!(st, 200, "{first}");
        assert!(
            h["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("text/plain")
        );
        assert_eq!(h["cache-control"], "no-store");
        let parsed = ApiToken::parse(&first).expect("aws80:<uuid v4>");
        assert_eq!(parsed.platform_id(), "aws80");
        // Create with the API token itself; every call makes a new one.
        let second = c
            .create_api_token(&x_auth(&first))
            .await
            .expect("create with API token");
        assert_ne!(first, second);
        let listed = c.list_api_tokens(&x_auth(&second)).await.expect("list");
        let tail: Vec<&String> = listed.iter().rev().take(2).rev().collect();
        assert_eq!(tail, vec![&first, &second], "oldest first");
        // Delete with the token being deleted, percent-encoded in the path.
        c.delete_api_token(&x_auth(&first), &first)
            .await
            .expect("delete self");
        let err = c
            .list_api_tokens(&x_auth(&first))
            .await
            .expect_err("deleted token refused");
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
        let err = c
            .delete_api_token(&x_auth(&second), &first)
            .await
            .expect_err("already gone");
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
        // A raw `:` in the path works as well as `%3A`.
        let (st, _, body) = send(
            s.delete(&format!("{prefix}/admin/token/{second}"))
                .bearer_auth(&session.access_token),
        )
        .await
        .parts();
        assert_eq!((st, body.as_str()), (200, "true"));
    }
    assert!(
        s.client
            .list_api_tokens(&bearer(&session))
            .await
            .expect("list")
            .is_empty()
    );
    // Malformed and unknown tokens are both a plain 404.
    for t in ["not-a-token", "aws80:00000000-0000-4000-8000-000000000000"] {
        let (st, h, body) = send(
            s.delete(&format!("/voice/api/v1/admin/token/{t}"))
                .bearer_auth(&session.access_token),
        )
        .await
        .parts();
        let v = assert_json_error(st, &h, &body, 404, "not.found");
        assert!(!body.contains(t), "the path's token is not echoed: {body}");
        assert_eq!(
            v["requestUri"],
            "/voice/api/v1/admin/token/[redacted] - DELETE"
        );
    }
}

#[tokio::test]
async fn api_token_deletion_by_owner_ancestor_only() {
    let s = TestApp::spawn().await;
    s.create_user("manager", Some("admin"), &[], &["MANAGE_USERS"])
        .await;
    s.create_user("agent", Some("manager"), &[], &[]).await;
    s.create_user("peer", Some("admin"), &[], &[]).await;
    let admin = s.login_admin().await;
    let manager = s.login("manager").await;
    let agent = s.login("agent").await;
    let peer = s.login("peer").await;

    let agent_token = s
        .client
        .create_api_token(&bearer(&agent))
        .await
        .expect("create");
    // A stranger (sibling of the agent's parent) gets the same 404 as for a missing token.
    let err = s
        .client
        .delete_api_token(&bearer(&peer), &agent_token)
        .await
        .expect_err("stranger");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    // A child may not delete its parent's token.
    let manager_token = s
        .client
        .create_api_token(&bearer(&manager))
        .await
        .expect("create");
    let err = s
        .client
        .delete_api_token(&bearer(&agent), &manager_token)
        .await
        .expect_err("child");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    // Parent and grandparent may.
    s.client
        .delete_api_token(&bearer(&manager), &agent_token)
        .await
        .expect("parent deletes");
    let agent_token2 = s
        .client
        .create_api_token(&bearer(&agent))
        .await
        .expect("create");
    s.client
        .delete_api_token(&bearer(&admin), &agent_token2)
        .await
        .expect("grandparent deletes");
    // Tokens list per owner.
    assert!(
        s.client
            .list_api_tokens(&bearer(&agent))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        s.client
            .list_api_tokens(&bearer(&manager))
            .await
            .expect("list"),
        vec![manager_token]
    );
}

#[tokio::test]
async fn accounts_follow_grants() {
    let s = TestApp::spawn().await;
    let store = s.state.auth.store().clone();
    let main = 10_000_000;
    let sub2 = cxauth_core::admin::create_sub_account(store.as_ref(), main, "Second", 0)
        .await
        .expect("sub");
    assert_eq!(sub2, 10_000_002);
    let other_main = cxauth_core::admin::create_main_account(store.as_ref(), "Other", 0)
        .await
        .expect("main");
    assert_eq!(other_main % 10_000, 0);
    assert_ne!(other_main, main);
    let other_sub = cxauth_core::admin::create_sub_account(store.as_ref(), other_main, "O1", 0)
        .await
        .expect("sub");
    assert_eq!(other_sub, other_main + 1);

    let admin = s.login_admin().await;
    let accounts = s.client.accounts(&bearer(&admin)).await.expect("accounts");
    let ids: Vec<&str> = accounts.iter().map(|a| a.account_id.as_str()).collect();
    assert_eq!(ids, ["10000001", "10000002"]);
    assert_eq!(accounts[0].account_name, "Default");
    assert_eq!(accounts[0].main_account_id, "10000000");
    assert_eq!(accounts[0].main_account_name, "Main");
    assert_eq!(accounts[0].main_account.main_account_id, "10000000");
    assert!(accounts[0].main_account.is_active);

    // A grant of one sub-account shows just that one; the raw JSON has no extra shapes.
    s.create_user("narrow", None, &[sub2], &[]).await;
    let narrow = s.login("narrow").await;
    let res = s
        .get("/api/v1/admin/accounts")
        .header("x-auth-token", &narrow.access_token)
        .header("content-type", JSON)
        .send()
        .await
        .expect("send");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v.as_array().expect("array").len(), 1);
    assert_eq!(v[0]["accountId"], "10000002");
    assert!(v[0].get("subAccounts").is_none());

    s.create_user("elsewhere", None, &[other_main], &[]).await;
    let elsewhere = s.login("elsewhere").await;
    assert_eq!(elsewhere.main_account_id, other_main.to_string());
    let accounts = s
        .client
        .accounts(&bearer(&elsewhere))
        .await
        .expect("accounts");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].account_id, other_sub.to_string());
}

#[tokio::test]
async fn users_need_a_role_and_nest_by_children() {
    let s = TestApp::spawn().await;
    let manager_id = s
        .create_user("manager", Some("admin"), &[], &["MANAGE_USERS"])
        .await;
    let agent_id = s.create_user("agent", Some("manager"), &[], &[]).await;
    let off_id = s.create_user("off", Some("manager"), &[], &[]).await;
    cxauth_core::admin::set_enabled(s.state.auth.store().as_ref(), "off", false, 0)
        .await
        .expect("disable");

    let agent = s.login("agent").await;
    let (st, h, body) = send(
        s.get("/voice/api/v1/admin/users")
            .bearer_auth(&agent.access_token),
    )
    .await
    .parts();
    assert_json_error(st, &h, &body, 403, "access.denied.exception");

    let admin = s.login_admin().await;
    let tree = s
        .client
        .users(&bearer(&admin), false, false)
        .await
        .expect("users");
    assert_eq!(tree.len(), 1);
    assert_eq!(tree[0].user_name, "admin");
    assert!(tree[0].root_user);
    assert_eq!(tree[0].roles, ["SUPER_USER"]);
    let m = &tree[0].children[0];
    assert_eq!(
        (m.user_id, m.parent_path.as_str(), m.root_user),
        (manager_id, "1", false)
    );
    assert_eq!(m.full_name, "MANAGER Test");
    let kids: Vec<i64> = m.children.iter().map(|u| u.user_id).collect();
    assert_eq!(kids, [agent_id, off_id]);
    assert_eq!(m.children[0].parent_path, format!("1.{manager_id}"));
    time::OffsetDateTime::parse(
        &m.creation_date,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");

    let manager = s.login("manager").await;
    let flat = s
        .client
        .users(&bearer(&manager), true, true)
        .await
        .expect("users");
    let ids: Vec<i64> = flat.iter().map(|u| u.user_id).collect();
    assert_eq!(
        ids,
        [manager_id, agent_id],
        "flattened, caller first, disabled left out"
    );
    assert!(flat.iter().all(|u| u.children.is_empty()));

    let (st, h, body) = send(
        s.get("/voice/api/v1/admin/users?flatten=maybe")
            .bearer_auth(&admin.access_token),
    )
    .await
    .parts();
    assert_json_error(st, &h, &body, 400, "bad.request");
}

#[tokio::test]
async fn logout_disable_and_password_change_end_sessions_at_once() {
    let s = TestApp::spawn().await;
    s.create_user("alice", Some("admin"), &[], &[]).await;
    let a1 = s.login("alice").await;
    let a2 = s.login("alice").await;
    let api = s
        .client
        .create_api_token(&bearer(&a1))
        .await
        .expect("token");

    // Logout ends one session; the other and API tokens keep working.
    let (st, h, body) = send(
        s.delete(&format!(
            "/api/auth/logout/{}",
            a1.refresh_token.as_deref().expect("rt")
        ))
        .header("authorization", "Basic basic")
        .header("content-type", JSON),
    )
    .await
    .parts();
    assert_eq!((st, body.as_str()), (200, "true"));
    assert!(
        h["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let err = s
        .client
        .accounts(&bearer(&a1))
        .await
        .expect_err("logged out");
    assert!(!err.is_token_expired());
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(
        s.client
            .refresh(a1.refresh_token.as_deref().expect("rt"))
            .await
            .is_err()
    );
    s.client
        .accounts(&bearer(&a2))
        .await
        .expect("other session lives");
    s.client
        .accounts(&x_auth(&api))
        .await
        .expect("API token lives");
    let err = s.client.logout("unknown-token").await.expect_err("unknown");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));

    // Changing the password ends every session.
    let store = s.state.auth.store().clone();
    cxauth_core::admin::set_password(
        store.as_ref(),
        "alice",
        &secrecy::SecretString::from("alice-pw"),
        0,
    )
    .await
    .expect("set");
    assert!(s.client.accounts(&bearer(&a2)).await.is_err());
    let a3 = s.login("alice").await;
    s.client.accounts(&bearer(&a3)).await.expect("new session");

    // Disabling refuses everything, API tokens included, and login; enabling restores API tokens.
    cxauth_core::admin::set_enabled(store.as_ref(), "alice", false, 0)
        .await
        .expect("disable");
    assert!(s.client.accounts(&bearer(&a3)).await.is_err());
    let err = s
        .client
        .accounts(&x_auth(&api))
        .await
        .expect_err("disabled");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(
        s.client
            .refresh(a3.refresh_token.as_deref().expect("rt"))
            .await
            .is_err()
    );
    let err = s
        .client
        .login("alice", "alice-pw", PLATFORM)
        .await
        .expect_err("disabled login");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    cxauth_core::admin::set_enabled(store.as_ref(), "alice", true, 0)
        .await
        .expect("enable");
    s.client
        .accounts(&x_auth(&api))
        .await
        .expect("API token works again");
    assert!(
        s.client.accounts(&bearer(&a3)).await.is_err(),
        "ended sessions stay ended"
    );
}

#[tokio::test]
async fn misc_http_behaviour() {
    let s = TestApp::spawn().await;
    let res = s
        .get("/healthz")
        .header("content-type", JSON)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let (st, h, body) = send(s.get("/nowhere?password=secret")).await.parts();
    let v = assert_json_error(st, &h, &body, 404, "not.found");
    assert_eq!(v["requestUri"], "/nowhere - GET");
    let (st, h, body) = send(s.get("/api/auth/login/admin")).await.parts();
    assert_json_error(st, &h, &body, 405, "method.not.allowed");
    // A sane incoming request id is kept; a hostile one is replaced.
    let res = s
        .get("/nowhere")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = s
        .get("/nowhere")
        .header("x-request-id", "a b\"<>")
        .send()
        .await
        .expect("send");
    assert_ne!(res.headers()["x-request-id"], "a b\"<>");
}

#[tokio::test]
async fn data_and_revocations_survive_a_restart() {
    let s = TestApp::spawn().await;
    let admin = s.login_admin().await;
    let api = s
        .client
        .create_api_token(&bearer(&admin))
        .await
        .expect("token");
    let ended = s.login_admin().await;
    s.client
        .logout(ended.refresh_token.as_deref().expect("rt"))
        .await
        .expect("logout");
    let kid_before = s.client.jwks().await.expect("jwks").keys[0].kid.clone();
    let (dir, config, clock) = s.stop().await;

    let s = TestApp::start(dir, config, clock).await;
    assert_eq!(s.client.jwks().await.expect("jwks").keys[0].kid, kid_before);
    s.client
        .accounts(&x_auth(&api))
        .await
        .expect("API token survives");
    s.client
        .accounts(&bearer(&admin))
        .await
        .expect("access token survives");
    assert!(
        s.client.accounts(&bearer(&ended)).await.is_err(),
        "revocation survives"
    );
    assert!(
        s.client
            .refresh(ended.refresh_token.as_deref().expect("rt"))
            .await
            .is_err()
    );
    // The bootstrap did not run again: still one user, same password.
    assert_eq!(
        s.state
            .auth
            .store()
            .list_users()
            .await
            .expect("users")
            .len(),
        1
    );
    s.login_admin().await;
}

#[tokio::test]
async fn a_database_without_its_key_refuses_to_start() {
    // SQLite only: the default key file beside the database file is an SQLite notion (a shared
    // PostgreSQL database always names its key file, and never gets a new one).
    let s = TestApp::spawn_on(Backend::Sqlite).await;
    let (db, config, clock) = s.stop().await;
    let key = db.key_path();
    let saved = std::fs::read(&key).expect("key file beside the database");
    std::fs::remove_file(&key).expect("rm");
    let err = cxauth_server::App::build(&config, clock.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("CXAUTH_MASTER_KEY_FILE"), "{err}");
    assert!(!key.exists(), "no new key was made");
    // Another key is refused too.
    cxauth_core::crypto::MasterKey::generate()
        .expect("key")
        .write_new(&key)
        .expect("write");
    let err = cxauth_server::App::build(&config, clock.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("does not match"), "{err}");
    std::fs::remove_file(&key).expect("rm");
    std::fs::write(&key, saved).expect("restore");
    cxauth_server::App::build(&config, clock)
        .await
        .expect("starts with its own key");
}

#[tokio::test]
async fn requests_are_answered_while_logins_queue() {
    // A burst of logins beyond the pool must be served or refused with 503 + Retry-After,
    // never hang, and never fail a token check running beside it.
    let s = TestApp::spawn_with(|c| {
        c.hash_workers = 1;
        c.hash_queue = 2;
        // One user from one address fills the pool here: no fair share (tested in attack.rs).
        c.logins_in_flight_per_source = 100;
    })
    .await;
    let admin = s.login_admin().await;
    let mut logins = Vec::new();
    for _ in 0..12 {
        let c = s.client.clone();
        logins.push(tokio::spawn(async move {
            c.login("admin", ADMIN_PASSWORD, PLATFORM).await
        }));
    }
    s.client
        .accounts(&bearer(&admin))
        .await
        .expect("token check during the storm");
    let mut busy = 0;
    for l in logins {
        match l.await.expect("join") {
            Ok(_) => {}
            // More pending checks of one user than its budget allows (the
            // reservations of attempts in flight count until they succeed): 429, not 503.
            Err(Error::Status {
                status,
                retry_after,
                ..
            }) if status == StatusCode::TOO_MANY_REQUESTS => assert!(retry_after.is_some()),
            Err(Error::Status {
                status,
                retry_after,
                ..
            }) if status == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after.is_some());
                busy += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(busy > 0, "a full queue refuses at once");
    let _ = Credential::Bearer(String::new());
}

#[tokio::test]
async fn a_key_added_by_another_instance_is_trusted_after_a_reload() {
    use cxauth_core::clock::Clock as _;
    let a = TestApp::spawn().await;
    let admin = a.login_admin().await;
    // Another instance on the same database adds a newer signing key (a rotation)…
    let master = cxauth_core::crypto::MasterKey::load(&a.db.key_path()).expect("key");
    let secrets = cxauth_core::crypto::Secrets::derive(&master);
    let newer =
        cxauth_core::jwt::generate_signing_key(&secrets, a.clock.now_ms() + 1).expect("key");
    a.state
        .auth
        .store()
        .insert_signing_key(&newer)
        .await
        .expect("insert");
    let b = cxauth_server::App::build(&a.config, a.clock.clone())
        .await
        .expect("instance B");
    // …and signs with it.
    let from_b = b
        .state
        .auth
        .login(
            cxauth_core::service::LoginInput {
                username: "admin".into(),
                password: secrecy::SecretString::from(ADMIN_PASSWORD),
                platform_id: PLATFORM.into(),
            },
            &cxauth_core::audit::AuditContext::http("127.0.0.1".parse().expect("ip"), "test"),
        )
        .await
        .expect("login on B");
    assert_eq!(b.state.auth.jwks().keys.len(), 2);
    // A has never seen that key: it reloads and accepts the token; old tokens still work.
    a.client
        .accounts(&bearer(&from_b))
        .await
        .expect("A trusts B's key");
    a.client
        .accounts(&bearer(&admin))
        .await
        .expect("the old key still verifies");
    assert_eq!(a.client.jwks().await.expect("jwks"), b.state.auth.jwks());
    // A made-up key id is refused without a reload storm.
    let err = a
        .client
        .accounts(&Credential::Bearer(format!("{}x", from_b.access_token)))
        .await
        .expect_err("bad");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget() {
    let s =
        TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")]).await;
    let url = s.url("/api/auth/login/admin");
    let attempt = |xff: &'static str, user: String, pw: &'static str| {
        http()
            .post(&url)
            .header("x-forwarded-for", xff)
            .form(&[
                ("username", user.as_str()),
                ("password", pw),
                ("platformId", "aws80"),
            ])
            .send()
    };
    // One client spraying usernames exhausts its own address budget (20 free failures)…
    let mut throttled = false;
    for i in 0..25 {
        let res = attempt("203.0.113.9", format!("spray{i}"), "bad")
            .await
            .expect("send");
        throttled |= res.status() == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(throttled, "the sprayer is slowed");
    // …while another client behind the same proxy logs in undisturbed.
    let res = attempt("198.51.100.7", "admin".into(), ADMIN_PASSWORD)
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    // A forged header from the proxy's own chain cannot pick a fresh address per guess:
    // the rightmost untrusted hop is what counts.
    let res = attempt("198.51.100.99, 203.0.113.9", "other".into(), "bad")
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}
