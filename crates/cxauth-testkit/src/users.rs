//! Users with parents, grants, roles and RingEX ids, made as `cxauth admin user create` makes them.

use crate::app::{PLATFORM, TestApp};
use cxauth_core::admin::{self, UserSpec};
use cxauth_core::clock::Clock as _;
use secrecy::SecretString;

/// A user to create on a [`TestApp`]; its password is `USERNAME-pw`, its names `USERNAME` and
/// `Test`.
#[must_use = "call .create()"]
pub struct UserBuilder<'a> {
    app: &'a TestApp,
    spec: UserSpec,
}

impl<'a> UserBuilder<'a> {
    pub(crate) fn new(app: &'a TestApp, username: &str) -> Self {
        UserBuilder {
            app,
            spec: UserSpec {
                username: username.into(),
                password: SecretString::from(format!("{username}-pw")),
                platform_id: PLATFORM.into(),
                parent: None,
                grants: vec![],
                roles: vec![],
                first_name: username.to_uppercase(),
                last_name: "Test".into(),
                rc_user_id: None,
            },
        }
    }

    /// The user's parent (by username).
    pub fn parent(mut self, parent: &str) -> Self {
        self.spec.parent = Some(parent.to_owned());
        self
    }

    /// Accounts granted.
    pub fn grants(mut self, grants: &[i64]) -> Self {
        self.spec.grants = grants.to_vec();
        self
    }

    /// Roles.
    pub fn roles(mut self, roles: &[&str]) -> Self {
        self.spec.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// A RingEX user id.
    pub fn rc_user_id(mut self, id: i64) -> Self {
        self.spec.rc_user_id = Some(id);
        self
    }

    /// A password other than `USERNAME-pw`.
    pub fn password(mut self, password: &str) -> Self {
        self.spec.password = SecretString::from(password.to_owned());
        self
    }

    /// Creates the user, asserting that it is accepted; returns its id.
    pub async fn create(self) -> i64 {
        let username = self.spec.username.clone();
        admin::create_user(
            self.app.state.auth.store().as_ref(),
            self.spec,
            self.app.clock.now_ms(),
        )
        .await
        .unwrap_or_else(|e| panic!("create user {username}: {e}"))
    }
}

impl TestApp {
    /// A user to create: `app.user("ann").grants(&[1]).roles(&["ADMIN"]).create().await`.
    pub fn user(&self, username: &str) -> UserBuilder<'_> {
        UserBuilder::new(self, username)
    }
}
