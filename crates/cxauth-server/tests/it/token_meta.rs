//! API token metadata on cxauth's own endpoints (`/cxauth/v1/api-tokens`): names, expiry, the
//! last use written in batches, ids that reveal nothing of other users, hostile bodies; and the
//! RingCX `…/admin/token` endpoints answering exactly as before.

use cxauth_core::clock::Clock as _;
use cxauth_core::service::FlushPace;
use cxauth_proto::ApiToken;
use cxauth_testkit::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const TOKENS: &str = "/cxauth/v1/api-tokens";
const MAIN: i64 = 10_000_000;

/// `METHOD path` with `X-Auth-Token: cred` (any credential the header takes) and a JSON body.
async fn call(app: &TestApp, method: Method, path: &str, cred: &str, body: Option<Value>) -> Reply {
    let mut req = app.request(method, path).header("x-auth-token", cred);
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.send(req).await
}

/// Creates a token on the own endpoint, asserting 201; its answer.
async fn create(app: &TestApp, cred: &str, body: Value) -> Value {
    let r = call(app, Method::POST, TOKENS, cred, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");
    r.json()
}

/// The own list, asserting 200.
async fn details(app: &TestApp, cred: &str) -> Vec<Value> {
    let r = call(app, Method::GET, TOKENS, cred, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");
    r.json().as_array().expect("array").clone()
}

fn rfc3339_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("ms")
}

fn access(s: &cxauth_client::Session) -> String {
    s.access_token.clone()
}

/// `(status, body)` of an API-token-authenticated request to an admin endpoint, minus the parts
/// that differ per request, to compare a refusal with another.
async fn refusal(app: &TestApp, token: &str) -> (u16, String, String) {
    let r = app.get_x_auth("/voice/api/v1/admin/accounts", token).await;
    let ct = r.header("content-type").to_owned();
    (r.status, ct, r.body)
}

/// Waits until the credential cache has applied every change in the log, so that its follower
/// forgets nothing more until the next write. Otherwise the follower may apply a change this
/// test made (a token deleted: already applied in process, then announced by PostgreSQL or
/// found by the follower's first read) right after a request filled the cache, and a count of
/// entries would race it.
async fn settled(app: &TestApp) {
    let cache = app.state.auth.credential_cache();
    cache.read_log_now();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let newest = app
            .state
            .auth
            .store()
            .latest_credential_change()
            .await
            .expect("the change log");
        if cache.applied_through() >= newest {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache applied changes through {} of {newest} within 10 s",
            cache.applied_through()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// 64 requests with `token` at once, each on its own task; their statuses.
async fn burst(app: &TestApp, token: &str) -> Vec<u16> {
    let url = app.url("/voice/api/v1/admin/accounts");
    let client = http();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let req = client.get(&url).header("x-auth-token", token);
        set.spawn(async move { req.send().await.map_or(0, |r| r.status().as_u16()) });
    }
    set.join_all().await
}

#[tokio::test]
async fn create_list_rename_delete_and_the_ringcx_shapes_stay() {
    let app = TestApp::spawn().await;
    let admin = access(&app.login_admin().await);
    let before = app.clock.now_ms();

    // The RingCX POST: bare text, no name, no expiry.
    let r = app
        .send(
            app.post("/voice/api/v1/admin/token")
                .bearer_auth(&admin)
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/plain"));
    let ringcx = r.body.clone();
    assert!(ApiToken::parse(&ringcx).is_some(), "{ringcx}");

    let plain = create(&app, &admin, json!({})).await;
    let token = plain["token"].as_str().expect("token").to_owned();
    assert!(ApiToken::parse(&token).is_some());
    assert_eq!(plain["name"], Value::Null);
    assert_eq!(plain["expiresAt"], Value::Null);
    assert_eq!(plain["lastUsedAt"], Value::Null);
    assert_eq!(
        plain["hint"],
        format!("\u{2026}{}", &token[token.len() - 4..])
    );
    assert_eq!(rfc3339_ms(&plain["createdAt"]) / 1000, before / 1000);

    let named = create(
        &app,
        &admin,
        json!({"name": "  ci deploy ", "expiresIn": 3600}),
    )
    .await;
    assert_eq!(named["name"], "ci deploy", "trimmed");
    assert_eq!(
        rfc3339_ms(&named["expiresAt"]) - rfc3339_ms(&named["createdAt"]),
        3_600_000
    );
    let named_token = named["token"].as_str().expect("token").to_owned();
    // The new token works at once, as X-Auth-Token.
    assert_eq!(refusal(&app, &named_token).await.0, 200);

    // The own list: details and hints, never a whole token.
    let list = call(&app, Method::GET, TOKENS, &admin, None).await;
    for t in [&ringcx, &token, &named_token] {
        assert!(
            !list.body.contains(t.as_str()),
            "a whole token listed: {}",
            list.body
        );
    }
    let list = list.json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 3);
    for t in list {
        let keys: Vec<&str> = t
            .as_object()
            .expect("obj")
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["createdAt", "expiresAt", "hint", "id", "lastUsedAt", "name"]
        );
    }
    let ringcx_row = list
        .iter()
        .find(|t| t["hint"] == format!("\u{2026}{}", &ringcx[ringcx.len() - 4..]))
        .expect("the RingCX token is listed");
    assert_eq!(ringcx_row["name"], Value::Null);
    assert_eq!(ringcx_row["expiresAt"], Value::Null);

    // The RingCX list: still a JSON array of the token strings, oldest first.
    let r = app
        .send(app.get("/api/v1/admin/token").bearer_auth(&admin))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([ringcx, token, named_token]));

    // Rename, clear, by id.
    let id = named["id"].as_i64().expect("id");
    let path = format!("{TOKENS}/{id}");
    let r = call(
        &app,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"name": "Grüße 日本"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["name"], "Grüße 日本");
    assert_eq!(r.json()["hint"], named["hint"]);
    assert!(!r.body.contains(&named_token));
    let r = call(
        &app,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"name": null})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["name"], Value::Null);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) FROM audit_events WHERE event = 'api_token.rename'")
            .await,
        2
    );

    // Delete by id: gone everywhere, refused like any deleted token, and a second delete is 404.
    let r = call(&app, Method::DELETE, &path, &admin, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(refusal(&app, &named_token).await.0, 401);
    let r = call(&app, Method::DELETE, &path, &admin, None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["errorCode"], "not.found");
    let tokens = app
        .client
        .list_api_tokens(&bearer_str(&admin))
        .await
        .expect("list");
    assert_eq!(tokens, vec![ringcx.clone(), token.clone()]);
    assert_eq!(details(&app, &admin).await.len(), 2);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) FROM audit_events WHERE event = 'api_token.delete'")
            .await,
        1
    );

    // An API token may manage tokens on the own endpoints too, itself included.
    let own = details(&app, &token).await;
    assert_eq!(own.len(), 2);
    let me = own
        .iter()
        .find(|t| t["hint"] == plain["hint"])
        .expect("listed");
    let r = call(
        &app,
        Method::DELETE,
        &format!("{TOKENS}/{}", me["id"]),
        &token,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(refusal(&app, &token).await.0, 401);
}

fn bearer_str(t: &str) -> cxauth_client::Credential {
    cxauth_client::Credential::Bearer(t.to_owned())
}

#[tokio::test]
async fn hostile_bodies_and_ids_are_clear_4xx_and_write_nothing() {
    let app = TestApp::spawn().await;
    let admin = access(&app.login_admin().await);
    let max = 2 * 365 * 24 * 3600_u64;
    let bad_bodies = [
        json!({"name": "x".repeat(101)}),
        json!({"name": "é".repeat(101)}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "a\u{0}b"}),
        json!({"name": "line\nbreak"}),
        json!({"name": "evil\u{202E}gpj.exe"}),
        json!({"name": "zero\u{200B}width"}),
        json!({"name": 5}),
        json!({"name": ["x"]}),
        json!({"name": {"a": 1}}),
        json!({"expiresIn": -1}),
        json!({"expiresIn": 0}),
        json!({"expiresIn": 59}),
        json!({"expiresIn": max + 1}),
        json!({"expiresIn": u64::MAX}),
        json!({"expiresIn": 1e30}),
        json!({"expiresIn": 3600.5}),
        json!({"expiresIn": "3600"}),
        json!({"expiresIn": true}),
        json!({"expiresAt": "2030-01-01T00:00:00Z"}),
        json!({"name": "ok", "token": "aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"}),
        json!([]),
        json!("name"),
        json!(null),
    ];
    for body in &bad_bodies {
        let r = call(&app, Method::POST, TOKENS, &admin, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.header("content-type"), "application/json");
        let v = r.json();
        assert_eq!(v["errorCode"], "bad.request", "{body}");
        let details = v["details"].as_str().expect("details");
        assert!(
            ["name", "expiresIn", "field", "body"]
                .iter()
                .any(|w| details.contains(w)),
            "{body}: the message names what is wrong: {details}"
        );
    }
    for raw in ["{", "{\"name\":", "\u{0}", "name=x"] {
        let r = app
            .send(
                app.post(TOKENS)
                    .header("x-auth-token", &admin)
                    .header("content-type", "application/json")
                    .body(raw),
            )
            .await;
        assert_eq!(r.status, 400, "{raw:?}: {}", r.body);
    }
    let huge = app
        .send(
            app.post(TOKENS)
                .header("x-auth-token", &admin)
                .body(format!("{{\"name\":\"{}\"}}", "x".repeat(4 << 20))),
        )
        .await;
    assert!(matches!(huge.status, 400 | 413), "{}", huge.status);
    assert_eq!(app.db.count("SELECT COUNT(*) FROM api_tokens").await, 0);

    // The limits themselves are accepted.
    let edge = create(
        &app,
        &admin,
        json!({"name": "y".repeat(100), "expiresIn": max}),
    )
    .await;
    create(&app, &admin, json!({"name": null, "expiresIn": 60})).await;
    create(&app, &admin, json!({"name": "日本".repeat(50)})).await;
    let id = edge["id"].as_i64().expect("id");

    // Bad ids are 404, whatever their shape; a bad rename body on a good id is 400.
    for bad in [
        "0",
        "-1",
        "abc",
        "1.5",
        "+1",
        &format!("0{id}"),
        "99999999999999999999",
        "%00",
        "1%2F2",
    ] {
        for method in [Method::PATCH, Method::DELETE] {
            let r = call(
                &app,
                method.clone(),
                &format!("{TOKENS}/{bad}"),
                &admin,
                Some(json!({"name": "n"})),
            )
            .await;
            assert_eq!(r.status, 404, "{method} {bad}: {}", r.body);
        }
    }
    let path = format!("{TOKENS}/{id}");
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": 1}),
        json!({"nom": "x"}),
        json!([]),
    ] {
        let r = call(&app, Method::PATCH, &path, &admin, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    assert_eq!(details(&app, &admin).await.len(), 3);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) FROM api_tokens WHERE name IS NOT NULL")
            .await,
        2,
        "no rename was half-written"
    );
    // Without a credential, or with a bad one: the admin endpoints' 401.
    for cred in ["", "nope", "aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"] {
        let mut req = app.get(TOKENS);
        if !cred.is_empty() {
            req = req.header("x-auth-token", cred);
        }
        assert_eq!(app.send(req).await.status, 401, "{cred}");
    }
}

#[tokio::test]
async fn another_users_ids_are_404_and_an_ancestor_may_manage_a_descendants_tokens() {
    let app = TestApp::spawn().await;
    app.user("alice").grants(&[MAIN]).create().await;
    app.user("bob").parent("alice").create().await;
    app.user("carol").grants(&[MAIN]).create().await;
    let alice = access(&app.login("alice").await);
    let bob = access(&app.login("bob").await);
    let carol = access(&app.login("carol").await);
    let bobs = create(&app, &bob, json!({"name": "bob's"})).await;
    let alices = create(&app, &alice, json!({"name": "alice's"})).await;
    let bob_path = format!("{TOKENS}/{}", bobs["id"]);
    let alice_path = format!("{TOKENS}/{}", alices["id"]);
    let bob_token = bobs["token"].as_str().expect("token").to_owned();

    // A stranger and a descendant see a 404, exactly like an id of nobody's token.
    let nobody = call(
        &app,
        Method::DELETE,
        &format!("{TOKENS}/999999"),
        &carol,
        None,
    )
    .await;
    for (cred, path) in [
        (&carol, &bob_path),
        (&bob, &alice_path),
        (&carol, &alice_path),
    ] {
        for method in [Method::PATCH, Method::DELETE] {
            let r = call(
                &app,
                method.clone(),
                path,
                cred,
                Some(json!({"name": "mine"})),
            )
            .await;
            assert_eq!(r.status, 404, "{method} {path}");
            assert_eq!(r.json()["errorCode"], nobody.json()["errorCode"]);
            assert_eq!(r.json()["details"], nobody.json()["details"]);
        }
    }
    assert_eq!(refusal(&app, &bob_token).await.0, 200, "untouched");
    assert_eq!(details(&app, &bob).await[0]["name"], "bob's");
    // Each lists only its own.
    assert_eq!(details(&app, &alice).await.len(), 1);
    assert_eq!(details(&app, &carol).await.len(), 0);

    // The ancestor may rename and delete a descendant's token, as the RingCX delete allows.
    let r = call(
        &app,
        Method::PATCH,
        &bob_path,
        &alice,
        Some(json!({"name": "by alice"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(details(&app, &bob).await[0]["name"], "by alice");
    let r = call(&app, Method::DELETE, &bob_path, &alice, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(refusal(&app, &bob_token).await.0, 401);
}

/// An expiring token is accepted until its expiry and then refused exactly like a deleted one,
/// on every path that takes API tokens, with the credential cache on and off; it vanishes from
/// both lists and stops counting against the cap.
#[tokio::test]
async fn an_expired_token_is_refused_like_a_deleted_one_with_the_cache_on_and_off() {
    for staleness in [Duration::from_secs(60), Duration::ZERO] {
        let app = TestApp::spawn_with(|c| {
            c.credential_cache_staleness = staleness;
            c.api_token_cap = 3;
        })
        .await;
        let cache = app.state.auth.credential_cache().clone();
        assert_eq!(cache.enabled(), !staleness.is_zero());
        let admin = access(&app.login_admin().await);
        let deleted = create(&app, &admin, json!({})).await;
        let deleted_token = deleted["token"].as_str().expect("t").to_owned();
        app.client
            .delete_api_token(&bearer_str(&admin), &deleted_token)
            .await
            .expect("delete");
        let gone = refusal(&app, &deleted_token).await;
        assert_eq!(gone.0, 401);

        let expiring = create(&app, &admin, json!({"name": "short", "expiresIn": 60})).await;
        let token = expiring["token"].as_str().expect("t").to_owned();
        let id = expiring["id"].as_i64().expect("id");
        if cache.enabled() {
            settled(&app).await;
        }
        let held_before = cache.len();
        assert_eq!(refusal(&app, &token).await.0, 200);
        if cache.enabled() {
            assert!(cache.len() > held_before, "the token is now cached");
        }
        app.clock.advance(Duration::from_millis(59_999));
        assert_eq!(
            refusal(&app, &token).await.0,
            200,
            "still before its expiry"
        );
        let held = cache.len();
        app.clock.advance(Duration::from_millis(1));

        // Refused like the deleted token, on every path that takes API tokens.
        assert_eq!(refusal(&app, &token).await, gone, "cache {staleness:?}");
        if cache.enabled() {
            assert_eq!(
                cache.len(),
                held,
                "refused from the cache, nothing forgotten"
            );
        }
        for (method, path) in [
            (Method::GET, "/voice/api/v1/admin/token"),
            (Method::POST, "/api/v1/admin/token"),
            (Method::GET, "/api/v1/admin/users"),
            (Method::GET, TOKENS),
            (Method::POST, TOKENS),
        ] {
            let r = call(&app, method.clone(), path, &token, None).await;
            assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
            let d = call(&app, method.clone(), path, &deleted_token, None).await;
            assert_eq!(r.body, d.body, "{method} {path}");
        }
        // Its own RingCX delete and its id: not found, like a deleted one.
        let r = call(
            &app,
            Method::DELETE,
            &format!("/api/v1/admin/token/{}", token.replace(':', "%3A")),
            &token,
            None,
        )
        .await;
        assert_eq!(r.status, 401);
        let r = app
            .send(
                app.delete(&format!(
                    "/api/v1/admin/token/{}",
                    token.replace(':', "%3A")
                ))
                .bearer_auth(&admin),
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.body);
        let r = call(
            &app,
            Method::PATCH,
            &format!("{TOKENS}/{id}"),
            &admin,
            Some(json!({"name": "x"})),
        )
        .await;
        assert_eq!(r.status, 404);
        // A bearer header never takes an API token, expired or not.
        let r = app.get_bearer("/voice/api/v1/admin/accounts", &token).await;
        assert_eq!(r.status, 401);
        // Listed nowhere.
        assert!(details(&app, &admin).await.is_empty());
        let tokens = app
            .client
            .list_api_tokens(&bearer_str(&admin))
            .await
            .expect("list");
        assert!(tokens.is_empty(), "{tokens:?}");

        // Not counted against the cap (3): three more fit, and the expired row is deleted
        // (with a change-log row) by the next creation.
        let changes = app
            .db
            .count("SELECT COUNT(*) FROM credential_changes")
            .await;
        for _ in 0..3 {
            create(&app, &admin, json!({})).await;
        }
        let r = call(&app, Method::POST, TOKENS, &admin, Some(json!({}))).await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(app.db.count("SELECT COUNT(*) FROM api_tokens").await, 3);
        assert!(
            app.db
                .count("SELECT COUNT(*) FROM credential_changes")
                .await
                > changes
        );
    }
}

/// Many parallel requests with one token at one instant note one use; nothing is written on the
/// request path; the flush writes it once and the list shows it; ordering is by last use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uses_record_one_last_use_written_by_the_flush() {
    let app = TestApp::spawn_with(|c| c.credential_cache_staleness = Duration::from_secs(60)).await;
    let admin = access(&app.login_admin().await);
    let auth = app.state.auth.clone();
    // Nothing from before this test is waiting.
    auth.flush_api_token_uses(FlushPace::Full)
        .await
        .expect("flush");
    let old = create(&app, &admin, json!({"name": "old"})).await;
    app.clock.advance(Duration::from_secs(1));
    let busy = create(&app, &admin, json!({"name": "busy"})).await;
    app.clock.advance(Duration::from_secs(1));
    let idle = create(&app, &admin, json!({"name": "idle"})).await;
    let busy_token = busy["token"].as_str().expect("t").to_owned();
    let old_token = old["token"].as_str().expect("t").to_owned();

    // Never used: newest first.
    let names: Vec<Value> = details(&app, &admin)
        .await
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("idle"), json!("busy"), json!("old")]);

    let first_use = app.clock.now_ms();
    let statuses = burst(&app, &busy_token).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM api_token_uses").await,
        0,
        "no write on the request path"
    );
    assert_eq!(auth.api_token_uses_held(), 1);
    assert_eq!(
        auth.flush_api_token_uses(FlushPace::Full)
            .await
            .expect("flush"),
        1,
        "one value written"
    );
    assert_eq!(
        auth.flush_api_token_uses(FlushPace::Full)
            .await
            .expect("flush"),
        0,
        "and only once"
    );
    let listed = details(&app, &admin).await;
    assert_eq!(listed[0]["name"], "busy", "most recently used first");
    assert_eq!(
        rfc3339_ms(&listed[0]["lastUsedAt"]) / 1000,
        first_use / 1000
    );
    assert_eq!(listed[1]["lastUsedAt"], Value::Null);

    // Within the step: another burst notes nothing new.
    app.clock.advance(Duration::from_secs(30));
    burst(&app, &busy_token).await;
    assert_eq!(
        auth.flush_api_token_uses(FlushPace::Full)
            .await
            .expect("flush"),
        0
    );

    // The old token used later moves to the top; the busy one, used again after the step,
    // moves its time on.
    app.clock.advance(Duration::from_secs(31));
    burst(&app, &old_token).await;
    app.clock.advance(Duration::from_secs(1));
    burst(&app, &busy_token).await;
    let later = app.clock.now_ms();
    assert_eq!(
        auth.flush_api_token_uses(FlushPace::Full)
            .await
            .expect("flush"),
        2
    );
    let listed = details(&app, &admin).await;
    let names: Vec<Value> = listed.iter().map(|t| t["name"].clone()).collect();
    assert_eq!(names, [json!("busy"), json!("old"), json!("idle")]);
    assert_eq!(rfc3339_ms(&listed[0]["lastUsedAt"]) / 1000, later / 1000);
    assert_eq!(listed[2]["lastUsedAt"], Value::Null);
    assert_eq!(idle["lastUsedAt"], Value::Null);

    // A deleted token's pending use is skipped, not an error.
    app.clock.advance(Duration::from_secs(61));
    burst(&app, &old_token).await;
    app.client
        .delete_api_token(&bearer_str(&admin), &old_token)
        .await
        .expect("delete");
    assert_eq!(
        auth.flush_api_token_uses(FlushPace::Full)
            .await
            .expect("flush"),
        0
    );
}

/// A clean stop writes the uses noted since the last flush, all of them: here 520 tokens' (two
/// of the store's statements), each used once, 32 requests at a time, over HTTP. (The time it
/// takes at the bound of 100,000 tokens is the harness's: `uses written at stop`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_writes_every_last_use_noted_since_the_last_flush() {
    const TOKENS_USED: usize = 520;
    let app = TestApp::spawn_with(|c| c.api_token_cap = 1_000).await;
    tokens_used_once(&app, TOKENS_USED).await;
    assert_eq!(written_uses(&app).await, 0, "created, never written");
    assert_eq!(app.state.auth.api_token_uses_held(), TOKENS_USED);

    let (db, _, _) = app.stop().await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM api_token_uses").await,
        i64::try_from(TOKENS_USED).expect("count"),
        "every use noted was written by the stop"
    );
}

/// Uses `n` new API tokens of the admin once each (over HTTP, 32 at a time), after a flush of
/// whatever was noted before: `n` uses pending, none of them written. Returns the tokens, in
/// the order they were created (their row ids').
async fn tokens_used_once(app: &TestApp, n: usize) -> Vec<String> {
    let tokens = admin_tokens(app, n).await;
    app.state
        .auth
        .flush_api_token_uses(FlushPace::Full)
        .await
        .expect("flush");
    let before = written_uses(app).await;
    for chunk in tokens.chunks(32) {
        use_at_once(app, chunk).await;
    }
    assert_eq!(
        written_uses(app).await,
        before,
        "written on the request path"
    );
    tokens
}

/// Presents each of `tokens` once, all at once (over HTTP); each must be accepted.
async fn use_at_once(app: &TestApp, tokens: &[String]) {
    let url = app.url("/voice/api/v1/admin/accounts");
    let client = http();
    let mut set = tokio::task::JoinSet::new();
    for t in tokens {
        let req = client.get(&url).header("x-auth-token", t);
        set.spawn(async move { req.send().await.map_or(0, |r| r.status().as_u16()) });
    }
    let statuses = set.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// Tokens with a last use written.
async fn written_uses(app: &TestApp) -> i64 {
    app.db.count("SELECT COUNT(*) FROM api_token_uses").await
}

/// The minute's write, paced, writes every use, in batches of `PACED_BATCH`. Cut off after its
/// first batch (a stop aborts housekeeping), it puts back the uses it had not written, and the
/// stop's own write writes them: none is lost. Tokens used again while it held their older uses
/// keep the newer time: putting back never moves a pending use back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_write_cut_off_half_way_puts_back_what_it_had_not_written() {
    const BATCH: i64 = cxauth_core::api_tokens::PACED_BATCH as i64;
    const USED: i64 = 2 * BATCH + 20;
    let app = TestApp::spawn_with(|c| c.api_token_cap = 2_100).await;
    let auth = app.state.auth.clone();

    // Paced at half of the time: all of them, in three batches.
    tokens_used_once(&app, USED as usize).await;
    let written = auth
        .flush_api_token_uses(FlushPace::Share(0.5))
        .await
        .expect("paced flush");
    assert_eq!(written, USED as u64);
    assert_eq!(written_uses(&app).await, USED);
    assert_eq!(
        auth.flush_api_token_uses(FlushPace::Full)
            .await
            .expect("flush"),
        0,
        "nothing left over"
    );

    // Paced at 1% of the time: after its first batch it pauses for ~99 times that batch's time,
    // and is cut off there.
    let tokens = tokens_used_once(&app, USED as usize).await;
    let flush = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.flush_api_token_uses(FlushPace::Share(0.01)).await })
    };
    let waited = tokio::time::Instant::now();
    while written_uses(&app).await < USED + BATCH {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the first batch was never written"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Meanwhile, a step later, the last ten (in row id order: among those not yet written, whose
    // older uses the write holds) are used again, at once.
    const AGAIN: usize = 10;
    app.clock.advance(Duration::from_secs(61));
    use_at_once(&app, &tokens[tokens.len() - AGAIN..]).await;
    flush.abort();
    assert!(flush.await.expect_err("cut off").is_cancelled());
    assert_eq!(
        written_uses(&app).await,
        USED + BATCH,
        "cut off in the pause after its first batch"
    );

    let (db, _, _) = app.stop().await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM api_token_uses").await,
        2 * USED,
        "the stop wrote the uses the cut-off write had not"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM api_token_uses WHERE last_used_at > \
             (SELECT MIN(last_used_at) FROM api_token_uses) + 30000"
        )
        .await,
        AGAIN as i64,
        "the uses noted while the write held older ones were written, not the older ones"
    );
}

/// `n` new API tokens of the admin, in the order they were created (their row ids').
async fn admin_tokens(app: &TestApp, n: usize) -> Vec<String> {
    let admin = access(&app.login_admin().await);
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let t = create(app, &admin, json!({})).await;
        tokens.push(t["token"].as_str().expect("token").to_owned());
    }
    tokens
}

/// Creates `n` API tokens of the admin and presents each once (over HTTP, 32 at a time).
async fn tokens_presented_once(app: &TestApp, n: usize) -> Vec<String> {
    let tokens = admin_tokens(app, n).await;
    for chunk in tokens.chunks(32) {
        use_at_once(app, chunk).await;
    }
    tokens
}

/// Housekeeping writes the uses noted since its last pass, and says so in a `debug` line of its
/// target. The harness's `refreshes beside the minute's write` finds the minute's write by that
/// line's message and reads its fields `written` and `took_ms`: this pins all four. (Its server
/// runs on this test's one thread, so the thread's subscriber sees the housekeeping task's
/// events.)
#[tokio::test]
async fn housekeeping_writes_the_uses_noted_since_its_last_pass_and_logs_how_many() {
    use tracing_subscriber::util::SubscriberInitExt as _;
    const USED: u64 = 5;
    let capture = logs::Capture::default();
    let _guard = capture
        .subscriber("cxauth_server::housekeeping=debug")
        .set_default();
    let app = TestApp::spawn_tuned(
        |_| {},
        |a| a.housekeeping.interval = Duration::from_millis(200),
    )
    .await;
    tokens_presented_once(&app, USED as usize).await;

    // The uses may fall into two passes: their lines add up.
    // What the harness looks for (`MINUTES_WRITE` in `cxauth-bench`), under the target it
    // turns to `debug`.
    let prefix = "DEBUG cxauth_server::housekeeping: API token last uses written ";
    let waited = tokio::time::Instant::now();
    loop {
        let text = capture.text();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once(prefix).map(|(_, fields)| fields.to_owned()))
            .collect();
        let field = |fields: &str, name: &str| -> u64 {
            fields
                .split(' ')
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no `{name}` in {fields:?}"))
                .parse()
                .unwrap_or_else(|e| panic!("`{name}` in {fields:?}: {e}"))
        };
        let written: u64 = lines.iter().map(|f| field(f, "written")).sum();
        for f in &lines {
            field(f, "took_ms");
        }
        if written >= USED {
            assert_eq!(written, USED, "{text}");
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "housekeeping did not log the write of {USED} uses within 10 s; it logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(written_uses(&app).await, USED as i64);
    app.stop().await;
}

/// A stop that comes while housekeeping's paced write of last uses is under way cuts the write
/// off, lets it put back what it had not written, and then writes those uses itself: none is
/// lost. (`serve` awaits the aborted housekeeping before its own write: without that, the
/// put-back could come after the stop's write had taken the uses, and they would be lost.) One
/// worker thread: the aborted housekeeping then cannot put its uses back while the stop runs
/// unless the stop waits for it, so leaving the wait out fails this test every time (checked:
/// 5 runs of 5; 3 of 5 with two workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_stop_during_housekeepings_paced_write_loses_no_last_use() {
    const BATCH: i64 = cxauth_core::api_tokens::PACED_BATCH as i64;
    // Presented within 4 s, the uses fall into at most three passes at this
    // interval, so one pass has more than a batch of them, and pauses after its first.
    const USED: i64 = 3 * BATCH + 20;
    let app = TestApp::spawn_tuned(
        |c| c.api_token_cap = 2_100,
        |a| {
            a.housekeeping = cxauth_server::housekeeping::Schedule {
                interval: Duration::from_secs(2),
                // After each batch, a pause of ~999 times the batch's time: the stop comes first.
                uses_write_share: 0.001,
            }
        },
    )
    .await;
    tokens_presented_once(&app, USED as usize).await;
    let waited = tokio::time::Instant::now();
    let written = loop {
        let n = written_uses(&app).await;
        if n >= BATCH {
            break n;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "housekeeping wrote no batch of last uses within 30 s ({n} written)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        written < USED,
        "every use was written before the stop: no paced write was under way to cut off"
    );

    let (db, _, _) = app.stop().await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM api_token_uses").await,
        USED,
        "the stop wrote what the cut-off write put back, and what was noted after it took its share"
    );
}
