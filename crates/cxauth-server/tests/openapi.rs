//! The OpenAPI document at `/openapi.json` and the router are made from one list (`api_routes`);
//! these tests check that what the document lists is what the server routes, and that the API
//! page `/docs` is served from the binary.

mod common;

use common::{TestServer, http, raw};

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
    ("get", "/api/v1/admin/token"),
    ("post", "/api/v1/admin/token"),
    ("delete", "/api/v1/admin/token/{token}"),
    ("get", "/api/v1/admin/users"),
    ("get", "/voice/api/v1/admin/accounts"),
    ("get", "/voice/api/v1/admin/token"),
    ("post", "/voice/api/v1/admin/token"),
    ("delete", "/voice/api/v1/admin/token/{token}"),
    ("get", "/voice/api/v1/admin/users"),
];

const EMULATOR: &[(&str, &str)] = &[
    ("post", "/restapi/oauth/token"),
    ("get", "/restapi/v1.0/account/~/extension/~"),
];

async fn operations(s: &TestServer) -> Vec<(String, String)> {
    let doc: serde_json::Value = http()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
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
async fn routed(s: &TestServer, method: &str, path: &str) -> bool {
    let url = s.url(&path.replace("{token}", "x"));
    let req = match method {
        "get" => http().get(url),
        "post" => http().post(url),
        "delete" => http().delete(url),
        other => panic!("unexpected method {other}"),
    };
    let (status, _, body) = raw(req.send().await.expect("send")).await;
    status != 405 && !body.contains("No such endpoint")
}

#[tokio::test]
async fn the_document_and_the_router_list_the_same_endpoints() {
    let s = TestServer::spawn_with(|c| c.ringex_emulator = true).await;
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
    let s = TestServer::spawn().await;
    assert_eq!(operations(&s).await, sorted(&[EXPECTED]));
    for (method, path) in EMULATOR {
        assert!(!routed(&s, method, path).await, "{method} {path}");
    }
}

#[tokio::test]
async fn the_api_page_is_served_from_the_binary() {
    let s = TestServer::spawn().await;
    let (status, _, html) = raw(http().get(s.url("/docs/")).send().await.expect("get")).await;
    assert_eq!(status, 200);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("://cdn") && !html.contains("unpkg.com"),
        "{html}"
    );
    let (status, _, js) = raw(http()
        .get(s.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("get"))
    .await;
    assert_eq!(status, 200);
    assert!(js.len() > 100_000);
}
