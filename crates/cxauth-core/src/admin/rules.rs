//! Input rules: names, usernames, new passwords, roles.

use super::AdminError;
use crate::limits::{MAX_NAME_LEN, MAX_PASSWORD_LEN, MAX_USERNAME_LEN};
use crate::store::{ROLE_MANAGE_USERS, ROLE_SUPER_USER};
use secrecy::{ExposeSecret, SecretString};

pub(crate) fn check_name(what: &str, name: &str, required: bool) -> Result<(), AdminError> {
    if required && name.trim().is_empty() {
        return Err(AdminError::Invalid(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(AdminError::Invalid(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a username: 1–255 bytes, no whitespace or control characters.
pub fn check_username(username: &str) -> Result<(), AdminError> {
    if username.is_empty() {
        return Err(AdminError::Invalid("username must not be empty".into()));
    }
    if username.len() > MAX_USERNAME_LEN {
        return Err(AdminError::Invalid(format!(
            "username is longer than {MAX_USERNAME_LEN} bytes"
        )));
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AdminError::Invalid(
            "username must not contain spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// Validates a new password (not a login: see `crate::login` for that): not empty, at most [`MAX_PASSWORD_LEN`] bytes.
pub fn validate_new_password(password: &SecretString) -> Result<(), AdminError> {
    let p = password.expose_secret();
    if p.is_empty() {
        return Err(AdminError::Invalid("password must not be empty".into()));
    }
    if p.len() > MAX_PASSWORD_LEN {
        return Err(AdminError::Invalid(format!(
            "password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// The roles a user may be given: the ones cxauth gives a meaning to. Any other name would be
/// stored and silently mean nothing (a typo such as `SUPERUSER` would leave a user without
/// the rights its creator meant to give), so it is refused.
pub const KNOWN_ROLES: [&str; 2] = [ROLE_SUPER_USER, ROLE_MANAGE_USERS];

/// Checks a role name against [`KNOWN_ROLES`]; the refusal lists them and names the closest
/// one ("did you mean …") when the name looks like a misspelling of it.
pub fn check_role(role: &str) -> Result<(), AdminError> {
    if KNOWN_ROLES.contains(&role) {
        return Ok(());
    }
    let hint = closest_role(role)
        .map(|r| format!("; did you mean {r}?"))
        .unwrap_or_default();
    let shown: String = role.chars().take(80).collect();
    Err(AdminError::Invalid(format!(
        "unknown role {shown:?}: the roles are {}{hint}",
        KNOWN_ROLES.join(", ")
    )))
}

/// The known role `role` most likely misspells: the same letters in another case or without
/// the underscores, or at most two edits away.
fn closest_role(role: &str) -> Option<&'static str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let wanted = squash(role);
    KNOWN_ROLES
        .iter()
        .map(|&r| (edit_distance(&wanted, &squash(r)), r))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, r)| r)
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_rules() {
        assert!(check_username("admin@example.com").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_username(&"x".repeat(256)).is_err());
        assert!(check_role("MANAGE_USERS").is_ok());
        assert!(check_role("manage").is_err());
        assert!(check_role("SUPER_USER").is_ok());
        for (typo, meant) in [
            ("SUPERUSER", "SUPER_USER"),
            ("super_user", "SUPER_USER"),
            ("MANAGE_USER", "MANAGE_USERS"),
            ("MANGE_USERS", "MANAGE_USERS"),
        ] {
            let e = check_role(typo).expect_err(typo).to_string();
            assert!(e.contains(&format!("did you mean {meant}?")), "{e}");
            assert!(e.contains("SUPER_USER, MANAGE_USERS"), "{e}");
        }
        let e = check_role("AGENT").expect_err("unknown").to_string();
        assert!(!e.contains("did you mean"), "{e}");
        assert!(validate_new_password(&SecretString::from("")).is_err());
        assert!(check_name("n", "  ", true).is_err());
        assert!(check_name("n", "", false).is_ok());
    }
}
