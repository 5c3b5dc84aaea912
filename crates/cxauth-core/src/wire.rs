//! Domain records in their wire form (`cxauth-proto`): users, accounts, times.

use crate::store::{AccountRow, UserRecord};
use std::collections::{BTreeMap, HashSet};

/// The wire form of an account row.
pub fn account_to_wire(a: AccountRow) -> cxauth_proto::Account {
    cxauth_proto::Account {
        account_id: a.id.to_string(),
        account_name: a.name,
        main_account_id: a.main_id.to_string(),
        main_account_name: a.main_name.clone(),
        main_account: cxauth_proto::MainAccountRef {
            main_account_id: a.main_id.to_string(),
            main_account_name: a.main_name,
            is_active: a.main_active,
        },
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

/// The wire form of a user, without children.
pub fn user_to_wire(u: &UserRecord) -> cxauth_proto::User {
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
    }
}

/// Nests `users` (ordered by id, so parents come before children) under `root_id`. A user whose
/// parent was filtered out hangs from its nearest listed ancestor, so nobody disappears.
pub fn nest_users(users: &[UserRecord], root_id: i64) -> Vec<cxauth_proto::User> {
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
    fn build(u: &UserRecord, children: &BTreeMap<i64, Vec<&UserRecord>>) -> cxauth_proto::User {
        let mut w = user_to_wire(u);
        w.children = children
            .get(&u.id)
            .map(|cs| cs.iter().map(|c| build(c, children)).collect())
            .unwrap_or_default();
        w
    }
    roots.iter().map(|u| build(u, &children)).collect()
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
        let tree = nest_users(&all, 1);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree[0].children.len(), 2);
        assert_eq!(tree[0].children[0].children[0].user_id, 4);
        assert_eq!(tree[0].full_name, "F");
        // Without user 2, user 4 hangs from user 1.
        let partial = vec![all[0].clone(), all[2].clone()];
        let tree = nest_users(&partial, 1);
        assert_eq!(tree[0].children[0].user_id, 4);
    }

    #[test]
    fn rfc3339_formats_epoch_ms() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
