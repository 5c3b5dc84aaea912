//! A bounded cache of access tokens whose signature was already verified.
//!
//! Verifying an Ed25519 JWT (base64, JSON, signature) costs tens of microseconds, and a client
//! presents the same token on every request for its whole lifetime. The cache remembers the
//! claims of tokens that verified, with the token's text: a hit is a token of the very same
//! bytes as one verified before, compared in constant time. It caches only the signature check:
//! expiry is checked on every hit against the injected clock, and the session (revocation)
//! check still runs on every request (through [`crate::credcache`], which forgets a session
//! when it ends), so a cached token is refused on the next request after a logout.
//!
//! **Why entries are found by the token's last bytes, not by a digest of it.** The last bytes
//! of a JWT are its signature, which differs from one token to the next. Finding the entry by
//! them and then comparing the whole text costs a small hash and a word-at-a-time comparison;
//! the SHA-256 of the whole token (~480 bytes) that keyed the cache before took 0.36 µs of an
//! 11 µs bearer request (`perf`, BENCHMARKS history, "Dec 5, twenty-first round"). The price is
//! memory: each entry keeps the token's text (~480 bytes) beside its claims, ~1.1 KB in all
//! against ~0.6 KB before, ~21 MB when all 20,000 of the server's entries are taken (a test
//! process's RSS grew by 21.5 MB inserting 20,000 entries with 452-byte tokens, against 12.1 MB
//! with the digest keys). Two tokens with the same last bytes only take turns in one entry: the
//! text comparison, not the key, decides a hit. And the process now holds the text of the live
//! access tokens it has seen, where it held only their digests: each is wiped when its entry
//! goes and never shown by `Debug`, but a read of the process's memory would find them.

use crate::crypto::same_in_constant_time;
use crate::jwt::{Claims, TokenError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// Bytes of a token's end that find its entry: 16 characters of a JWT's base64 signature,
/// ~90 random bits, so that tokens in service never share one (they would only take turns).
const TAIL: usize = 16;

/// See the module documentation.
#[derive(Debug)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<[u8; TAIL], Entry>>,
    /// Most entries held; when full, expired entries are dropped, then everything if needed,
    /// so memory stays bounded whatever clients send (only verified tokens get in at all).
    capacity: usize,
}

/// A verified token and its claims. The token is a live credential: its text is wiped when the
/// entry goes, so that it does not linger in freed memory, and never shown by `Debug`.
struct Entry {
    token: Zeroizing<Box<str>>,
    claims: Arc<Claims>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("token", &"[redacted]")
            .field("claims", &self.claims)
            .finish()
    }
}

/// The key of `token`'s entry: its last [`TAIL`] bytes (all of a shorter one, zero-padded).
fn key(token: &str) -> [u8; TAIL] {
    let bytes = token.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(TAIL)..];
    let mut k = [0u8; TAIL];
    k[..tail.len()].copy_from_slice(tail);
    k
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        VerifiedTokens {
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// The claims of `token` if it was verified before: `Err(Expired)` once past its `exp`, as
    /// the full verification would say; `None` if unknown.
    pub fn get(&self, token: &str, now_ms: i64) -> Option<Result<Arc<Claims>, TokenError>> {
        if self.capacity == 0 {
            return None;
        }
        let k = key(token);
        let claims = {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            let entry = entries.get(&k)?;
            if !same_in_constant_time(entry.token.as_bytes(), token.as_bytes()) {
                // Another token with the same last bytes (or a forgery of this one's end).
                return None;
            }
            entry.claims.clone()
        };
        if claims.exp.saturating_mul(1000) <= now_ms {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            // Only if it is still this token's entry: another may have taken the key meanwhile.
            if entries
                .get(&k)
                .is_some_and(|e| Arc::ptr_eq(&e.claims, &claims))
            {
                entries.remove(&k);
            }
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(claims))
    }

    /// Remembers that `token` verified with `claims` (which must still be unexpired at `now_ms`).
    pub fn insert(&self, token: &str, claims: Arc<Claims>, now_ms: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.claims.exp.saturating_mul(1000) > now_ms);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key(token),
            Entry {
                token: Zeroizing::new(token.into()),
                claims,
            },
        );
    }

    /// Forgets every entry: when a signing key retires, a token it signed must go back to the
    /// full verification (which refuses it) instead of being served from here.
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "cxauth".into(),
            sub: "1".into(),
            iat: exp - 300,
            exp,
            jti: "j".into(),
            sid: "s".into(),
            platform_id: "aws80".into(),
            main_account_id: "10000000".into(),
            lapp: crate::jwt::LAPP_ADMIN.into(),
            esu: true,
        })
    }

    #[test]
    fn hits_expire_with_the_token_and_size_is_bounded() {
        let c = VerifiedTokens::new(2);
        assert!(c.get("a", 0).is_none());
        c.insert("a", claims(10), 0);
        assert_eq!(c.get("a", 9_999).expect("hit").expect("valid").exp, 10);
        assert_eq!(c.get("a", 10_000).expect("hit"), Err(TokenError::Expired));
        assert!(c.get("a", 0).is_none(), "expired entries are dropped");
        c.insert("a", claims(10), 0);
        c.insert("b", claims(20), 0);
        // Full: the expired "a" goes first, so "b" survives.
        c.insert("c", claims(30), 15_000);
        assert_eq!(c.len(), 2);
        assert!(c.get("b", 15_000).is_some());
        // Full of live entries: cleared rather than grown.
        c.insert("d", claims(40), 15_000);
        assert!(c.len() <= 2);
        assert!(VerifiedTokens::new(0).get("a", 0).is_none());
    }

    /// Claims whose `jti` names the token they were verified for.
    fn claims_of(token: &str) -> Arc<Claims> {
        let mut c = Arc::into_inner(claims(10)).expect("one owner");
        c.jti = token.into();
        Arc::new(c)
    }

    /// Two tokens that end alike (as no two signatures do) take turns in one entry: each hit is
    /// the very token that was verified, with its own claims.
    #[test]
    fn tokens_that_end_alike_take_turns_and_never_answer_for_each_other() {
        let c = VerifiedTokens::new(10);
        let tail = "0123456789abcdefXYZ";
        let (first, second) = (format!("first.{tail}"), format!("secnd.{tail}"));
        c.insert(&first, claims_of(&first), 0);
        assert_eq!(c.get(&first, 0).expect("hit").expect("valid").jti, first);
        assert!(c.get(&second, 0).is_none(), "not verified: a miss");
        c.insert(&second, claims_of(&second), 0);
        assert_eq!(c.get(&second, 0).expect("hit").expect("valid").jti, second);
        assert!(
            c.get(&first, 0).is_none(),
            "its entry was taken: verified again"
        );
        assert_eq!(c.len(), 1);
    }

    /// The cache's `Debug` (it is a public type) never shows a token's text.
    #[test]
    fn debug_never_shows_a_token() {
        let c = VerifiedTokens::new(4);
        c.insert("header.payload.signature-secret-part", claims(10), 0);
        let shown = format!("{c:?}");
        assert!(!shown.contains("signature-secret-part"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    /// Token `i` of thread `t` in [`concurrent_hits_are_always_the_token_asked_for`]: every
    /// fourth ends like tokens of the other threads.
    fn token_of(t: usize, i: u32) -> String {
        let tail = if i.is_multiple_of(4) {
            format!("shared-tail-{:04}", i % 64)
        } else {
            format!("own-{t}-tail-{i:06}")
        };
        format!("t{t}.i{i}.{tail}")
    }

    /// Many threads inserting and reading tokens at once, their own and each other's: every
    /// hit is the token asked for (its own claims), never another's, and the bound holds
    /// throughout.
    #[test]
    fn concurrent_hits_are_always_the_token_asked_for() {
        let c = Arc::new(VerifiedTokens::new(64));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut hits = 0;
                    for i in 0..2_000u32 {
                        let token = token_of(t, i);
                        c.insert(&token, claims_of(&token), 0);
                        for (other_t, j) in [(t, i), ((t + 1) % 8, i), ((t + 3) % 8, i / 2)] {
                            let other = token_of(other_t, j);
                            if let Some(hit) = c.get(&other, 0) {
                                assert_eq!(hit.expect("valid").jti, other);
                                hits += 1;
                            }
                        }
                        assert!(c.len() <= 64);
                    }
                    hits
                })
            })
            .collect();
        let hits: u32 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert!(hits > 0, "no thread ever found a token");
    }

    proptest::proptest! {
        /// A token that differs from a verified one in any byte, or in length, is never a hit;
        /// the verified one always is.
        #[test]
        fn only_the_very_same_bytes_hit(
            token in "[A-Za-z0-9_.-]{1,600}",
            at in proptest::prelude::any::<proptest::sample::Index>(),
            by in 1u8..=255,
            cut in proptest::prelude::any::<bool>(),
        ) {
            let c = VerifiedTokens::new(4);
            c.insert(&token, claims_of(&token), 0);
            proptest::prop_assert!(c.get(&token, 0).is_some());
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            if cut {
                bytes.remove(i);
            } else {
                bytes[i] = (bytes[i] ^ by) & 0x7f;
                proptest::prop_assume!(bytes[i] != token.as_bytes()[i]);
            }
            let other = String::from_utf8(bytes).expect("ASCII");
            proptest::prop_assert!(c.get(&other, 0).is_none(), "{other:?} hit for {token:?}");
        }
    }
}
