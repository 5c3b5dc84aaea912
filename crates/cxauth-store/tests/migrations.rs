//! Migration 0005 (issue 11) on a database that already holds RingEX emulator JWT credentials:
//! they keep working, get ids in creation order, and can be listed and revoked. Run on SQLite
//! and PostgreSQL (required in CI, skipped with a printed reason elsewhere).

use cxauth_store::DatabaseUrl;

/// The schema as it was before 0005: a migrator over a copy of the migrations numbered below 5.
async fn migrations_before_0005(backend: &str) -> (tempfile::TempDir, sqlx::migrate::Migrator) {
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
        if version < 5 {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("migrator");
    (dir, migrator)
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

/// Binds the digest of the `i`-th statement of [`SEED`], if it takes one.
fn seed<DB: sqlx::Database>(
    q: sqlx::query::Query<'static, DB, <DB as sqlx::Database>::Arguments>,
    i: usize,
) -> sqlx::query::Query<'static, DB, <DB as sqlx::Database>::Arguments>
where
    &'static [u8]: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    match i {
        2 => q.bind(NEWER),
        3 => q.bind(OLDER),
        _ => q,
    }
}

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
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let pool = sqlx::SqlitePool::connect_with(
            url.parse::<sqlx::sqlite::SqliteConnectOptions>()
                .expect("options")
                .create_if_missing(true),
        )
        .await
        .expect("connect");
        let (_dir, migrator) = migrations_before_0005("sqlite").await;
        migrator.run(&pool).await.expect("old schema");
        for (i, sql) in SEED.iter().enumerate() {
            seed(sqlx::query(*sql), i)
                .execute(&pool)
                .await
                .expect("seed");
        }
        pool.close().await;
    }
    check_upgraded(&url, "sqlite").await;
}

#[tokio::test]
async fn postgres_credentials_survive_0005() {
    let url = match cxauth_store::testing::scratch_schema()
        .await
        .expect("a PostgreSQL test schema")
    {
        cxauth_store::testing::Scratch::Ready(u) => u,
        cxauth_store::testing::Scratch::Skip(why) => {
            eprintln!("skipping PostgreSQL: {why}");
            return;
        }
    };
    {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let (_dir, migrator) = migrations_before_0005("postgres").await;
        migrator.run(&pool).await.expect("old schema");
        for (i, sql) in SEED.iter().enumerate() {
            seed(sqlx::query(*sql), i)
                .execute(&pool)
                .await
                .expect("seed");
        }
        pool.close().await;
    }
    check_upgraded(&url, "postgres").await;
}
