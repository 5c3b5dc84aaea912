//! The web console over HTTP, as a browser without JavaScript would use it (cookies kept by
//! hand, redirects not followed): authorisation of every page and form, the form token (CSRF),
//! the security headers, the login throttle and its generic error, the session's refresh and
//! logout, user administration within a manager's subtree, and hostile form input.

use cxauth_core::clock::Clock as _;
use cxauth_core::service::FlushPace;
use cxauth_testkit::*;
use reqwest::Method;
use std::collections::BTreeMap;
use std::time::Duration;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Every page of the console (the login page seen signed out, the others signed in), and the
/// forms (path) a signed-in user may POST.
const PAGES: [&str; 4] = [
    "/console/tokens",
    "/console/accounts",
    "/console/users",
    "/console/login",
];
const FORMS: [&str; 6] = [
    "/console/tokens",
    "/console/tokens/delete",
    "/console/users",
    "/console/users/1/disable",
    "/console/users/1/password",
    "/console/logout",
];

/// Form fields, in order.
type Fields<'a> = Vec<(&'a str, &'a str)>;

/// A browser session: its cookies, kept by hand.
struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Browser {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Reply {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let reply = send(req).await;
        for c in reply.headers.get_all("set-cookie") {
            let c = c.to_str().expect("cookie text");
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').expect("name=value");
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        reply
    }

    async fn get(&mut self, path: &str) -> Reply {
        let req = self.http.get(self.app.url(path));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let req = self.http.post(self.app.url(path)).form(form);
        self.send(req).await
    }

    async fn login(&mut self, username: &str, password: &str) -> Reply {
        self.post(
            "/console/login",
            &[
                ("username", username),
                ("password", password),
                ("platformId", PLATFORM),
            ],
        )
        .await
    }

    async fn login_ok(&mut self, username: &str, password: &str) {
        let r = self.login(username, password).await;
        assert_eq!(r.status, 303, "login of {username}: {}", r.body);
        assert_eq!(r.header("location"), "/console/tokens");
        assert!(self.cookies.contains_key("cxauth_console_at"));
    }

    /// Submits the token form with `fields`: it answers with a redirect to the token page,
    /// which the browser follows (post/redirect/get). Returns the redirect and the page.
    async fn create_token(&mut self, fields: &[(&str, &str)]) -> (Reply, Reply) {
        let made = self.post("/console/tokens", fields).await;
        assert_eq!(made.status, 303, "{}", made.body);
        assert_eq!(made.header("location"), "/console/tokens?done=created");
        let page = self.get("/console/tokens?done=created").await;
        assert_eq!(page.status, 200, "{}", page.body);
        (made, page)
    }

    /// The form token of the session, read from a page.
    async fn csrf(&mut self) -> String {
        let page = self.get("/console/tokens").await;
        assert_eq!(page.status, 200, "{}", page.body);
        form_token(&page.body)
    }
}

fn form_token(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no form token in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end")].to_owned()
}

/// The new token shown once on the answer to the create form.
fn shown_token(html: &str) -> String {
    let at = html.find("id=\"new-token\">").expect("new token shown");
    let rest = &html[at + "id=\"new-token\">".len()..];
    rest[..rest.find('<').expect("end")].to_owned()
}

fn assert_page_headers(r: &Reply, what: &str) {
    assert_eq!(r.header("content-security-policy"), CSP, "{what}");
    assert_eq!(r.header("cache-control"), "no-store", "{what}");
    assert_eq!(r.header("x-frame-options"), "DENY", "{what}");
}

async fn token_count(app: &TestApp, username: &str) -> usize {
    let store = app.state.auth.store();
    let user = store
        .user_by_username(username)
        .await
        .expect("store")
        .expect("user");
    store.api_tokens_of(user.id).await.expect("store").len()
}

async fn api_tokens_status(app: &TestApp, token: &str) -> u16 {
    app.get_x_auth("/voice/api/v1/admin/token", token)
        .await
        .status
}

#[tokio::test]
async fn anonymous_requests_go_to_the_login_page_and_change_nothing() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    for path in [
        "/console",
        "/console/",
        "/console/tokens",
        "/console/accounts",
        "/console/users",
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status, 303, "{path}");
        let to = r.header("location");
        assert!(
            to == "/console/login" || to == "/console/tokens",
            "{path} → {to}"
        );
    }
    for path in FORMS {
        let r = b
            .post(
                path,
                &[
                    ("csrf", "x"),
                    ("name", "n"),
                    ("username", "mallory"),
                    ("password", "p"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        assert_eq!(r.header("location"), "/console/login", "{path}");
    }
    // A forged or foreign cookie is no session either.
    b.cookies
        .insert("cxauth_console_at".into(), "not-a-jwt".into());
    let r = b.get("/console/tokens").await;
    assert_eq!(r.status, 303);
    assert!(b.cookies.is_empty(), "the bad cookie is cleared");
    assert!(
        app.state
            .auth
            .store()
            .user_by_username("mallory")
            .await
            .expect("store")
            .is_none()
    );
    assert_eq!(token_count(&app, "admin").await, 0);
    let users = app.state.auth.store().list_users().await.expect("store");
    assert!(users.iter().all(|u| u.enabled));
}

#[tokio::test]
async fn every_console_answer_has_the_strict_policy_and_no_store() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let login = b.get("/console/login").await;
    assert_eq!(login.status, 200);
    assert_page_headers(&login, "login page");
    assert!(login.header("content-type").starts_with("text/html"));
    b.login_ok("admin", ADMIN_PASSWORD).await;
    for path in PAGES {
        // The login page is for browsers not signed in (a signed-in one is sent on).
        let r = if path == "/console/login" {
            Browser::new(&app).get(path).await
        } else {
            b.get(path).await
        };
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_page_headers(&r, path);
        assert!(!r.body.contains("style="), "{path}: inline style");
        assert!(!r.body.contains("<style"), "{path}: inline style");
        assert_eq!(r.body.matches("<script").count(), 1, "{path}");
        assert!(
            r.body
                .contains("<script src=\"/console/assets/console.js\" defer></script>")
        );
        // Every field has a label.
        for id in r.body.split("<input").skip(1).filter_map(|i| {
            let i = &i[..i.find('>').expect("tag end")];
            (!i.contains("type=\"hidden\"")).then(|| {
                let at = i.find("id=\"").expect("an id on every visible field") + 4;
                i[at..at + i[at..].find('"').expect("id end")].to_owned()
            })
        }) {
            assert!(
                r.body.contains(&format!("for=\"{id}\"")),
                "{path}: no label for {id}"
            );
        }
    }
    let csrf = b.csrf().await;
    let (redirect, created) = b
        .create_token(&[("csrf", &csrf), ("name", "headers")])
        .await;
    assert_page_headers(&redirect, "the token form's redirect");
    assert_page_headers(&created, "the page showing a new token");
    for r in [b.get("/console/nope").await, b.get("/console").await] {
        assert_page_headers(&r, "404 and redirect");
    }
    let css = b.get("/console/assets/console.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-security-policy"), CSP);
    assert!(css.header("content-type").starts_with("text/css"));
    // Every page names the console's icon (so no browser asks for `/favicon.ico`), and it is
    // served under the console's policy, which allows images from the server itself.
    assert!(
        created
            .body
            .contains(r#"<link rel="icon" href="/console/assets/icon.svg""#),
        "no icon link"
    );
    let icon = b.get("/console/assets/icon.svg").await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), "image/svg+xml");
    assert!(icon.body.starts_with("<svg "), "{}", icon.body);
    assert!(CSP.contains("img-src 'self'"));
    // The API keeps its own policy.
    let api = app.healthz().await;
    assert_eq!(
        api.header("content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
}

/// `YYYY-MM-DD`, `days` after the app's now.
fn date_in(app: &TestApp, days: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(app.clock.now_ms() / 1000 + days * 86_400)
        .expect("time");
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The rows of the token list: (name, hint, expires, last used, delete id), in page order.
fn token_rows(html: &str) -> Vec<[String; 5]> {
    let cell = |row: &str, label: &str| -> String {
        let key = format!("data-label=\"{label}\"");
        let at = row
            .find(&key)
            .unwrap_or_else(|| panic!("no {label} in {row}"));
        let rest = &row[at..];
        let rest = &rest[rest.find('>').expect("cell") + 1..];
        let text = &rest[..rest.find("</td>").expect("cell end")];
        text.replace("<code class=\"hint\">", "")
            .replace("</code>", "")
    };
    html.split("<tr data-hint=")
        .skip(1)
        .map(|row| {
            let at = row.find("name=\"id\" value=\"").expect("delete form") + 17;
            let id = row[at..at + row[at..].find('"').expect("end")].to_owned();
            [
                cell(row, "Name"),
                cell(row, "Token"),
                cell(row, "Expires"),
                cell(row, "Last used"),
                id,
            ]
        })
        .collect()
}

#[tokio::test]
async fn tokens_are_created_shown_once_used_sorted_and_deleted() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    b.login_ok("admin", ADMIN_PASSWORD).await;
    let empty = b.get("/console/tokens").await;
    assert!(empty.body.contains("No API tokens yet."));
    let csrf = form_token(&empty.body);
    let day = date_in(&app, 30);
    let (_, created) = b
        .create_token(&[("csrf", &csrf), ("name", "IVR callout"), ("expires", &day)])
        .await;
    let token = shown_token(&created.body);
    assert!(token.starts_with("aws80:"), "{token}");
    let (_, second) = b
        .create_token(&[("csrf", &csrf), ("name", "nightly <export>")])
        .await;
    let token2 = shown_token(&second.body);
    // Listed by name and hint only, never in full, and never again in full on a later page.
    let list = b.get("/console/tokens").await;
    assert!(!list.body.contains(&token) && !list.body.contains(&token2));
    assert!(!list.body.contains("No API tokens yet."));
    assert!(!list.body.contains("id=\"new-token\""));
    assert!(!list.body.contains("<export>"), "never unescaped");
    assert!(
        list.body.contains("nightly &#60;export&#62;"),
        "names are escaped: {}",
        list.body
    );
    let rows = token_rows(&list.body);
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Never used: newest first.
    assert_eq!(rows[0][0], "nightly &#60;export&#62;");
    let first = &rows[1];
    assert_eq!(first[0], "IVR callout");
    assert_eq!(first[1], format!("…{}", &token[token.len() - 4..]));
    assert_eq!(first[2], format!("{day} 23:59 UTC"));
    assert_eq!(first[3], "never");
    // Used with curl against the RingCX endpoint: its last use shows, and it sorts first.
    assert_eq!(api_tokens_status(&app, &token).await, 200);
    app.state
        .auth
        .flush_api_token_uses(FlushPace::Full)
        .await
        .expect("flush");
    let rows = token_rows(&b.get("/console/tokens").await.body);
    assert_eq!(rows[0][0], "IVR callout", "{rows:?}");
    assert!(rows[0][3].ends_with(" UTC"), "last used shown: {rows:?}");
    let id = rows[0][4].clone();
    let deleted = b
        .post("/console/tokens/delete", &[("csrf", &csrf), ("id", &id)])
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(deleted.header("location"), "/console/tokens?done=deleted");
    assert_eq!(api_tokens_status(&app, &token).await, 401);
    assert_eq!(api_tokens_status(&app, &token2).await, 200);
    let after = b.get("/console/tokens?done=deleted").await;
    assert!(after.body.contains("Token deleted."));
    assert_eq!(token_rows(&after.body).len(), 1);
    // Deleting it again: 404, like the API.
    let again = b
        .post("/console/tokens/delete", &[("csrf", &csrf), ("id", &id)])
        .await;
    assert_eq!(again.status, 404);
}

/// Post/redirect/get: the new token rides to the page in a one-time cookie, so reloading the
/// page (or opening it again) neither submits the form again nor shows the token again; a
/// cookie the session did not make is never shown, and is cleared.
#[tokio::test]
async fn a_new_token_is_shown_once_and_a_reload_makes_no_second_one() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    b.login_ok("admin", ADMIN_PASSWORD).await;
    let csrf = b.csrf().await;
    let made = b
        .post("/console/tokens", &[("csrf", &csrf), ("name", "once")])
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    // Neither the redirect's address nor its body holds the token; only the cookie does.
    let sealed = b
        .cookies
        .get("cxauth_console_new")
        .expect("the one-time cookie")
        .clone();
    let (token, _) = sealed.rsplit_once('.').expect("TOKEN.DIGEST");
    assert!(token.starts_with("aws80:"), "{sealed}");
    assert!(!made.header("location").contains(token));
    assert!(!made.body.contains(token));
    let set = made.header("set-cookie");
    for want in [
        "Path=/console/tokens",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=60",
    ] {
        assert!(set.contains(want), "{set}");
    }

    let page = b.get("/console/tokens?done=created").await;
    assert_eq!(shown_token(&page.body), token);
    assert!(!page.body.contains("It was shown once"));
    assert!(
        !b.cookies.contains_key("cxauth_console_new"),
        "the page clears the cookie"
    );
    // The reload: the list and a notice, not the token, and still one token.
    let reload = b.get("/console/tokens?done=created").await;
    assert_eq!(reload.status, 200);
    assert!(!reload.body.contains(token));
    assert!(!reload.body.contains("id=\"new-token\""));
    assert!(reload.body.contains("It was shown once"), "{}", reload.body);
    assert_eq!(token_rows(&reload.body).len(), 1);
    assert_eq!(token_count(&app, "admin").await, 1);

    // Not shown: the same cookie in another session of the same user, an altered digest, a
    // bare token (a cookie planted by another host). Each is cleared.
    let mut other = Browser::new(&app);
    other.login_ok("admin", ADMIN_PASSWORD).await;
    let altered = format!("{token}.{}", "A".repeat(43));
    for planted in [sealed.as_str(), altered.as_str(), token] {
        other
            .cookies
            .insert("cxauth_console_new".into(), planted.to_owned());
        let r = other.get("/console/tokens?done=created").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            !r.body.contains("id=\"new-token\""),
            "{planted}: {}",
            r.body
        );
        assert!(
            !other.cookies.contains_key("cxauth_console_new"),
            "{planted}"
        );
    }
    // The token works: the cookie only carried it.
    assert_eq!(api_tokens_status(&app, token).await, 200);
}

#[tokio::test]
async fn nobody_deletes_a_token_they_do_not_own_or_manage() {
    let app = TestApp::spawn().await;
    app.create_user("plain", Some("admin"), &[], &[]).await;
    let mut admin = Browser::new(&app);
    admin.login_ok("admin", ADMIN_PASSWORD).await;
    let csrf = admin.csrf().await;
    let (_, made) = admin
        .create_token(&[("csrf", &csrf), ("name", "admin's")])
        .await;
    let token = shown_token(&made.body);
    let id = token_rows(&admin.get("/console/tokens").await.body)[0][4].clone();
    let mut plain = Browser::new(&app);
    plain.login_ok("plain", "plain-pw").await;
    let pcsrf = plain.csrf().await;
    let r = plain
        .post("/console/tokens/delete", &[("csrf", &pcsrf), ("id", &id)])
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(api_tokens_status(&app, &token).await, 200);
    // Its own list does not show the admin's token.
    assert!(token_rows(&plain.get("/console/tokens").await.body).is_empty());
}

#[tokio::test]
async fn forms_without_the_sessions_form_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.create_user("kid", Some("admin"), &[], &[]).await;
    let mut b = Browser::new(&app);
    b.login_ok("admin", ADMIN_PASSWORD).await;
    let good = b.csrf().await;
    let mut other = Browser::new(&app);
    other.login_ok("admin", ADMIN_PASSWORD).await;
    let foreign = other.csrf().await;
    assert_ne!(good, foreign, "each session has its own form token");
    let kid = app
        .state
        .auth
        .store()
        .user_by_username("kid")
        .await
        .expect("store")
        .expect("kid");
    let kid_disable = format!("/console/users/{}/disable", kid.id);
    for bad in [None, Some(""), Some("wrong"), Some(foreign.as_str())] {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut f: Vec<(&str, String)> =
                extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            if let Some(t) = bad {
                f.push(("csrf", t.to_owned()));
            }
            f
        };
        for (path, fields) in [
            ("/console/tokens", with(&[("name", "forged")])),
            (kid_disable.as_str(), with(&[])),
            (
                "/console/users",
                with(&[("username", "forged"), ("password", "forged-pw")]),
            ),
            ("/console/logout", with(&[])),
        ] {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = b.post(path, &f).await;
            assert_eq!(r.status, 403, "{path} with {bad:?}: {}", r.body);
            assert!(r.body.contains("Form refused"), "{}", r.body);
        }
    }
    // The right token, but sent by another site (as a browser reports it): refused too.
    let cross = b
        .send(
            b.http
                .post(app.url("/console/tokens"))
                .header("sec-fetch-site", "cross-site")
                .form(&[("csrf", good.as_str()), ("name", "x")]),
        )
        .await;
    assert_eq!(cross.status, 403);
    let origin = b
        .send(
            b.http
                .post(app.url("/console/tokens"))
                .header("origin", "http://evil.example")
                .form(&[("csrf", good.as_str()), ("name", "x")]),
        )
        .await;
    assert_eq!(origin.status, 403);
    let login_from_elsewhere = b
        .send(
            b.http
                .post(app.url("/console/login"))
                .header("sec-fetch-site", "cross-site")
                .form(&[
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("platformId", PLATFORM),
                ]),
        )
        .await;
    assert_eq!(login_from_elsewhere.status, 403);
    // Nothing changed: no token, no user, the kid enabled, the session alive.
    assert_eq!(token_count(&app, "admin").await, 0);
    let store = app.state.auth.store();
    assert!(
        store
            .user_by_username("forged")
            .await
            .expect("store")
            .is_none()
    );
    assert!(
        store
            .user_by_username("kid")
            .await
            .expect("s")
            .expect("kid")
            .enabled
    );
    assert_eq!(b.get("/console/tokens").await.status, 200);
    // And the same forms with the right token and a same-origin browser work.
    let ok = b
        .send(
            b.http
                .post(app.url("/console/tokens"))
                .header("sec-fetch-site", "same-origin")
                .header("origin", app.base.clone())
                .form(&[("csrf", good.as_str()), ("name", "real")]),
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(token_count(&app, "admin").await, 1);
}

#[tokio::test]
async fn a_plain_user_cannot_see_or_post_the_user_pages() {
    let app = TestApp::spawn().await;
    let plain = app.create_user("plain", Some("admin"), &[], &[]).await;
    app.create_user("sibling", Some("admin"), &[], &[]).await;
    let mut b = Browser::new(&app);
    b.login_ok("plain", "plain-pw").await;
    let tokens = b.get("/console/tokens").await;
    assert!(
        !tokens.body.contains("/console/users"),
        "no Users link for a plain user"
    );
    let csrf = form_token(&tokens.body);
    assert_eq!(b.get("/console/users").await.status, 403);
    // The API answers the same.
    let session = app.login("plain").await;
    assert_eq!(
        app.get_bearer("/voice/api/v1/admin/users", &session.access_token)
            .await
            .status,
        403
    );
    let r = b
        .post(
            "/console/users",
            &[
                ("csrf", &csrf),
                ("username", "made"),
                ("password", "made-pw"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    for action in ["disable", "enable", "revoke", "password"] {
        let r = b
            .post(
                &format!("/console/users/1/{action}"),
                &[("csrf", &csrf), ("password", "taken-over")],
            )
            .await;
        assert_eq!(r.status, 403, "{action}: {}", r.body);
    }
    let store = app.state.auth.store();
    assert!(store.user_by_username("made").await.expect("s").is_none());
    assert!(
        store
            .user_by_id(1)
            .await
            .expect("s")
            .expect("admin")
            .enabled
    );
    app.login_admin().await;
    assert!(plain > 1);
}

#[tokio::test]
async fn a_manager_acts_only_within_its_subtree_and_below_its_rights() {
    let app = TestApp::spawn().await;
    app.create_user("mgr", Some("admin"), &[], &["MANAGE_USERS"])
        .await;
    let kid = app.create_user("kid", Some("mgr"), &[], &[]).await;
    let boss = app
        .create_user("boss", Some("mgr"), &[], &["SUPER_USER"])
        .await;
    let outsider = app.create_user("outsider", Some("admin"), &[], &[]).await;
    let mgr = app
        .state
        .auth
        .store()
        .user_by_username("mgr")
        .await
        .expect("s")
        .expect("mgr")
        .id;
    let mut b = Browser::new(&app);
    b.login_ok("mgr", "mgr-pw").await;
    let page = b.get("/console/users").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("data-username=\"kid\""));
    assert!(!page.body.contains("data-username=\"outsider\""));
    assert!(!page.body.contains("data-username=\"admin\""));
    // A manager may not give SUPER_USER.
    assert!(!page.body.contains("value=\"SUPER_USER\""));
    let csrf = form_token(&page.body);
    let act = |id: i64, action: &str| format!("/console/users/{id}/{action}");
    // Outside the subtree (a sibling, the root): 404, whatever it is.
    for id in [outsider, 1, 999_999] {
        for action in ["disable", "revoke", "password"] {
            let r = b
                .post(&act(id, action), &[("csrf", &csrf), ("password", "x-pw")])
                .await;
            assert_eq!(r.status, 404, "{id} {action}: {}", r.body);
            assert!(
                r.body.contains("href=\"/console/users\""),
                "a way back: {}",
                r.body
            );
        }
    }
    // Itself: refused with a reason.
    let me = b.post(&act(mgr, "disable"), &[("csrf", &csrf)]).await;
    assert_eq!(me.status, 400, "{}", me.body);
    // A user holding a role the manager lacks: 403.
    let up = b
        .post(
            &act(boss, "password"),
            &[("csrf", &csrf), ("password", "mine-now")],
        )
        .await;
    assert_eq!(up.status, 403, "{}", up.body);
    // Creating: no role above its own, no parent outside its subtree, no foreign account.
    for (fields, want) in [
        (vec![("role", "SUPER_USER")], 403),
        (vec![("parent", "1")], 400),
        (vec![("parent", &*outsider.to_string().leak())], 400),
        (vec![("grant", "10000001")], 400),
        (vec![("parent", "abc")], 400),
    ] {
        let mut f = vec![
            ("csrf", csrf.as_str()),
            ("username", "newbie"),
            ("password", "newbie-pw"),
        ];
        f.extend(fields.iter().copied());
        let r = b.post("/console/users", &f).await;
        assert_eq!(r.status, want, "{fields:?}: {}", r.body);
    }
    let store = app.state.auth.store();
    assert!(store.user_by_username("newbie").await.expect("s").is_none());
    assert!(
        store
            .user_by_id(outsider)
            .await
            .expect("s")
            .expect("o")
            .enabled
    );
    assert!(store.user_by_id(boss).await.expect("s").expect("b").enabled);
    app.login("outsider").await;
    app.login("boss").await;

    // Within its subtree: created under kid, with a role it holds; audited with its name.
    let kid_s = kid.to_string();
    let made = b
        .post(
            "/console/users",
            &[
                ("csrf", &csrf),
                ("username", "newbie"),
                ("password", "newbie-pw"),
                ("first_name", "New"),
                ("parent", &kid_s),
                ("role", "MANAGE_USERS"),
            ],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    assert_eq!(made.header("location"), "/console/users?done=created");
    let newbie = store
        .user_by_username("newbie")
        .await
        .expect("s")
        .expect("newbie");
    assert_eq!(newbie.parent_id, Some(kid));
    assert_eq!(newbie.roles, vec!["MANAGE_USERS".to_owned()]);
    app.login("newbie").await;
    let dup = b
        .post(
            "/console/users",
            &[
                ("csrf", &csrf),
                ("username", "newbie"),
                ("password", "again-pw"),
            ],
        )
        .await;
    assert_eq!(dup.status, 400, "{}", dup.body);
    assert!(dup.body.contains("already exists"), "{}", dup.body);
    let audit = app.audit_trail().await;
    assert!(
        audit
            .iter()
            .any(|e| e.event == "user.create" && e.detail.contains("by mgr")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn disabling_revoking_and_resetting_take_effect_at_once() {
    let app = TestApp::spawn().await;
    let kid = app.create_user("kid", Some("admin"), &[], &[]).await;
    let kid_session = app.login("kid").await;
    let kid_token = app
        .client
        .create_api_token(&bearer(&kid_session))
        .await
        .expect("token");
    // Warm every cache with the kid's credentials first.
    for _ in 0..3 {
        assert_eq!(api_tokens_status(&app, &kid_token).await, 200);
        assert_eq!(
            app.get_bearer("/voice/api/v1/admin/token", &kid_session.access_token)
                .await
                .status,
            200
        );
    }
    let mut b = Browser::new(&app);
    b.login_ok("admin", ADMIN_PASSWORD).await;
    let csrf = b.csrf().await;
    let act = |action: &str| format!("/console/users/{kid}/{action}");
    let r = b.post(&act("disable"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(api_tokens_status(&app, &kid_token).await, 401);
    assert_eq!(
        app.get_bearer("/voice/api/v1/admin/token", &kid_session.access_token)
            .await
            .status,
        401
    );
    let page = b.get("/console/users?done=disable").await;
    assert!(page.body.contains("User disabled"));
    assert!(
        page.body
            .contains(&format!("action=\"/console/users/{kid}/enable\""))
    );
    let r = b.post(&act("enable"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(api_tokens_status(&app, &kid_token).await, 200);
    // A new password: the old one and the old sessions stop; the API token stays.
    let s2 = app.login("kid").await;
    let r = b
        .post(
            &act("password"),
            &[("csrf", &csrf), ("password", "kid-new-pw")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.login_form("kid", "kid-pw").await.status, 401);
    assert_eq!(app.login_form("kid", "kid-new-pw").await.status, 200);
    assert_eq!(
        app.get_bearer("/voice/api/v1/admin/token", &s2.access_token)
            .await
            .status,
        401
    );
    assert_eq!(api_tokens_status(&app, &kid_token).await, 200);
    // Revoke: every credential, API tokens included.
    let r = b.post(&act("revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(api_tokens_status(&app, &kid_token).await, 401);
    let audit = app.audit_trail().await;
    for event in [
        "user.disable",
        "user.enable",
        "password.change",
        "credentials.revoke",
    ] {
        assert!(
            audit.iter().any(|e| e.event == event
                && e.user_id == Some(kid)
                && e.detail.contains("by admin")),
            "{event}: {audit:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_password_gets_the_apis_generic_error_and_the_throttle_applies() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let wrong = b.login("admin", "wrong-password").await;
    let unknown = b.login("nobody-at-all", "wrong-password").await;
    let platform = b
        .post(
            "/console/login",
            &[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("platformId", "other"),
            ],
        )
        .await;
    let api = app.login_form("admin", "wrong-password").await;
    let generic = api.json()["details"].as_str().expect("details").to_owned();
    for r in [&wrong, &unknown, &platform] {
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains(&generic), "{}", r.body);
        assert!(
            !r.body.contains("wrong-password"),
            "the password is never echoed"
        );
        assert!(b.cookies.is_empty());
    }
    // The console form counts against the same budget as the API, and says 429 with
    // Retry-After once it is spent.
    let mut throttled = None;
    for _ in 0..50 {
        let r = b.login("admin", "wrong-password").await;
        assert!(r.status == 401 || r.status == 429, "{}", r.status);
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
    }
    let r = throttled.expect("the console login is throttled");
    assert!(r.header("retry-after").parse::<u64>().expect("seconds") >= 1);
    assert!(r.body.contains("Too many login attempts"));
    assert_eq!(
        app.login_admin_form().await.status,
        429,
        "the API shares the budget"
    );
    let audit = app.audit_trail().await;
    assert!(
        audit
            .iter()
            .any(|e| e.event == "login" && e.outcome == "throttled")
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_and_logout_ends_the_session() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    b.login_ok("admin", ADMIN_PASSWORD).await;
    // Signed in, the login page sends the browser to its tokens.
    let again = b.get("/console/login").await;
    assert_eq!(again.status, 303, "{}", again.body);
    assert_eq!(again.header("location"), "/console/tokens");
    let csrf = b.csrf().await;
    let first_rt = b.cookies["cxauth_console_rt"].clone();
    app.clock.advance(Duration::from_secs(6 * 60));
    // Two tabs at once with the same expired session: both pages load (the rotation's grace
    // window), and the session survives.
    let (mut t1, mut t2) = (Browser::new(&app), Browser::new(&app));
    t1.cookies = b.cookies.clone();
    t2.cookies = b.cookies.clone();
    let (r1, r2) = tokio::join!(t1.get("/console/tokens"), t2.get("/console/tokens"));
    assert_eq!(
        (r1.status, r2.status),
        (200, 200),
        "{} / {}",
        r1.body,
        r2.body
    );
    let page = b.get("/console/accounts").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_ne!(b.cookies["cxauth_console_rt"], first_rt, "rotated");
    assert_eq!(
        form_token(&page.body),
        csrf,
        "the form token survives the refresh"
    );
    // Logout ends the session itself, not only the browser's cookies.
    let stolen = b.cookies.clone();
    let out = b.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), "/console/login?out");
    assert!(b.cookies.is_empty());
    let mut thief = Browser::new(&app);
    thief.cookies = stolen;
    assert_eq!(thief.get("/console/tokens").await.status, 303);
    let bye = b.get("/console/login?out").await;
    assert!(bye.body.contains("You are logged out."));
    // The ended session's access cookie no longer skips the form either.
    assert_eq!(thief.get("/console/login").await.status, 200);
    let _ = app.clock.now_ms();
}

#[tokio::test]
async fn hostile_form_input_gets_a_clear_4xx_page() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let huge = "u".repeat(20_000);
    let cases: Vec<(Method, &str, Fields, u16)> = vec![
        (
            Method::POST,
            "/console/login",
            vec![
                ("username", &huge),
                ("password", "p"),
                ("platformId", "aws80"),
            ],
            400,
        ),
        (
            Method::POST,
            "/console/login",
            vec![
                ("username", "admin"),
                ("password", &huge),
                ("platformId", "aws80"),
            ],
            400,
        ),
        (
            Method::POST,
            "/console/login",
            vec![
                ("username", "admin"),
                ("password", "p"),
                ("platformId", "bad platform/../"),
            ],
            401,
        ),
        (
            Method::POST,
            "/console/login",
            vec![
                ("username", "admin"),
                ("username", "admin"),
                ("password", "p"),
                ("platformId", "aws80"),
            ],
            400,
        ),
        (Method::POST, "/console/login", vec![], 400),
    ];
    for (method, path, form, want) in cases {
        let r = b
            .send(b.http.request(method, app.url(path)).form(&form))
            .await;
        assert_eq!(
            r.status,
            want,
            "{path} {:?}: {}",
            form.iter().map(|f| f.0).collect::<Vec<_>>(),
            &r.body[..r.body.len().min(300)]
        );
        assert!(r.header("content-type").starts_with("text/html"));
        assert!(!r.body.contains(&huge[..300]), "a huge field is not echoed");
    }
    let not_utf8 = b
        .send(
            b.http
                .post(app.url("/console/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b"username=%FF%FE&password=\xff".to_vec()),
        )
        .await;
    assert!(matches!(not_utf8.status, 400 | 401), "{}", not_utf8.status);
    let too_big = b
        .send(
            b.http
                .post(app.url("/console/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "username={}",
                    "a".repeat(app.config.body_limit + 10)
                )),
        )
        .await;
    assert_eq!(too_big.status, 413);

    b.login_ok("admin", ADMIN_PASSWORD).await;
    let csrf = b.csrf().await;
    let long_name = "n".repeat(1000);
    let form_cases: Vec<(&str, Fields, u16)> = vec![
        ("/console/tokens", vec![("name", "")], 400),
        ("/console/tokens", vec![("name", &long_name)], 400),
        ("/console/tokens", vec![("name", "x\u{7}y")], 400),
        (
            "/console/tokens",
            vec![("name", "n"), ("expires", "tomorrow")],
            400,
        ),
        (
            "/console/tokens",
            vec![("name", "n"), ("expires", "2001-01-01")],
            400,
        ),
        (
            "/console/tokens",
            vec![("name", "n"), ("expires", "2030-02-31")],
            400,
        ),
        ("/console/tokens", vec![("name", "a"), ("name", "b")], 400),
        (
            "/console/tokens/delete",
            vec![("id", "aws80:not-a-token")],
            404,
        ),
        ("/console/tokens/delete", vec![("id", &huge)], 404),
        ("/console/tokens/delete", vec![], 400),
        (
            "/console/users",
            vec![("username", &huge), ("password", "p")],
            400,
        ),
        (
            "/console/users",
            vec![("username", "with space"), ("password", "p")],
            400,
        ),
        (
            "/console/users",
            vec![("username", "ok"), ("password", &huge)],
            400,
        ),
        (
            "/console/users",
            vec![("username", "ok"), ("password", "p"), ("role", "ROOT")],
            400,
        ),
        (
            "/console/users",
            vec![("username", "ok"), ("password", "p"), ("grant", "-1")],
            400,
        ),
        (
            "/console/users",
            vec![
                ("username", "ok"),
                ("password", "p"),
                ("grant", "99999999999999999999"),
            ],
            400,
        ),
        (
            "/console/users",
            vec![
                ("username", "ok"),
                ("password", "p"),
                ("first_name", &long_name),
            ],
            400,
        ),
        ("/console/users/abc/disable", vec![], 404),
        ("/console/users/-1/disable", vec![], 404),
        ("/console/users/99999999999999999999/disable", vec![], 404),
        ("/console/users/999999/disable", vec![], 404),
        ("/console/users/2/explode", vec![], 404),
    ];
    for (path, fields, want) in form_cases {
        let mut f = vec![("csrf", csrf.as_str())];
        f.extend(fields.iter().copied());
        let r = b.post(path, &f).await;
        assert_eq!(
            r.status,
            want,
            "{path} {:?}: {}",
            fields.iter().map(|f| (f.0, f.1.len())).collect::<Vec<_>>(),
            &r.body[..r.body.len().min(400)]
        );
        assert!(r.header("content-type").starts_with("text/html"), "{path}");
        assert_page_headers(&r, path);
    }
    assert_eq!(token_count(&app, "admin").await, 0);
    assert!(
        app.state
            .auth
            .store()
            .user_by_username("ok")
            .await
            .expect("s")
            .is_none()
    );
    // Still signed in and well.
    assert_eq!(b.get("/console/users").await.status, 200);
}

#[tokio::test]
async fn cookies_are_secure_only_when_a_trusted_proxy_says_tls() {
    async fn login_cookies(app: &TestApp, proto: Option<&str>) -> Vec<String> {
        let mut b = Browser::new(app);
        let mut req = b.http.post(app.url("/console/login")).form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("platformId", PLATFORM),
        ]);
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        let r = b.send(req).await;
        assert_eq!(r.status, 303, "{}", r.body);
        r.headers
            .get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().expect("text").to_owned())
            .collect()
    }
    let direct = TestApp::spawn().await;
    for c in login_cookies(&direct, Some("https")).await {
        assert!(
            !c.contains("Secure"),
            "an untrusted peer's header is ignored: {c}"
        );
        for want in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
            assert!(c.contains(want), "{c}");
        }
    }
    let proxied =
        TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")]).await;
    let secure = login_cookies(&proxied, Some("https")).await;
    assert_eq!(secure.len(), 2);
    assert!(secure.iter().all(|c| c.contains("; Secure")), "{secure:?}");
    let plain = login_cookies(&proxied, Some("http")).await;
    assert!(plain.iter().all(|c| !c.contains("Secure")), "{plain:?}");
}
