//! Agents of sub-accounts, linked to users by RingEX user id.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use super::accounts::main_of;
use crate::sql::DbResult as _;
use async_trait::async_trait;
use cxauth_core::store::{AgentRecord, AgentStore, NewAgent, StoreError};

/// The start of every agent query: the columns in [`agent_from_row`]'s order, from the agent
/// `a` joined to its sub-account `s`. A macro, for `concat!`: sqlx takes only static SQL.
macro_rules! select_agents {
    () => {
        "SELECT a.id, a.account_id, s.name, s.main_id, a.username, a.first_name, a.last_name, \
         a.email, a.agent_type, a.rc_user_id, a.agent_group_id, a.allow_login_control, \
         a.allow_login_updates, a.created_at \
         FROM agents a JOIN accounts s ON s.id = a.account_id "
    };
}

/// One row of [`select_agents`].
type AgentTuple = (
    i64,
    i64,
    String,
    Option<i64>,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
    bool,
    bool,
    i64,
);

fn agent_from_row(r: AgentTuple) -> AgentRecord {
    let (id, account_id, account_name, main_id, username, first_name, last_name, email) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7);
    AgentRecord {
        id,
        account_id,
        account_name,
        main_account_id: main_id.unwrap_or(account_id),
        username,
        first_name,
        last_name,
        email,
        agent_type: r.8,
        rc_user_id: r.9,
        agent_group_id: r.10,
        allow_login_control: r.11,
        allow_login_updates: r.12,
        created_at: r.13,
    }
}

#[async_trait]
impl AgentStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(account_id = agent.account_id))]
    async fn create_agent(&self, agent: &NewAgent) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        if main_of(&mut tx, agent.account_id).await?.is_none() {
            return Err(StoreError::Invalid(format!(
                "account {} is a main account; agents work in sub-accounts",
                agent.account_id
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO agents (account_id, username, first_name, last_name, email, agent_type, \
                 rc_user_id, agent_group_id, allow_login_control, allow_login_updates, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(agent.account_id)
        .bind(&agent.username)
        .bind(&agent.first_name)
        .bind(&agent.last_name)
        .bind(&agent.email)
        .bind(&agent.agent_type)
        .bind(agent.rc_user_id)
        .bind(agent.agent_group_id)
        .bind(agent.allow_login_control)
        .bind(agent.allow_login_updates)
        .bind(agent.now)
        .fetch_one(&mut *tx)
        .await
        .db()
        .map_err(|e| match e {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "an agent named {:?} already exists",
                agent.username
            )),
            e => e,
        })?;
        tx.commit().await.db()?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_agents(&self, account_id: Option<i64>) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = match account_id {
            Some(id) => {
                sqlx::query_as::<_, AgentTuple>(concat!(
                    select_agents!(),
                    "WHERE a.account_id = $1 ORDER BY a.account_id, a.id"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_as::<_, AgentTuple>(concat!(
                    select_agents!(),
                    "ORDER BY a.account_id, a.id"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .db()?;
        Ok(rows.into_iter().map(agent_from_row).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn agents_of_rc_user(
        &self,
        rc_user_id: i64,
        main_id: i64,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query_as::<_, AgentTuple>(concat!(
            select_agents!(),
            "WHERE a.rc_user_id = $1 AND s.main_id = $2 ORDER BY a.account_id, a.id"
        ))
        .bind(rc_user_id)
        .bind(main_id)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows.into_iter().map(agent_from_row).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_agent(&self, id: i64) -> Result<bool, StoreError> {
        let _turn = self.single_write().await;
        let done = sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .db()?;
        Ok(done.rows_affected() > 0)
    }
}
