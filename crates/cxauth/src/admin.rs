//! `cxauth admin`: accounts and users, straight on the database.
//!
//! Each command that creates something prints the new id alone on stdout, so scripts can write
//! `id=$(cxauth admin account create --name Sales)`. Messages go to stderr.
//!
//! No command here creates a database by accident: without `--database` or `CXAUTH_DATABASE`
//! the default file must already exist; `cxauth admin init` (or `cxauth serve`) creates one.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use cxauth_core::admin::{self, UserSpec};
use cxauth_core::clock::{Clock, SystemClock};
use cxauth_core::crypto::Secrets;
use cxauth_core::service::META_KEY_FINGERPRINT;
use cxauth_core::service::rfc3339;
use cxauth_core::store::RevokedCounts;
use cxauth_server::config::{ServerConfig, parse_duration};
use cxauth_store::DatabaseUrl;
use secrecy::{ExposeSecret as _, SecretString};
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;

pub use cxauth_server::config::DEFAULT_DATABASE;

/// `writeln!` to stdout, returning the error (a closed pipe included) instead of panicking as
/// `println!` does, so `cxauth admin … | head -1` ends quietly.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

mod audit;
use audit::audit;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Database: sqlite://PATH, a plain file path, or postgres://…; accepted before or after
    /// the subcommand [default: sqlite://cxauth.db, which must exist: only `admin init` and
    /// `serve` create a database].
    #[arg(long, env = "CXAUTH_DATABASE", global = true, value_name = "URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create the database (SQLite file or PostgreSQL schema) and bring its schema up to date;
    /// prints where. Safe on an existing database (it is only migrated). `cxauth serve` creates
    /// its database too, and on first start its admin user.
    Init,
    /// Main accounts and sub-accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Contact-centre agents of sub-accounts, linked to users by RingEX user id.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The built-in RingEX emulator (`cxauth serve --ringex-emulator`): apps and JWT credentials.
    #[command(subcommand)]
    Ringex(RingexCommand),
    /// Delete expired refresh tokens, expired or ended sessions and expired legacy and emulator
    /// tokens now (the server also does it in the background); prints how many rows of each
    /// kind went, one `KIND<TAB>COUNT` line each. Also deletes audit events older than the
    /// retention.
    Purge {
        /// Audit events older than this are deleted (as `cxauth serve --audit-retention`).
        #[arg(long, env = "CXAUTH_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration)]
        audit_retention: std::time::Duration,
    },
    /// Signing keys of access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show the audit trail (security events), oldest first: one tab-separated line per event
    /// with a header line, or one JSON object per line with `--output json`.
    Audit {
        /// Only events of this user (also failed logins that tried this name).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Only events of the last DURATION (e.g. 1h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Keep running and print new events as they are written (poll every second).
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new signing key; prints its key id.
    ///
    /// Running servers sign with it within a minute; tokens signed by older keys stay valid
    /// until they expire; the JWKS lists old and new keys until the old ones retire on their
    /// own (once superseded for longer than the access-token lifetime plus two minutes).
    Rotate {
        /// Master key file [default: DATABASE.key beside an SQLite database file], as for
        /// `cxauth serve`.
        #[arg(long, env = "CXAUTH_MASTER_KEY_FILE")]
        master_key_file: Option<std::path::PathBuf>,
    },
    /// List signing keys, oldest first: key id and creation time, tab-separated with a header
    /// line (`--output json`: one JSON object per line).
    List,
}

/// How `cxauth admin` prints lists, from the global `--output`.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// Tab-separated, with a header line (`--output table`, the default).
    Text,
    /// One JSON object per line (`--output json`).
    Json,
}

#[derive(Debug, Subcommand)]
enum RingexCommand {
    /// OAuth apps of the emulator.
    #[command(subcommand)]
    App(RingexAppCommand),
    /// JWT credentials of the emulator.
    #[command(subcommand)]
    Jwt(RingexJwtCommand),
}

#[derive(Debug, Subcommand)]
enum RingexAppCommand {
    /// Register an app; prints its client id, then its client secret, each on its own line.
    ///
    /// The secret is shown only this once: only a hash of it is stored.
    Create,
}

#[derive(Debug, Subcommand)]
enum RingexJwtCommand {
    /// Make a JWT credential that signs USERNAME in to the emulator; prints it alone.
    ///
    /// The user needs a RingEX user id (`cxauth admin user create … --rc-user-id N`). The
    /// credential is shown only this once: only a digest of it is stored.
    Create {
        /// Login name of the user.
        #[arg(long)]
        username: String,
    },
    /// List JWT credentials, oldest first: id, user id, username and creation time (never the
    /// credential: only a digest of it is stored); `--output json`: one JSON object per line.
    List {
        /// Only the credentials of this user.
        #[arg(long)]
        username: Option<String>,
    },
    /// Revoke a JWT credential by its id (see `list`): it stops signing in at once, and the
    /// emulator access tokens of its user end with it.
    Revoke {
        /// Id of the credential.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create a main account, or with --main a sub-account of it; prints the new id.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Id of the main account to create a sub-account in.
        #[arg(long, value_name = "MAIN_ID")]
        main: Option<i64>,
    },
    /// List accounts, by id: id, name, main account (itself for a main account), whether it
    /// is active and the RingEX account its main account is linked to (`-` for none),
    /// tab-separated with a header line (`--output json`: one JSON object per line).
    List,
    /// Link a main account to a RingEX account (its accounts then answer `rcAccountId` and
    /// `rcAccountAccess: ENABLED`), or unlink it with --unlink.
    Link {
        /// Id of the main account.
        #[arg(long, value_name = "MAIN_ID")]
        main: i64,
        /// The RingEX account id (a number).
        #[arg(
            long,
            value_name = "ID",
            required_unless_present = "unlink",
            conflicts_with = "unlink"
        )]
        rc_account_id: Option<String>,
        /// Remove the link instead.
        #[arg(long)]
        unlink: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Create an agent in a sub-account; prints the new agent id alone.
    ///
    /// An agent belongs to a user through the user's RingEX user id (--user takes it from the
    /// user, --rc-user-id gives it directly): every session of that user then lists the agent
    /// in `agentDetails`, if the agent's sub-account is in the user's main account.
    Create {
        /// Id of the sub-account the agent works in.
        #[arg(long, value_name = "ACCOUNT_ID")]
        account: i64,
        /// Login name of the agent (unique among agents).
        #[arg(long)]
        username: String,
        /// Given name.
        #[arg(long, default_value = "")]
        first_name: String,
        /// Family name.
        #[arg(long, default_value = "")]
        last_name: String,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// AGENT or SUPERVISOR.
        #[arg(long = "type", default_value = "AGENT", value_name = "TYPE")]
        agent_type: String,
        /// Link the agent to this user (by username), through its RingEX user id.
        #[arg(long, value_name = "USERNAME", conflicts_with = "rc_user_id")]
        user: Option<String>,
        /// Link the agent to this RingEX user id.
        #[arg(long, value_name = "N")]
        rc_user_id: Option<i64>,
        /// The agent group.
        #[arg(long, value_name = "N")]
        agent_group_id: Option<i64>,
        /// The agent may not log itself in and out (`allowLoginControl: false`).
        #[arg(long)]
        no_login_control: bool,
        /// The agent may not change its login settings (`allowLoginUpdates: false`).
        #[arg(long)]
        no_login_updates: bool,
    },
    /// List agents by account then id: id, account, username, type, RingEX user id (`-` for
    /// none), first and last name, tab-separated with a header line (`--output json`: one
    /// JSON object per line).
    List {
        /// Only the agents of this sub-account.
        #[arg(long, value_name = "ACCOUNT_ID")]
        account: Option<i64>,
    },
    /// Delete an agent by its id (see `list`).
    Delete {
        /// Id of the agent.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; prints the new id.
    ///
    /// The user belongs to the main account of its parent or, without a parent, to the main
    /// account of its first grant. Granting a main account grants all its sub-accounts.
    Create {
        /// Login name (unique).
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Platform the user logs in to.
        #[arg(long, env = "CXAUTH_PLATFORM_ID", default_value = "aws80")]
        platform: String,
        /// Username of the parent user (the parent can delete this user's API tokens).
        #[arg(long, value_name = "USERNAME")]
        parent: Option<String>,
        /// Account id to grant (main or sub-account); repeat for more.
        #[arg(long = "grant", value_name = "ACCOUNT_ID")]
        grants: Vec<i64>,
        /// Role to give: SUPER_USER (everything) or MANAGE_USERS (see and manage the users
        /// below it); repeat for both. Any other name is refused.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Given name.
        #[arg(long, default_value = "")]
        first_name: String,
        /// Family name.
        #[arg(long, default_value = "")]
        last_name: String,
        /// RingEX (RingCentral) extension id of the user: a RingEX token of that extension
        /// exchanges for a session of this user. Unique.
        #[arg(long, value_name = "N")]
        rc_user_id: Option<i64>,
    },
    /// List users, one per line, tab-separated, with a header line (`--output json`: one
    /// JSON object per line, never a password hash).
    List,
    /// Delete a user, and in the same transaction its sessions (access and refresh tokens),
    /// API tokens, legacy auth tokens, RingEX emulator credentials, grants and remembered login
    /// addresses; prints what went, one `KIND<TAB>COUNT` line each (or one JSON object).
    ///
    /// Refused while other users have it as their parent: delete those first. The audit trail
    /// keeps its past events (and records the deletion).
    Delete {
        /// Login name.
        username: String,
    },
    /// Disable a user: ends its sessions, legacy auth tokens and RingEX emulator credentials
    /// for good, and refuses its API tokens while it stays disabled.
    Disable {
        /// Login name.
        username: String,
    },
    /// Enable a disabled user again; its API tokens work again (nothing else comes back).
    Enable {
        /// Login name.
        username: String,
    },
    /// Set a new password (from standard input); ends the user's sessions, legacy auth tokens
    /// and RingEX emulator credentials in the same transaction. API tokens stay unless
    /// --revoke-tokens.
    SetPassword {
        /// Login name.
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Also end every API token (as `revoke-tokens`, in the same transaction) and print
        /// what ended, as `revoke-tokens` does (`--output json`: one JSON object).
        #[arg(long)]
        revoke_tokens: bool,
    },
    /// End every credential of a user at once: API tokens, legacy auth tokens, sessions (their
    /// access and refresh tokens) and RingEX emulator credentials; prints how many of each
    /// ended, one `KIND<TAB>COUNT` line each (or one JSON object). The password stays.
    RevokeTokens {
        /// Login name.
        username: String,
    },
}

/// Prints what a revocation ended: `KIND<TAB>COUNT` lines, or one JSON object.
fn print_revoked(n: &RevokedCounts, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => outln!("{}", serde_json::to_string(n)?),
        Output::Text => {
            outln!("api_tokens\t{}", n.api_tokens);
            outln!("legacy_tokens\t{}", n.legacy_tokens);
            outln!("sessions\t{}", n.sessions);
            outln!("ringex_jwts\t{}", n.ringex_jwts);
            outln!("ringex_tokens\t{}", n.ringex_tokens);
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_owned();
    line.clear();
    Ok(SecretString::from(pw))
}

/// `--database X` for a printed hint: the database the hint applies to, quoted for a POSIX
/// shell when needed, a relative SQLite path made absolute (the hint may be followed from
/// another directory). A PostgreSQL password is redacted: the hint names the database, it
/// does not hand out its secret.
pub fn database_flag(url: &DatabaseUrl) -> String {
    let shown = match url.sqlite_path() {
        Some(p) if p.is_relative() => std::env::current_dir()
            .map(|d| format!("sqlite://{}", d.join(p).display()))
            .unwrap_or_else(|_| url.to_string()),
        _ => url.to_string(),
    };
    let plain = shown
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/:._-@%+=,".contains(&b));
    if plain {
        format!("--database {shown}")
    } else {
        format!("--database '{}'", shown.replace('\'', r"'\''"))
    }
}

/// Opens the database the command names. Without `--database`/`CXAUTH_DATABASE` the default
/// file must exist: an admin command run in the wrong directory must not create an empty
/// database and report on it as if it were the real one (a later `cxauth serve` there would
/// not bootstrap an admin either). `create` (for `admin init`) creates it.
async fn open_database(
    named: Option<&str>,
    create: bool,
) -> anyhow::Result<(DatabaseUrl, cxauth_core::store::SharedStore)> {
    let url = DatabaseUrl::parse(named.unwrap_or(DEFAULT_DATABASE))?;
    if named.is_none()
        && !create
        && let Some(path) = url.sqlite_path()
        && !path.exists()
    {
        let looked_at = std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| PathBuf::from(path));
        anyhow::bail!(
            "no database at {} (the default, sqlite://cxauth.db in the current directory): name \
             yours with --database URL or CXAUTH_DATABASE, or create one with `cxauth admin init` \
             (or `cxauth serve`)",
            looked_at.display()
        );
    }
    let store = cxauth_store::open(&url).await?;
    Ok((url, store))
}

/// `cxauth admin init`: creates (or migrates) the database and says which one.
async fn init(named: Option<&str>) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(named.unwrap_or(DEFAULT_DATABASE))?;
    let existed = url.sqlite_path().is_some_and(std::path::Path::exists);
    let (url, store) = open_database(named, true).await?;
    store.close().await;
    let flag = database_flag(&url);
    let shown = flag.trim_start_matches("--database ");
    if existed || url.sqlite_path().is_none() {
        eprintln!("cxauth: the database {shown} is ready (its schema is up to date)");
    } else {
        eprintln!("cxauth: created the database {shown}");
    }
    eprintln!(
        "cxauth: `cxauth serve {flag}` creates its admin user on first start; \
         `cxauth admin {flag} …` works on it"
    );
    Ok(())
}

/// Runs one `cxauth admin` command; `output` is the global `--output`.
pub async fn run(args: AdminArgs, output: Output) -> anyhow::Result<()> {
    if let AdminCommand::Init = args.command {
        return init(args.database.as_deref()).await;
    }
    let (url, store) = open_database(args.database.as_deref(), false).await?;
    let store = store.as_ref();
    let now = SystemClock.now_ms();
    match args.command {
        AdminCommand::Init => {}
        AdminCommand::Account(AccountCommand::Create { name, main: None }) => {
            outln!("{}", admin::create_main_account(store, &name, now).await?);
        }
        AdminCommand::Account(AccountCommand::Create {
            name,
            main: Some(main),
        }) => {
            outln!(
                "{}",
                admin::create_sub_account(store, main, &name, now).await?
            );
        }
        AdminCommand::User(UserCommand::Create {
            username,
            password_stdin: _,
            platform,
            parent,
            grants,
            roles,
            first_name,
            last_name,
            rc_user_id,
        }) => {
            let password = read_password()?;
            let spec = UserSpec {
                username,
                password,
                platform_id: platform,
                parent,
                grants,
                roles,
                first_name,
                last_name,
                rc_user_id,
            };
            outln!("{}", admin::create_user(store, spec, now).await?);
        }
        AdminCommand::Ringex(RingexCommand::App(RingexAppCommand::Create)) => {
            let (client_id, secret) = admin::create_ringex_app(store, now).await?;
            outln!("{client_id}\n{}", secret.expose_secret());
            eprintln!("cxauth: created a RingEX emulator app; the secret is shown only once");
        }
        AdminCommand::Ringex(RingexCommand::Jwt(RingexJwtCommand::Create { username })) => {
            let credential = admin::create_ringex_jwt(store, &username, now).await?;
            outln!("{}", credential.expose_secret());
            eprintln!(
                "cxauth: created a RingEX emulator JWT credential for {username:?}; it is shown only once"
            );
        }
        AdminCommand::Ringex(RingexCommand::Jwt(RingexJwtCommand::List { username })) => {
            let list = admin::list_ringex_jwts(store, username.as_deref()).await?;
            if matches!(output, Output::Text) {
                outln!("ID\tUSER_ID\tUSERNAME\tCREATED");
            }
            for j in list {
                match output {
                    Output::Json => outln!("{}", serde_json::to_string(&j)?),
                    Output::Text => outln!(
                        "{}\t{}\t{}\t{}",
                        j.id,
                        j.user_id,
                        j.username,
                        rfc3339(j.created_at)
                    ),
                }
            }
        }
        AdminCommand::Ringex(RingexCommand::Jwt(RingexJwtCommand::Revoke { id })) => {
            let j = admin::revoke_ringex_jwt(store, id, now).await?;
            eprintln!(
                "cxauth: revoked RingEX emulator JWT credential {id} of {:?}, and its emulator access tokens",
                j.username
            );
        }
        AdminCommand::Keys(KeysCommand::List) => {
            if matches!(output, Output::Text) {
                outln!("KID\tCREATED");
            }
            for k in store.signing_keys().await? {
                match output {
                    Output::Json => outln!(
                        "{}",
                        serde_json::json!({"kid": k.kid, "created_at": k.created_at})
                    ),
                    Output::Text => outln!("{}\t{}", k.kid, rfc3339(k.created_at)),
                }
            }
        }
        AdminCommand::Keys(KeysCommand::Rotate { master_key_file }) => {
            let Some(fingerprint) = store.get_meta(META_KEY_FINGERPRINT).await? else {
                anyhow::bail!(
                    "the database has not been initialised: start `cxauth serve {}` on it once first",
                    database_flag(&url)
                );
            };
            let mut config = ServerConfig::new(url.clone());
            config.master_key_file = master_key_file;
            let key = cxauth_server::master_key(&config, store).await?;
            let secrets = Secrets::derive(&key);
            drop(key);
            if secrets.fingerprint() != fingerprint {
                anyhow::bail!("the master key does not belong to this database");
            }
            let kid = admin::rotate_signing_key(store, &secrets, now).await?;
            outln!("{kid}");
            eprintln!(
                "cxauth: added signing key {kid}; running servers sign with it within a minute"
            );
        }
        AdminCommand::Audit {
            user,
            since,
            follow,
        } => audit(store, user, since, follow, output).await?,
        AdminCommand::Purge { audit_retention } => {
            let audit_before = admin::audit_cutoff(now, audit_retention);
            let n = admin::purge(store, now, audit_before, admin::PURGE_BATCH).await?;
            outln!("refresh_tokens\t{}", n.refresh_tokens);
            outln!("sessions\t{}", n.sessions);
            outln!("legacy_tokens\t{}", n.legacy_tokens);
            outln!("ringex_tokens\t{}", n.ringex_tokens);
            outln!("audit_events\t{}", n.audit_events);
            outln!("login_throttle\t{}", n.login_throttle);
            eprintln!("cxauth: purged {} rows", n.total());
        }
        AdminCommand::User(UserCommand::List) => {
            if matches!(output, Output::Text) {
                outln!("ID\tUSERNAME\tPLATFORM\tENABLED\tMAIN_ACCOUNT\tPARENT_PATH\tROLES");
            }
            for u in store.list_users().await? {
                match output {
                    // Field by field: the record also holds the password hash.
                    Output::Json => outln!(
                        "{}",
                        serde_json::json!({
                            "id": u.id,
                            "username": u.username,
                            "platform_id": u.platform_id,
                            "enabled": u.enabled,
                            "main_account_id": u.main_account_id,
                            "parent_path": u.parent_path,
                            "roles": u.roles,
                            "first_name": u.first_name,
                            "last_name": u.last_name,
                            "rc_user_id": u.rc_user_id,
                        })
                    ),
                    Output::Text => outln!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        u.id,
                        u.username,
                        u.platform_id,
                        u.enabled,
                        u.main_account_id,
                        u.parent_path,
                        u.roles.join(",")
                    ),
                }
            }
        }
        AdminCommand::Account(AccountCommand::List) => {
            if matches!(output, Output::Text) {
                outln!("ID\tNAME\tMAIN_ACCOUNT\tACTIVE\tRC_ACCOUNT");
            }
            for a in admin::list_accounts(store).await? {
                match output {
                    Output::Json => outln!("{}", serde_json::to_string(&a)?),
                    Output::Text => {
                        outln!(
                            "{}\t{}\t{}\t{}\t{}",
                            a.id,
                            a.name,
                            a.main_account_id,
                            a.active,
                            a.rc_account_id.as_deref().unwrap_or("-")
                        );
                    }
                }
            }
        }
        AdminCommand::Account(AccountCommand::Link {
            main,
            rc_account_id,
            unlink: _,
        }) => {
            admin::link_rc_account(store, main, rc_account_id.as_deref()).await?;
            match rc_account_id {
                Some(rc) => {
                    eprintln!("cxauth: main account {main} is linked to RingEX account {rc}")
                }
                None => eprintln!("cxauth: main account {main} is linked to no RingEX account"),
            }
        }
        AdminCommand::Agent(AgentCommand::Create {
            account,
            username,
            first_name,
            last_name,
            email,
            agent_type,
            user,
            rc_user_id,
            agent_group_id,
            no_login_control,
            no_login_updates,
        }) => {
            let rc_user_id = match user {
                Some(name) => Some(admin::rc_user_id_of(store, &name).await?),
                None => rc_user_id,
            };
            let spec = admin::AgentSpec {
                account_id: account,
                username,
                first_name,
                last_name,
                email,
                agent_type,
                rc_user_id,
                agent_group_id,
                allow_login_control: !no_login_control,
                allow_login_updates: !no_login_updates,
            };
            outln!("{}", admin::create_agent(store, spec, now).await?);
        }
        AdminCommand::Agent(AgentCommand::List { account }) => {
            if matches!(output, Output::Text) {
                outln!("ID\tACCOUNT\tUSERNAME\tTYPE\tRC_USER_ID\tFIRST_NAME\tLAST_NAME");
            }
            for a in admin::list_agents(store, account).await? {
                match output {
                    Output::Json => outln!("{}", serde_json::to_string(&a)?),
                    Output::Text => outln!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        a.id,
                        a.account_id,
                        a.username,
                        a.agent_type,
                        a.rc_user_id
                            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                        a.first_name,
                        a.last_name
                    ),
                }
            }
        }
        AdminCommand::Agent(AgentCommand::Delete { id }) => {
            if !admin::delete_agent(store, id).await? {
                anyhow::bail!("no agent with id {id}");
            }
            eprintln!("cxauth: deleted agent {id}");
        }
        AdminCommand::User(UserCommand::Delete { username }) => {
            let ended = admin::delete_user(store, &username, now).await?;
            print_revoked(&ended, output)?;
            eprintln!("cxauth: deleted user {username:?} and every credential of it");
        }
        AdminCommand::User(UserCommand::Disable { username }) => {
            admin::set_enabled(store, &username, false, now).await?;
            eprintln!(
                "cxauth: disabled {username:?}; ended its sessions, legacy auth tokens and RingEX \
                 emulator credentials"
            );
        }
        AdminCommand::User(UserCommand::Enable { username }) => {
            admin::set_enabled(store, &username, true, now).await?;
            eprintln!("cxauth: enabled {username:?}; its API tokens work again");
        }
        AdminCommand::User(UserCommand::SetPassword {
            username,
            revoke_tokens,
            ..
        }) => {
            let password = read_password()?;
            let ended =
                admin::change_password(store, &username, &password, revoke_tokens, now).await?;
            if revoke_tokens {
                print_revoked(&ended, output)?;
                eprintln!(
                    "cxauth: password of {username:?} changed; every credential of it has ended"
                );
            } else {
                eprintln!(
                    "cxauth: password of {username:?} changed; ended {} sessions, {} legacy auth \
                     tokens and {} RingEX emulator credentials (API tokens stay)",
                    ended.sessions,
                    ended.legacy_tokens,
                    ended.ringex_jwts + ended.ringex_tokens
                );
            }
        }
        AdminCommand::User(UserCommand::RevokeTokens { username }) => {
            let ended = admin::revoke_tokens(store, &username, now).await?;
            print_revoked(&ended, output)?;
            eprintln!("cxauth: ended every credential of {username:?}");
        }
    }
    Ok(())
}
