//! Headers that tell browsers how to treat our answers, set on every response of the router
//! (errors, fallbacks and the API page included) last of all by the outermost middleware,
//! [`crate::context::RequestContext`] (one middleware layer rather than two: each costs a
//! boxed clone of the whole stack below it per request).
//!
//! * `X-Content-Type-Options: nosniff` everywhere: a browser must not guess a script or a page
//!   out of a JSON body.
//! * `/docs` (the vendored Swagger UI): a strict Content Security Policy. Its page loads only
//!   files of its own (`swagger-ui-bundle.js`, `swagger-ui-standalone-preset.js`,
//!   `swagger-initializer.js`, two style sheets, favicons) and fetches `/openapi.json`, so
//!   scripts are `'self'` only: no inline script, no `eval` (the bundle's one `new Function`
//!   sits behind a `globalThis` check every current browser passes). Styles need
//!   `'unsafe-inline'`: the standalone preset's logo is an SVG with a `<style>` element and
//!   React sets `style` attributes; style injection cannot run code. Its icons are `data:`
//!   SVGs, hence `img-src data:`. `frame-ancestors 'none'` (and `X-Frame-Options: DENY` for
//!   older browsers) keeps the page out of frames.
//! * `/console` (the web console): a stricter policy still. Its pages load one style sheet and
//!   one script of its own and nothing else, so neither inline script nor inline style is
//!   allowed, forms post only to this origin, and no page can be framed. Every console answer
//!   is `Cache-Control: no-store` (a page may show a new API token) except its two static
//!   assets, and no console page sends a `Referer`.
//! * Everything else: `default-src 'none'; frame-ancestors 'none'`, since no answer is meant to
//!   be rendered as a page or framed.
//! * Admin API answers (`/voice/api/v1/admin/…`, `/api/v1/admin/…`): `Cache-Control: no-store`,
//!   as the token answers already have: they list tokens, accounts and users.

use axum::http::{HeaderMap, HeaderValue, header};

/// The Content Security Policy of the API page `/docs`; see the module documentation.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The Content Security Policy of the web console `/console`; see the module documentation.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Whether `path` is the web console's.
pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The Content Security Policy of every other answer: nothing to load, nowhere to be framed.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Whether `path` is under one of the admin API prefixes.
pub fn is_admin_path(path: &str) -> bool {
    ["/voice/api/v1/admin", "/api/v1/admin"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

fn is_docs_path(path: &str) -> bool {
    path == "/docs" || path.starts_with("/docs/")
}

/// Which of the policies of the module documentation a path gets; read from the request's path
/// before the request is handed on, applied to its response by [`Policy::apply`].
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    docs: bool,
    admin: bool,
    console: bool,
    console_asset: bool,
}

impl Policy {
    /// The policy of `path`.
    pub fn of(path: &str) -> Self {
        Policy {
            docs: is_docs_path(path),
            admin: is_admin_path(path),
            console: is_console_path(path),
            console_asset: path.starts_with("/console/assets/"),
        }
    }

    /// Sets the headers of this policy; see the module documentation.
    pub fn apply(self, h: &mut HeaderMap) {
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.console {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONSOLE_CSP),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            if !self.console_asset {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        } else if self.docs {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        } else {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(API_CSP),
            );
        }
        if self.admin {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths() {
        assert!(is_admin_path("/voice/api/v1/admin/token"));
        assert!(is_admin_path("/api/v1/admin/accounts/1/users"));
        assert!(is_admin_path("/api/v1/admin"));
        assert!(!is_admin_path("/api/v1/administrator"));
        assert!(!is_admin_path("/api/auth/login/rc/accesstoken"));
        assert!(is_docs_path("/docs") && is_docs_path("/docs/index.css"));
        assert!(!is_docs_path("/docsx"));
        assert!(is_console_path("/console") && is_console_path("/console/users/1/disable"));
        assert!(!is_console_path("/consoles"));
    }
}
