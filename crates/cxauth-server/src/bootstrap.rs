//! Who can log in on a start: the first user of an empty database (see docs/decisions.md,
//! "Bootstrap").

use crate::StartupError;
use crate::config::ServerConfig;
use cxauth_core::admin::{BootstrapOutcome, bootstrap};
use cxauth_core::clock::SharedClock;
use secrecy::SecretString;

/// Makes sure somebody can log in (see docs/decisions.md, "Bootstrap"): an empty database gets
/// the account `Main`, its sub-account `Default` and the super user `admin`; a database with
/// accounts but no user gets `admin` as super user of its first main account; a database whose
/// users are all disabled is refused, with the command that enables one. Returns the password
/// to show once when one was generated. A bootstrap password given for a database that has
/// users already is reported as ignored.
pub(crate) async fn first_user(
    config: &ServerConfig,
    store: &dyn cxauth_core::store::Store,
    clock: &SharedClock,
) -> Result<Option<SecretString>, StartupError> {
    let database = &config.database;
    match bootstrap(
        store,
        &config.platform_id,
        config.bootstrap_admin_password.clone(),
        clock.now_ms(),
    )
    .await?
    {
        BootstrapOutcome::CreatedWithPassword(p) => return Ok(Some(p)),
        BootstrapOutcome::Created => {
            tracing::info!("empty database: created account Main and user admin");
            return Ok(None);
        }
        BootstrapOutcome::AlreadyInitialised => {}
    }
    let users = store.list_users().await?;
    if users.is_empty() {
        // Accounts but no user (made with `cxauth admin account create` before the first
        // start): without a user nobody could log in, so `admin` is made as on an empty
        // database, in the first main account.
        let (password, generated) = match config.bootstrap_admin_password.clone() {
            Some(p) => (p, false),
            None => (cxauth_core::admin::random_password()?, true),
        };
        let spec = cxauth_core::admin::UserSpec {
            username: cxauth_core::admin::BOOTSTRAP_USERNAME.into(),
            password: password.clone(),
            platform_id: config.platform_id.clone(),
            parent: None,
            grants: vec![cxauth_store::FIRST_MAIN_ACCOUNT_ID],
            roles: vec![cxauth_core::store::ROLE_SUPER_USER.into()],
            first_name: "Admin".into(),
            last_name: String::new(),
            rc_user_id: None,
        };
        match cxauth_core::admin::create_user(store, spec, clock.now_ms()).await {
            Ok(_) => {
                tracing::info!(
                    main_account = cxauth_store::FIRST_MAIN_ACCOUNT_ID,
                    "the database had accounts but no user: created user admin, super user of \
                     the first main account"
                );
                return Ok(generated.then_some(password));
            }
            // Another instance starting at the same moment made it.
            Err(cxauth_core::admin::AdminError::Store(
                cxauth_core::store::StoreError::Conflict(_),
            )) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    if !users.iter().any(|u| u.enabled) {
        let name = users
            .iter()
            .find(|u| {
                u.roles
                    .iter()
                    .any(|r| r == cxauth_core::store::ROLE_SUPER_USER)
            })
            .unwrap_or(&users[0])
            .username
            .clone();
        return Err(StartupError::NoLogin(format!(
            "every user of the database {database} is disabled, so nobody could log in: enable \
             one with `cxauth admin --database '{database}' user enable {name}` and start again"
        )));
    }
    if config.bootstrap_admin_password.is_some() {
        tracing::warn!(
            "CXAUTH_BOOTSTRAP_ADMIN_PASSWORD (or bootstrap_admin_password_file) was ignored: \
             the database {database} has users \
             already, and the bootstrap password only sets the password of the first admin of \
             an empty database. To change a password: `cxauth admin --database '{database}' \
             user set-password admin --password-stdin`"
        );
    }
    Ok(None)
}
