//! Main accounts and sub-accounts: id allocation under the accounts lock, and the bootstrap.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::changes::{record_change, wall_ms};
use super::users::insert_user;
use super::{Backend, Conn};
use crate::sql::{DbResult as _, FIRST_MAIN_ACCOUNT, LOCK_ACCOUNTS, MAX_SUB_ACCOUNTS};
use async_trait::async_trait;
use cxauth_core::store::{
    AccountInfo, AccountRow, AccountStore, Bootstrap, ChangeKind, NewUser, StoreError,
};
use sqlx::Row as _;

/// The start of the queries of [`AccountInfo`]: the account `a` and, for a sub-account, its main
/// `m`, whose RingEX link it shows. A macro, for `concat!`: sqlx takes only static SQL.
macro_rules! select_account_info {
    () => {
        "SELECT a.id, a.name, a.main_id, a.is_active, COALESCE(m.rc_account_id, a.rc_account_id) \
         FROM accounts a LEFT JOIN accounts m ON m.id = a.main_id "
    };
}

#[async_trait]
impl AccountStore for Backend {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn bootstrap(&self, b: &Bootstrap) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await
            .db()?;
        let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await
            .db()?;
        if users > 0 || accounts > 0 {
            return Ok(false);
        }
        let now = b.user.now;
        let main = create_main_in(&mut tx, &b.main_account_name, now).await?;
        create_sub_in(&mut tx, main, &b.sub_account_name, now).await?;
        let user = NewUser {
            parent: None,
            grants: vec![main],
            ..b.user.clone()
        };
        insert_user(&mut tx, &user, None, "", main).await?;
        tx.commit().await.db()?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_main_account(&self, name: &str, now: i64) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
        let id = create_main_in(&mut tx, name, now).await?;
        tx.commit().await.db()?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(main_id))]
    async fn create_sub_account(
        &self,
        main_id: i64,
        name: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
        let id = create_sub_in(&mut tx, main_id, name, now).await?;
        // Users granted the main account may use the new sub-account.
        let change = record_change(&mut tx, ChangeKind::Accounts, "", now).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn accounts_for_user(&self, user_id: i64) -> Result<Vec<AccountRow>, StoreError> {
        // A grant of a main account covers its sub-accounts; a grant of a sub-account, itself.
        let rows = sqlx::query(
            "SELECT DISTINCT s.id, s.name, m.id, m.name, m.is_active, m.rc_account_id \
                 FROM user_grants g \
                 JOIN accounts s ON s.id = g.account_id OR s.main_id = g.account_id \
                 JOIN accounts m ON m.id = s.main_id \
                 WHERE g.user_id = $1 \
                 ORDER BY s.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(|r| AccountRow {
                id: r.get(0),
                name: r.get(1),
                main_id: r.get(2),
                main_name: r.get(3),
                main_active: r.get(4),
                main_rc_account_id: r.get(5),
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        let rows: Vec<InfoTuple> = sqlx::query_as(concat!(select_account_info!(), "ORDER BY a.id"))
            .fetch_all(&self.pool)
            .await
            .db()?;
        Ok(rows.into_iter().map(info_from_row).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn account_info(&self, id: i64) -> Result<Option<AccountInfo>, StoreError> {
        let row: Option<InfoTuple> =
            sqlx::query_as(concat!(select_account_info!(), "WHERE a.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .db()?;
        Ok(row.map(info_from_row))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(main_id))]
    async fn link_rc_account(
        &self,
        main_id: i64,
        rc_account_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_global(&mut tx, LOCK_ACCOUNTS).await?;
        require_main(&mut tx, main_id, "a RingEX account links to a main account").await?;
        sqlx::query("UPDATE accounts SET rc_account_id = $1 WHERE id = $2")
            .bind(rc_account_id)
            .bind(main_id)
            .execute(&mut *tx)
            .await
            .db()
            .map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict(
                    "another main account is linked to this RingEX account".into(),
                ),
                e => e,
            })?;
        let change = record_change(&mut tx, ChangeKind::Accounts, "", wall_ms()).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(())
    }
}

type InfoTuple = (i64, String, Option<i64>, bool, Option<String>);

fn info_from_row((id, name, main_id, active, rc_account_id): InfoTuple) -> AccountInfo {
    AccountInfo {
        id,
        name,
        main_account_id: main_id.unwrap_or(id),
        active,
        rc_account_id,
    }
}

pub(super) async fn create_main_in(tx: &mut Conn, name: &str, now: i64) -> Result<i64, StoreError> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(id) FROM accounts WHERE main_id IS NULL")
            .fetch_one(&mut *tx)
            .await
            .db()?;
    let id = last.map_or(FIRST_MAIN_ACCOUNT, |l| l + MAX_SUB_ACCOUNTS + 1);
    sqlx::query(
        "INSERT INTO accounts (id, name, main_id, is_active, created_at) \
         VALUES ($1, $2, NULL, TRUE, $3)",
    )
    .bind(id)
    .bind(name)
    .bind(now)
    .execute(&mut *tx)
    .await
    .db()?;
    Ok(id)
}

/// The main account of account `id`: `None` for a main account itself; [`StoreError::NotFound`]
/// if there is no such account.
pub(super) async fn main_of(tx: &mut Conn, id: i64) -> Result<Option<i64>, StoreError> {
    let main: Option<Option<i64>> =
        sqlx::query_scalar("SELECT main_id FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
    main.ok_or_else(|| StoreError::NotFound(format!("no account with id {id}")))
}

/// Checks that `id` is a main account; a sub-account is [`StoreError::Invalid`] with `hint`.
async fn require_main(tx: &mut Conn, id: i64, hint: &str) -> Result<(), StoreError> {
    match main_of(tx, id).await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(StoreError::Invalid(format!(
            "account {id} is a sub-account; {hint}"
        ))),
        Err(StoreError::NotFound(_)) => Err(StoreError::NotFound(format!(
            "no main account with id {id}"
        ))),
        Err(e) => Err(e),
    }
}

pub(super) async fn create_sub_in(
    tx: &mut Conn,
    main_id: i64,
    name: &str,
    now: i64,
) -> Result<i64, StoreError> {
    require_main(tx, main_id, "give the id of a main account").await?;
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM accounts WHERE main_id = $1")
        .bind(main_id)
        .fetch_one(&mut *tx)
        .await
        .db()?;
    let id = last.unwrap_or(main_id) + 1;
    if id - main_id > MAX_SUB_ACCOUNTS {
        return Err(StoreError::Invalid(format!(
            "main account {main_id} already holds {MAX_SUB_ACCOUNTS} sub-accounts"
        )));
    }
    sqlx::query(
        "INSERT INTO accounts (id, name, main_id, is_active, created_at) \
         VALUES ($1, $2, $3, TRUE, $4)",
    )
    .bind(id)
    .bind(name)
    .bind(main_id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .db()?;
    Ok(id)
}
