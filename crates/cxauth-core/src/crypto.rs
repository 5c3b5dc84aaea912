//! The server's secret key material and what is derived from it.
//!
//! One random 32-byte master key (kept in a 0600 file outside the database) yields, by HMAC with
//! distinct labels, a digest key and an encryption key. The digest key makes the database's
//! token digests useless to someone who stole only the database; the encryption key seals
//! signing keys and API tokens, which must be recoverable (the contract lists API tokens).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

type HmacSha256 = Hmac<Sha256>;

/// First characters of a key file, so a wrong file is told apart from a damaged one.
const KEY_FILE_PREFIX: &str = "cxauth-master-key-v1:";

/// Why key material could not be produced or read.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The operating system's random source failed.
    #[error("the system random source failed: {0}")]
    Random(String),
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file exists but does not hold a cxauth master key.
    #[error(
        "key file {0} is not a cxauth master key (expected one line starting with {KEY_FILE_PREFIX})"
    )]
    Malformed(String),
}

/// Fills an array from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(buf)
}

/// The root secret. Never printed: `Debug` shows `[redacted]`, memory is zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(MasterKey(random_bytes()?))
    }

    /// Writes a new key to `path` with mode 0600. Fails if the file exists: a key file is never
    /// overwritten, since that would orphan every secret sealed under the old key.
    pub fn write_new(&self, path: &Path) -> Result<(), CryptoError> {
        let io = |source| CryptoError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(io)?;
        let line = Zeroizing::new(format!(
            "{KEY_FILE_PREFIX}{}\n",
            URL_SAFE_NO_PAD.encode(self.0)
        ));
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(())
    }

    /// Reads a key written by [`MasterKey::write_new`].
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| CryptoError::Io {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        let malformed = || CryptoError::Malformed(path.display().to_string());
        let encoded = text
            .trim()
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(malformed)?;
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
        Ok(MasterKey(key))
    }
}

/// What a digest is of. Part of the HMAC input, so a digest of one kind of token can never be
/// matched against another kind.
#[derive(Debug, Clone, Copy)]
pub enum DigestKind {
    /// Refresh tokens.
    RefreshToken,
    /// Permanent API tokens.
    ApiToken,
    /// Legacy portal auth tokens (`authToken` of `/api/v1/auth/login`).
    LegacyToken,
    /// Access tokens issued by the built-in RingEX emulator.
    RingexAccessToken,
    /// Refresh tokens issued by the built-in RingEX emulator.
    RingexRefreshToken,
    /// Login throttle keys (usernames, addresses and their pairs are never stored in clear).
    Throttle,
    /// Attempted usernames that match no user, as the audit trail keeps them.
    AuditUsername,
    /// The web console's form tokens (CSRF), derived from a session id.
    ConsoleForm,
    /// The console's one-time cookie carrying a new API token from its form to the page that
    /// shows it: binds the token to the session that made it.
    ConsoleNewToken,
}

impl DigestKind {
    fn label(self) -> &'static [u8] {
        match self {
            DigestKind::RefreshToken => b"refresh-token\0",
            DigestKind::ApiToken => b"api-token\0",
            DigestKind::LegacyToken => b"legacy-token\0",
            DigestKind::RingexAccessToken => b"ringex-access-token\0",
            DigestKind::RingexRefreshToken => b"ringex-refresh-token\0",
            DigestKind::Throttle => b"login-throttle\0",
            DigestKind::AuditUsername => b"audit-username\0",
            DigestKind::ConsoleForm => b"console-form\0",
            DigestKind::ConsoleNewToken => b"console-new-token\0",
        }
    }
}

/// SHA-256 digest of a RingEX emulator JWT credential, the only form in which it is stored.
///
/// Unkeyed, unlike token digests, because `cxauth admin ringex jwt create` works on the database
/// without the master key. That is safe for this credential alone: it is 256 random bits, so a
/// stolen digest cannot be turned back into it.
pub fn ringex_jwt_digest(credential: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = Sha256::new();
    h.update(b"cxauth/v1/ringex-jwt\0");
    h.update(credential);
    h.finalize().into()
}

/// Whether `a` and `b` hold the same bytes, in time that depends on their length only (which is
/// public: digests have a fixed one, and a token's shows in its request). Eight bytes at a
/// time, where `subtle`'s slice comparison takes one: the verified-token cache compares a
/// ~480-byte access token on every bearer request.
pub fn same_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    bool::from(diff.ct_eq(&0))
}

/// Keys derived from the [`MasterKey`], ready for use on request paths.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secrets {
    /// HMAC-SHA-256 keyed with the digest key, its key blocks already hashed: a keyed digest
    /// (one per API-token request) clones this state instead of hashing the key's two padded
    /// blocks again, two of the five SHA-256 compressions of a token's digest. Not a
    /// [`Zeroize`] type, hence skipped: its SHA-256 states zero themselves on drop (sha2's
    /// `zeroize` feature), and so does every clone made by [`Secrets::digest`].
    #[zeroize(skip)]
    digest_mac: HmacSha256,
    seal_key: [u8; 32],
    check: [u8; 32],
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

/// HMAC-SHA-256 keyed with `key`, ready for data.
fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; the fallback never runs.
    <HmacSha256 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::KeyInit>::new(&Default::default()))
}

fn finish(mut mac: HmacSha256, parts: &[&[u8]]) -> [u8; 32] {
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    finish(keyed(key), parts)
}

impl Secrets {
    /// Derives the working keys.
    pub fn derive(master: &MasterKey) -> Self {
        let digest_key = Zeroizing::new(hmac(&master.0, &[b"cxauth/v1/digest"]));
        Secrets {
            digest_mac: keyed(digest_key.as_slice()),
            seal_key: hmac(&master.0, &[b"cxauth/v1/seal"]),
            check: hmac(&master.0, &[b"cxauth/v1/check"]),
        }
    }

    /// A public fingerprint of the master key, stored in the database so that a server started
    /// with the wrong key file refuses to run instead of failing every token check.
    pub fn fingerprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.check[..16])
    }

    /// Keyed digest of a token, the only form in which refresh tokens are stored and the look-up
    /// key of API tokens.
    pub fn digest(&self, kind: DigestKind, token: &[u8]) -> [u8; 32] {
        finish(self.digest_mac.clone(), &[kind.label(), token])
    }

    /// Encrypts with AES-256-GCM under a fresh random nonce; `aad` binds the ciphertext to its
    /// context (a row id, a purpose) so it cannot be moved elsewhere. Output: nonce ‖ ciphertext.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes: [u8; 12] = random_bytes()?;
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.seal_key));
        let nonce = Nonce::from(nonce_bytes);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Random("AES-GCM encryption failed".into()))?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Reverses [`Secrets::seal`]; `None` if the data was altered, moved, or sealed by another key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce_bytes, ct) = sealed.split_at(12);
        let nonce_arr: [u8; 12] = nonce_bytes.try_into().ok()?;
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.seal_key));
        cipher
            .decrypt(&Nonce::from(nonce_arr), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The word-at-a-time comparison says what `==` says, for every length (whole words
        /// and a rest) and for slices that differ in a single byte anywhere.
        #[test]
        fn constant_time_comparison_agrees_with_equality(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            by in 1u8..=255,
            other in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            proptest::prop_assert!(same_in_constant_time(&a, &a.clone()));
            proptest::prop_assert_eq!(same_in_constant_time(&a, &other), a == other);
            if !a.is_empty() {
                let mut b = a.clone();
                b[at.index(a.len())] ^= by;
                proptest::prop_assert!(!same_in_constant_time(&a, &b));
                proptest::prop_assert!(!same_in_constant_time(&a, &a[..a.len() - 1]));
            }
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = MasterKey::generate().expect("random");
        assert_eq!(format!("{k:?}"), "MasterKey([redacted])");
        assert_eq!(format!("{:?}", Secrets::derive(&k)), "Secrets([redacted])");
    }

    #[test]
    fn key_file_round_trips_and_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("cxauth-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k");
        let k = MasterKey::generate().expect("random");
        k.write_new(&path).expect("write");
        let back = MasterKey::load(&path).expect("load");
        assert_eq!(
            Secrets::derive(&k).fingerprint(),
            Secrets::derive(&back).fingerprint()
        );
        assert!(
            MasterKey::generate()
                .expect("random")
                .write_new(&path)
                .is_err()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nonsense").expect("write");
        assert!(matches!(
            MasterKey::load(&path),
            Err(CryptoError::Malformed(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn seal_binds_to_aad_and_key() {
        let s = Secrets::derive(&MasterKey::generate().expect("random"));
        let sealed = s.seal(b"user:1", b"secret").expect("seal");
        assert_eq!(
            s.open(b"user:1", &sealed).expect("open").as_slice(),
            b"secret"
        );
        assert!(s.open(b"user:2", &sealed).is_none());
        let other = Secrets::derive(&MasterKey::generate().expect("random"));
        assert!(other.open(b"user:1", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(s.open(b"user:1", &tampered).is_none());
        assert!(s.open(b"user:1", &sealed[..10]).is_none());
    }

    #[test]
    fn the_prepared_digest_state_gives_the_stored_digests() {
        // Digests are stored: the prepared HMAC state must give exactly what keying HMAC
        // afresh with the derived digest key gave, or every stored token stops matching.
        let master = MasterKey([7u8; 32]);
        let s = Secrets::derive(&master);
        let digest_key = hmac(&master.0, &[b"cxauth/v1/digest"]);
        for (kind, token) in [
            (
                DigestKind::ApiToken,
                &b"aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9"[..],
            ),
            (DigestKind::RefreshToken, &[0u8; 200][..]),
            (DigestKind::Throttle, &b""[..]),
        ] {
            assert_eq!(
                s.digest(kind, token),
                hmac(&digest_key, &[kind.label(), token])
            );
            // The state is cloned, never consumed: a second digest is the same.
            assert_eq!(s.digest(kind, token), s.clone().digest(kind, token));
        }
    }

    #[test]
    fn digests_are_keyed_and_kind_separated() {
        let a = Secrets::derive(&MasterKey::generate().expect("random"));
        let b = Secrets::derive(&MasterKey::generate().expect("random"));
        let t = b"aws80:c2353445-bc74-4f1a-a850-1d55a371c0a9";
        assert_eq!(
            a.digest(DigestKind::ApiToken, t),
            a.digest(DigestKind::ApiToken, t)
        );
        assert_ne!(
            a.digest(DigestKind::ApiToken, t),
            b.digest(DigestKind::ApiToken, t)
        );
        assert_ne!(
            a.digest(DigestKind::ApiToken, t),
            a.digest(DigestKind::RefreshToken, t)
        );
    }
}
