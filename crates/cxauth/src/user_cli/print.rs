//! How the user commands print results: a table for people, JSON for programs, one line at a
//! time to stdout (a closed pipe ends the command quietly, see `main`).

use super::Output;
use anyhow::Context as _;
use cxauth_client::{Account, Agent, ApiTokenDetails, User};
use std::io::Write as _;

/// An empty table with `header`.
pub(super) fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    t
}

/// Accounts as a table or JSON.
pub(super) fn print_accounts(accounts: &[Account], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&accounts),
        Output::Table => {
            let mut t = table(&["Account", "Name", "Main account", "Main account name"]);
            for a in accounts {
                t.add_row(vec![
                    a.account_id.clone(),
                    a.account_name.clone(),
                    a.main_account_id.clone(),
                    a.main_account_name.clone(),
                ]);
            }
            print_table(t)
        }
    }
}

/// Agents as a table or JSON.
pub(super) fn print_agents(agents: &[Agent], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&agents),
        Output::Table => {
            let mut t = table(&[
                "Agent",
                "Username",
                "Name",
                "Type",
                "RingEX user",
                "Account",
            ]);
            let text = |s: &Option<String>| s.clone().unwrap_or_default();
            for a in agents {
                t.add_row(vec![
                    a.agent_id.to_string(),
                    text(&a.username),
                    format!("{} {}", text(&a.first_name), text(&a.last_name))
                        .trim()
                        .to_owned(),
                    text(&a.agent_type),
                    a.rc_user_id.map(|id| id.to_string()).unwrap_or_default(),
                    a.account_id.clone(),
                ]);
            }
            print_table(t)
        }
    }
}

/// Users (a tree, indented) as a table or JSON.
pub(super) fn print_users(users: &[User], output: Output) -> anyhow::Result<()> {
    fn rows(t: &mut comfy_table::Table, users: &[User], depth: usize) {
        for u in users {
            t.add_row(vec![
                u.user_id.to_string(),
                format!("{}{}", "  ".repeat(depth), u.user_name),
                u.full_name.clone(),
                if u.enabled { "yes" } else { "no" }.to_owned(),
                u.roles.join(","),
            ]);
            rows(t, &u.children, depth + 1);
        }
    }
    match output {
        Output::Json => print_json(&users),
        Output::Table => {
            let mut t = table(&["ID", "Username", "Name", "Enabled", "Roles"]);
            rows(&mut t, users, 0);
            print_table(t)
        }
    }
}

/// API tokens as RingCX lists them: the bare tokens, as a table or a JSON array of strings.
pub(super) fn print_bare_tokens(tokens: Vec<String>, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&tokens),
        Output::Table => {
            let mut t = table(&["API token"]);
            for token in tokens {
                t.add_row(vec![token]);
            }
            print_table(t)
        }
    }
}

/// API tokens with their details (never the tokens), as a table or JSON as the server sent it.
pub(super) fn print_token_details(
    tokens: &[ApiTokenDetails],
    output: Output,
) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&tokens),
        Output::Table => {
            let mut t = table(&["Id", "Name", "Created", "Expires", "Last used", "Hint"]);
            for d in tokens {
                t.add_row(vec![
                    d.id.to_string(),
                    d.name.clone().unwrap_or_default(),
                    d.created_at.clone(),
                    d.expires_at.clone().unwrap_or_else(|| "never".into()),
                    d.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    d.hint.clone(),
                ]);
            }
            print_table(t)
        }
    }
}

/// A value as pretty JSON.
pub(super) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let s = serde_json::to_string_pretty(value)?;
    print_line(&s)
}

/// A table to stdout.
pub(super) fn print_table(t: comfy_table::Table) -> anyhow::Result<()> {
    print_line(&t.to_string())
}

/// One line to stdout.
pub(super) fn print_line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
