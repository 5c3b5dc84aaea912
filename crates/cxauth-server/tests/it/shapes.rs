//! The shapes RingCX clients read, pinned field by field (issue 16): every JSON object the
//! contract answers, with the exact set of its keys and the kind of each value, so that a field
//! added, renamed or dropped is seen here first. The reasons for each field's value are in
//! docs/wire-contract.md ("Shapes, field by field").

use cxauth_core::admin::{self, AgentSpec};
use cxauth_core::clock::Clock as _;
use cxauth_testkit::*;
use serde_json::Value;

/// What a value must be: the JSON kind, or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    Null,
    Arr,
    Obj,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::String(_) => Kind::Str,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(_) => panic!("a non-integer number: {v}"),
        Value::Bool(_) => Kind::Bool,
        Value::Null => Kind::Null,
        Value::Array(_) => Kind::Arr,
        Value::Object(_) => Kind::Obj,
    }
}

/// Asserts `v` is an object with exactly the keys of `shape`, each of its kind.
fn pinned(what: &str, v: &Value, shape: &[(&str, Kind)]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = shape.iter().map(|(k, _)| *k).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{what}: the keys changed: {v}");
    for (k, kd) in shape {
        assert_eq!(kind(&obj[*k]), *kd, "{what}.{k}: {v}");
    }
}

use Kind::*;

const SESSION: [(&str, Kind); 13] = [
    ("accessToken", Str),
    ("refreshToken", Str),
    ("tokenType", Str),
    ("expiresIn", Int),
    ("platformId", Str),
    ("mainAccountId", Str),
    ("adminId", Int),
    ("adminUrl", Str),
    ("agentUrl", Str),
    ("agentDetails", Arr),
    ("ssoLogin", Bool),
    ("rcUser", Null),
    ("adminPasswordReset", Bool),
];

const AGENT: [(&str, Kind); 25] = [
    ("agentId", Int),
    ("firstName", Str),
    ("lastName", Str),
    ("email", Str),
    ("username", Str),
    ("agentType", Str),
    ("rcUserId", Int),
    ("accountId", Str),
    ("accountName", Str),
    ("agentGroupId", Null),
    ("allowLoginControl", Bool),
    ("allowLoginUpdates", Bool),
    ("agentRank", Null),
    ("altDefaultLoginDest", Null),
    ("directAgentExtension", Null),
    ("enableSoftphone", Null),
    ("externalAgentId", Null),
    ("ghostRnaAction", Null),
    ("initLoginBaseState", Null),
    ("location", Null),
    ("manualOutboundDefaultCallerId", Null),
    ("maxChats", Null),
    ("password", Null),
    ("phoneLoginPin", Null),
    ("team", Null),
];

const ACCOUNT: [(&str, Kind); 7] = [
    ("accountId", Str),
    ("accountName", Str),
    ("mainAccountId", Str),
    ("mainAccountName", Str),
    ("mainAccount", Obj),
    ("rcAccountId", Str),
    ("rcAccountAccess", Str),
];

const MAIN_ACCOUNT: [(&str, Kind); 5] = [
    ("mainAccountId", Str),
    ("mainAccountName", Str),
    ("isActive", Bool),
    ("rcAccountId", Str),
    ("engageAccountId", Null),
];

const USER: [(&str, Kind); 14] = [
    ("userId", Int),
    ("userName", Str),
    ("firstName", Str),
    ("lastName", Str),
    ("fullName", Str),
    ("enabled", Bool),
    ("rootUser", Bool),
    ("parentPath", Str),
    ("roles", Arr),
    ("creationDate", Str),
    ("children", Arr),
    ("rcUserId", Int),
    ("rcAccountId", Str),
    ("userManagedByRC", Bool),
];

/// `shape` with the kinds of some keys replaced.
fn with(
    shape: &[(&'static str, Kind)],
    changes: &[(&'static str, Kind)],
) -> Vec<(&'static str, Kind)> {
    shape
        .iter()
        .map(|(k, kd)| {
            let kd = changes
                .iter()
                .find(|(c, _)| c == k)
                .map_or(*kd, |(_, c)| *c);
            (*k, kd)
        })
        .collect()
}

#[tokio::test]
async fn every_answer_has_the_fields_real_clients_read() {
    let s = TestApp::spawn().await;
    let store = s.state.auth.store().as_ref();
    admin::link_rc_account(store, 10_000_000, Some("37439510"))
        .await
        .expect("link");
    s.user("rex@example.com")
        .parent("admin")
        .grants(&[10_000_001])
        .rc_user_id(4242)
        .create()
        .await;
    admin::create_agent(
        store,
        AgentSpec {
            account_id: 10_000_001,
            username: "rex-agent".into(),
            first_name: "Rex".into(),
            last_name: "Agent".into(),
            email: Some("rex@example.com".into()),
            agent_type: "agent".into(),
            rc_user_id: Some(4242),
            agent_group_id: None,
            allow_login_control: true,
            allow_login_updates: true,
        },
        s.clock.now_ms(),
    )
    .await
    .expect("agent");

    // The session answer; its agents; a user without agents has an empty array.
    let session = s
        .login_form("rex@example.com", "rex@example.com-pw")
        .await
        .json();
    pinned("Session", &session, &SESSION);
    pinned(
        "Session.agentDetails[0]",
        &session["agentDetails"][0],
        &AGENT,
    );
    assert_eq!(session["agentDetails"].as_array().map(Vec::len), Some(1));
    let refreshed = s
        .refresh_form(session["refreshToken"].as_str().expect("refresh token"))
        .await
        .json();
    pinned("Session (refresh)", &refreshed, &SESSION);
    let admin_session = s.login_admin_form().await.json();
    pinned("Session (admin)", &admin_session, &SESSION);
    assert_eq!(admin_session["agentDetails"], serde_json::json!([]));
    let token = admin_session["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();

    // Accounts: linked to a RingEX account, and (after unlinking) not.
    let accounts = s
        .get_bearer("/voice/api/v1/admin/accounts", &token)
        .await
        .json();
    pinned("Account", &accounts[0], &ACCOUNT);
    pinned(
        "Account.mainAccount",
        &accounts[0]["mainAccount"],
        &MAIN_ACCOUNT,
    );
    assert_eq!(accounts[0]["rcAccountId"], "37439510");
    assert_eq!(accounts[0]["mainAccount"]["rcAccountId"], "37439510");
    assert_eq!(accounts[0]["rcAccountAccess"], "ENABLED");
    admin::link_rc_account(store, 10_000_000, None)
        .await
        .expect("unlink");
    let accounts = s
        .get_bearer("/voice/api/v1/admin/accounts", &token)
        .await
        .json();
    pinned(
        "Account (unlinked)",
        &accounts[0],
        &with(&ACCOUNT, &[("rcAccountId", Null)]),
    );
    pinned(
        "Account.mainAccount (unlinked)",
        &accounts[0]["mainAccount"],
        &with(&MAIN_ACCOUNT, &[("rcAccountId", Null)]),
    );
    assert_eq!(accounts[0]["rcAccountAccess"], "DISABLED");

    // Users: the admin (no RingEX id) and rex (one); nested and flat lists alike.
    admin::link_rc_account(store, 10_000_000, Some("37439510"))
        .await
        .expect("link again");
    let users = s
        .get_bearer("/voice/api/v1/admin/users?flatten=true", &token)
        .await
        .json();
    pinned(
        "User (admin)",
        &users[0],
        &with(&USER, &[("rcUserId", Null)]),
    );
    pinned("User (rex)", &users[1], &USER);
    assert_eq!(users[1]["rcUserId"], 4242);
    assert_eq!(users[1]["rcAccountId"], "37439510");
    assert_eq!(users[1]["userManagedByRC"], false);
    let tree = s
        .get_bearer("/voice/api/v1/admin/users", &token)
        .await
        .json();
    pinned("User (tree)", &tree[0], &with(&USER, &[("rcUserId", Null)]));
    pinned("User (child)", &tree[0]["children"][0], &USER);

    // The agents endpoint answers the same AgentV2 shape as agentDetails.
    let agents = s
        .get_bearer("/voice/api/v1/admin/accounts/10000001/agents", &token)
        .await
        .json();
    pinned("Agent", &agents[0], &AGENT);
    assert_eq!(agents[0], session["agentDetails"][0]);

    // The legacy login's user is a User row too.
    let legacy = send(s.post("/api/v1/auth/login").form(&[
        ("username", "rex@example.com"),
        ("password", "rex@example.com-pw"),
    ]))
    .await;
    assert_eq!(legacy.status, 200, "{}", legacy.body);
    pinned("LegacyLogin.user", &legacy.json()["user"], &USER);
}
