//! The result table, for people (aligned text) and machines (`--json`).

use serde::Serialize;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// How load was applied: `closed c=32` (as fast as answers come) or `open 5000/s`.
    pub load: String,
    /// Successful answers per second (for `login-raw`, hashes per second).
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Worst latency, ms.
    pub max_ms: f64,
    /// Non-2xx answers and connection failures.
    pub errors: u64,
    /// Peak resident memory of the server during the scenario, MB.
    pub peak_rss_mb: f64,
    /// Server CPU time per successful answer, microseconds (over warm-up and measurement).
    pub server_cpu_us: f64,
    /// CPU time of the load generator (this process) over the scenario, in percent of the cores
    /// it may use (its one core with `--pin`). Near 100 the generator is the bottleneck, and
    /// latencies include its own queue: an open-loop tail is then not the server's alone.
    pub generator_cpu_pct: f64,
    /// The server's CPU time over the scenario in percent of the cores it may use (its one core
    /// with `--pin`): how busy "half load" really left it. Fewer requests per wake-up cost more
    /// CPU each, so half the closed-loop rate is more than half the core.
    pub server_core_pct: f64,
    /// For open-loop scenarios, the 99th percentile of the `latency_ms` the server itself logged
    /// for the measured window, ms (`crate::own_latency`): next to `p99_ms`, what of a tail was
    /// made inside the server. NaN when not read (closed loop) or when the server logged none.
    pub server_p99_ms: f64,
    /// CPU time the hypervisor gave to others while this VM wanted it ("steal", `/proc/stat`),
    /// over the scenario, in percent of all the machine's cores' time: a tail that comes with
    /// steal is the host's, not the server's. NaN where not read.
    pub steal_pct: f64,
    /// What the figure is compared with.
    pub reference: String,
    /// The ratio to the reference (throughput over reference throughput, or for latency
    /// comparisons the latency over the reference latency).
    pub ratio: f64,
    /// The target, in words.
    pub target: String,
    /// Whether the target was met (`None`: no target, or not measurable).
    pub met: Option<bool>,
}

/// Everything a run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// Machine and conditions.
    pub machine: Machine,
    /// The scenarios.
    pub rows: Vec<Row>,
    /// Figures that are not a load scenario (start-up, idle RSS, seeding, the 503 check).
    pub facts: Vec<(String, String)>,
}

/// Where the figures were taken.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// `nproc`.
    pub cores: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Load average before the run (1, 5, 15 min): other work on the machine.
    pub loadavg_before: String,
    /// Load average after the run.
    pub loadavg_after: String,
    /// Kernel release.
    pub kernel: String,
    /// Load generator threads.
    pub client_threads: usize,
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}

impl Report {
    /// The aligned text table.
    pub fn text(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "cxauth-bench ({} mode) on {} cores, {}, kernel {}; load average before {} / after {}; \
             load generator: {} thread(s)\n\n",
            self.mode,
            m.cores,
            m.cpu,
            m.kernel,
            m.loadavg_before,
            m.loadavg_after,
            m.client_threads
        );
        let header = [
            "scenario",
            "load",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "peak RSS MB",
            "srv CPU us/req",
            "gen CPU %",
            "srv core %",
            "srv p99 ms",
            "steal %",
            "reference",
            "ratio",
            "target",
            "met",
        ];
        let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        for r in &self.rows {
            cells.push(vec![
                r.scenario.clone(),
                r.load.clone(),
                fmt(r.throughput, 0),
                fmt(r.p50_ms, 2),
                fmt(r.p99_ms, 2),
                fmt(r.max_ms, 1),
                r.errors.to_string(),
                fmt(r.peak_rss_mb, 1),
                // Tenths where they matter: `hello` and `healthz` differ by a few µs.
                fmt(r.server_cpu_us, if r.server_cpu_us < 100.0 { 1 } else { 0 }),
                fmt(r.generator_cpu_pct, 0),
                fmt(r.server_core_pct, 0),
                fmt(r.server_p99_ms, 3),
                fmt(r.steal_pct, 2),
                r.reference.clone(),
                fmt(r.ratio, 2),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (n, row) in cells.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if n == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
                out.push('\n');
            }
        }
        out.push('\n');
        for (k, v) in &self.facts {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }
}
