//! The console's two cookies: how they are read, set and cleared (see [`super::session`] for
//! why they are what they are).

use axum::http::{HeaderMap, HeaderValue, header};
use cxauth_core::service::MAX_TOKEN_LEN;

/// The cookie holding the access token.
pub const ACCESS_COOKIE: &str = "cxauth_console_at";
/// The cookie holding the refresh token.
pub const REFRESH_COOKIE: &str = "cxauth_console_rt";

/// The value of cookie `name`, if sent once and of a plausible length.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    // Two cookies of one name (one planted on a parent path): trust neither.
                    return None;
                }
                found = Some(val);
            }
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= MAX_TOKEN_LEN)
}

/// The cookie carrying a new API token from its form to the page that shows it, once
/// (`Auth::seal_new_token`): only the token page receives it, it lives a minute at most, and
/// that page clears it.
pub const NEW_TOKEN_COOKIE: &str = "cxauth_console_new";
/// The new-token cookie's path: the token page (and the forms under it).
const NEW_TOKEN_PATH: &str = "/console/tokens";
/// The new-token cookie's lifetime: the browser follows the redirect at once.
const NEW_TOKEN_MAX_AGE_SECS: u32 = 60;

fn set_cookie(name: &str, value: &str, secure: bool, clear: bool) -> Option<HeaderValue> {
    set_cookie_on("/console", name, value, secure, clear.then_some(0))
}

fn set_cookie_on(
    path: &str,
    name: &str,
    value: &str,
    secure: bool,
    max_age: Option<u32>,
) -> Option<HeaderValue> {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(secs) = max_age {
        c.push_str(&format!("; Max-Age={secs}"));
    }
    HeaderValue::from_str(&c).ok()
}

/// `Set-Cookie` for the new-token cookie holding `sealed`.
pub fn new_token_cookie(sealed: &str, secure: bool) -> Option<HeaderValue> {
    set_cookie_on(
        NEW_TOKEN_PATH,
        NEW_TOKEN_COOKIE,
        sealed,
        secure,
        Some(NEW_TOKEN_MAX_AGE_SECS),
    )
}

/// `Set-Cookie` that removes the new-token cookie.
pub fn clear_new_token_cookie(secure: bool) -> Option<HeaderValue> {
    set_cookie_on(NEW_TOKEN_PATH, NEW_TOKEN_COOKIE, "", secure, Some(0))
}

/// `Set-Cookie` values that start a console session with these tokens.
pub fn session_cookies(access: &str, refresh: &str, secure: bool) -> Vec<HeaderValue> {
    [
        set_cookie(ACCESS_COOKIE, access, secure, false),
        set_cookie(REFRESH_COOKIE, refresh, secure, false),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `Set-Cookie` values that end the console session in the browser.
pub fn clear_cookies() -> Vec<HeaderValue> {
    [
        set_cookie(ACCESS_COOKIE, "", false, true),
        set_cookie(REFRESH_COOKIE, "", false, true),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A header map of `pairs`, in order (repeated names kept); shared with `session`'s tests.
    pub(in crate::console) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn cookies_are_read_once_and_bounded() {
        let h = headers(&[("cookie", "a=1; cxauth_console_at=tok; b=2")]);
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("tok"));
        let twice = headers(&[
            ("cookie", "cxauth_console_at=one"),
            ("cookie", "cxauth_console_at=two"),
        ]);
        assert_eq!(cookie(&twice, ACCESS_COOKIE), None);
        let huge = format!("cxauth_console_at={}", "x".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(cookie(&headers(&[("cookie", &huge)]), ACCESS_COOKIE), None);
        assert_eq!(cookie(&headers(&[]), ACCESS_COOKIE), None);
    }

    #[test]
    fn cookie_attributes() {
        let c = session_cookies("a", "r", true);
        let s = c[0].to_str().expect("text");
        for want in ["HttpOnly", "SameSite=Strict", "Path=/console", "Secure"] {
            assert!(s.contains(want), "{s}");
        }
        let plain = session_cookies("a", "r", false);
        assert!(!plain[0].to_str().expect("text").contains("Secure"));
        assert!(
            clear_cookies()[1]
                .to_str()
                .expect("text")
                .contains("Max-Age=0")
        );
        let new = new_token_cookie("aws80:x.d", true).expect("cookie");
        assert_eq!(
            new.to_str().expect("text"),
            "cxauth_console_new=aws80:x.d; Path=/console/tokens; HttpOnly; SameSite=Strict; \
             Secure; Max-Age=60"
        );
        assert_eq!(
            clear_new_token_cookie(false)
                .expect("cookie")
                .to_str()
                .expect("text"),
            "cxauth_console_new=; Path=/console/tokens; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }
}
