//! What handlers take from a request: its parameters (query string, form or JSON, see
//! [`crate::params`]), the client address, the audit context, and the authenticated caller.

use crate::AppState;
use crate::error::ApiError;
use crate::params::Params;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use cxauth_core::audit::AuditContext;
use cxauth_core::jwt::TokenError;
use cxauth_core::service::{AuthError, PresentedToken, Principal};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The client address, for throttling: the TCP peer, or, when the peer is a trusted reverse
/// proxy, the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy. Without
/// trusted proxies the header is ignored: anyone can write it, and believing it would let an
/// attacker pick a fresh address for every guess. Without connect info (router tests) all
/// callers share the unspecified address, which only makes throttling stricter.
pub struct ClientAddr(pub IpAddr);

/// See [`ClientAddr`].
pub fn client_addr(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return ip,
            // A malformed entry: stop believing the chain at the last good hop.
            Err(_) => return client,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(client_addr(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// The request's origin for the audit trail: client address (as [`ClientAddr`]) and request id.
pub struct Audit(pub AuditContext);

impl FromRequestParts<AppState> for Audit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state).await?;
        let request_id = parts
            .extensions
            .get::<crate::context::RequestId>()
            .map(|r| r.0.clone());
        Ok(Audit(AuditContext {
            request_id,
            addr: Some(addr),
        }))
    }
}

/// The authenticated caller of an admin endpoint.
pub struct Caller(pub Principal);

/// Reads the credential: `Authorization: Bearer` first, then `X-Auth-Token`. Another
/// `Authorization` scheme (the Python SDK sends `Basic basic`) counts as no bearer token.
pub fn credential(headers: &HeaderMap) -> Result<PresentedToken<'_>, TokenError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| TokenError::Invalid)?.trim();
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = token.trim();
            return if token.is_empty() {
                Err(TokenError::Missing)
            } else {
                Ok(PresentedToken::Bearer(token))
            };
        }
    }
    if let Some(v) = headers.get("x-auth-token") {
        let token = v.to_str().map_err(|_| TokenError::Invalid)?.trim();
        return if token.is_empty() {
            Err(TokenError::Missing)
        } else {
            Ok(PresentedToken::XAuthToken(token))
        };
    }
    Ok(PresentedToken::None)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cred = credential(&parts.headers).map_err(AuthError::from)?;
        let who = state.auth.authenticate(cred).await?;
        // The request's span (see `context`) names its caller from here on: the access-log line
        // and anything logged while answering carry `user_id`.
        tracing::Span::current().record("user_id", who.user.id);
        Ok(Caller(who))
    }
}

/// The request's parameters from its query string and body; a body over the limit is 413.
pub(crate) fn params(
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Params, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            AuthError::BadRequest("the request body could not be read".into()).into()
        }
    })?;
    Params::parse(query.as_deref(), &body).map_err(|e| AuthError::BadRequest(e.to_string()).into())
}

/// A parameter that must be present and not empty.
pub(crate) fn required(p: &mut Params, name: &str) -> Result<String, ApiError> {
    match p.take(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(AuthError::BadRequest(format!("{name} is required")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let lb: IpAddr = "10.0.0.2".parse().expect("ip");
        let client: IpAddr = "198.51.100.7".parse().expect("ip");
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            client_addr(Some(lb), &h, &[]),
            lb,
            "no trusted proxy: the peer"
        );
        assert_eq!(
            client_addr(Some(lb), &h, &[lb]),
            client,
            "rightmost untrusted hop"
        );
        assert_eq!(
            client_addr(Some(client), &h, &[lb]),
            client,
            "untrusted peer: header ignored"
        );
        let bad = headers(&[("x-forwarded-for", "junk, 10.0.0.2")]);
        assert_eq!(client_addr(Some(lb), &bad, &[lb]), lb);
        assert_eq!(client_addr(Some(lb), &headers(&[]), &[lb]), lb);
        assert_eq!(
            client_addr(None, &h, &[lb]),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn credential_sources() {
        assert!(matches!(
            credential(&headers(&[])),
            Ok(PresentedToken::None)
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Bearer abc")])),
            Ok(PresentedToken::Bearer("abc"))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "bearer  abc ")])),
            Ok(PresentedToken::Bearer("abc"))
        ));
        assert!(matches!(
            credential(&headers(&[
                ("authorization", "Basic basic"),
                ("x-auth-token", "t")
            ])),
            Ok(PresentedToken::XAuthToken("t"))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Basic basic")])),
            Ok(PresentedToken::None)
        ));
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer ")])).err(),
            Some(TokenError::Missing)
        );
    }
}
