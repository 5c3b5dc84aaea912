//! The processes under test: a release `cxauth serve` on a database in a temporary directory,
//! and the bare hyper server (this binary's hidden `hello` command). Both are child processes,
//! so the load generator (this process) never shares an address space with them.

use anyhow::{Context as _, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin password the benchmark server is bootstrapped with.
pub const ADMIN_PASSWORD: &str = "bench-admin-password-1";

/// The release `cxauth` binary, which must sit beside this executable: the harness never builds.
/// Warns (and goes on) when that binary, or this harness, is a debug build. Returns the path and
/// what the binary's `--version` printed, asked once: the reports name the binary with it.
pub fn cxauth_binary() -> anyhow::Result<(PathBuf, String)> {
    let me = std::env::current_exe().context("cannot locate the cxauth-bench executable")?;
    let dir = me.parent().context("the executable has no directory")?;
    let bin = dir.join("cxauth");
    if !bin.is_file() {
        bail!(
            "{} not found: build both binaries first with\n    \
             cargo build --release -p cxauth -p cxauth-bench",
            bin.display()
        );
    }
    // Asked, not guessed from the directory: a release binary copied elsewhere (two builds side
    // by side, for an A/B) is still a release build.
    let version = version_of(&bin)?;
    if is_debug_build(&version) {
        eprintln!(
            "cxauth-bench: warning: {} is a debug build; figures will be meaningless",
            bin.display()
        );
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "cxauth-bench: warning: this harness is a debug build, its load generator slow; \
             figures will be meaningless"
        );
    }
    Ok((bin, version))
}

/// What `bin --version` prints, trimmed (`cxauth 0.1.0`, or `cxauth 0.1.0 (debug build)`): the
/// binary measured, which need not be the harness's own build.
fn version_of(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether `cxauth --version` printed `version`: a debug build says so after its version (the
/// `VERSION` of `crates/cxauth/src/main.rs`, whose format the CLI test
/// `version_says_whether_the_build_is_a_debug_one` pins).
fn is_debug_build(version: &str) -> bool {
    version.trim_end().ends_with("(debug build)")
}

/// The `took_ms` of the first complete `first housekeeping pass done` line in `text`.
fn first_housekeeping_took_ms(text: &str) -> Option<u64> {
    logged_number(text, "first housekeeping pass done", "took_ms")
}

/// The number logged as `field=N` on the first complete line of `text` that holds `message`
/// and the field. A line is complete once its newline is written: a line cut after
/// `took_ms=1` of `took_ms=12` is not read.
pub(crate) fn logged_number(text: &str, message: &str, field: &str) -> Option<u64> {
    let key = format!(" {field}=");
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && l.contains(message))
        .find_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
            digits.parse().ok()
        })
}

/// [`Server::log_since`] of the log file `log`, also once its server is gone (a stop's own
/// lines are read after it).
pub(crate) fn log_from(log: &Path, offset: u64) -> Box<dyn std::io::BufRead> {
    use std::io::{Seek as _, SeekFrom};
    let opened = std::fs::File::open(log).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        Ok(f)
    });
    match opened {
        Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 16, f)),
        Err(_) => Box::new(std::io::empty()),
    }
}

/// A child process, killed and reaped when dropped: whichever way a [`Server`] or a start
/// that failed goes, nothing is left running behind it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running child server.
pub struct Server {
    child: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// From spawn to the "listening" line.
    pub startup: Duration,
    /// Its log file.
    log: PathBuf,
}

/// The address in the first complete `cxauth: listening on http://ADDR` line of `text`. Only a
/// line its newline ends: the log is read while the server writes it, and a line caught half
/// written (`…http://127.0.0.` or `…:4` of `:4312`) either fails to parse or parses as the
/// wrong port.
fn listening_address(text: &str) -> Option<&str> {
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .find_map(|l| l.strip_prefix("cxauth: listening on http://"))
        .map(str::trim)
}

/// Spawns `cmd` with stderr going to `log` (a file, like a real deployment's log, so the
/// server never waits on a reader) and waits for `cxauth: listening on http://ADDR` in it.
/// The child dies with the harness however the harness ends ([`dies_with_parent`]).
pub(crate) fn spawn_and_wait(cmd: Command, what: &str, log: &Path) -> anyhow::Result<Server> {
    let file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let started = Instant::now();
    let mut child = Running(
        dies_with_parent(&cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {what} (by way of setpriv, util-linux)"))?,
    );
    let deadline = started + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = listening_address(&text) {
            // On an error, `child` is dropped: stopped, not left running behind it.
            let addr = line
                .parse()
                .with_context(|| format!("{what} printed a bad listening address: {line}"))?;
            return Ok(Server {
                startup: started.elapsed(),
                addr,
                child,
                log: log.to_owned(),
            });
        }
        let exited = child
            .0
            .try_wait()
            .with_context(|| format!("cannot watch {what}"))?
            .is_some();
        if Instant::now() > deadline || exited {
            bail!("{what} did not start; its output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Server {
    /// `cxauth serve` on `db` (an SQLite file, created if missing) with `rust_log` as RUST_LOG,
    /// on core `pin` if given (`all --pin`), else wherever the kernel puts it.
    pub fn cxauth(
        bin: &Path,
        db: &Path,
        rust_log: &str,
        pin: Option<usize>,
    ) -> anyhow::Result<Server> {
        Self::cxauth_with(bin, db, rust_log, &[], pin)
    }

    /// [`Server::cxauth`] with `extra` arguments to `serve`.
    pub fn cxauth_with(
        bin: &Path,
        db: &Path,
        rust_log: &str,
        extra: &[&str],
        pin: Option<usize>,
    ) -> anyhow::Result<Server> {
        let cmd = Self::cxauth_command(bin, db, rust_log, extra);
        spawn_and_wait(on_core(cmd, pin), "cxauth serve", &db.with_extension("log"))
    }

    /// The command [`Server::cxauth_with`] runs.
    fn cxauth_command(bin: &Path, db: &Path, rust_log: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(format!("sqlite://{}", db.display()))
            .arg("--access-token-ttl")
            .arg("1h")
            // The login scenarios measure the hashing path with one user from one address: the
            // per-user and per-source login limits would turn them into a throttling test.
            .arg("--logins-per-user-per-minute")
            .arg("0")
            .arg("--logins-in-flight-per-source")
            .arg("1000000")
            .arg("--max-sessions-per-user")
            .arg("0")
            .args(extra)
            .env("CXAUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", rust_log)
            .env_remove("CXAUTH_MASTER_KEY_FILE")
            .env_remove("CXAUTH_DATABASE");
        cmd
    }

    /// The bare hyper server, this binary's `hello` command, on core `pin` if given.
    pub fn hello(log: &Path, pin: Option<usize>) -> anyhow::Result<Server> {
        let me = std::env::current_exe().context("cannot locate the cxauth-bench executable")?;
        let mut cmd = Command::new(me);
        cmd.arg("hello");
        spawn_and_wait(on_core(cmd, pin), "the hello server", log)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Resets the peak-RSS counter (Linux `clear_refs` 5), so the next [`Server::peak_rss_mb`]
    /// covers only what happened since.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// Resident memory now, MB.
    pub fn rss_mb(&self) -> f64 {
        status_kb(self.pid(), "VmRSS:") / 1024.0
    }

    /// Peak resident memory since start or the last [`Server::reset_peak`], MB.
    pub fn peak_rss_mb(&self) -> f64 {
        status_kb(self.pid(), "VmHWM:") / 1024.0
    }

    /// CPU time (user + system) consumed so far, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// What each kind of thread has used so far: threads are grouped by name without a
    /// trailing `-N` (`cxauth-argon2-0` and `-1` are one kind; names are cut at 15 bytes, as
    /// the kernel keeps them). Threads that have ended count in [`Server::cpu_seconds`] only.
    /// CPU time is to the nanosecond where the kernel has `schedstat` (see
    /// [`thread_cpu_seconds`]).
    pub fn use_by_thread(&self) -> std::collections::BTreeMap<String, ThreadUse> {
        use_by_thread_of(self.pid())
    }

    /// Stops the server: SIGTERM (graceful), then SIGKILL after 5 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.0.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.0.kill()?;
        self.child.0.wait()?;
        Ok(())
    }

    /// The file the server logs to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How many bytes the server has logged so far: where a later [`Server::log_since`] starts.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// What the server logged from byte `offset` on (a [`Server::log_len`]), to be read a line
    /// at a time: only what it logged during one measurement, not a log that grows by
    /// gigabytes in a full run, and never all of it in memory at once. An unreadable log reads
    /// as empty.
    pub fn log_since(&self, offset: u64) -> Box<dyn std::io::BufRead> {
        log_from(&self.log, offset)
    }

    /// Waits, at most `timeout`, for `cxauth serve`'s `first housekeeping pass done` line and
    /// returns the pass's `took_ms`: its purge reads every table that expires, so a row measured
    /// before it ends measures the purge too. `None` if the line did not come (a `RUST_LOG`
    /// above `info` hides it), at once if the server has exited.
    pub fn first_housekeeping_ms(&mut self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(ms) = first_housekeeping_took_ms(&text) {
                return Some(ms);
            }
            let exited = !matches!(self.child.0.try_wait(), Ok(None));
            if Instant::now() > deadline || exited {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// [`Server::use_by_thread`] of process `pid`.
fn use_by_thread_of(pid: u32) -> std::collections::BTreeMap<String, ThreadUse> {
    let mut by = std::collections::BTreeMap::<String, ThreadUse>::new();
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cpu = thread_cpu_seconds(&dir);
        if !cpu.is_finite() {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let entry = by
            .entry(thread_kind(name.trim_end()).to_owned())
            .or_default();
        entry.cpu_seconds += cpu;
        entry.waits += status_count(&status, "voluntary_ctxt_switches:");
        entry.preempted += status_count(&status, "nonvoluntary_ctxt_switches:");
    }
    by
}

/// What a kind of thread has used so far (see [`Server::use_by_thread`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadUse {
    /// CPU time, user and system, seconds.
    pub cpu_seconds: f64,
    /// Times its threads gave up the core to wait (for a lock, a channel, I/O, the next
    /// job): each is a sleep and a wake-up.
    pub waits: u64,
    /// Times its threads were taken off the core while they could still run: another thread
    /// was woken on it, or their time slice ended.
    pub preempted: u64,
}

/// A thread's kind: its name without a trailing `-N`.
fn thread_kind(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((kind, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => kind,
        _ => name,
    }
}

/// What follows `key` (`VmRSS:`, `Cpus_allowed_list:`, …) on its line of a `/proc/.../status`
/// text, trimmed; `None` if no line starts with it. A key must end in its colon: without it,
/// `voluntary_ctxt_switches` would not be told from a longer name that starts the same way.
fn status_value<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// The number on the line of a `/proc/.../status` text that starts with `key`; 0 if there is
/// none.
fn status_count(status: &str, key: &str) -> u64 {
    status_value(status, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time of the thread whose `/proc/PID/task/TID` directory is `dir`, seconds: from its
/// `schedstat` (nanoseconds), else its `stat` (clock ticks); NaN if neither can be read.
///
/// Not `stat` first: a thread's time there is whole clock ticks (10 ms), cut off, not rounded.
/// A kind of thread whose CPU is spread over many threads (sqlx's 16 SQLite workers) lost up
/// to 10 ms per thread at each reading, and a difference over a 10 s row was 0 or 10 ms per
/// thread: the login row's by-thread line left the workers' ~0.1 ms per login out altogether.
fn thread_cpu_seconds(dir: &Path) -> f64 {
    std::fs::read_to_string(dir.join("schedstat"))
        .ok()
        .and_then(|s| schedstat_seconds(&s))
        .unwrap_or_else(|| cpu_seconds_of(&dir.join("stat").to_string_lossy()))
}

/// The time on CPU in a `schedstat` text (its first field, nanoseconds), seconds.
fn schedstat_seconds(schedstat: &str) -> Option<f64> {
    let ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// CPU time (user + system) of the process whose `stat` file is `path` (`/proc/PID/stat`,
/// `/proc/self/stat`), seconds; NaN if it cannot be read.
pub(crate) fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let f = stat_fields(&stat);
    let ticks = |n: usize| f.get(n).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(STAT_UTIME) + ticks(STAT_STIME)) / 100.0
}

/// Field 3 of a `stat` file, the state (`R`, `S`, `Z`, …).
#[cfg(test)]
const STAT_STATE: usize = 0;
/// Fields 14 and 15, user and system time in clock ticks.
const STAT_UTIME: usize = 11;
const STAT_STIME: usize = 12;
/// Field 19, the nice value.
const STAT_NICE: usize = 16;
/// Field 40, the real-time priority (0 outside the real-time policies).
const STAT_RT_PRIORITY: usize = 37;
/// Field 41, the scheduling policy (`SCHED_*`).
const STAT_POLICY: usize = 38;

/// The fields of a `/proc/PID[/task/TID]/stat` text after the command name, which is in
/// parentheses and may hold spaces and parentheses itself: field N of proc(5) is at index
/// N − 3 (the `STAT_*` constants). Empty if the text has no name.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect())
}

/// A `kB` field of process `pid`'s `status` (`VmRSS:`); NaN if it cannot be read.
fn status_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            status_value(&s, field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN)
}

/// `cmd` run by `program` with `args` before its own program and arguments (`taskset -c 0
/// node x.mjs`): same environment and directory.
fn wrapped(program: &str, args: &[&str], cmd: &Command) -> Command {
    let mut p = Command::new(program);
    p.args(args).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => p.env(k, v),
            None => p.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        p.current_dir(d);
    }
    p
}

/// `cmd` run by `taskset -c cpu` (same arguments, environment and directory).
pub(crate) fn pinned(cmd: &Command, cpu: usize) -> Command {
    wrapped("taskset", &["-c", &cpu.to_string()], cmd)
}

/// `cmd` run by `setpriv --pdeathsig KILL`: the kernel kills it when the thread that started
/// it ends, so a harness stopped by a signal (`kill PID`, a CI time-out), which runs no
/// destructor, leaves no server behind. The signal survives `taskset`'s and `sh`'s `exec`.
/// Servers are started from the harness's main thread, which lives as long as the process: a
/// server started from a thread that ends early would be killed with it.
fn dies_with_parent(cmd: &Command) -> Command {
    wrapped("setpriv", &["--pdeathsig", "KILL", "--"], cmd)
}

/// The cores this thread may run on (its `Cpus_allowed_list`), lowest first: all of the
/// machine's, unless a cpuset (a container, a cgroup) or an affinity mask set before the
/// harness started leaves it fewer.
pub(crate) fn allowed_cores() -> anyhow::Result<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .context("cannot read /proc/thread-self/status")?;
    let list = status_value(&status, "Cpus_allowed_list:")
        .context("no Cpus_allowed_list in /proc/thread-self/status")?;
    parse_core_list(list)
}

/// The cores of a kernel CPU list (`0-3,8,10-11`), in its order.
fn parse_core_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cores = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("cannot read the CPU list {list:?}");
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<usize>().with_context(bad)?,
                b.parse().with_context(bad)?,
            ),
            None => {
                let c = part.parse::<usize>().with_context(bad)?;
                (c, c)
            }
        };
        if last < first {
            bail!("{}", bad());
        }
        cores.extend(first..=last);
    }
    Ok(cores)
}

/// Where a pinned run puts things (`all --pin`, `peers`): the servers on one core, every thread
/// of `cxauth-bench` itself (the load generator) on another. The first two cores this process
/// may use, not cores 0 and 1: inside a cpuset of cores 2 and 3, `taskset -c 0` would fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cores {
    /// The core of the server under test (and of the raw Argon2id threads).
    pub(crate) server: usize,
    /// The core of the load generator.
    pub(crate) generator: usize,
}

impl Cores {
    /// The first two of `allowed` (see [`allowed_cores`]), or why there are not two.
    pub(crate) fn pick(allowed: &[usize]) -> anyhow::Result<Cores> {
        match allowed {
            [server, generator, ..] => Ok(Cores {
                server: *server,
                generator: *generator,
            }),
            _ => bail!(
                "pinning needs 2 cores, one for the server and one for the load generator; \
                 this process may run on {} only",
                if allowed.is_empty() {
                    "no core".to_owned()
                } else {
                    format!("core {}", allowed[0])
                }
            ),
        }
    }

    /// The pinning, as the report prints it.
    pub(crate) fn describe(&self) -> String {
        let Cores { server, generator } = self;
        format!(
            "servers on core {server} (taskset -c {server}), \
             load generator on core {generator} (taskset -a -pc {generator})"
        )
    }
}

/// `cmd` pinned to core `pin` if given ([`pinned`]), else `cmd` itself.
pub(crate) fn on_core(cmd: Command, pin: Option<usize>) -> Command {
    match pin {
        Some(cpu) => pinned(&cmd, cpu),
        None => cmd,
    }
}

/// The real-time priority `--realtime` gives: above every ordinary task, below the kernel's
/// own real-time threads (which run at 50 and up).
const FIFO_PRIORITY: u32 = 10;

/// SCHED_OTHER, SCHED_FIFO and SCHED_IDLE, as `/proc/…/stat` shows a thread's policy.
const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
#[cfg(test)]
const SCHED_IDLE: u32 = 5;

/// How one thread is scheduled, from its `/proc/PID/task/TID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scheduling {
    tid: u32,
    policy: u32,
    nice: i32,
    rt_priority: u32,
}

/// Every thread of `pid` (those that end while it reads are left out), by thread id.
fn scheduling_of(pid: u32) -> anyhow::Result<Vec<Scheduling>> {
    let mut all = Vec::new();
    for tid in crate::waits::threads_of(pid) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let f = stat_fields(&stat);
        let field = |n: usize| f.get(n).and_then(|v| v.parse::<i64>().ok());
        let (Some(policy), Some(nice), Some(rt)) = (
            field(STAT_POLICY),
            field(STAT_NICE),
            field(STAT_RT_PRIORITY),
        ) else {
            bail!("cannot read the scheduling of thread {tid} of {pid}: {stat}");
        };
        all.push(Scheduling {
            tid,
            policy: u32::try_from(policy)?,
            nice: i32::try_from(nice)?,
            rt_priority: u32::try_from(rt)?,
        });
    }
    all.sort_by_key(|t| t.tid);
    Ok(all)
}

/// Processes whose request-priority threads run under SCHED_FIFO until dropped, then back under
/// the default policy, SCHED_OTHER. Only the threads at the process's own priority are raised
/// (SCHED_OTHER, at its main thread's nice value): a thread the program put below the rest (the
/// SQLite WAL copier under SCHED_IDLE, the hashing threads 10 nice values down) stays below, or
/// the measurement would be of a server scheduled otherwise than in service. Threads that a
/// raised thread starts meanwhile inherit SCHED_FIFO, and go back with the others. The kernel's
/// real-time throttling (`sched_rt_runtime_us`, 95% of each second by default) still leaves
/// the rest of the machine a share.
pub(crate) struct Fifo {
    pids: Vec<u32>,
}

impl Fifo {
    /// Puts the request-priority threads of `pids` under SCHED_FIFO; on an error, none of them
    /// stays there.
    pub(crate) fn start(pids: &[u32]) -> anyhow::Result<Fifo> {
        let mut fifo = Fifo { pids: Vec::new() };
        for &pid in pids {
            // Before the first change: if one fails, the drop puts back what was done.
            fifo.pids.push(pid);
            let threads = scheduling_of(pid)?;
            let own_nice = threads
                .iter()
                .find(|t| t.tid == pid)
                .map(|t| t.nice)
                .with_context(|| format!("no main thread in /proc/{pid}/task"))?;
            for t in threads
                .iter()
                .filter(|t| t.policy == SCHED_OTHER && t.nice == own_nice)
            {
                chrt(pid, t.tid, true)?;
            }
        }
        Ok(fifo)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let threads = match scheduling_of(pid) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cxauth-bench: warning: {e:#}");
                    continue;
                }
            };
            for t in threads
                .iter()
                .filter(|t| t.policy == SCHED_FIFO && t.rt_priority == FIFO_PRIORITY)
            {
                if let Err(e) = chrt(pid, t.tid, false) {
                    eprintln!("cxauth-bench: warning: {e:#}");
                }
            }
        }
    }
}

/// `chrt -p` on thread `tid` of `pid`: SCHED_FIFO at [`FIFO_PRIORITY`], or SCHED_OTHER. A
/// thread that has ended meanwhile is not an error.
fn chrt(pid: u32, tid: u32, fifo: bool) -> anyhow::Result<()> {
    let priority = if fifo { FIFO_PRIORITY } else { 0 };
    let out = Command::new("chrt")
        .arg(if fifo { "-f" } else { "-o" })
        .arg("-p")
        .arg(priority.to_string())
        .arg(tid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run chrt (util-linux)")?;
    if !out.status.success() && Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
        bail!(
            "chrt {} -p {priority} {tid} failed{}: {}",
            if fifo { "-f" } else { "-o" },
            if fifo {
                " (--realtime needs root or CAP_SYS_NICE)"
            } else {
                ""
            },
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Pins every thread of this process (and so everything it starts later) to `cpu`.
pub(crate) fn pin_self(cpu: usize) -> anyhow::Result<()> {
    taskset(&[
        "-a",
        "-pc",
        &cpu.to_string(),
        &std::process::id().to_string(),
    ])
}

/// Runs `taskset` (util-linux) with `args`.
fn taskset(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new("taskset")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    if !st.success() {
        bail!("taskset {} failed: {st}", args.join(" "));
    }
    Ok(())
}

/// Pins the calling thread alone to `cpu` (`taskset -pc` on its thread id), leaving the rest of
/// the process where it is. The raw Argon2id threads use it to hash on the server's core, not
/// on the load generator's core the harness runs on: the two cores of a VM need not be equally
/// fast.
pub(crate) fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    // "PID/task/TID": the thread's own id, which std does not expose.
    let link = std::fs::read_link("/proc/thread-self").context("cannot read /proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .with_context(|| format!("no thread id in {}", link.display()))?
        .to_owned();
    taskset(&["-pc", &cpu.to_string(), &tid])
}

/// Runs the bare hyper "hello" server: the machine's ceiling for an HTTP/1.1 answer over
/// loopback, with the same runtime shape as cxauth (tokio multi-thread, one worker per core).
pub fn hello_main() -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        // In one write, as `cxauth serve` writes it (see `listening_address`).
        let line = format!("cxauth: listening on http://{}\n", listener.local_addr()?);
        std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes())?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_housekeeping_pass_is_read_from_complete_lines_only() {
        use super::first_housekeeping_took_ms as took;
        let line = "2026-12-06T23:42:38.584264Z  INFO cxauth_server::housekeeping: \
                    first housekeeping pass done took_ms=123\n";
        assert_eq!(took(line), Some(123));
        assert_eq!(took(&format!("other line took_ms=9\n{line}")), Some(123));
        // Cut mid-number, or before its newline: not yet.
        assert_eq!(took(&line[..line.len() - 2]), None);
        assert_eq!(took(&line[..line.len() - 1]), None);
        assert_eq!(took("first housekeeping pass done\n"), None);
        assert_eq!(took(""), None);
    }

    #[test]
    fn a_logged_number_is_the_named_field_of_the_line_with_the_message() {
        use super::logged_number;
        let msg = "API token last uses written at stop";
        let text = "… INFO cxauth_server::startup: API token last uses written at stop \
                    written=110000 took_ms=412\n";
        assert_eq!(logged_number(text, msg, "written"), Some(110_000));
        assert_eq!(logged_number(text, msg, "took_ms"), Some(412));
        // A field whose name ends another's is not it; a field the line lacks is none.
        assert_eq!(logged_number(text, msg, "ms"), None);
        assert_eq!(logged_number(text, msg, "tokens"), None);
        // Another message's field is not taken, and the first line that has both is.
        let two = format!("other written=7\n{text}{text}");
        assert_eq!(logged_number(&two, msg, "written"), Some(110_000));
        assert_eq!(logged_number(&text[..text.len() - 1], msg, "took_ms"), None);
    }

    use super::{
        STAT_STATE, ThreadUse, is_debug_build, listening_address, spawn_and_wait, stat_fields,
        status_count, thread_kind, use_by_thread_of,
    };

    #[test]
    fn a_debug_build_is_told_by_its_version_line() {
        assert!(is_debug_build("cxauth 0.1.0 (debug build)\n"));
        assert!(!is_debug_build("cxauth 0.1.0\n"));
        assert!(!is_debug_build(""));
    }

    /// The two counts are told apart: `nonvoluntary_ctxt_switches` also ends in
    /// `voluntary_ctxt_switches`.
    #[test]
    fn switch_counts_are_read_from_their_own_lines() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_count(status, "voluntary_ctxt_switches:"), 12);
        assert_eq!(status_count(status, "nonvoluntary_ctxt_switches:"), 3);
        assert_eq!(status_count("Name:\tx\n", "voluntary_ctxt_switches:"), 0);
        assert_eq!(
            super::status_value(
                "VmRSS:\t   20480 kB\nCpus_allowed_list:\t2-3\n",
                "Cpus_allowed_list:"
            ),
            Some("2-3")
        );
        assert_eq!(thread_kind("cxauth-argon2-1"), "cxauth-argon2");
        assert_eq!(thread_kind("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(thread_kind("log-"), "log-");
    }

    /// Runs `work` on a new thread named `name`, between two [`use_by_thread_of`] readings of
    /// its kind `kind` taken while the thread exists; returns both readings and the seconds
    /// between them.
    fn around_probe(
        name: &str,
        kind: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> (ThreadUse, ThreadUse, f64) {
        use std::sync::mpsc::channel;
        let (started, wait_start) = channel();
        let (go, wait_go) = channel::<()>();
        let (worked, wait_worked) = channel();
        let (done, wait_done) = channel::<()>();
        let probe = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                started.send(()).expect("started");
                wait_go.recv().expect("go");
                work();
                worked.send(()).expect("worked");
                wait_done.recv().expect("done");
            })
            .expect("spawn");
        wait_start.recv().expect("the probe started");
        let t0 = std::time::Instant::now();
        let before = use_by_thread_of(std::process::id())[kind];
        go.send(()).expect("go");
        wait_worked.recv().expect("the probe worked");
        let after = use_by_thread_of(std::process::id())[kind];
        let between = t0.elapsed().as_secs_f64();
        done.send(()).expect("done");
        probe.join().expect("probe");
        (before, after, between)
    }

    /// A thread of this process that sleeps 20 times is found under its kind, having left its
    /// core at least 20 more times than before, most of them as waits. Not all: on a busy
    /// machine the kernel can count a sleep's switch as a preemption (seen in CI, the machine
    /// building and testing: 19 more waits and 1 more preempted).
    #[test]
    fn a_sleeping_thread_shows_its_waits() {
        let (before, after, _) = around_probe("use-probe-3", "use-probe", || {
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        assert!(
            after.waits + after.preempted >= before.waits + before.preempted + 20
                && after.waits >= before.waits + 10,
            "{before:?} then {after:?}"
        );
    }

    /// A thread that spins for 4 ms shows the CPU it used, not whole clock ticks: more than
    /// nothing, and no more than the time between the two readings (`stat`'s ticks would give
    /// 0 or 10 ms).
    #[test]
    fn a_thread_shows_less_than_a_clock_tick_of_cpu() {
        let (before, after, between) = around_probe("cpu-probe-1", "cpu-probe", || {
            let t0 = std::time::Instant::now();
            let mut x = 0u64;
            while t0.elapsed() < std::time::Duration::from_millis(4) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        let used = after.cpu_seconds - before.cpu_seconds;
        assert!(
            used > 0.0 && used <= between,
            "{used} s of CPU between readings {between} s apart"
        );
        assert_eq!(super::schedstat_seconds("1500000 20 3\n"), Some(0.0015));
        assert_eq!(super::schedstat_seconds(""), None);
    }

    /// A start that fails (here: an address that does not parse) stops the child; it is not
    /// left running behind the error. The child writes its pid, then sleeps.
    #[test]
    fn a_failed_start_leaves_nothing_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$1\"; echo 'cxauth: listening on http://nonsense' >&2; exec sleep 30")
            .arg("sh")
            .arg(&pid_file);
        let err = match spawn_and_wait(cmd, "the test child", &dir.path().join("log")) {
            Ok(_) => panic!("a bad address was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("bad listening address"), "{err}");
        let pid = std::fs::read_to_string(&pid_file).expect("the child's pid");
        assert!(
            !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the child {} still runs",
            pid.trim()
        );
    }

    /// A child outlives no harness: started from a thread that then ends without stopping it
    /// (as a harness killed by a signal runs no destructor), the child is killed by the
    /// kernel. Without `setpriv --pdeathsig` it sleeps on for its 30 s.
    #[test]
    fn a_server_dies_with_the_harness_that_started_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let log = dir.path().join("log");
        let starter = {
            let pid_file = pid_file.clone();
            std::thread::spawn(move || {
                let mut cmd = std::process::Command::new("sh");
                cmd.arg("-c")
                    .arg("echo $$ > \"$1\"; echo 'cxauth: listening on http://127.0.0.1:9' >&2; exec sleep 30")
                    .arg("sh")
                    .arg(&pid_file);
                let server = spawn_and_wait(cmd, "the test child", &log).expect("started");
                // No destructor runs, as when a signal ends the harness.
                std::mem::forget(server);
            })
        };
        starter.join().expect("the starting thread");
        let pid = std::fs::read_to_string(&pid_file).expect("the child's pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        // Killed, the child is a zombie (this process, its parent, never reaps it) or gone.
        let dead = || {
            std::fs::read_to_string(&stat)
                .map_or(true, |s| stat_fields(&s).get(STAT_STATE) == Some(&"Z"))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dead() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(dead(), "the child {} still runs", pid.trim());
    }

    /// The scheduling policy of every thread of `pid`, by thread id.
    fn policies(pid: u32) -> Vec<u32> {
        super::scheduling_of(pid)
            .expect("threads")
            .iter()
            .map(|t| t.policy)
            .collect()
    }

    /// `Fifo` puts the threads of a process that run at its own priority under SCHED_FIFO, and
    /// back when dropped; a thread the program put below the others (SCHED_IDLE, or a higher
    /// nice value, as the server's WAL copier and hashing threads) stays as it was throughout.
    /// As root (CI) it must work; otherwise it must refuse with the flag's requirement. Either
    /// way, a start that fails part-way leaves no thread raised. The process is a child of four
    /// threads (a Python one), not this test process, whose other tests' children would inherit
    /// the policy.
    #[test]
    fn fifo_raises_the_threads_at_the_processs_priority_and_ends_with_its_guard() {
        use super::{SCHED_FIFO as F, SCHED_IDLE as I, SCHED_OTHER as O};
        let root = std::fs::read_to_string("/proc/self/status")
            .expect("status")
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        // Threads in order: main, one at the process's priority, one under SCHED_IDLE, one at
        // nice 10 (on Linux both calls change the calling thread only).
        let mut child = super::Running(
            std::process::Command::new("python3")
                .arg("-c")
                .arg(
                    "import os, threading, time\n\
                     ready = threading.Barrier(4)\n\
                     def plain(): ready.wait(); time.sleep(30)\n\
                     def idle(): os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)); ready.wait(); time.sleep(30)\n\
                     def low(): os.setpriority(os.PRIO_PROCESS, 0, 10); ready.wait(); time.sleep(30)\n\
                     for f in (plain, idle, low): threading.Thread(target=f).start(); time.sleep(0.05)\n\
                     ready.wait()\n\
                     print('ready', flush=True)\n\
                     time.sleep(30)",
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.0.stdout.take().expect("stdout")),
            &mut ready,
        )
        .expect("ready");
        let pid = child.0.id();
        let nice = |pid| -> Vec<i32> {
            super::scheduling_of(pid)
                .expect("threads")
                .iter()
                .map(|t| t.nice)
                .collect()
        };
        assert_eq!(policies(pid), [O, O, I, O]);
        assert_eq!(nice(pid), [0, 0, 0, 10]);
        match super::Fifo::start(&[pid]) {
            Ok(fifo) => {
                assert_eq!(policies(pid), [F, F, I, O]);
                drop(fifo);
                assert_eq!(policies(pid), [O, O, I, O]);
                assert_eq!(nice(pid), [0, 0, 0, 10]);
            }
            Err(e) => {
                assert!(!root, "refused as root: {e:#}");
                assert!(format!("{e:#}").contains("CAP_SYS_NICE"), "{e:#}");
                assert_eq!(policies(pid), [O, O, I, O]);
            }
        }
        // A failure part-way (here a second process that does not exist; as root, the only
        // way to make it fail) puts back what was already raised: no thread stays under FIFO.
        assert!(super::Fifo::start(&[pid, crate::waits::NO_SUCH_PID]).is_err());
        assert_eq!(policies(pid), [O, O, I, O]);
        assert_eq!(nice(pid), [0, 0, 0, 10]);
    }

    /// `pin_this_thread` moves the calling thread only: the thread that started it keeps its
    /// cores (with `taskset -a`, or on the process id, both would move). The core is the last
    /// one this test may use, which under a cpuset need not be `available_parallelism() - 1`.
    #[test]
    fn pinning_a_thread_leaves_the_others_where_they_were() {
        let before = super::allowed_cores().expect("allowed cores");
        let last = *before.last().expect("a core in Cpus_allowed_list");
        let pinned = std::thread::spawn(move || {
            super::pin_this_thread(last).expect("pin");
            super::allowed_cores().expect("allowed cores")
        })
        .join()
        .expect("thread");
        assert_eq!(pinned, [last]);
        assert_eq!(super::allowed_cores().expect("allowed cores"), before);
    }

    /// The kernel's CPU lists as `Cpus_allowed_list` prints them, and what is not one.
    #[test]
    fn core_lists_are_read_as_the_kernel_writes_them() {
        assert_eq!(super::parse_core_list("0-1").expect("valid"), [0, 1]);
        assert_eq!(super::parse_core_list("3").expect("valid"), [3]);
        assert_eq!(
            super::parse_core_list("2-3,8,10-11").expect("valid"),
            [2, 3, 8, 10, 11]
        );
        assert_eq!(
            super::parse_core_list("").expect("valid"),
            Vec::<usize>::new()
        );
        for bad in ["a", "3-1", "1-", "-1", "1,,x"] {
            assert!(super::parse_core_list(bad).is_err(), "{bad}");
        }
    }

    /// A pinned run takes the first two cores it may use, whichever they are, and says why it
    /// cannot pin with fewer.
    #[test]
    fn a_pinned_run_takes_the_first_two_allowed_cores() {
        use super::Cores;
        assert_eq!(
            Cores::pick(&[0, 1]).expect("valid"),
            Cores {
                server: 0,
                generator: 1
            }
        );
        assert_eq!(
            Cores::pick(&[2, 3, 8]).expect("valid"),
            Cores {
                server: 2,
                generator: 3
            }
        );
        let one = format!("{:#}", Cores::pick(&[5]).expect_err("one core"));
        assert!(
            one.contains("needs 2 cores") && one.contains("core 5 only"),
            "{one}"
        );
        assert!(Cores::pick(&[]).is_err());
        assert_eq!(
            Cores::pick(&[2, 3]).expect("valid").describe(),
            "servers on core 2 (taskset -c 2), load generator on core 3 (taskset -a -pc 3)"
        );
    }

    /// A thread's name may hold spaces and parentheses (`comm` is set by the program):
    /// fields are counted from the last `)`.
    #[test]
    fn stat_fields_start_after_the_whole_name() {
        let stat = "42 (a) (b c)) S 1 42 42 0 -1 4194560 0 0 0 0 7 3";
        let f = stat_fields(stat);
        assert_eq!(f[STAT_STATE], "S");
        assert_eq!((f[super::STAT_UTIME], f[super::STAT_STIME]), ("7", "3"));
        assert!(stat_fields("no name").is_empty());
    }

    #[test]
    fn only_a_whole_listening_line_gives_the_address() {
        let line = "cxauth: listening on http://127.0.0.1:43121\n";
        assert_eq!(
            listening_address(&format!("starting\n{line}more\n")),
            Some("127.0.0.1:43121")
        );
        // Caught half written: no address yet, however far the write got.
        for cut in 1..line.len() {
            assert_eq!(listening_address(&line[..cut]), None, "{:?}", &line[..cut]);
        }
        assert_eq!(listening_address("starting\n"), None);
    }
}
