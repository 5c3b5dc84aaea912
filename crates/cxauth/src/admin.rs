//! `cxauth admin`: accounts and users, straight on the database.
//!
//! Each command that creates something prints the new id alone on stdout, so scripts can write
//! `id=$(cxauth admin account create --name Sales)`. Messages go to stderr.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use cxauth_core::admin::{self, UserSpec};
use cxauth_core::clock::{Clock, SystemClock, duration_ms};
use cxauth_core::crypto::Secrets;
use cxauth_core::service::META_KEY_FINGERPRINT;
use cxauth_core::service::rfc3339;
use cxauth_core::store::{AuditEvent, AuditFilter, RevokedCounts, Store};
use cxauth_server::config::{ServerConfig, parse_duration};
use cxauth_store::DatabaseUrl;
use secrecy::{ExposeSecret as _, SecretString};
use std::io::BufRead as _;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Database: sqlite://PATH, a plain file path, or postgres://…. Accepted before or after
    /// the subcommand.
    #[arg(
        long,
        env = "CXAUTH_DATABASE",
        default_value = "sqlite://cxauth.db",
        global = true
    )]
    database: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Main accounts and sub-accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
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
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
    /// List signing keys, oldest first: key id and creation time, tab-separated.
    List,
}

/// How `cxauth admin audit` prints events.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    /// Tab-separated, with a header line.
    Text,
    /// One JSON object per line.
    Json,
}

fn print_audit(events: &[AuditEvent], output: Output) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for e in events {
        match output {
            Output::Json => writeln!(out, "{}", serde_json::to_string(e)?)?,
            Output::Text => writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                rfc3339(e.at),
                e.event,
                e.outcome,
                e.user_id.map(|i| i.to_string()).unwrap_or_default(),
                e.username.as_deref().unwrap_or(""),
                e.addr.as_deref().unwrap_or(""),
                e.request_id.as_deref().unwrap_or(""),
                e.detail
            )?,
        }
    }
    out.flush()?;
    Ok(())
}

async fn audit(
    store: &dyn Store,
    user: Option<String>,
    since: Option<std::time::Duration>,
    follow: bool,
    output: Output,
) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    let mut filter = AuditFilter {
        username: user,
        since: since.map_or(i64::MIN, |d| now.saturating_sub(duration_ms(d))),
        ..AuditFilter::default()
    };
    if matches!(output, Output::Text) {
        println!("TIME\tEVENT\tOUTCOME\tUSER_ID\tUSERNAME\tADDR\tREQUEST_ID\tDETAIL");
    }
    loop {
        let events = store.audit_events(&filter).await?;
        print_audit(&events, output)?;
        if let Some(last) = events.last() {
            filter.after_id = last.id;
        }
        if i64::try_from(events.len()).unwrap_or(i64::MAX) >= filter.limit {
            continue;
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
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
    /// credential: only a digest of it is stored).
    List {
        /// Only the credentials of this user.
        #[arg(long)]
        username: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
        /// Role to give (e.g. SUPER_USER, MANAGE_USERS); repeat for more.
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
    /// List users, one per line, tab-separated, with a header line.
    List,
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
        /// what ended, as `revoke-tokens` does.
        #[arg(long)]
        revoke_tokens: bool,
        /// Output format of what ended (with --revoke-tokens).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// End every credential of a user at once: API tokens, legacy auth tokens, sessions (their
    /// access and refresh tokens) and RingEX emulator credentials; prints how many of each
    /// ended, one `KIND<TAB>COUNT` line each (or one JSON object). The password stays.
    RevokeTokens {
        /// Login name.
        username: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Prints what a revocation ended: `KIND<TAB>COUNT` lines, or one JSON object.
fn print_revoked(n: &RevokedCounts, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string(n)?),
        Output::Text => {
            println!("api_tokens\t{}", n.api_tokens);
            println!("legacy_tokens\t{}", n.legacy_tokens);
            println!("sessions\t{}", n.sessions);
            println!("ringex_jwts\t{}", n.ringex_jwts);
            println!("ringex_tokens\t{}", n.ringex_tokens);
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

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database)?;
    let store = cxauth_store::open(&url).await?;
    let store = store.as_ref();
    let now = SystemClock.now_ms();
    match args.command {
        AdminCommand::Account(AccountCommand::Create { name, main: None }) => {
            println!("{}", admin::create_main_account(store, &name, now).await?);
        }
        AdminCommand::Account(AccountCommand::Create {
            name,
            main: Some(main),
        }) => {
            println!(
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
            println!("{}", admin::create_user(store, spec, now).await?);
        }
        AdminCommand::Ringex(RingexCommand::App(RingexAppCommand::Create)) => {
            let (client_id, secret) = admin::create_ringex_app(store, now).await?;
            println!("{client_id}\n{}", secret.expose_secret());
            eprintln!("cxauth: created a RingEX emulator app; the secret is shown only once");
        }
        AdminCommand::Ringex(RingexCommand::Jwt(RingexJwtCommand::Create { username })) => {
            let credential = admin::create_ringex_jwt(store, &username, now).await?;
            println!("{}", credential.expose_secret());
            eprintln!(
                "cxauth: created a RingEX emulator JWT credential for {username:?}; it is shown only once"
            );
        }
        AdminCommand::Ringex(RingexCommand::Jwt(RingexJwtCommand::List { username, output })) => {
            let list = admin::list_ringex_jwts(store, username.as_deref()).await?;
            if matches!(output, Output::Text) {
                println!("ID\tUSER_ID\tUSERNAME\tCREATED");
            }
            for j in list {
                match output {
                    Output::Json => println!("{}", serde_json::to_string(&j)?),
                    Output::Text => println!(
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
            println!("KID\tCREATED");
            for k in store.signing_keys().await? {
                println!("{}\t{}", k.kid, rfc3339(k.created_at));
            }
        }
        AdminCommand::Keys(KeysCommand::Rotate { master_key_file }) => {
            let Some(fingerprint) = store.get_meta(META_KEY_FINGERPRINT).await? else {
                anyhow::bail!(
                    "the database has not been initialised: start `cxauth serve` on it once first"
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
            println!("{kid}");
            eprintln!(
                "cxauth: added signing key {kid}; running servers sign with it within a minute"
            );
        }
        AdminCommand::Audit {
            user,
            since,
            follow,
            output,
        } => audit(store, user, since, follow, output).await?,
        AdminCommand::Purge { audit_retention } => {
            let audit_before = now.saturating_sub(duration_ms(audit_retention));
            let n = admin::purge(store, now, audit_before, admin::PURGE_BATCH).await?;
            println!("refresh_tokens\t{}", n.refresh_tokens);
            println!("sessions\t{}", n.sessions);
            println!("legacy_tokens\t{}", n.legacy_tokens);
            println!("ringex_tokens\t{}", n.ringex_tokens);
            println!("audit_events\t{}", n.audit_events);
            println!("login_throttle\t{}", n.login_throttle);
            eprintln!("cxauth: purged {} rows", n.total());
        }
        AdminCommand::User(UserCommand::List) => {
            println!("ID\tUSERNAME\tPLATFORM\tENABLED\tMAIN_ACCOUNT\tPARENT_PATH\tROLES");
            for u in store.list_users().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.username,
                    u.platform_id,
                    u.enabled,
                    u.main_account_id,
                    u.parent_path,
                    u.roles.join(",")
                );
            }
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
            output,
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
        AdminCommand::User(UserCommand::RevokeTokens { username, output }) => {
            let ended = admin::revoke_tokens(store, &username, now).await?;
            print_revoked(&ended, output)?;
            eprintln!("cxauth: ended every credential of {username:?}");
        }
    }
    Ok(())
}
