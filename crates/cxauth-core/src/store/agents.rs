//! Agents: the contact-centre agents of sub-accounts, linked to users by RingEX user id.

use super::StoreError;
use async_trait::async_trait;

/// What `create_agent` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    /// The sub-account the agent works in (not a main account).
    pub account_id: i64,
    /// Unique login name of the agent.
    pub username: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// E-mail address, if any.
    pub email: Option<String>,
    /// `AGENT` or `SUPERVISOR` (checked by the caller).
    pub agent_type: String,
    /// The RingEX user id that links the agent to a user, if any.
    pub rc_user_id: Option<i64>,
    /// The agent group, if any.
    pub agent_group_id: Option<i64>,
    /// Whether the agent may log itself in and out.
    pub allow_login_control: bool,
    /// Whether the agent may change its login settings.
    pub allow_login_updates: bool,
    /// Creation time, epoch ms.
    pub now: i64,
}

/// A stored agent, with the name of its sub-account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentRecord {
    /// Agent id.
    pub id: i64,
    /// Its sub-account.
    pub account_id: i64,
    /// The sub-account's name.
    pub account_name: String,
    /// The main account of the sub-account.
    pub main_account_id: i64,
    /// Unique login name.
    pub username: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// `AGENT` or `SUPERVISOR`.
    pub agent_type: String,
    /// The RingEX user id linking it to a user.
    pub rc_user_id: Option<i64>,
    /// The agent group.
    pub agent_group_id: Option<i64>,
    /// Whether the agent may log itself in and out.
    pub allow_login_control: bool,
    /// Whether the agent may change its login settings.
    pub allow_login_updates: bool,
    /// Creation time, epoch ms.
    pub created_at: i64,
}

/// Agents of sub-accounts.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Creates an agent; returns its id. [`StoreError::NotFound`] for an unknown account,
    /// [`StoreError::Invalid`] for a main account, [`StoreError::Conflict`] for a username in
    /// use.
    async fn create_agent(&self, agent: &NewAgent) -> Result<i64, StoreError>;

    /// The agents of one sub-account, or of every account, ordered by account then id.
    async fn list_agents(&self, account_id: Option<i64>) -> Result<Vec<AgentRecord>, StoreError>;

    /// The agents linked to RingEX user `rc_user_id` in sub-accounts of main account `main_id`
    /// (an agent elsewhere cannot be this user's), ordered by account then id.
    async fn agents_of_rc_user(
        &self,
        rc_user_id: i64,
        main_id: i64,
    ) -> Result<Vec<AgentRecord>, StoreError>;

    /// Deletes an agent; `false` if there was none with this id.
    async fn delete_agent(&self, id: i64) -> Result<bool, StoreError>;
}
