//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the
//! `migrations/` folders at compile time, but on stable Rust cargo does not know it reads them,
//! so a new migration file alone left the old set in the binary.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
