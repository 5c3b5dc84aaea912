//! Server logs, shown only when asked: `CXAUTH_TEST_LOG=1` (or a filter such as
//! `CXAUTH_TEST_LOG=cxauth_server=debug`) prints them on the test's stderr, which the test
//! harness shows for failing tests.

/// The variable that turns the logs on.
pub const LOG_VAR: &str = "CXAUTH_TEST_LOG";

/// Installs a stderr subscriber once per process if `CXAUTH_TEST_LOG` is set. Does nothing if
/// the variable is unset or the process already has a subscriber (a test that captures logs
/// installs its own first).
pub fn init() {
    let Some(wanted) = std::env::var(LOG_VAR).ok().filter(|v| !v.is_empty()) else {
        return;
    };
    let filter = match wanted.as_str() {
        "1" | "true" | "yes" => "info".to_owned(),
        other => other.to_owned(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}
