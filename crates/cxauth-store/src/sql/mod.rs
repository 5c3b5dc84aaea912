//! What the SQL backends share: the queries, written once, and the mapping of driver errors.
//!
//! SQLite and PostgreSQL run the same portable SQL (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`), so each store trait is implemented once, in a file of this folder named for
//! its concern (`users.rs` implements `UserStore`, ...). Those files are plain Rust written
//! against three names their parent module gives them: `Backend` (the store type), `Db` (the
//! sqlx database) and `Conn` (its connection type). `sqlite.rs` and `postgres.rs` each include
//! every one of them as a child module (`#[path = "sql/users.rs"] mod users;`), so the same
//! source compiles once per dialect with concrete types: sqlx's per-database trait bounds would
//! otherwise have to be spelled out on every query of a generic implementation. The files are not
//! children of this module; rustfmt finds them through the `#[path]` attributes.
//!
//! The dialects differ in how a write transaction starts and how rows are locked: each backend
//! type provides `begin_write`, `lock_global`, `lock_user`, `lock_session_of_refresh` and
//! `lock_throttle` (no-ops on SQLite, whose `BEGIN IMMEDIATE` already serialises writers). One
//! query has a text per dialect, for speed: `ROTATE_WRITES`, a refresh-token rotation's writes
//! in one round trip (several statements in one query on SQLite, a data-modifying CTE on
//! PostgreSQL).

use cxauth_core::store::{ChangeBatch, ChangeKind, LocalChangeListener, StoreError, UserRecord};
use std::borrow::Cow;

/// Advisory lock key serialising account id allocation and bootstrap.
pub(crate) const LOCK_ACCOUNTS: i64 = 0x6378_6175_7468_0001;
/// Advisory lock key serialising the creation of the first signing key.
pub(crate) const LOCK_SIGNING_KEYS: i64 = 0x6378_6175_7468_0002;
/// Sub-accounts a main account can hold: ids run from `main + 1` to `main + 9999`.
pub(crate) const MAX_SUB_ACCOUNTS: i64 = 9_999;
/// First main account id.
pub(crate) const FIRST_MAIN_ACCOUNT: i64 = 10_000_000;

/// `.db()`: a driver result in the store's vocabulary (see [`map_err`]). A trait because
/// `From<sqlx::Error> for StoreError` cannot be written here (both types are foreign).
pub(crate) trait DbResult<T> {
    /// Maps the error with [`map_err`].
    fn db(self) -> Result<T, StoreError>;
}

impl<T> DbResult<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(map_err)
    }
}

/// Maps a driver error to the store's vocabulary: what a retry may fix is `Unavailable`.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: BUSY / LOCKED (and extended codes), CANTOPEN (out of descriptors).
            // PostgreSQL: connection exceptions (08xxx), shutdown (57P0x), too many connections
            // (53300), serialization (40001).
            let transient = matches!(
                code.as_ref(),
                "5" | "6" | "14" | "261" | "517" | "53300" | "40001"
            ) || code.starts_with("08")
                || code.starts_with("57P0");
            if transient {
                StoreError::Unavailable(format!("database: {}", db.message()))
            } else {
                StoreError::Internal(e.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

/// A user as a query returns it, in [`user_columns!`]'s order. Its fields are visible to the
/// crate so the SQLite backend's rusqlite writer (`sqlite/writer.rs`) fills the same struct
/// and turns it into a [`UserRecord`] through the same `From`.
/// What a refresh-token rotation does with the token it found under the session's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RotationStep {
    /// Refuse it: the session is revoked, the token expired, or the user is disabled.
    Refuse,
    /// End the session: the token was rotated before, outside the grace window (reuse).
    EndForReuse,
    /// Rotate it.
    Rotate,
}

/// The order of a rotation's checks, written once for both drivers (sqlx in `sessions.rs`,
/// rusqlite in `sqlite/writer.rs`): revocation and expiry first, then reuse (which ends even a
/// disabled user's session), then the user's enabled flag.
pub(crate) fn rotation_step(
    r: &cxauth_core::store::Rotation,
    expires_at: i64,
    rotated_at: Option<i64>,
    revoked_at: Option<i64>,
    user_enabled: bool,
) -> RotationStep {
    if revoked_at.is_some() || expires_at <= r.now {
        RotationStep::Refuse
    } else if rotated_at.is_some_and(|rotated| r.now - rotated > r.grace_ms) {
        RotationStep::EndForReuse
    } else if !user_enabled {
        RotationStep::Refuse
    } else {
        RotationStep::Rotate
    }
}

/// What a login starts, for a backend's `login_in_one_commit`: a session (a direct login or a
/// RingEX exchange) or a legacy auth token (the legacy login). Borrowed from the caller, and
/// owned (`into_owned`) only by a backend that hands it to another thread (SQLite's writer).
pub(crate) enum LoginStart<'a> {
    /// See `SessionStore::create_login_session`.
    Session(Cow<'a, cxauth_core::store::NewSession>),
    /// See `LegacyTokenStore::create_legacy_login`.
    Legacy(Cow<'a, cxauth_core::store::NewLegacyLogin>),
}

impl LoginStart<'_> {
    /// Whose login it is.
    pub(crate) fn user_id(&self) -> i64 {
        match self {
            LoginStart::Session(s) => s.user_id,
            LoginStart::Legacy(l) => l.user_id,
        }
    }

    /// The password hash the login checked, if it checked one (see [`login_may_start`]).
    pub(crate) fn expected_password_hash(&self) -> Option<&str> {
        match self {
            LoginStart::Session(s) => s.expected_password_hash.as_deref(),
            LoginStart::Legacy(l) => Some(&l.expected_password_hash),
        }
    }

    /// The same, owning what it borrowed.
    pub(crate) fn into_owned(self) -> LoginStart<'static> {
        match self {
            LoginStart::Session(s) => LoginStart::Session(Cow::Owned(s.into_owned())),
            LoginStart::Legacy(l) => LoginStart::Legacy(Cow::Owned(l.into_owned())),
        }
    }
}

/// A login's best-effort writes after its session or legacy token, where they are not in its
/// commit (`login_in_one_commit` declined): the address to remember (if any), then the audit
/// event; a failure of either is logged, never returned.
pub(crate) async fn remember_and_audit<S>(
    store: &S,
    address: Option<&cxauth_core::store::RememberAddress>,
    audit: &cxauth_core::store::AuditEvent,
) where
    S: cxauth_core::store::ThrottleStore + cxauth_core::store::AuditStore,
{
    if let Some(a) = address
        && let Err(e) = store
            .remember_login_address(&a.pair, a.user_id, a.now, a.expires_at, a.keep)
            .await
    {
        tracing::warn!(error = %e, "cannot remember the address of a successful login");
    }
    if let Err(e) = store.append_audit(audit).await {
        tracing::warn!(error = %e, event = %audit.event, "could not write the audit event");
    }
}

/// Whether a login's session or legacy token may be stored for a user found as `current` (its
/// password hash and enabled flag, read inside the login's write transaction): the user must
/// still exist, be enabled, and, when the login checked a password (`expected_password_hash`),
/// still have the hash it checked. Written once for both drivers (sqlx in `sessions.rs` and
/// `legacy.rs`, rusqlite in `sqlite/writer.rs`).
pub(crate) fn login_may_start(
    expected_password_hash: Option<&str>,
    current: Option<(String, bool)>,
) -> Result<(), StoreError> {
    match current {
        Some((hash, true)) if expected_password_hash.is_none_or(|h| h == hash) => Ok(()),
        _ => Err(StoreError::Conflict("the user changed during login".into())),
    }
}

/// A `users` row as the queries read it (the columns of [`user_columns!`], by name).
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) username: String,
    pub(crate) platform_id: String,
    pub(crate) password_hash: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) enabled: bool,
    pub(crate) parent_id: Option<i64>,
    pub(crate) parent_path: String,
    pub(crate) main_account_id: i64,
    pub(crate) roles: String,
    pub(crate) created_at: i64,
    pub(crate) rc_user_id: Option<i64>,
}

/// Written out rather than derived: the derive is sqlx's `macros` feature, which the build leaves
/// out (see `build.rs`). Each column is read by name, as the derive read it.
impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for UserRow
where
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(UserRow {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            platform_id: row.try_get("platform_id")?,
            password_hash: row.try_get("password_hash")?,
            first_name: row.try_get("first_name")?,
            last_name: row.try_get("last_name")?,
            enabled: row.try_get("enabled")?,
            parent_id: row.try_get("parent_id")?,
            parent_path: row.try_get("parent_path")?,
            main_account_id: row.try_get("main_account_id")?,
            roles: row.try_get("roles")?,
            created_at: row.try_get("created_at")?,
            rc_user_id: row.try_get("rc_user_id")?,
        })
    }
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: r.id,
            username: r.username,
            platform_id: r.platform_id,
            password_hash: r.password_hash,
            first_name: r.first_name,
            last_name: r.last_name,
            enabled: r.enabled,
            parent_id: r.parent_id,
            parent_path: r.parent_path,
            main_account_id: r.main_account_id,
            roles: r
                .roles
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: r.created_at,
            rc_user_id: r.rc_user_id,
        }
    }
}

/// The columns of [`UserRow`], each prefixed with `$p` (`""`, or `"u."` in joins): one list,
/// expanded at compile time, so the per-request look-ups run static SQL with no formatting.
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "username, ",
            $p,
            "platform_id, ",
            $p,
            "password_hash, ",
            $p,
            "first_name, ",
            $p,
            "last_name, ",
            $p,
            "enabled, ",
            $p,
            "parent_id, ",
            $p,
            "parent_path, ",
            $p,
            "main_account_id, ",
            $p,
            "roles, ",
            $p,
            "created_at, ",
            $p,
            "rc_user_id"
        )
    };
}
pub(crate) use user_columns;

/// [`user_columns!`] without a prefix, for the few queries that add their own clause.
pub(crate) const USER_COLUMNS: &str = user_columns!("");

/// "No limit", for `concat!` into a query as a literal: `LIMIT 9223372036854775807 OFFSET $n`
/// (SQLite needs a `LIMIT` before an `OFFSET`, and PostgreSQL takes no negative one).
///
/// **A `LIMIT` is never a bare parameter** in this crate's SQL. SQLite (3.51, bundled) plans
/// with the value bound to a `LIMIT` parameter (`sqlite3ExprIsInteger` marks the parameter as
/// one the plan depends on), so every new binding expires the prepared statement and its next
/// step parses and plans it again: the statement cache saves nothing. The login's trim of
/// remembered addresses and its session cap did that on every login, ~18% of the SQLite writer
/// thread's CPU (perf, docs/benchmarks-history.md "Dec 4, twelfth round"). A fixed limit is a
/// literal (this macro); a limit that varies is an expression, `LIMIT CAST($n AS BIGINT)`, which
/// SQLite evaluates when the statement runs instead of planning with it. An `OFFSET` may be a
/// parameter: SQLite does not plan with it. Two tests in `sqlite/tests.rs` hold this: the
/// writer thread's statements are never prepared again, and no source line binds a bare
/// `LIMIT`.
macro_rules! no_limit {
    () => {
        "9223372036854775807"
    };
}
pub(crate) use no_limit;

/// Advisory lock key serialising writers of the credential change log (see `changes.rs`).
pub(crate) const LOCK_CHANGES: i64 = 0x6378_6175_7468_0003;
/// The `NOTIFY` channel announcing rows of the credential change log (payload: the `seq`).
pub(crate) const CHANGES_CHANNEL: &str = "cxauth_credential_changes";

/// How a backend announces new rows of the change log: nothing by default (readers poll); the
/// PostgreSQL backend listens for its `NOTIFY`. And how it answers a poll that finds nothing
/// new without a query: not by default; the SQLite backend asks SQLite's data version
/// (`sqlite/quiet.rs`).
pub(crate) trait Watch {
    /// Starts announcing rows to `wake` (see `ChangeLogStore::watch_credential_changes`).
    fn watch(&self, wake: cxauth_core::store::ChangeWaker) {
        let _ = wake;
    }

    /// Before a read of the change log's rows after `after`: whether the backend knows the
    /// answer without a query.
    fn quiet_changes(&self, after: i64) -> BeforeRead {
        let _ = after;
        BeforeRead::Ask(None)
    }

    /// After a read of the rows after `after` that [`Watch::quiet_changes`] marked `mark`.
    fn read_changes(&self, mark: Option<i64>, after: i64, batch: &ChangeBatch) {
        let _ = (mark, after, batch);
    }
}

/// What a backend knows of a read of the change log before it is made.
pub(crate) enum BeforeRead {
    /// The answer, known without a query.
    Known(ChangeBatch),
    /// Unknown: read the database, then give [`Watch::read_changes`] this mark.
    Ask(Option<i64>),
}

/// A listener of [`RecordedChange::announce`], with the store (see `local_key` in
/// `changes.rs`) whose writes it hears: one per credential cache, so one in a server, several
/// in a test process (where two in-process instances on one database must hear each other only
/// through the database, as separate processes would).
type Listener = (usize, std::sync::Weak<LocalChangeListener>);

/// Every [`Listener`] of the process.
static LOCAL_LISTENERS: std::sync::RwLock<Vec<Listener>> = std::sync::RwLock::new(Vec::new());

/// Adds a listener of the changes committed through store `store` (dead ones are dropped on
/// the way).
pub(crate) fn listen_local(store: usize, listener: std::sync::Weak<LocalChangeListener>) {
    let mut all = LOCAL_LISTENERS.write().unwrap_or_else(|p| p.into_inner());
    all.retain(|(_, l)| l.strong_count() > 0);
    all.push((store, listener));
}

/// A change-log row written in a transaction not yet committed: announce it to this process's
/// caches once the commit returned (whatever it returned: a failed commit may have committed).
#[must_use = "announce the change after the commit"]
pub(crate) struct RecordedChange {
    pub(crate) kind: ChangeKind,
    pub(crate) key: String,
}

impl RecordedChange {
    /// Tells every live listener of store `store`.
    pub(crate) fn announce(self, store: usize) {
        let all = LOCAL_LISTENERS.read().unwrap_or_else(|p| p.into_inner());
        for (_, listener) in all.iter().filter(|(s, _)| *s == store) {
            if let Some(listener) = listener.upgrade() {
                listener(&self.kind, &self.key);
            }
        }
    }
}
