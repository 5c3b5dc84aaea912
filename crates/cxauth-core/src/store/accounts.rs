//! Accounts: main accounts, sub-accounts, and the bootstrap of an empty database.

use super::{NewUser, StoreError};
use async_trait::async_trait;

/// What a first start creates.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Name of the main account.
    pub main_account_name: String,
    /// Name of its sub-account.
    pub sub_account_name: String,
    /// The super user, granted the main account (its `parent` and `grants` are ignored).
    pub user: NewUser,
}

/// A sub-account with its main account, as the accounts endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Sub-account id.
    pub id: i64,
    /// Sub-account name.
    pub name: String,
    /// Main account id.
    pub main_id: i64,
    /// Main account name.
    pub main_name: String,
    /// Whether the main account is active.
    pub main_active: bool,
    /// The RingEX account the main account is linked to, if any.
    pub main_rc_account_id: Option<String>,
}

/// An account as `cxauth admin account list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountInfo {
    /// Account id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Its main account: itself for a main account.
    pub main_account_id: i64,
    /// Whether the account is active (RingCX refuses logins to inactive main accounts).
    pub active: bool,
    /// The RingEX account its main account is linked to (for a main account, its own link).
    pub rc_account_id: Option<String>,
}

/// Main accounts and their sub-accounts, and the first start that creates them.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// On an empty database (no accounts, no users), creates in one transaction the main
    /// account, its first sub-account and the super user; returns false, changing nothing, if
    /// the database is not empty.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<bool, StoreError>;

    /// Creates a main account; returns its id (a multiple of 10000).
    async fn create_main_account(&self, name: &str, now: i64) -> Result<i64, StoreError>;

    /// Links main account `main_id` to RingEX account `rc_account_id`, or unlinks it with
    /// `None`. [`StoreError::NotFound`] for an unknown account, [`StoreError::Invalid`] for a
    /// sub-account, [`StoreError::Conflict`] if another main account has this link.
    async fn link_rc_account(
        &self,
        main_id: i64,
        rc_account_id: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Creates a sub-account of `main_id`; returns its id (`main_id` + n).
    async fn create_sub_account(
        &self,
        main_id: i64,
        name: &str,
        now: i64,
    ) -> Result<i64, StoreError>;

    /// The sub-accounts a user may use, ordered by id.
    async fn accounts_for_user(&self, user_id: i64) -> Result<Vec<AccountRow>, StoreError>;

    /// Every account, main accounts and sub-accounts, ordered by id.
    async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError>;

    /// One account, main or sub.
    async fn account_info(&self, id: i64) -> Result<Option<AccountInfo>, StoreError>;
}
