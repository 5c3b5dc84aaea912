//! Prometheus metrics, served on their own listener (`--metrics-listen`, loopback by default) so
//! they are not public.
//!
//! Counters and histograms are recorded through the `metrics` facade: per request in
//! [`crate::context`], per login, refresh and reuse in `cxauth-core`. Gauges that describe state
//! (hash queue, connection pool, stored rows) are read when `/metrics` is scraped.
//!
//! Memory stays flat whether or not anyone scrapes: the recorder keeps every histogram sample
//! until it is folded into its buckets, which rendering does and so does its upkeep, run here
//! every [`UPKEEP_EVERY`] on a thread of its own. With metrics off (`--metrics-listen off`) no
//! recorder is installed at all, and recording costs nothing.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The `metrics` facade has one recorder per process: it is installed once and shared by every
/// [`crate::App`] of the process (tests build many).
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Whether a recorder is installed. The macros would do nothing without one, but the labels of
/// a per-request sample (route, method, status) are built before the recorder is asked: with
/// metrics off, [`crate::context`] skips building them at all.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are recorded in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Latency buckets in seconds: sub-millisecond token checks up to slow, queued password hashes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the recorder folds pending samples into its histograms when nobody scrapes. At
/// 25,000 requests a second, the samples waiting between two upkeeps take about 200 KB; a
/// wake-up a second costs nothing measurable.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The process's Prometheus recorder, installed on first use, with its upkeep thread.
pub fn handle() -> Result<PrometheusHandle, String> {
    let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("cxauth_http_request_duration_seconds".into()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .build_recorder();
    let h = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = h.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
    *slot = Some(h.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(h)
}

/// The router of the metrics listener: `GET /metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}

/// `GET /metrics`: refreshes the state gauges and renders everything in Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = state.metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are off (--metrics-listen off)\n",
        )
            .into_response();
    };
    let (running, waiting) = state.auth.password_pool().load();
    metrics::gauge!("cxauth_hash_pool_running").set(running as f64);
    metrics::gauge!("cxauth_hash_pool_queue_depth").set(waiting as f64);
    let store = state.auth.store();
    let pool = store.pool_stats();
    metrics::gauge!("cxauth_db_pool_connections", "state" => "open").set(f64::from(pool.open));
    metrics::gauge!("cxauth_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("cxauth_db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.open.saturating_sub(pool.idle)));
    metrics::gauge!("cxauth_db_pool_max_connections").set(f64::from(pool.max));
    match store.stored_counts().await {
        Ok(c) => {
            for (kind, n) in [
                ("live_sessions", c.live_sessions),
                ("sessions", c.sessions),
                ("refresh_tokens", c.refresh_tokens),
                ("api_tokens", c.api_tokens),
                ("legacy_tokens", c.legacy_tokens),
                ("audit_events", c.audit_events),
            ] {
                metrics::gauge!("cxauth_stored_rows", "kind" => kind).set(n as f64);
            }
            metrics::gauge!("cxauth_database_up").set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count stored rows");
            metrics::gauge!("cxauth_database_up").set(0.0);
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
        .into_response()
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
