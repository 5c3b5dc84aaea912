//! `Authorization` / `X-Auth-Token` / `X-Forwarded-For` parsing and the token path segments as
//! the log shows them.
#![no_main]
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let third = data.len() / 3;
    if let Ok(v) = HeaderValue::from_bytes(&data[..third]) {
        headers.insert("authorization", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(&data[third..2 * third]) {
        headers.insert("x-auth-token", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(&data[2 * third..]) {
        headers.insert("x-forwarded-for", v);
    }
    let _ = cxauth_server::routes::credential(&headers);
    let trusted = ["127.0.0.1".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())];
    let _ = cxauth_server::routes::client_addr(Some(trusted[0]), &headers, &trusted);
    if let Ok(path) = std::str::from_utf8(data) {
        let logged = cxauth_server::context::loggable_path(path);
        assert!(logged.len() <= 204);
    }
});
