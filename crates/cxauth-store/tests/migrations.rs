//! Migrations. The SQLite and PostgreSQL folders stay in step: the same files, numbered alike,
//! each doing the same to the schema, ending in the same tables, columns and indexes. And
//! migration 0005 (issue 11) on a database that already holds RingEX emulator JWT credentials:
//! they keep working, get ids in creation order, and can be listed and revoked. The database
//! And migration 0012: API tokens' last uses move to a table of their own, and go on being
//! read, written and deleted with their tokens. The database
//! tests run on SQLite and PostgreSQL (required in CI, skipped with a printed reason elsewhere).

use cxauth_store::DatabaseUrl;

/// The schema as it was before migration `below`: a migrator over a copy of the migrations
/// numbered below it.
async fn migrations_before(
    backend: &str,
    below: u32,
) -> (tempfile::TempDir, sqlx::migrate::Migrator) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&src).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let version: u32 = name[..4].parse().expect("numbered");
        if version < below {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("migrator");
    (dir, migrator)
}

/// Statements that fill a database at an old schema, each with the blobs it binds, in order.
type Seed = &'static [(&'static str, &'static [&'static [u8]])];

/// Brings the empty database behind `pool` to `backend`'s schema before migration `below`,
/// runs `seed` on it and closes the pool.
async fn fill<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, backend: &str, below: u32, seed: Seed)
where
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    &'static [u8]: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let (_migrations, migrator) = migrations_before(backend, below).await;
    migrator.run(pool).await.expect("old schema");
    for (sql, blobs) in seed {
        let mut q = sqlx::query::<DB>(*sql);
        for b in *blobs {
            q = q.bind(*b);
        }
        q.execute(pool).await.expect("seed");
    }
    pool.close().await;
}

/// A new SQLite database at the schema as it was before migration `below`, filled by `seed`
/// and closed: the directory that holds it and its URL.
async fn sqlite_before(below: u32, seed: Seed) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect_with(
        url.parse::<sqlx::sqlite::SqliteConnectOptions>()
            .expect("options")
            .create_if_missing(true),
    )
    .await
    .expect("connect");
    fill(&pool, "sqlite", below, seed).await;
    (dir, url)
}

/// A PostgreSQL scratch schema as it was before migration `below`, filled by `seed`: its URL;
/// `None` (the reason printed) where there is no PostgreSQL to test against.
async fn postgres_before(below: u32, seed: Seed) -> Option<String> {
    let url = cxauth_store::testing::scratch_url_or_skip("migrations").await?;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    fill(&pool, "postgres", below, seed).await;
    Some(url)
}

const SEED: [&str; 4] = [
    "INSERT INTO accounts (id, name, main_id, is_active, created_at) VALUES (10000000, 'M', NULL, TRUE, 0)",
    "INSERT INTO users (id, username, platform_id, password_hash, first_name, last_name, enabled, \
     parent_id, parent_path, main_account_id, roles, created_at, updated_at, rc_user_id) \
     VALUES (7, 'rex', 'aws80', 'h', '', '', TRUE, NULL, '', 10000000, '', 0, 0, 4242)",
    // Inserted out of digest order: ids must follow creation time.
    "INSERT INTO ringex_jwts (digest, user_id, created_at) VALUES ($1, 7, 20)",
    "INSERT INTO ringex_jwts (digest, user_id, created_at) VALUES ($1, 7, 10)",
];

/// Digests of the two credentials seeded: the older one (created at 10) and the newer (20).
const OLDER: &[u8] = &[1; 32];
const NEWER: &[u8] = &[2; 32];

/// [`SEED`] with its digests: the state migration 0005 finds.
const SEED_0005: Seed = &[
    (SEED[0], &[]),
    (SEED[1], &[]),
    (SEED[2], &[NEWER]),
    (SEED[3], &[OLDER]),
];

async fn check_upgraded(url: &str, name: &str) {
    let store = cxauth_store::open(&DatabaseUrl::parse(url).expect("url"))
        .await
        .expect("open runs 0005");
    let list = store.ringex_jwts(Some("rex")).await.expect("list");
    assert_eq!(
        list.iter().map(|j| j.created_at).collect::<Vec<_>>(),
        [10, 20],
        "{name}"
    );
    assert!(list[0].id < list[1].id, "{name}: ids in creation order");
    for d in [[1u8; 32], [2u8; 32]] {
        assert!(
            store.ringex_jwt_user(&d).await.expect("get").is_some(),
            "{name}: an old credential still works"
        );
    }
    store
        .revoke_ringex_jwt(list[0].id)
        .await
        .expect("revoke")
        .expect("found");
    assert!(
        store
            .ringex_jwt_user(&[1; 32])
            .await
            .expect("get")
            .is_none(),
        "{name}: the older one is revoked"
    );
    // New credentials get the next id.
    store.insert_ringex_jwt(&[3; 32], 7, 30).await.expect("new");
    let list = store.ringex_jwts(None).await.expect("list");
    assert_eq!(list.len(), 2, "{name}");
    assert!(list[1].id > list[0].id);
    store.close().await;
}

#[tokio::test]
async fn sqlite_credentials_survive_0005() {
    let (_dir, url) = sqlite_before(5, SEED_0005).await;
    check_upgraded(&url, "sqlite").await;
}

#[tokio::test]
async fn postgres_credentials_survive_0005() {
    let Some(url) = postgres_before(5, SEED_0005).await else {
        return;
    };
    check_upgraded(&url, "postgres").await;
}

// ---- 0012: last uses move out of `api_tokens`.

/// Two API tokens of user 7 (seeded by `SEED`'s first two statements) as they stood before
/// 0012: token 1 last used at 500, in `api_tokens.last_used_at`; token 2 never used.
const OLD_TOKENS: &str = "INSERT INTO api_tokens (id, user_id, digest, sealed, created_at, \
     last_used_at) VALUES (1, 7, $1, $1, 0, 500), (2, 7, $2, $2, 0, NULL)";

/// The main account, user 7 and [`OLD_TOKENS`]: the state migration 0012 finds.
const SEED_0012: Seed = &[
    (SEED[0], &[]),
    (SEED[1], &[]),
    (OLD_TOKENS, &[OLDER, NEWER]),
];

/// Opens `url` (which runs 0012 on the database [`SEED_0012`] filled) and checks the uses.
async fn check_uses_moved(url: &str, name: &str) {
    let store = cxauth_store::open(&DatabaseUrl::parse(url).expect("url"))
        .await
        .expect("open runs 0012");
    let last_use = |id: i64| {
        let store = store.clone();
        async move {
            store
                .api_token_by_id(id)
                .await
                .expect("get")
                .expect("the token")
                .0
                .last_used_at
        }
    };
    assert_eq!(last_use(1).await, Some(500), "{name}: the use was copied");
    assert_eq!(last_use(2).await, None, "{name}: none made up");
    let used = |id: i64, digest: &[u8], at: i64| cxauth_core::store::ApiTokenUse {
        id,
        digest: digest.try_into().expect("32 bytes"),
        at,
    };
    let written = store
        .record_api_token_uses(&[used(1, OLDER, 400), used(2, NEWER, 700)])
        .await
        .expect("uses");
    assert_eq!(written, 1, "{name}: a copied use is not moved back");
    assert_eq!(last_use(1).await, Some(500), "{name}");
    assert_eq!(last_use(2).await, Some(700), "{name}");
    assert!(store.delete_api_token(1).await.expect("delete"), "{name}");
    let listed: Vec<(i64, Option<i64>)> = store
        .api_tokens_of(7)
        .await
        .expect("list")
        .iter()
        .map(|t| (t.id, t.last_used_at))
        .collect();
    assert_eq!(listed, [(2, Some(700))], "{name}");
    store.close().await;
}

#[tokio::test]
async fn sqlite_last_uses_survive_0012() {
    let (_dir, url) = sqlite_before(12, SEED_0012).await;
    check_uses_moved(&url, "sqlite").await;
}

#[tokio::test]
async fn postgres_last_uses_survive_0012() {
    let Some(url) = postgres_before(12, SEED_0012).await else {
        return;
    };
    check_uses_moved(&url, "postgres").await;
}

// ---- The two migration folders stay in step.

/// The migration files of one dialect, by name, with their text.
fn migration_files(dialect: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("migrations folder")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// The statements of a migration, comments dropped and white space collapsed.
fn statements(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect();
    code.join(" ")
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// What a statement does to the schema, without the dialect's spelling: column types, defaults
/// and constraints differ (BLOB/BYTEA, INTEGER PRIMARY KEY/BIGSERIAL), names must not.
fn shape(statement: &str) -> String {
    let words: Vec<&str> = statement.split(' ').collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["CREATE", "TABLE", ..] => {
            let name = words[2].trim_end_matches('(');
            let open = statement.find('(').expect("a column list");
            let close = statement.rfind(')').expect("a column list");
            let mut columns = Vec::new();
            let body = &statement[open + 1..close];
            let (mut depth, mut start) = (0, 0);
            for (i, c) in body.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        columns.push(&body[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            columns.push(&body[start..]);
            let columns: Vec<&str> = columns
                .iter()
                .filter_map(|c| c.split_whitespace().next())
                .filter(|c| {
                    let c = c.to_uppercase();
                    !["PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT"].contains(&c.as_str())
                })
                .collect();
            format!("table {name} ({})", columns.join(", "))
        }
        ["ALTER", "TABLE", _, "ADD", "COLUMN", ..] => {
            format!("alter table {} add column {}", words[2], words[5])
        }
        ["INSERT", "INTO", ..] => format!("insert into {}", words[2].trim_end_matches('(')),
        ["UPDATE", ..] => format!("update {}", words[1]),
        ["DELETE", "FROM", ..] => format!("delete from {}", words[2]),
        // Indexes, drops and renames are spelt alike in both dialects.
        _ => statement.to_owned(),
    }
}

#[test]
fn the_migration_folders_have_the_same_files_numbered_in_order() {
    let sqlite = migration_files("sqlite");
    let postgres = migration_files("postgres");
    let names = |files: &[(String, String)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&sqlite),
        names(&postgres),
        "every migration exists for both dialects, under the same name"
    );
    for (i, (name, _)) in sqlite.iter().enumerate() {
        let expected = format!("{:04}_", i + 1);
        assert!(
            name.starts_with(&expected) && name.ends_with(".sql"),
            "{name}: migrations are numbered 0001, 0002, ... without gaps, and end in .sql"
        );
    }
}

#[test]
fn each_migration_does_the_same_in_both_dialects() {
    for ((name, sqlite), (_, postgres)) in migration_files("sqlite")
        .iter()
        .zip(migration_files("postgres").iter())
    {
        let sqlite: Vec<String> = statements(sqlite).iter().map(|s| shape(s)).collect();
        let postgres: Vec<String> = statements(postgres).iter().map(|s| shape(s)).collect();
        assert_eq!(
            sqlite, postgres,
            "{name}: the same tables, columns and indexes, in the same order"
        );
    }
}

/// The schema a migrated database holds: each table with its columns (sorted), and the indexes
/// created by name (not those backing a key or a unique constraint).
async fn sqlite_schema(url: &str) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    let mut schema = Vec::new();
    for table in tables {
        let mut columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(&pool)
            .await
            .expect("columns");
        columns.sort();
        schema.push((table, columns));
    }
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes");
    pool.close().await;
    (schema, indexes)
}

async fn postgres_schema(url: &str) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%' \
         ORDER BY table_name, column_name",
    )
    .fetch_all(&pool)
    .await
    .expect("columns");
    let mut schema: Vec<(String, Vec<String>)> = Vec::new();
    for (table, column) in rows {
        match schema.last_mut() {
            Some((t, columns)) if *t == table => columns.push(column),
            _ => schema.push((table, vec![column])),
        }
    }
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
         ORDER BY c.relname",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes");
    pool.close().await;
    (schema, indexes)
}

#[tokio::test]
async fn both_dialects_migrate_to_the_same_tables_columns_and_indexes() {
    let Some(pg) = cxauth_store::testing::scratch_url_or_skip("migrations").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("schema.db").display());
    for url in [&sqlite, &pg] {
        cxauth_store::open(&DatabaseUrl::parse(url).expect("url"))
            .await
            .expect("open migrates")
            .close()
            .await;
    }
    let (sqlite_tables, sqlite_indexes) = sqlite_schema(&sqlite).await;
    let (pg_tables, pg_indexes) = postgres_schema(&pg).await;
    assert!(!sqlite_tables.is_empty(), "the schema was read");
    assert_eq!(sqlite_tables, pg_tables, "the same tables and columns");
    assert_eq!(sqlite_indexes, pg_indexes, "the same named indexes");
}
