//! The authorisation matrix: every admin endpoint, under both prefixes, against every kind of
//! credential, with the exact status and body the contract gives.

use cxauth_testkit::*;
use reqwest::Method;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Create,
    List,
    DeleteVictimToken,
    Accounts,
    Users,
}

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::Create,
    Endpoint::List,
    Endpoint::DeleteVictimToken,
    Endpoint::Accounts,
    Endpoint::Users,
];

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Plain401(&'static str),
    Json(u16, &'static str),
}

/// What each endpoint must answer for one kind of credential.
type Expectation = Box<dyn Fn(Endpoint) -> Want>;

enum Header {
    None,
    Bearer(String),
    XAuth(String),
}

async fn call(
    s: &TestApp,
    prefix: &str,
    e: Endpoint,
    h: &Header,
    victim_token: &str,
) -> (u16, String, String) {
    let (method, path) = match e {
        Endpoint::Create => (Method::POST, "/admin/token".to_owned()),
        Endpoint::List => (Method::GET, "/admin/token".to_owned()),
        Endpoint::DeleteVictimToken => (
            Method::DELETE,
            format!("/admin/token/{}", victim_token.replace(':', "%3A")),
        ),
        Endpoint::Accounts => (Method::GET, "/admin/accounts".to_owned()),
        Endpoint::Users => (Method::GET, "/admin/users".to_owned()),
    };
    let mut req = http()
        .request(method, s.url(&format!("{prefix}{path}")))
        .header("content-type", "application/json");
    req = match h {
        Header::None => req,
        Header::Bearer(t) => req.bearer_auth(t),
        Header::XAuth(t) => req.header("x-auth-token", t),
    };
    let (st, headers, body) = send(req).await.parts();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (st, ct, body)
}

fn check(case: &str, e: Endpoint, want: Want, (st, ct, body): (u16, String, String)) {
    let ctx = format!("{case} / {e:?}: got {st} {body}");
    match want {
        Want::Ok => {
            assert_eq!(st, 200, "{ctx}");
            match e {
                Endpoint::Create => {
                    assert!(cxauth_proto::ApiToken::parse(&body).is_some(), "{ctx}")
                }
                Endpoint::DeleteVictimToken => assert_eq!(body, "true", "{ctx}"),
                _ => assert!(
                    serde_json::from_str::<serde_json::Value>(&body)
                        .expect("json")
                        .is_array(),
                    "{ctx}"
                ),
            }
        }
        Want::Plain401(text) => {
            assert_eq!(st, 401, "{ctx}");
            assert_eq!(body, text, "{ctx}");
            assert!(ct.starts_with("text/plain"), "{ctx}");
        }
        Want::Json(status, code) => {
            assert_eq!(st, status, "{ctx}");
            assert_eq!(ct, "application/json", "{ctx}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["errorCode"], code, "{ctx}");
        }
    }
}

#[tokio::test]
async fn every_endpoint_against_every_kind_of_credential() {
    let s = TestApp::spawn().await;
    // admin ─ manager (MANAGE_USERS) ─ victim;  admin ─ stranger;  admin ─ disabled
    s.create_user("manager", Some("admin"), &[], &["MANAGE_USERS"])
        .await;
    s.create_user("victim", Some("manager"), &[], &[]).await;
    s.create_user("stranger", Some("admin"), &[], &[]).await;
    s.create_user("disabled", Some("admin"), &[], &["SUPER_USER"])
        .await;

    let manager = s.login("manager").await;
    let victim = s.login("victim").await;
    let stranger = s.login("stranger").await;
    let stranger_api = s
        .client
        .create_api_token(&bearer(&stranger))
        .await
        .expect("token");
    let manager_api = s
        .client
        .create_api_token(&bearer(&manager))
        .await
        .expect("token");
    let victim_api = s
        .client
        .create_api_token(&bearer(&victim))
        .await
        .expect("token");
    let deleted_api = s
        .client
        .create_api_token(&bearer(&stranger))
        .await
        .expect("token");
    s.client
        .delete_api_token(&bearer(&stranger), &deleted_api)
        .await
        .expect("delete");
    let logged_out = s.login("stranger").await;
    s.client
        .logout(logged_out.refresh_token.as_deref().expect("rt"))
        .await
        .expect("logout");
    let disabled = s.login("disabled").await;
    let disabled_api = s
        .client
        .create_api_token(&bearer(&disabled))
        .await
        .expect("token");
    // Legacy portal auth tokens (their sliding expiry is tested in legacy.rs).
    let legacy = |user: &'static str| {
        let auth = s.state.auth.clone();
        async move {
            let pw = secrecy::SecretString::from(format!("{user}-pw"));
            let ip =
                cxauth_core::audit::AuditContext::http("127.0.0.1".parse().expect("ip"), "authz");
            auth.legacy_login(user, pw, false, &ip)
                .await
                .expect("legacy login")
                .0
        }
    };
    let manager_legacy = legacy("manager").await;
    let disabled_legacy = legacy("disabled").await;
    cxauth_core::admin::set_enabled(s.state.auth.store().as_ref(), "disabled", false, 0)
        .await
        .expect("disable");
    let forged = {
        let mut parts: Vec<String> = manager.access_token.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };

    let missing = Want::Plain401("Jwt is missing");
    let fails = Want::Plain401("Jwt verification fails");
    let forbidden = Want::Json(403, "access.denied.exception");
    let not_found = Want::Json(404, "not.found");
    let all = |w: Want| -> Expectation { Box::new(move |_| w) };
    let cases: Vec<(&str, Header, Expectation)> = vec![
        ("no credential", Header::None, all(missing)),
        ("empty bearer", Header::Bearer(String::new()), all(missing)),
        (
            "garbage bearer",
            Header::Bearer("garbage".into()),
            all(fails),
        ),
        (
            "garbage X-Auth-Token",
            Header::XAuth("garbage".into()),
            all(fails),
        ),
        (
            "forged signature",
            Header::Bearer(forged.clone()),
            all(fails),
        ),
        (
            "API token as bearer",
            Header::Bearer(stranger_api.clone()),
            all(fails),
        ),
        (
            "revoked session",
            Header::Bearer(logged_out.access_token.clone()),
            all(fails),
        ),
        (
            "deleted API token",
            Header::XAuth(deleted_api.clone()),
            all(fails),
        ),
        (
            "disabled user's access token",
            Header::Bearer(disabled.access_token.clone()),
            all(fails),
        ),
        (
            "disabled user's API token",
            Header::XAuth(disabled_api.clone()),
            all(fails),
        ),
        (
            "disabled user's legacy auth token",
            Header::XAuth(disabled_legacy.clone()),
            all(fails),
        ),
        (
            "a stranger's access token",
            Header::Bearer(stranger.access_token.clone()),
            Box::new(move |e| match e {
                Endpoint::DeleteVictimToken => not_found,
                Endpoint::Users => forbidden,
                _ => Want::Ok,
            }),
        ),
        (
            "a stranger's API token",
            Header::XAuth(stranger_api.clone()),
            Box::new(move |e| match e {
                Endpoint::DeleteVictimToken => not_found,
                Endpoint::Users => forbidden,
                _ => Want::Ok,
            }),
        ),
        (
            "an ancestor's access token",
            Header::Bearer(manager.access_token.clone()),
            all(Want::Ok),
        ),
        (
            "an ancestor's API token",
            Header::XAuth(manager_api.clone()),
            all(Want::Ok),
        ),
        (
            "an ancestor's legacy auth token",
            Header::XAuth(manager_legacy.clone()),
            all(Want::Ok),
        ),
        (
            "a legacy auth token as bearer",
            Header::Bearer(manager_legacy.clone()),
            all(fails),
        ),
        (
            "an unknown legacy-shaped token",
            Header::XAuth("0b5e4f3c-1d2a-4b6c-8e9f-0a1b2c3d4e5f".into()),
            all(fails),
        ),
        (
            "the owner's access token as X-Auth-Token",
            Header::XAuth(victim.access_token.clone()),
            Box::new(move |e| {
                if e == Endpoint::Users {
                    forbidden
                } else {
                    Want::Ok
                }
            }),
        ),
    ];

    let mut checked = 0;
    for prefix in ["/voice/api/v1", "/api/v1"] {
        for (name, header, expect) in &cases {
            for e in ENDPOINTS {
                // Each deletion needs a live victim token to aim at.
                let target = if e == Endpoint::DeleteVictimToken {
                    s.client
                        .create_api_token(&bearer(&victim))
                        .await
                        .expect("victim token")
                } else {
                    victim_api.clone()
                };
                check(
                    name,
                    e,
                    expect(e),
                    call(&s, prefix, e, header, &target).await,
                );
                checked += 1;
            }
        }
    }
    // The owner deletes with the very token being deleted.
    let res = call(
        &s,
        "/voice/api/v1",
        Endpoint::DeleteVictimToken,
        &Header::XAuth(victim_api.clone()),
        &victim_api,
    )
    .await;
    check(
        "the owner's own API token",
        Endpoint::DeleteVictimToken,
        Want::Ok,
        res,
    );

    // Finally an expired access token, on every endpoint: the only body that says "expired".
    s.clock.advance(Duration::from_secs(301));
    for e in ENDPOINTS {
        let res = call(
            &s,
            "/api/v1",
            e,
            &Header::Bearer(manager.access_token.clone()),
            &manager_api,
        )
        .await;
        check(
            "expired access token",
            e,
            Want::Plain401("Jwt is expired"),
            res,
        );
        let res = call(
            &s,
            "/voice/api/v1",
            e,
            &Header::XAuth(manager.access_token.clone()),
            &manager_api,
        )
        .await;
        check(
            "expired access token as X-Auth-Token",
            e,
            Want::Plain401("Jwt is expired"),
            res,
        );
        checked += 2;
    }
    eprintln!("authorisation matrix: {checked} requests checked");
}
