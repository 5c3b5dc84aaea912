//! Where `cxauth serve` writes its log lines: into a buffer in memory, which a thread of its own
//! writes to stderr a batch at a time.
//!
//! Why not straight to stderr: stderr is unbuffered, so every line was its own `write` system
//! call on the thread answering the request. At `RUST_LOG=info` each request logs one line, and
//! that call cost ~2 µs of a `/healthz` answer's ~25 µs (perf, a release server pinned to one
//! core). Batched, a busy server makes a few hundred writes a second, not one per request.
//!
//! Why not `tracing-appender`'s non-blocking writer: it hands every line to its thread over a
//! channel, and a sleeping thread is woken (a futex call, and on a busy core a context switch)
//! for each line that finds it idle. Here only the first line after a write wakes the thread;
//! it then lets [`GATHER`] pass so that the lines of the next few milliseconds go out together.
//!
//! What this costs, and how it is bounded:
//! - A line reaches stderr at most ~[`GATHER`] after it was logged. A process killed with
//!   `kill -9` loses the lines of those last milliseconds; everything durable (sessions, tokens,
//!   the audit trail) is in the database, not in the log. On a normal exit, and before a panic
//!   message is printed, the buffer is written first ([`Guard`], [`install`]).
//! - The buffer holds at most [`CAP`] bytes. A thread that logs into a full buffer waits until
//!   it has been written, as it waited for a slow stderr before: lines are never dropped, and a
//!   stalled log reader cannot make memory grow.
//! - Lines are never torn: the formatter hands over each line in one `write`, appended whole
//!   under one lock.
//!
//! When stderr is a regular file (`cxauth serve 2>>cxauth.log`), the file's unwritten pages are
//! also kept few ([`Writeback`]): left to itself the kernel writes a log back only once its
//! lines are ~30 s old, and a busy server's log had 40–400 MB of them waiting by then. While
//! that much waited, refreshes, whose commits each wait for the disk, slowed down: at half load
//! their p99 was 28–67 ms, and 4.5–9.1 ms with the log written back a MiB at a time
//! (docs/benchmarks-history.md, "Dec 7, thirty-eighth round").

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread lets lines gather after the first one arrives.
pub const GATHER: Duration = Duration::from_millis(5);

/// The most the buffer holds before loggers wait for the writer thread.
pub const CAP: usize = 1 << 20;

/// How much log a regular file takes between two requests to the kernel to start writing it to
/// disk ([`Writeback`]).
pub const WRITEBACK_STEP: u64 = 1 << 20;

/// The sink shared by the loggers ([`Sink::make_writer`]) and the writer thread.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

struct Shared {
    lines: Mutex<Lines>,
    /// The writer thread waits here for the first line, or for a full buffer or closing.
    to_writer: Condvar,
    /// Loggers wait here while the buffer is full.
    to_loggers: Condvar,
    /// The destination. Locked by the writer thread for each batch and, once closed, by every
    /// logger for its own line.
    out: Mutex<Box<dyn Write + Send>>,
    gather: Duration,
    cap: usize,
    /// Times the kernel was asked to start writing the file back (tests read it).
    advised: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    closed: bool,
}

/// Writes what is left and stops the writer thread when dropped. Later lines go straight to
/// the destination.
#[must_use = "dropping the guard stops batching; keep it until the process ends"]
pub struct Guard {
    sink: Sink,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A logger that panicked while appending left whole bytes behind; keep logging.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `m` locked; when `wait` is false, only if nobody holds it now.
fn lock_unless_busy<T>(m: &Mutex<T>, wait: bool) -> Option<MutexGuard<'_, T>> {
    if wait {
        return Some(lock(m));
    }
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

impl Sink {
    /// A sink writing to stderr, and keeping its unwritten pages few if it is a regular file.
    pub fn stderr() -> io::Result<(Sink, Guard)> {
        use std::os::fd::AsFd as _;
        let writeback = Writeback::of(io::stderr().as_fd(), WRITEBACK_STEP);
        Sink::with_writeback(Box::new(io::stderr()), writeback, GATHER, CAP)
    }

    /// A sink writing to `out`, letting lines gather for `gather`, holding at most `cap` bytes.
    #[cfg(test)]
    pub fn new(
        out: Box<dyn Write + Send>,
        gather: Duration,
        cap: usize,
    ) -> io::Result<(Sink, Guard)> {
        Sink::with_writeback(out, None, gather, cap)
    }

    /// [`Sink::new`], with `writeback` told of what the writer thread writes to `out` (the
    /// same file).
    pub fn with_writeback(
        out: Box<dyn Write + Send>,
        writeback: Option<Writeback>,
        gather: Duration,
        cap: usize,
    ) -> io::Result<(Sink, Guard)> {
        let sink = Sink {
            shared: Arc::new(Shared {
                lines: Mutex::new(Lines::default()),
                to_writer: Condvar::new(),
                to_loggers: Condvar::new(),
                out: Mutex::new(out),
                gather,
                cap: cap.max(1),
                advised: Arc::default(),
            }),
        };
        let shared = Arc::clone(&sink.shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || shared.run(writeback))?;
        Ok((
            sink.clone(),
            Guard {
                sink,
                thread: Some(thread),
            },
        ))
    }

    /// Appends one line (or any bytes the formatter hands over in one call).
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let s = &*self.shared;
        let mut lines = lock(&s.lines);
        while lines.buf.len() >= s.cap && !lines.closed {
            lines = s
                .to_loggers
                .wait(lines)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if lines.closed {
            drop(lines);
            let mut out = lock(&s.out);
            out.write_all(bytes)?;
            return out.flush();
        }
        let was_empty = lines.buf.is_empty();
        lines.buf.extend_from_slice(bytes);
        if was_empty || lines.buf.len() >= s.cap {
            s.to_writer.notify_one();
        }
        Ok(())
    }

    /// Writes everything buffered now, on the calling thread. While a panic is being reported
    /// (`wait` false) it does not wait for a lock whose holder may be the panicking thread.
    fn flush_now(&self, wait: bool) {
        let s = &*self.shared;
        // The writer thread's order: the lines, then the destination, taken before the lines
        // are let go, so batches reach it in the order they were logged. (The other order
        // deadlocked against the writer thread.) If either is busy and we may not wait, its
        // holder writes the lines anyway.
        let Some(mut lines) = lock_unless_busy(&s.lines, wait) else {
            return;
        };
        let Some(mut out) = lock_unless_busy(&s.out, wait) else {
            return;
        };
        let batch = std::mem::take(&mut lines.buf);
        drop(lines);
        s.to_loggers.notify_all();
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

impl Shared {
    /// The writer thread: waits for a first line, lets more gather, writes them in one call;
    /// then, past each step of `writeback`, has its file written back.
    fn run(&self, writeback: Option<Writeback>) {
        let mut writeback = writeback.and_then(|w| w.start(Arc::clone(&self.advised)));
        let mut batch = Vec::new();
        loop {
            let mut lines = lock(&self.lines);
            while lines.buf.is_empty() && !lines.closed {
                lines = self
                    .to_writer
                    .wait(lines)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if !lines.closed && lines.buf.len() < self.cap {
                // Woken early only by a full buffer or by closing.
                lines = self
                    .to_writer
                    .wait_timeout(lines, self.gather)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut lines.buf, &mut batch);
            let closed = lines.closed;
            // The destination is taken before the buffer is let go, so a line appended after
            // this batch (or written straight through once closed) cannot overtake it.
            let mut out = lock(&self.out);
            drop(lines);
            self.to_loggers.notify_all();
            let written = batch.len();
            if !batch.is_empty() {
                // Nowhere to report a failing stderr: the lines are dropped, as eprintln!'s are.
                let _ = out.write_all(&batch);
                let _ = out.flush();
                batch.clear();
            }
            drop(out);
            if let Some(w) = writeback.as_mut() {
                w.wrote(written);
            }
            if closed {
                return;
            }
            // Keep the larger allocation of the two for the next round, within reason.
            if batch.capacity() > self.cap * 2 {
                batch = Vec::new();
            }
        }
    }
}

/// Keeps the unwritten (dirty) pages of a log file few, by having the kernel start writing
/// them back every step (normally [`WRITEBACK_STEP`]) instead of when they are ~30 s old.
///
/// The call is `posix_fadvise(POSIX_FADV_DONTNEED)`: Linux starts writing back the range's dirty
/// pages without waiting for them, and drops the pages already written from its cache (nobody
/// reads a log back through this process, and they would push out the database's pages). Pages
/// still being written stay; the next call covers them again. Where the call fails or does
/// nothing, the log is written as before: only the timing of the disk writes changes.
///
/// The calls run on a thread of their own ("log-writeback"), which the writer thread wakes
/// without waiting: starting writeback can wait in the filesystem (on ext4, for its journal),
/// and if the writer thread waited there, loggers would wait behind it once the buffer filled.
/// Wake-ups that come while a call runs fold into one more call, which covers their bytes.
pub struct Writeback {
    file: std::fs::File,
    step: u64,
    /// Where the next call's range starts: a step before the end of the file at the last call,
    /// so that pages then still being written are covered again.
    from: u64,
}

impl Writeback {
    /// For the file behind `fd` (a duplicate descriptor of it), if it is a regular file: a
    /// pipe, a terminal or the journal's socket has no pages to write back.
    pub fn of(fd: std::os::fd::BorrowedFd<'_>, step: u64) -> Option<Writeback> {
        let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        Some(Writeback {
            file,
            step: step.max(1),
            from: 0,
        })
    }

    /// Starts the writeback thread; `None` (the log written as before) if it cannot start.
    fn start(mut self, advised: Arc<std::sync::atomic::AtomicU64>) -> Option<Kick> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let step = self.step;
        let thread = std::thread::Builder::new()
            .name("log-writeback".into())
            .spawn(move || {
                for () in rx {
                    if self.advise() {
                        advised.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .ok()?;
        Some(Kick {
            tx: Some(tx),
            since: 0,
            step,
            thread: Some(thread),
        })
    }

    /// Asks the kernel to start writing back the file from [`Writeback::from`] on. True if the
    /// call was accepted.
    fn advise(&mut self) -> bool {
        let end = self.file.metadata().map_or(self.from, |m| m.len());
        let started = advise_writeback(&self.file, self.from);
        self.from = end.saturating_sub(self.step);
        started
    }
}

/// The writer thread's side of a started [`Writeback`]: counts the bytes written and wakes the
/// writeback thread past each step. Dropped when the writer thread ends, which ends the
/// writeback thread after its last call.
struct Kick {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    since: u64,
    step: u64,
    thread: Option<JoinHandle<()>>,
}

impl Kick {
    fn wrote(&mut self, n: usize) {
        self.since = self.since.saturating_add(n as u64);
        if self.since < self.step {
            return;
        }
        self.since = 0;
        if let Some(tx) = &self.tx {
            // Full: a wake-up is already waiting, and its call will cover these bytes too.
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Kick {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `POSIX_FADV_DONTNEED` from `from` to the end of `file`; see [`Writeback`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn advise_writeback(file: &std::fs::File, from: u64) -> bool {
    rustix::fs::fadvise(file, from, None, rustix::fs::Advice::DontNeed).is_ok()
}

/// Elsewhere the kernel's own writeback is left alone.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn advise_writeback(_file: &std::fs::File, _from: u64) -> bool {
    false
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &*self.sink.shared;
        lock(&s.lines).closed = true;
        s.to_writer.notify_all();
        s.to_loggers.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the formatter writes each line through.
pub struct LineWriter<'a>(&'a Sink);

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.append(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

/// The process's sink, for [`flush`].
static INSTALLED: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// Makes `sink` the process's: the one [`flush`] writes out, and the one written before a
/// panic's message, so that the message comes after the lines that led to it. The first call
/// wins.
pub fn install(sink: &Sink) {
    if INSTALLED.set(sink.clone()).is_err() {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(sink) = INSTALLED.get() {
            sink.flush_now(false);
        }
        previous(info);
    }));
}

/// Writes the buffered lines now, so that what is printed to stderr next (`cxauth: listening
/// on …`) comes after them. Does nothing before [`install`].
pub fn flush() {
    if let Some(sink) = INSTALLED.get() {
        sink.flush_now(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A destination the test can read, counting the calls it receives.
    #[derive(Clone, Default)]
    struct Memory {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        /// While held by the test, writes block (a stalled log reader).
        gate: Arc<Mutex<()>>,
    }

    impl Write for Memory {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _open = lock(&self.gate);
            lock(&self.bytes).extend_from_slice(b);
            *lock(&self.writes) += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Memory {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.bytes).clone()).expect("utf-8")
        }
    }

    fn line(sink: &Sink, text: &str) {
        use tracing_subscriber::fmt::MakeWriter as _;
        sink.make_writer()
            .write_all(text.as_bytes())
            .expect("append");
    }

    #[test]
    fn concurrent_loggers_lose_no_line_and_tear_none_and_share_writes() {
        let mem = Memory::default();
        let (sink, guard) = Sink::new(Box::new(mem.clone()), GATHER, CAP).expect("sink");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        line(
                            &sink,
                            &format!("thread {t} line {i} {}\n", "x".repeat(i % 50)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logger");
        }
        drop(guard);
        let text = mem.text();
        let mut next = [0usize; 8];
        for l in text.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let (t, i): (usize, usize) = (f[1].parse().expect("t"), f[3].parse().expect("i"));
            assert_eq!(i, next[t], "thread {t}'s lines out of order or missing");
            assert_eq!(f[4].len(), i % 50, "a torn line: {l}");
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 8]);
        let writes = *lock(&mem.writes);
        assert!(
            writes < 16_000 / 4,
            "16,000 lines took {writes} writes: not batched"
        );
    }

    /// Flushes from other threads (what `serve` does before printing to stderr) while loggers
    /// log and the writer thread writes: nothing deadlocks, and every line arrives once, in
    /// order. The writer thread takes the lines, then the destination; a flush that took them
    /// the other way round hung a server at start-up (CI, Dec 2).
    #[test]
    fn flushes_beside_the_writer_thread_never_deadlock() {
        let memory = Memory::default();
        let (sink, guard) =
            Sink::new(Box::new(memory.clone()), Duration::from_micros(1), CAP).expect("sink");
        let (done, finished) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for t in 0..2 {
            let sink = sink.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..20_000 {
                    LineWriter(&sink)
                        .write_all(format!("{t} {i}\n").as_bytes())
                        .expect("append");
                }
            }));
        }
        for _ in 0..2 {
            let (sink, stop) = (sink.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sink.flush_now(true);
                }
            }));
        }
        std::thread::spawn(move || {
            for (n, t) in threads.into_iter().enumerate() {
                if n == 2 {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                t.join().expect("thread");
            }
            let _ = done.send(());
        });
        if finished.recv_timeout(Duration::from_secs(20)).is_err() {
            // Dropping the guard would wait for the deadlocked lock too.
            std::mem::forget(guard);
            panic!("loggers and flushes deadlocked with the writer thread");
        }
        drop(guard);
        let text = String::from_utf8(lock(&memory.bytes).clone()).expect("utf-8");
        for t in 0..2 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{t} ")))
                .collect();
            assert_eq!(mine.len(), 20_000);
            for (i, l) in mine.iter().enumerate() {
                assert_eq!(*l, format!("{t} {i}"));
            }
        }
    }

    #[test]
    fn a_lone_line_is_written_within_the_gathering_time() {
        let mem = Memory::default();
        let gather = Duration::from_millis(20);
        let (sink, _guard) = Sink::new(Box::new(mem.clone()), gather, CAP).expect("sink");
        let t = Instant::now();
        line(&sink, "one\n");
        while mem.text().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "the line never came");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(mem.text(), "one\n");
    }

    #[test]
    fn the_guard_writes_what_is_left_and_later_lines_go_straight_through() {
        let mem = Memory::default();
        let (sink, guard) =
            Sink::new(Box::new(mem.clone()), Duration::from_secs(3600), CAP).expect("sink");
        line(&sink, "before\n");
        let t = Instant::now();
        drop(guard);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "closing waited out the gathering"
        );
        assert_eq!(mem.text(), "before\n");
        line(&sink, "after\n");
        assert_eq!(mem.text(), "before\nafter\n");
    }

    #[test]
    fn a_stalled_reader_makes_loggers_wait_not_memory_grow() {
        let mem = Memory::default();
        let cap = 4_096;
        let (sink, guard) = Sink::new(Box::new(mem.clone()), GATHER, cap).expect("sink");
        let stall = lock(&mem.gate);
        let logger = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    line(&sink, &format!("{i:08}\n"));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let held = lock(&sink.shared.lines).buf.len();
        assert!(
            held <= cap + 9,
            "the buffer grew to {held} bytes past its cap"
        );
        assert!(
            !logger.is_finished(),
            "the logger did not wait for the reader"
        );
        drop(stall);
        logger.join().expect("logger");
        drop(guard);
        assert_eq!(mem.text().lines().count(), 10_000);
    }

    #[test]
    fn a_panic_message_comes_after_the_lines_before_it() {
        let mem = Memory::default();
        let (sink, _guard) =
            Sink::new(Box::new(mem.clone()), Duration::from_secs(3600), CAP).expect("sink");
        line(&sink, "what led to it\n");
        sink.flush_now(false);
        assert_eq!(mem.text(), "what led to it\n");
    }

    /// A log on a regular file is handed to the kernel's writeback as it grows, at most once a
    /// step, while four threads log at once, and every line still arrives whole and in its
    /// thread's order. A pipe (what a service manager or a container runtime gives) is left
    /// alone.
    #[test]
    fn a_log_file_is_written_back_in_steps_and_a_pipe_is_left_alone() {
        use std::os::fd::AsFd as _;
        let (_reader, pipe) = std::io::pipe().expect("pipe");
        assert!(Writeback::of(pipe.as_fd(), 1).is_none());

        let file = tempfile::NamedTempFile::new().expect("temp file");
        let step = 64 * 1024;
        let writeback = Writeback::of(file.as_file().as_fd(), step);
        assert!(writeback.is_some(), "a regular file");
        let out = file.as_file().try_clone().expect("clone");
        let (sink, guard) = Sink::with_writeback(
            Box::new(out),
            writeback,
            Duration::from_micros(100),
            8 * 1024,
        )
        .expect("sink");
        let (threads, lines, width) = (4u64, 500u64, 512u64);
        let loggers: Vec<_> = (0..threads)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..lines {
                        line(&sink, &format!("{t} {i:>6} {}\n", "x".repeat(502)));
                    }
                })
            })
            .collect();
        for l in loggers {
            l.join().expect("logger");
        }
        drop(guard);
        let total = threads * lines * width;
        let advised = sink
            .shared
            .advised
            .load(std::sync::atomic::Ordering::Relaxed);
        // Each call follows at least a step's worth of bytes; wake-ups that find the writeback
        // thread busy are folded into one call, so there may be fewer.
        assert!(
            (1..=total / step).contains(&advised),
            "{advised} calls for {total} bytes"
        );
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert_eq!(text.len() as u64, total);
        let mut next = vec![0u64; threads as usize];
        for l in text.lines() {
            assert_eq!(l.len() as u64, width - 1, "a torn line");
            let t: usize = l[..1].parse().expect("thread");
            assert_eq!(l[2..8].trim().parse::<u64>().expect("number"), next[t]);
            next[t] += 1;
        }
        assert_eq!(next, vec![lines; threads as usize]);
    }
}
