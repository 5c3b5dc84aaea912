//! A helper per endpoint. The SDK ([`cxauth_client::Client`], `app.client`) covers the calls it
//! has; these cover what a test sends raw: the wire contract's other shapes (form, query, JSON),
//! headers the SDK would never send, and hostile input. Keep hostile requests raw in the test, and
//! send them with [`TestApp::send`] to read the whole answer.

use crate::app::{ADMIN_PASSWORD, PLATFORM, TestApp};
use cxauth_client::{Credential, Session};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};

/// A fresh HTTP client for raw requests.
pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// A bearer credential for the SDK.
pub fn bearer(s: &Session) -> Credential {
    Credential::Bearer(s.access_token.clone())
}

/// An `X-Auth-Token` credential for the SDK.
pub fn x_auth(t: &str) -> Credential {
    Credential::XAuthToken(t.to_owned())
}

/// Status, headers and text of a raw response.
pub async fn raw(res: reqwest::Response) -> (u16, HeaderMap, String) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

/// A whole answer to a raw request.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// The body as JSON, asserting that it is JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header as text, asserting that it is there.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .expect("header text")
    }

    /// `(status, headers, body)`, the shape of [`raw`].
    pub fn parts(self) -> (u16, HeaderMap, String) {
        (self.status, self.headers, self.body)
    }
}

/// The paths of the RingCX contract's endpoints.
pub mod paths {
    /// Direct login (form, query or JSON).
    pub const LOGIN: &str = "/api/auth/login/admin";
    /// Legacy login.
    pub const LEGACY_LOGIN: &str = "/api/v1/auth/login";
    /// Refresh.
    pub const REFRESH: &str = "/api/auth/token/refresh";
    /// The JWKS.
    pub const JWKS: &str = "/.well-known/jwks.json";
    /// Liveness.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness.
    pub const READYZ: &str = "/readyz";
}

impl TestApp {
    /// A raw request to `path` on this server.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        http().request(method, self.url(path))
    }

    /// A raw `GET path`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A raw `POST path`.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A raw `DELETE path`.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Sends a raw request, asserting that an answer comes, and reads all of it.
    pub async fn send(&self, req: RequestBuilder) -> Reply {
        send(req).await
    }

    /// `POST /api/auth/login/admin` as a form, raw: for tests of the answer's exact shape.
    pub async fn login_form(&self, username: &str, password: &str) -> Reply {
        send(self.post(paths::LOGIN).form(&[
            ("username", username),
            ("password", password),
            ("platformId", PLATFORM),
        ]))
        .await
    }

    /// The admin's login as a raw form.
    pub async fn login_admin_form(&self) -> Reply {
        self.login_form("admin", ADMIN_PASSWORD).await
    }

    /// `POST /api/auth/token/refresh` as a form, raw.
    pub async fn refresh_form(&self, refresh_token: &str) -> Reply {
        send(
            self.post(paths::REFRESH)
                .form(&[("refresh_token", refresh_token)]),
        )
        .await
    }

    /// `GET path` with `Authorization: Bearer TOKEN`, raw.
    pub async fn get_bearer(&self, path: &str, token: &str) -> Reply {
        send(self.get(path).bearer_auth(token)).await
    }

    /// `GET path` with `X-Auth-Token: TOKEN`, raw.
    pub async fn get_x_auth(&self, path: &str, token: &str) -> Reply {
        send(self.get(path).header("x-auth-token", token)).await
    }

    /// `GET /healthz`, raw.
    pub async fn healthz(&self) -> Reply {
        send(self.get(paths::HEALTHZ)).await
    }

    /// `GET /readyz`, raw.
    pub async fn readyz(&self) -> Reply {
        send(self.get(paths::READYZ)).await
    }
}

/// Sends a raw request, asserting that an answer comes, and reads all of it.
pub async fn send(req: RequestBuilder) -> Reply {
    let res = req.send().await.expect("send");
    let (status, headers, body) = raw(res).await;
    Reply {
        status,
        headers,
        body,
    }
}
