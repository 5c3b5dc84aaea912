//! The directory as a caller sees it: its sub-accounts, and the users it manages.

use crate::authn::Principal;
use crate::error::AuthError;
use crate::store::{ROLE_MANAGE_USERS, ROLE_SUPER_USER, SharedStore};
use crate::wire::{account_to_wire, nest_users, user_to_wire};

/// Reads users and accounts on behalf of a caller.
pub(crate) struct Directory {
    store: SharedStore,
}

impl Directory {
    pub(crate) fn new(store: SharedStore) -> Self {
        Directory { store }
    }

    /// The sub-accounts the caller may use.
    #[tracing::instrument(skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn accounts(
        &self,
        who: &Principal,
    ) -> Result<Vec<cxauth_proto::Account>, AuthError> {
        Ok(self
            .store
            .accounts_for_user(who.user.id)
            .await?
            .into_iter()
            .map(account_to_wire)
            .collect())
    }

    /// The caller and its descendants, nested by `children` unless `flatten`; only for callers
    /// who may manage users.
    #[tracing::instrument(skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn users(
        &self,
        who: &Principal,
        flatten: bool,
        active_only: bool,
    ) -> Result<Vec<cxauth_proto::User>, AuthError> {
        if !who.user.has_role(ROLE_SUPER_USER) && !who.user.has_role(ROLE_MANAGE_USERS) {
            return Err(AuthError::Forbidden);
        }
        let mut users = self.store.user_subtree(&who.user).await?;
        if active_only {
            users.retain(|u| u.enabled);
        }
        if flatten {
            return Ok(users.iter().map(user_to_wire).collect());
        }
        Ok(nest_users(&users, who.user.id))
    }
}
