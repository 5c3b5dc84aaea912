//! `cxauth admin audit`: reading the audit trail.

use super::Output;
use cxauth_core::clock::{Clock as _, SystemClock, duration_ms};
use cxauth_core::service::rfc3339;
use cxauth_core::store::{AuditEvent, AuditFilter, Store};
use std::io::Write as _;

/// Audit events as tab-separated lines or JSON objects, one per line.
fn print_audit(events: &[AuditEvent], output: Output) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for e in events {
        match output {
            Output::Json => writeln!(out, "{}", serde_json::to_string(e)?)?,
            Output::Text => writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                rfc3339(e.at),
                e.event,
                e.outcome,
                e.user_id.map(|i| i.to_string()).unwrap_or_default(),
                e.username.as_deref().unwrap_or(""),
                e.addr.as_deref().unwrap_or(""),
                e.request_id.as_deref().unwrap_or(""),
                e.detail
            )?,
        }
    }
    out.flush()?;
    Ok(())
}

/// `cxauth admin audit`: the audit events matching the filter, then (`--follow`) new ones as
/// they come.
pub(super) async fn audit(
    store: &dyn Store,
    user: Option<String>,
    since: Option<std::time::Duration>,
    follow: bool,
    output: Output,
) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    let mut filter = AuditFilter {
        username: user,
        since: since.map_or(i64::MIN, |d| now.saturating_sub(duration_ms(d))),
        ..AuditFilter::default()
    };
    if matches!(output, Output::Text) {
        outln!("TIME\tEVENT\tOUTCOME\tUSER_ID\tUSERNAME\tADDR\tREQUEST_ID\tDETAIL");
    }
    loop {
        let events = store.audit_events(&filter).await?;
        print_audit(&events, output)?;
        if let Some(last) = events.last() {
            filter.after_id = last.id;
        }
        if i64::try_from(events.len()).unwrap_or(i64::MAX) >= filter.limit {
            continue;
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
