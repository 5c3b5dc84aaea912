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

/// Log lines for a test to read: a subscriber of the test's own ([`Capture::subscriber`])
/// writes them here, in `tracing-subscriber`'s plain format (which `cxauth serve`'s own matches),
/// without colours.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    /// A subscriber that writes the events `filter` enables into this capture. Install it for
    /// the process (`tracing::subscriber::set_global_default`, one per test binary) or for a
    /// thread (`tracing_subscriber::util::SubscriberInitExt::set_default`; on a current-thread
    /// runtime the server's tasks run on the test's thread, so their events are captured).
    pub fn subscriber(&self, filter: &str) -> impl tracing_subscriber::util::SubscriberInitExt {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
