//! The rotation writer: refresh-token rotations, and logins' writes, committed through
//! `rusqlite` on a connection and a thread of their own (issue 14).
//!
//! Through sqlx every statement is a hand-off to the connection's worker thread and back (two
//! or more futex wake-ups each; a rotation is 4 of them with `BEGIN` and `COMMIT`), and the
//! pool hands each write to whichever connection is idle, whose page cache another connection
//! has made stale. An experiment measured 285–746 µs of CPU per rotation through sqlx against
//! 118–219 µs through `rusqlite` with cached statements (docs/benchmarks-history.md, "Refresh:
//! where a rotation's cost goes"). Here a whole group of rotations is one hand-off.
//!
//! **Why a dedicated thread fed by a channel**, not `spawn_blocking` with the connection behind
//! a mutex: one thread keeps the connection, its statement cache and its page cache warm on one
//! core's caches; `spawn_blocking` would take a pool thread (maybe a new one after its idle
//! timeout) and a mutex per group for the same work. The thread also receives the write turn
//! with the group and drops it after the commit, so no async task has to wait for it. It ends
//! when the store's last clone is dropped (the channel closes). A job that panics (a bug) is
//! logged and costs only itself: its callers are told the database is unavailable, and the
//! thread goes on with a new connection, the old one's close rolling back what the job left
//! open (`sqlite::survive`, `recover`).
//!
//! The semantics are those of `commit_group` and `sessions::rotate_in` (sqlx) exactly: the same
//! SQL text (shared constants), arrival order, one savepoint per rotation in a group, reuse
//! recorded in the change log and announced after the commit, errors mapped as `map_err` maps
//! sqlx's. A login's job is `create_session` (or, for the legacy login, `insert_legacy_token`),
//! `remember_login_address` (unless a RingEX exchange) and `append_audit` (sqlx) in one
//! transaction: the same statements, the last two each in a savepoint, so that either failing
//! is logged and rolled back alone, as when they run on their own. The process's write turn
//! (`SqliteStore::write_turn`) is held from before `BEGIN IMMEDIATE` until after `COMMIT`, so
//! this connection and the sqlx pool never both hold SQLite's write lock from this process.

use super::{PendingRotation, ROTATE_EXTEND, ROTATE_INSERT, ROTATE_RETIRE};
use crate::sql::{LoginStart, RecordedChange, UserRow};
use cxauth_core::store::{
    AuditEvent, ChangeKind, NewSession, RememberAddress, RevokeReason, RotateOutcome, Rotation,
    StoreError, UserRecord,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, named_params};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// The audit detail that makes a direct login's job panic once its session is written (tests
/// only: see `a_panicking_job_costs_only_itself`).
#[cfg(test)]
pub(super) const PANIC_FOR_TEST: &str = "panic in the writer's job (test)";

/// Work for the writer thread, with the write turn it commits under.
struct Job {
    work: Work,
    turn: tokio::sync::OwnedMutexGuard<()>,
}

/// What a job commits.
enum Work {
    /// A group of rotations.
    Rotations(Vec<PendingRotation>),
    /// A login's writes (boxed: a group is a pointer and two words).
    Login(Box<PendingLogin>),
}

/// A login's writes (see `SessionStore::create_login_session` and
/// `LegacyTokenStore::create_legacy_login`), and where the outcome goes.
pub(super) struct PendingLogin {
    pub(super) start: LoginStart<'static>,
    /// The address to remember (a direct or legacy login's); `None` for a RingEX exchange.
    pub(super) address: Option<RememberAddress>,
    pub(super) audit: AuditEvent,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// The handle to the writer thread: dropping the last one (with the store's last clone) closes
/// the channel, and the thread ends after the group in hand.
#[derive(Debug)]
pub(super) struct RotationWriter {
    jobs: mpsc::Sender<Job>,
    /// Held by the thread while it runs (see [`RotationWriter::alive`]).
    #[cfg(test)]
    alive: std::sync::Weak<()>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Job");
        match &self.work {
            Work::Rotations(group) => d.field("group", &group.len()),
            Work::Login(_) => d.field("login", &true),
        };
        d.finish()
    }
}

/// Opens a connection on the database file with the pool's settings: WAL (already the file's
/// mode; set again so a wrong mode fails here), `synchronous = FULL` (each commit durable
/// before it is answered), foreign keys on, the pool's busy timeout, and no automatic
/// checkpoint: the checkpointer (`sqlite/checkpoint.rs`) does it off the commit path.
pub(super) fn open_connection(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// The writer thread's connection: [`open_connection`]'s, keeping every statement the thread
/// runs prepared (rotations and logins: under 32 texts).
fn writer_connection(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = open_connection(path, busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// After a job panicked: a new connection in place of `conn`, so that no transaction, savepoint
/// or statement of the job is left open. Closing the old one rolls back what it held (and its
/// write lock goes with it). If no new one can be opened, the old one is kept, rolled back.
fn recover(conn: &mut Connection, path: &Path, busy_timeout: Duration) {
    match writer_connection(path, busy_timeout) {
        Ok(new) => drop(std::mem::replace(conn, new)),
        Err(e) => {
            tracing::error!(error = %e, "cannot reopen the SQLite writer's connection");
            if !conn.is_autocommit()
                && let Err(e) = conn.execute_batch("ROLLBACK")
            {
                tracing::error!(error = %e, "cannot roll back the SQLite writer's transaction");
            }
        }
    }
}

impl RotationWriter {
    /// Opens the writer's connection and starts its thread. `local` names the store for the
    /// announcements of reuses (see `local_key`).
    pub(super) fn start(
        path: &Path,
        busy_timeout: Duration,
        local: usize,
    ) -> Result<Self, StoreError> {
        let mut conn = writer_connection(path, busy_timeout).map_err(map_err)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let alive = std::sync::Arc::new(());
        #[cfg(test)]
        let weak = std::sync::Arc::downgrade(&alive);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("cxauth-sqlite-writer".into())
            .spawn(move || {
                let _alive = alive;
                while let Ok(Job { work, turn }) = rx.recv() {
                    let panicked = super::survive("the SQLite writer's job", || match work {
                        Work::Rotations(group) => commit_group(&mut conn, local, group),
                        Work::Login(login) => commit_login(&mut conn, local, *login),
                    });
                    // Its callers are told the database is unavailable (their replies were
                    // dropped unanswered). Before its commit, what it wrote is rolled back
                    // here, before the turn goes; after it, what it committed stays, untold,
                    // as after a crash.
                    if panicked {
                        recover(&mut conn, &path, busy_timeout);
                    }
                    drop(turn);
                }
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the SQLite writer: {e}")))?;
        Ok(RotationWriter {
            jobs,
            #[cfg(test)]
            alive: weak,
        })
    }

    /// Hands `group` and the turn it holds to the writer thread. If the thread is gone (it
    /// cannot end while this handle lives, short of a panic), every member is told the
    /// database is unavailable and the turn is released.
    pub(super) fn submit(
        &self,
        group: Vec<PendingRotation>,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) {
        let work = Work::Rotations(group);
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { work, turn })
            && let Work::Rotations(group) = job.work
        {
            for p in group {
                let _ = p.reply.send(Err(stopped()));
            }
        }
    }

    /// Hands a login's writes and the turn it holds to the writer thread; if the thread is
    /// gone, the login is told the database is unavailable and the turn is released.
    pub(super) fn submit_login(&self, login: PendingLogin, turn: tokio::sync::OwnedMutexGuard<()>) {
        let work = Work::Login(Box::new(login));
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { work, turn })
            && let Work::Login(login) = job.work
        {
            let _ = login.reply.send(Err(stopped()));
        }
    }

    /// Whether the thread still runs (for the tests that check it ends with the store).
    #[cfg(test)]
    pub(super) fn alive(&self) -> std::sync::Weak<()> {
        self.alive.clone()
    }
}

/// What the callers of a writer that has stopped are told.
fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite rotation writer stopped".into())
}

/// Maps a `rusqlite` error as `crate::sql::map_err` maps sqlx's: a unique (or primary key)
/// violation is a conflict; SQLite's BUSY and LOCKED (any extended code) are `Unavailable`,
/// which a retry may fix; the rest is internal.
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    if let rusqlite::Error::SqliteFailure(f, message) = &e {
        let message = message.clone().unwrap_or_else(|| f.to_string());
        match f.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return StoreError::Conflict(message);
            }
            _ if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
            ) =>
            {
                return StoreError::Unavailable(format!("database: {message}"));
            }
            _ => {}
        }
    }
    StoreError::Internal(e.to_string())
}

/// Runs one statement that takes no parameters, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(map_err)
}

/// `commit_group` on this connection: `group` in one `BEGIN IMMEDIATE` transaction (each
/// rotation in a savepoint when there are several), one commit, the reuses announced to the
/// caches of store `local`, then every rotation answered: its own outcome if the commit
/// succeeded, the commit's error otherwise. The caller holds the write turn throughout.
fn commit_group(conn: &mut Connection, local: usize, group: Vec<PendingRotation>) {
    let mut outcomes = Vec::with_capacity(group.len());
    let mut changes = Vec::new();
    let committed = run_group(conn, &group, &mut outcomes, &mut changes);
    if committed.is_err() && !conn.is_autocommit() {
        // The transaction is still open (an error before or at COMMIT): end it, as dropping
        // sqlx's `Transaction` does. If even that fails the connection is unusable; the next
        // group's BEGIN will say so.
        let _ = run(conn, "ROLLBACK");
    }
    super::answer_group(local, group, outcomes, changes, committed);
}

/// The transaction of [`commit_group`], up to and including its `COMMIT`; on an error the
/// caller rolls back.
fn run_group(
    conn: &Connection,
    group: &[PendingRotation],
    outcomes: &mut Vec<Result<RotateOutcome, StoreError>>,
    changes: &mut Vec<RecordedChange>,
) -> Result<(), StoreError> {
    run(conn, "BEGIN IMMEDIATE")?;
    if let [single] = group {
        // Alone (the usual case when commits are quick): no savepoint; an error rolls the
        // whole transaction back.
        let (outcome, change) = rotate_in(conn, &single.rotation)?;
        outcomes.push(Ok(outcome));
        changes.extend(change);
        return run(conn, "COMMIT");
    }
    for p in group {
        run(conn, "SAVEPOINT rotation")?;
        let outcome = rotate_in(conn, &p.rotation);
        if outcome.is_err() {
            run(conn, "ROLLBACK TO rotation")?;
        }
        run(conn, "RELEASE rotation")?;
        outcomes.push(outcome.map(|(outcome, change)| {
            changes.extend(change);
            outcome
        }));
    }
    run(conn, "COMMIT")
}

/// `create_login_session`'s (or `create_legacy_login`'s) one transaction on this connection:
/// the session as `create_session` makes it (or the legacy token as `insert_legacy_token`
/// does), then the address (if any) and the audit event, each best effort; one
/// commit. The change the session cap made (if any) is announced to the caches of store `local`
/// whether or not the commit held, as `create_session` does; then the login is answered. The
/// caller holds the write turn throughout.
fn commit_login(conn: &mut Connection, local: usize, login: PendingLogin) {
    let mut change = None;
    let committed = run_login(conn, &login, &mut change);
    if committed.is_err() && !conn.is_autocommit() {
        let _ = run(conn, "ROLLBACK");
    }
    if let Some(change) = change {
        change.announce(local);
    }
    // The caller may be gone (its client disconnected): nothing to tell.
    let _ = login.reply.send(committed);
}

/// The transaction of [`commit_login`], up to and including its `COMMIT`; on an error the
/// caller rolls back.
fn run_login(
    conn: &Connection,
    login: &PendingLogin,
    change: &mut Option<RecordedChange>,
) -> Result<(), StoreError> {
    use super::{audit, legacy, sessions, throttle};
    run(conn, "BEGIN IMMEDIATE")?;
    // As `create_session` and `insert_legacy_token`: a password change or a disable committed
    // since the login read the user wins.
    let current: Option<(String, bool)> = conn
        .prepare_cached(sessions::SESSION_USER_NOW)
        .and_then(|mut st| {
            st.query_row(named_params! {"$1": login.start.user_id()}, |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(map_err)?;
    crate::sql::login_may_start(login.start.expected_password_hash(), current)?;
    match &login.start {
        LoginStart::Session(s) => {
            insert_session(conn, s, change)?;
            // The tests' stand-in for a bug: a panic with the session written, uncommitted.
            #[cfg(test)]
            if login.audit.detail == PANIC_FOR_TEST {
                panic!("the test's panic in the writer's job");
            }
        }
        LoginStart::Legacy(l) => {
            execute(
                conn,
                legacy::INSERT_LEGACY_TOKEN,
                named_params! {
                    "$1": l.digest.as_slice(),
                    "$2": l.user_id,
                    "$3": l.now,
                    "$4": l.token.expires_at,
                    "$5": l.token.lifetime_ms,
                },
            )?;
        }
    }
    if let Some(a) = &login.address {
        best_effort(
            conn,
            "cannot remember the address of a successful login",
            || {
                execute(
                    conn,
                    throttle::REMEMBER_ADDRESS,
                    named_params! {
                        "$1": a.pair.as_slice(),
                        "$2": a.user_id,
                        "$3": a.now,
                        "$4": a.expires_at,
                    },
                )?;
                execute(
                    conn,
                    throttle::FORGET_OLD_ADDRESSES,
                    named_params! {"$1": a.user_id, "$2": i64::from(a.keep)},
                )
                .map(drop)
            },
        )?;
    }
    let e = &login.audit;
    best_effort(conn, "could not write the audit event", || {
        execute(
            conn,
            audit::INSERT_AUDIT,
            named_params! {
                "$1": e.at,
                "$2": &e.event,
                "$3": &e.outcome,
                "$4": e.user_id,
                "$5": &e.username,
                "$6": &e.addr,
                "$7": &e.request_id,
                "$8": &e.detail,
            },
        )
        .map(drop)
    })?;
    run(conn, "COMMIT")
}

/// A session as `create_session` makes it, in the caller's transaction: the session, the cap
/// (ending the user's oldest beyond it, noted in `change`), the first refresh token.
fn insert_session(
    conn: &Connection,
    s: &NewSession,
    change: &mut Option<RecordedChange>,
) -> Result<(), StoreError> {
    use super::sessions;
    execute(
        conn,
        sessions::INSERT_SESSION,
        named_params! {
            "$1": &s.session_id,
            "$2": s.user_id,
            "$3": s.now,
            "$4": s.refresh_expires_at,
            "$5": s.sso_login,
        },
    )?;
    if s.max_sessions > 0 {
        let ended = execute(
            conn,
            sessions::END_SESSIONS_OVER_CAP,
            named_params! {
                "$1": s.now,
                "$2": "session_cap",
                "$3": s.user_id,
                "$4": i64::from(s.max_sessions) - 1,
                "$5": &s.session_id,
            },
        )?;
        if ended > 0 {
            *change = Some(record_change(
                conn,
                ChangeKind::User,
                &s.user_id.to_string(),
                s.now,
            )?);
        }
    }
    execute(
        conn,
        sessions::INSERT_FIRST_REFRESH,
        named_params! {
            "$1": s.refresh_digest.as_slice(),
            "$2": &s.session_id,
            "$3": s.now,
            "$4": s.refresh_expires_at,
        },
    )?;
    Ok(())
}

/// Runs `write` in a savepoint of the caller's transaction: if it fails, the failure is logged
/// (as `what`) and only its own writes are rolled back.
fn best_effort(
    conn: &Connection,
    what: &str,
    write: impl FnOnce() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    run(conn, "SAVEPOINT best_effort")?;
    if let Err(e) = write() {
        tracing::warn!(error = %e, "{what}");
        run(conn, "ROLLBACK TO best_effort")?;
    }
    run(conn, "RELEASE best_effort")
}

/// Runs one statement with named parameters, prepared once per connection; the rows changed.
fn execute(
    conn: &Connection,
    sql: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(map_err)
}

/// What a rotation's read returns.
struct Found {
    session_id: String,
    expires_at: i64,
    rotated_at: Option<i64>,
    revoked_at: Option<i64>,
    sso_login: bool,
    user: UserRecord,
}

/// Reads the row of [`super::sessions::ROTATE_READ`]: five columns, then the user's in
/// `user_columns!` order, turned into a [`UserRecord`] through the same `UserRow` as sqlx's
/// `FromRow`.
fn found(row: &rusqlite::Row<'_>) -> rusqlite::Result<Found> {
    let user = UserRow {
        id: row.get(5)?,
        username: row.get(6)?,
        platform_id: row.get(7)?,
        password_hash: row.get(8)?,
        first_name: row.get(9)?,
        last_name: row.get(10)?,
        enabled: row.get(11)?,
        parent_id: row.get(12)?,
        parent_path: row.get(13)?,
        main_account_id: row.get(14)?,
        roles: row.get(15)?,
        created_at: row.get(16)?,
        rc_user_id: row.get(17)?,
    };
    Ok(Found {
        session_id: row.get(0)?,
        expires_at: row.get(1)?,
        rotated_at: row.get(2)?,
        revoked_at: row.get(3)?,
        sso_login: row.get(4)?,
        user: user.into(),
    })
}

/// `sessions::rotate_in` on this connection, inside the caller's transaction: the same read,
/// the same decisions in the same order, the same writes (the three of `ROTATE_WRITES` as three
/// cached statements, since a prepared statement holds one).
fn rotate_in(
    conn: &Connection,
    r: &Rotation,
) -> Result<(RotateOutcome, Option<RecordedChange>), StoreError> {
    let found = conn
        .prepare_cached(super::sessions::ROTATE_READ)
        .and_then(|mut s| {
            s.query_row(named_params! {"$1": r.presented.as_slice()}, found)
                .optional()
        })
        .map_err(map_err)?;
    let Some(Found {
        session_id,
        expires_at,
        rotated_at,
        revoked_at,
        sso_login,
        user,
    }) = found
    else {
        return Ok((RotateOutcome::Invalid, None));
    };
    let step = crate::sql::rotation_step(r, expires_at, rotated_at, revoked_at, user.enabled);
    if step == crate::sql::RotationStep::Refuse {
        return Ok((RotateOutcome::Invalid, None));
    }
    if step == crate::sql::RotationStep::EndForReuse {
        conn.prepare_cached(super::sessions::REVOKE_FOR_REUSE)
            .and_then(|mut s| {
                s.execute(named_params! {
                    "$1": r.now,
                    "$2": RevokeReason::Reuse.as_str(),
                    "$3": &session_id,
                })
            })
            .map_err(map_err)?;
        let change = record_change(conn, ChangeKind::Session, &session_id, r.now)?;
        return Ok((
            RotateOutcome::Reused {
                session_id,
                user_id: user.id,
            },
            Some(change),
        ));
    }
    let successor = r.successor.as_slice();
    conn.prepare_cached(ROTATE_RETIRE)
        .and_then(|mut s| s.execute(named_params! {"$2": &session_id, "$3": r.now}))
        .map_err(map_err)?;
    conn.prepare_cached(ROTATE_INSERT)
        .and_then(|mut s| {
            s.execute(named_params! {
                "$1": successor,
                "$2": &session_id,
                "$3": r.now,
                "$4": r.successor_expires_at,
            })
        })
        .map_err(map_err)?;
    conn.prepare_cached(ROTATE_EXTEND)
        .and_then(|mut s| {
            s.execute(named_params! {
                "$2": &session_id,
                "$4": r.successor_expires_at,
                "$5": r.session_expires_at,
            })
        })
        .map_err(map_err)?;
    Ok((
        RotateOutcome::Rotated {
            session_id,
            user: Box::new(user),
            sso_login,
        },
        None,
    ))
}

/// `changes::record_change` on this connection (SQLite: the row alone; its single writer
/// orders the log).
fn record_change(
    conn: &Connection,
    kind: ChangeKind,
    key: &str,
    at: i64,
) -> Result<RecordedChange, StoreError> {
    conn.prepare_cached(super::changes::INSERT_CHANGE)
        .and_then(|mut s| {
            s.query_row(
                named_params! {"$1": kind.as_str(), "$2": key, "$3": at},
                |row| row.get::<_, i64>(0),
            )
        })
        .map_err(map_err)?;
    Ok(RecordedChange {
        kind,
        key: key.to_owned(),
    })
}
