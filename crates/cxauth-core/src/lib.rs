//! The cxauth domain: users, accounts, sessions and tokens, password and key handling, and the
//! [`store::Store`] trait that storage backends implement.
//!
//! HTTP lives in `cxauth-server`, SQL in `cxauth-store`; this crate is what both agree on.

pub mod admin;
pub mod audit;
pub mod cache;
pub mod clock;
pub mod crypto;
pub mod emulator;
pub mod jwt;
pub mod password;
pub mod service;
pub mod store;
pub mod throttle;
