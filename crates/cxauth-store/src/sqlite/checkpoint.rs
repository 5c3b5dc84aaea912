//! The background checkpointer: copies the WAL back into the database file on threads and
//! connections of its own, so that no commit pays for it (issue 14).
//!
//! By default SQLite checkpoints inside whichever commit takes the WAL past 1,000 pages: that
//! commit copies the pages and, with `synchronous = FULL`, fsyncs the database file before it
//! returns, on a refresh's path (the first suspect for the half-load p99 of 99 ms in one run in
//! five). The store's committing connections (the sqlx pool and the rotation writer) therefore
//! run with `wal_autocheckpoint = 0`, and a thread runs `PRAGMA wal_checkpoint(PASSIVE)` every
//! [`INTERVAL`]. A passive checkpoint takes no lock that writers wait for: it copies what no
//! reader still needs, and when it has copied everything, the next writer starts the WAL over
//! from its beginning, so the file stays bounded by what is written between two ticks.
//!
//! A passive checkpoint alone does not bound the file under steady load, measured: SQLite
//! starts the WAL over only when a write transaction begins while every frame is copied back,
//! and with writes always in flight the checkpointer never catches the last commit (8 writers,
//! 3,000 rotations: a 66 MB WAL). So when the WAL holds more than [`RESTART_FRAMES`] frames
//! after a tick's passive checkpoint, a thread takes the process's write turn (the queue the
//! rotation writer and the sqlx writers wait in), checkpoints again (only the frames committed
//! since the first, then the database file's fsync) and lets the turn go: the next writer
//! starts the WAL over. Writers wait for that second checkpoint (a few milliseconds), once per
//! `RESTART_FRAMES` written, where SQLite's automatic checkpoint made one commit copy 1,000
//! pages and fsync every 1,000 pages.
//!
//! SQLite fsyncs the database file only in a checkpoint that copies the whole WAL, so that
//! fsync, under the turn, wrote out every page the passive copies had left in the page cache
//! since the last restart: on the AMD VM of the twenty-third round it took 7.3–7.6 ms of holds
//! of ~5.7 ms at p50 and up to 50 ms. The thread that finds the turn due first flushes the
//! database file itself, off the turn ([`Files::sync_database`]), and the fsync under the turn
//! then writes only the pages copied since (holds of ~1.8 ms at p50, at most 3.7 ms).
//!
//! Readers that always hold an old snapshot can keep even that from finishing. When the WAL
//! still holds more than [`STUCK_FRAMES`] uncopied frames, or a burst left the file larger than
//! [`LARGE_FILE`], the checkpoint under the turn is a `TRUNCATE` one, which waits (busy
//! timeout) for the readers, copies everything and empties the file.
//!
//! **Two threads, two priorities.** The passive copies are most of the work, and nothing waits
//! for them, yet on a server pinned to one core they took that core from the request worker and
//! the writer: at half load, `refresh`'s worker waited 60–76 ms and the writer 37–59 ms per
//! 10 s for it, in waits of up to ~2.5 ms (`cxauth-bench all --pin --trace-waits`), time that
//! lands on the refreshes in flight. So the passive copies run on a thread of their own, `cxauth-wal-copy`, under
//! Linux's `SCHED_IDLE` policy: it runs only on what the server's other threads leave of the
//! core, and any of them that wakes takes the core from it at once: the worker then waited
//! 2.7–4.3 ms per 10 s for it. (Nice 19 was not enough: the scheduler still let the copier
//! finish its slice, and the worker waited 21–26 ms per 10 s.) The checkpoint under the turn is the opposite: every writer waits for it, so it must not wait
//! behind them; it runs on `cxauth-sqlite-checkpoint` at the server's own priority, when the
//! copier asks. One thread cannot do both: a thread that is not privileged may lower its
//! priority but never raise it again.
//!
//! An idle-priority copier gets almost nothing of a core that requests keep busy. If it has not
//! woken for [`STARVED`], the checkpoint thread runs the whole tick itself at the server's
//! priority, so a saturated server still copies its WAL back. Only one of the two checkpoints at
//! a time (a mutex); the checkpoint thread never waits for the copier's turn at it (a copier
//! starved in the middle of a checkpoint is slow, not stopped), so a slow copier can delay a
//! restart but never holds the write turn.
//!
//! A tick that found every frame copied back has nothing to do until some connection commits
//! again, so the next ticks are skipped until SQLite's data version moves (`PRAGMA
//! data_version`, asked on the thread's own connection, which never commits; it reads the WAL
//! index in shared memory). Each skipped tick doubles the wait before the next, up to
//! [`IDLE_INTERVAL`], and a tick that runs brings it back to [`INTERVAL`]: on the benchmark VM
//! each wake-up of the thread cost ~0.1 ms of CPU, checkpoint or not, so an idle server's
//! thread now wakes twice a second instead of ten times.
//!
//! **What it cost, at `debug`** (`RUST_LOG=…,cxauth_store::sqlite::checkpoint=debug`): each
//! flush before a checkpoint under the turn (`took_us`), each checkpoint under the turn (the
//! WAL's frames before and after, how long it waited for the turn and held it), and each tick
//! the checkpoint thread ran for a starved copier. A few lines a second at most: with them, a
//! latency spike can be laid beside the checkpoints (the thirty-sixth round found the
//! refreshes' tail beside the minute's write of last uses was none of them).
//!
//! The threads end when the store's last clone is dropped (the channel closes). A tick that
//! panics (a bug) is logged and costs only itself (`sqlite::survive`): the next tick runs.

use super::writer::open_connection;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::Duration;

/// Time between two passive checkpoints. At 1,200 rotations a second and a handful of pages
/// each, a few hundred pages pile up between two ticks (the old trigger was 1,000); when there
/// is nothing to copy, a tick costs a few microseconds and no fsync.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// The longest wait between two ticks, reached while ticks are skipped (nothing committed and
/// nothing left). The first commit after a quiet spell is copied back at most this late, and the
/// WAL may hold what this much time writes before the next tick (at the benchmark's ~1,800
/// rotations/s of ~5 frames each, ~4,500 frames: under [`RESTART_FRAMES`]).
pub(super) const IDLE_INTERVAL: Duration = Duration::from_millis(500);

/// How long the copier may go without waking before the checkpoint thread ticks in its place.
/// The copier wakes at least every [`IDLE_INTERVAL`], so twice that means it is not getting the
/// core: requests keep it busy.
pub(super) const STARVED: Duration = Duration::from_secs(1);

/// The wait before the next tick: [`INTERVAL`] after a tick that ran, twice the last wait (at
/// most [`IDLE_INTERVAL`]) after one that was skipped.
fn next_wait(last: Duration, ran: bool) -> Duration {
    if ran {
        INTERVAL
    } else {
        (last * 2).min(IDLE_INTERVAL)
    }
}

/// WAL frames (pages) past which a tick makes room for the WAL to start over (~32 MiB of 4 KiB
/// pages); the file stays near this plus what one [`INTERVAL`] writes.
///
/// Each time, writers wait for the checkpoint under the turn: 1–5 ms measured (release
/// server on one core of a 2-core VM, refresh at half load, ~1,800 rotations/s, ~5 frames
/// each). At 2,000 frames that was a wait every ~210 ms, and 1.9–2.3% of the refreshes arrived
/// during one: more than the 1% a p99 may leave out, so the waits set a floor under the
/// refresh p99. At 8,000 frames 0.6–0.8% arrive during one. The price is disk: the WAL file
/// keeps the size it reached (~35 MB) until a `TRUNCATE` checkpoint.
pub(super) const RESTART_FRAMES: i64 = 8_000;

/// WAL frames left uncopied after the checkpoint under the turn that call for a `TRUNCATE`
/// one (~40 MiB of 4 KiB pages): readers are keeping the checkpoint from finishing.
pub(super) const STUCK_FRAMES: i64 = 10_000;

/// The size of a WAL file (bytes) that a `TRUNCATE` checkpoint shrinks once it is all copied:
/// the file never shrinks by itself, so a burst would otherwise keep its disk space.
const LARGE_FILE: u64 = 64 << 20;

/// The thresholds of a [`tick`]: the constants above, smaller in the tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// See [`RESTART_FRAMES`].
    restart_frames: i64,
    /// See [`STUCK_FRAMES`].
    stuck_frames: i64,
    /// See [`LARGE_FILE`].
    large_file: u64,
}

impl Limits {
    /// The thresholds the threads run with.
    const DEFAULT: Limits = Limits {
        restart_frames: RESTART_FRAMES,
        stuck_frames: STUCK_FRAMES,
        large_file: LARGE_FILE,
    };
}

/// The handle to the checkpointer's threads: dropping it (with the store's last clone) ends
/// them.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
    /// Held by both threads while they run (see [`Checkpointer::alive`]).
    #[cfg(test)]
    alive: std::sync::Weak<()>,
}

/// What one `wal_checkpoint` reported: whether it could not finish for a lock, the frames in
/// the WAL, and the frames copied back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointResult {
    /// 1 if a lock kept it from finishing.
    pub(crate) busy: i64,
    /// Frames in the WAL.
    pub(crate) log: i64,
    /// Frames copied to the database file.
    pub(crate) checkpointed: i64,
}

/// Runs `PRAGMA wal_checkpoint(mode)` on `conn`.
pub(crate) fn checkpoint(
    conn: &rusqlite::Connection,
    mode: &str,
) -> rusqlite::Result<CheckpointResult> {
    let sql = match mode {
        "TRUNCATE" => "PRAGMA wal_checkpoint(TRUNCATE)",
        "RESTART" => "PRAGMA wal_checkpoint(RESTART)",
        _ => "PRAGMA wal_checkpoint(PASSIVE)",
    };
    conn.query_row(sql, [], |row| {
        Ok(CheckpointResult {
            busy: row.get(0)?,
            log: row.get(1)?,
            checkpointed: row.get(2)?,
        })
    })
}

/// What the two threads share.
#[derive(Debug, Default)]
struct Shared {
    /// Held by whichever thread checkpoints: SQLite lets one checkpoint run at a time and
    /// would answer the other `SQLITE_BUSY`.
    checkpointing: Mutex<()>,
    /// The copier's wake-ups so far: the checkpoint thread watches it to tell a starved copier.
    copier_wakeups: AtomicU64,
}

/// The database's two files, as the checkpoints need them.
#[derive(Debug)]
struct Files {
    /// The WAL (its size can call for a truncating checkpoint).
    wal: PathBuf,
    /// The database file, which [`Files::sync_database`] flushes.
    database: PathBuf,
    /// A descriptor of the database file of its own, opened at the first flush. It is never
    /// closed: closing *any* descriptor of a file drops every POSIX lock the process holds on
    /// it, and SQLite's connections keep theirs on the database file (SQLite's own
    /// descriptors are shared per file for that reason, but it cannot know of this one).
    /// Another process (`cxauth admin`) could then take the file as if no one else had it
    /// open. One descriptor per store that ever made room in its WAL stays open until exit.
    handle: OnceLock<ManuallyDrop<std::fs::File>>,
    /// A flush failed and it was logged (once: the checkpoint still works without it).
    warned: AtomicBool,
    /// Descriptors opened for the flush (for the test that races the first flushes).
    #[cfg(test)]
    opened: std::sync::atomic::AtomicUsize,
    /// Passive checkpoints that are to panic instead (for the tests of a panicking tick).
    #[cfg(test)]
    panics: std::sync::atomic::AtomicUsize,
}

impl Files {
    fn new(database: &Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Files {
            wal: PathBuf::from(wal),
            database: database.to_owned(),
            handle: OnceLock::new(),
            warned: AtomicBool::new(false),
            #[cfg(test)]
            opened: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            panics: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Flushes to disk what the passive checkpoints since the last restart copied into the
    /// database file, before the checkpoint under the write turn.
    ///
    /// SQLite fsyncs the database file only in a checkpoint that copies the whole WAL: under
    /// steady writes, only the one under the turn, which then wrote out every page the passive
    /// copies had left in the page cache since the last restart, while writers waited. On the
    /// benchmark VM that fsync took 7.3–7.6 ms, every ~0.56 s at half load, and every refresh
    /// that arrived meanwhile waited for it (docs/benchmarks-history.md, twenty-third round).
    /// Flushed here first, off the turn, the fsync under the turn writes only the pages copied
    /// since. Durability never rests on this flush: SQLite's own fsync still
    /// comes before the WAL starts over. A failure is logged once and only costs the wait.
    fn sync_database(&self) {
        let file = match self.handle.get() {
            Some(file) => file,
            None => match std::fs::File::open(&self.database) {
                Ok(file) => {
                    #[cfg(test)]
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    // Wrapped first: a thread that loses the race drops a `ManuallyDrop`, and
                    // its descriptor stays open, as it must.
                    let file = ManuallyDrop::new(file);
                    self.handle.get_or_init(|| file)
                }
                Err(e) => return self.warn_once(&e),
            },
        };
        if let Err(e) = file.sync_data() {
            self.warn_once(&e);
        }
    }

    fn warn_once(&self, e: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "cannot flush the SQLite database file before a WAL restart; \
                 writers wait for the whole flush under the write turn instead"
            );
        }
    }
}

impl Checkpointer {
    /// Opens a connection for each thread on `path` and starts them; `turn` is the store's
    /// write turn (`SqliteStore::write_turn`).
    pub(super) fn start(
        path: &Path,
        busy_timeout: Duration,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, String> {
        let copier_conn = open_connection(path, busy_timeout).map_err(|e| e.to_string())?;
        let turn_conn = open_connection(path, busy_timeout).map_err(|e| e.to_string())?;
        let files = Arc::new(Files::new(path));
        let (stop, stopped) = mpsc::channel::<()>();
        // One request at most is waiting: a copier that finds the WAL long again before the
        // checkpoint thread took the last one has nothing to add.
        let (ask, asked) = mpsc::sync_channel::<CheckpointResult>(1);
        let shared = Arc::new(Shared::default());
        let alive = Arc::new(());
        #[cfg(test)]
        let weak = Arc::downgrade(&alive);

        let copier = {
            let (shared, files, alive) = (shared.clone(), files.clone(), alive.clone());
            move || {
                let _alive = alive;
                lower_own_priority();
                run_copier(&copier_conn, &files, &shared, &stopped, &ask);
            }
        };
        let checkpoint_thread = move || {
            let _alive = alive;
            run_checkpoint_thread(
                &turn_conn,
                &files,
                &turn,
                &shared,
                &asked,
                Limits::DEFAULT,
                STARVED,
            );
        };
        std::thread::Builder::new()
            .name("cxauth-sqlite-checkpoint".into())
            .spawn(checkpoint_thread)
            .map_err(|e| format!("cannot start the SQLite checkpointer: {e}"))?;
        std::thread::Builder::new()
            .name("cxauth-wal-copy".into())
            .spawn(copier)
            .map_err(|e| format!("cannot start the SQLite WAL copier: {e}"))?;
        Ok(Checkpointer {
            _stop: stop,
            #[cfg(test)]
            alive: weak,
        })
    }

    /// Whether a thread still runs (for the tests that check they end with the store).
    #[cfg(test)]
    pub(super) fn alive(&self) -> std::sync::Weak<()> {
        self.alive.clone()
    }
}

/// The copier's loop: a passive checkpoint every [`INTERVAL`] (spaced out while there is
/// nothing to copy), and a request to the checkpoint thread when one under the write turn is
/// due. Nothing is ever sent on `stopped`: the loop ends when its sender is dropped, and with
/// it `ask`, which ends the checkpoint thread.
fn run_copier(
    conn: &rusqlite::Connection,
    files: &Files,
    shared: &Shared,
    stopped: &mpsc::Receiver<()>,
    ask: &mpsc::SyncSender<CheckpointResult>,
) {
    let mut settled = Settled::default();
    let mut wait = INTERVAL;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
        shared.copier_wakeups.fetch_add(1, Ordering::Relaxed);
        let mut needs_turn = None;
        // A tick that panicked counts as one that ran: the next comes after `INTERVAL`.
        let mut ran = true;
        super::survive("the SQLite WAL copier's tick", || {
            ran = settled.run_if_due(conn, || {
                let _checkpointing = lock(&shared.checkpointing);
                match passive(conn, files, Limits::DEFAULT) {
                    Passive::Settled => true,
                    Passive::Left => false,
                    Passive::NeedsTurn(last) => {
                        needs_turn = Some(last);
                        false
                    }
                }
            });
        });
        if let Some(last) = needs_turn {
            // Full: a request is already waiting.
            let _ = ask.try_send(last);
        }
        wait = next_wait(wait, ran);
    }
}

/// The checkpoint thread: runs the checkpoint under the turn each time the copier asks, and
/// the whole tick in the copier's place when the copier has not woken for `starved`; returns
/// when the copier is gone.
fn run_checkpoint_thread(
    conn: &rusqlite::Connection,
    files: &Files,
    turn: &tokio::sync::Mutex<()>,
    shared: &Shared,
    asked: &mpsc::Receiver<CheckpointResult>,
    limits: Limits,
    starved: Duration,
) {
    let mut settled = Settled::default();
    let mut seen = shared.copier_wakeups.load(Ordering::Relaxed);
    loop {
        match asked.recv_timeout(starved) {
            Ok(last) => {
                // The copier is already in its next checkpoint: it asks again after it if the
                // WAL is still long, and this thread must not wait behind an idle-priority one.
                if let Some(_checkpointing) = try_lock(&shared.checkpointing) {
                    super::survive("the SQLite checkpoint under the write turn", || {
                        under_turn(conn, files, turn, limits, last);
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let wakeups = shared.copier_wakeups.load(Ordering::Relaxed);
                // A copier in the middle of a checkpoint keeps the mutex: it is slow, not
                // stopped, and this thread must not wait behind it.
                if wakeups == seen
                    && let Some(_checkpointing) = try_lock(&shared.checkpointing)
                {
                    tracing::debug!("SQLite WAL copier starved: the checkpoint thread ticks");
                    super::survive("the SQLite checkpoint thread's tick", || {
                        settled.run_if_due(conn, || tick(conn, files, turn, limits));
                    });
                }
                seen = wakeups;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Locks `mutex`; a thread that panicked while holding it left nothing half-done that the
/// next checkpoint would trust (SQLite keeps the WAL's state), so poisoning is ignored.
fn lock(mutex: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Like [`lock`], but `None` at once if another thread holds `mutex`. Poisoning is ignored
/// here too: a copier tick that panicked with the mutex (see `sqlite::survive`) must not keep
/// the checkpoint thread out of it for good.
fn try_lock(mutex: &Mutex<()>) -> Option<std::sync::MutexGuard<'_, ()>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other thread of the core
/// wants it, and gives the core up the moment one wakes. On Linux a scheduling policy belongs to
/// a thread, so the server's other threads keep theirs. A failure is logged and the copier runs
/// at the server's priority, as before.
#[cfg(target_os = "linux")]
fn lower_own_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    // The crate then sets the nice value to 0, which a process started with a higher one may
    // not do; the nice value means nothing under `SCHED_IDLE`, so only the policy is checked.
    let set = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
    if let Err(e) = set
        && thread_schedule_policy().ok() != Some(idle)
    {
        tracing::warn!(
            error = %e,
            "cannot put the SQLite WAL copier under SCHED_IDLE; it runs at the server's priority"
        );
    }
}

/// Elsewhere there is no `SCHED_IDLE`, and a nice value would lower the whole process: the
/// copier keeps the server's priority.
#[cfg(not(target_os = "linux"))]
fn lower_own_priority() {}

/// The data version at which the last tick found nothing left to do, if it did.
#[derive(Debug, Default)]
struct Settled(Option<i64>);

impl Settled {
    /// Runs `tick` unless the last one left nothing to do and no connection has committed
    /// since; says whether it ran. `tick` says whether it left nothing to do. A version that
    /// cannot be read never skips a tick.
    fn run_if_due(&mut self, conn: &rusqlite::Connection, tick: impl FnOnce() -> bool) -> bool {
        let version = super::quiet::data_version(conn);
        if version.is_some() && version == self.0 {
            return false;
        }
        self.0 = if tick() { version } else { None };
        true
    }
}

/// What the passive checkpoint of a tick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passive {
    /// Every frame copied back and the file small: until another commit, a tick finds the
    /// same.
    Settled,
    /// Frames left for the next tick, or a checkpoint that failed (logged): it tries again.
    Left,
    /// The WAL is long, readers kept frames back, or the file is large: a checkpoint under
    /// the write turn is due ([`under_turn`]).
    NeedsTurn(CheckpointResult),
}

/// The passive half of a tick: copies what it can, without the write turn, and when a
/// checkpoint under the turn is due, flushes the database file first
/// ([`Files::sync_database`]).
fn passive(conn: &rusqlite::Connection, files: &Files, limits: Limits) -> Passive {
    // The tests' stand-in for a bug (see `a_tick_that_panics_costs_only_itself`).
    #[cfg(test)]
    if files
        .panics
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        panic!("the test's panic in a checkpoint tick");
    }
    let last = match checkpoint(conn, "PASSIVE") {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "SQLite passive checkpoint failed");
            return Passive::Left;
        }
    };
    let left = last.log - last.checkpointed;
    if last.log > limits.restart_frames || truncate(&files.wal, limits, left) {
        // Off the turn, so that the checkpoint under it flushes only what it copies.
        let started = std::time::Instant::now();
        files.sync_database();
        tracing::debug!(
            log = last.log,
            left,
            took_us = started.elapsed().as_micros() as u64,
            "SQLite database file flushed before a checkpoint under the write turn"
        );
        Passive::NeedsTurn(last)
    } else if left == 0 {
        // `truncate(0)` was false: the file is small.
        Passive::Settled
    } else {
        Passive::Left
    }
}

/// Whether a `TRUNCATE` checkpoint is due with `left` frames uncopied: readers keep too many
/// back, or all is copied and the file is large.
fn truncate(wal: &Path, limits: Limits, left: i64) -> bool {
    left > limits.stuck_frames
        || (left == 0 && std::fs::metadata(wal).is_ok_and(|m| m.len() > limits.large_file))
}

/// The half of a tick under the write turn, after a passive checkpoint reported `last`: copies
/// what was committed since, so that the next writer starts the WAL over; truncates if readers
/// keep it from finishing or the file is large.
fn under_turn(
    conn: &rusqlite::Connection,
    files: &Files,
    turn: &tokio::sync::Mutex<()>,
    limits: Limits,
    mut last: CheckpointResult,
) {
    // This thread is no task of the runtime: it may block on the turn.
    let asked_at = std::time::Instant::now();
    let _turn = turn.blocking_lock();
    let held = HoldTimer(std::time::Instant::now());
    let before = last;
    if last.log > limits.restart_frames {
        last = match checkpoint(conn, "PASSIVE") {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "SQLite passive checkpoint failed");
                return;
            }
        };
    }
    let left = last.log - last.checkpointed;
    let mut truncated = false;
    if truncate(&files.wal, limits, left) {
        match checkpoint(conn, "TRUNCATE") {
            Ok(r) => {
                truncated = true;
                tracing::info!(
                    left_by_passive = left,
                    busy = r.busy,
                    "SQLite WAL truncated by a blocking checkpoint"
                )
            }
            Err(e) => tracing::warn!(error = %e, "SQLite truncating checkpoint failed"),
        }
    }
    tracing::debug!(
        log_before = before.log,
        left_before = before.log - before.checkpointed,
        log = last.log,
        left,
        truncated,
        waited_us = (held.0 - asked_at).as_micros() as u64,
        held_us = held.0.elapsed().as_micros() as u64,
        "SQLite checkpoint under the write turn"
    );
}

/// One whole tick on one thread (the checkpoint thread's, when the copier is starved): a
/// passive checkpoint, then the one under the write turn if it is due. Returns whether it
/// found nothing to do: every frame already copied back and the file small, so that until
/// another commit, a tick would find the same.
fn tick(
    conn: &rusqlite::Connection,
    files: &Files,
    turn: &tokio::sync::Mutex<()>,
    limits: Limits,
) -> bool {
    match passive(conn, files, limits) {
        Passive::Settled => true,
        Passive::Left => false,
        Passive::NeedsTurn(last) => {
            under_turn(conn, files, turn, limits, last);
            // The next tick finds out what this one left.
            false
        }
    }
}

/// Records, when dropped (before the turn it was made after), how long the checkpointer held
/// the write turn: `cxauth_sqlite_checkpoint_hold_seconds`, the time writers waited for it.
struct HoldTimer(std::time::Instant);

impl Drop for HoldTimer {
    fn drop(&mut self) {
        metrics::histogram!("cxauth_sqlite_checkpoint_hold_seconds")
            .record(self.0.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A database in WAL mode with table `t`, the checkpointer's own connection, and the
    /// database's files as the checkpoints see them.
    fn setup(dir: &Path) -> (rusqlite::Connection, rusqlite::Connection, Arc<Files>) {
        let path = dir.join("db.sqlite");
        std::fs::File::create(&path).expect("create");
        let writer = open_connection(&path, Duration::from_secs(10)).expect("open");
        writer
            .execute("CREATE TABLE t (x BLOB NOT NULL)", [])
            .expect("create table");
        let own = open_connection(&path, Duration::from_secs(10)).expect("open");
        (writer, own, Arc::new(Files::new(&path)))
    }

    /// `n` rows of 4 KiB: a page or two each in the WAL.
    fn write(conn: &rusqlite::Connection, n: usize) {
        for _ in 0..n {
            conn.execute("INSERT INTO t (x) VALUES (zeroblob(4096))", [])
                .expect("insert");
        }
    }

    fn wal_len(files: &Files) -> u64 {
        std::fs::metadata(&files.wal).expect("the WAL").len()
    }

    fn rows(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    /// A reader that keeps an old snapshot keeps the passive checkpoint from copying anything:
    /// past `stuck_frames` left, the tick runs a truncating checkpoint, which waits for the
    /// reader (busy timeout), copies everything and empties the file.
    #[test]
    fn a_reader_that_holds_the_wal_back_is_waited_for_and_the_file_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, wal) = setup(dir.path());
        let path = dir.path().join("db.sqlite");
        let reader = open_connection(&path, Duration::from_secs(10)).expect("open");
        reader.execute_batch("BEGIN").expect("begin");
        assert_eq!(rows(&reader), 0, "the snapshot is taken before the writes");
        write(&writer, 200);
        let before = checkpoint(&own, "PASSIVE").expect("passive");
        assert!(
            before.log > 50 && before.checkpointed < before.log,
            "the reader should hold frames back: {before:?}"
        );

        let released = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let mark = released.clone();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            *mark.lock().expect("mark") = Some(Instant::now());
            reader.execute_batch("COMMIT").expect("commit");
        });
        let turn = tokio::sync::Mutex::new(());
        let limits = Limits {
            restart_frames: i64::MAX,
            stuck_frames: 50,
            large_file: u64::MAX,
        };
        tick(&own, &wal, &turn, limits);
        let done = Instant::now();
        holder.join().expect("the reader thread");

        let released = released.lock().expect("mark").expect("the reader ended");
        assert!(
            done >= released,
            "the tick returned before the reader let go"
        );
        assert_eq!(wal_len(&wal), 0, "the WAL was not truncated");
        assert_eq!(rows(&writer), 200, "rows lost in the checkpoint");
        assert_eq!(rows(&own), 200);
    }

    /// With everything copied back, a WAL file larger than `large_file` is emptied; a smaller
    /// one is left as it is (its space is reused from its start).
    #[test]
    fn a_large_file_is_emptied_once_all_is_copied_and_a_small_one_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, wal) = setup(dir.path());
        write(&writer, 100);
        let turn = tokio::sync::Mutex::new(());
        let len = wal_len(&wal);
        assert!(len > 100 * 4096, "the WAL holds the writes: {len}");
        let limits = |large_file| Limits {
            restart_frames: i64::MAX,
            stuck_frames: i64::MAX,
            large_file,
        };

        tick(&own, &wal, &turn, limits(len + 1));
        assert_eq!(wal_len(&wal), len, "a file under the bound was truncated");
        let r = checkpoint(&own, "PASSIVE").expect("passive");
        assert_eq!(
            r.log, r.checkpointed,
            "the tick left frames uncopied: {r:?}"
        );

        tick(&own, &wal, &turn, limits(len - 1));
        assert_eq!(wal_len(&wal), 0, "a file over the bound was kept");
        assert_eq!(rows(&writer), 100);
    }

    /// The truncating checkpoint runs under the write turn: while someone holds the turn, the
    /// tick waits, and no writer of this process can commit between its two checkpoints.
    #[test]
    fn the_truncating_checkpoint_waits_for_the_write_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, wal) = setup(dir.path());
        write(&writer, 100);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let held = turn.clone().try_lock_owned().expect("the turn is free");
        let (tx, rx) = mpsc::channel();
        let ticker = {
            let turn = turn.clone();
            let wal = wal.clone();
            std::thread::spawn(move || {
                let limits = Limits {
                    restart_frames: i64::MAX,
                    stuck_frames: i64::MAX,
                    large_file: 1,
                };
                tick(&own, &wal, &turn, limits);
                tx.send(()).expect("send");
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the tick truncated without the write turn"
        );
        assert!(wal_len(&wal) > 0);
        drop(held);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the tick never ended after the turn was let go");
        ticker.join().expect("the ticker");
        assert_eq!(wal_len(&wal), 0);
    }

    /// Once a tick found every frame copied, the next ones are skipped until a commit, of this
    /// process or another (here: another connection); a tick that left frames a reader holds
    /// back is never followed by a skip.
    #[test]
    fn ticks_are_skipped_only_while_nothing_is_left_and_nothing_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, wal) = setup(dir.path());
        let turn = tokio::sync::Mutex::new(());
        let limits = Limits::DEFAULT;
        let mut settled = Settled::default();
        let mut tick = || settled.run_if_due(&own, || tick(&own, &wal, &turn, limits));

        write(&writer, 10);
        assert!(tick(), "the first tick runs");
        assert!(!tick(), "nothing since: skipped");
        assert!(!tick());

        write(&writer, 15);
        assert!(tick(), "a commit: the tick runs");
        assert!(!tick());

        // A reader holds its snapshot: frames committed after it cannot be copied.
        let reader =
            open_connection(&dir.path().join("db.sqlite"), Duration::from_secs(10)).expect("open");
        reader.execute_batch("BEGIN").expect("begin");
        assert_eq!(rows(&reader), 25);
        write(&writer, 5);
        assert!(tick());
        assert!(
            tick(),
            "frames were left: the next tick runs though nothing committed"
        );
        reader.execute_batch("COMMIT").expect("commit");
        assert!(tick(), "copies what was left");
        assert!(!tick(), "everything copied: skipped again");
        assert_eq!(rows(&own), 30);
    }

    /// Skipped ticks space out to `IDLE_INTERVAL` and no further; one that runs brings the
    /// wait back to `INTERVAL` at once.
    #[test]
    fn the_wait_doubles_while_ticks_are_skipped_and_resets_when_one_runs() {
        let mut wait = INTERVAL;
        let mut waits = Vec::new();
        for _ in 0..6 {
            wait = next_wait(wait, false);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [200, 400, 500, 500, 500, 500]);
        assert_eq!(next_wait(IDLE_INTERVAL, true), INTERVAL);
        assert_eq!(next_wait(INTERVAL, true), INTERVAL);
    }

    /// The samples of `cxauth_sqlite_checkpoint_hold_seconds` recorded since the last call.
    fn holds(recorder: &metrics_util::debugging::DebuggingRecorder) -> Vec<f64> {
        use metrics_util::debugging::DebugValue;
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "cxauth_sqlite_checkpoint_hold_seconds")
            .flat_map(|(.., value)| match value {
                DebugValue::Histogram(v) => v.into_iter().map(|x| x.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Past the restart threshold the tick holds the write turn, and says for how long; it
    /// covers the time it held the turn, not the time it waited for it; a tick with nothing
    /// over any threshold holds nothing and records nothing.
    #[test]
    fn a_restart_records_how_long_writers_waited_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, wal) = setup(dir.path());
        let recorder = Arc::new(metrics_util::debugging::DebuggingRecorder::new());
        let limits = Limits {
            restart_frames: 50,
            stuck_frames: i64::MAX,
            large_file: u64::MAX,
        };
        let turn = tokio::sync::Mutex::new(());
        write(&writer, 10);
        metrics::with_local_recorder(&*recorder, || tick(&own, &wal, &turn, limits));
        assert!(holds(&recorder).is_empty(), "under the threshold");

        write(&writer, 200);
        let turn = Arc::new(turn);
        let held = turn.clone().try_lock_owned().expect("the turn is free");
        let ticker = {
            let (turn, recorder) = (turn.clone(), recorder.clone());
            std::thread::spawn(move || {
                metrics::with_local_recorder(&*recorder, || tick(&own, &wal, &turn, limits));
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        ticker.join().expect("the ticker");
        let samples = holds(&recorder);
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert!(
            samples[0] > 0.0 && samples[0] < 0.2,
            "the hold, not the 200 ms wait for the turn: {samples:?}"
        );
    }

    /// The descriptors of this process open on `path`.
    #[cfg(target_os = "linux")]
    fn descriptors_on(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    /// The tick that finds the turn due flushes the database file before it asks for the
    /// turn (the flush opens the descriptor, seen here while the tick still waits for the
    /// turn), and the descriptor stays open when the files are dropped: closing it would drop
    /// the process's POSIX locks on the database file.
    #[test]
    fn the_database_file_is_flushed_before_the_turn_and_its_descriptor_never_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, files) = setup(dir.path());
        let limits = Limits {
            restart_frames: 50,
            stuck_frames: i64::MAX,
            large_file: u64::MAX,
        };
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        write(&writer, 10);
        tick(&own, &files, &turn, limits);
        assert!(files.handle.get().is_none(), "flushed with no turn due");

        write(&writer, 200);
        let held = turn.clone().try_lock_owned().expect("the turn is free");
        let ticker = {
            let (turn, files) = (turn.clone(), files.clone());
            std::thread::spawn(move || tick(&own, &files, &turn, limits))
        };
        assert!(
            eventually(|| files.handle.get().is_some()),
            "the database file was not flushed before the turn"
        );
        assert!(!ticker.is_finished(), "the tick did not wait for the turn");
        drop(held);
        ticker.join().expect("the ticker");
        assert!(!files.warned.load(Ordering::Relaxed));

        // Counted in /proc/self/fd, which only Linux has.
        #[cfg(target_os = "linux")]
        {
            let database = dir.path().join("db.sqlite").canonicalize().expect("path");
            let open = descriptors_on(&database);
            drop(files);
            assert_eq!(descriptors_on(&database), open, "the descriptor was closed");
        }
        // Only now: its own descriptors stayed open while they were counted.
        drop(writer);
    }

    /// A database file that cannot be opened for the flush is logged once, however often the
    /// flush is tried; the checkpoint goes on without it (SQLite's own fsync under the turn
    /// keeps the WAL safe).
    #[test]
    fn a_flush_that_cannot_be_made_is_logged_once_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files::new(&dir.path().join("missing.sqlite"));
        use tracing_subscriber::fmt::MakeWriter as _;
        /// Where the test's subscriber writes (through tracing-subscriber's writer for a mutex).
        static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| LOG.make_writer())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                files.sync_database();
            }
        });
        let text = String::from_utf8(LOG.lock().expect("log").clone()).expect("utf-8");
        assert_eq!(
            text.matches("cannot flush the SQLite database file")
                .count(),
            1,
            "{text}"
        );
        assert!(files.handle.get().is_none());
    }

    /// Threads that make the first flush at the same moment each open a descriptor; one is
    /// kept, and the others' stay open too (closing them would drop the process's POSIX locks
    /// on the database file), and later flushes open none.
    #[cfg(target_os = "linux")]
    #[test]
    fn descriptors_opened_by_racing_first_flushes_are_never_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, _own, files) = setup(dir.path());
        let database = dir.path().join("db.sqlite").canonicalize().expect("path");
        let before = descriptors_on(&database);
        let start = Arc::new(std::sync::Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (files, start) = (files.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    files.sync_database();
                })
            })
            .collect();
        for racer in racers {
            racer.join().expect("a racer");
        }
        let opened = files.opened.load(Ordering::Relaxed);
        assert!(opened >= 1);
        assert_eq!(
            descriptors_on(&database),
            before + opened,
            "a racer closed its descriptor"
        );
        files.sync_database();
        assert_eq!(files.opened.load(Ordering::Relaxed), opened, "opened again");
        drop(files);
        assert_eq!(descriptors_on(&database), before + opened);
        drop(writer);
    }

    fn db_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("db.sqlite"))
            .expect("the database")
            .len()
    }

    /// Waits up to 5 s for `done`.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done()
    }

    /// Starts [`run_checkpoint_thread`] on a thread of its own, on connection `own`.
    fn checkpoint_thread(
        own: rusqlite::Connection,
        files: &Arc<Files>,
        turn: &Arc<tokio::sync::Mutex<()>>,
        shared: &Arc<Shared>,
        asked: mpsc::Receiver<CheckpointResult>,
        limits: Limits,
        starved: Duration,
    ) -> std::thread::JoinHandle<()> {
        let (files, turn, shared) = (files.clone(), turn.clone(), shared.clone());
        std::thread::spawn(move || {
            run_checkpoint_thread(&own, &files, &turn, &shared, &asked, limits, starved);
        })
    }

    /// The checkpoint thread leaves the copying to a copier that wakes, checkpoints under the
    /// turn when the copier asks, ticks in its place once it stops waking (starved), and never
    /// waits for a copier in the middle of a checkpoint. What it copied shows in the database
    /// file's size: the rows live only in the WAL until a checkpoint.
    #[test]
    fn the_checkpoint_thread_stands_in_only_for_a_copier_that_does_not_wake() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, wal) = setup(dir.path());
        let shared = Arc::new(Shared::default());
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let (ask, asked) = mpsc::sync_channel(1);
        let limits = Limits {
            restart_frames: 50,
            stuck_frames: i64::MAX,
            large_file: u64::MAX,
        };
        let waking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let copier = {
            let (shared, waking) = (shared.clone(), waking.clone());
            std::thread::spawn(move || {
                while waking.load(Ordering::Relaxed) {
                    shared.copier_wakeups.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        // Far above the 5 ms between wake-ups, so that a loaded machine does not starve it.
        let starved = Duration::from_millis(500);
        let thread = checkpoint_thread(own, &wal, &turn, &shared, asked, limits, starved);

        write(&writer, 100);
        let small = db_len(dir.path());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(db_len(dir.path()), small, "copied for a copier that wakes");

        // The copier asks: the checkpoint under the turn copies everything.
        let held = turn.clone().try_lock_owned().expect("the turn is free");
        let asked_for = CheckpointResult {
            busy: 0,
            log: 1_000,
            checkpointed: 0,
        };
        ask.send(asked_for).expect("the thread listens");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(db_len(dir.path()), small, "checkpointed without the turn");
        drop(held);
        assert!(
            eventually(|| db_len(dir.path()) > 100 * 4096),
            "the copier's request was not served"
        );

        // The copier asks while it is in its next checkpoint (holds the mutex): the request is
        // let go, not served once the mutex is free (the copier asks again if it must).
        write(&writer, 100);
        let before = db_len(dir.path());
        let checkpointing = shared.checkpointing.lock().expect("the mutex");
        ask.send(asked_for).expect("the thread listens");
        std::thread::sleep(Duration::from_millis(200));
        drop(checkpointing);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            db_len(dir.path()),
            before,
            "waited behind a copier's checkpoint"
        );

        // The copier stops waking while it holds the mutex (in a checkpoint): not waited for.
        let checkpointing = shared.checkpointing.lock().expect("the mutex");
        waking.store(false, Ordering::Relaxed);
        copier.join().expect("the copier");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            db_len(dir.path()),
            before,
            "copied beside a copier's checkpoint"
        );
        drop(checkpointing);
        // Starved and out of the mutex: the checkpoint thread ticks in its place.
        assert!(
            eventually(|| db_len(dir.path()) > 200 * 4096),
            "nothing copied for a starved copier"
        );

        drop(ask);
        thread
            .join()
            .expect("the thread ends when the copier is gone");
        assert_eq!(rows(&writer), 200);
    }

    /// Writes 100 rows and waits for them to be copied back to the database file, once the
    /// panic that `files` was told to inject has happened.
    fn copied_after_a_panic(writer: &rusqlite::Connection, dir: &Path, files: &Files) {
        write(writer, 100);
        assert!(
            eventually(|| db_len(dir) > 100 * 4096),
            "nothing copied after the panic"
        );
        assert_eq!(files.panics.load(Ordering::Relaxed), 0, "no tick panicked");
    }

    /// A copier tick that panics (a bug: the test injects one) costs only that tick: the
    /// next one copies the WAL back. Before, the panic ended the copier, and with it the
    /// checkpoint thread: the WAL grew without bound and without a word.
    #[test]
    fn a_copier_tick_that_panics_costs_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, files) = setup(dir.path());
        files.panics.store(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let (ask, _asked) = mpsc::sync_channel(1);
        let copier = {
            let (files, shared) = (files.clone(), shared.clone());
            std::thread::spawn(move || run_copier(&own, &files, &shared, &stopped, &ask))
        };
        copied_after_a_panic(&writer, dir.path(), &files);
        drop(stop);
        copier.join().expect("the copier ends when the store does");
    }

    /// The checkpoint thread goes on through a panic of its own tick, and past a mutex that a
    /// panicking copier tick poisoned: before, either kept the WAL from ever being copied back
    /// again by it.
    #[test]
    fn the_checkpoint_thread_outlives_a_panic_and_a_poisoned_mutex() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, own, files) = setup(dir.path());
        let shared = Arc::new(Shared::default());
        let poisoner = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _held = shared.checkpointing.lock().expect("the mutex");
                panic!("the test's panic with the mutex held");
            })
        };
        assert!(poisoner.join().is_err());
        assert!(shared.checkpointing.is_poisoned());
        files.panics.store(1, Ordering::Relaxed);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let (ask, asked) = mpsc::sync_channel(1);
        let limits = Limits {
            restart_frames: i64::MAX,
            stuck_frames: i64::MAX,
            large_file: u64::MAX,
        };
        // No copier wakes: the thread ticks in its place every `starved`.
        let starved = Duration::from_millis(50);
        let thread = checkpoint_thread(own, &files, &turn, &shared, asked, limits, starved);
        copied_after_a_panic(&writer, dir.path(), &files);
        drop(ask);
        thread
            .join()
            .expect("the thread ends when the copier is gone");
    }

    /// The scheduling policies of this process's threads whose name (as `/proc` keeps it: 15
    /// bytes) is `name`.
    #[cfg(target_os = "linux")]
    fn policies_of_threads(name: &str) -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
        {
            let dir = task.path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
            ) else {
                continue; // ended meanwhile
            };
            if comm.trim_end() == name {
                found.push(policy_in(&stat));
            }
        }
        found
    }

    /// The scheduling policy in a `/proc/…/stat` line: its 41st field, the 39th after the
    /// name.
    #[cfg(target_os = "linux")]
    fn policy_in(stat: &str) -> i64 {
        let after_name = &stat[stat.rfind(')').expect("the name's end") + 2..];
        after_name
            .split(' ')
            .nth(38)
            .and_then(|n| n.parse().ok())
            .expect("a policy")
    }

    /// Linux's number for `SCHED_IDLE`.
    #[cfg(target_os = "linux")]
    const SCHED_IDLE: i64 = 5;

    /// The copier runs under `SCHED_IDLE` and the checkpoint thread, which holds the write turn,
    /// under the policy of the thread that started the store (threads of other tests in this
    /// process included: every copier is lowered, no checkpoint thread is).
    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_copier_runs_under_sched_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_writer, _own, _wal) = setup(dir.path());
        let own = policy_in(&std::fs::read_to_string("/proc/thread-self/stat").expect("stat"));
        assert_ne!(own, SCHED_IDLE, "the test itself runs under SCHED_IDLE");
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let checkpointer =
            Checkpointer::start(&dir.path().join("db.sqlite"), Duration::from_secs(10), turn)
                .expect("start");
        // A thread takes its name (and the copier its policy) once it first runs.
        let settled = || {
            let copiers = policies_of_threads("cxauth-wal-copy");
            let checkpoint_threads = policies_of_threads("cxauth-sqlite-c");
            let done = !copiers.is_empty()
                && copiers.iter().all(|&p| p == SCHED_IDLE)
                && !checkpoint_threads.is_empty();
            (done, copiers, checkpoint_threads)
        };
        assert!(eventually(|| settled().0), "{:?}", settled());
        let (_, _, checkpoint_threads) = settled();
        assert!(
            checkpoint_threads.iter().all(|&p| p == own),
            "checkpoint threads: {checkpoint_threads:?}, the test under {own}"
        );
        drop(checkpointer);
    }
}
