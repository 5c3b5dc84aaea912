//! Sessions and refresh tokens: creation, the per-request check, rotation, logout.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::changes::record_change;
use super::{Backend, Conn};
use crate::sql::{DbResult as _, RecordedChange, UserRow, no_limit, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{
    AuditEvent, ChangeKind, NewSession, RememberAddress, RevokeReason, RotateOutcome, Rotation,
    SessionState, SessionStore, StoreError, UserRecord,
};
use sqlx::Row as _;

#[async_trait]
impl SessionStore for Backend {
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(user_id = s.user_id, session_id = %s.session_id)
    )]
    async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // The login checked a password against a hash read earlier; a password change or a
        // disable committed since must win, or the new session would outlive it.
        Self::lock_user(&mut tx, s.user_id).await?;
        let current: Option<(String, bool)> = sqlx::query_as(SESSION_USER_NOW)
            .bind(s.user_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        crate::sql::login_may_start(s.expected_password_hash.as_deref(), current)?;
        sqlx::query(INSERT_SESSION)
            .bind(&s.session_id)
            .bind(s.user_id)
            .bind(s.now)
            .bind(s.refresh_expires_at)
            .bind(s.sso_login)
            .execute(&mut *tx)
            .await
            .db()?;
        let mut change = None;
        if s.max_sessions > 0 {
            // The user row is locked (or the database is, on SQLite): concurrent logins of
            // one user count each other, so the cap holds exactly.
            let ended = sqlx::query(END_SESSIONS_OVER_CAP)
                .bind(s.now)
                .bind("session_cap")
                .bind(s.user_id)
                .bind(i64::from(s.max_sessions) - 1)
                .bind(&s.session_id)
                .execute(&mut *tx)
                .await
                .db()?
                .rows_affected();
            if ended > 0 {
                change = Some(
                    record_change(&mut tx, ChangeKind::User, &s.user_id.to_string(), s.now).await?,
                );
            }
        }
        sqlx::query(INSERT_FIRST_REFRESH)
            .bind(s.refresh_digest.as_slice())
            .bind(&s.session_id)
            .bind(s.now)
            .bind(s.refresh_expires_at)
            .execute(&mut *tx)
            .await
            .db()?;
        let committed = tx.commit().await.db();
        if let Some(change) = change {
            change.announce(self.local_key());
        }
        committed
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(user_id = s.user_id, session_id = %s.session_id)
    )]
    async fn create_login_session(
        &self,
        s: &NewSession,
        address: Option<&RememberAddress>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let start = crate::sql::LoginStart::Session(std::borrow::Cow::Borrowed(s));
        if let Some(done) = self.login_in_one_commit(start, address, audit).await {
            return done;
        }
        self.create_session(s).await?;
        crate::sql::remember_and_audit(self, address, audit).await;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id))]
    async fn session_state(&self, session_id: &str) -> Result<Option<SessionState>, StoreError> {
        // Runs on every bearer request: static SQL, nothing formatted.
        let sql = concat!(
            "SELECT s.revoked_at IS NOT NULL AS revoked, ",
            user_columns!("u."),
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
        );
        let row = sqlx::query(sql)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        let Some(row) = row else { return Ok(None) };
        let revoked: bool = row.get(0);
        let user = <UserRow as sqlx::FromRow<_>>::from_row(&row).db()?;
        Ok(Some(SessionState {
            revoked,
            user: user.into(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate_refresh_token(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        // SQLite groups concurrent rotations into one commit; PostgreSQL runs each in its own
        // transaction under the session's row lock (see each backend's `rotate`).
        self.rotate(r).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(reason = reason.as_str()))]
    async fn revoke_session_by_refresh(
        &self,
        digest: &[u8; 32],
        reason: RevokeReason,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: Option<(String, i64)> = sqlx::query_as(
            "SELECT r.session_id, s.user_id FROM refresh_tokens r \
                 JOIN sessions s ON s.id = r.session_id \
                 WHERE r.digest = $1 AND r.expires_at > $2",
        )
        .bind(digest.as_slice())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some((session_id, user_id)) = found else {
            return Ok(None);
        };
        let ended = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason.as_str())
        .bind(&session_id)
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        let change = if ended > 0 {
            Some(record_change(&mut tx, ChangeKind::Session, &session_id, now).await?)
        } else {
            None
        };
        let committed = tx.commit().await.db();
        if let Some(change) = change {
            change.announce(self.local_key());
        }
        committed?;
        Ok(Some(user_id))
    }
}

/// A rotation's read: the presented token (`$1`, its digest), its session and the session's
/// user (columns 5.. are [`user_columns!`], in [`UserRow`]'s order). Shared with the SQLite
/// backend's rusqlite writer (`sqlite/writer.rs`), which must run the same query.
/// The user as a new session finds it (`$1` the user id): its password hash and whether it is
/// enabled, checked against what the login read. Shared with the SQLite writer thread
/// (`sqlite/writer.rs`), as are the session's other statements below.
pub(crate) const SESSION_USER_NOW: &str = "SELECT password_hash, enabled FROM users WHERE id = $1";

/// A new session: `$1` its id, `$2` the user, `$3` now, `$4` its expiry, `$5` `sso_login`.
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, created_at, expires_at, sso_login) VALUES ($1, $2, $3, $4, $5)";

/// Ends the user's live sessions beyond the cap, newest kept: `$1` now, `$2` the reason, `$3`
/// the user, `$4` the cap less one (the new session, `$5`, is not counted: it is the one that
/// stays). "No limit" is a literal, not a parameter: see `crate::sql::no_limit!`.
pub(crate) const END_SESSIONS_OVER_CAP: &str = concat!(
    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id IN \
     (SELECT id FROM sessions WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 \
     AND id <> $5 ORDER BY created_at DESC, id DESC LIMIT ",
    no_limit!(),
    " OFFSET $4)"
);

/// A session's first refresh token: `$1` its digest, `$2` the session, `$3` now, `$4` expiry.
pub(crate) const INSERT_FIRST_REFRESH: &str = "INSERT INTO refresh_tokens \
     (digest, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)";

pub(crate) const ROTATE_READ: &str = concat!(
    "SELECT t.session_id, t.expires_at AS token_expires_at, t.rotated_at, s.revoked_at, ",
    "s.sso_login, ",
    user_columns!("u."),
    " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id ",
    "JOIN users u ON u.id = s.user_id WHERE t.digest = $1"
);

/// A detected reuse ends the session: `$1` now, `$2` the reason, `$3` the session id. Shared
/// with the rusqlite writer (see [`ROTATE_READ`]).
pub(crate) const REVOKE_FOR_REUSE: &str =
    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3";

/// One rotation inside the caller's write transaction `tx` (the caller commits, whatever the
/// outcome: an outcome that wrote nothing commits nothing). On an error the caller must roll
/// back what this wrote. A reuse ends the session and returns its change-log row, for the
/// caller to announce to this process's caches once the transaction has ended.
///
/// Three statements in the common case (a lock that is free on SQLite, one read, one write):
/// every statement is a round trip to the driver (on SQLite, to its worker thread), and they
/// were most of a refresh's cost (docs/benchmarks-history.md, "Refresh: where a rotation's cost
/// goes").
pub(super) async fn rotate_in(
    tx: &mut Conn,
    r: &Rotation,
) -> Result<(RotateOutcome, Option<RecordedChange>), StoreError> {
    // Every rotation of one session runs under the session's lock, so concurrent refreshes
    // (on any instance) see each other's results and the session never forks.
    if !Backend::lock_session_of_refresh(&mut *tx, &r.presented).await? {
        return Ok((RotateOutcome::Invalid, None));
    }
    // The token, its session and the session's user in one read, taken under that lock. The
    // user always exists (`sessions.user_id` is a foreign key).
    let row = sqlx::query(ROTATE_READ)
        .bind(r.presented.as_slice())
        .fetch_optional(&mut *tx)
        .await
        .db()?;
    let Some(row) = row else {
        return Ok((RotateOutcome::Invalid, None));
    };
    let session_id: String = row.get(0);
    let expires_at: i64 = row.get(1);
    let rotated_at: Option<i64> = row.get(2);
    let revoked_at: Option<i64> = row.get(3);
    let sso_login: bool = row.get(4);
    let user: UserRecord = <UserRow as sqlx::FromRow<_>>::from_row(&row).db()?.into();
    let step = crate::sql::rotation_step(r, expires_at, rotated_at, revoked_at, user.enabled);
    if step == crate::sql::RotationStep::Refuse {
        return Ok((RotateOutcome::Invalid, None));
    }
    if step == crate::sql::RotationStep::EndForReuse {
        sqlx::query(REVOKE_FOR_REUSE)
            .bind(r.now)
            .bind(RevokeReason::Reuse.as_str())
            .bind(&session_id)
            .execute(&mut *tx)
            .await
            .db()?;
        let change = record_change(tx, ChangeKind::Session, &session_id, r.now).await?;
        return Ok((
            RotateOutcome::Reused {
                session_id,
                user_id: user.id,
            },
            Some(change),
        ));
    }
    // One statement (see each backend's `ROTATE_WRITES`): retire every live token of the
    // session (the presented one, or on a grace retry the successor issued moments ago), so
    // the session always has exactly one live token; store the successor; extend the session
    // if the successor would outlive it.
    sqlx::query(Backend::ROTATE_WRITES)
        .bind(r.successor.as_slice())
        .bind(&session_id)
        .bind(r.now)
        .bind(r.successor_expires_at)
        .bind(r.session_expires_at)
        .execute(&mut *tx)
        .await
        .db()?;
    Ok((
        RotateOutcome::Rotated {
            session_id,
            user: Box::new(user),
            sso_login,
        },
        None,
    ))
}
