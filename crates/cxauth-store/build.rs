//! Embeds the `migrations/` folders: writes `$OUT_DIR/migrations.rs`, one list per backend of
//! each migration file's version, the rest of its name and its text (`include_str!`), in name
//! order, which `src/migrations.rs` turns into sqlx `Migrator`s.
//!
//! Not sqlx's `migrate!` macro: that macro and one `FromRow` derive were all the workspace used
//! of sqlx's `macros` feature, and that feature builds a second copy of sqlx, its SQLite (C) and
//! its TLS library for the macros' own use (about two minutes of CPU over CI's release, harness
//! and test builds, measured; see docs/decisions.md, "The migrations are listed by the store's
//! build script").
//!
//! `rerun-if-changed` on the folder makes cargo run this again when a migration is added,
//! changed or removed (cargo scans a folder named so for changes).
use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let manifest = env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut code = String::from("// Written by build.rs: the migration files, in name order.\n");
    for backend in ["sqlite", "postgres"] {
        let dir = Path::new(&manifest).join("migrations").join(backend);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a migration folder entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        let name = backend.to_uppercase();
        writeln!(code, "pub(crate) const {name}: &[(i64, &str, &str)] = &[")
            .expect("a String takes it");
        for path in files {
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_else(|| panic!("a migration file name that is not UTF-8: {path:?}"));
            // sqlx's rule: `<version>_<rest>.sql`, other files ignored; a version that is not
            // an integer fails the build, as it failed `migrate!`.
            let Some((version, rest)) = file.split_once('_').filter(|(_, r)| r.ends_with(".sql"))
            else {
                continue;
            };
            let version: i64 = version
                .parse()
                .unwrap_or_else(|_| panic!("{file}: the version before `_` is not an integer"));
            writeln!(
                code,
                "    ({version}, {rest:?}, include_str!({:?})),",
                path.display()
            )
            .expect("a String takes it");
        }
        code.push_str("];\n");
    }
    fs::write(Path::new(&out).join("migrations.rs"), code).expect("writing migrations.rs");
}
