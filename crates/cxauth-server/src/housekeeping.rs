//! Housekeeping, in the background of every instance: reload the signing keys (so that a
//! rotation made elsewhere reaches this one within [`KEY_RELOAD_INTERVAL`]), retire old ones,
//! write the API token uses noted since the last tick, and now and then purge expired sessions
//! and tokens, old audit events and stale throttle entries.

use cxauth_core::clock::SharedClock;
use cxauth_core::service::{Auth, FlushPace, KEY_RELOAD_INTERVAL};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Housekeeping ticks ([`KEY_RELOAD_INTERVAL`]) between two purges of
/// expired rows (the first tick purges too).
const PURGE_EVERY_TICKS: u64 = 10;

/// The share of the time the minute's write of API token last uses may take
/// ([`FlushPace::Share`]): the rest goes to requests. 100,000 tokens' uses then take ~10 s
/// instead of ~1.3 s (the harness's `refreshes beside the minute's write`), and the refreshes'
/// p99 around it was 8–9 ms instead of 83–111 (a quarter: 36–50 ms; docs/decisions.md).
const USES_WRITE_SHARE: f64 = 0.1;

/// When housekeeping passes come and how much of the time their write of last uses may take.
/// A server always runs [`Schedule::default`]: the other instances' retirement of signing keys
/// counts on every instance reloading them each [`KEY_RELOAD_INTERVAL`]. Tests shorten the
/// interval and change the share, so that a pass and a paced write come within a test's time.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Between the starts of two passes; the first starts at once.
    pub interval: Duration,
    /// [`FlushPace::Share`] of the last uses' write.
    pub uses_write_share: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval: KEY_RELOAD_INTERVAL,
            uses_write_share: USES_WRITE_SHARE,
        }
    }
}

/// Starts housekeeping for `auth`, a pass each `schedule.interval`; it runs until the handle is
/// aborted (by [`crate::serve`]). Audit events older than `audit_retention` are purged.
/// `first_pass`, if given, is told when the first pass (which starts at once) is done, failed
/// steps included.
pub fn spawn(
    auth: Arc<Auth>,
    clock: SharedClock,
    audit_retention: Duration,
    schedule: Schedule,
    mut first_pass: Option<oneshot::Sender<()>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Keys every tick (a rotation reaches this instance within a minute); rows less often.
        let mut tick = tokio::time::interval(schedule.interval);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            let pass_started = tokio::time::Instant::now();
            if let Err(e) = auth.reload_keys().await {
                tracing::warn!(error = %e, "reload of the signing keys failed");
            }
            match auth.retire_keys().await {
                Ok(kids) if !kids.is_empty() => tracing::info!(?kids, "retired old signing keys"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retiring old signing keys failed"),
            }
            // Last uses are noted in memory by requests and written here, once a tick, so no
            // request waits on a write for them (a crash loses at most one tick of them), and
            // paced, so that a large write does not take the requests' CPU and write turn.
            let flush_started = tokio::time::Instant::now();
            match auth
                .flush_api_token_uses(FlushPace::Share(schedule.uses_write_share))
                .await
            {
                Ok(0) => {}
                Ok(written) => tracing::debug!(
                    written,
                    took_ms = flush_started.elapsed().as_millis() as u64,
                    // The harness finds the minute's write by this line; a test pins it.
                    "API token last uses written"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "writing API token last uses failed; kept for the next tick"
                ),
            }
            // The first pass purges too.
            if ticks.is_multiple_of(PURGE_EVERY_TICKS) {
                purge(&auth, &clock, audit_retention).await;
            }
            if ticks == 0 {
                // Its purge reads every table that expires: on a large database the first
                // seconds of service share the machine with it, and an operator (or a
                // benchmark that waits for it) can tell when that is over.
                let took_ms = pass_started.elapsed().as_millis() as u64;
                tracing::info!(took_ms, "first housekeeping pass done");
            }
            ticks += 1;
            if let Some(tx) = first_pass.take() {
                // Nobody waiting is not an error.
                let _ = tx.send(());
            }
        }
    })
}

/// Deletes expired sessions and tokens, audit events older than `audit_retention` and stale
/// throttle entries; failures are logged, and the next purge tries again.
async fn purge(auth: &Auth, clock: &SharedClock, audit_retention: Duration) {
    auth.throttle().purge();
    let now = clock.now_ms();
    match cxauth_core::admin::purge(
        auth.store().as_ref(),
        now,
        cxauth_core::admin::audit_cutoff(now, audit_retention),
        cxauth_core::admin::PURGE_BATCH,
    )
    .await
    {
        Ok(n) if n.total() > 0 => {
            tracing::info!(removed = ?n, "purged expired sessions and tokens")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purge of expired rows failed"),
    }
}
