//! Seed files: accounts, users, fixed API tokens and agents made idempotently at start.

use super::agents::{AgentSpec, create_agent, link_rc_account, rc_user_id_of};
use super::rules::check_name;
use super::users::{UserSpec, create_main_account, create_sub_account, create_user};
use super::{AdminError, local_audit};
use crate::audit::Event;
use crate::store::Store;
use secrecy::SecretString;

/// A secret read from a seed file: kept out of `Debug` (the seed is logged on error paths).
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct SeedSecret(String);

impl std::fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An account of a seed, named by its seed name or given by id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum SeedAccountRef {
    /// An account id (e.g. one made earlier with `cxauth admin account create`).
    Id(i64),
    /// `"MAIN"` (a main account of the seed) or `"MAIN/SUB"` (one of its sub-accounts).
    Name(String),
}

/// A main account of a seed, with its sub-accounts.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAccount {
    /// Display name; also the name grants use.
    pub name: String,
    /// Names of its sub-accounts, created in this order.
    #[serde(default)]
    pub sub_accounts: Vec<String>,
    /// The RingEX account it is linked to (set when the seed creates the account).
    pub rc_account_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// An agent of a seed.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAgent {
    /// Unique login name of the agent.
    pub username: String,
    /// Its sub-account, by seed name (`"Acme/Sales"`) or id.
    pub account: SeedAccountRef,
    /// Given name.
    #[serde(default)]
    pub first_name: String,
    /// Family name.
    #[serde(default)]
    pub last_name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// `AGENT` (the default) or `SUPERVISOR`.
    pub agent_type: Option<String>,
    /// The user it belongs to, by username: the agent takes the user's RingEX user id.
    pub user: Option<String>,
    /// Or the RingEX user id directly.
    pub rc_user_id: Option<i64>,
    /// The agent group.
    pub agent_group_id: Option<i64>,
    /// Whether the agent may log itself in and out (default true).
    #[serde(default = "yes")]
    pub allow_login_control: bool,
    /// Whether the agent may change its login settings (default true).
    #[serde(default = "yes")]
    pub allow_login_updates: bool,
}

/// A user of a seed.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    /// Login name.
    pub username: String,
    /// Password (hashed on creation; only the hash is stored).
    pub password: SeedSecret,
    /// Platform id; the server's `--platform-id` if absent.
    pub platform_id: Option<String>,
    /// Username of the parent (created earlier in the file, or already in the database).
    pub parent: Option<String>,
    /// Accounts granted, by seed name (`"Acme"`, `"Acme/Sales"`) or id.
    #[serde(default)]
    pub grants: Vec<SeedAccountRef>,
    /// Roles, e.g. `SUPER_USER`, `MANAGE_USERS`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Given name.
    #[serde(default)]
    pub first_name: String,
    /// Family name.
    #[serde(default)]
    pub last_name: String,
    /// RingEX extension id the token exchange maps to this user.
    pub rc_user_id: Option<i64>,
    /// Fixed API tokens in the `PLATFORM:UUID` form, so that an integrator's CI can hard-code
    /// them; stored sealed and digested exactly like minted ones.
    #[serde(default)]
    pub api_tokens: Vec<SeedSecret>,
}

/// What `cxauth serve --seed FILE` puts in the database: a stand-in for a RingCX tenant in an
/// integrator's CI. Applying it is idempotent: what exists (accounts made by an earlier run of
/// the seed, users by name, tokens by value) is left as it is.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Main accounts with their sub-accounts.
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
    /// Users, parents before their children.
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Agents of the seed's sub-accounts.
    #[serde(default)]
    pub agents: Vec<SeedAgent>,
}

/// What applying a seed did, for the start-up log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// Accounts (main and sub) created.
    pub accounts_created: u32,
    /// Users created.
    pub users_created: u32,
    /// API tokens stored.
    pub api_tokens_created: u32,
    /// Agents created.
    pub agents_created: u32,
    /// Accounts, users and tokens that were there already.
    pub unchanged: u32,
}

/// The metadata key remembering which account a seed name made, so a second run finds it
/// (accounts have no unique name of their own).
fn seed_account_key(name: &str) -> String {
    format!("seed.account.{name}")
}

async fn seed_account(
    store: &dyn Store,
    name: &str,
    main: Option<i64>,
    now: i64,
    report: &mut SeedReport,
) -> Result<i64, AdminError> {
    let key = seed_account_key(name);
    if let Some(id) = store.get_meta(&key).await? {
        report.unchanged += 1;
        return id
            .parse()
            .map_err(|_| AdminError::Invalid(format!("metadata {key} is not an account id")));
    }
    let leaf = name.rsplit('/').next().unwrap_or(name);
    let id = match main {
        None => create_main_account(store, leaf, now).await?,
        Some(m) => create_sub_account(store, m, leaf, now).await?,
    };
    // Two instances seeding at once: the first to record a name wins; the loser's account is
    // left unnamed (harmless) and the recorded one is used.
    let kept = store.init_meta(&key, &id.to_string()).await?;
    report.accounts_created += 1;
    kept.parse()
        .map_err(|_| AdminError::Invalid(format!("metadata {key} is not an account id")))
}

/// Applies `seed`: creates its accounts, users and fixed API tokens where missing. Runs the
/// checks of `cxauth admin` (names, roles, passwords) and fails on the first bad entry, naming
/// it. Slow (one Argon2id hash per new user).
pub async fn apply_seed(
    store: &dyn Store,
    secrets: &crate::crypto::Secrets,
    seed: &Seed,
    default_platform_id: &str,
    now: i64,
) -> Result<SeedReport, AdminError> {
    let mut report = SeedReport::default();
    let mut names = std::collections::HashMap::new();
    for a in &seed.accounts {
        check_name("account name", &a.name, true)?;
        if a.name.contains('/') {
            return Err(AdminError::Invalid(format!(
                "seed account {:?}: a name must not contain '/' (it separates MAIN/SUB)",
                a.name
            )));
        }
        let before = report.accounts_created;
        let main = seed_account(store, &a.name, None, now, &mut report).await?;
        if let Some(rc) = &a.rc_account_id
            && report.accounts_created > before
        {
            link_rc_account(store, main, Some(rc))
                .await
                .map_err(|e| AdminError::Invalid(format!("seed account {:?}: {e}", a.name)))?;
        }
        names.insert(a.name.clone(), main);
        for sub in &a.sub_accounts {
            check_name("account name", sub, true)?;
            let full = format!("{}/{sub}", a.name);
            let id = seed_account(store, &full, Some(main), now, &mut report).await?;
            names.insert(full, id);
        }
    }
    for u in &seed.users {
        let what = |e: AdminError| AdminError::Invalid(format!("seed user {:?}: {e}", u.username));
        let holder = match store.user_by_username(&u.username).await? {
            Some(existing) => {
                report.unchanged += 1;
                existing
            }
            None => {
                let grants = u
                    .grants
                    .iter()
                    .map(|g| match g {
                        SeedAccountRef::Id(id) => Ok(*id),
                        SeedAccountRef::Name(n) => names.get(n).copied().ok_or_else(|| {
                            AdminError::Invalid(format!(
                                "seed user {:?}: grant {n:?} names no account of the seed \
                                 (write \"MAIN\" or \"MAIN/SUB\" as in [[accounts]], or an id)",
                                u.username
                            ))
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let spec = UserSpec {
                    username: u.username.clone(),
                    password: SecretString::from(u.password.0.clone()),
                    platform_id: u
                        .platform_id
                        .clone()
                        .unwrap_or_else(|| default_platform_id.to_owned()),
                    parent: u.parent.clone(),
                    grants,
                    roles: u.roles.clone(),
                    first_name: u.first_name.clone(),
                    last_name: u.last_name.clone(),
                    rc_user_id: u.rc_user_id,
                };
                create_user(store, spec, now).await.map_err(what)?;
                report.users_created += 1;
                store
                    .user_by_username(&u.username)
                    .await?
                    .ok_or_else(|| AdminError::Invalid(format!("user {:?} vanished", u.username)))?
            }
        };
        for t in &u.api_tokens {
            let Some(token) = cxauth_proto::ApiToken::parse(&t.0) else {
                return Err(AdminError::Invalid(format!(
                    "seed user {:?}: an API token is not of the form PLATFORM:UUID (a lowercase \
                     version-4 uuid, e.g. aws80:0b6f7a34-6f1e-4b8e-9c5a-2f6f3c1d9e21)",
                    u.username
                )));
            };
            if token.platform_id() != holder.platform_id {
                return Err(AdminError::Invalid(format!(
                    "seed user {:?}: an API token's platform {:?} is not the user's {:?}",
                    u.username,
                    token.platform_id(),
                    holder.platform_id
                )));
            }
            let text = token.to_string();
            let digest = secrets.digest(crate::crypto::DigestKind::ApiToken, text.as_bytes());
            if let Some((_, owner)) = store.api_token_by_digest(&digest).await? {
                if owner.id != holder.id {
                    return Err(AdminError::Invalid(format!(
                        "seed user {:?}: one of its API tokens belongs to {:?}",
                        u.username, owner.username
                    )));
                }
                report.unchanged += 1;
                continue;
            }
            let sealed = secrets
                .seal(
                    &crate::api_tokens::api_token_aad(holder.id),
                    text.as_bytes(),
                )
                .map_err(|e| AdminError::Invalid(e.to_string()))?;
            store
                .insert_api_token(holder.id, &digest, &sealed, now)
                .await?;
            local_audit(
                store,
                now,
                Event::ApiTokenCreate,
                Some(holder.id),
                &u.username,
                "seed",
            )
            .await;
            report.api_tokens_created += 1;
        }
    }
    seed_agents(store, seed, &names, now, &mut report).await?;
    Ok(report)
}

async fn seed_agents(
    store: &dyn Store,
    seed: &Seed,
    names: &std::collections::HashMap<String, i64>,
    now: i64,
    report: &mut SeedReport,
) -> Result<(), AdminError> {
    if seed.agents.is_empty() {
        return Ok(());
    }
    let existing: std::collections::HashSet<String> = store
        .list_agents(None)
        .await?
        .into_iter()
        .map(|a| a.username)
        .collect();
    for a in &seed.agents {
        let what = |e: AdminError| AdminError::Invalid(format!("seed agent {:?}: {e}", a.username));
        if existing.contains(&a.username) {
            report.unchanged += 1;
            continue;
        }
        let account_id = match &a.account {
            SeedAccountRef::Id(id) => *id,
            SeedAccountRef::Name(n) => names.get(n).copied().ok_or_else(|| {
                what(AdminError::Invalid(format!(
                    "account {n:?} names no account of the seed (write \"MAIN/SUB\" as in \
                     [[accounts]], or an id)"
                )))
            })?,
        };
        let rc_user_id = match (&a.user, a.rc_user_id) {
            (Some(_), Some(_)) => {
                return Err(what(AdminError::Invalid(
                    "give user or rc_user_id, not both".into(),
                )));
            }
            (Some(name), None) => Some(rc_user_id_of(store, name).await.map_err(what)?),
            (None, id) => id,
        };
        let spec = AgentSpec {
            account_id,
            username: a.username.clone(),
            first_name: a.first_name.clone(),
            last_name: a.last_name.clone(),
            email: a.email.clone(),
            agent_type: a
                .agent_type
                .clone()
                .unwrap_or_else(|| cxauth_proto::AGENT_TYPE_AGENT.to_owned()),
            rc_user_id,
            agent_group_id: a.agent_group_id,
            allow_login_control: a.allow_login_control,
            allow_login_updates: a.allow_login_updates,
        };
        match create_agent(store, spec, now).await {
            Ok(_) => report.agents_created += 1,
            // Another instance seeding at the same time made it first.
            Err(AdminError::Store(crate::store::StoreError::Conflict(_))) => report.unchanged += 1,
            Err(e) => return Err(what(e)),
        }
    }
    Ok(())
}
