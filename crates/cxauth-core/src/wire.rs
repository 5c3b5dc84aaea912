//! Domain records in their wire form (`cxauth-proto`): users, accounts, agents, times.

use crate::store::{AccountRow, AgentRecord, UserRecord};
use std::collections::{BTreeMap, HashSet};

/// The wire form of an account row.
pub fn account_to_wire(a: AccountRow) -> cxauth_proto::Account {
    let access = if a.main_rc_account_id.is_some() {
        cxauth_proto::RC_ACCOUNT_ACCESS_ENABLED
    } else {
        cxauth_proto::RC_ACCOUNT_ACCESS_DISABLED
    };
    cxauth_proto::Account {
        account_id: a.id.to_string(),
        account_name: a.name,
        main_account_id: a.main_id.to_string(),
        main_account_name: a.main_name.clone(),
        main_account: cxauth_proto::MainAccountRef {
            main_account_id: a.main_id.to_string(),
            main_account_name: a.main_name,
            is_active: a.main_active,
            rc_account_id: a.main_rc_account_id.clone(),
            engage_account_id: None,
        },
        rc_account_id: a.main_rc_account_id,
        rc_account_access: Some(access.to_owned()),
    }
}

/// The wire form (RingCX's AgentV2) of an agent.
pub fn agent_to_wire(a: AgentRecord) -> cxauth_proto::Agent {
    cxauth_proto::Agent {
        agent_id: a.id,
        first_name: Some(a.first_name),
        last_name: Some(a.last_name),
        email: a.email,
        username: Some(a.username),
        agent_type: Some(a.agent_type),
        rc_user_id: a.rc_user_id,
        account_id: a.account_id.to_string(),
        account_name: Some(a.account_name),
        agent_group_id: a.agent_group_id,
        allow_login_control: Some(a.allow_login_control),
        allow_login_updates: Some(a.allow_login_updates),
        agent_rank: None,
        alt_default_login_dest: None,
        direct_agent_extension: None,
        enable_softphone: None,
        external_agent_id: None,
        ghost_rna_action: None,
        init_login_base_state: None,
        location: None,
        manual_outbound_default_caller_id: None,
        max_chats: None,
        password: None,
        phone_login_pin: None,
        team: None,
    }
}

/// The `rcUser` of an exchanged session for `user`: its RingEX id and names, and its username
/// as the e-mail address when it is one (cxauth keeps no other address).
pub fn rc_user_to_wire(user: &UserRecord) -> cxauth_proto::RcUser {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    cxauth_proto::RcUser {
        rc_user_id: user.rc_user_id,
        email: user.username.contains('@').then(|| user.username.clone()),
        first_name: non_empty(&user.first_name),
        last_name: non_empty(&user.last_name),
    }
}

/// RFC 3339 form of an epoch-millisecond time.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The wire form of a user, without children; `rc_account_id` is the RingEX account of its
/// main account.
pub fn user_to_wire(u: &UserRecord, rc_account_id: Option<&str>) -> cxauth_proto::User {
    cxauth_proto::User {
        user_id: u.id,
        user_name: u.username.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        full_name: format!("{} {}", u.first_name, u.last_name)
            .trim()
            .to_owned(),
        enabled: u.enabled,
        root_user: u.parent_id.is_none(),
        parent_path: u.parent_path.clone(),
        roles: u.roles.clone(),
        creation_date: rfc3339(u.created_at),
        children: Vec::new(),
        rc_user_id: u.rc_user_id,
        rc_account_id: rc_account_id.map(str::to_owned),
        user_managed_by_rc: false,
    }
}

/// Nests `users` (ordered by id, so parents come before children) under `root_id`. A user whose
/// parent was filtered out hangs from its nearest listed ancestor, so nobody disappears.
/// `rc_account_id` is the RingEX account of the users' main account.
pub fn nest_users(
    users: &[UserRecord],
    root_id: i64,
    rc_account_id: Option<&str>,
) -> Vec<cxauth_proto::User> {
    let listed: HashSet<i64> = users.iter().map(|u| u.id).collect();
    let mut children: BTreeMap<i64, Vec<&UserRecord>> = BTreeMap::new();
    let mut roots = Vec::new();
    for u in users {
        let parent = u
            .parent_path
            .rsplit('.')
            .filter_map(|p| p.parse::<i64>().ok())
            .find(|p| listed.contains(p));
        match parent {
            Some(p) if u.id != root_id => children.entry(p).or_default().push(u),
            _ => roots.push(u),
        }
    }
    fn build(
        u: &UserRecord,
        children: &BTreeMap<i64, Vec<&UserRecord>>,
        rc: Option<&str>,
    ) -> cxauth_proto::User {
        let mut w = user_to_wire(u, rc);
        w.children = children
            .get(&u.id)
            .map(|cs| cs.iter().map(|c| build(c, children, rc)).collect())
            .unwrap_or_default();
        w
    }
    roots
        .iter()
        .map(|u| build(u, &children, rc_account_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, path: &str, enabled: bool) -> UserRecord {
        UserRecord {
            id,
            username: format!("u{id}"),
            platform_id: "aws80".into(),
            password_hash: String::new(),
            first_name: "F".into(),
            last_name: String::new(),
            enabled,
            parent_id: path.rsplit('.').next().and_then(|p| p.parse().ok()),
            parent_path: path.into(),
            main_account_id: 10_000_000,
            roles: vec![],
            created_at: 0,
            rc_user_id: None,
        }
    }

    #[test]
    fn nesting_follows_parent_paths_and_skips_missing_parents() {
        let all = vec![
            user(1, "", true),
            user(2, "1", true),
            user(4, "1.2", true),
            user(5, "1", true),
        ];
        let tree = nest_users(&all, 1, None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree[0].children.len(), 2);
        assert_eq!(tree[0].children[0].children[0].user_id, 4);
        assert_eq!(tree[0].full_name, "F");
        // Without user 2, user 4 hangs from user 1.
        let partial = vec![all[0].clone(), all[2].clone()];
        let tree = nest_users(&partial, 1, None);
        assert_eq!(tree[0].children[0].user_id, 4);
    }

    #[test]
    fn rfc3339_formats_epoch_ms() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
