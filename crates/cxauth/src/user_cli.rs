//! The user commands: `login`, `logout`, `whoami`, `token`, `accounts`, `users`.
//!
//! They talk to a server (cxauth or the real RingCX) through `cxauth-client`'s
//! [`SessionClient`], which refreshes the saved session when needed and hands each rotated
//! session back to be saved. Results go to stdout (a table on a terminal, JSON when piped);
//! messages and errors go to stderr, errors as one line with a documented exit code.

use crate::profile::{Profile, ProfileDir};
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use cxauth_client::{Client, Error, SessionClient};
use secrecy::{ExposeSecret as _, SecretString};
use std::io::{BufRead as _, IsTerminal as _};

mod print;
use print::{
    print_accounts, print_agents, print_bare_tokens, print_json, print_line, print_table,
    print_token_details, print_users, table,
};

/// Exit code: not logged in, or the session ended (run `cxauth login`).
pub const EXIT_SESSION: u8 = 3;
/// Exit code: the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: the command line is wrong (as clap's own usage errors).
pub const EXIT_USAGE: u8 = 2;

/// A failure with the one-line message a person reads and the exit code a script tests.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: u8,
    /// What went wrong and, where there is one, what to do.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

/// The global options: accepted before or after the subcommand (`cxauth --profile sales
/// accounts` and `cxauth accounts --profile sales`), as users of git or kubectl expect.
#[derive(Debug, Args)]
pub struct Common {
    /// Server URL of the user commands, e.g. http://127.0.0.1:8080 or
    /// https://engage.ringcentral.com. Needed by `login` and with CXAUTH_API_TOKEN; other
    /// commands use the server of the saved session.
    #[arg(
        long,
        env = "CXAUTH_SERVER",
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub server: Option<String>,
    /// Name of the saved session the user commands use.
    #[arg(
        long,
        env = "CXAUTH_PROFILE",
        default_value = "default",
        global = true,
        value_name = "NAME",
        help_heading = "Global options"
    )]
    pub profile: String,
    /// Output format: table (alias text) or json [default: for the user commands a table on
    /// a terminal and json otherwise; for `admin` lists, tab-separated lines with a header].
    #[arg(long, value_enum, global = true, help_heading = "Global options")]
    pub output: Option<Output>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: aligned columns (user commands), tab-separated lines with a header line
    /// (`admin`).
    #[value(alias = "text")]
    Table,
    /// For scripts: the server's JSON (user commands), one JSON object per line (`admin`).
    Json,
}

/// The user commands, flattened into the top level of `cxauth`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Log in and save the session (mode 0600) in the config directory.
    ///
    /// The password is prompted for without echo, or read from stdin with --password-stdin.
    Login {
        /// User name.
        #[arg(long)]
        username: String,
        /// Platform id, e.g. aws80.
        #[arg(long, value_name = "ID")]
        platform_id: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the saved session on the server and forget it.
    ///
    /// The session is forgotten here even when the server cannot be told (it is down, or
    /// refuses): that is said on stderr and the exit status is still 0, since the session
    /// then ends on the server by itself when its refresh token expires.
    Logout,
    /// Show who the saved session (or CXAUTH_API_TOKEN) is, after checking it still works.
    Whoami,
    /// Permanent API tokens (for X-Auth-Token and CXAUTH_API_TOKEN).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The sub-accounts you may use.
    Accounts,
    /// The agents of a sub-account you may use.
    Agents {
        /// The sub-account id (see `cxauth accounts`).
        account_id: String,
    },
    /// You and the users below you (needs SUPER_USER or MANAGE_USERS).
    Users {
        /// One row per user instead of a tree.
        #[arg(long)]
        flatten: bool,
        /// Leave out disabled users.
        #[arg(long)]
        active_only: bool,
    },
}

/// `cxauth token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a new API token; prints it alone on stdout (`T=$(cxauth token create)`).
    ///
    /// With --name or --expires-in it uses cxauth's own endpoint (/cxauth/v1/api-tokens); a
    /// RingCX server has none, and the command then fails rather than mint a token without them.
    Create {
        /// What to call the token (1 to 100 characters), shown by `token list --long`.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Lifetime, after which the token is refused: a number and a unit, s m h d or w
        /// (e.g. 90m, 12h, 30d; 60s to 730d). Without it the token never expires.
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires_in: Option<std::time::Duration>,
    },
    /// List your API tokens: the bare tokens, oldest first (as RingCX lists them).
    List {
        /// Show id, name, creation, expiry, last use and a hint instead of the tokens (most
        /// recently used first). cxauth only: against RingCX it says so and lists the tokens.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Name or rename an API token, by the id `token list --long` shows (cxauth only).
    Rename {
        /// The token's id.
        id: i64,
        /// The new name (1 to 100 characters).
        #[arg(required_unless_present = "clear")]
        name: Option<String>,
        /// Remove the name instead.
        #[arg(long, conflicts_with = "name")]
        clear: bool,
    },
    /// Delete an API token (yours, or one of a user below you), given as the token or by --id.
    Delete {
        /// The token, e.g. aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9.
        #[arg(required_unless_present = "id")]
        token: Option<String>,
        /// The token's id, as `token list --long` shows it (cxauth only).
        #[arg(long, conflicts_with = "token")]
        id: Option<i64>,
    },
}

/// A lifetime such as `90m`, `12h`, `30d` or `2w` (or bare seconds).
fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90m, 12h or 30d"))?;
    let per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h, d or w")),
    };
    n.checked_mul(per)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// What a RingCX server (no `/cxauth/v1` endpoints) makes of a cxauth-only option.
const NOT_SUPPORTED: &str = "this server has no /cxauth/v1 endpoints (a RingCX server?)";

/// What a command needs to explain its errors.
struct Ctx {
    server: String,
    profile: String,
    api_token: bool,
    /// The profile's lock, held for the whole command (see [`ProfileDir::lock`]).
    _lock: Option<std::fs::File>,
}

impl Ctx {
    fn login_hint(&self) -> String {
        if self.profile == "default" {
            "run `cxauth login`".to_owned()
        } else {
            format!("run `cxauth login --profile {}`", self.profile)
        }
    }

    /// One line for a person, and the exit code for a script.
    fn explain(&self, e: Error) -> anyhow::Error {
        match e {
            Error::SessionEnded { .. } => fail(
                EXIT_SESSION,
                format!("session ended: {}", self.login_hint()),
            ),
            Error::Transport(t) => fail(
                EXIT_UNREACHABLE,
                format!("cannot reach {}: {}", self.server, transport_cause(&t)),
            ),
            Error::Status { status, .. } if status == 401 && self.api_token => fail(
                EXIT_SESSION,
                "the server refused the API token in CXAUTH_API_TOKEN",
            ),
            Error::Status {
                status,
                retry_after,
                ..
            } if status == 429 || status == 503 => {
                let when = retry_after
                    .map(|d| format!("; try again in {} s", d.as_secs().max(1)))
                    .unwrap_or_default();
                fail(1, format!("the server is busy ({}){when}", status.as_u16()))
            }
            Error::Status {
                status,
                error_code,
                message,
                request_id,
                ..
            } => {
                let what = if status == 403 {
                    "permission denied".to_owned()
                } else {
                    format!("the server refused the request ({})", status.as_u16())
                };
                let code = error_code.map(|c| format!(" [{c}]")).unwrap_or_default();
                let id = request_id
                    .map(|r| format!(" (request id {r})"))
                    .unwrap_or_default();
                fail(1, format!("{what}: {}{code}{id}", one_line(&message)))
            }
            Error::Url(m) => fail(EXIT_USAGE, format!("invalid server URL {m}")),
            other => fail(1, one_line(&other.to_string())),
        }
    }
}

/// "connection refused", "timed out", …: the innermost cause a person recognises.
fn transport_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "timed out".to_owned(),
                _ => io.to_string(),
            };
        }
        last = s.to_string();
        source = s.source();
    }
    one_line(&last)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn normalize(server: &str) -> String {
    server.trim_end_matches('/').to_owned()
}

fn client(server: &str, ctx: &Ctx) -> anyhow::Result<Client> {
    Client::builder(server).build().map_err(|e| ctx.explain(e))
}

/// Runs one user command.
pub async fn run(cmd: UserCommand, common: Common) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Login {
            username,
            platform_id,
            password_stdin,
        } => login(common, &username, &platform_id, password_stdin).await,
        UserCommand::Logout => logout(common).await,
        UserCommand::Whoami => whoami(common).await,
        UserCommand::Token { command } => token(common, command).await,
        UserCommand::Accounts => {
            let output = output(&common);
            let (session, ctx) = open(&common)?;
            let accounts = session.accounts().await.map_err(|e| ctx.explain(e))?;
            print_accounts(&accounts, output)
        }
        UserCommand::Agents { account_id } => {
            let output = output(&common);
            let (session, ctx) = open(&common)?;
            let agents = session
                .agents(&account_id)
                .await
                .map_err(|e| ctx.explain(e))?;
            print_agents(&agents, output)
        }
        UserCommand::Users {
            flatten,
            active_only,
        } => {
            let output = output(&common);
            let (session, ctx) = open(&common)?;
            let users = session
                .users(flatten, active_only)
                .await
                .map_err(|e| ctx.explain(e))?;
            print_users(&users, output)
        }
    }
}

fn output(common: &Common) -> Output {
    common.output.unwrap_or(if std::io::stdout().is_terminal() {
        Output::Table
    } else {
        Output::Json
    })
}

fn read_password(username: &str, from_stdin: bool) -> anyhow::Result<SecretString> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        line.clear();
        trimmed
    } else {
        rpassword::prompt_password(format!("Password for {username}: ")).map_err(|_| {
            fail(
                EXIT_USAGE,
                "cannot prompt for the password without a terminal: use --password-stdin",
            )
        })?
    };
    if password.is_empty() {
        return Err(fail(EXIT_USAGE, "the password is empty"));
    }
    Ok(SecretString::from(password))
}

async fn login(
    common: Common,
    username: &str,
    platform_id: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let profiles = ProfileDir::from_env()?;
    profiles.path(&common.profile)?;
    let Some(server) = common.server.as_deref().map(normalize) else {
        return Err(fail(
            EXIT_USAGE,
            "say which server: --server URL or CXAUTH_SERVER",
        ));
    };
    let ctx = Ctx {
        server: server.clone(),
        profile: common.profile.clone(),
        api_token: false,
        _lock: None,
    };
    let client = client(&server, &ctx)?;
    let password = read_password(username, password_stdin)?;
    let session = client
        .login(username, password.expose_secret(), platform_id)
        .await
        .map_err(|e| match e {
            Error::Status { status, .. } if status == 401 => fail(
                1,
                "login failed: wrong username, password or platform id (or the user is disabled)",
            ),
            other => ctx.explain(other),
        })?;
    let _lock = profiles.lock(&common.profile)?;
    // A new login replaces the profile's session: end the old one rather than leave it live on
    // the server until it times out. Best effort, and only on the same server.
    if let Ok(Some(old)) = profiles.load(&common.profile)
        && old.server == server
        && let Some(rt) = old.session.refresh_token.as_deref()
    {
        let _ = client.logout(rt).await;
    }
    let profile = Profile {
        server: server.clone(),
        username: username.to_owned(),
        platform_id: platform_id.to_owned(),
        session,
    };
    profiles.save(&common.profile, &profile)?;
    eprintln!(
        "cxauth: logged in to {server} as {username} (profile {})",
        common.profile
    );
    Ok(())
}

/// The API token from the environment, if one is set.
fn api_token_from_env() -> Option<String> {
    std::env::var("CXAUTH_API_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A client for the saved session of `common.profile`, or for CXAUTH_API_TOKEN.
fn open(common: &Common) -> anyhow::Result<(SessionClient, Ctx)> {
    let profiles = ProfileDir::from_env()?;
    let name = common.profile.clone();
    if let Some(token) = api_token_from_env() {
        let saved = profiles.load(&name)?;
        let server = common
            .server
            .as_deref()
            .map(normalize)
            .or_else(|| saved.as_ref().map(|p| p.server.clone()))
            .ok_or_else(|| {
                fail(
                    EXIT_USAGE,
                    "CXAUTH_API_TOKEN is set: say which server with --server URL or CXAUTH_SERVER",
                )
            })?;
        let ctx = Ctx {
            server: server.clone(),
            profile: name,
            api_token: true,
            _lock: None,
        };
        let client = client(&server, &ctx)?;
        return Ok((SessionClient::with_api_token(client, token), ctx));
    }
    let lock = profiles.lock(&name)?;
    let saved = profiles.load(&name)?;
    let ctx = Ctx {
        server: String::new(),
        profile: name.clone(),
        api_token: false,
        _lock: None,
    };
    let Some(profile) = saved else {
        // Nobody logged in under this name: leave no lock file behind for it.
        profiles.unlock_unused(&name, lock)?;
        return Err(fail(
            EXIT_SESSION,
            format!("not logged in (profile {name}): {}", ctx.login_hint()),
        ));
    };
    if let Some(asked) = common.server.as_deref().map(normalize)
        && asked != profile.server
    {
        // Never send one server's tokens to another.
        return Err(fail(
            EXIT_USAGE,
            format!(
                "profile {name} is logged in to {}, not {asked}: log in there with --profile, or drop --server",
                profile.server
            ),
        ));
    }
    let ctx = Ctx {
        server: profile.server.clone(),
        _lock: Some(lock),
        ..ctx
    };
    let client = client(&profile.server, &ctx)?;
    let saved = profile.clone();
    let session = SessionClient::from_session(client, profile.session).on_rotate(move |s| {
        let mut rotated = saved.clone();
        rotated.session = s.clone();
        if let Err(e) = profiles.save(&name, &rotated) {
            eprintln!("cxauth: warning: the refreshed session was not saved: {e:#}");
        }
    });
    Ok((session, ctx))
}

async fn logout(common: Common) -> anyhow::Result<()> {
    let profiles = ProfileDir::from_env()?;
    let lock = profiles.lock(&common.profile)?;
    // A damaged profile file is forgotten too: there is no session in it to end.
    let profile = profiles.load(&common.profile).unwrap_or(None);
    let Some(profile) = profile else {
        profiles.remove(&common.profile)?;
        profiles.unlock_unused(&common.profile, lock)?;
        eprintln!("cxauth: not logged in (profile {})", common.profile);
        return Ok(());
    };
    let ctx = Ctx {
        server: profile.server.clone(),
        profile: common.profile.clone(),
        api_token: false,
        _lock: None,
    };
    let server = profile.server.clone();
    // The user asked to be logged out here: the local session goes whatever the server says.
    // A server that cannot be told keeps the session until its refresh token expires; say so.
    let told = match client(&server, &ctx) {
        Ok(client) => match SessionClient::from_session(client, profile.session)
            .logout()
            .await
        {
            // Already ended on the server: forgetting it locally is all that is left.
            Ok(()) | Err(Error::SessionEnded { .. }) => Ok(()),
            Err(e) => Err(ctx.explain(e)),
        },
        Err(e) => Err(e),
    };
    profiles.remove(&common.profile)?;
    profiles.unlock_unused(&common.profile, lock)?;
    match told {
        Ok(()) => eprintln!("cxauth: logged out of {server}"),
        Err(e) => eprintln!(
            "cxauth: forgot the session of profile {}, but could not end it on {server} ({}); \
             it ends there when its refresh token expires",
            common.profile,
            e.downcast_ref::<Failure>()
                .map_or_else(|| format!("{e:#}"), |f| f.message.clone())
        ),
    }
    Ok(())
}

async fn whoami(common: Common) -> anyhow::Result<()> {
    let output = output(&common);
    let (session, ctx) = open(&common)?;
    // A real call, so an ended session says so here (and a due refresh happens).
    let accounts = session.accounts().await.map_err(|e| ctx.explain(e))?;
    let main_account = accounts.first().map(|a| a.main_account_id.clone());
    let mut fields: Vec<(&str, serde_json::Value)> = vec![("server", ctx.server.clone().into())];
    if ctx.api_token {
        fields.push(("credential", "api token (CXAUTH_API_TOKEN)".into()));
        if let Some(m) = main_account {
            fields.push(("mainAccountId", m.into()));
        }
    } else {
        let profile = ProfileDir::from_env()?.load(&ctx.profile)?;
        let current = session.session().await;
        fields.push(("profile", ctx.profile.clone().into()));
        if let Some(p) = profile {
            fields.push(("username", p.username.into()));
        }
        if let Some(s) = current {
            fields.push(("platformId", s.platform_id.into()));
            fields.push(("userId", s.admin_id.into()));
            fields.push(("mainAccountId", s.main_account_id.into()));
        }
    }
    match output {
        Output::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            print_json(&map)
        }
        Output::Table => {
            let mut t = table(&[]);
            for (k, v) in fields {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                t.add_row(vec![k.to_owned(), v]);
            }
            print_table(t)
        }
    }
}

async fn token(common: Common, command: TokenCommand) -> anyhow::Result<()> {
    let output = output(&common);
    let (session, ctx) = open(&common)?;
    match command {
        TokenCommand::Create {
            name: None,
            expires_in: None,
        } => {
            let token = session
                .create_api_token()
                .await
                .map_err(|e| ctx.explain(e))?;
            // Alone on stdout, whatever the output format: scripts capture it.
            print_line(&token)
        }
        TokenCommand::Create { name, expires_in } => {
            let created = session
                .create_api_token_with(name.as_deref(), expires_in)
                .await
                .map_err(|e| {
                    if e.is_not_supported() {
                        fail(
                            1,
                            format!(
                                "{NOT_SUPPORTED}: token names and expiry are not supported \
                                 there; create without --name and --expires-in"
                            ),
                        )
                    } else {
                        ctx.explain(e)
                    }
                })?;
            if let Some(at) = &created.details.expires_at {
                eprintln!("cxauth: API token {} expires at {at}", created.details.id);
            }
            print_line(&created.token)
        }
        TokenCommand::List { long: true } => match session.api_token_details().await {
            Ok(tokens) => print_token_details(&tokens, output),
            Err(e) if e.is_not_supported() => {
                eprintln!(
                    "cxauth: {NOT_SUPPORTED}: names, expiry and last use are not supported \
                     there; listing the tokens only"
                );
                let tokens = session
                    .list_api_tokens()
                    .await
                    .map_err(|e| ctx.explain(e))?;
                print_bare_tokens(tokens, output)
            }
            Err(e) => Err(ctx.explain(e)),
        },
        TokenCommand::Rename { id, name, .. } => {
            let renamed = session
                .rename_api_token(id, name.as_deref())
                .await
                .map_err(|e| match e {
                    Error::Status { status, .. } if status == 404 => fail(
                        1,
                        format!(
                            "no API token {id} of yours (or {NOT_SUPPORTED}: it has no token ids)"
                        ),
                    ),
                    other => ctx.explain(other),
                })?;
            print_token_details(&[renamed], output)
        }
        TokenCommand::Delete { id: Some(id), .. } => {
            session
                .delete_api_token_by_id(id)
                .await
                .map_err(|e| match e {
                    Error::Status { status, .. } if status == 404 => fail(
                        1,
                        format!(
                            "no API token {id} of yours (or {NOT_SUPPORTED}: give the token instead)"
                        ),
                    ),
                    other => ctx.explain(other),
                })?;
            eprintln!("cxauth: API token deleted");
            Ok(())
        }
        TokenCommand::List { long: false } => {
            let tokens = session
                .list_api_tokens()
                .await
                .map_err(|e| ctx.explain(e))?;
            print_bare_tokens(tokens, output)
        }
        TokenCommand::Delete { token, id: None } => {
            let token = token.unwrap_or_default();
            session
                .delete_api_token(&token)
                .await
                .map_err(|e| match e {
                    Error::Status { status, .. } if status == 404 => {
                        fail(1, "no such API token (or not yours to delete)")
                    }
                    other => ctx.explain(other),
                })?;
            eprintln!("cxauth: API token deleted");
            Ok(())
        }
    }
}
