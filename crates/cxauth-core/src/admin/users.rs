//! Accounts, users and their credentials, as `cxauth admin` changes them (audited locally).

use super::rules::{check_name, check_role, check_username, validate_new_password};
use super::{AdminError, local_audit};
use crate::audit::Event;
use crate::crypto::random_bytes;
use crate::password::hash_password;
use crate::store::{
    AccountInfo, DeleteUser, EndCredentials, NewUser, RevokeReason, RevokedCounts, RingexJwtInfo,
    Store,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_proto::is_valid_platform_id;
use secrecy::{ExposeSecret, SecretString};

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

pub(super) fn new_user(spec: UserSpec, now: i64) -> Result<NewUser, AdminError> {
    check_username(&spec.username)?;
    validate_new_password(&spec.password)?;
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
    local_audit(store, now, Event::UserCreate, Some(id), &user.username, "").await;
    Ok(id)
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
    validate_new_password(password)?;
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
    local_audit(store, now, Event::PasswordChange, id, username, &detail).await;
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
    local_audit(store, now, Event::CredentialsRevoke, id, username, &detail).await;
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
        Event::RingexJwtRevoke,
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
        Event::UserEnable
    } else {
        Event::UserDisable
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
            local_audit(store, now, Event::UserDelete, Some(id), username, &detail).await;
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
