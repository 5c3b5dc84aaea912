//! `memory`: whether the server's memory stays flat under a long run of requests when nobody
//! scrapes its metrics, and with metrics off. Every request records a latency sample; a
//! recorder that is never scraped and never kept up grows by every sample (issue 14 measured
//! ~17.5 bytes per request). The run sends `/healthz` (which records like any request) on
//! keep-alive connections, reads the server's RSS after a warm-up and at the end, and reports
//! the growth against the target (within 10%).

use crate::load::{self, Fixed, Pace};
use crate::server::Server;
use crate::workloads::fixed_n;
use std::path::Path;
use std::time::Duration;

/// One line of the report per metrics setting: what was measured and whether the target held.
/// `start` starts a server on a database file with extra arguments to `serve` (the caller's
/// binary, log level and pinning).
pub fn memory(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    start: impl Fn(&Path, &[&str]) -> anyhow::Result<Server>,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut facts = Vec::new();
    for (label, args) in [
        (
            "metrics on, never scraped",
            ["--metrics-listen", "127.0.0.1:0"],
        ),
        ("metrics off", ["--metrics-listen", "off"]),
    ] {
        let db = dir.join(format!("memory-{}.db", facts.len()));
        let server = start(&db, &args)?;
        let w = Fixed::get("/healthz", vec![]);
        // Warm-up: allocator pools, connection buffers and the metrics' own tables settle.
        let warm = rt.block_on(load::run(
            server.addr,
            fixed_n(&w, conns),
            Pace::Closed,
            Duration::ZERO,
            warmup,
        ));
        let before = server.rss_mb();
        let run = rt.block_on(load::run(
            server.addr,
            fixed_n(&w, conns),
            Pace::Closed,
            Duration::ZERO,
            duration,
        ));
        // Past the upkeep period, so samples still pending at the end are not counted as growth.
        std::thread::sleep(Duration::from_secs(2));
        let after = server.rss_mb();
        server.stop()?;
        let requests = warm.ok + run.ok;
        let growth = (after - before) / before;
        let per_request = (after - before) * 1024.0 * 1024.0 / run.ok.max(1) as f64;
        facts.push((
            format!("memory, {label}"),
            format!(
                "RSS {before:.1} MB after {} requests, {after:.1} MB after {requests} \
                 ({:+.1}%, {per_request:+.2} bytes per request; errors {}); target within 10%: {}",
                warm.ok,
                growth * 100.0,
                run.errors(),
                if growth.abs() <= 0.10 && run.errors() == 0 {
                    "met"
                } else {
                    "NOT met"
                }
            ),
        ));
    }
    Ok(facts)
}
