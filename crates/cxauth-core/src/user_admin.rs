//! User administration on behalf of a signed-in manager (the web console's user pages).
//!
//! `cxauth admin` (see [`crate::admin`]) runs with the database in hand and may do anything;
//! these operations run for an HTTP caller and apply the API's authorisation first, so the
//! console cannot do more than the caller could be trusted with:
//!
//! - the caller holds `MANAGE_USERS` or `SUPER_USER`, else [`AuthError::Forbidden`] (the same
//!   403 as `GET …/admin/users`);
//! - the target is a strict descendant of the caller, the subtree `GET …/admin/users` lists;
//!   any other user, existing or not, is [`AuthError::NotFound`], so other users are not
//!   revealed. The caller itself is refused with [`AuthError::BadRequest`]: a manager who
//!   disabled or revoked themselves would lock themselves out of the page that undoes it;
//! - no role above the caller's: a new user gets only roles the caller holds, and a target
//!   holding a role the caller lacks ([`ROLE_SUPER_USER`] under a plain manager) is
//!   [`AuthError::Forbidden`] (resetting its password would hand the caller its rights);
//! - a new user's parent is the caller or one of its descendants, and its account grants are
//!   sub-accounts the caller may use itself.
//!
//! Every change is audited with the caller's name and takes effect at once: the store records a
//! credential change in the same transaction (other instances forget the user), and this
//! instance's credential cache forgets the user before the answer goes out.

use crate::admin::{AdminError, check_role, check_username, validate_new_password};
use crate::audit::{AuditContext, Entry, Event, Outcome};
use crate::authn::Principal;
use crate::deps::Deps;
use crate::error::AuthError;
use crate::limits::MAX_NAME_LEN;
use crate::password::PasswordPool;
use crate::store::{
    EndCredentials, NewUser, ROLE_SUPER_USER, RevokeReason, RevokedCounts, StoreError, UserRecord,
};
use secrecy::SecretString;

/// A user a manager creates.
#[derive(Debug)]
pub struct ManagedUserSpec {
    /// Login name.
    pub username: String,
    /// Its first password (hashed on the password pool, never stored or shown).
    pub password: SecretString,
    /// The parent's id: the caller or one of its descendants.
    pub parent_id: i64,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Roles, each held by the caller.
    pub roles: Vec<String>,
    /// Sub-accounts granted, each usable by the caller.
    pub grants: Vec<i64>,
}

/// Changes users for a manager; see the module documentation.
pub(crate) struct UserAdmin {
    deps: Deps,
}

fn invalid(e: AdminError) -> AuthError {
    match e {
        AdminError::Invalid(m) => AuthError::BadRequest(m),
        AdminError::Store(s) => s.into(),
    }
}

fn check_person_name(what: &str, name: &str) -> Result<(), AuthError> {
    if name.len() > MAX_NAME_LEN {
        return Err(AuthError::BadRequest(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::BadRequest(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Whether `who` holds every role of `roles` (a super user holds them all).
fn holds_all(who: &UserRecord, roles: &[String]) -> bool {
    who.has_role(ROLE_SUPER_USER) || roles.iter().all(|r| who.has_role(r))
}

impl UserAdmin {
    pub(crate) fn new(deps: Deps) -> Self {
        UserAdmin { deps }
    }

    /// The caller, if it may manage users.
    fn manager<'a>(&self, who: &'a Principal) -> Result<&'a UserRecord, AuthError> {
        if who.user.may_manage_users() {
            Ok(&who.user)
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// The user `user_id`, if the caller may change it (see the module documentation).
    async fn target(&self, who: &Principal, user_id: i64) -> Result<UserRecord, AuthError> {
        let me = self.manager(who)?;
        if user_id == me.id {
            return Err(AuthError::BadRequest(
                "you cannot change your own user here; ask a manager above you".into(),
            ));
        }
        let user = self
            .deps
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| u.has_ancestor(me.id))
            .ok_or(AuthError::NotFound)?;
        if !holds_all(me, &user.roles) {
            return Err(AuthError::Forbidden);
        }
        Ok(user)
    }

    async fn audit(
        &self,
        ctx: &AuditContext,
        event: Event,
        who: &Principal,
        target: (i64, &str),
        more: &str,
    ) {
        let detail = format!(
            "by {} (user id {}){}{more}",
            who.user.username,
            who.user.id,
            if more.is_empty() { "" } else { "; " }
        );
        self.deps
            .audit
            .record(
                ctx,
                Entry {
                    user_id: Some(target.0),
                    username: Some(target.1),
                    detail: &detail,
                    ..Entry::of(event, Outcome::Success)
                },
            )
            .await;
    }

    /// Creates a user below the caller; returns its id.
    pub(crate) async fn create(
        &self,
        who: &Principal,
        pool: &PasswordPool,
        spec: ManagedUserSpec,
        ctx: &AuditContext,
    ) -> Result<i64, AuthError> {
        let me = self.manager(who)?;
        check_username(&spec.username).map_err(invalid)?;
        validate_new_password(&spec.password).map_err(invalid)?;
        check_person_name("first name", &spec.first_name)?;
        check_person_name("last name", &spec.last_name)?;
        let mut roles = spec.roles;
        roles.sort();
        roles.dedup();
        for r in &roles {
            check_role(r).map_err(invalid)?;
        }
        if !holds_all(me, &roles) {
            return Err(AuthError::Forbidden);
        }
        let parent = if spec.parent_id == me.id {
            me.clone()
        } else {
            self.deps
                .store
                .user_by_id(spec.parent_id)
                .await?
                .filter(|u| u.has_ancestor(me.id))
                .ok_or_else(|| {
                    AuthError::BadRequest("the parent must be you or a user below you".into())
                })?
        };
        let mut grants = spec.grants;
        grants.sort_unstable();
        grants.dedup();
        if !grants.is_empty() {
            let usable = self.deps.store.accounts_for_user(me.id).await?;
            if let Some(g) = grants.iter().find(|g| !usable.iter().any(|a| a.id == **g)) {
                return Err(AuthError::BadRequest(format!(
                    "account {g} is not one of the sub-accounts you may use"
                )));
            }
        }
        let password_hash = pool.hash(spec.password).await?;
        let user = NewUser {
            username: spec.username,
            password_hash,
            platform_id: me.platform_id.clone(),
            parent: Some(parent.username.clone()),
            grants,
            roles,
            first_name: spec.first_name.trim().to_owned(),
            last_name: spec.last_name.trim().to_owned(),
            rc_user_id: None,
            now: self.deps.clock.now_ms(),
        };
        let id = match self.deps.store.create_user(&user).await {
            Ok(id) => id,
            Err(StoreError::Conflict(_)) => {
                return Err(AuthError::BadRequest(format!(
                    "a user named {:?} already exists",
                    user.username
                )));
            }
            Err(StoreError::NotFound(m) | StoreError::Invalid(m)) => {
                return Err(AuthError::BadRequest(m));
            }
            Err(e) => return Err(e.into()),
        };
        let more = format!("parent {}", parent.username);
        self.audit(ctx, Event::UserCreate, who, (id, &user.username), &more)
            .await;
        Ok(id)
    }

    /// Disables or enables a user below the caller. Disabling ends its sessions and legacy
    /// tokens for good and refuses its API tokens while it stays disabled.
    pub(crate) async fn set_enabled(
        &self,
        who: &Principal,
        user_id: i64,
        enabled: bool,
        ctx: &AuditContext,
    ) -> Result<(), AuthError> {
        let user = self.target(who, user_id).await?;
        let now = self.deps.clock.now_ms();
        let changed = self
            .deps
            .store
            .set_user_enabled(&user.username, enabled, now)
            .await;
        self.deps.creds.forget_user(user.id);
        if !changed? {
            return Err(AuthError::NotFound);
        }
        let event = if enabled {
            Event::UserEnable
        } else {
            Event::UserDisable
        };
        self.audit(ctx, event, who, (user.id, &user.username), "")
            .await;
        Ok(())
    }

    /// Sets a new password for a user below the caller and ends its sessions, legacy tokens
    /// and RingEX emulator credentials; its API tokens too with `revoke_api_tokens`.
    pub(crate) async fn reset_password(
        &self,
        who: &Principal,
        pool: &PasswordPool,
        user_id: i64,
        password: SecretString,
        revoke_api_tokens: bool,
        ctx: &AuditContext,
    ) -> Result<RevokedCounts, AuthError> {
        validate_new_password(&password).map_err(invalid)?;
        let user = self.target(who, user_id).await?;
        let hash = pool.hash(password).await?;
        let end = EndCredentials {
            new_password_hash: Some(&hash),
            api_tokens: revoke_api_tokens,
            reason: RevokeReason::PasswordChanged,
        };
        self.end(who, &user, &end, Event::PasswordChange, ctx).await
    }

    /// Ends every credential of a user below the caller (API tokens included); its password
    /// stays.
    pub(crate) async fn revoke_tokens(
        &self,
        who: &Principal,
        user_id: i64,
        ctx: &AuditContext,
    ) -> Result<RevokedCounts, AuthError> {
        let user = self.target(who, user_id).await?;
        let end = EndCredentials {
            new_password_hash: None,
            api_tokens: true,
            reason: RevokeReason::Revoked,
        };
        self.end(who, &user, &end, Event::CredentialsRevoke, ctx)
            .await
    }

    async fn end(
        &self,
        who: &Principal,
        user: &UserRecord,
        end: &EndCredentials<'_>,
        event: Event,
        ctx: &AuditContext,
    ) -> Result<RevokedCounts, AuthError> {
        let now = self.deps.clock.now_ms();
        let ended = self
            .deps
            .store
            .end_user_credentials(&user.username, end, now)
            .await;
        self.deps.creds.forget_user(user.id);
        let ended = ended?.ok_or(AuthError::NotFound)?;
        let more = format!("ended {}", ended.summary());
        self.audit(ctx, event, who, (user.id, &user.username), &more)
            .await;
        Ok(ended)
    }
}
