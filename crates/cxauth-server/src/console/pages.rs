//! The console's pages: askama templates (under `templates/console/`, checked and compiled into
//! the binary; every value is HTML-escaped) and the rows they show.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// What every page's frame shows: who is signed in, the navigation, the logout form.
pub struct Chrome {
    /// The signed-in username; `None` on the login and error pages.
    pub user: Option<String>,
    /// Whether the Users page is offered.
    pub manager: bool,
    /// The session's form token, for the logout form.
    pub csrf: String,
    /// The navigation entry of this page.
    pub current: &'static str,
}

impl Chrome {
    /// The frame of a page shown to nobody in particular.
    pub fn anonymous() -> Self {
        Chrome {
            user: None,
            manager: false,
            csrf: String::new(),
            current: "",
        }
    }

    /// The frame of a page of `s`'s session.
    pub fn of(s: &super::session::Signed, current: &'static str) -> Self {
        Chrome {
            user: Some(s.who.user.username.clone()),
            manager: s.manager,
            csrf: s.form_token.clone(),
            current,
        }
    }
}

/// The login form.
#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage<'a> {
    /// Frame.
    pub chrome: Chrome,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
    /// A message after logout.
    pub notice: Option<&'a str>,
    /// The username typed before (never the password).
    pub username: &'a str,
    /// The platform id typed before.
    pub platform_id: &'a str,
}

/// One API token as the console lists it (never the token itself).
pub struct TokenRow {
    /// What the delete form sends back to name it.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Enough of it to recognise it: the platform and the last characters.
    pub hint: String,
    /// When it was made.
    pub created: String,
    /// When it stops working, or "never".
    pub expires: String,
    /// When it was last used, or "never".
    pub last_used: String,
}

/// The API tokens page.
#[derive(Template)]
#[template(path = "console/tokens.html")]
pub struct TokensPage<'a> {
    /// Frame.
    pub chrome: Chrome,
    /// What the last operation did.
    pub notice: Option<&'a str>,
    /// A token just made, shown this once.
    pub new_token: Option<String>,
    /// The caller's tokens, most recently used first.
    pub tokens: Vec<TokenRow>,
    /// The longest token name accepted.
    pub max_name: usize,
}

/// A main account and its sub-accounts (id, name) the caller may use.
pub struct MainRow {
    /// Main account id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it is active.
    pub active: bool,
    /// Its sub-accounts the caller may use: (id, name).
    pub subs: Vec<(String, String)>,
}

/// The accounts page.
#[derive(Template)]
#[template(path = "console/accounts.html")]
pub struct AccountsPage {
    /// Frame.
    pub chrome: Chrome,
    /// The caller's full name.
    pub me_name: String,
    /// The caller's username.
    pub me_username: String,
    /// The caller's id.
    pub me_id: i64,
    /// The caller's roles.
    pub me_roles: Vec<String>,
    /// Its accounts, grouped by main account.
    pub mains: Vec<MainRow>,
}

/// One user of the caller's subtree.
pub struct UserRow {
    /// Id (the action forms' path).
    pub id: i64,
    /// Username.
    pub username: String,
    /// Full name.
    pub full_name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether it may log in.
    pub enabled: bool,
    /// Depth below the caller (indentation), at most 4.
    pub depth: usize,
    /// Whether it is the caller (no actions).
    pub is_self: bool,
}

/// The users page of a manager.
#[derive(Template)]
#[template(path = "console/users.html")]
pub struct UsersPage<'a> {
    /// Frame.
    pub chrome: Chrome,
    /// What the last operation did.
    pub notice: Option<&'a str>,
    /// The caller and its descendants, in tree order.
    pub users: Vec<UserRow>,
    /// The roles the caller may give.
    pub roles: Vec<String>,
    /// The sub-accounts the caller may grant: (id, name).
    pub accounts: Vec<(String, String)>,
}

/// An error, with a way back.
#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage<'a> {
    /// Frame.
    pub chrome: Chrome,
    /// Heading.
    pub title: &'a str,
    /// What went wrong, for a person.
    pub message: &'a str,
    /// Where to go from here.
    pub back: &'a str,
    /// The words of that link.
    pub back_label: &'a str,
}

/// A rendered page, never cached (security headers add the rest).
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: a template did not render");
            let mut res = (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>The page could not be shown.</p>"),
            )
                .into_response();
            res.extensions_mut().insert(crate::error::OwnBody);
            res
        }
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM UTC`.
pub fn when(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "?".into(),
    }
}
