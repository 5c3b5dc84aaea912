//! Agents (issue 16): in every session answer (direct login, refresh, RingEX exchange) and at
//! `GET …/admin/accounts/{accountId}/agents`, with that endpoint's authorisation; over HTTP
//! against a real server.

use base64::Engine as _;
use cxauth_core::admin::{self, AgentSpec};
use cxauth_core::clock::Clock as _;
use cxauth_testkit::*;
use secrecy::ExposeSecret as _;
use serde_json::Value;

const MAIN: i64 = 10_000_000;
const SALES: i64 = 10_000_001;

fn spec(account_id: i64, username: &str, rc_user_id: Option<i64>) -> AgentSpec {
    AgentSpec {
        account_id,
        username: username.into(),
        first_name: "Ada".into(),
        last_name: username.into(),
        email: Some(format!("{username}@example.com")),
        agent_type: "AGENT".into(),
        rc_user_id,
        agent_group_id: None,
        allow_login_control: true,
        allow_login_updates: false,
    }
}

async fn agent(s: &TestApp, account_id: i64, username: &str, rc_user_id: Option<i64>) -> i64 {
    admin::create_agent(
        s.state.auth.store().as_ref(),
        spec(account_id, username, rc_user_id),
        s.clock.now_ms(),
    )
    .await
    .expect("create agent")
}

async fn sub_account(s: &TestApp, main: i64, name: &str) -> i64 {
    admin::create_sub_account(s.state.auth.store().as_ref(), main, name, 0)
        .await
        .expect("sub-account")
}

fn ids(agents: &Value) -> Vec<(String, i64)> {
    agents
        .as_array()
        .expect("agentDetails is an array")
        .iter()
        .map(|a| {
            (
                a["accountId"].as_str().expect("accountId").to_owned(),
                a["agentId"].as_i64().expect("agentId"),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_session_answer_lists_the_users_agents_ordered_by_account() {
    let s = TestApp::spawn_with(|c| c.ringex_emulator = true).await;
    let support = sub_account(&s, MAIN, "Support").await;
    let other_main = admin::create_main_account(s.state.auth.store().as_ref(), "Other", 0)
        .await
        .expect("main");
    let other_sub = sub_account(&s, other_main, "Elsewhere").await;
    s.create_rc_user("rex", &[SALES], 4242).await;
    // Made out of account order: the answer is ordered by account, then id.
    let in_support = agent(&s, support, "rex-support", Some(4242)).await;
    let in_sales = agent(&s, SALES, "rex-sales", Some(4242)).await;
    agent(&s, SALES, "someone-else", Some(99)).await;
    agent(&s, SALES, "unlinked", None).await;
    // Same RingEX id in another main account: not this user's agent.
    agent(&s, other_sub, "rex-elsewhere", Some(4242)).await;
    let want = vec![
        (SALES.to_string(), in_sales),
        (support.to_string(), in_support),
    ];

    let login = s.login_form("rex", "rex-pw").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login.json();
    assert_eq!(ids(&session["agentDetails"]), want, "{session}");
    let first = &session["agentDetails"][0];
    assert_eq!(first["username"], "rex-sales");
    assert_eq!(first["accountName"], "Default");
    assert_eq!(first["rcUserId"], 4242);
    assert_eq!(first["agentType"], "AGENT");
    assert_eq!(first["email"], "rex-sales@example.com");
    assert_eq!(first["allowLoginControl"], true);
    assert_eq!(first["allowLoginUpdates"], false);
    assert!(first["agentGroupId"].is_null() && first["password"].is_null());
    assert_eq!(session["ssoLogin"], false);
    assert!(session["rcUser"].is_null(), "{session}");

    let refreshed = s
        .refresh_form(session["refreshToken"].as_str().expect("refresh token"))
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(ids(&refreshed.json()["agentDetails"]), want);

    // The RingEX exchange, through the built-in emulator.
    let store = s.state.auth.store().as_ref();
    let (client_id, secret) = admin::create_ringex_app(store, 0).await.expect("app");
    let jwt = admin::create_ringex_jwt(store, "rex", s.clock.now_ms())
        .await
        .expect("jwt");
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{client_id}:{}", secret.expose_secret()));
    let token = send(
        s.post("/restapi/oauth/token")
            .header("authorization", format!("Basic {basic}"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", jwt.expose_secret()),
            ]),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.body);
    let rc_token = token.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let exchanged = send(s.post("/api/auth/login/rc/accesstoken").form(&[
        ("rcAccessToken", rc_token.as_str()),
        ("includeRefresh", "true"),
    ]))
    .await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let sso = exchanged.json();
    assert_eq!(ids(&sso["agentDetails"]), want, "{sso}");
    assert_eq!(sso["ssoLogin"], true);
    assert_eq!(sso["rcUser"]["rcUserId"], 4242, "{sso}");
    let mut rc_keys: Vec<&str> = sso["rcUser"]
        .as_object()
        .expect("rcUser is an object")
        .keys()
        .map(String::as_str)
        .collect();
    rc_keys.sort_unstable();
    assert_eq!(rc_keys, ["email", "firstName", "lastName", "rcUserId"]);
    // "rex" is no e-mail address: no email; the names are the user's.
    assert!(sso["rcUser"]["email"].is_null(), "{sso}");
    assert_eq!(sso["rcUser"]["firstName"], "REX");
    assert_eq!(sso["rcUser"]["lastName"], "Test");
    assert_eq!(sso["adminPasswordReset"], false);
    // The refresh of an exchanged session keeps answering like one.
    let again = s
        .refresh_form(sso["refreshToken"].as_str().expect("refresh token"))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let again = again.json();
    assert_eq!(ids(&again["agentDetails"]), want);
    assert_eq!(again["rcUser"], sso["rcUser"]);

    // A user without a RingEX id has no agents; deleting an agent drops it from the answer.
    assert_eq!(
        s.login_form("admin", ADMIN_PASSWORD).await.json()["agentDetails"],
        serde_json::json!([])
    );
    assert!(admin::delete_agent(store, in_sales).await.expect("delete"));
    let after = s.login_form("rex", "rex-pw").await.json();
    assert_eq!(
        ids(&after["agentDetails"]),
        vec![(support.to_string(), in_support)]
    );
}

#[tokio::test]
async fn the_agents_endpoint_answers_only_accounts_the_caller_may_use() {
    let s = TestApp::spawn().await;
    let support = sub_account(&s, MAIN, "Support").await;
    let other_main = admin::create_main_account(s.state.auth.store().as_ref(), "Other", 0)
        .await
        .expect("main");
    let other_sub = sub_account(&s, other_main, "Elsewhere").await;
    let a1 = agent(&s, SALES, "a1", Some(1)).await;
    let a2 = agent(&s, SALES, "a2", None).await;
    agent(&s, support, "a3", None).await;
    agent(&s, other_sub, "a4", None).await;
    s.create_user("sales-only", Some("admin"), &[SALES], &[])
        .await;
    s.create_user("stranger", None, &[other_sub], &[]).await;
    s.create_user("gone", Some("admin"), &[SALES], &[]).await;

    let admin_session = s.login_admin().await;
    let admin_token = admin_session.access_token.clone();
    for prefix in ["/voice/api/v1", "/api/v1"] {
        let r = s
            .get_bearer(
                &format!("{prefix}/admin/accounts/{SALES}/agents"),
                &admin_token,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let got: Vec<i64> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|a| a["agentId"].as_i64().expect("id"))
            .collect();
        assert_eq!(got, vec![a1, a2], "{v}");
        assert_eq!(v[0]["accountId"], SALES.to_string());
    }

    // Granted only Sales: Support (same main account) is forbidden; another main account's
    // sub-account and unknown ids are not found; a main account id is not a sub-account.
    let sales_only = s.login("sales-only").await.access_token;
    let status = |path: String, token: String| {
        let s = &s;
        async move { s.get_bearer(&path, &token).await }
    };
    let r = status(
        format!("/voice/api/v1/admin/accounts/{SALES}/agents"),
        sales_only.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = status(
        format!("/voice/api/v1/admin/accounts/{support}/agents"),
        sales_only.clone(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["errorCode"], "access.denied.exception");
    for id in [other_sub, 99_990_001, MAIN + 9_999] {
        let r = status(
            format!("/voice/api/v1/admin/accounts/{id}/agents"),
            sales_only.clone(),
        )
        .await;
        assert_eq!(r.status, 404, "{id}: {}", r.body);
    }
    let r = status(
        format!("/voice/api/v1/admin/accounts/{MAIN}/agents"),
        sales_only.clone(),
    )
    .await;
    assert_eq!(
        r.status, 403,
        "the caller's own main account, not usable as such: {}",
        r.body
    );
    // The other tenant sees its own and not ours (404, not 403: ours are not revealed).
    let stranger = s.login("stranger").await.access_token;
    let r = status(
        format!("/voice/api/v1/admin/accounts/{other_sub}/agents"),
        stranger.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = status(
        format!("/voice/api/v1/admin/accounts/{SALES}/agents"),
        stranger,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // Malformed ids are a 400; no credential a 401.
    for bad in ["~", "abc", "-1", "0", "1e3", "%F0%28"] {
        let r = status(
            format!("/voice/api/v1/admin/accounts/{bad}/agents"),
            admin_token.clone(),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let r = send(s.get(&format!("/voice/api/v1/admin/accounts/{SALES}/agents"))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // A disabled user's credentials are refused here too.
    let gone = s.login("gone").await.access_token;
    admin::set_enabled(
        s.state.auth.store().as_ref(),
        "gone",
        false,
        s.clock.now_ms(),
    )
    .await
    .expect("disable");
    let r = status(format!("/voice/api/v1/admin/accounts/{SALES}/agents"), gone).await;
    assert_eq!(r.status, 401, "{}", r.body);
}
