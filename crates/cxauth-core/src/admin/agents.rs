//! Agents and the RingEX links of main accounts, as `cxauth admin` (and seed files) change them.

use super::AdminError;
use super::rules::{check_name, check_username};
use crate::store::{AgentRecord, NewAgent, Store};
use cxauth_proto::{AGENT_TYPE_AGENT, AGENT_TYPE_SUPERVISOR};

/// An agent to create.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The sub-account it works in.
    pub account_id: i64,
    /// Unique login name.
    pub username: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// `AGENT` or `SUPERVISOR` (any letter case).
    pub agent_type: String,
    /// The RingEX user id linking it to a user.
    pub rc_user_id: Option<i64>,
    /// The agent group.
    pub agent_group_id: Option<i64>,
    /// Whether the agent may log itself in and out.
    pub allow_login_control: bool,
    /// Whether the agent may change its login settings.
    pub allow_login_updates: bool,
}

/// The agent type in its wire spelling, or why it is not one.
pub fn check_agent_type(agent_type: &str) -> Result<&'static str, AdminError> {
    let t = agent_type.trim();
    if t.eq_ignore_ascii_case(AGENT_TYPE_AGENT) {
        Ok(AGENT_TYPE_AGENT)
    } else if t.eq_ignore_ascii_case(AGENT_TYPE_SUPERVISOR) {
        Ok(AGENT_TYPE_SUPERVISOR)
    } else {
        let shown: String = t.chars().take(40).collect();
        Err(AdminError::Invalid(format!(
            "unknown agent type {shown:?}: the types are {AGENT_TYPE_AGENT} and {AGENT_TYPE_SUPERVISOR}"
        )))
    }
}

/// The RingEX user id of user `username`, to link an agent to that user by (`--user` of
/// `cxauth admin agent create`, `user` of a seed's agent).
pub async fn rc_user_id_of(store: &dyn Store, username: &str) -> Result<i64, AdminError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no user named {username:?}")))?;
    user.rc_user_id.ok_or_else(|| {
        AdminError::Invalid(format!(
            "user {username:?} has no RingEX user id to link the agent by \
             (`cxauth admin user create … --rc-user-id N`)"
        ))
    })
}

/// Creates an agent in a sub-account; returns its id.
pub async fn create_agent(store: &dyn Store, spec: AgentSpec, now: i64) -> Result<i64, AdminError> {
    check_username(&spec.username)?;
    check_name("first name", &spec.first_name, false)?;
    check_name("last name", &spec.last_name, false)?;
    let email = spec
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    if let Some(e) = email {
        check_name("email", e, true)?;
        if !e.contains('@') || e.chars().any(char::is_whitespace) {
            return Err(AdminError::Invalid(
                "email must be an address such as ada@example.com".into(),
            ));
        }
    }
    if spec.rc_user_id.is_some_and(|id| id <= 0) {
        return Err(AdminError::Invalid("rc user id must be positive".into()));
    }
    if spec.agent_group_id.is_some_and(|id| id <= 0) {
        return Err(AdminError::Invalid(
            "agent group id must be positive".into(),
        ));
    }
    let agent = NewAgent {
        account_id: spec.account_id,
        username: spec.username,
        first_name: spec.first_name.trim().to_owned(),
        last_name: spec.last_name.trim().to_owned(),
        email: email.map(str::to_owned),
        agent_type: check_agent_type(&spec.agent_type)?.to_owned(),
        rc_user_id: spec.rc_user_id,
        agent_group_id: spec.agent_group_id,
        allow_login_control: spec.allow_login_control,
        allow_login_updates: spec.allow_login_updates,
        now,
    };
    Ok(store.create_agent(&agent).await?)
}

/// The agents of one sub-account, or all, ordered by account then id.
pub async fn list_agents(
    store: &dyn Store,
    account_id: Option<i64>,
) -> Result<Vec<AgentRecord>, AdminError> {
    Ok(store.list_agents(account_id).await?)
}

/// Deletes an agent; `false` if there was none with this id.
pub async fn delete_agent(store: &dyn Store, id: i64) -> Result<bool, AdminError> {
    Ok(store.delete_agent(id).await?)
}

/// Links a main account to a RingEX account (`None` unlinks it): its accounts then answer
/// `rcAccountId` and `rcAccountAccess: ENABLED`.
pub async fn link_rc_account(
    store: &dyn Store,
    main_id: i64,
    rc_account_id: Option<&str>,
) -> Result<(), AdminError> {
    let rc = rc_account_id.map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = rc
        && (r.len() > 32 || !r.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(AdminError::Invalid(
            "a RingEX account id is a number (up to 32 digits)".into(),
        ));
    }
    Ok(store.link_rc_account(main_id, rc).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_types_are_checked_and_spelled_as_ringcx_does() {
        assert_eq!(check_agent_type("agent").ok(), Some("AGENT"));
        assert_eq!(check_agent_type(" Supervisor ").ok(), Some("SUPERVISOR"));
        assert!(check_agent_type("ADMIN").is_err());
        assert!(check_agent_type("").is_err());
    }
}
