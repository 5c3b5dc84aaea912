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
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
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

/// The per-request metrics of one route: its latency histogram, and a request counter per
/// method and status seen.
struct RouteMetrics {
    duration: metrics::Histogram,
    counts: Vec<(metrics::SharedString, u16, metrics::Counter)>,
}

impl RouteMetrics {
    /// The counter of `method` (a [`method_label`]) and `status`, if registered.
    fn count(&self, method: &str, status: u16) -> Option<&metrics::Counter> {
        self.counts
            .iter()
            .find(|(m, s, _)| *s == status && **m == *method)
            .map(|(_, _, count)| count)
    }
}

/// Handles of the per-request metrics, registered once. Asking the recorder by name and labels
/// builds and hashes a label set for each sample (~3k of a `/healthz` answer's ~49k
/// instructions, callgrind); a handle records with an atomic add. Bounded: routes are the
/// router's patterns plus `unmatched`, methods are [`method_label`]'s few, statuses the
/// server's own.
static REQUESTS: std::sync::LazyLock<std::sync::RwLock<HashMap<Box<str>, RouteMetrics>>> =
    std::sync::LazyLock::new(Default::default);

/// Records one answered request: `route` is its pattern (`unmatched` for none), never its path.
pub fn record_request(route: &str, method: &Method, status: StatusCode, seconds: f64) {
    let method = method_label(method);
    let status = status.as_u16();
    {
        let routes = REQUESTS.read().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = routes.get(route)
            && let Some(count) = r.count(&method, status)
        {
            count.increment(1);
            r.duration.record(seconds);
            return;
        }
    }
    // First sample of this route, method and status: register its handles.
    let mut routes = REQUESTS.write().unwrap_or_else(|p| p.into_inner());
    let r = routes.entry(route.into()).or_insert_with(|| RouteMetrics {
        duration: metrics::histogram!(
            "cxauth_http_request_duration_seconds",
            "route" => route.to_owned()
        ),
        counts: Vec::new(),
    });
    let count = match r.count(&method, status) {
        Some(count) => count.clone(),
        None => {
            let count = metrics::counter!("cxauth_http_requests_total",
                "route" => route.to_owned(), "method" => method.clone(),
                "status" => status.to_string());
            r.counts.push((method, status, count.clone()));
            count
        }
    };
    count.increment(1);
    r.duration.record(seconds);
}

/// The method as a metric label. Methods outside HTTP's own are `other`: a client may send any
/// token as a method, and each would otherwise make a new series that is kept for good.
fn method_label(method: &Method) -> metrics::SharedString {
    match *method {
        Method::GET => "GET".into(),
        Method::POST => "POST".into(),
        Method::DELETE => "DELETE".into(),
        Method::PUT => "PUT".into(),
        Method::PATCH => "PATCH".into(),
        Method::HEAD => "HEAD".into(),
        Method::OPTIONS => "OPTIONS".into(),
        Method::CONNECT => "CONNECT".into(),
        Method::TRACE => "TRACE".into(),
        _ => "other".into(),
    }
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
    metrics::gauge!("cxauth_api_token_uses_held").set(state.auth.api_token_uses_held() as f64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_http_methods_or_other() {
        for m in [
            "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE",
        ] {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert_eq!(method_label(&method).as_ref(), m);
        }
        for m in ["PROPFIND", "X1", "get"] {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert_eq!(method_label(&method).as_ref(), "other");
        }
    }

    /// The value of the series `name{labels}` in a rendering, if present.
    fn series(text: &str, name_and_labels: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
    }

    /// Eight threads record at once, first samples included (the handles are registered while
    /// others read): every sample is counted once, in its own series.
    #[test]
    fn concurrent_requests_are_each_counted_once() {
        let handle = handle().expect("recorder");
        let route = "/test/concurrent/{id}";
        let statuses = [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
        ];
        let methods = [
            Method::GET,
            Method::POST,
            Method::from_bytes(b"BREW").expect("method"),
        ];
        let pick = |t: usize, i: usize| (statuses[(i + t) % 3], &methods[(i / 3 + t) % 3]);
        let mut expected = HashMap::<(u16, String), f64>::new();
        for t in 0..8 {
            for i in 0..3_000 {
                let (status, method) = pick(t, i);
                let method = method_label(method).to_string();
                *expected.entry((status.as_u16(), method)).or_default() += 1.0;
            }
        }
        std::thread::scope(|s| {
            for t in 0..8 {
                s.spawn(move || {
                    for i in 0..3_000 {
                        let (status, method) = pick(t, i);
                        record_request(route, method, status, 0.000_5);
                    }
                });
            }
        });
        handle.run_upkeep();
        let text = handle.render();
        let mut total = 0.0;
        for status in ["200", "404", "401"] {
            for method in ["GET", "POST", "other"] {
                let labels = format!(
                    "cxauth_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
                );
                let n = series(&text, &labels).unwrap_or_else(|| panic!("no {labels} in\n{text}"));
                assert_eq!(
                    n,
                    expected[&(status.parse().expect("u16"), method.to_owned())],
                    "{labels}"
                );
                total += n;
            }
        }
        assert_eq!(total, 24_000.0);
        let count = format!("cxauth_http_request_duration_seconds_count{{route=\"{route}\"}}");
        assert_eq!(series(&text, &count), Some(24_000.0));
        assert!(!text.contains("BREW"));
    }
}
