//! One function per console page or form. GET pages render; POST forms check the session's form
//! token, call the service, and answer with a redirect (post/redirect/get) carrying only a fixed
//! notice word, never data, so that reloading a page never submits a form again. A new API
//! token rides from its form to the token page in a one-time cookie bound to the session
//! ([`super::cookies::NEW_TOKEN_COOKIE`]), never in a URL; that page shows it and clears the
//! cookie (docs/decisions.md says what "once" does and does not promise).

use super::cookies::{
    ACCESS_COOKIE, NEW_TOKEN_COOKIE, REFRESH_COOKIE, clear_cookies, clear_new_token_cookie, cookie,
    new_token_cookie, session_cookies,
};
use super::error::ConsoleError;
use super::pages::{
    AccountsPage, Chrome, LoginPage, MainRow, TokenRow, TokensPage, UserRow, UsersPage, render,
    when,
};
use super::session::{ClientInfo, Signed, signed};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cxauth_core::admin::KNOWN_ROLES;
use cxauth_core::service::{
    AuthError, LoginInput, MAX_API_TOKEN_NAME_CHARS, MAX_USERNAME_LEN, ManagedUserSpec,
    PresentedToken,
};
use cxauth_core::store::ROLE_SUPER_USER;
use secrecy::SecretString;

/// A submitted form: its fields in order (a field may repeat, e.g. check boxes).
struct Form(Vec<(String, String)>);

impl Form {
    fn read(body: Result<Bytes, BytesRejection>) -> Result<Form, ConsoleError> {
        let body = body.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ConsoleError::TooLarge
            } else {
                ConsoleError::BadForm("the form could not be read".into())
            }
        })?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map(Form)
            .map_err(|_| ConsoleError::BadForm("the form could not be read".into()))
    }

    /// A field given at most once; twice is refused (which one would count?).
    fn one(&self, name: &str) -> Result<Option<&str>, ConsoleError> {
        let mut it = self.0.iter().filter(|(k, _)| k == name);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(ConsoleError::BadForm(format!(
                "the field {name} was sent twice"
            )));
        }
        Ok(first)
    }

    /// A field that must be there and not blank.
    fn required(&self, name: &str, label: &str) -> Result<&str, ConsoleError> {
        match self.one(name)? {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ConsoleError::BadForm(format!("{label} is required"))),
        }
    }

    /// Every value of a repeated field.
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The page's session, then `page` with it; refreshed cookies ride on the answer either way.
async fn with_session<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientInfo,
    back: &str,
    page: F,
) -> Response
where
    F: FnOnce(Signed) -> Fut,
    Fut: std::future::Future<Output = (Signed, Result<Response, ConsoleError>)>,
{
    match signed(state, headers, client).await {
        Ok(s) => {
            let (s, res) = page(s).await;
            s.finish(res, back)
        }
        Err(e) => e.page(back),
    }
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---------------------------------------------------------------------------------- login

fn login_form(
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
    username: &str,
    platform_id: &str,
) -> Response {
    // Echo back only what fits the fields; never the password.
    let fit = |s: &str, n: usize| {
        if s.len() <= n {
            s.to_owned()
        } else {
            String::new()
        }
    };
    let page = LoginPage {
        chrome: Chrome::anonymous(),
        error,
        notice,
        username: &fit(username, MAX_USERNAME_LEN),
        platform_id: &fit(platform_id, 64),
    };
    let mut res = (status, render(&page)).into_response();
    res.extensions_mut().insert(crate::error::OwnBody);
    res
}

/// `GET /console/login`. A browser that is already signed in (its access cookie still
/// authenticates) goes to its tokens instead of a form it has no use for. Only the access
/// cookie is tried: showing a page must not rotate the refresh token.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(at) = cookie(&headers, ACCESS_COOKIE)
        && state
            .auth
            .authenticate(PresentedToken::Bearer(at))
            .await
            .is_ok()
    {
        return see_other("/console/tokens");
    }
    let notice = (q.as_deref() == Some("out")).then_some("You are logged out.");
    login_form(StatusCode::OK, None, notice, "", "aws80")
}

/// `POST /console/login`: the login endpoint's own path (`Auth::login`), so the throttle, the
/// audit trail and the one generic failure apply unchanged.
pub async fn login_submit(
    State(state): State<AppState>,
    client: ClientInfo,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !client.same_origin {
        return ConsoleError::Forgery.into_response();
    }
    let form = match Form::read(body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let field = |n| form.one(n).map(|v| v.unwrap_or_default());
    let (username, password, platform_id) =
        match (field("username"), field("password"), field("platformId")) {
            (Ok(u), Ok(p), Ok(pl)) => (u, p, pl),
            _ => {
                return login_form(
                    StatusCode::BAD_REQUEST,
                    Some("Each field may be sent once."),
                    None,
                    "",
                    "",
                );
            }
        };
    if username.is_empty() || password.is_empty() || platform_id.is_empty() {
        return login_form(
            StatusCode::BAD_REQUEST,
            Some("Enter your username, password and platform id."),
            None,
            username,
            platform_id,
        );
    }
    let input = LoginInput {
        username: username.to_owned(),
        password: SecretString::from(password.to_owned()),
        platform_id: platform_id.to_owned(),
    };
    match state.auth.login(input, &client.ctx).await {
        Ok(session) => {
            let Some(rt) = session.refresh_token.as_deref() else {
                return ConsoleError::Auth(AuthError::Internal(
                    "a login without a refresh token".into(),
                ))
                .into_response();
            };
            let mut res = see_other("/console/tokens");
            for c in session_cookies(&session.access_token, rt, client.secure) {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            res
        }
        Err(AuthError::LoginFailed) => login_form(
            StatusCode::UNAUTHORIZED,
            Some(crate::error::LOGIN_FAILED_DETAILS),
            None,
            username,
            platform_id,
        ),
        Err(AuthError::BadRequest(m)) => login_form(
            StatusCode::BAD_REQUEST,
            Some(&m),
            None,
            username,
            platform_id,
        ),
        Err(AuthError::Throttled { retry_after }) => {
            let mut res = login_form(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many login attempts. Wait a little and try again."),
                None,
                username,
                platform_id,
            );
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            res.headers_mut()
                .insert(header::RETRY_AFTER, secs.max(1).into());
            res
        }
        Err(e) => ConsoleError::Auth(e).into_response(),
    }
}

/// `POST /console/logout`: ends the session through the core's logout (every token of it is
/// refused from the next request), then clears the cookies.
pub async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let s = match signed(&state, &headers, &client).await {
        Ok(s) => s,
        // Nothing to end: just forget the cookies.
        Err(_) => return ConsoleError::SignIn.into_response(),
    };
    let checked = Form::read(body).and_then(|f| s.check_form(&state, &client, f.one("csrf")?));
    if let Err(e) = checked {
        return s.finish(Err(e), "/console/tokens");
    }
    let rt = s
        .refresh_token
        .clone()
        .or_else(|| cookie(&headers, REFRESH_COOKIE).map(str::to_owned));
    if let Some(rt) = rt
        && let Err(e) = state.auth.logout(&rt, &client.ctx).await
        && !matches!(e, AuthError::RefreshFailed)
    {
        return s.finish(Err(e.into()), "/console/tokens");
    }
    let mut res = see_other("/console/login?out");
    for c in clear_cookies() {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

// ---------------------------------------------------------------------------------- tokens

/// The caller's tokens as rows, in the core's order: most recently used first, never used
/// last, then newest first.
async fn token_rows(state: &AppState, s: &Signed) -> Result<Vec<TokenRow>, ConsoleError> {
    let tokens = state.auth.api_token_details(&s.who).await?;
    Ok(tokens
        .into_iter()
        .map(|t| TokenRow {
            id: t.id.to_string(),
            name: t.name.unwrap_or_else(|| "(no name)".into()),
            hint: t.hint,
            created: when(t.created_at),
            expires: t.expires_at.map_or_else(|| "never".into(), when),
            last_used: t.last_used_at.map_or_else(|| "never".into(), when),
        })
        .collect())
}

async fn tokens_view(
    state: &AppState,
    s: &Signed,
    notice: Option<&str>,
    new_token: Option<String>,
) -> Result<Response, ConsoleError> {
    let page = TokensPage {
        chrome: Chrome::of(s, "tokens"),
        notice,
        new_token,
        tokens: token_rows(state, s).await?,
        max_name: MAX_API_TOKEN_NAME_CHARS,
    };
    Ok(render(&page))
}

/// `GET /console/tokens`.
pub async fn tokens_page(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let sealed = cookie(&headers, NEW_TOKEN_COOKIE).map(str::to_owned);
    let mut res = with_session(&state, &headers, &client, "/console/tokens", |s| async {
        // A new token made by this session's form, shown on this answer only.
        let new_token = match (&sealed, s.who.session_id.as_deref()) {
            (Some(sealed), Some(sid)) => state.auth.open_new_token(sid, sealed).map(str::to_owned),
            _ => None,
        };
        let notice = match q.as_deref() {
            Some("done=deleted") => Some("Token deleted."),
            // Shown again (a reload, a second tab): the token itself is not.
            Some("done=created") if new_token.is_none() => {
                Some("Token created. It was shown once, on the page that followed its form.")
            }
            _ => None,
        };
        let r = tokens_view(&state, &s, notice, new_token).await;
        (s, r)
    })
    .await;
    if sealed.is_some()
        && let Some(clear) = clear_new_token_cookie(client.secure)
    {
        res.headers_mut().append(header::SET_COOKIE, clear);
    }
    res
}

/// A date of `<input type=date>` (`YYYY-MM-DD`): the token works through that day (UTC), so it
/// expires at its last second, 23:59:59, and is listed as expiring that day. Epoch
/// milliseconds; the core checks the lifetime's bounds.
fn parse_expiry(v: &str, now_ms: i64) -> Result<i64, ConsoleError> {
    let bad = || ConsoleError::BadForm("the expiry date must be a date such as 2027-01-31".into());
    let mut parts = v.trim().splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>()) else {
        return Err(bad());
    };
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    let end = date
        .next_day()
        .ok_or_else(bad)?
        .midnight()
        .assume_utc()
        .unix_timestamp()
        .saturating_sub(1)
        .saturating_mul(1000);
    if end <= now_ms {
        return Err(ConsoleError::BadForm(
            "the expiry date must be today or later".into(),
        ));
    }
    Ok(end)
}

/// `POST /console/tokens`: a new token, handed to the token page in the one-time cookie and
/// shown there once (never in a URL, never cached). A reload of that page shows the list, not a
/// resubmitted form.
pub async fn token_create(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    with_session(&state, &headers, &client, "/console/tokens", |s| async {
        let r = async {
            let form = Form::read(body)?;
            s.check_form(&state, &client, form.one("csrf")?)?;
            let name = form.required("name", "A name")?;
            let expires = match form.one("expires")?.filter(|v| !v.trim().is_empty()) {
                Some(v) => Some(parse_expiry(v, state.clock.now_ms())?),
                None => None,
            };
            let made = state
                .auth
                .create_api_token_with(&s.who, Some(name), expires, &client.ctx)
                .await?;
            let sid = s.who.session_id.as_deref().ok_or(ConsoleError::SignIn)?;
            let sealed = state.auth.seal_new_token(sid, &made.token);
            let mut res = see_other("/console/tokens?done=created");
            if let Some(c) = new_token_cookie(&sealed, client.secure) {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            Ok(res)
        }
        .await;
        (s, r)
    })
    .await
}

/// `POST /console/tokens/delete`.
pub async fn token_delete(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    with_session(&state, &headers, &client, "/console/tokens", |s| async {
        let r = async {
            let form = Form::read(body)?;
            s.check_form(&state, &client, form.one("csrf")?)?;
            let id = form
                .required("id", "The token")?
                .trim()
                .parse::<i64>()
                .map_err(|_| ConsoleError::NotFound)?;
            state
                .auth
                .delete_api_token_by_id(&s.who, id, &client.ctx)
                .await?;
            Ok(see_other("/console/tokens?done=deleted"))
        }
        .await;
        (s, r)
    })
    .await
}

// ---------------------------------------------------------------------------------- accounts

/// `GET /console/accounts`: the caller and its sub-accounts, grouped by main account.
pub async fn accounts_page(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
) -> Response {
    with_session(&state, &headers, &client, "/console/accounts", |s| async {
        let r = async {
            let accounts = state.auth.accounts(&s.who).await?;
            let mut mains: Vec<MainRow> = Vec::new();
            for a in accounts {
                let sub = (a.account_id, a.account_name);
                match mains
                    .iter_mut()
                    .find(|m| m.id == a.main_account.main_account_id)
                {
                    Some(m) => m.subs.push(sub),
                    None => mains.push(MainRow {
                        id: a.main_account.main_account_id,
                        name: a.main_account.main_account_name,
                        active: a.main_account.is_active,
                        subs: vec![sub],
                    }),
                }
            }
            let u = &s.who.user;
            let page = AccountsPage {
                chrome: Chrome::of(&s, "accounts"),
                me_name: format!("{} {}", u.first_name, u.last_name)
                    .trim()
                    .to_owned(),
                me_username: u.username.clone(),
                me_id: u.id,
                me_roles: u.roles.clone(),
                mains,
            };
            Ok(render(&page))
        }
        .await;
        (s, r)
    })
    .await
}

// ---------------------------------------------------------------------------------- users

/// `GET /console/users`: the caller's subtree, for managers only (403 otherwise, as
/// `GET …/admin/users` answers).
pub async fn users_page(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let notice = match q.as_deref() {
        Some("done=created") => Some("User created."),
        Some("done=disable") => Some("User disabled: its sessions have ended."),
        Some("done=enable") => Some("User enabled."),
        Some("done=password") => Some("Password set: the user's sessions have ended."),
        Some("done=revoke") => Some("Every credential of the user was revoked."),
        _ => None,
    };
    with_session(&state, &headers, &client, "/console/accounts", |s| async {
        let r = async {
            let users = state.auth.users(&s.who, true, false).await?;
            let me = &s.who.user;
            let path_of = |parent_path: &str, id: i64| -> Vec<i64> {
                let mut p: Vec<i64> = parent_path
                    .split('.')
                    .filter_map(|x| x.parse().ok())
                    .collect();
                p.push(id);
                p
            };
            let my_depth = path_of(&me.parent_path, me.id).len();
            let mut rows: Vec<(Vec<i64>, UserRow)> = users
                .into_iter()
                .map(|u| {
                    let key = path_of(&u.parent_path, u.user_id);
                    let row = UserRow {
                        id: u.user_id,
                        is_self: u.user_id == me.id,
                        depth: key.len().saturating_sub(my_depth).min(4),
                        username: u.user_name,
                        full_name: u.full_name,
                        roles: u.roles,
                        enabled: u.enabled,
                    };
                    (key, row)
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let roles = KNOWN_ROLES
                .iter()
                .filter(|r| me.has_role(ROLE_SUPER_USER) || me.has_role(r))
                .map(|r| (*r).to_owned())
                .collect();
            let accounts = state
                .auth
                .accounts(&s.who)
                .await?
                .into_iter()
                .map(|a| (a.account_id, a.account_name))
                .collect();
            let page = UsersPage {
                chrome: Chrome::of(&s, "users"),
                notice,
                users: rows.into_iter().map(|(_, r)| r).collect(),
                roles,
                accounts,
            };
            Ok(render(&page))
        }
        .await;
        (s, r)
    })
    .await
}

fn parse_id(v: &str, what: &str) -> Result<i64, ConsoleError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ConsoleError::BadForm(format!("{what} is not a valid id")))
}

/// `POST /console/users`: a new user below the caller (rules in `cxauth_core::user_admin`).
pub async fn user_create(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    with_session(&state, &headers, &client, "/console/users", |s| async {
        let r = async {
            let form = Form::read(body)?;
            s.check_form(&state, &client, form.one("csrf")?)?;
            if !s.manager {
                return Err(AuthError::Forbidden.into());
            }
            let spec = ManagedUserSpec {
                username: form.required("username", "A username")?.trim().to_owned(),
                password: SecretString::from(form.required("password", "A password")?.to_owned()),
                parent_id: match form.one("parent")? {
                    Some(p) => parse_id(p, "the parent")?,
                    None => s.who.user.id,
                },
                first_name: form.one("first_name")?.unwrap_or_default().to_owned(),
                last_name: form.one("last_name")?.unwrap_or_default().to_owned(),
                roles: form.all("role").map(str::to_owned).collect(),
                grants: form
                    .all("grant")
                    .map(|g| parse_id(g, "an account"))
                    .collect::<Result<_, _>>()?,
            };
            state
                .auth
                .create_managed_user(&s.who, spec, &client.ctx)
                .await?;
            Ok(see_other("/console/users?done=created"))
        }
        .await;
        (s, r)
    })
    .await
}

/// `POST /console/users/{id}/{disable|enable|password|revoke}`.
pub async fn user_action(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    with_session(&state, &headers, &client, "/console/users", |s| async {
        let r = async {
            let Ok(Path((id, action))) = path else {
                return Err(ConsoleError::NotFound);
            };
            let id = id
                .parse::<i64>()
                .ok()
                .filter(|i| *i > 0)
                .ok_or(ConsoleError::NotFound)?;
            let action = match action.as_str() {
                a @ ("disable" | "enable" | "password" | "revoke") => a,
                _ => return Err(ConsoleError::NotFound),
            };
            let form = Form::read(body)?;
            s.check_form(&state, &client, form.one("csrf")?)?;
            let (auth, who, ctx) = (&state.auth, &s.who, &client.ctx);
            match action {
                "disable" | "enable" => {
                    auth.set_managed_user_enabled(who, id, action == "enable", ctx)
                        .await?;
                }
                "password" => {
                    let pw =
                        SecretString::from(form.required("password", "A password")?.to_owned());
                    let revoke = form.one("revoke_api_tokens")? == Some("on");
                    auth.reset_managed_user_password(who, id, pw, revoke, ctx)
                        .await?;
                }
                _ => {
                    auth.revoke_managed_user_tokens(who, id, ctx).await?;
                }
            }
            Ok(see_other(&format!("/console/users?done={action}")))
        }
        .await;
        (s, r)
    })
    .await
}

/// Any other path under `/console/`.
pub async fn not_found() -> Response {
    ConsoleError::NotFound.into_response()
}
