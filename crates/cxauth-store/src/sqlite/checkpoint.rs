//! The background checkpointer: copies the WAL back into the database file on a thread and a
//! connection of its own, so that no commit pays for it (issue 14).
//!
//! By default SQLite checkpoints inside whichever commit takes the WAL past 1,000 pages: that
//! commit copies the pages and, with `synchronous = FULL`, fsyncs the database file before it
//! returns, on a refresh's path (the first suspect for the half-load p99 of 99 ms in one run in
//! five). The store's committing connections (the sqlx pool and the rotation writer) therefore
//! run with `wal_autocheckpoint = 0`, and this thread runs `PRAGMA wal_checkpoint(PASSIVE)`
//! every [`INTERVAL`]. A passive checkpoint takes no lock that writers wait for: it copies what
//! no reader still needs, and when it has copied everything, the next writer starts the WAL over
//! from its beginning, so the file stays bounded by what is written between two ticks.
//!
//! A passive checkpoint alone does not bound the file under steady load, measured: SQLite
//! starts the WAL over only when a write transaction begins while every frame is copied back,
//! and with writes always in flight the checkpointer never catches the last commit (8 writers,
//! 3,000 rotations: a 66 MB WAL). So when the WAL holds more than [`RESTART_FRAMES`] frames
//! after a tick's passive checkpoint, the thread takes the process's write turn (the queue the
//! rotation writer and the sqlx writers wait in), checkpoints again (only the frames committed
//! since the first, then the database file's fsync) and lets the turn go: the next writer
//! starts the WAL over. Writers wait for that second checkpoint (a few milliseconds), once per
//! `RESTART_FRAMES` written, where SQLite's automatic checkpoint made one commit copy 1,000
//! pages and fsync every 1,000 pages.
//!
//! Readers that always hold an old snapshot can keep even that from finishing. When the WAL
//! still holds more than [`STUCK_FRAMES`] uncopied frames, or a burst left the file larger than
//! [`LARGE_FILE`], the thread runs a `TRUNCATE` checkpoint under the turn, which waits (busy
//! timeout) for the readers, copies everything and empties the file.
//!
//! A tick that found every frame copied back has nothing to do until some connection commits
//! again, so the next ticks are skipped until SQLite's data version moves (`PRAGMA
//! data_version`, asked on the thread's own connection, which never commits; it reads the WAL
//! index in shared memory). Each skipped tick doubles the wait before the next, up to
//! [`IDLE_INTERVAL`], and a tick that runs brings it back to [`INTERVAL`]: on the benchmark VM
//! each wake-up of the thread cost ~0.1 ms of CPU, checkpoint or not, so an idle server's
//! thread now wakes twice a second instead of ten times.
//!
//! The thread ends when the store's last clone is dropped (the channel closes).

use super::writer::open_connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
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
    /// The thresholds the thread runs with.
    const DEFAULT: Limits = Limits {
        restart_frames: RESTART_FRAMES,
        stuck_frames: STUCK_FRAMES,
        large_file: LARGE_FILE,
    };
}

/// The handle to the checkpointer thread: dropping it (with the store's last clone) ends it.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
    /// Held by the thread while it runs (see [`Checkpointer::alive`]).
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

impl Checkpointer {
    /// Opens the checkpointer's connection on `path` and starts its thread; `turn` is the
    /// store's write turn (`SqliteStore::write_turn`).
    pub(super) fn start(
        path: &Path,
        busy_timeout: Duration,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, String> {
        let conn = open_connection(path, busy_timeout).map_err(|e| e.to_string())?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, stopped) = mpsc::channel::<()>();
        let alive = std::sync::Arc::new(());
        #[cfg(test)]
        let weak = std::sync::Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("cxauth-sqlite-checkpoint".into())
            .spawn(move || {
                let _alive = alive;
                let mut settled = Settled::default();
                let mut wait = INTERVAL;
                // Nothing is ever sent: the loop ends when the sender is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    let ran = settled.tick_if_due(&conn, &wal, &turn, Limits::DEFAULT);
                    wait = next_wait(wait, ran);
                }
            })
            .map_err(|e| format!("cannot start the SQLite checkpointer: {e}"))?;
        Ok(Checkpointer {
            _stop: stop,
            #[cfg(test)]
            alive: weak,
        })
    }

    /// Whether the thread still runs (for the tests that check it ends with the store).
    #[cfg(test)]
    pub(super) fn alive(&self) -> std::sync::Weak<()> {
        self.alive.clone()
    }
}

/// The data version at which the last tick found nothing left to do, if it did.
#[derive(Debug, Default)]
struct Settled(Option<i64>);

impl Settled {
    /// Runs a [`tick`] unless the last one left nothing to do and no connection has committed
    /// since; says whether it ran. A version that cannot be read never skips a tick.
    fn tick_if_due(
        &mut self,
        conn: &rusqlite::Connection,
        wal: &Path,
        turn: &tokio::sync::Mutex<()>,
        limits: Limits,
    ) -> bool {
        let version = super::quiet::data_version(conn);
        if version.is_some() && version == self.0 {
            return false;
        }
        self.0 = if tick(conn, wal, turn, limits) {
            version
        } else {
            None
        };
        true
    }
}

/// One tick: a passive checkpoint; if the WAL is long, another under the write turn so that it
/// starts over; a truncating one if readers keep it from being copied or the file is large.
/// Errors are logged and the next tick tries again. Returns whether it found nothing to do:
/// every frame already copied back and the file small, so that until another commit, a tick
/// would find the same.
fn tick(
    conn: &rusqlite::Connection,
    wal: &Path,
    turn: &tokio::sync::Mutex<()>,
    limits: Limits,
) -> bool {
    let mut last = match checkpoint(conn, "PASSIVE") {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "SQLite passive checkpoint failed");
            return false;
        }
    };
    let large = || std::fs::metadata(wal).is_ok_and(|m| m.len() > limits.large_file);
    let truncate = |left: i64| left > limits.stuck_frames || (left == 0 && large());
    let left = last.log - last.checkpointed;
    if last.log <= limits.restart_frames && !truncate(left) {
        // `truncate(0)` was false: the file is small.
        return left == 0;
    }
    // This thread is no task of the runtime: it may block on the turn.
    let _turn = turn.blocking_lock();
    let _held = HoldTimer(std::time::Instant::now());
    if last.log > limits.restart_frames {
        last = match checkpoint(conn, "PASSIVE") {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "SQLite passive checkpoint failed");
                return false;
            }
        };
    }
    let left = last.log - last.checkpointed;
    if truncate(left) {
        match checkpoint(conn, "TRUNCATE") {
            Ok(r) => tracing::info!(
                left_by_passive = left,
                busy = r.busy,
                "SQLite WAL truncated by a blocking checkpoint"
            ),
            Err(e) => tracing::warn!(error = %e, "SQLite truncating checkpoint failed"),
        }
    }
    // The next tick finds out what this one left.
    false
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

    /// A database in WAL mode with table `t`, the checkpointer's own connection, and the WAL's
    /// path.
    fn setup(dir: &Path) -> (rusqlite::Connection, rusqlite::Connection, PathBuf) {
        let path = dir.join("db.sqlite");
        std::fs::File::create(&path).expect("create");
        let writer = open_connection(&path, Duration::from_secs(10)).expect("open");
        writer
            .execute("CREATE TABLE t (x BLOB NOT NULL)", [])
            .expect("create table");
        let own = open_connection(&path, Duration::from_secs(10)).expect("open");
        (writer, own, dir.join("db.sqlite-wal"))
    }

    /// `n` rows of 4 KiB: a page or two each in the WAL.
    fn write(conn: &rusqlite::Connection, n: usize) {
        for _ in 0..n {
            conn.execute("INSERT INTO t (x) VALUES (zeroblob(4096))", [])
                .expect("insert");
        }
    }

    fn wal_len(wal: &Path) -> u64 {
        std::fs::metadata(wal).expect("the WAL").len()
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
        let mut tick = || settled.tick_if_due(&own, &wal, &turn, limits);

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
}
