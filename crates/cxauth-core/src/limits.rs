//! The longest inputs cxauth reads: anything longer is refused before any work is done on it.

/// Longest username accepted.
pub const MAX_USERNAME_LEN: usize = 255;
/// Longest refresh, access, API or RingEX token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest password accepted, so nobody makes us hash a megabyte.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest account, first or last name.
pub const MAX_NAME_LEN: usize = 255;
