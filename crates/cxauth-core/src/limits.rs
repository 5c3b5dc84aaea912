//! The longest inputs cxauth reads: anything longer is refused before any work is done on it.

/// Longest username accepted.
pub const MAX_USERNAME_LEN: usize = 255;
/// Longest refresh, access, API or RingEX token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest password accepted, so nobody makes us hash a megabyte.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest account, first or last name.
pub const MAX_NAME_LEN: usize = 255;
/// Longest API token name, in characters: enough to say what a script is, short enough for a
/// table row.
pub const MAX_API_TOKEN_NAME_CHARS: usize = 100;
/// Shortest API token lifetime one may ask for: less could expire before a last use is even
/// written.
pub const MIN_API_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest API token lifetime one may ask for (two years); a token meant to outlive that is
/// minted without an expiry.
pub const MAX_API_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(2 * 365 * 24 * 3600);
