//! `--trace-waits`: during each open-loop (half-load) measurement, the kernel's scheduler
//! events are recorded (tracefs: `sched_switch`, `sched_wakeup`), and afterwards every time a
//! thread of the server or of the load generator was ready to run but waited at least
//! [`WAIT_MS`] for its core is listed with what ran on that core meanwhile.
//!
//! Why: at half load the server answers in microseconds (its own access log says so), yet the
//! client's p99 reaches milliseconds. The waits name where those milliseconds go: another
//! program of the machine, a kernel thread, or `idle` (the core ran nothing although the
//! thread was ready: on a VM, the hypervisor had not yet run the virtual CPU again).
//!
//! The kernel's ring buffer is only read after the row, so recording costs the row the
//! kernel's write of each event (not measured on its own) and no wake-ups of a reader. Needs
//! root (tracefs).

use anyhow::Context;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A wait counts from this long (ms): the `api-token` target is a p99 under 1 ms.
pub(crate) const WAIT_MS: f64 = 0.5;

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENTS: [&str; 3] = [
    "events/sched/sched_switch/enable",
    "events/sched/sched_wakeup/enable",
    "events/sched/sched_wakeup_new/enable",
];
/// Per-CPU ring buffer: a half-load row of ~35k answers/s for 9 s writes ~1.5M events.
const BUFFER_KB: &str = "131072";
/// Threads whose names the kernel keeps (some kernels keep only 128 by default).
const CMDLINES: &str = "8192";

/// Scheduler events recording while it lives; recording stops and every tracing setting it
/// changed is put back as it found it when it drops, also when the row fails.
pub(crate) struct WaitTrace {
    root: PathBuf,
    /// The settings changed (file under `root`) and the values they had, in the order set.
    saved: Vec<(&'static str, String)>,
}

/// tracefs held by this run of the harness: an exclusive `flock` on tracefs' own directory,
/// which the kernel lets go when the process ends, however it ends. Traces are started through
/// it ([`TracefsClaim::start`]), so only the holder can start one.
///
/// Why: tracefs is one per machine. Two runs tracing at once would each clear the other's ring
/// buffer at its rows' start and put the other's settings back at their end, so both would
/// report waits from a trace they did not fully record. The second run is refused at its start.
pub(crate) struct TracefsClaim {
    root: PathBuf,
    _dir: std::fs::File,
}

impl TracefsClaim {
    /// Claims the machine's tracefs for as long as the claim lives.
    pub(crate) fn take() -> anyhow::Result<TracefsClaim> {
        TracefsClaim::take_at(Path::new(TRACEFS))
    }

    /// [`TracefsClaim::take`] for the tracefs at `root`.
    fn take_at(root: &Path) -> anyhow::Result<TracefsClaim> {
        let dir = std::fs::File::open(root).with_context(|| needs(root))?;
        match dir.try_lock() {
            Ok(()) => Ok(TracefsClaim {
                root: root.to_owned(),
                _dir: dir,
            }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another run with --trace-waits holds {} (tracefs is one per machine); \
                 wait for it to end",
                root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", root.display()))
            }
        }
    }

    /// Clears the ring buffer and starts recording.
    pub(crate) fn start(&self) -> anyhow::Result<WaitTrace> {
        WaitTrace::start_in(&self.root).with_context(|| needs(&self.root))
    }
}

/// What `--trace-waits` needs, for an error at `root`.
fn needs(root: &Path) -> String {
    format!(
        "--trace-waits needs root and tracefs mounted at {r} (as root: mount -t tracefs nodev {r})",
        r = root.display()
    )
}

impl WaitTrace {
    /// Starts recording on the tracefs at `root`: see [`TracefsClaim::start`].
    fn start_in(root: &Path) -> anyhow::Result<WaitTrace> {
        // Which process each thread belonged to, kept by the kernel (`saved_tgids`,
        // `saved_cmdlines`) also for threads gone by the time the trace is read.
        let mut settings = vec![
            ("tracing_on", "0"),
            ("buffer_size_kb", BUFFER_KB),
            ("options/record-tgid", "1"),
            ("saved_cmdlines_size", CMDLINES),
        ];
        settings.extend(EVENTS.iter().map(|e| (*e, "1")));
        settings.push(("tracing_on", "1"));
        let mut trace = WaitTrace {
            root: root.to_owned(),
            saved: Vec::new(),
        };
        for (file, value) in settings {
            if !trace.saved.iter().any(|(f, _)| *f == file) {
                let old = std::fs::read_to_string(root.join(file))
                    .with_context(|| format!("cannot read {}", root.join(file).display()))?;
                trace.saved.push((file, setting(&old)));
            }
            trace.write(file, value)?;
            if file == "buffer_size_kb" {
                trace.write("trace", "")?;
            }
        }
        Ok(trace)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.root.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("cannot write {value:?} to {}", path.display()))
    }

    /// Stops recording and summarizes the waits of `groups` (a name and its thread ids).
    pub(crate) fn finish(self, groups: &[(&str, HashSet<u32>)]) -> anyhow::Result<String> {
        self.write("tracing_on", "0")?;
        let text = std::fs::read_to_string(self.root.join("trace"))
            .context("cannot read the scheduler trace")?;
        let lost = overruns(&self.root);
        let (waits, names) = waits(&text);
        let processes = processes(&self.root);
        let task = |tid: u32| named(tid, &names, &processes);
        let thread = |tid: u32| thread_name(tid, &names);
        let mut parts: Vec<String> = groups
            .iter()
            .map(|(group, tids)| summary(group, &waits, tids, thread, task))
            .collect();
        if lost > 0 {
            parts.push(format!("{lost} events lost to a full buffer"));
        }
        Ok(parts.join("; "))
    }
}

/// The value to write back for a setting read as `text`. Before the ring buffer's first use,
/// `buffer_size_kb` reads "7 (expanded: 1408)": 1408 is the size it had.
fn setting(text: &str) -> String {
    match text.split_once("(expanded: ") {
        Some((_, rest)) => rest.split(')').next().unwrap_or_default().trim().to_owned(),
        None => text.trim().to_owned(),
    }
}

impl Drop for WaitTrace {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        let _ = self.write("trace", "");
        // In reverse: `tracing_on` goes back last, once the events are as they were.
        for (file, old) in self.saved.iter().rev() {
            let _ = self.write(file, old);
        }
    }
}

/// A process id no process has (the kernel hands out at most 2^22), for tests that need one
/// that /proc does not know.
#[cfg(test)]
pub(crate) const NO_SUCH_PID: u32 = 4_294_967_000;

/// The ids of every thread of process `pid` now.
pub(crate) fn threads_of(pid: u32) -> HashSet<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Each traced thread's process name, from the kernel's `saved_tgids` ("tid tgid" lines) and
/// `saved_cmdlines` ("pid name" lines; a process's name is its first thread's).
fn processes(root: &Path) -> HashMap<u32, String> {
    let pairs = |file: &str| -> Vec<(u32, String)> {
        std::fs::read_to_string(root.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (id, rest) = l.split_once(' ')?;
                Some((id.parse().ok()?, rest.trim().to_owned()))
            })
            .collect()
    };
    let commands: HashMap<u32, String> = pairs("saved_cmdlines").into_iter().collect();
    pairs("saved_tgids")
        .into_iter()
        .filter_map(|(tid, tgid)| {
            let tgid: u32 = tgid.parse().ok()?;
            // A process whose first thread slept through the trace has no saved name: read
            // it from /proc while the process runs.
            let process = commands.get(&tgid).cloned().or_else(|| {
                let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok()?;
                Some(comm.trim().to_owned())
            })?;
            Some((tid, process))
        })
        .collect()
}

/// A thread's name as the trace saw it, or its id if the trace never named it.
fn thread_name(tid: u32, names: &HashMap<u32, String>) -> String {
    names.get(&tid).cloned().unwrap_or_else(|| tid.to_string())
}

/// A task's name in the report: `idle`, or its thread's name from the trace, followed by its
/// process's when that differs: several programs have threads named `tokio-rt-worker`.
fn named(tid: u32, names: &HashMap<u32, String>, processes: &HashMap<u32, String>) -> String {
    if tid == 0 {
        return "idle".to_owned();
    }
    let thread = thread_name(tid, names);
    match processes.get(&tid) {
        Some(p) if *p != thread => format!("{thread} ({p})"),
        _ => thread,
    }
}

/// Events the kernel overwrote because the buffer was full (their waits are missing).
fn overruns(root: &Path) -> u64 {
    let Ok(cpus) = std::fs::read_dir(root.join("per_cpu")) else {
        return 0;
    };
    cpus.filter_map(|c| std::fs::read_to_string(c.ok()?.path().join("stats")).ok())
        .flat_map(|stats| {
            stats
                .lines()
                .filter_map(|l| l.strip_prefix("overrun:")?.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// One wait: thread `tid` was ready from `from` and ran at `to` (seconds, trace clock), and
/// `meanwhile` ran on its core (thread id → seconds; 0 when nothing did).
#[derive(Debug)]
struct Wait {
    tid: u32,
    from: f64,
    to: f64,
    meanwhile: BTreeMap<u32, f64>,
}

/// One parsed line: a context switch on `cpu`, or a wake-up.
#[derive(Debug, PartialEq)]
enum Event<'a> {
    Switch {
        cpu: usize,
        at: f64,
        prev: u32,
        prev_ready: bool,
        next: u32,
        next_name: &'a str,
    },
    Wakeup {
        at: f64,
        tid: u32,
    },
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

/// Parses tracefs's text lines, e.g.
/// `  name-12  [001] d..2.  1023.113919: sched_switch: prev_comm=a b prev_pid=12 prev_prio=120
/// prev_state=R ==> next_comm=c next_pid=13 next_prio=120`.
fn parse(line: &str) -> Option<Event<'_>> {
    let (head, body) = line.split_once(": sched_")?;
    let at: f64 = head.rsplit(' ').next()?.parse().ok()?;
    if let Some(body) = body.strip_prefix("switch: ") {
        let cpu = head.rsplit_once('[')?.1.split_once(']')?.0.parse().ok()?;
        let (prev, next) = body.split_once(" ==> ")?;
        let next_name = next
            .strip_prefix("next_comm=")?
            .rsplit_once(" next_pid=")?
            .0;
        Some(Event::Switch {
            cpu,
            at,
            prev: field(prev, " prev_pid=")?.parse().ok()?,
            // R (or R+): preempted, so still ready to run.
            prev_ready: field(prev, " prev_state=")?.starts_with('R'),
            next: field(next, " next_pid=")?.parse().ok()?,
            next_name,
        })
    } else if body.starts_with("wakeup") {
        Some(Event::Wakeup {
            at,
            tid: field(body, " pid=")?.parse().ok()?,
        })
    } else {
        None
    }
}

/// Every wait of at least [`WAIT_MS`] in `trace`, of any thread, and the threads' names.
fn waits(trace: &str) -> (Vec<Wait>, HashMap<u32, String>) {
    // Per core, the task on it and since when, and the finished stretches (start, end, tid).
    let mut on_core: HashMap<usize, (u32, f64)> = HashMap::new();
    let mut stretches: HashMap<usize, Vec<(f64, f64, u32)>> = HashMap::new();
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut ready: HashMap<u32, f64> = HashMap::new();
    let mut found: Vec<(usize, Wait)> = Vec::new();
    for event in trace.lines().filter_map(parse) {
        match event {
            Event::Wakeup { at, tid } => {
                ready.entry(tid).or_insert(at);
            }
            Event::Switch {
                cpu,
                at,
                prev,
                prev_ready,
                next,
                next_name,
            } => {
                if let Some((task, since)) = on_core.insert(cpu, (next, at)) {
                    stretches.entry(cpu).or_default().push((since, at, task));
                }
                // A thread switched out was running, so a wake-up recorded since its last
                // switch-in (a wake-up of a running thread, also of one already running when
                // the trace began) started no wait; a preempted thread is ready from now.
                ready.remove(&prev);
                if prev_ready && prev != 0 {
                    ready.insert(prev, at);
                }
                if next != 0 {
                    names.entry(next).or_insert_with(|| next_name.to_owned());
                }
                if let Some(from) = ready.remove(&next)
                    && (at - from) * 1e3 >= WAIT_MS
                {
                    found.push((
                        cpu,
                        Wait {
                            tid: next,
                            from,
                            to: at,
                            meanwhile: BTreeMap::new(),
                        },
                    ));
                }
            }
        }
    }
    for (cpu, wait) in &mut found {
        let Some(list) = stretches.get(cpu) else {
            continue;
        };
        // The stretches are in time order: start at the first that ends after the wait began.
        let first = list.partition_point(|&(_, end, _)| end <= wait.from);
        for &(start, end, task) in list[first..].iter().take_while(|s| s.0 < wait.to) {
            let overlap = end.min(wait.to) - start.max(wait.from);
            if overlap > 0.0 && task != wait.tid {
                *wait.meanwhile.entry(task).or_default() += overlap;
            }
        }
    }
    (found.into_iter().map(|(_, w)| w).collect(), names)
}

/// The waits of one process's threads (`tids`), by kind of thread (its name), the kinds that
/// waited longest first: "server: tokio-rt-worker 12 waits, 31.0 ms (longest 4.2 ms; meanwhile
/// kdamond.0 12.1, idle 9.0, …), log-writer …". `thread` names a waiting thread, `task` what
/// ran meanwhile.
fn summary(
    group: &str,
    waits: &[Wait],
    tids: &HashSet<u32>,
    thread: impl Fn(u32) -> String,
    task: impl Fn(u32) -> String,
) -> String {
    // Per kind of waiting thread: waits, seconds waited, longest, and seconds per other task.
    type Kind = (usize, f64, f64, BTreeMap<String, f64>);
    let mut kinds: BTreeMap<String, Kind> = BTreeMap::new();
    for w in waits.iter().filter(|w| tids.contains(&w.tid)) {
        let k = kinds.entry(thread(w.tid)).or_default();
        k.0 += 1;
        k.1 += w.to - w.from;
        k.2 = k.2.max(w.to - w.from);
        for (&t, s) in &w.meanwhile {
            *k.3.entry(task(t)).or_default() += s;
        }
    }
    if kinds.is_empty() {
        return format!("{group}: none");
    }
    let mut kinds: Vec<(String, Kind)> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    let parts: Vec<String> = kinds
        .into_iter()
        .map(|(kind, (n, total, longest, meanwhile))| {
            let mut meanwhile: Vec<(String, f64)> = meanwhile.into_iter().collect();
            meanwhile.sort_by(|a, b| b.1.total_cmp(&a.1));
            let meanwhile: Vec<String> = meanwhile
                .iter()
                .take(4)
                .map(|(t, s)| format!("{t} {:.1}", s * 1e3))
                .collect();
            format!(
                "{kind} {n} waits, {:.1} ms (longest {:.1}; meanwhile {})",
                total * 1e3,
                longest * 1e3,
                meanwhile.join(", ")
            )
        })
        .collect();
    format!("{group} (ms): {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(cpu: usize, at: f64, prev: (&str, u32, &str), next: (&str, u32)) -> String {
        format!(
            "  {}-{} [{cpu:03}] d..2. {at:.6}: sched_switch: prev_comm={} prev_pid={} \
             prev_prio=120 prev_state={} ==> next_comm={} next_pid={} next_prio=120",
            prev.0, prev.1, prev.0, prev.1, prev.2, next.0, next.1
        )
    }

    fn wakeup(at: f64, name: &str, tid: u32, cpu: usize) -> String {
        format!(
            "  x-1 [001] d..2. {at:.6}: sched_wakeup: comm={name} pid={tid} prio=120 \
             target_cpu={cpu:03}"
        )
    }

    /// A worker woken at 1.000 runs at 1.003: a kernel thread ran 2 ms of it and the core was
    /// idle for 1 ms. A wake-up of a running thread and a short wait count for nothing.
    #[test]
    fn a_wait_is_charged_to_what_ran_on_its_core() {
        let trace = [
            switch(0, 0.990, ("worker", 7, "S"), ("swapper/0", 0)),
            switch(0, 0.999, ("swapper/0", 0, "R"), ("kdamond.0", 83)),
            wakeup(1.000, "worker", 7, 0),
            wakeup(1.0005, "kdamond.0", 83, 0),
            switch(0, 1.002, ("kdamond.0", 83, "S"), ("swapper/0", 0)),
            switch(0, 1.003, ("swapper/0", 0, "R"), ("worker", 7)),
            // Preempted at 1.004, back at 1.0042: 0.2 ms, under the threshold.
            switch(0, 1.004, ("worker", 7, "R"), ("log writer", 9)),
            switch(0, 1.0042, ("log writer", 9, "S"), ("worker", 7)),
            // kdamond's next run: its wake-up at 1.0005 came while it ran, so no wait.
            switch(0, 1.010, ("worker", 7, "S"), ("kdamond.0", 83)),
            "# a comment line, and a line of another event:".to_owned(),
            "  x-1 [000] d..2. 1.5: sched_migrate_task: comm=a pid=1".to_owned(),
        ]
        .join("\n");
        let (waits, names) = waits(&trace);
        assert_eq!(waits.len(), 1, "{waits:?}");
        let w = &waits[0];
        assert_eq!(w.tid, 7);
        assert!((w.to - w.from - 0.003).abs() < 1e-9, "{w:?}");
        let ms = |tid: u32| (w.meanwhile.get(&tid).copied().unwrap_or(0.0) * 1e3 * 10.0).round();
        assert_eq!((ms(83), ms(0)), (20.0, 10.0), "{w:?}");
        let name = |tid: u32| match tid {
            0 => "idle".to_owned(),
            t => names[&t].clone(),
        };
        let line = summary("server", &waits, &HashSet::from([7]), name, name);
        assert_eq!(
            line,
            "server (ms): worker 1 waits, 3.0 ms (longest 3.0; meanwhile kdamond.0 2.0, idle 1.0)"
        );
        assert_eq!(
            summary("other", &waits, &HashSet::from([8]), name, name),
            "other: none"
        );
    }

    /// A thread already running when the trace began is woken (the wake-up of a running
    /// thread), then sleeps, and runs again 500 ms later: that is no wait. (It was counted as
    /// one, a 500 ms wait of the checkpointer, in a run of the eighteenth round.)
    #[test]
    fn a_wake_up_before_the_first_switch_of_a_running_thread_is_no_wait() {
        let trace = [
            wakeup(1.000, "checkpoint", 5, 0),
            switch(0, 1.001, ("checkpoint", 5, "S"), ("worker", 7)),
            switch(0, 1.501, ("worker", 7, "S"), ("checkpoint", 5)),
        ]
        .join("\n");
        let (waits, _) = waits(&trace);
        assert!(waits.is_empty(), "{waits:?}");
    }

    /// A thread is named with its process when the two differ; the idle task is `idle`.
    #[test]
    fn threads_are_named_with_their_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Thread 8's process does not exist, so that no process of the host's (read from /proc
        // when the trace has no name) can name it.
        std::fs::write(
            dir.path().join("saved_tgids"),
            format!("7 5\n5 5\n8 {NO_SUCH_PID}\n"),
        )
        .expect("tgids");
        std::fs::write(dir.path().join("saved_cmdlines"), "5 cxauth\n3 sh\n").expect("cmdlines");
        let processes = processes(dir.path());
        let names = HashMap::from([
            (7, "log-writer".to_owned()),
            (5, "cxauth".to_owned()),
            (8, "tokio-rt-worker".to_owned()),
        ]);
        let name = |tid| named(tid, &names, &processes);
        assert_eq!(name(7), "log-writer (cxauth)");
        assert_eq!(name(5), "cxauth");
        // Its process's name is not known: the thread's alone.
        assert_eq!(name(8), "tokio-rt-worker");
        assert_eq!(name(0), "idle");
    }

    /// A fake tracefs: every setting the trace changes, with the values a fresh kernel has.
    fn fake_tracefs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("options")).expect("options");
        let mut files = vec![
            ("tracing_on", "1\n"),
            ("buffer_size_kb", "7 (expanded: 1408)\n"),
            ("options/record-tgid", "0\n"),
            ("saved_cmdlines_size", "128\n"),
            ("trace", "# old events\n"),
        ];
        files.extend(EVENTS.iter().map(|e| (*e, "0\n")));
        for (file, text) in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).expect("read")
    }

    /// A second claim is refused while the first lives, and granted once it is dropped.
    #[test]
    fn one_run_at_a_time_holds_tracefs() {
        let root = fake_tracefs();
        let first = TracefsClaim::take_at(root.path()).expect("first claim");
        let refused = TracefsClaim::take_at(root.path())
            .err()
            .expect("second claim refused");
        assert!(
            format!("{refused:#}").contains("another run"),
            "{refused:#}"
        );
        drop(first);
        TracefsClaim::take_at(root.path()).expect("claimed again once let go");
    }

    /// Eight runs claiming tracefs at the same moment: exactly one holds it, and it can start
    /// a trace.
    #[test]
    fn of_runs_claiming_at_once_one_holds_tracefs() {
        let root = fake_tracefs();
        let at_once = std::sync::Barrier::new(8);
        let claimed = std::sync::Barrier::new(8);
        let holders: Vec<bool> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        at_once.wait();
                        let claim = TracefsClaim::take_at(root.path());
                        // Every claim is held until all have tried.
                        claimed.wait();
                        claim
                            .map(|c| drop(c.start().expect("the holder starts a trace")))
                            .is_ok()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect()
        });
        assert_eq!(holders.iter().filter(|h| **h).count(), 1, "{holders:?}");
    }

    /// Recording turns the events on, and dropping the trace puts back every value it found
    /// (the buffer's expanded size, not the 7 KiB it reads before its first use).
    #[test]
    fn the_settings_go_back_as_they_were() {
        let dir = fake_tracefs();
        let trace = WaitTrace::start_in(dir.path()).expect("start");
        assert_eq!(read(dir.path(), "tracing_on"), "1");
        assert_eq!(read(dir.path(), "buffer_size_kb"), BUFFER_KB);
        assert_eq!(read(dir.path(), "options/record-tgid"), "1");
        assert_eq!(read(dir.path(), "saved_cmdlines_size"), CMDLINES);
        assert_eq!(read(dir.path(), "trace"), "");
        for e in EVENTS {
            assert_eq!(read(dir.path(), e), "1", "{e}");
        }
        drop(trace);
        assert_eq!(read(dir.path(), "tracing_on"), "1");
        assert_eq!(read(dir.path(), "buffer_size_kb"), "1408");
        assert_eq!(read(dir.path(), "options/record-tgid"), "0");
        assert_eq!(read(dir.path(), "saved_cmdlines_size"), "128");
        for e in EVENTS {
            assert_eq!(read(dir.path(), e), "0", "{e}");
        }
    }

    /// A start that fails half-way (here: an event missing) puts back what it had changed.
    #[test]
    fn a_failed_start_puts_back_what_it_changed() {
        let dir = fake_tracefs();
        std::fs::remove_file(dir.path().join(EVENTS[2])).expect("remove");
        let err = WaitTrace::start_in(dir.path())
            .err()
            .expect("a missing event is an error");
        assert!(format!("{err:#}").contains("sched_wakeup_new"), "{err:#}");
        assert_eq!(read(dir.path(), "tracing_on"), "1");
        assert_eq!(read(dir.path(), "buffer_size_kb"), "1408");
        assert_eq!(read(dir.path(), EVENTS[0]), "0");
    }

    /// Task names may hold spaces, digits and `=`: the fields are found after them.
    #[test]
    fn names_with_spaces_parse() {
        let line = switch(1, 2.5, ("opt cgu.0", 12, "R+"), ("a=b c", 13));
        let expected = Event::Switch {
            cpu: 1,
            at: 2.5,
            prev: 12,
            prev_ready: true,
            next: 13,
            next_name: "a=b c",
        };
        assert_eq!(parse(&line), Some(expected), "{line}");
        let line = wakeup(3.25, "x y", 14, 0);
        assert_eq!(parse(&line), Some(Event::Wakeup { at: 3.25, tid: 14 }));
    }
}
