//! The cxauth domain: users, accounts, sessions and tokens, password and key handling, and the
//! [`store::Store`] trait that storage backends implement.
//!
//! HTTP lives in `cxauth-server`, SQL in `cxauth-store`; this crate is what both agree on.
//!
//! # Crate map
//!
//! A request enters through [`service::Auth`], the facade, and goes to the module of its
//! concern:
//!
//! - [`service`]: `Auth`, the facade the server calls; one part per concern, no logic.
//! - [`login`]: direct and legacy login — throttle, then password pool, then a session or a
//!   legacy token; also the throttled secret check the emulator shares.
//! - [`sessions`]: start, refresh (rotation, grace, reuse detection), logout, access-token
//!   minting.
//! - [`authn`]: a presented token (bearer JWT, API token, legacy token) becomes a `Principal`.
//! - [`api_tokens`]: mint, list, rename, delete API tokens (names, expiry, last use).
//! - [`token_uses`]: API token uses noted in memory, written in batches.
//! - [`directory`]: the caller's accounts and managed users; [`wire`] maps them to
//!   `cxauth-proto`.
//! - [`ringex`]: the RingEX token exchange and the `RingexResolver` trait the server implements
//!   over HTTP.
//! - [`emulator`]: the built-in RingEX emulator, its own type with its own error.
//! - [`keys`]: load, reload, retire signing keys; sign and verify access tokens.
//! - [`audit`]: the audit events as an enum, how they are written and counted.
//! - [`error`]: `AuthError`, `StartError`; [`limits`]: the longest inputs read; [`config`]:
//!   `AuthConfig`.
//! - [`user_admin`]: user administration on behalf of a signed-in manager (the web console),
//!   with the API's authorisation rules.
//! - [`admin`]: operations of `cxauth admin` and the first start (users, accounts, seed,
//!   bootstrap, purge).
//! - Building blocks: [`clock`] (injected time), [`crypto`] (master key, digests, sealing),
//!   [`jwt`] (the key ring), [`password`] (the hashing pool), [`throttle`] (login budgets),
//!   [`cache`] (verified access tokens), [`credcache`] (sessions, API tokens, users and
//!   accounts in memory, kept coherent through the change log), [`store`] (the storage traits).

pub mod admin;
pub mod api_tokens;
pub mod audit;
pub mod authn;
pub mod cache;
pub mod clock;
pub mod config;
pub mod credcache;
pub mod crypto;
mod deps;
pub mod directory;
pub mod emulator;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod login;
pub mod password;
pub mod ringex;
pub mod service;
pub mod sessions;
pub mod store;
pub mod throttle;
pub mod token_uses;
pub mod user_admin;
pub mod wire;
