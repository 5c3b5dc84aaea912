//! API tokens, and the checked insert that holds the owner's lock.
//!
//! Compiled once per dialect (see `crate::sql`).

use super::Backend;
use super::changes::{record_change, wall_ms};
use crate::sql::{DbResult as _, UserRow, user_columns};
use async_trait::async_trait;
use cxauth_core::store::{
    ApiTokenInsert, ApiTokenStore, ApiTokenUse, ChangeKind, CredentialProof, NewApiToken,
    StoreError, StoredApiToken, UserRecord,
};
use sqlx::Row as _;
use std::collections::BTreeMap;

/// The columns [`token_of`] reads, of [`tokens_with_uses`]' tables.
macro_rules! token_columns {
    () => {
        "t.id AS token_id, t.sealed AS token_sealed, t.name AS token_name, \
         t.created_at AS token_created_at, t.expires_at AS token_expires_at, \
         tu.last_used_at AS token_last_used_at"
    };
}

/// `api_tokens` aliased `t`, with its last uses (a narrow table of their own since migration
/// 12, so that the minute's write touches few pages) aliased `tu`.
macro_rules! tokens_with_uses {
    () => {
        "api_tokens t LEFT JOIN api_token_uses tu ON tu.token_id = t.id"
    };
}

/// A row of the dialect's database.
type DbRow = <super::Db as sqlx::Database>::Row;

/// An API token of `user_id` from a row holding [`token_columns`].
fn token_of(r: &DbRow, user_id: i64) -> StoredApiToken {
    StoredApiToken {
        id: r.get("token_id"),
        user_id,
        sealed: r.get("token_sealed"),
        name: r.get("token_name"),
        created_at: r.get("token_created_at"),
        expires_at: r.get("token_expires_at"),
        last_used_at: r.get("token_last_used_at"),
    }
}

/// An API token and its owner from a row holding [`token_columns`] and the user's columns.
fn token_and_owner(r: &DbRow) -> Result<(StoredApiToken, UserRecord), StoreError> {
    let user: UserRecord = <UserRow as sqlx::FromRow<_>>::from_row(r).db()?.into();
    Ok((token_of(r, user.id), user))
}

#[async_trait]
impl ApiTokenStore for Backend {
    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn insert_api_token(
        &self,
        user_id: i64,
        digest: &[u8; 32],
        sealed: &[u8],
        now: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, digest, sealed, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id",
        )
        .bind(user_id)
        .bind(digest.as_slice())
        .bind(sealed)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .db()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = t.user_id))]
    async fn insert_api_token_checked(
        &self,
        t: &NewApiToken<'_>,
    ) -> Result<ApiTokenInsert, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_user(&mut tx, t.user_id).await?;
        let enabled: Option<bool> = sqlx::query_scalar("SELECT enabled FROM users WHERE id = $1")
            .bind(t.user_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        if enabled != Some(true) {
            return Ok(ApiTokenInsert::CredentialGone);
        }
        let stands: Option<i64> = match t.proof {
            CredentialProof::Session(sid) => {
                sqlx::query_scalar(
                    "SELECT user_id FROM sessions \
                     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                )
                .bind(sid)
                .bind(t.user_id)
                .fetch_optional(&mut *tx)
                .await
            }
            CredentialProof::ApiToken(d) => {
                sqlx::query_scalar(
                    "SELECT user_id FROM api_tokens WHERE digest = $1 AND user_id = $2 \
                     AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(d.as_slice())
                .bind(t.user_id)
                .bind(t.now)
                .fetch_optional(&mut *tx)
                .await
            }
            CredentialProof::LegacyToken(d) => {
                sqlx::query_scalar(
                    "SELECT user_id FROM legacy_tokens \
                     WHERE digest = $1 AND user_id = $2 AND expires_at > $3",
                )
                .bind(d.as_slice())
                .bind(t.user_id)
                .bind(t.now)
                .fetch_optional(&mut *tx)
                .await
            }
        }
        .db()?;
        if stands.is_none() {
            return Ok(ApiTokenInsert::CredentialGone);
        }
        // Expired tokens are refused and listed nowhere: delete them here, under the owner's
        // lock, so they neither count against the cap nor pile up.
        let expired = sqlx::query(
            "DELETE FROM api_tokens WHERE user_id = $1 AND expires_at IS NOT NULL \
             AND expires_at <= $2",
        )
        .bind(t.user_id)
        .bind(t.now)
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected();
        let change = if expired > 0 {
            Some(record_change(&mut tx, ChangeKind::User, &t.user_id.to_string(), wall_ms()).await?)
        } else {
            None
        };
        // Counts at most `cap` rows: the cost stays bounded by the cap, not the table. (The
        // limit is an expression: see `crate::sql::no_limit!`.)
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT id FROM api_tokens WHERE user_id = $1 \
             LIMIT CAST($2 AS BIGINT)) held",
        )
        .bind(t.user_id)
        .bind(i64::try_from(t.cap).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let outcome = if u64::try_from(held).unwrap_or(0) >= t.cap {
            ApiTokenInsert::CapReached
        } else {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO api_tokens (user_id, digest, sealed, created_at, name, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(t.user_id)
            .bind(t.digest.as_slice())
            .bind(t.sealed)
            .bind(t.now)
            .bind(t.name)
            .bind(t.expires_at)
            .fetch_one(&mut *tx)
            .await
            .db()?;
            if let Some(audit) = t.audit {
                super::audit::append_audit_in(&mut tx, &(audit.0)(id)).await?;
            }
            ApiTokenInsert::Created(id)
        };
        // Committed even when the cap is reached: the expired tokens stay deleted.
        let committed = tx.commit().await.db();
        if let Some(change) = change {
            change.announce(self.local_key());
        }
        committed?;
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn api_token_by_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError> {
        // Runs on every API-token request: static SQL, nothing formatted.
        let sql = concat!(
            "SELECT ",
            token_columns!(),
            ", ",
            user_columns!("u."),
            " FROM ",
            tokens_with_uses!(),
            " JOIN users u ON u.id = t.user_id WHERE t.digest = $1"
        );
        let row = sqlx::query(sql)
            .bind(digest.as_slice())
            .fetch_optional(&self.pool)
            .await
            .db()?;
        row.map(|r| token_and_owner(&r)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn api_token_by_id(
        &self,
        id: i64,
    ) -> Result<Option<(StoredApiToken, UserRecord)>, StoreError> {
        let sql = concat!(
            "SELECT ",
            token_columns!(),
            ", ",
            user_columns!("u."),
            " FROM ",
            tokens_with_uses!(),
            " JOIN users u ON u.id = t.user_id WHERE t.id = $1"
        );
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        row.map(|r| token_and_owner(&r)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id))]
    async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<StoredApiToken>, StoreError> {
        let sql = concat!(
            "SELECT ",
            token_columns!(),
            " FROM ",
            tokens_with_uses!(),
            " WHERE t.user_id = $1 ORDER BY t.id"
        );
        let rows = sqlx::query(sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .db()?;
        Ok(rows.iter().map(|r| token_of(r, user_id)).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn rename_api_token(&self, id: i64, name: Option<&str>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query("UPDATE api_tokens SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected();
        tx.commit().await.db()?;
        Ok(changed > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(uses = uses.len()))]
    async fn record_api_token_uses(&self, uses: &[ApiTokenUse]) -> Result<u64, StoreError> {
        // The newest use of each row, in row id order: consecutive rows share pages, so each
        // page is written about once in all (see `USES_PER_STATEMENT`); and two instances
        // writing the same rows lock them in the same order. Written in the order each was
        // handed, opposite orders deadlocked on PostgreSQL (the conformance test
        // `two_instances_writing_the_same_last_uses_…`); the statement's `ORDER BY` keeps the
        // order whatever plan it gets.
        let mut newest: BTreeMap<(i64, [u8; 32]), i64> = BTreeMap::new();
        for u in uses {
            newest
                .entry((u.id, u.digest))
                .and_modify(|at| *at = (*at).max(u.at))
                .or_insert(u.at);
        }
        let rows: Vec<_> = newest.into_iter().collect();
        let mut changed = 0;
        for chunk in rows.chunks(USES_PER_STATEMENT) {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(uses_upsert(chunk.len())));
            for ((id, digest), at) in chunk {
                query = query.bind(*id).bind(digest.as_slice()).bind(*at);
            }
            let mut tx = self.begin_write().await?;
            changed += query.execute(&mut *tx).await.db()?.rows_affected();
            tx.commit().await.db()?;
        }
        Ok(changed)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn delete_api_token(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let owner: Option<i64> =
            sqlx::query_scalar("DELETE FROM api_tokens WHERE id = $1 RETURNING user_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .db()?;
        let Some(owner) = owner else {
            return Ok(false);
        };
        let change =
            record_change(&mut tx, ChangeKind::User, &owner.to_string(), wall_ms()).await?;
        let committed = tx.commit().await.db();
        change.announce(self.local_key());
        committed?;
        Ok(true)
    }
}

/// Most uses one statement writes, in one transaction: the write lock is held for one such
/// statement at a time, a few ms, so logins and refreshes wait that long at most behind a
/// flush. Measured on a SQLite table of this layout (1M rows, 110,000 uses, Python's
/// `sqlite3`), in transactions of 500: in the order noted (a hash map's), each transaction
/// wrote ~500 pages of WAL (450 MB in all, up to 22 ms a transaction); in row id order each
/// page is written about once (142 MB, up to 5 ms a transaction). In the server (the harness's
/// `uses written at stop`), 100,000 tokens' uses went from 4.9 s to 0.7-0.9 s. Since migration
/// 12 the uses have a narrow table of their own, and the same write logs 3.5 MB of WAL (first
/// uses) or 11.6 MB (every token used before) instead of 112 MB; and on SQLite a token's wide
/// row is read for its first use only (docs/decisions.md, "Last uses have a table of their
/// own").
const USES_PER_STATEMENT: usize = 500;

/// Whether this copy of the module is compiled for SQLite (it is compiled once per dialect).
const SQLITE: bool = matches!(<super::Db as sqlx::Database>::NAME.as_bytes(), b"SQLite");

/// `n` placeholders from number `first` on, comma-separated: `$first, $first+1, …`, or on
/// SQLite `?, ?, …` (bound in order). SQLite keeps a `$n` parameter's name in a list that it
/// walks to bind each one, so binding a statement of 1,500 of them took ~1.1M steps.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| {
            if SQLITE {
                "?".to_owned()
            } else {
                format!("${i}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One statement that writes `n` uses, bound as `(id, digest, at)` triples, into
/// `api_token_uses` (migration 12): only for a token that still exists and still holds the
/// digest, and a time never moves back. `VALUES` names its columns `column1`… in both dialects.
/// The rows go in token id order (`ORDER BY`), whatever plan the database picks, so that two
/// instances writing the same tokens lock them in the same order. On PostgreSQL the token is
/// locked `FOR KEY SHARE` as it is checked: a token deleted by another instance meanwhile is
/// skipped (the check waits for the delete), where the foreign key would otherwise fail the
/// whole statement; SQLite writes one transaction at a time and has no such clause.
///
/// On SQLite a use whose token already has a row in `api_token_uses` skips the token check (the
/// `OR`'s left side is true, and SQLite does not evaluate the right): that row proves the token
/// is there, because it goes with its token (`ON DELETE CASCADE`), and that it is the token the
/// use was noted for, because `AUTOINCREMENT` never gives a deleted token's id to another. The
/// check read a page of the wide `api_tokens` table per use, most of a steady-state write's time
/// (docs/decisions.md, "Last uses have a table of their own"). PostgreSQL keeps the check for
/// every use: without its lock, a token deleted by another instance between the row's read and
/// the update would fail the statement.
pub(super) fn uses_upsert(n: usize) -> String {
    let values = (0..n)
        .map(|i| format!("({})", placeholders(3, 3 * i + 1)))
        .collect::<Vec<_>>()
        .join(", ");
    // The digest is read by the token's id and compared outside the look-up: with both columns
    // in the look-up, PostgreSQL (and SQLite 3.51, through its EXISTS-to-JOIN rewrite) searched
    // the digest's unique index, a random page per use, instead of the primary key's, which
    // uses in id order walk in order (docs/decisions.md). No row: NULL, and the use is skipped.
    let token_check = format!(
        "(SELECT t.digest FROM api_tokens t WHERE t.id = u.column1{}) = u.column2",
        if SQLITE { "" } else { " FOR KEY SHARE" }
    );
    let kept = if SQLITE {
        format!(
            "(EXISTS (SELECT 1 FROM api_token_uses p WHERE p.token_id = u.column1) \
             OR {token_check})"
        )
    } else {
        token_check
    };
    format!(
        "INSERT INTO api_token_uses (token_id, last_used_at) \
         SELECT u.column1, u.column3 FROM (VALUES {values}) AS u \
         WHERE {kept} \
         ORDER BY u.column1 \
         ON CONFLICT (token_id) DO UPDATE SET last_used_at = excluded.last_used_at \
         WHERE api_token_uses.last_used_at < excluded.last_used_at"
    )
}
