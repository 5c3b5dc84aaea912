//! The credential change log: the rows every write that ends or alters a credential adds in its
//! own transaction ([`record_change`]), and their reading and pruning by the caches.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::{Backend, Conn, Db};
use crate::sql::{BeforeRead, DbResult as _, LOCK_CHANGES, RecordedChange, Watch as _};
use async_trait::async_trait;
use cxauth_core::store::{
    ChangeBatch, ChangeKind, ChangeLogStore, ChangeWaker, CredentialChange, LocalChangeListener,
    StoreError,
};
use sqlx::Row as _;

/// Whether this dialect is PostgreSQL (several writers at once; `NOTIFY`).
fn is_postgres() -> bool {
    <Db as sqlx::Database>::NAME == "PostgreSQL"
}

/// The change-log row of [`record_change`]: `$1` the kind, `$2` the key, `$3` when. Shared with
/// the SQLite backend's rusqlite writer (`sqlite/writer.rs`), which records reuses the same way.
pub(crate) const INSERT_CHANGE: &str =
    "INSERT INTO credential_changes (kind, key, at) VALUES ($1, $2, $3) RETURNING seq";

/// Adds a row to the change log inside the caller's write transaction, so the row commits (and
/// becomes visible) exactly when the change does, and not at all if it rolls back.
///
/// On PostgreSQL, rows must become visible in `seq` order, or a reader that has seen row 6
/// could skip row 5 committed just after: writers of the log therefore queue on an advisory
/// lock held to their commit (taken last, after every row lock of the transaction, so it adds
/// no lock-order cycle), and announce the row with `NOTIFY`, delivered at commit. SQLite's
/// single writer gives the order for free.
pub(super) async fn record_change(
    conn: &mut Conn,
    kind: ChangeKind,
    key: &str,
    at: i64,
) -> Result<RecordedChange, StoreError> {
    if is_postgres() {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_CHANGES)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    let seq: i64 = sqlx::query_scalar(INSERT_CHANGE)
        .bind(kind.as_str())
        .bind(key)
        .bind(at)
        .fetch_one(&mut *conn)
        .await
        .db()?;
    if is_postgres() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::sql::CHANGES_CHANNEL)
            .bind(seq.to_string())
            .execute(&mut *conn)
            .await
            .db()?;
    }
    Ok(RecordedChange {
        kind,
        key: key.to_owned(),
    })
}

/// Now in epoch ms from the system clock, for the two writes whose trait methods carry no time
/// (`delete_user`, `delete_api_token`). `at` only decides when a row is pruned (minutes later),
/// so a clock that differs from the injected one can only prune early, which makes a lagging
/// reader forget everything: safe.
pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Backend {
    /// Names this store (its pool, shared by its clones) among the stores of the process: the
    /// address of the pool's connect options, which live as long as the pool and are never
    /// replaced here.
    pub(super) fn local_key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.pool.connect_options()) as usize
    }
}

#[async_trait]
impl ChangeLogStore for Backend {
    async fn credential_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<ChangeBatch, StoreError> {
        let mark = match self.quiet_changes(after) {
            BeforeRead::Known(batch) => return Ok(batch),
            BeforeRead::Ask(mark) => mark,
        };
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM credential_changes")
            .fetch_one(&self.pool)
            .await
            .db()?;
        let rows = sqlx::query(
            "SELECT seq, kind, key FROM credential_changes WHERE seq > $1 ORDER BY seq \
             LIMIT CAST($2 AS BIGINT)",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .db()?;
        let changes = rows
            .into_iter()
            .map(|r| {
                let kind: String = r.get(1);
                CredentialChange {
                    seq: r.get(0),
                    kind: ChangeKind::parse(&kind),
                    key: r.get(2),
                }
            })
            .collect();
        let batch = ChangeBatch { changes, oldest };
        self.read_changes(mark, after, &batch);
        Ok(batch)
    }

    async fn latest_credential_change(&self) -> Result<i64, StoreError> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM credential_changes")
            .fetch_one(&self.pool)
            .await
            .db()?;
        Ok(latest.unwrap_or(0))
    }

    async fn prune_credential_changes(&self, before: i64) -> Result<u64, StoreError> {
        let _turn = self.single_write().await;
        let done = sqlx::query(
            "DELETE FROM credential_changes WHERE at < $1 \
             AND seq < (SELECT MAX(seq) FROM credential_changes)",
        )
        .bind(before)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(done.rows_affected())
    }

    fn watch_credential_changes(&self, wake: ChangeWaker) {
        self.watch(wake);
    }

    fn on_local_credential_change(&self, listener: std::sync::Weak<LocalChangeListener>) {
        crate::sql::listen_local(self.local_key(), listener);
    }
}
