//! The directory as a caller sees it: its sub-accounts, the agents in them, and the users it
//! manages.

use crate::authn::Principal;
use crate::credcache::{CredentialCache, UsableAccounts};
use crate::error::AuthError;
use crate::store::{SharedStore, UserRecord};
use crate::wire::{agent_to_wire, nest_users, user_to_wire};
use std::sync::Arc;

/// Reads users, accounts and agents on behalf of a caller.
pub(crate) struct Directory {
    store: SharedStore,
    /// The accounts of recent callers, so the accounts endpoint costs no query.
    creds: Arc<CredentialCache>,
}

impl Directory {
    pub(crate) fn new(store: SharedStore, creds: Arc<CredentialCache>) -> Self {
        Directory { store, creds }
    }

    /// The sub-accounts `user_id` may use, from the credential cache or, on a miss, the store
    /// (then cached): the one way every read scoped by account learns them.
    async fn usable_accounts(&self, user_id: i64) -> Result<Arc<UsableAccounts>, AuthError> {
        if let Some(accounts) = self.creds.accounts(user_id) {
            return Ok(accounts);
        }
        let ticket = self.creds.ticket();
        let rows = self.store.accounts_for_user(user_id).await?;
        let accounts = Arc::new(UsableAccounts::new(rows));
        self.creds.put_accounts(ticket, user_id, accounts.clone());
        Ok(accounts)
    }

    /// The sub-accounts the caller may use.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn accounts(
        &self,
        who: &Principal,
    ) -> Result<Vec<cxauth_proto::Account>, AuthError> {
        Ok(self.usable_accounts(who.user.id).await?.wire())
    }

    /// [`Self::accounts`] as the accounts endpoint's JSON answer, made once per cache entry.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn accounts_json(&self, who: &Principal) -> Result<Arc<[u8]>, AuthError> {
        self.usable_accounts(who.user.id)
            .await?
            .json()
            .map_err(|e| AuthError::Internal(format!("cannot serialise the accounts: {e}")))
    }

    /// The RingEX account of a user's main account, if it is linked to one.
    async fn rc_account_of(&self, user: &UserRecord) -> Result<Option<String>, AuthError> {
        Ok(self
            .store
            .account_info(user.main_account_id)
            .await?
            .and_then(|a| a.rc_account_id))
    }

    /// The caller itself as a `User` row (without children), as the legacy login shows it.
    pub(crate) async fn me(&self, who: &Principal) -> Result<cxauth_proto::User, AuthError> {
        let rc = self.rc_account_of(&who.user).await?;
        Ok(user_to_wire(&who.user, rc.as_deref()))
    }

    /// The caller and its descendants, nested by `children` unless `flatten`; only for callers
    /// who may manage users.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = who.user.id))]
    pub(crate) async fn users(
        &self,
        who: &Principal,
        flatten: bool,
        active_only: bool,
    ) -> Result<Vec<cxauth_proto::User>, AuthError> {
        if !who.user.may_manage_users() {
            return Err(AuthError::Forbidden);
        }
        let mut users = self.store.user_subtree(&who.user).await?;
        if active_only {
            users.retain(|u| u.enabled);
        }
        // Descendants belong to the caller's main account (a child joins its parent's).
        let rc = self.rc_account_of(&who.user).await?;
        if flatten {
            return Ok(users
                .iter()
                .map(|u| user_to_wire(u, rc.as_deref()))
                .collect());
        }
        Ok(nest_users(&users, who.user.id, rc.as_deref()))
    }

    /// The agents of sub-account `account_id`, for a caller who may use it. An account of the
    /// caller's own main account that it may not use is [`AuthError::Forbidden`]; any other
    /// (another main account's, or none) is [`AuthError::NotFound`], so that other tenants'
    /// accounts are not revealed.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = who.user.id, account_id))]
    pub(crate) async fn agents(
        &self,
        who: &Principal,
        account_id: i64,
    ) -> Result<Vec<cxauth_proto::Agent>, AuthError> {
        let usable = self
            .usable_accounts(who.user.id)
            .await?
            .rows
            .iter()
            .any(|a| a.id == account_id);
        if !usable {
            return match self.store.account_info(account_id).await? {
                Some(a) if a.main_account_id == who.user.main_account_id => {
                    Err(AuthError::Forbidden)
                }
                _ => Err(AuthError::NotFound),
            };
        }
        Ok(self
            .store
            .list_agents(Some(account_id))
            .await?
            .into_iter()
            .map(agent_to_wire)
            .collect())
    }
}
