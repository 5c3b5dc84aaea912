//! The OpenAPI document at `/openapi.json` and the router are made from one list (`api_routes`);
//! these tests check that what the document lists is what the server routes, and that the API
//! page `/docs` is served from the binary.

use cxauth_testkit::{TestApp, http, send};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Every endpoint of the contract and of operations, under both admin prefixes.
const EXPECTED: &[(&str, &str)] = &[
    ("get", "/.well-known/jwks.json"),
    ("post", "/api/auth/login/admin"),
    ("post", "/api/auth/login/rc/accesstoken"),
    ("delete", "/api/auth/logout/{token}"),
    ("post", "/api/auth/token/refresh"),
    ("post", "/api/v1/auth/login"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/v1/admin/accounts"),
    ("get", "/api/v1/admin/accounts/{accountId}/agents"),
    ("get", "/api/v1/admin/token"),
    ("post", "/api/v1/admin/token"),
    ("delete", "/api/v1/admin/token/{token}"),
    ("get", "/api/v1/admin/users"),
    ("get", "/voice/api/v1/admin/accounts"),
    ("get", "/voice/api/v1/admin/accounts/{accountId}/agents"),
    ("get", "/voice/api/v1/admin/token"),
    ("post", "/voice/api/v1/admin/token"),
    ("delete", "/voice/api/v1/admin/token/{token}"),
    ("get", "/voice/api/v1/admin/users"),
    ("get", "/cxauth/v1/api-tokens"),
    ("post", "/cxauth/v1/api-tokens"),
    ("patch", "/cxauth/v1/api-tokens/{id}"),
    ("delete", "/cxauth/v1/api-tokens/{id}"),
];

const EMULATOR: &[(&str, &str)] = &[
    ("post", "/restapi/oauth/token"),
    ("post", "/restapi/oauth/revoke"),
    ("get", "/restapi/v1.0/account/~/extension/~"),
];

async fn document(s: &TestApp) -> Value {
    s.get("/openapi.json")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Every operation of the document: (method, path, operation object).
fn each_operation(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(method) {
                ops.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

async fn operations(s: &TestApp) -> Vec<(String, String)> {
    let doc = document(s).await;
    assert!(
        doc["openapi"].as_str().expect("version").starts_with("3.1"),
        "{doc}"
    );
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                ops.push((method.to_owned(), path.clone()));
            }
        }
    }
    ops.sort();
    ops
}

fn sorted(list: &[&[(&str, &str)]]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .flat_map(|l| l.iter())
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    v.sort();
    v
}

/// Whether the router has a route for this method and path (its own "no such endpoint" 404 and
/// 405 are the only answers that say no).
async fn routed(s: &TestApp, method: &str, path: &str) -> bool {
    let url = s.url(
        &path
            .replace("{token}", "x")
            .replace("{accountId}", "10000001")
            .replace("{id}", "1"),
    );
    let req = match method {
        "get" => http().get(url),
        "post" => http().post(url),
        "delete" => http().delete(url),
        "patch" => http().patch(url),
        other => panic!("unexpected method {other}"),
    };
    let (status, _, body) = send(req).await.parts();
    status != 405 && !body.contains("No such endpoint")
}

#[tokio::test]
async fn the_document_and_the_router_list_the_same_endpoints() {
    let s = TestApp::spawn_with(|c| c.ringex_emulator = true).await;
    let ops = operations(&s).await;
    assert_eq!(ops, sorted(&[EXPECTED, EMULATOR]));
    for (method, path) in &ops {
        assert!(
            routed(&s, method, path).await,
            "{method} {path} is documented, not routed"
        );
    }
}

#[tokio::test]
async fn without_the_emulator_its_endpoints_are_neither_routed_nor_documented() {
    let s = TestApp::spawn().await;
    assert_eq!(operations(&s).await, sorted(&[EXPECTED]));
    for (method, path) in EMULATOR {
        assert!(!routed(&s, method, path).await, "{method} {path}");
    }
}

#[tokio::test]
async fn the_api_page_is_served_from_the_binary() {
    let s = TestApp::spawn().await;
    let (status, _, html) = send(s.get("/docs/")).await.parts();
    assert_eq!(status, 200);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("://cdn") && !html.contains("unpkg.com"),
        "{html}"
    );
    let (status, _, js) = send(s.get("/docs/swagger-ui-bundle.js")).await.parts();
    assert_eq!(status, 200);
    assert!(js.len() > 100_000);
}

#[tokio::test]
async fn admin_operations_take_a_bearer_token_or_x_auth_token_and_auth_operations_none() {
    let s = TestApp::spawn_with(|c| c.ringex_emulator = true).await;
    let doc = document(&s).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http", "{schemes}");
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT", "{schemes}");
    assert_eq!(schemes["X-Auth-Token"]["type"], "apiKey", "{schemes}");
    assert_eq!(schemes["X-Auth-Token"]["in"], "header", "{schemes}");
    assert_eq!(schemes["X-Auth-Token"]["name"], "X-Auth-Token", "{schemes}");
    assert!(
        doc.get("security").is_none(),
        "no document-wide requirement: {doc}"
    );
    let either = json!([{"bearer": []}, {"X-Auth-Token": []}]);
    for (method, path, op) in each_operation(&doc) {
        let security = op.get("security");
        if path.contains("/admin/") || path.starts_with("/cxauth/") {
            assert_eq!(security, Some(&either), "{method} {path}");
        } else if path.starts_with("/restapi/") {
            let expected = if method == "post" {
                "ringex-client"
            } else {
                "ringex-bearer"
            };
            assert_eq!(
                security,
                Some(&json!([{ expected: [] }])),
                "{method} {path}"
            );
            assert!(schemes.get(expected).is_some(), "{schemes}");
        } else {
            assert!(
                security.is_none_or(|s| s == &json!([]) || s == &json!([{}])),
                "{method} {path} needs no credential: {security:?}"
            );
        }
    }
    // The schemes say what the server does: the bearer token of a login, and an API token as
    // X-Auth-Token, both open the admin endpoint the browser test calls.
    let session = s.login_admin().await;
    let (status, _, body) = send(
        s.get("/voice/api/v1/admin/token")
            .bearer_auth(&session.access_token),
    )
    .await
    .parts();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn summaries_are_plain_text_and_operation_ids_unique() {
    let s = TestApp::spawn_with(|c| c.ringex_emulator = true).await;
    let doc = document(&s).await;
    let mut ids = BTreeSet::new();
    for (method, path, op) in each_operation(&doc) {
        let summary = op["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty(), "{method} {path}: no summary");
        assert!(
            !summary.contains('`') && !summary.contains('…'),
            "{method} {path}: {summary}"
        );
        assert!(
            !summary.starts_with(|c: char| c.is_ascii_digit()),
            "{method} {path}: contract numbering in {summary}"
        );
        assert!(
            op["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{method} {path}: no description"
        );
        let id = op["operationId"].as_str().expect("operationId").to_owned();
        assert!(
            ids.insert(id.clone()),
            "{method} {path}: duplicate operationId {id}"
        );
    }
}

/// The tags of the document, and the tags its operations use.
fn tags(doc: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let listed = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    let used = each_operation(doc)
        .iter()
        .flat_map(|(_, _, op)| op["tags"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().expect("tag").to_owned())
        .collect();
    (listed, used)
}

#[tokio::test]
async fn no_tag_section_is_empty_with_or_without_the_emulator() {
    let off = document(&TestApp::spawn().await).await;
    let (listed, used) = tags(&off);
    assert_eq!(listed, used);
    assert!(!listed.contains("ringex-emulator"), "{listed:?}");
    let schemes = off["components"]["securitySchemes"]
        .as_object()
        .expect("schemes");
    assert_eq!(
        schemes.keys().collect::<Vec<_>>(),
        ["X-Auth-Token", "bearer"]
    );
    let on = document(&TestApp::spawn_with(|c| c.ringex_emulator = true).await).await;
    let (listed, used) = tags(&on);
    assert_eq!(listed, used);
    assert!(listed.contains("ringex-emulator"), "{listed:?}");
}
