//! A bounded cache of access tokens whose signature was already verified.
//!
//! Verifying an Ed25519 JWT (base64, JSON, signature) costs tens of microseconds, and a client
//! presents the same token on every request for its whole lifetime. The cache remembers the
//! claims of tokens that verified, keyed by the SHA-256 of the token text (a hit therefore means
//! the very same bytes were verified before). It caches only the signature check: expiry is
//! checked on every hit against the injected clock, and the session (revocation) check still
//! runs on every request (through [`crate::credcache`], which forgets a session when it ends),
//! so a cached token is refused on the next request after a logout.

use crate::jwt::{Claims, TokenError};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// See the module documentation.
#[derive(Debug)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<[u8; 32], Arc<Claims>>>,
    /// Most entries held; when full, expired entries are dropped, then everything if needed,
    /// so memory stays bounded whatever clients send (only verified tokens get in at all).
    capacity: usize,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
        let claims = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
            .cloned()?;
        if claims.exp.saturating_mul(1000) <= now_ms {
            self.entries
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&k);
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
            entries.retain(|_, c| c.exp.saturating_mul(1000) > now_ms);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key(token), claims);
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
}
