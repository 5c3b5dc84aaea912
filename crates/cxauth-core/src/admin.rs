//! Administrative operations shared by `cxauth admin` and the first start: input rules for
//! accounts and users, and the bootstrap of an empty database.

use crate::audit;
use crate::crypto::random_bytes;
use crate::password::{MAX_PASSWORD_LEN, hash_password};
use crate::service::MAX_USERNAME_LEN;
use crate::store::{
    AccountInfo, Bootstrap, DeleteUser, EndCredentials, NewUser, PurgeCounts, ROLE_MANAGE_USERS,
    ROLE_SUPER_USER, RevokeReason, RevokedCounts, RingexJwtInfo, Store, StoreError,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_proto::is_valid_platform_id;
use secrecy::{ExposeSecret, SecretString};

/// Username of the super user made on first start.
pub const BOOTSTRAP_USERNAME: &str = "admin";
/// Longest account or person name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// Why an administrative operation was refused; every message is one line fit for a person.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_name(what: &str, name: &str, required: bool) -> Result<(), AdminError> {
    if required && name.trim().is_empty() {
        return Err(AdminError::Invalid(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(AdminError::Invalid(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a username: 1–255 bytes, no whitespace or control characters.
pub fn check_username(username: &str) -> Result<(), AdminError> {
    if username.is_empty() {
        return Err(AdminError::Invalid("username must not be empty".into()));
    }
    if username.len() > MAX_USERNAME_LEN {
        return Err(AdminError::Invalid(format!(
            "username is longer than {MAX_USERNAME_LEN} bytes"
        )));
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AdminError::Invalid(
            "username must not contain spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// Checks a password: not empty, at most [`MAX_PASSWORD_LEN`] bytes.
pub fn check_password(password: &SecretString) -> Result<(), AdminError> {
    let p = password.expose_secret();
    if p.is_empty() {
        return Err(AdminError::Invalid("password must not be empty".into()));
    }
    if p.len() > MAX_PASSWORD_LEN {
        return Err(AdminError::Invalid(format!(
            "password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// The roles a user may be given: the ones cxauth gives a meaning to. Any other name would be
/// stored and silently mean nothing (a typo such as `SUPERUSER` would leave a user without
/// the rights its creator meant to give), so it is refused.
pub const KNOWN_ROLES: [&str; 2] = [ROLE_SUPER_USER, ROLE_MANAGE_USERS];

/// Checks a role name against [`KNOWN_ROLES`]; the refusal lists them and names the closest
/// one ("did you mean …") when the name looks like a misspelling of it.
pub fn check_role(role: &str) -> Result<(), AdminError> {
    if KNOWN_ROLES.contains(&role) {
        return Ok(());
    }
    let hint = closest_role(role)
        .map(|r| format!("; did you mean {r}?"))
        .unwrap_or_default();
    let shown: String = role.chars().take(80).collect();
    Err(AdminError::Invalid(format!(
        "unknown role {shown:?}: the roles are {}{hint}",
        KNOWN_ROLES.join(", ")
    )))
}

/// The known role `role` most likely misspells: the same letters in another case or without
/// the underscores, or at most two edits away.
fn closest_role(role: &str) -> Option<&'static str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let wanted = squash(role);
    KNOWN_ROLES
        .iter()
        .map(|&r| (edit_distance(&wanted, &squash(r)), r))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, r)| r)
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Creates a main account.
pub async fn create_main_account(
    store: &dyn Store,
    name: &str,
    now: i64,
) -> Result<i64, AdminError> {
    check_name("account name", name, true)?;
    Ok(store.create_main_account(name.trim(), now).await?)
}

/// Creates a sub-account of `main_id`.
pub async fn create_sub_account(
    store: &dyn Store,
    main_id: i64,
    name: &str,
    now: i64,
) -> Result<i64, AdminError> {
    check_name("account name", name, true)?;
    Ok(store.create_sub_account(main_id, name.trim(), now).await?)
}

/// A user to create, with its password in clear (hashed here, never stored or shown).
#[derive(Debug)]
pub struct UserSpec {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: SecretString,
    /// Platform id.
    pub platform_id: String,
    /// Username of the parent.
    pub parent: Option<String>,
    /// Accounts granted.
    pub grants: Vec<i64>,
    /// Roles.
    pub roles: Vec<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// RingEX extension id the token exchange maps to this user (unique), if any.
    pub rc_user_id: Option<i64>,
}

fn new_user(spec: UserSpec, now: i64) -> Result<NewUser, AdminError> {
    check_username(&spec.username)?;
    check_password(&spec.password)?;
    if !is_valid_platform_id(&spec.platform_id) {
        return Err(AdminError::Invalid(format!(
            "platform id {:?} is not valid: use 1 to 64 of A-Z, a-z, 0-9, '.', '_', '~', '-'",
            spec.platform_id
        )));
    }
    for r in &spec.roles {
        check_role(r)?;
    }
    check_name("first name", &spec.first_name, false)?;
    check_name("last name", &spec.last_name, false)?;
    if spec.rc_user_id.is_some_and(|id| id <= 0) {
        return Err(AdminError::Invalid(
            "a RingEX user id must be a positive number".into(),
        ));
    }
    if spec.parent.is_none() && spec.grants.is_empty() {
        return Err(AdminError::Invalid(
            "a user needs a parent (--parent) or an account grant (--grant) to belong to a main account".into(),
        ));
    }
    let mut roles = spec.roles;
    roles.sort();
    roles.dedup();
    let mut grants = spec.grants;
    grants.dedup();
    let password_hash =
        hash_password(&spec.password).map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(NewUser {
        username: spec.username,
        password_hash,
        platform_id: spec.platform_id,
        parent: spec.parent,
        grants,
        roles,
        first_name: spec.first_name,
        last_name: spec.last_name,
        rc_user_id: spec.rc_user_id,
        now,
    })
}

/// Validates, hashes the password, and creates the user. Slow (one Argon2id hash): call it from
/// a blocking-tolerant context such as the CLI.
pub async fn create_user(store: &dyn Store, spec: UserSpec, now: i64) -> Result<i64, AdminError> {
    let user = new_user(spec, now)?;
    let id = store.create_user(&user).await?;
    local_audit(store, now, audit::USER_CREATE, Some(id), &user.username, "").await;
    Ok(id)
}

/// Audits an operation of the local admin command (no address, no request id).
async fn local_audit(
    store: &dyn Store,
    now: i64,
    event: &'static str,
    user_id: Option<i64>,
    username: &str,
    detail: &str,
) {
    audit::record(
        store,
        &audit::AuditContext::local(),
        now,
        audit::Entry {
            event,
            outcome: audit::SUCCESS,
            user_id,
            username: Some(username),
            detail,
        },
    )
    .await;
}

/// Sets a new password, in one transaction with the end of the user's sessions, legacy auth
/// tokens and RingEX emulator credentials (JWT credentials and access tokens: they sign in
/// without the password, so they must not outlive its change). API tokens stay (see
/// [`change_password`] to end them too). Returns what ended.
pub async fn set_password(
    store: &dyn Store,
    username: &str,
    password: &SecretString,
    now: i64,
) -> Result<RevokedCounts, AdminError> {
    change_password(store, username, password, false, now).await
}

/// [`set_password`], and with `revoke_api_tokens` (`set-password --revoke-tokens`) the end of
/// the user's API tokens in the same transaction. Returns what ended; audited.
pub async fn change_password(
    store: &dyn Store,
    username: &str,
    password: &SecretString,
    revoke_api_tokens: bool,
    now: i64,
) -> Result<RevokedCounts, AdminError> {
    check_password(password)?;
    let hash = hash_password(password).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let end = EndCredentials {
        new_password_hash: Some(&hash),
        api_tokens: revoke_api_tokens,
        reason: RevokeReason::PasswordChanged,
    };
    let Some(ended) = store.end_user_credentials(username, &end, now).await? else {
        return Err(AdminError::Invalid(format!("no user named {username:?}")));
    };
    let id = store.user_by_username(username).await?.map(|u| u.id);
    let detail = format!("ended {}", ended.summary());
    local_audit(store, now, audit::PASSWORD_CHANGE, id, username, &detail).await;
    Ok(ended)
}

/// Ends every credential of a user in one transaction: API tokens, legacy auth tokens,
/// sessions (their access and refresh tokens), RingEX emulator JWT credentials and emulator
/// access tokens (`cxauth admin user revoke-tokens`). The password stays; the user may log in
/// again. Returns what ended; audited.
pub async fn revoke_tokens(
    store: &dyn Store,
    username: &str,
    now: i64,
) -> Result<RevokedCounts, AdminError> {
    let end = EndCredentials {
        new_password_hash: None,
        api_tokens: true,
        reason: RevokeReason::Revoked,
    };
    let Some(ended) = store.end_user_credentials(username, &end, now).await? else {
        return Err(AdminError::Invalid(format!("no user named {username:?}")));
    };
    let id = store.user_by_username(username).await?.map(|u| u.id);
    let detail = format!("ended {}", ended.summary());
    local_audit(store, now, audit::CREDENTIALS_REVOKE, id, username, &detail).await;
    Ok(ended)
}

/// The RingEX emulator JWT credentials, of `username` or of everyone (no secrets).
pub async fn list_ringex_jwts(
    store: &dyn Store,
    username: Option<&str>,
) -> Result<Vec<RingexJwtInfo>, AdminError> {
    Ok(store.ringex_jwts(username).await?)
}

/// Revokes one RingEX emulator JWT credential by id, with its user's emulator access tokens;
/// audited.
pub async fn revoke_ringex_jwt(
    store: &dyn Store,
    id: i64,
    now: i64,
) -> Result<RingexJwtInfo, AdminError> {
    let Some(info) = store.revoke_ringex_jwt(id).await? else {
        return Err(AdminError::Invalid(format!(
            "no RingEX emulator JWT credential with id {id}"
        )));
    };
    let detail = format!("id {id}");
    local_audit(
        store,
        now,
        audit::RINGEX_JWT_REVOKE,
        Some(info.user_id),
        &info.username,
        &detail,
    )
    .await;
    Ok(info)
}

/// Disables (or enables) a user. Disabling ends its sessions, legacy auth tokens and RingEX
/// emulator credentials for good; enabling brings back its API tokens only.
pub async fn set_enabled(
    store: &dyn Store,
    username: &str,
    enabled: bool,
    now: i64,
) -> Result<(), AdminError> {
    if !store.set_user_enabled(username, enabled, now).await? {
        return Err(AdminError::Invalid(format!("no user named {username:?}")));
    }
    let id = store.user_by_username(username).await?.map(|u| u.id);
    let event = if enabled {
        audit::USER_ENABLE
    } else {
        audit::USER_DISABLE
    };
    local_audit(store, now, event, id, username, "").await;
    Ok(())
}

/// Every account, ordered by id (`cxauth admin account list`).
pub async fn list_accounts(store: &dyn Store) -> Result<Vec<AccountInfo>, AdminError> {
    Ok(store.list_accounts().await?)
}

/// Deletes a user with, in the same transaction, its sessions, API tokens, legacy auth tokens,
/// RingEX emulator credentials, grants and remembered login addresses (see
/// [`Store::delete_user`]); returns the credentials that went. Refused while the user has
/// children: delete or re-create them first, so no user is left below a missing parent.
/// Audited (the audit trail keeps its id and name).
pub async fn delete_user(
    store: &dyn Store,
    username: &str,
    now: i64,
) -> Result<RevokedCounts, AdminError> {
    match store.delete_user(username).await? {
        DeleteUser::Deleted { id, ended } => {
            let detail = format!("deleted with it {}", ended.summary());
            local_audit(store, now, audit::USER_DELETE, Some(id), username, &detail).await;
            Ok(ended)
        }
        DeleteUser::NoSuchUser => Err(AdminError::Invalid(format!("no user named {username:?}"))),
        DeleteUser::HasChildren(children) => {
            let n = children.len();
            let some: Vec<&str> = children.iter().take(5).map(String::as_str).collect();
            let more = if n > 5 { ", …" } else { "" };
            Err(AdminError::Invalid(format!(
                "{username:?} has {n} child user(s) ({}{more}): delete them first",
                some.join(", ")
            )))
        }
    }
}

/// Registers a new RingEX emulator app; returns its client id and client secret, the secret
/// shown only this once (only its Argon2id hash is stored). Slow (one hash).
pub async fn create_ringex_app(
    store: &dyn Store,
    now: i64,
) -> Result<(String, SecretString), AdminError> {
    let random = |n: usize| -> Result<String, AdminError> {
        let bytes = random_bytes::<32>().map_err(|e| AdminError::Invalid(e.to_string()))?;
        Ok(URL_SAFE_NO_PAD.encode(&bytes[..n]))
    };
    let client_id = random(16)?;
    let secret = SecretString::from(random(32)?);
    let hash = hash_password(&secret).map_err(|e| AdminError::Invalid(e.to_string()))?;
    store.insert_ringex_app(&client_id, &hash, now).await?;
    Ok((client_id, secret))
}

/// Makes a RingEX emulator JWT credential for `username`, which must hold a RingEX user id
/// (`--rc-user-id`): the emulator signs users in as that extension. Only a digest is stored.
pub async fn create_ringex_jwt(
    store: &dyn Store,
    username: &str,
    now: i64,
) -> Result<SecretString, AdminError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no user named {username:?}")))?;
    let Some(rc_user_id) = user.rc_user_id else {
        return Err(AdminError::Invalid(format!(
            "user {username:?} has no RingEX user id; create it with --rc-user-id"
        )));
    };
    let credential = SecretString::from(
        crate::emulator::make_ringex_jwt(rc_user_id, now)
            .map_err(|e| AdminError::Invalid(e.to_string()))?,
    );
    store
        .insert_ringex_jwt(
            &crate::crypto::ringex_jwt_digest(credential.expose_secret().as_bytes()),
            user.id,
            now,
        )
        .await?;
    Ok(credential)
}

/// What a first start did.
#[derive(Debug)]
pub enum BootstrapOutcome {
    /// The database was not empty; nothing changed.
    AlreadyInitialised,
    /// Created with the password given in the environment.
    Created,
    /// Created with a random password, to be shown once.
    CreatedWithPassword(SecretString),
}

/// Adds a new signing key (key rotation) and returns its id. Running instances start signing
/// with it at their next key reload (within [`crate::service::KEY_RELOAD_INTERVAL`], or at once
/// when they meet a token it signed); tokens signed by older keys stay valid until they expire,
/// and the older keys retire on their own (see [`crate::service::Auth::retire_keys`]).
pub async fn rotate_signing_key(
    store: &dyn Store,
    secrets: &crate::crypto::Secrets,
    now: i64,
) -> Result<String, AdminError> {
    let key = crate::jwt::generate_signing_key(secrets, now)
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    store.insert_signing_key(&key).await?;
    audit::record(
        store,
        &audit::AuditContext::local(),
        now,
        audit::Entry {
            event: audit::KEY_CREATE,
            outcome: audit::SUCCESS,
            user_id: None,
            username: None,
            detail: &format!("kid {} (rotation)", key.kid),
        },
    )
    .await;
    Ok(key.kid)
}

/// Rows each purge pass removes at most per table: small, so each write transaction is short.
pub const PURGE_BATCH: i64 = 500;

/// Removes every row that can never be used again, and audit events older than `audit_before`
/// (epoch ms), in batches of `batch` rows per table, and says how many went. Used by the
/// server's background housekeeping and `cxauth admin purge`.
pub async fn purge(
    store: &dyn Store,
    now: i64,
    audit_before: i64,
    batch: i64,
) -> Result<PurgeCounts, StoreError> {
    let mut total = PurgeCounts::default();
    loop {
        let mut pass = store.purge_expired(now, batch).await?;
        pass.audit_events = store.purge_audit(audit_before, batch).await?;
        total.add(&pass);
        if !pass.is_full(batch) {
            return Ok(total);
        }
        // Let other work in between batches.
        tokio::task::yield_now().await;
    }
}

/// A random password for a bootstrapped `admin` (120 bits, URL-safe), shown once.
pub fn random_password() -> Result<SecretString, AdminError> {
    let bytes = random_bytes::<15>().map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
}

/// On an empty database, creates `Main` with sub-account `Default` and the super user `admin`
/// with `password`, or a random one that the caller must show once.
pub async fn bootstrap(
    store: &dyn Store,
    platform_id: &str,
    password: Option<SecretString>,
    now: i64,
) -> Result<BootstrapOutcome, AdminError> {
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (random_password()?, true),
    };
    let user = new_user(
        UserSpec {
            username: BOOTSTRAP_USERNAME.into(),
            password: password.clone(),
            platform_id: platform_id.into(),
            parent: None,
            grants: vec![0],
            roles: vec![ROLE_SUPER_USER.into()],
            first_name: "Admin".into(),
            last_name: String::new(),
            rc_user_id: None,
        },
        now,
    )?;
    let created = store
        .bootstrap(&Bootstrap {
            main_account_name: "Main".into(),
            sub_account_name: "Default".into(),
            user,
        })
        .await?;
    if created {
        let id = store
            .user_by_username(BOOTSTRAP_USERNAME)
            .await?
            .map(|u| u.id);
        local_audit(
            store,
            now,
            audit::USER_CREATE,
            id,
            BOOTSTRAP_USERNAME,
            "bootstrap",
        )
        .await;
    }
    Ok(match (created, generated) {
        (false, _) => BootstrapOutcome::AlreadyInitialised,
        (true, false) => BootstrapOutcome::Created,
        (true, true) => BootstrapOutcome::CreatedWithPassword(password),
    })
}

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
    /// Accounts, users and tokens that were there already.
    pub unchanged: u32,
}

/// The metadata key remembering which account a seed name made, so a second run finds it
/// (accounts have no unique name of their own).
fn seed_account_key(name: &str) -> String {
    format!("seed.account.{name}")
}

/// The additional data API tokens are sealed with; the same as [`crate::service::Auth`]'s, so
/// a seeded token lists and works like a minted one (the seed test lists it back).
fn api_token_aad(user_id: i64) -> Vec<u8> {
    format!("api-token:{user_id}").into_bytes()
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
        let main = seed_account(store, &a.name, None, now, &mut report).await?;
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
                .seal(&api_token_aad(holder.id), text.as_bytes())
                .map_err(|e| AdminError::Invalid(e.to_string()))?;
            store
                .insert_api_token(holder.id, &digest, &sealed, now)
                .await?;
            local_audit(
                store,
                now,
                audit::API_TOKEN_CREATE,
                Some(holder.id),
                &u.username,
                "seed",
            )
            .await;
            report.api_tokens_created += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_rules() {
        assert!(check_username("admin@example.com").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_username(&"x".repeat(256)).is_err());
        assert!(check_role("MANAGE_USERS").is_ok());
        assert!(check_role("manage").is_err());
        assert!(check_role("SUPER_USER").is_ok());
        for (typo, meant) in [
            ("SUPERUSER", "SUPER_USER"),
            ("super_user", "SUPER_USER"),
            ("MANAGE_USER", "MANAGE_USERS"),
            ("MANGE_USERS", "MANAGE_USERS"),
        ] {
            let e = check_role(typo).expect_err(typo).to_string();
            assert!(e.contains(&format!("did you mean {meant}?")), "{e}");
            assert!(e.contains("SUPER_USER, MANAGE_USERS"), "{e}");
        }
        let e = check_role("AGENT").expect_err("unknown").to_string();
        assert!(!e.contains("did you mean"), "{e}");
        assert!(check_password(&SecretString::from("")).is_err());
        assert!(check_name("n", "  ", true).is_err());
        assert!(check_name("n", "", false).is_ok());
    }
}
