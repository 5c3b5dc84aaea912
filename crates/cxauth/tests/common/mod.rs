//! The `cxauth serve` child-process helpers now live in `cxauth-testkit` (`cxauth_testkit::cli`);
//! this re-export keeps the binaries that still say `mod common;` (config.rs, startup.rs)
//! compiling unchanged.
#![allow(unused_imports)]

pub use cxauth_testkit::cli::*;
