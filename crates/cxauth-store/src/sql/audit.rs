//! The audit trail.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::{Backend, Conn};
use crate::sql::DbResult as _;
use async_trait::async_trait;
use cxauth_core::store::{AuditEvent, AuditFilter, AuditStore, StoreError};

#[async_trait]
impl AuditStore for Backend {
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(event = %e.event, outcome = %e.outcome, user_id = ?e.user_id)
    )]
    async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, e).await.db()?;
        tx.commit().await.db()?;
        Ok(())
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(after_id = f.after_id, limit = f.limit)
    )]
    async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        type Row = (
            i64,
            i64,
            String,
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, at, event, outcome, user_id, username, addr, request_id, detail \
                 FROM audit_events \
                 WHERE at >= $1 AND id > $2 AND ($3 IS NULL OR username = $3) \
                 ORDER BY id LIMIT CAST($4 AS BIGINT)",
        )
        .bind(f.since)
        .bind(f.after_id)
        .bind(&f.username)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(
                |(id, at, event, outcome, user_id, username, addr, request_id, detail)| {
                    AuditEvent {
                        id,
                        at,
                        event,
                        outcome,
                        user_id,
                        username,
                        addr,
                        request_id,
                        detail,
                    }
                },
            )
            .collect())
    }
}

/// Writes `e` on `conn` (in whatever transaction it is in).
async fn insert_audit(conn: &mut Conn, e: &AuditEvent) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_AUDIT)
        .bind(e.at)
        .bind(&e.event)
        .bind(&e.outcome)
        .bind(e.user_id)
        .bind(&e.username)
        .bind(&e.addr)
        .bind(&e.request_id)
        .bind(&e.detail)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes `event` on `conn`, inside its open transaction, in a savepoint: best effort, as the
/// audit trail's contract says, so a row the table refuses is rolled back alone and logged, and
/// the rest of the transaction stands. Only a failure to handle the savepoint is returned.
pub(super) async fn append_audit_in(conn: &mut Conn, event: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query("SAVEPOINT audit")
        .execute(&mut *conn)
        .await
        .db()?;
    let written = insert_audit(&mut *conn, event).await;
    if let Err(e) = written {
        tracing::warn!(error = %e, event = %event.event, "could not write the audit event");
        sqlx::query("ROLLBACK TO SAVEPOINT audit")
            .execute(&mut *conn)
            .await
            .db()?;
    }
    sqlx::query("RELEASE SAVEPOINT audit")
        .execute(&mut *conn)
        .await
        .db()?;
    Ok(())
}

/// One audit event, its columns in [`AuditEvent`]'s order from `at` (`$1`) to `detail` (`$8`).
/// Shared with the SQLite writer thread (`sqlite/writer.rs`).
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit_events \
     (at, event, outcome, user_id, username, addr, request_id, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
