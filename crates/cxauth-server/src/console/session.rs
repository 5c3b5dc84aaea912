//! The console's session, its form token and the same-origin check.
//!
//! A console login is an ordinary login (`Auth::login`): its access token and refresh token are
//! kept in two cookies, `HttpOnly` (no script reads them), `SameSite=Strict` (no other site's
//! request carries them), `Path=/console` (the API never receives them), without `Max-Age` (they
//! end with the browser), and `Secure` when the request came over TLS. cxauth itself speaks
//! plain HTTP, so "over TLS" means a trusted proxy (`--trusted-proxy`) said so with
//! `X-Forwarded-Proto: https`. Each page authenticates the access token as the bearer path
//! does; an expired one is traded through the core's refresh (rotation, reuse detection) and
//! the new pair is set on the answer.
//!
//! Every state-changing form carries the session's form token (a keyed digest of the session
//! id, `Auth::session_form_token`), compared in constant time; and every POST must come from
//! this origin (`Sec-Fetch-Site: same-origin`, or an `Origin` naming this host when a browser
//! sends no `Sec-Fetch-Site`).

use super::cookies::{ACCESS_COOKIE, REFRESH_COOKIE, cookie, session_cookies};
use super::error::ConsoleError;
use crate::AppState;
use crate::extract::Audit;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use cxauth_core::audit::AuditContext;
use cxauth_core::jwt::TokenError;
use cxauth_core::service::{AuthError, PresentedToken, Principal};
use std::net::SocketAddr;

/// What the console needs to know about a request besides its form.
pub struct ClientInfo {
    /// The audit context (address, request id).
    pub ctx: AuditContext,
    /// Whether cookies must be `Secure` (see the module documentation).
    pub secure: bool,
    /// Whether the request may change state: it came from a page of this origin.
    pub same_origin: bool,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Audit(ctx) = Audit::from_request_parts(parts, state).await?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let from_proxy = peer.is_some_and(|p| state.trusted_proxies.contains(&p));
        let secure = from_proxy
            && parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Ok(ClientInfo {
            ctx,
            secure,
            same_origin: same_origin(&parts.headers),
        })
    }
}

/// Whether a request comes from a page of this origin, as far as the browser tells: the
/// `Sec-Fetch-Site` of every current browser first, then `Origin` against `Host` (or the
/// `X-Forwarded-Host` a proxy sets). A request with neither (curl, a script) is let through:
/// it carries no ambient cookie a forgery could ride on, and the form token still applies.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(origin_host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    ["x-forwarded-host", "host"].iter().any(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| h.trim().eq_ignore_ascii_case(origin_host))
    })
}

/// A signed-in console user.
pub struct Signed {
    /// Who it is, as the API would see its access token.
    pub who: Principal,
    /// The form token of its session.
    pub form_token: String,
    /// Whether it may manage users.
    pub manager: bool,
    /// New session cookies to set (the access token was refreshed on this request).
    pub cookies: Vec<HeaderValue>,
    /// The refresh token this request rotated to, if it refreshed (the cookie's is spent).
    pub refresh_token: Option<String>,
}

impl Signed {
    /// Attaches the refreshed cookies, if any, to the answer, error or not (an error's page
    /// links back to `back`): losing them would make the browser present a rotated refresh
    /// token, which ends the session.
    pub fn finish(
        &self,
        res: Result<axum::response::Response, ConsoleError>,
        back: &str,
    ) -> axum::response::Response {
        let mut res = res.unwrap_or_else(|e| e.page(back));
        for c in &self.cookies {
            res.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        res
    }

    /// Refuses a state-changing form without this session's form token.
    pub fn check_form(
        &self,
        state: &AppState,
        client: &ClientInfo,
        presented: Option<&str>,
    ) -> Result<(), ConsoleError> {
        let sid = self.who.session_id.as_deref().ok_or(ConsoleError::SignIn)?;
        match presented {
            Some(t) if client.same_origin && state.auth.check_session_form_token(sid, t) => Ok(()),
            _ => Err(ConsoleError::Forgery),
        }
    }
}

/// The request's console session: its access token checked, or refreshed when expired.
pub async fn signed(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> Result<Signed, ConsoleError> {
    let mut cookies = Vec::new();
    let mut refresh_token = None;
    let who = match cookie(headers, ACCESS_COOKIE) {
        Some(at) => match state.auth.authenticate(PresentedToken::Bearer(at)).await {
            Ok(who) => Some(who),
            Err(AuthError::Token(TokenError::Expired)) => None,
            Err(AuthError::Token(_)) => return Err(ConsoleError::SignIn),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let who = match who {
        Some(who) => who,
        None => {
            let rt = cookie(headers, REFRESH_COOKIE).ok_or(ConsoleError::SignIn)?;
            let session = state.auth.refresh(rt, &client.ctx).await?;
            let rt = session.refresh_token.clone().ok_or(ConsoleError::SignIn)?;
            cookies = session_cookies(&session.access_token, &rt, client.secure);
            refresh_token = Some(rt);
            state
                .auth
                .authenticate(PresentedToken::Bearer(&session.access_token))
                .await?
        }
    };
    let sid = who.session_id.as_deref().ok_or(ConsoleError::SignIn)?;
    Ok(Signed {
        form_token: state.auth.session_form_token(sid),
        manager: state.auth.may_manage_users(&who),
        who,
        cookies,
        refresh_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::cookies::tests::headers;

    #[test]
    fn origin_checks() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "null"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[])));
    }
}
