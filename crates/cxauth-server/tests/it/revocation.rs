//! Revocation that evicts (issue 11), over HTTP against a real server: a password change, a
//! disable and `revoke-tokens` end what they promise and the ended credentials stop working at
//! once (legacy token, API token, access token, refresh token, emulator JWT credential and
//! access token), also while requests with them are in flight; the per-user API-token cap; and
//! an expired access token of a retired signing key still answers `Jwt is expired`.

use base64::Engine as _;
use cxauth_core::admin;
use cxauth_core::clock::Clock as _;
use cxauth_core::store::RevokedCounts;
use cxauth_testkit::*;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAIN: i64 = 10_000_000;
const TOKEN: &str = "/voice/api/v1/admin/token";
const ACCOUNTS: &str = "/voice/api/v1/admin/accounts";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How a credential is presented on an admin endpoint.
#[derive(Clone, Debug)]
enum Cred {
    Bearer(String),
    XAuth(String),
}

impl Cred {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Cred::Bearer(t) => req.bearer_auth(t),
            Cred::XAuth(t) => req.header("x-auth-token", t),
        }
    }
}

async fn accounts(s: &TestApp, c: &Cred) -> (u16, String) {
    let (status, _, body) = send(c.apply(s.get(ACCOUNTS))).await.parts();
    (status, body)
}

async fn create_token(s: &TestApp, c: &Cred) -> (u16, String) {
    let (status, _, body) = send(
        c.apply(s.post(TOKEN))
            .header("content-type", "application/json"),
    )
    .await
    .parts();
    (status, body)
}

/// Asserts the credential is refused with the contract's generic bearer 401.
async fn refused(s: &TestApp, c: &Cred, what: &str) {
    let (status, body) = accounts(s, c).await;
    assert_eq!(
        (status, body.as_str()),
        (401, "Jwt verification fails"),
        "{what}"
    );
}

async fn legacy_token(s: &TestApp, user: &str) -> String {
    let (status, _, body) = send(s.post("/api/v1/auth/login").form(&[
        ("username", user),
        ("password", &format!("{user}-pw")),
        ("stayLoggedIn", "true"),
    ]))
    .await
    .parts();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["authToken"].as_str().expect("authToken").to_owned()
}

async fn refresh(s: &TestApp, rt: &str) -> (u16, String) {
    let (status, _, body) = send(
        s.post("/api/auth/token/refresh")
            .form(&[("refresh_token", rt)]),
    )
    .await
    .parts();
    (status, body)
}

/// The RingEX emulator: an app and a JWT credential of `user`.
struct Emu {
    basic: String,
    jwt: String,
}

async fn emulator(s: &TestApp, user: &str) -> Emu {
    let store = s.state.auth.store().as_ref();
    let (id, secret) = admin::create_ringex_app(store, 0).await.expect("app");
    let jwt = admin::create_ringex_jwt(store, user, s.clock.now_ms())
        .await
        .expect("jwt");
    Emu {
        basic: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{id}:{}", secret.expose_secret()))
        ),
        jwt: jwt.expose_secret().to_owned(),
    }
}

/// The JWT-bearer grant: the emulator access token, or the OAuth error code.
async fn jwt_grant(s: &TestApp, e: &Emu, jwt: &str) -> Result<String, String> {
    let (status, _, body) = send(
        s.post("/restapi/oauth/token")
            .header("authorization", &e.basic)
            .form(&[("grant_type", JWT_GRANT), ("assertion", jwt)]),
    )
    .await
    .parts();
    let v: Value = serde_json::from_str(&body).expect("json");
    if status == 200 {
        Ok(v["access_token"].as_str().expect("token").to_owned())
    } else {
        Err(v["error"].as_str().expect("error").to_owned())
    }
}

/// The token exchange of an emulator access token: its session, or the status.
async fn exchange(s: &TestApp, rc_token: &str) -> Result<(String, String), u16> {
    let (status, _, body) = send(s.post(&format!(
            "/api/auth/login/rc/accesstoken?rcAccessToken={rc_token}&rcTokenType=Bearer&includeRefresh=true"
        ))).await.parts();
    if status != 200 {
        return Err(status);
    }
    let v: Value = serde_json::from_str(&body).expect("json");
    Ok((
        v["accessToken"].as_str().expect("at").to_owned(),
        v["refreshToken"].as_str().expect("rt").to_owned(),
    ))
}

/// Every kind of credential of one user.
struct Creds {
    access: Cred,
    refresh: String,
    legacy: Cred,
    api: Cred,
    emu: Emu,
    rc_token: String,
    sso_access: Cred,
}

async fn every_credential(s: &TestApp, user: &str) -> Creds {
    let session = s.login(user).await;
    let access = Cred::Bearer(session.access_token.clone());
    let (status, api) = create_token(s, &access).await;
    assert_eq!(status, 200, "{api}");
    let legacy = Cred::XAuth(legacy_token(s, user).await);
    let emu = emulator(s, user).await;
    let rc_token = jwt_grant(s, &emu, &emu.jwt).await.expect("grant");
    let (sso, _) = exchange(s, &rc_token).await.expect("exchange");
    let creds = Creds {
        access,
        refresh: session.refresh_token.clone().expect("refresh token"),
        legacy,
        api: Cred::XAuth(api),
        emu,
        rc_token,
        sso_access: Cred::Bearer(sso),
    };
    for c in [&creds.access, &creds.legacy, &creds.api, &creds.sso_access] {
        assert_eq!(accounts(s, c).await.0, 200, "{c:?} works before");
    }
    creds
}

async fn emulator_server() -> TestApp {
    TestApp::spawn_with(|c| c.ringex_emulator = true).await
}

#[tokio::test]
async fn revoke_tokens_ends_every_credential_of_the_user_at_once() {
    let s = emulator_server().await;
    s.create_rc_user("alice", &[MAIN], 501).await;
    s.create_rc_user("bob", &[MAIN], 502).await;
    let a = every_credential(&s, "alice").await;
    let b = every_credential(&s, "bob").await;
    let store = s.state.auth.store().clone();

    let ended = admin::revoke_tokens(store.as_ref(), "alice", s.clock.now_ms())
        .await
        .expect("revoke");
    assert_eq!(
        ended,
        RevokedCounts {
            api_tokens: 1,
            legacy_tokens: 1,
            sessions: 2,
            ringex_jwts: 1,
            ringex_tokens: 1,
        }
    );
    refused(&s, &a.access, "access token").await;
    refused(&s, &a.sso_access, "access token of the exchange").await;
    refused(&s, &a.legacy, "legacy token").await;
    refused(&s, &a.api, "API token").await;
    let (status, body) = refresh(&s, &a.refresh).await;
    assert_eq!(status, 401, "refresh: {body}");
    assert!(!body.contains("expired"));
    assert_eq!(
        jwt_grant(&s, &a.emu, &a.emu.jwt).await,
        Err("invalid_grant".into())
    );
    assert_eq!(exchange(&s, &a.rc_token).await, Err(401));
    // A revoked credential cannot mint a new one either.
    assert_eq!(create_token(&s, &a.legacy).await.0, 401);

    // Bob is untouched.
    for c in [&b.access, &b.legacy, &b.api, &b.sso_access] {
        assert_eq!(accounts(&s, c).await.0, 200, "{c:?}");
    }
    assert!(jwt_grant(&s, &b.emu, &b.emu.jwt).await.is_ok());

    // The password stays: alice logs in again and gets working credentials.
    let again = s.login("alice").await;
    assert_eq!(
        create_token(&s, &Cred::Bearer(again.access_token)).await.0,
        200
    );
    let trail = store
        .audit_events(&cxauth_core::store::AuditFilter {
            username: Some("alice".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    let revoke = trail
        .iter()
        .find(|e| e.event == "credentials.revoke")
        .expect("audited");
    assert_eq!(revoke.outcome, "success");
    assert!(revoke.detail.contains("api_tokens=1"), "{}", revoke.detail);
}

#[tokio::test]
async fn a_password_change_ends_legacy_tokens_and_emulator_credentials_but_not_api_tokens() {
    let s = emulator_server().await;
    s.create_rc_user("alice", &[MAIN], 501).await;
    let a = every_credential(&s, "alice").await;
    let store = s.state.auth.store().clone();
    let ended = admin::set_password(
        store.as_ref(),
        "alice",
        &SecretString::from("alice-pw"),
        s.clock.now_ms(),
    )
    .await
    .expect("set password");
    assert_eq!(
        ended,
        RevokedCounts {
            api_tokens: 0,
            legacy_tokens: 1,
            sessions: 2,
            ringex_jwts: 1,
            ringex_tokens: 1,
        }
    );
    refused(&s, &a.legacy, "legacy token").await;
    refused(&s, &a.access, "access token").await;
    refused(&s, &a.sso_access, "access token of the exchange").await;
    assert_eq!(refresh(&s, &a.refresh).await.0, 401);
    assert_eq!(
        jwt_grant(&s, &a.emu, &a.emu.jwt).await,
        Err("invalid_grant".into())
    );
    assert_eq!(exchange(&s, &a.rc_token).await, Err(401));
    assert_eq!(accounts(&s, &a.api).await.0, 200, "API tokens stay");

    // --revoke-tokens: the API tokens end with the change.
    let legacy = Cred::XAuth(legacy_token(&s, "alice").await);
    let ended = admin::change_password(
        store.as_ref(),
        "alice",
        &SecretString::from("alice-pw"),
        true,
        s.clock.now_ms(),
    )
    .await
    .expect("set password");
    assert_eq!((ended.api_tokens, ended.legacy_tokens), (1, 1));
    refused(&s, &a.api, "API token").await;
    refused(&s, &legacy, "legacy token").await;
}

#[tokio::test]
async fn disable_ends_legacy_tokens_for_good_and_enable_brings_back_api_tokens_only() {
    let s = emulator_server().await;
    s.create_rc_user("alice", &[MAIN], 501).await;
    let a = every_credential(&s, "alice").await;
    let store = s.state.auth.store().clone();
    admin::set_enabled(store.as_ref(), "alice", false, s.clock.now_ms())
        .await
        .expect("disable");
    for c in [&a.access, &a.legacy, &a.api, &a.sso_access] {
        refused(&s, c, "while disabled").await;
    }
    admin::set_enabled(store.as_ref(), "alice", true, s.clock.now_ms())
        .await
        .expect("enable");
    assert_eq!(accounts(&s, &a.api).await.0, 200, "the API token is back");
    refused(&s, &a.legacy, "legacy token after enable").await;
    refused(&s, &a.access, "access token after enable").await;
    assert_eq!(refresh(&s, &a.refresh).await.0, 401);
    assert_eq!(
        jwt_grant(&s, &a.emu, &a.emu.jwt).await,
        Err("invalid_grant".into())
    );
}

#[tokio::test]
async fn ringex_jwt_credentials_are_listed_and_revoked_one_by_one() {
    let s = emulator_server().await;
    s.create_rc_user("alice", &[MAIN], 501).await;
    let store = s.state.auth.store().clone();
    let first = emulator(&s, "alice").await;
    let second = admin::create_ringex_jwt(store.as_ref(), "alice", s.clock.now_ms() + 5)
        .await
        .expect("jwt");
    let listed = admin::list_ringex_jwts(store.as_ref(), Some("alice"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    let rc_token = jwt_grant(&s, &first, &first.jwt).await.expect("grant");
    admin::revoke_ringex_jwt(store.as_ref(), listed[0].id, s.clock.now_ms())
        .await
        .expect("revoke");
    assert_eq!(
        jwt_grant(&s, &first, &first.jwt).await,
        Err("invalid_grant".into())
    );
    // The emulator access tokens of the user end with it.
    assert_eq!(exchange(&s, &rc_token).await, Err(401));
    assert!(
        jwt_grant(&s, &first, second.expose_secret()).await.is_ok(),
        "the other credential still works"
    );
    assert!(
        admin::revoke_ringex_jwt(store.as_ref(), listed[0].id, 0)
            .await
            .is_err(),
        "unknown id"
    );
}

/// revoke-tokens while requests with the user's credentials, many of them creating API tokens,
/// are in flight: afterwards nothing issued before the revocation, nor anything minted on the
/// authority of a revoked credential, works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_tokens_racing_requests_in_flight_leaves_nothing_working() {
    let s = Arc::new(TestApp::spawn_with(|c| c.api_token_cap = 100_000).await);
    s.create_user("alice", None, &[MAIN], &[]).await;
    let session = s.login("alice").await;
    let access = Cred::Bearer(session.access_token.clone());
    let (_, api) = create_token(&s, &access).await;
    let legacy = Cred::XAuth(legacy_token(&s, "alice").await);
    let creds = vec![access, Cred::XAuth(api), legacy];
    let minted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (s, minted) = (s.clone(), minted.clone());
        let cred = creds[i % creds.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..40 {
                let (status, body) = create_token(&s, &cred).await;
                match status {
                    200 => minted.lock().expect("lock").push(body),
                    401 => refused += 1,
                    other => panic!("unexpected {other}: {body}"),
                }
                let _ = accounts(&s, &cred).await;
                if refused >= 3 {
                    break;
                }
            }
            refused
        }));
    }
    // Revoke once the creations are well under way.
    tokio::time::timeout(Duration::from_secs(60), async {
        while minted.lock().expect("lock").len() < 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("30 tokens minted within a minute");
    let ended = admin::revoke_tokens(s.state.auth.store().as_ref(), "alice", s.clock.now_ms())
        .await
        .expect("revoke");
    assert!(ended.api_tokens >= 30, "{ended:?}");
    let mut refusals = 0;
    for t in tasks {
        refusals += t.await.expect("task");
    }
    assert!(
        refusals > 0,
        "the requests after the revocation were refused"
    );
    let minted = minted.lock().expect("lock").clone();
    println!(
        "revoke-tokens under load: {} API tokens minted by 12 clients racing it ({} ended by it), \
         {refusals} requests refused after it; checking that none of them works",
        minted.len(),
        ended.api_tokens
    );
    for c in &creds {
        refused(&s, c, "a credential of before").await;
    }
    for t in &minted {
        refused(
            &s,
            &Cred::XAuth(t.clone()),
            "a token minted during the race",
        )
        .await;
    }
    assert_eq!(
        refresh(&s, session.refresh_token.as_deref().expect("rt"))
            .await
            .0,
        401
    );
    let store = s.state.auth.store();
    let alice = store
        .user_by_username("alice")
        .await
        .expect("get")
        .expect("alice");
    assert!(
        store
            .api_tokens_of(alice.id)
            .await
            .expect("list")
            .is_empty(),
        "{} tokens minted, none left",
        minted.len()
    );
}

#[tokio::test]
async fn the_api_token_cap_answers_409_in_the_ringcx_error_shape() {
    let s = TestApp::spawn_with(|c| c.api_token_cap = 3).await;
    let admin_session = s.login_admin().await;
    let c = Cred::Bearer(admin_session.access_token);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (status, t) = create_token(&s, &c).await;
        assert_eq!(status, 200, "{t}");
        tokens.push(t);
    }
    let (status, headers, body) = send(c.apply(s.post(TOKEN))).await.parts();
    assert_eq!(status, 409, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["errorCode"], "api.token.limit.exceeded");
    assert_eq!(v["requestUri"], format!("{TOKEN} - POST"));
    assert!(
        v["details"]
            .as_str()
            .expect("details")
            .contains("at most 3")
    );
    assert!(v["timestamp"].is_i64() && v["requestId"].is_string());
    assert!(!body.to_lowercase().contains("expired"));
    // Deleting one makes room for one.
    let (status, _, _) = send(c.apply(s.delete(&format!("{TOKEN}/{}", tokens[0]))))
        .await
        .parts();
    assert_eq!(status, 200);
    assert_eq!(create_token(&s, &c).await.0, 200);
    assert_eq!(create_token(&s, &c).await.0, 409);
    let trail = s.audit_trail().await;
    assert!(
        trail
            .iter()
            .any(|e| e.event == "api_token.cap" && e.outcome == "failure")
    );
}

/// 50 parallel creations, 10 below the (default) cap: exactly the cap is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_creations_at_the_cap_end_with_exactly_the_cap() {
    let s = Arc::new(TestApp::spawn().await);
    let cap = s.config.api_token_cap;
    assert_eq!(cap, 100, "the documented default");
    let c = Cred::Bearer(s.login_admin().await.access_token);
    for _ in 0..cap - 10 {
        assert_eq!(create_token(&s, &c).await.0, 200);
    }
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, c) = (s.clone(), c.clone());
        tasks.push(tokio::spawn(async move { create_token(&s, &c).await.0 }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    let created = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, refused), (10, 40), "{statuses:?}");
    println!("50 parallel creations at cap - 10: {created} created, {refused} refused with 409");
    let (status, body) = {
        let (st, _, b) = send(c.apply(s.get(TOKEN))).await.parts();
        (st, b)
    };
    assert_eq!(status, 200);
    let list: Vec<String> = serde_json::from_str(&body).expect("json");
    assert_eq!(list.len() as u64, cap);
}

#[tokio::test]
async fn an_expired_token_of_a_retired_key_still_says_expired() {
    let s = TestApp::spawn().await;
    let old = s.login_admin().await;
    let store = s.state.auth.store().clone();
    let key_file = s.master_key_file();
    let secrets = cxauth_core::crypto::Secrets::derive(
        &cxauth_core::crypto::MasterKey::load(&key_file).expect("master key"),
    );
    // A token of the old key that would live for a year, signed while the key still exists
    // (as whoever held the private key could): it must never be accepted once the key retires.
    let old_keys = store.signing_keys().await.expect("keys");
    let old_ring =
        cxauth_core::jwt::KeyRing::from_stored(&secrets, &old_keys).expect("ring of the old key");
    let header = old.access_token.split('.').nth(1).expect("payload");
    let mut claims: cxauth_core::jwt::Claims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .expect("b64"),
    )
    .expect("claims");
    claims.exp += 365 * 86_400;
    let long_lived = old_ring.sign(&claims).expect("sign");
    assert_eq!(
        accounts(&s, &Cred::Bearer(long_lived.clone())).await.0,
        200,
        "valid while its key is live"
    );

    s.clock.advance(Duration::from_secs(1));
    admin::rotate_signing_key(store.as_ref(), &secrets, s.clock.now_ms())
        .await
        .expect("rotate");
    s.state.auth.reload_keys().await.expect("reload");
    s.clock
        .advance(s.config.access_token_ttl + Duration::from_secs(2 * 60 + 1));
    assert_eq!(s.state.auth.retire_keys().await.expect("retire").len(), 1);

    // The real token, long expired, of the retired key: the text the SDKs refresh on.
    let (status, headers, body) = send(s.get(ACCOUNTS).bearer_auth(&old.access_token))
        .await
        .parts();
    assert_eq!((status, body.as_str()), (401, "Jwt is expired"));
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("challenge")
            .contains("invalid_token")
    );
    // ... and the SDK's refresh then works.
    let renewed = s
        .client
        .refresh(old.refresh_token.as_deref().expect("rt"))
        .await
        .expect("refresh");
    assert_eq!(
        accounts(&s, &Cred::Bearer(renewed.access_token)).await.0,
        200
    );
    // Unexpired but of a retired key: refused, never accepted.
    refused(
        &s,
        &Cred::Bearer(long_lived.clone()),
        "retired key, unexpired",
    )
    .await;
    refused(&s, &Cred::XAuth(long_lived), "retired key, as X-Auth-Token").await;
    // A forgery under the retired kid, expired: not "expired".
    let mut parts: Vec<&str> = old.access_token.split('.').collect();
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"1","exp":1}"#);
    parts[1] = &forged_payload;
    refused(
        &s,
        &Cred::Bearer(parts.join(".")),
        "forged under a retired kid",
    )
    .await;
    // The retired key is not published.
    let jwks = s.client.jwks().await.expect("jwks");
    assert_eq!(jwks.keys.len(), 1);

    // After a refresh-token lifetime (and two reloads) nothing signed by it can be refreshed
    // any more: the public key is forgotten and the token is simply unknown.
    s.clock
        .advance(s.config.refresh_token_ttl + Duration::from_secs(2 * 60 + 1));
    s.state.auth.retire_keys().await.expect("retire");
    assert!(
        store
            .retired_signing_keys()
            .await
            .expect("retired")
            .is_empty()
    );
    refused(&s, &Cred::Bearer(old.access_token.clone()), "forgotten key").await;
}
