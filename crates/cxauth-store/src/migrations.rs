//! The migrations of each backend, embedded in the binary.
//!
//! `build.rs` lists the files of `migrations/sqlite` and `migrations/postgres`; this module
//! builds from them the `Migrator` that sqlx's `migrate!` macro built before: the same
//! versions, descriptions and migration types, parsed from each file name by sqlx's rules, and
//! the same checksums, which sqlx computes from the text. A database migrated by an earlier
//! build finds every applied migration's checksum unchanged. A test compares both lists with
//! what sqlx's own resolver reads from the folders.

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;
use std::sync::LazyLock;

mod files {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The SQLite schema's migrations (`migrations/sqlite`).
pub(crate) static SQLITE: LazyLock<Migrator> = LazyLock::new(|| migrator(files::SQLITE));

/// The PostgreSQL schema's migrations (`migrations/postgres`).
pub(crate) static POSTGRES: LazyLock<Migrator> = LazyLock::new(|| migrator(files::POSTGRES));

/// A `Migrator` with sqlx's defaults (its `_sqlx_migrations` table, locking on) over `files`:
/// each file's version, the rest of its name (`<description>.sql`) and its text.
fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, rest, sql)| {
                let migration_type = MigrationType::from_filename(rest);
                let description = rest
                    .trim_end_matches(migration_type.suffix())
                    .replace('_', " ");
                // sqlx's opt-out of the migration's transaction, read as its resolver reads it.
                let no_tx = sql.starts_with("-- no-transaction");
                Migration::new(
                    version,
                    Cow::Owned(description),
                    migration_type,
                    sql.into_sql_str(),
                    no_tx,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// What sqlx reads from a folder at run time, with the resolver its `migrate!` macro used.
    async fn read_by_sqlx(folder: &str) -> Migrator {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder);
        Migrator::new(dir.as_path())
            .await
            .expect("sqlx reads the folder")
    }

    fn described(m: &Migrator) -> Vec<(i64, String, MigrationType, Vec<u8>, bool, String)> {
        m.iter()
            .map(|m| {
                (
                    m.version,
                    m.description.to_string(),
                    m.migration_type,
                    m.checksum.to_vec(),
                    m.no_tx,
                    m.sql.as_str().to_owned(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn the_embedded_migrations_are_what_sqlx_reads_from_the_folders() {
        for (embedded, folder) in [(&*SQLITE, "sqlite"), (&*POSTGRES, "postgres")] {
            let read = read_by_sqlx(folder).await;
            assert!(
                read.iter().count() >= 12,
                "{folder}: the folder's migrations"
            );
            assert_eq!(described(embedded), described(&read), "{folder}");
            assert_eq!(embedded.table_name, read.table_name, "{folder}");
            assert_eq!(
                (embedded.locking, embedded.no_tx, embedded.ignore_missing),
                (read.locking, read.no_tx, read.ignore_missing),
                "{folder}"
            );
        }
    }

    #[test]
    fn a_file_name_gives_its_description_and_type_by_sqlxs_rules() {
        let m = migrator(&[
            (7, "add_a_table.sql", "CREATE TABLE t (x INTEGER);"),
            (
                3,
                "first_one.up.sql",
                "-- no-transaction\nCREATE INDEX i ON t (x);",
            ),
        ]);
        let got: Vec<_> = m
            .iter()
            .map(|m| {
                (
                    m.version,
                    m.description.to_string(),
                    m.migration_type,
                    m.no_tx,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (3, "first one".to_owned(), MigrationType::ReversibleUp, true),
                (7, "add a table".to_owned(), MigrationType::Simple, false),
            ]
        );
    }
}
