//! The scenarios, in the order they run, and the references each is compared with.

use crate::load::{self, Fixed, Pace, Stats, Workload};
use crate::report::{Machine, Report, Row};
use crate::seed;
use crate::server::{Cores, Fifo, Server, ThreadUse, cxauth_binary, log_from, logged_number};
use crate::waits::TracefsClaim;
use crate::workloads::{
    ACCOUNTS, ApiTokens, CreateTokens, EachOnce, Refresh, create_api_token, fixed_n, login,
    login_as, login_body, post_form, raw_argon2_rate,
};
use anyhow::Context as _;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Keycloak's published refresh-grant rate per vCPU (sizing guide).
const KEYCLOAK_REFRESH_PER_VCPU: f64 = 120.0;

/// Options of `cxauth-bench all`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Short run (about a minute, smaller `scale` data set, short `memory` run): what CI runs.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds each measurement records (default 8, or 1.5 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// RUST_LOG of the server under test (its default, `info`, logs one line per request).
    #[arg(long, default_value = "info")]
    server_log: String,
    /// Users stored for `scale` (default 100000, or 2000 with --quick).
    #[arg(long)]
    scale_users: Option<u64>,
    /// API tokens stored for `scale` (default 1000000, or 20000 with --quick).
    #[arg(long)]
    scale_tokens: Option<u64>,
    /// Run only these scenarios (comma-separated names; `scale` and `storm` included).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Pin the servers to one core and the load generator to another (`taskset`), so they
    /// never take turns on one core: per-core figures are then the server's one core. The
    /// cores are the first two this process may run on (0 and 1, unless a cpuset or affinity
    /// mask says otherwise). Needs 2 cores.
    #[arg(long)]
    pin: bool,
    /// With --pin: during each open-loop (half-load) measurement, the server under test and the
    /// load generator run under SCHED_FIFO (`chrt`), so that the machine's other programs and
    /// ordinary kernel threads cannot take their cores when they wake: nearer the latency tail
    /// of a machine whose two cores the benchmark owns (interrupts, and a kernel thread already
    /// on the core, still delay them). Only the threads at each process's own priority are
    /// raised: the server's WAL copier (SCHED_IDLE) and hashing threads (10 nice values down)
    /// stay below them. Those rows' load reads `… fifo`. Needs root or CAP_SYS_NICE.
    #[arg(long, requires = "pin")]
    realtime: bool,
    /// During each open-loop (half-load) measurement, record the kernel's scheduler events
    /// (tracefs) and report every wait of 0.5 ms or more of a server or load-generator thread
    /// that was ready to run, with what ran on its core meanwhile (`idle`: nothing did, i.e.
    /// the hypervisor had not yet run the virtual CPU). Those rows' load reads `… traced`.
    /// A full run also traces the refreshes beside the minute's write in `scale`. Needs root;
    /// one such run at a time per machine (a second is refused at its start).
    #[arg(long)]
    trace_waits: bool,
}

/// At this share of its cores (percent) the load generator counts as busy: see
/// [`Row::generator_cpu_pct`].
const GENERATOR_BUSY_PCT: f64 = 90.0;

/// At this share of all the machine's cores' time (percent) the hypervisor's steal is named
/// under the table: see [`Row::steal_pct`]. Most rows of the record's full runs read under 1%
/// (0.00–0.51 in the thirtieth round's second); the twenty-ninth round's 2.2 s refresh tail
/// came with 13.45%, and its missed `scale` row with 3.35%.
const STEAL_NOTABLE_PCT: f64 = 1.0;

struct Plan {
    warmup: Duration,
    duration: Duration,
    conns: usize,
    cores: usize,
    /// The cores the load generator may use: its one core with `--pin`, else all of them.
    generator_cores: usize,
    /// The core every server is pinned to with `--pin`; `None`: wherever the kernel puts it.
    pin: Option<usize>,
    users: u64,
    tokens: u64,
}

fn readfile(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub(crate) fn machine(client_threads: usize) -> Machine {
    let cpuinfo = readfile("/proc/cpuinfo");
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned()),
        loadavg_before: loadavg(),
        loadavg_after: String::new(),
        kernel: readfile("/proc/sys/kernel/osrelease").trim().to_owned(),
        client_threads,
    }
}

pub(crate) fn loadavg() -> String {
    readfile("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine's CPU time so far as `(steal, all)`, in clock ticks summed over every core: the
/// `cpu` line of `/proc/stat`. `(0, 0)` if it cannot be read.
fn steal_ticks() -> (u64, u64) {
    readfile("/proc/stat")
        .lines()
        .next()
        .and_then(parse_cpu_line)
        .unwrap_or((0, 0))
}

/// `(steal, all)` of `/proc/stat`'s aggregate `cpu` line: all is user, nice, system, idle,
/// iowait, irq, softirq and steal (the guest fields that follow are counted in user already).
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    (v.len() == 8).then(|| (v[7], v.iter().sum()))
}

/// Steal between two [`steal_ticks`] readings, in percent of all the cores' time; NaN if
/// nothing was counted.
fn steal_pct(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1);
    if all == 0 {
        return f64::NAN;
    }
    100.0 * after.0.saturating_sub(before.0) as f64 / all as f64
}

fn row(name: &str, load: String, s: &mut Stats, rss: f64) -> Row {
    Row {
        scenario: name.into(),
        load,
        throughput: s.throughput(),
        p50_ms: s.quantile_ms(0.5),
        p99_ms: s.quantile_ms(0.99),
        max_ms: s.quantile_ms(1.0),
        errors: s.errors(),
        peak_rss_mb: rss,
        server_cpu_us: f64::NAN,
        generator_cpu_pct: f64::NAN,
        server_core_pct: f64::NAN,
        server_p99_ms: f64::NAN,
        steal_pct: f64::NAN,
        reference: "-".into(),
        ratio: f64::NAN,
        target: "-".into(),
        met: None,
    }
}

struct Run<'a> {
    rt: &'a tokio::runtime::Runtime,
    plan: &'a Plan,
    rows: Vec<Row>,
    facts: Vec<(String, String)>,
    only: &'a [String],
    /// `--realtime`: open-loop measurements under SCHED_FIFO.
    realtime: bool,
    /// `--trace-waits`: open-loop measurements with the scheduler traced, through the claim
    /// on tracefs the run holds.
    tracefs: Option<&'a TracefsClaim>,
}

impl Run<'_> {
    fn wanted(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    fn measure<W: Workload>(
        &mut self,
        server: &Server,
        workloads: Vec<W>,
        pace: Pace,
        name: &str,
    ) -> Row {
        let n = workloads.len();
        // What earlier rows left in the page cache (their servers' request logs, the scale
        // seed) is written to disk now, not by the kernel 30 s later in the middle of this row,
        // where the commits' fsyncs waited behind it (docs/benchmarks-history.md, "Dec 7,
        // thirty-seventh round").
        or_warn("earlier rows' writes not flushed first", flush_page_cache());
        // `--trace-waits`: started before the row's CPU and clock readings, and read after
        // them, so that neither the buffer's set-up nor its reading counts in the row.
        let open = matches!(pace, Pace::Open(_));
        let trace = match self.tracefs {
            Some(tracefs) if open => or_warn("not traced", tracefs.start()),
            _ => None,
        };
        server.reset_peak();
        let cpu0 = server.cpu_seconds();
        let own0 = crate::workloads::own_cpu_seconds();
        let log0 = server.log_len();
        let steal0 = steal_ticks();
        let wall0 = Instant::now();
        // The measured window in the log's clock: `load::run` starts 20 ms after it is called,
        // and records after the warm-up (the edges may be off by the time this line takes).
        let record_from = SystemTime::now() + Duration::from_millis(20) + self.plan.warmup;
        // `--realtime`: the server and this process under SCHED_FIFO for the open-loop run
        // only, back to the default policy when the guard drops (right after the run).
        let fifo = if open && self.realtime {
            or_warn(
                "not under SCHED_FIFO",
                Fifo::start(&[server.pid(), std::process::id()]),
            )
        } else {
            None
        };
        let mut s = self.rt.block_on(load::run(
            server.addr,
            workloads,
            pace,
            self.plan.warmup,
            self.plan.duration,
        ));
        let under_fifo = fifo.is_some();
        drop(fifo);
        let traced = trace.is_some();
        let load = match pace {
            Pace::Closed => format!("closed c={n}"),
            Pace::Open(r) => format!(
                "open {r:.0}/s c={n}{}{}",
                if under_fifo { " fifo" } else { "" },
                if traced { " traced" } else { "" }
            ),
        };
        let cpu = server.cpu_seconds() - cpu0;
        let own = crate::workloads::own_cpu_seconds() - own0;
        let wall = wall0.elapsed().as_secs_f64();
        let mut r = row(name, load, &mut s, server.peak_rss_mb());
        r.generator_cpu_pct = 100.0 * own / (wall * self.plan.generator_cores as f64);
        r.server_core_pct = 100.0 * cpu / (wall * self.plan.cores as f64);
        r.steal_pct = steal_pct(steal0, steal_ticks());
        if let Some(trace) = trace {
            self.report_waits(trace, server, &format!("waits of {name}"));
        }
        if open {
            // The server writes its log a batch at a time, at most `log_sink::GATHER` (5 ms)
            // after each line.
            std::thread::sleep(Duration::from_millis(50));
            let mut own = crate::own_latency::latencies_ms(
                server.log_since(log0),
                record_from,
                record_from + self.plan.duration,
            );
            r.server_p99_ms = crate::own_latency::quantile(&mut own, 0.99);
        }
        let measured = self.plan.duration.as_secs_f64();
        let answers = s.ok as f64 * (measured + self.plan.warmup.as_secs_f64()) / measured;
        r.server_cpu_us = cpu * 1e6 / answers.max(1.0);
        if !self.only.is_empty() || std::env::var_os("CXAUTH_BENCH_VERBOSE").is_some() {
            eprintln!(
                "  {name}: {:.0}/s p99 {:.2} ms errors {} {:?}",
                r.throughput, r.p99_ms, r.errors, s.other_status
            );
        }
        r
    }

    /// Reads `trace` for the threads of `server` and of this harness, and reports their waits
    /// as the fact `name` (a warning if the trace cannot be read).
    fn report_waits(&mut self, trace: crate::waits::WaitTrace, server: &Server, name: &str) {
        let groups = [
            ("server", crate::waits::threads_of(server.pid())),
            ("harness", crate::waits::threads_of(std::process::id())),
        ];
        match trace.finish(&groups) {
            Ok(waits) => self.fact(name, waits),
            Err(e) => eprintln!("cxauth-bench: warning: trace not read: {e:#}"),
        }
    }

    fn fact(&mut self, k: &str, v: String) {
        self.facts.push((k.to_owned(), v));
    }
}

/// The guard of an option a row can run without (`--realtime`, `--trace-waits`), or `None`
/// after a warning that says what the row goes without.
fn or_warn<T>(without: &str, guard: anyhow::Result<T>) -> Option<T> {
    guard
        .map_err(|e| eprintln!("cxauth-bench: warning: {without}: {e:#}"))
        .ok()
}

/// Writes every file's dirty pages to disk (`sync`) and waits for it.
fn flush_page_cache() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("cannot run `sync`")?;
    anyhow::ensure!(status.success(), "`sync` failed: {status}");
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("cxauth-bench: {msg}");
}

/// Each kind of thread's CPU time, seconds, in a [`Server::use_by_thread`] reading.
fn cpu_by_thread(
    reading: &std::collections::BTreeMap<String, ThreadUse>,
) -> std::collections::BTreeMap<String, f64> {
    reading
        .iter()
        .map(|(kind, used)| (kind.clone(), used.cpu_seconds))
        .collect()
}

/// Each kind of thread's context switches between two [`Server::use_by_thread`] readings,
/// divided by `per` (say, the logins served between them), as (waits, preemptions); kinds with
/// fewer than 0.05 of either per unit are left out.
fn switches_per(
    before: &std::collections::BTreeMap<String, ThreadUse>,
    after: &std::collections::BTreeMap<String, ThreadUse>,
    per: f64,
) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .map(|(kind, now)| {
            let then = before.get(kind).copied().unwrap_or_default();
            let count = |a: u64, b: u64| a.saturating_sub(b) as f64 / per;
            (
                kind.clone(),
                count(now.waits, then.waits),
                count(now.preempted, then.preempted),
            )
        })
        .filter(|(_, waits, preempted)| *waits >= 0.05 || *preempted >= 0.05)
        .collect()
}

/// Each kind of thread's share of the CPU the server's threads used between two
/// [`Server::use_by_thread`] readings (empty if they used none).
fn thread_shares(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    let used: std::collections::BTreeMap<String, f64> = after
        .iter()
        .map(|(kind, cpu)| (kind.clone(), cpu - before.get(kind).copied().unwrap_or(0.0)))
        .filter(|(_, cpu)| *cpu > 0.0)
        .collect();
    let total: f64 = used.values().sum();
    if total <= 0.0 {
        return Default::default();
    }
    used.into_iter().map(|(k, cpu)| (k, cpu / total)).collect()
}

/// The rows `name` picks, each as "scenario (figure)", joined by commas; `None` if it picks
/// none. The start of a fact line that names the rows whose figures need a caveat.
fn rows_named(rows: &[Row], name: impl Fn(&Row) -> Option<String>) -> Option<String> {
    let named: Vec<String> = rows.iter().filter_map(name).collect();
    (!named.is_empty()).then(|| named.join(", "))
}

/// The open-loop rows measured while the load generator had no CPU to spare, in words, if any:
/// their latencies are partly the generator's own queue.
fn generator_busy(rows: &[Row]) -> Option<String> {
    rows_named(rows, |r| {
        (r.load.starts_with("open") && generator_was_the_limit(r.generator_cpu_pct))
            .then(|| format!("{} ({:.0}%)", r.scenario, r.generator_cpu_pct))
    })
    .map(|busy| {
        format!(
            "{busy}: at {GENERATOR_BUSY_PCT:.0}% or more of its core(s) during these open-loop \
             runs, so their latencies include the generator's own queue, not only the server's"
        )
    })
}

/// The rows measured while the hypervisor took [`STEAL_NOTABLE_PCT`] or more of the machine's
/// CPU, in words, if any: the steal column is easy to miss in a wide table, and a tail or rate
/// read from such a row without it would be blamed on the server.
fn steal_notable(rows: &[Row]) -> Option<String> {
    rows_named(rows, |r| {
        (r.steal_pct >= STEAL_NOTABLE_PCT).then(|| format!("{} ({:.2}%)", r.scenario, r.steal_pct))
    })
    .map(|stolen| {
        format!(
            "{stolen}: the hypervisor took {STEAL_NOTABLE_PCT:.0}% or more of the machine's CPU \
             during these rows, so their rates and tails are partly the host's, not the server's"
        )
    })
}

/// Whether `healthz` met its target, given its `ratio` to `hello` (CPU per answer) and the
/// load generator's share of its core while it drove `hello`. Not judged (`None`) when `hello`
/// was the generator's ceiling, not the server's: a bare server that is not kept busy pays more
/// CPU per answer, so the ratio would flatter `healthz`. Not judged when unmeasured (NaN).
fn healthz_met(ratio: f64, hello_gen_pct: f64) -> Option<bool> {
    (!ratio.is_nan() && !generator_was_the_limit(hello_gen_pct)).then_some(ratio >= 0.75)
}

/// Whether the load generator, at `gen_pct` of its core(s), set the pace rather than the server.
fn generator_was_the_limit(gen_pct: f64) -> bool {
    gen_pct >= GENERATOR_BUSY_PCT
}

/// `cxauth-bench all`.
pub fn all(opts: &Options) -> anyhow::Result<()> {
    let (bin, version) = cxauth_binary()?;
    let started = Instant::now();
    let mut machine = machine(opts.client_threads);
    // Where the servers run with `--pin`: the first core this process may use (and this
    // process moves to the second), else anywhere.
    let cores = if opts.pin {
        let allowed = crate::server::allowed_cores()?;
        Some(Cores::pick(&allowed).context("--pin")?)
    } else {
        None
    };
    let pin = cores.map(|c| c.server);
    // The server's cores: all of them, or the one it is pinned to.
    let server_cores = if let Some(cores) = cores {
        crate::server::pin_self(cores.generator)?;
        if opts.realtime {
            // Refused now, not after minutes of closed-loop rows.
            drop(Fifo::start(&[std::process::id()])?);
        }
        1
    } else {
        machine.cores
    };
    // Held until the run ends; refused now, not after minutes of closed-loop rows.
    let tracefs = if opts.trace_waits {
        let claim = TracefsClaim::take()?;
        drop(claim.start()?);
        Some(claim)
    } else {
        None
    };
    let plan = Plan {
        warmup: Duration::from_secs_f64(if opts.quick { 0.3 } else { 1.0 }),
        duration: Duration::from_secs_f64(opts.duration.unwrap_or(if opts.quick {
            1.5
        } else {
            8.0
        })),
        conns: opts.connections.max(1),
        cores: server_cores,
        generator_cores: if opts.pin { 1 } else { machine.cores },
        pin,
        users: opts
            .scale_users
            .unwrap_or(if opts.quick { 2_000 } else { 100_000 }),
        tokens: opts
            .scale_tokens
            .unwrap_or(if opts.quick { 20_000 } else { 1_000_000 }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads.max(1))
        .enable_all()
        .build()?;
    let mut run = Run {
        rt: &rt,
        plan: &plan,
        rows: Vec::new(),
        facts: Vec::new(),
        only: &opts.only,
        realtime: opts.realtime,
        tracefs: tracefs.as_ref(),
    };
    let c = plan.conns;

    let dir = tempfile::Builder::new().prefix("cxauth-bench-").tempdir()?;
    // The machine's ceiling: a bare hyper server.
    let mut hello_cpu_us = f64::NAN;
    let mut hello_gen_pct = f64::NAN;
    if run.wanted("hello") || run.wanted("healthz") {
        progress("hello (bare hyper server)");
        let hello = Server::hello(&dir.path().join("hello.log"), pin)?;
        let r = run.measure(
            &hello,
            fixed_n(&Fixed::get("/", vec![]), c),
            Pace::Closed,
            "hello",
        );
        hello_cpu_us = r.server_cpu_us;
        hello_gen_pct = r.generator_cpu_pct;
        run.rows.push(r);
        hello.stop()?;
    }

    let mut pinning = if let Some(cores) = cores {
        cores.describe()
    } else {
        "none: servers and load generator share every core".to_owned()
    };
    if opts.realtime {
        pinning.push_str(
            "; both under SCHED_FIFO (chrt -f -p 10) during the open-loop rows (`fifo`), \
             but for the threads each put below its own priority",
        );
    }
    if opts.trace_waits {
        pinning.push_str(
            "; scheduler traced during the open-loop rows, warm-up included (`traced`: see \
             their `waits of` lines)",
        );
    }
    run.fact("pinning", pinning);
    // Which server was measured, as it names itself: two builds side by side (an A/B) leave
    // two reports that differ here.
    run.fact("binary", format!("{} ({version})", bin.display()));
    let db = dir.path().join("cxauth.db");
    // First start creates the database, key and admin; the start-up figure is a restart.
    let first = Server::cxauth(&bin, &db, &opts.server_log, pin)?;
    run.fact(
        "start-up, first start (create schema, key, admin)",
        format!("{:.0} ms", first.startup.as_secs_f64() * 1e3),
    );
    first.stop()?;
    // `token-create` creates as many users in turn (see `CreateTokens`): seeded now, while the
    // server is stopped, a few hundred rows that the restart below does not notice.
    let creators = if run.wanted("token-create") {
        let users = token_create_users(&plan);
        let seeded = rt.block_on(seed::seed(&db, users, 0, 0))?;
        Some((seeded.first_user_id, users))
    } else {
        None
    };
    let server = Server::cxauth(&bin, &db, &opts.server_log, pin)?;
    let startup_empty = server.startup;
    run.fact(
        "start-up, empty database (restart)",
        match creators {
            Some((_, users)) => format!(
                "{:.0} ms (with the {users} users token-create creates as)",
                startup_empty.as_secs_f64() * 1e3
            ),
            None => format!("{:.0} ms", startup_empty.as_secs_f64() * 1e3),
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let idle = server.rss_mb();
    run.fact(
        "idle RSS after start",
        format!(
            "{idle:.1} MB (target <= 50 MB: {})",
            if idle <= 50.0 { "met" } else { "NOT met" }
        ),
    );
    let addr = server.addr;
    let (access, _) = rt.block_on(login(addr))?;
    let api_token = rt.block_on(create_api_token(addr, &access))?;
    let bearer_hdr = vec![("authorization", format!("Bearer {access}"))];
    let api_hdr = vec![("x-auth-token", api_token.clone())];

    progress("healthz");
    let r = run.measure(
        &server,
        fixed_n(&Fixed::get("/healthz", vec![]), c),
        Pace::Closed,
        "healthz",
    );
    // CPU efficiency (answers per CPU-second of the server), as the target is set, not
    // throughput: the bare server answers so cheaply that the load generator runs out of CPU
    // before it does (`gen CPU %` near 100), and a ratio of rates would then flatter `healthz`.
    let healthz_tp = r.throughput;
    let mut r = r;
    r.reference = "hello, CPU per answer".into();
    r.ratio = hello_cpu_us / r.server_cpu_us;
    r.target = ">= 0.75 x hello".into();
    r.met = healthz_met(r.ratio, hello_gen_pct);
    run.rows.push(r);
    if generator_was_the_limit(hello_gen_pct) {
        run.fact(
            "hello",
            format!(
                "the load generator used {hello_gen_pct:.0}% of its core(s), so `hello` was held \
                 to the generator's pace and its CPU per answer is not its best: `healthz`'s \
                 ratio is not judged here (crates/cxauth-bench/wrk.sh measures both with wrk)"
            ),
        );
    }

    let mut api_tp = f64::NAN;
    let mut refresh_tp = f64::NAN;
    for (name, hdr) in [("bearer", &bearer_hdr), ("api-token", &api_hdr)] {
        if !run.wanted(name) && !run.wanted("scale") {
            continue;
        }
        progress(name);
        let w = Fixed::get(ACCOUNTS, hdr.clone());
        let mut r = run.measure(&server, fixed_n(&w, c), Pace::Closed, name);
        let tp = r.throughput;
        r.reference = "healthz".into();
        r.ratio = tp / healthz_tp;
        r.target = ">= 0.80 x healthz".into();
        r.met = Some(r.ratio >= 0.8 && r.errors == 0);
        run.rows.push(r);
        progress(&format!("{name} at half load"));
        let mut h = run.measure(
            &server,
            fixed_n(&w, c),
            Pace::Open((tp / 2.0).max(1.0)),
            &format!("{name} @50%"),
        );
        if name == "api-token" {
            api_tp = tp;
            h.target = "p99 < 1 ms".into();
            h.met = Some(h.p99_ms < 1.0 && h.errors == 0);
        }
        run.rows.push(h);
    }

    if let Some((first_id, users)) = creators {
        progress(&format!("token-create (logging in {users} users)"));
        let bearers = rt.block_on(async {
            let mut bearers = Vec::new();
            for id in first_id..first_id + i64::try_from(users)? {
                let (access, _) = login_as(addr, &format!("seed-{id}")).await?;
                bearers.push(format!("Bearer {access}"));
            }
            anyhow::Ok(Arc::new(bearers))
        })?;
        run.fact(
            "token-create",
            format!(
                "as {users} users in turn, each under the default cap of {} API tokens",
                cxauth_core::service::DEFAULT_API_TOKEN_CAP
            ),
        );
        let conns = c.min(8);
        let workloads = (0..conns)
            .map(|i| CreateTokens {
                bearers: bearers.clone(),
                next: i * bearers.len() / conns,
            })
            .collect();
        let mut r = run.measure(&server, workloads, Pace::Closed, "token-create");
        r.reference = "healthz".into();
        r.ratio = r.throughput / healthz_tp;
        run.rows.push(r);
    }

    if run.wanted("login") || run.wanted("storm") {
        // The raw rate is measured on either side of the login row, and the row is judged
        // against their mean: a VM's speed drifts (the same hash took 7.4 ms of CPU and 8.9 ms
        // a quarter of an hour apart in the Dec 4 sixteenth round), and one measurement before
        // the row put all of the drift into the login's ratio.
        progress("raw Argon2id rate (server idle), before the logins");
        let before = raw_argon2_rate(plan.cores, plan.duration, pin)?;
        progress("login");
        let w = Fixed {
            method: Method::POST,
            path: "/api/auth/login/admin".into(),
            headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
            body: Bytes::from(login_body()),
        };
        let threads0 = server.use_by_thread();
        let mut r = run.measure(&server, fixed_n(&w, plan.cores * 4), Pace::Closed, "login");
        let threads1 = server.use_by_thread();
        let (cpu0, cpu1) = (cpu_by_thread(&threads0), cpu_by_thread(&threads1));
        let threads = thread_shares(&cpu0, &cpu1);
        // The logins between the two readings, from the CPU the threads used and the row's
        // CPU per login (both span the warm-up and the measurement).
        let logins =
            (cpu1.values().sum::<f64>() - cpu0.values().sum::<f64>()) / (r.server_cpu_us / 1e6);
        progress("raw Argon2id rate (server idle), after the logins");
        let after = raw_argon2_rate(plan.cores, plan.duration, pin)?;
        let (raw, raw_cpu_us) = ((before.0 + after.0) / 2.0, (before.1 + after.1) / 2.0);
        run.rows.push(Row {
            scenario: "argon2id-raw".into(),
            load: format!(
                "{} threads, in-process{}, mean of before and after `login`",
                plan.cores,
                if pin.is_some() {
                    " on the server's core"
                } else {
                    ""
                }
            ),
            throughput: raw,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            max_ms: f64::NAN,
            errors: 0,
            peak_rss_mb: f64::NAN,
            server_cpu_us: raw_cpu_us,
            generator_cpu_pct: f64::NAN,
            server_core_pct: f64::NAN,
            server_p99_ms: f64::NAN,
            steal_pct: f64::NAN,
            reference: "-".into(),
            ratio: f64::NAN,
            target: "-".into(),
            met: None,
        });
        r.reference = "argon2id-raw".into();
        r.ratio = r.throughput / raw;
        r.target = ">= 0.90 x raw".into();
        r.met = Some(r.ratio >= 0.9);
        let efficiency = raw_cpu_us / r.server_cpu_us;
        run.fact(
            "login CPU efficiency",
            format!(
                "raw Argon2id {:.1} ms CPU per hash ({:.1} before the logins, {:.1} after), server \
                 {:.1} ms CPU per login: {efficiency:.2} (the rate ratio is at the mercy of what \
                 else runs on the cores; this one is not)",
                raw_cpu_us / 1e3,
                before.1 / 1e3,
                after.1 / 1e3,
                r.server_cpu_us / 1e3
            ),
        );
        // Where a login's CPU goes, by thread: the hashing threads' share against everything
        // else a login costs (the request, its database work, the log).
        let hashing = threads.get("cxauth-argon2").copied().unwrap_or(0.0);
        let rest: Vec<String> = threads
            .iter()
            .filter(|(kind, share)| *kind != "cxauth-argon2" && **share * r.server_cpu_us >= 5.0)
            .map(|(kind, share)| format!("{kind} {:.2}", share * r.server_cpu_us / 1e3))
            .collect();
        run.fact(
            "login CPU by thread",
            format!(
                "{:.2} ms per login in the hashing threads, {:.2} ms outside them ({}; ms per \
                 login, from /proc/PID/task/*/schedstat)",
                hashing * r.server_cpu_us / 1e3,
                (1.0 - hashing) * r.server_cpu_us / 1e3,
                rest.join(", ")
            ),
        );
        if logins.is_finite() && logins >= 1.0 {
            let switches: Vec<String> = switches_per(&threads0, &threads1, logins)
                .iter()
                .map(|(kind, waits, preempted)| {
                    format!("{kind} {waits:.1} waits, {preempted:.1} preempted")
                })
                .collect();
            run.fact(
                "login context switches",
                format!(
                    "per login, by thread: {} (waits: the thread slept until woken, for a job, \
                     a lock or I/O; preempted: taken off the core while it could still run; \
                     from /proc/PID/task/*/status)",
                    switches.join("; ")
                ),
            );
        }
        run.rows.push(r);

        // Three times more logins at once than the pool admits (workers + queue = 65 per
        // core), all of one user from one address: beyond the pool (503) or beyond that
        // source's budget of pending checks (429), every refusal must come at once with
        // Retry-After, never queue without bound.
        progress("login overload (refusals with Retry-After)");
        let burst = plan.cores * 65 * 3;
        let (refused, with_retry, ok, n503) = rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..burst {
                tasks.push(tokio::spawn(load::once(
                    addr,
                    post_form("/api/auth/login/admin", login_body(), &[]),
                )));
            }
            let (mut refused, mut with_retry, mut ok, mut n503) = (0, 0, 0, 0);
            for t in tasks {
                if let Ok(Ok((status, headers, _))) = t.await {
                    if status == StatusCode::SERVICE_UNAVAILABLE
                        || status == StatusCode::TOO_MANY_REQUESTS
                    {
                        refused += 1;
                        n503 += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
                        if headers.contains_key("retry-after") {
                            with_retry += 1;
                        }
                    } else if status.is_success() {
                        ok += 1;
                    }
                }
            }
            (refused, with_retry, ok, n503)
        });
        run.fact(
            "login overload",
            format!(
                "{burst} concurrent logins of one user: {ok} served, {refused} refused at once \
                 ({n503} with 503 for a full pool, the rest 429 for the source's budget; \
                 {with_retry} with Retry-After); target: every refusal with Retry-After: {}",
                if refused > 0 && refused == with_retry {
                    "met"
                } else {
                    "NOT met"
                }
            ),
        );
    }

    if run.wanted("refresh") {
        progress("refresh (logging in one session per connection)");
        let chains = refresh_chains(&rt, addr, c)?;
        let make = || refreshes(&chains);
        let mut r = run.measure(&server, make(), Pace::Closed, "refresh");
        let tp = r.throughput;
        refresh_tp = tp;
        let per_core = tp / plan.cores as f64;
        r.reference = format!("Keycloak {KEYCLOAK_REFRESH_PER_VCPU}/s/vCPU");
        r.ratio = per_core / KEYCLOAK_REFRESH_PER_VCPU;
        r.target = format!(">= 1200/s/core ({per_core:.0}/s/core)");
        r.met = Some(per_core >= 1200.0 && r.errors == 0);
        run.rows.push(r);
        progress("refresh at half load");
        let mut h = run.measure(
            &server,
            make(),
            Pace::Open((tp / 2.0).max(1.0)),
            "refresh @50%",
        );
        h.target = "p99 < 10 ms".into();
        h.met = Some(h.p99_ms < 10.0 && h.errors == 0);
        run.rows.push(h);
    }

    if run.wanted("storm") {
        progress("storm (bearer at a fixed rate while logins saturate the hash pool)");
        let rate = 200.0;
        let bearer = Fixed::get(ACCOUNTS, bearer_hdr.clone());
        let quiet = run.measure(
            &server,
            fixed_n(&bearer, 8),
            Pace::Open(rate),
            "bearer quiet",
        );
        let login_w = Fixed {
            method: Method::POST,
            path: "/api/auth/login/admin".into(),
            headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
            body: Bytes::from(login_body()),
        };
        server.reset_peak();
        let (mut b, mut l) = rt.block_on(async {
            let storm = tokio::spawn(load::run(
                addr,
                fixed_n(&login_w, plan.cores * 4),
                Pace::Closed,
                plan.warmup,
                plan.duration,
            ));
            let b = load::run(
                addr,
                fixed_n(&bearer, 8),
                Pace::Open(rate),
                plan.warmup,
                plan.duration,
            )
            .await;
            (b, storm.await.unwrap_or_default())
        });
        let rss = server.peak_rss_mb();
        let mut r = row(
            "storm",
            format!("open {rate:.0}/s c=8 + login c={}", plan.cores * 4),
            &mut b,
            rss,
        );
        r.reference = format!("bearer p99 quiet {:.2} ms", quiet.p99_ms);
        r.ratio = r.p99_ms / quiet.p99_ms;
        r.target = "bearer p99 < 10 ms".into();
        r.met = Some(r.p99_ms < 10.0 && r.errors == 0);
        run.rows.push(r);
        run.fact(
            "storm logins",
            format!(
                "{:.1}/s, p99 {:.0} ms, errors {}",
                l.throughput(),
                l.quantile_ms(0.99),
                l.errors()
            ),
        );
    }
    server.stop()?;

    if run.wanted("memory") {
        progress("memory (RSS over a long run of requests, metrics unscraped and off)");
        let (warm, long) = if opts.quick {
            (Duration::from_secs(2), Duration::from_secs(8))
        } else {
            (Duration::from_secs(20), Duration::from_secs(280))
        };
        for (k, v) in crate::memory::memory(
            &rt,
            dir.path(),
            |db, args| Server::cxauth_with(&bin, db, &opts.server_log, args, pin),
            c,
            warm,
            long,
        )? {
            run.fact(&k, v);
        }
    }

    if run.wanted("scale") {
        let measured = Measured {
            api_token: api_tp,
            refresh: refresh_tp,
        };
        scale(&mut run, &bin, dir.path(), opts, startup_empty, measured)?;
    }

    if let Some(note) = generator_busy(&run.rows) {
        run.fact("load generator busy", note);
    }
    if let Some(note) = steal_notable(&run.rows) {
        run.fact("steal", note);
    }

    machine.loadavg_after = loadavg();
    run.fact(
        "total run time",
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    let report = Report {
        mode: if opts.quick { "quick" } else { "full" }.into(),
        machine,
        rows: run.rows,
        facts: run.facts,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// How many users `token-create` creates as: enough that none reaches the default cap on API
/// tokens at up to 2,000 creations a second over the scenario's warm-up and run.
fn token_create_users(plan: &Plan) -> u64 {
    const MOST_PER_SECOND: f64 = 2_000.0;
    let most = (plan.warmup + plan.duration).as_secs_f64() * MOST_PER_SECOND;
    let cap = cxauth_core::service::DEFAULT_API_TOKEN_CAP as f64;
    ((most / cap).ceil() as u64).max(16)
}

/// Pairs of half-load rows `scale` measures in a full run (one with `--quick`): the empty
/// database's row and the scale data set's, interleaved. Odd, so that the median is a pair's.
const SCALE_PAIRS: usize = 3;

/// The index of the median of `ratios` (the upper one of an even count: the stricter), `None`
/// when empty. A NaN (a row without answers) counts as the worst.
fn median_index(ratios: &[f64]) -> Option<usize> {
    let key = |i: usize| {
        let r = ratios[i];
        if r.is_nan() { f64::INFINITY } else { r }
    };
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    order.get(ratios.len() / 2).copied()
}

fn scale(
    run: &mut Run<'_>,
    bin: &Path,
    dir: &Path,
    opts: &Options,
    startup_empty: Duration,
    measured: Measured,
) -> anyhow::Result<()> {
    let api_tp = measured.api_token;
    let plan = run.plan;
    let pin = plan.pin;
    progress(&format!(
        "scale: seeding {} users and {} API tokens",
        plan.users, plan.tokens
    ));
    let db = dir.join("scale.db");
    Server::cxauth(bin, &db, &opts.server_log, pin)?.stop()?;
    let at_stop = uses_at_stop_count(plan.tokens);
    let seeded = run.rt.block_on(seed::seed(
        &db,
        plan.users,
        plan.tokens,
        SCALE_SAMPLE.max(at_stop),
    ))?;
    run.fact(
        "scale seeding",
        format!(
            "{} users, {} API tokens in {:.1} s, database {:.0} MB",
            plan.users,
            plan.tokens,
            seeded.took.as_secs_f64(),
            std::fs::metadata(&db).map_or(0, |m| m.len()) as f64 / 1e6
        ),
    );
    let mut server = Server::cxauth(bin, &db, &opts.server_log, pin)?;
    let startup = server.startup;
    run.fact(
        "start-up with the scale data set",
        format!(
            "{:.0} ms (empty: {:.0} ms; target < 1 s: {})",
            startup.as_secs_f64() * 1e3,
            startup_empty.as_secs_f64() * 1e3,
            if startup < Duration::from_secs(1) {
                "met"
            } else {
                "NOT met"
            }
        ),
    );
    run.fact(
        "first housekeeping pass with the scale data set",
        match server.first_housekeeping_ms(FIRST_PASS_WAIT) {
            Some(ms) => format!("{ms} ms"),
            None => format!("not logged within {} s", FIRST_PASS_WAIT.as_secs()),
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    run.fact(
        "idle RSS with the scale data set",
        format!("{:.1} MB", server.rss_mb()),
    );
    // The rows' tokens: SCALE_SAMPLE of the sample, spread over it as it is over the table.
    let step = (seeded.sample.len() / SCALE_SAMPLE).max(1);
    let tokens = Arc::new(
        seeded
            .sample
            .iter()
            .step_by(step)
            .take(SCALE_SAMPLE)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let make = || -> Vec<ApiTokens> {
        (0..plan.conns)
            .map(|i| ApiTokens {
                tokens: tokens.clone(),
                next: i * 61,
            })
            .collect()
    };
    progress("scale: api-token");
    let mut r = run.measure(&server, make(), Pace::Closed, "scale api-token");
    r.reference = "api-token (empty db)".into();
    r.ratio = r.throughput / api_tp;
    if r.errors > 0 {
        eprintln!(
            "cxauth-bench: scale api-token had errors; server log tail:\n{}",
            server.log_tail()
        );
    }
    run.rows.push(r);
    server.stop()?;
    let rate = if api_tp.is_nan() {
        1000.0
    } else {
        api_tp / 2.0
    };
    // The half-load rows in pairs with a server on an empty database, interleaved, at the same
    // rate. A burst of the host's own work (the kernel's `kdamond.0`, the sandbox's services)
    // lands on one row: with the empty database's row minutes earlier, one burst decided the
    // ratio; here it moves one pair's, and the median pair is judged. One server runs at a
    // time, started for its row ([`row_alone`]): an idle server beside the measured one runs
    // its housekeeping in the other's row (a minute after its start it writes the uses noted
    // since, 2,000 rows with the scale data set; seen as 50-80 ms of its store thread in the
    // empty database's rows), and a row that starts seconds after its server's start is clear
    // of it, as the single row was.
    let empty_db = dir.join("scale-empty.db");
    let empty = Server::cxauth(bin, &empty_db, &opts.server_log, pin)?;
    let empty_token = run.rt.block_on(async {
        let (access, _) = login(empty.addr).await?;
        create_api_token(empty.addr, &access).await
    })?;
    empty.stop()?;
    let empty_w = Fixed::get(ACCOUNTS, vec![("x-auth-token", empty_token)]);
    let pairs = if opts.quick { 1 } else { SCALE_PAIRS };
    let mut judged = Vec::new();
    for k in 1..=pairs {
        let scale_row = |run: &mut Run<'_>| {
            let name = format!("scale api-token @50% {k}/{pairs}");
            row_alone(run, bin, &db, opts, &make, rate, &name)
        };
        let empty_row = |run: &mut Run<'_>| {
            let name = format!("api-token @50% empty {k}/{pairs}");
            let w = || fixed_n(&empty_w, plan.conns);
            row_alone(run, bin, &empty_db, opts, &w, rate, &name)
        };
        // The empty database's row first in odd pairs, second in even ones, so that a drift
        // over the pairs' minute falls on both sides.
        let (e, mut h) = if k % 2 == 1 {
            let e = empty_row(run)?;
            (e, scale_row(run)?)
        } else {
            let h = scale_row(run)?;
            (empty_row(run)?, h)
        };
        h.reference = format!("empty {k}/{pairs} p99 {:.2} ms", e.p99_ms);
        h.ratio = h.p99_ms / e.p99_ms;
        judged.push((run.rows.len() + 1, h.ratio, e.errors + h.errors));
        run.rows.push(e);
        run.rows.push(h);
    }
    let ratios: Vec<f64> = judged.iter().map(|&(_, ratio, _)| ratio).collect();
    if let Some(m) = median_index(&ratios) {
        let errors: u64 = judged.iter().map(|&(_, _, errors)| errors).sum();
        let h = &mut run.rows[judged[m].0];
        h.target = format!("p99 <= 2 x empty (median of {pairs})");
        h.met = Some(h.ratio <= 2.0 && errors == 0);
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        run.fact(
            "scale @50% pairs",
            format!(
                "p99 with the scale data set over its pair's on an empty database: {}; pair {} \
                 holds the median and is judged",
                listed.join(", "),
                m + 1
            ),
        );
    }
    uses_at_stop(run, bin, &db, opts, &seeded.sample, at_stop)?;
    if opts.quick {
        // It waits for the pass a minute after its server's start: not in the quick run.
        return Ok(());
    }
    refreshes_beside_the_minutes_write(run, bin, &db, opts, &seeded.sample, at_stop, measured)
}

/// What [`scale`] measured before it, for the rates of its rows (NaN where not measured).
struct Measured {
    /// `api-token`'s closed-loop throughput on an empty database.
    api_token: f64,
    /// `refresh`'s closed-loop throughput on an empty database.
    refresh: f64,
}

/// API tokens each `scale` row presents: a credential cache's worth of distinct look-ups.
const SCALE_SAMPLE: usize = 2_000;

/// How many distinct tokens [`uses_at_stop`] presents: a tenth more than a server notes between
/// two writes (`MAX_NOTED`; each of its shards fills on its own, so the last tenth fills the
/// ones behind), as far as the data set has them.
fn uses_at_stop_count(tokens: u64) -> usize {
    let most = cxauth_core::token_uses::MAX_NOTED * 11 / 10;
    usize::try_from(tokens).map_or(most, |t| t.min(most))
}

/// A clean stop writes the API token uses noted since the last housekeeping pass, within a
/// bound (`--shutdown-timeout`, 10 s by default; 2 s until the thirty-fifth round); a stop that
/// runs out of it loses what it has not committed. Presents `count` of the seeded tokens
/// once each to a server on the scale data set, stops it, and reports what its log says the
/// stop wrote and how long that took.
fn uses_at_stop(
    run: &mut Run<'_>,
    bin: &Path,
    db: &Path,
    opts: &Options,
    tokens: &[String],
    count: usize,
) -> anyhow::Result<()> {
    progress(&format!("scale: {count} tokens' uses written at stop"));
    let mut server = Server::cxauth(bin, db, &opts.server_log, run.plan.pin)?;
    let _ = server.first_housekeeping_ms(FIRST_PASS_WAIT);
    // Within the 50 s `present_each_once` allows: the housekeeping pass a minute after the
    // start would write some of them (the count would say so).
    let (presented, errors) = present_each_once(run, &server, &tokens[..count.min(tokens.len())]);
    let offset = server.log_len();
    let log = server.log_path().to_owned();
    server.stop()?;
    // Only the stop's lines, not the line per request before them.
    let msg = "API token last uses written at stop";
    let since: String = std::io::BufRead::lines(log_from(&log, offset))
        .map_while(Result::ok)
        .filter(|l| l.contains(msg) || l.contains("at stop timed out"))
        .map(|l| l + "\n")
        .collect();
    let since = since.as_str();
    let value = match (
        logged_number(since, msg, "written"),
        logged_number(since, msg, "took_ms"),
    ) {
        (Some(written), Some(ms)) => format!(
            "{written} tokens' last uses in {ms} ms ({:.1} µs a token; the stop allows \
             --shutdown-timeout, 10 s by default), after {count} tokens presented once each in \
             {:.1} s{}",
            ms as f64 * 1e3 / written.max(1) as f64,
            presented.as_secs_f64(),
            if errors > 0 {
                format!(", {errors} errors")
            } else {
                String::new()
            }
        ),
        _ => {
            let why = if since.contains("at stop timed out") {
                "timed out: uses lost".to_owned()
            } else {
                format!("no `{msg}` line (a --server-log above info hides it)")
            };
            format!(
                "{why}, after {count} tokens presented in {:.1} s",
                presented.as_secs_f64()
            )
        }
    };
    run.fact("uses written at stop (scale)", value);
    Ok(())
}

/// Logs in as admin `n` times: one refresh token chain per connection of a refresh workload.
fn refresh_chains(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<Arc<Mutex<String>>>> {
    (0..n)
        .map(|_| {
            let (_, refresh) = rt.block_on(login(addr))?;
            Ok(Arc::new(Mutex::new(refresh)))
        })
        .collect()
}

/// One [`Refresh`] workload per chain of [`refresh_chains`].
fn refreshes(chains: &[Arc<Mutex<String>>]) -> Vec<Refresh> {
    chains
        .iter()
        .map(|t| Refresh { token: t.clone() })
        .collect()
}

/// Presents each of `tokens` once to `server` (`X-Auth-Token` reads, closed loop), in slices of
/// a second until all were presented or 50 s have gone by; says how long that took and how many
/// answers were errors.
fn present_each_once(run: &Run<'_>, server: &Server, tokens: &[String]) -> (Duration, u64) {
    let tokens = Arc::new(tokens.to_vec());
    let cursor = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workloads = || -> Vec<EachOnce> {
        (0..run.plan.conns)
            .map(|_| EachOnce {
                tokens: tokens.clone(),
                cursor: cursor.clone(),
            })
            .collect()
    };
    let started = Instant::now();
    let mut errors = 0;
    while cursor.load(std::sync::atomic::Ordering::Relaxed) < tokens.len()
        && started.elapsed() < Duration::from_secs(50)
    {
        let s = run.rt.block_on(load::run(
            server.addr,
            workloads(),
            Pace::Closed,
            Duration::ZERO,
            Duration::from_secs(1),
        ));
        errors += s.errors();
    }
    (started.elapsed(), errors)
}

/// The message of the housekeeping pass's write of last uses (logged at `debug`).
const MINUTES_WRITE: &str = "API token last uses written";

/// Seconds of refreshes [`refreshes_beside_the_minutes_write`] keeps up after the write.
const AFTER_THE_WRITE: usize = 5;

/// The minute's write of last uses at its bound, from the side of the requests that wait behind
/// it. A server on the scale data set is shown `count` of `tokens` once each, as in
/// [`uses_at_stop`] (their rows already hold a last use, as a busy server's do), then takes
/// refreshes at half the `refresh` row's rate (1,000/s when it did not run), open loop, in
/// slices of a second, until its housekeeping pass a minute after its start has written them
/// and [`AFTER_THE_WRITE`] more seconds have gone by. The write runs in transactions of 500
/// rows, and each refresh's commit waits for the one under way: this reports the refreshes'
/// p99 and maximum before the write, in the two seconds around it, and after it, when the
/// write's WAL frames are copied back.
fn refreshes_beside_the_minutes_write(
    run: &mut Run<'_>,
    bin: &Path,
    db: &Path,
    opts: &Options,
    tokens: &[String],
    count: usize,
    measured: Measured,
) -> anyhow::Result<()> {
    let rate = if measured.refresh.is_nan() {
        1000.0
    } else {
        (measured.refresh / 2.0).max(1.0)
    };
    progress(&format!(
        "scale: refreshes at {rate:.0}/s beside the minute's write of {count} tokens' uses"
    ));
    let filter = format!("{},cxauth_server::housekeeping=debug", opts.server_log);
    let mut server = Server::cxauth(bin, db, &filter, run.plan.pin)?;
    let started = Instant::now();
    let _ = server.first_housekeeping_ms(FIRST_PASS_WAIT);
    let chains = refresh_chains(run.rt, server.addr, run.plan.conns)?;
    let make = || refreshes(&chains);
    let (presented, present_errors) =
        present_each_once(run, &server, &tokens[..count.min(tokens.len())]);
    // The pass comes a minute after the start, and its write is paced (~10 s for 100,000
    // tokens' uses here, more on a slower host).
    let mut slices: Vec<Stats> = Vec::new();
    let mut offset = server.log_len();
    let mut write: Option<(usize, u64, u64)> = None;
    // `--trace-waits`: the scheduler traced from a few seconds before the pass is due until the
    // slice its line came in, not the whole minute (the buffer would not hold it).
    let mut trace = None;
    while started.elapsed() < PASS_BOUND {
        if trace.is_none()
            && write.is_none()
            && started.elapsed() >= TRACE_FROM
            && let Some(tracefs) = run.tracefs
        {
            trace = or_warn("the minute's write not traced", tracefs.start());
        }
        slices.push(run.rt.block_on(load::run(
            server.addr,
            make(),
            Pace::Open(rate),
            Duration::ZERO,
            Duration::from_secs(1),
        )));
        if write.is_none() {
            // Up to the last complete line read, so that a line logged meanwhile is read next
            // time, not skipped.
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut server.log_since(offset), &mut text);
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            offset += complete as u64;
            let lines = &text[..complete];
            if let (Some(written), Some(ms)) = (
                logged_number(lines, MINUTES_WRITE, "written"),
                logged_number(lines, MINUTES_WRITE, "took_ms"),
            ) {
                write = Some((slices.len() - 1, written, ms));
            }
        }
        if write.is_some()
            && let Some(trace) = trace.take()
        {
            run.report_waits(trace, &server, "waits beside the minute's write (scale)");
        }
        if write.is_some_and(|(k, _, _)| slices.len() > k + AFTER_THE_WRITE) {
            break;
        }
    }
    server.stop()?;
    let errors: u64 = slices.iter().map(Stats::errors).sum::<u64>() + present_errors;
    let Some((k, written, ms)) = write else {
        run.fact(
            "refreshes beside the minute's write (scale)",
            format!(
                "no `{MINUTES_WRITE}` line within {} s of the start, after {count} tokens \
                 presented in {:.1} s",
                PASS_BOUND.as_secs(),
                presented.as_secs_f64()
            ),
        );
        return Ok(());
    };
    let (mut before, during, after) = around_the_write(slices, k, ms);
    let worst = worst_second(&mut before);
    let (b, d, a) = (tail(before), tail(during), tail(after));
    run.fact(
        "refreshes beside the minute's write (scale)",
        format!(
            "{written} tokens' last uses written in {ms} ms by the pass a minute after the \
             start; refreshes at {rate:.0}/s (open loop): p99 {:.2} ms, max {:.2} ms in the {} \
             s before it{}; p99 {:.2} ms, max {:.2} ms in the {} s around it; p99 {:.2} ms, \
             max {:.2} ms in the {} s after (target at half load: p99 < 10 ms){}",
            b.0,
            b.1,
            b.2,
            worst.map_or(String::new(), |(i, p99)| format!(
                " (the worst of them the {} second, p99 {p99:.2} ms)",
                ordinal(i)
            )),
            d.0,
            d.1,
            d.2,
            a.0,
            a.1,
            a.2,
            if errors > 0 {
                format!(", {errors} errors")
            } else {
                String::new()
            }
        ),
    );
    Ok(())
}

/// How long after its server's start [`refreshes_beside_the_minutes_write`] waits for the
/// minute's write to end.
const PASS_BOUND: Duration = Duration::from_secs(150);

/// When, after its server's start, [`refreshes_beside_the_minutes_write`] starts tracing the
/// scheduler (`--trace-waits`): a few seconds before housekeeping's second pass, a minute after
/// the start.
const TRACE_FROM: Duration = Duration::from_secs(56);

/// `slices` (of 1 s each) before, around and after the write of `ms` milliseconds whose line
/// came after slice `k`: the write ended in slice `k`, so it began in one of the
/// `ceil(ms / 1000)` slices before (at least the one before, as its line may come late).
fn around_the_write<T>(mut slices: Vec<T>, k: usize, ms: u64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let k = k.min(slices.len().saturating_sub(1));
    let after = slices.split_off((k + 1).min(slices.len()));
    let back = usize::try_from(ms.div_ceil(1000))
        .unwrap_or(usize::MAX)
        .max(1);
    let during = slices.split_off(k.saturating_sub(back));
    (slices, during, after)
}

/// Which of `slices` (counted from 1) had the highest p99, and that p99 (ms): whether a long
/// tail over many seconds was one bad second (and where: right after the tokens were presented,
/// or just before the write) or spread out.
fn worst_second(slices: &mut [Stats]) -> Option<(usize, f64)> {
    slices
        .iter_mut()
        .map(|s| s.quantile_ms(0.99))
        .enumerate()
        .filter(|(_, p99)| !p99.is_nan())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, p99)| (i + 1, p99))
}

/// `n` as an English ordinal: 1st, 2nd, 3rd, 4th, 11th, 21st.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The p99 and the maximum (ms) of `slices`' latencies together, and how many slices.
fn tail(slices: Vec<Stats>) -> (f64, f64, usize) {
    let n = slices.len();
    let mut all = Stats::default();
    for s in slices {
        all.merge(s);
    }
    (all.quantile_ms(0.99), all.quantile_ms(1.0), n)
}

/// How long a row waits for its server's first housekeeping pass.
const FIRST_PASS_WAIT: Duration = Duration::from_secs(10);

/// Closed-loop load each [`row_alone`] server takes before its row, unmeasured.
const PREWARM: Duration = Duration::from_secs(1);

/// One open-loop row on a server started for it on `db` and stopped after it. Before the row,
/// the server's first housekeeping pass is done and [`PREWARM`] of closed-loop requests from
/// `make`'s workloads have filled its credential cache: with 2,000 tokens to look up, a cold
/// cache put a few hundred ms of store reads at the start of the row, and the backlog they
/// left at half load decided its p99. The row measures a server in service, as one that has
/// served before. The server's log tail is printed if the row had errors.
fn row_alone<W: Workload>(
    run: &mut Run<'_>,
    bin: &Path,
    db: &Path,
    opts: &Options,
    make: &dyn Fn() -> Vec<W>,
    rate: f64,
    name: &str,
) -> anyhow::Result<Row> {
    let mut server = Server::cxauth(bin, db, &opts.server_log, run.plan.pin)?;
    if server.first_housekeeping_ms(FIRST_PASS_WAIT).is_none() {
        eprintln!(
            "cxauth-bench: warning: {name}: no `first housekeeping pass done` line within {} s \
             (a --server-log above info hides it); measured without waiting for it",
            FIRST_PASS_WAIT.as_secs()
        );
    }
    let warm = run.rt.block_on(load::run(
        server.addr,
        make(),
        Pace::Closed,
        Duration::ZERO,
        PREWARM,
    ));
    if warm.ok == 0 {
        eprintln!("cxauth-bench: warning: {name}: no answer before the row");
    }
    let r = run.measure(&server, make(), Pace::Open(rate), name);
    if r.errors > 0 {
        eprintln!(
            "cxauth-bench: {name} had errors; server log tail:\n{}",
            server.log_tail()
        );
    }
    server.stop()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_second_is_the_slice_with_the_highest_p99_counted_from_one() {
        let slice = |us: &[u32]| Stats {
            latencies_us: us.to_vec(),
            ..Stats::default()
        };
        let mut slices = vec![
            slice(&[100, 200]),
            slice(&[]),
            slice(&[300, 9_000]),
            slice(&[5_000, 400]),
        ];
        assert_eq!(worst_second(&mut slices), Some((3, 9.0)));
        assert_eq!(worst_second(&mut [slice(&[])]), None);
        assert_eq!(worst_second(&mut []), None);
    }

    #[test]
    fn ordinals_end_as_in_english() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th"
            ]
        );
    }

    #[test]
    fn the_slices_around_the_write_are_the_one_it_ended_in_and_those_its_time_reaches() {
        let slices: Vec<u32> = (0..10).collect();
        assert_eq!(
            around_the_write(slices.clone(), 4, 900),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6, 7, 8, 9])
        );
        assert_eq!(
            around_the_write(slices.clone(), 4, 0),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6, 7, 8, 9])
        );
        assert_eq!(
            around_the_write(slices.clone(), 4, 1000),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6, 7, 8, 9])
        );
        assert_eq!(
            around_the_write(slices.clone(), 4, 2500),
            (vec![0], vec![1, 2, 3, 4], vec![5, 6, 7, 8, 9])
        );
        assert_eq!(
            around_the_write(slices.clone(), 4, 60_000),
            (vec![], vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9])
        );
        assert_eq!(
            around_the_write(slices.clone(), 0, 1500),
            (vec![], vec![0], (1..10).collect())
        );
        assert_eq!(
            around_the_write(slices, 9, 1500),
            ((0..7).collect(), vec![7, 8, 9], vec![])
        );
        assert_eq!(
            around_the_write(Vec::<u32>::new(), 0, 1500),
            (vec![], vec![], vec![])
        );
    }

    #[test]
    fn a_tail_is_read_over_all_its_slices_together() {
        let slice = |us: Vec<u32>| Stats {
            latencies_us: us,
            ..Stats::default()
        };
        let mut many = vec![
            slice((1..=99).map(|i| i * 10).collect()),
            slice(vec![5_000]),
        ];
        many.push(slice(vec![]));
        assert_eq!(tail(many), (0.99, 5.0, 3));
        let (p99, max, n) = tail(Vec::new());
        assert!(p99.is_nan() && max.is_nan() && n == 0);
    }

    #[test]
    fn steal_is_read_from_the_aggregate_cpu_line_only() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let line = "cpu  100 20 30 800 5 0 5 40 7 0";
        assert_eq!(parse_cpu_line(line), Some((40, 1000)));
        assert_eq!(parse_cpu_line("cpu0 100 20 30 800 5 0 5 40 7 0"), None);
        assert_eq!(parse_cpu_line("cpu  100 20 30"), None);
        assert_eq!(parse_cpu_line("cpu  100 x 30 800 5 0 5 40"), None);
        assert_eq!(steal_pct((40, 1000), (90, 2000)), 5.0);
        assert!(steal_pct((40, 1000), (40, 1000)).is_nan());
    }

    fn measured(name: &str, load: &str, gen_pct: f64) -> Row {
        let mut r = row(name, load.to_owned(), &mut Stats::default(), f64::NAN);
        r.generator_cpu_pct = gen_pct;
        r
    }

    #[test]
    fn switches_are_counted_per_unit_between_the_readings() {
        let used = |waits, preempted| ThreadUse {
            cpu_seconds: 1.0,
            waits,
            preempted,
        };
        let before: std::collections::BTreeMap<String, ThreadUse> = [
            ("cxauth-sqlite-w".to_owned(), used(100, 10)),
            ("idle".to_owned(), used(7, 7)),
        ]
        .into();
        // `idle` did not switch; `cxauth-argon2` started between the readings.
        let after: std::collections::BTreeMap<String, ThreadUse> = [
            ("cxauth-sqlite-w".to_owned(), used(600, 40)),
            ("idle".to_owned(), used(7, 7)),
            ("cxauth-argon2".to_owned(), used(0, 700)),
        ]
        .into();
        let per = switches_per(&before, &after, 100.0);
        assert_eq!(
            per,
            vec![
                ("cxauth-argon2".to_owned(), 0.0, 7.0),
                ("cxauth-sqlite-w".to_owned(), 5.0, 0.3),
            ]
        );
        assert_eq!(
            cpu_by_thread(&after).values().sum::<f64>(),
            3.0,
            "CPU by kind"
        );
    }

    #[test]
    fn thread_shares_are_of_the_cpu_used_between_the_readings() {
        let reading = |pairs: &[(&str, f64)]| -> std::collections::BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let before = reading(&[
            ("cxauth-argon2", 10.0),
            ("tokio-rt-worker", 4.0),
            ("idle", 1.0),
        ]);
        // `idle` used nothing; `new` started between the readings.
        let after = reading(&[
            ("cxauth-argon2", 19.0),
            ("tokio-rt-worker", 4.5),
            ("idle", 1.0),
            ("new", 0.5),
        ]);
        let shares = thread_shares(&before, &after);
        assert_eq!(shares.len(), 3, "{shares:?}");
        assert!((shares["cxauth-argon2"] - 0.9).abs() < 1e-9, "{shares:?}");
        assert!((shares["tokio-rt-worker"] - 0.05).abs() < 1e-9);
        assert!((shares["new"] - 0.05).abs() < 1e-9);
        assert!(thread_shares(&after, &after).is_empty());
    }

    #[test]
    fn only_open_loop_rows_with_a_busy_generator_are_named() {
        let rows = [
            measured("api-token", "closed c=32", 99.0),
            measured("api-token @50%", "open 40000/s c=32", 95.2),
            measured("bearer @50%", "open 37000/s c=32", 63.0),
            measured("refresh @50%", "open 2000/s c=32", f64::NAN),
        ];
        let note = generator_busy(&rows).expect("one row is busy");
        assert!(note.starts_with("api-token @50% (95%):"), "{note}");
        assert!(
            !note.contains("bearer") && !note.contains("refresh"),
            "{note}"
        );
        assert_eq!(generator_busy(&rows[2..]), None);
    }

    #[test]
    fn rows_with_notable_steal_are_named_whatever_their_load() {
        let with_steal = |name: &str, load: &str, steal: f64| {
            let mut r = measured(name, load, 50.0);
            r.steal_pct = steal;
            r
        };
        let rows = [
            with_steal("hello", "closed c=32", 2.36),
            with_steal("bearer", "closed c=32", 0.06),
            with_steal("refresh @50%", "open 1700/s c=32", 13.45),
            with_steal("token-create", "closed c=32", 0.999),
            with_steal("peers", "closed c=32", f64::NAN),
        ];
        let note = steal_notable(&rows).expect("two rows had steal");
        assert!(
            note.starts_with("hello (2.36%), refresh @50% (13.45%): "),
            "{note}"
        );
        assert!(
            !note.contains("bearer") && !note.contains("token-create"),
            "{note}"
        );
        assert_eq!(steal_notable(&rows[3..]), None);
    }

    #[test]
    fn the_median_pair_is_judged_and_a_pair_without_answers_counts_as_the_worst() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[3.0]), Some(0));
        // One burst in one pair does not decide: the middle ratio does.
        assert_eq!(median_index(&[6.8, 1.1, 0.9]), Some(1));
        assert_eq!(median_index(&[0.9, 1.2, 6.8]), Some(1));
        // Two bad pairs of three are a regression, not a burst.
        assert_eq!(median_index(&[2.5, 1.0, 3.0]), Some(0));
        // Of an even count, the upper median: the stricter.
        assert_eq!(median_index(&[1.0, 4.0]), Some(1));
        // A row with no answers has a NaN ratio; it is never the one that passes.
        assert_eq!(median_index(&[f64::NAN, 1.0, 1.5]), Some(2));
        assert_eq!(median_index(&[f64::NAN, f64::NAN, 1.0]), Some(0));
    }

    #[test]
    fn healthz_is_judged_only_when_the_generator_left_hello_room() {
        assert_eq!(healthz_met(0.80, 60.0), Some(true));
        assert_eq!(healthz_met(0.75, 89.9), Some(true));
        assert_eq!(healthz_met(0.64, 60.0), Some(false));
        // `hello` held to the generator's pace: its CPU per answer is not its best.
        assert_eq!(healthz_met(0.92, GENERATOR_BUSY_PCT), None);
        assert_eq!(healthz_met(0.60, 98.0), None);
        // Not measured (`--only` skipped hello, or no answers).
        assert_eq!(healthz_met(f64::NAN, 60.0), None);
    }
}
