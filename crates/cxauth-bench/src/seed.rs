//! Seeds a database for the `scale` scenario: many users and API tokens, written straight into
//! the SQLite file with the server's schema and the server's own digest and seal functions, so
//! every seeded token authenticates exactly like one minted through the API.
//!
//! The server must have initialised the database (schema, master key, bootstrap) and be stopped.
//! All users share the bootstrap admin's Argon2id hash, so they log in with its password (the
//! `token-create` scenario does; `scale` never logs them in).

use anyhow::Context as _;
use cxauth_core::crypto::{DigestKind, MasterKey, Secrets};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use std::path::Path;
use std::time::{Duration, Instant};

/// What seeding produced.
pub struct Seeded {
    /// A sample of the seeded tokens, spread over the whole table, to query.
    pub sample: Vec<String>,
    /// The id of the first seeded user; user `id` is named `seed-{id}`, and the seeded users'
    /// ids follow one another.
    pub first_user_id: i64,
    /// How long seeding took.
    pub took: Duration,
}

/// A small, fast generator (splitmix64): the tokens only need to be unique and well formed.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Adds `users` users and `tokens` API tokens (spread evenly over the users) to `db`, whose
/// master key file is `db` + `.key`.
pub async fn seed(db: &Path, users: u64, tokens: u64, sample: usize) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let key_path = std::path::PathBuf::from(format!("{}.key", db.display()));
    let key = MasterKey::load(&key_path)
        .with_context(|| format!("cannot read the master key {}", key_path.display()))?;
    let secrets = Secrets::derive(&key);
    // Seeding only: durability of the seed does not matter, speed does.
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .pragma("cache_size", "-262144")
        .foreign_keys(false);
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let phc = sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .context("the database has no bootstrap user")?;
    let first_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM users")
        .fetch_one(&mut conn)
        .await?;
    let main: i64 = sqlx::query_scalar("SELECT main_account_id FROM users WHERE id = 1")
        .fetch_one(&mut conn)
        .await?;
    let sub: i64 = sqlx::query_scalar("SELECT MIN(id) FROM accounts WHERE main_id = $1")
        .bind(main)
        .fetch_one(&mut conn)
        .await?;

    const USER_BATCH: u64 = 500;
    let mut tx = conn.begin().await?;
    let mut i = 0;
    while i < users {
        let n = USER_BATCH.min(users - i);
        let mut sql = String::from(
            "INSERT INTO users (id, username, platform_id, password_hash, first_name, last_name, \
             enabled, parent_id, parent_path, main_account_id, roles, created_at, updated_at) VALUES ",
        );
        let mut grants = String::from("INSERT INTO user_grants (user_id, account_id) VALUES ");
        for k in 0..n {
            let id = first_id + (i + k) as i64;
            if k > 0 {
                sql.push(',');
                grants.push(',');
            }
            sql.push_str(&format!(
                "({id}, 'seed-{id}', 'aws80', $1, 'Seed', 'User', TRUE, NULL, '', {main}, '', 0, 0)"
            ));
            grants.push_str(&format!("({id}, {sub})"));
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&phc)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(grants))
            .execute(&mut *tx)
            .await?;
        i += n;
    }
    tx.commit().await?;

    let mut rng = Mix(0x00c0_ffee);
    let every = (tokens / sample.max(1) as u64).max(1);
    let mut picked = Vec::with_capacity(sample);
    const TOKEN_BATCH: u64 = 400;
    const TX_ROWS: u64 = 100_000;
    let mut t = 0;
    while t < tokens {
        let mut tx = conn.begin().await?;
        let tx_end = (t + TX_ROWS).min(tokens);
        while t < tx_end {
            let n = TOKEN_BATCH.min(tx_end - t);
            let mut sql = String::from(
                "INSERT INTO api_tokens (user_id, digest, sealed, created_at) VALUES ",
            );
            let mut rows = Vec::with_capacity(n as usize);
            for k in 0..n {
                let idx = t + k;
                let hi = u128::from(rng.next());
                let lo = u128::from(rng.next());
                let id =
                    uuid::Builder::from_random_bytes(((hi << 64) | lo).to_be_bytes()).into_uuid();
                let token = format!("aws80:{}", id.hyphenated());
                // Tokens go to users in runs, so each user's index entries stay together.
                let user_id = if users == 0 {
                    1
                } else {
                    first_id + (idx * users / tokens.max(1)) as i64
                };
                let digest = secrets.digest(DigestKind::ApiToken, token.as_bytes());
                let sealed =
                    secrets.seal(format!("api-token:{user_id}").as_bytes(), token.as_bytes())?;
                if idx % every == 0 && picked.len() < sample {
                    picked.push(token);
                }
                if k > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("({user_id}, ?, ?, 0)"));
                rows.push((digest, sealed));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (d, s) in &rows {
                q = q.bind(d.as_slice()).bind(s.as_slice());
            }
            q.execute(&mut *tx).await?;
            t += n;
        }
        tx.commit().await?;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(Seeded {
        sample: picked,
        first_user_id: first_id,
        took: started.elapsed(),
    })
}
