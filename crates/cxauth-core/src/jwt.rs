//! Access tokens: EdDSA (Ed25519) JWTs with a `kid` header.
//!
//! Ed25519 because its signatures are small and fast to verify, and a public key can be
//! published (`/.well-known/jwks.json`) for other services to check tokens without calling us.
//! Expiry is checked against the injected [`crate::clock::Clock`], not the system clock, so the
//! library's own `exp` check is turned off.

use crate::crypto::{CryptoError, Secrets, random_bytes};
use crate::store::{RetiredSigningKey, StoredSigningKey};
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxauth_proto::{Jwk, Jwks};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `lapp` claim of tokens from an admin login.
pub const LAPP_ADMIN: &str = "ADMIN";

/// The claims of a cxauth access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Issuer, `cxauth`.
    pub iss: String,
    /// The user id, as a string (RFC 7519 wants a string).
    pub sub: String,
    /// Issued at, epoch seconds.
    pub iat: i64,
    /// Expires at, epoch seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Session id: ending the session makes the token refused before its `exp`.
    pub sid: String,
    /// Platform of the login.
    pub platform_id: String,
    /// The user's main account id (numeric string).
    pub main_account_id: String,
    /// Login application, [`LAPP_ADMIN`] for admin login.
    pub lapp: String,
    /// Whether the user is a super user.
    pub esu: bool,
}

/// Why an access token was refused; each maps to one of the contract's plain-text 401 bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No credential at all.
    #[error("Jwt is missing")]
    Missing,
    /// Valid signature, but past `exp`. The only refusal clients may refresh on.
    #[error("Jwt is expired")]
    Expired,
    /// Anything else: malformed, bad signature, unknown key, ended session, disabled user.
    #[error("Jwt verification fails")]
    Invalid,
}

struct VerifyKey {
    decoding: DecodingKey,
}

/// The keys the server signs and verifies with.
pub struct KeyRing {
    signing_kid: String,
    /// The newest key, kept parsed: `jsonwebtoken::encode` takes a PKCS#8 document and parses
    /// it (deriving the public key, as costly as a signature) on every call. AWS-LC's, the same
    /// implementation the library signs with, not `ed25519_dalek`'s: under callgrind a dalek
    /// signature cost 260k instructions, AWS-LC's 91k plus hashing.
    signing: Ed25519KeyPair,
    /// The encoded header of every token it signs (`{"typ":"JWT","alg":"EdDSA","kid":…}`,
    /// base64url, then `.`), made once.
    header_part: String,
    verify: HashMap<String, VerifyKey>,
    /// Public keys of retired signing keys: they never make a token valid, they only tell an
    /// expired token they signed (`Jwt is expired`, which clients refresh on) from a forgery.
    retired: HashMap<String, VerifyKey>,
    jwks: Jwks,
    validation: Validation,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

/// Why the key ring could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// No signing key stored yet.
    #[error("no signing key in the database")]
    Empty,
    /// A stored private key does not open with this master key.
    #[error("signing key {0} cannot be decrypted with this master key")]
    WrongMasterKey(String),
    /// A stored key is damaged.
    #[error("signing key {0} is damaged")]
    Damaged(String),
    /// Randomness failed while making a key.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Makes a new Ed25519 key pair, sealed for storage.
pub fn generate_signing_key(
    secrets: &Secrets,
    now_ms: i64,
) -> Result<StoredSigningKey, CryptoError> {
    let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(random_bytes()?);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let sealed = secrets.seal(kid.as_bytes(), seed.as_slice())?;
    Ok(StoredSigningKey {
        public_key: key.verifying_key().to_bytes().to_vec(),
        kid,
        sealed_private_key: sealed,
        created_at: now_ms,
    })
}

impl KeyRing {
    /// Builds the ring from stored keys; the newest key signs, all of them verify.
    pub fn from_stored(secrets: &Secrets, keys: &[StoredSigningKey]) -> Result<Self, KeyRingError> {
        let newest = keys
            .iter()
            .max_by_key(|k| k.created_at)
            .ok_or(KeyRingError::Empty)?;
        let seed = secrets
            .open(newest.kid.as_bytes(), &newest.sealed_private_key)
            .ok_or_else(|| KeyRingError::WrongMasterKey(newest.kid.clone()))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| KeyRingError::Damaged(newest.kid.clone()))?;
        // Refuses a seed whose public key is not the stored one.
        let signing_key = Ed25519KeyPair::from_seed_and_public_key(&seed, &newest.public_key)
            .map_err(|_| KeyRingError::Damaged(newest.kid.clone()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(newest.kid.clone());
        let header_json =
            serde_json::to_vec(&header).map_err(|_| KeyRingError::Damaged(newest.kid.clone()))?;
        let header_part = format!("{}.", URL_SAFE_NO_PAD.encode(header_json));
        let mut verify = HashMap::new();
        let mut jwks = Jwks { keys: Vec::new() };
        for k in keys {
            if k.public_key.len() != 32 {
                return Err(KeyRingError::Damaged(k.kid.clone()));
            }
            verify.insert(
                k.kid.clone(),
                VerifyKey {
                    decoding: DecodingKey::from_ed_der(&k.public_key),
                },
            );
            jwks.keys.push(Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(&k.public_key),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
            });
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Ok(KeyRing {
            signing_kid: newest.kid.clone(),
            signing: signing_key,
            header_part,
            verify,
            retired: HashMap::new(),
            jwks,
            validation,
        })
    }

    /// Adds the public keys of retired signing keys, used only to classify expired tokens (see
    /// [`KeyRing::verify`]). Not published in the JWKS. A damaged one is skipped with an error
    /// log: it could only turn some `Jwt is expired` into `Jwt verification fails`.
    pub fn with_retired(mut self, retired: &[RetiredSigningKey]) -> Self {
        for k in retired {
            if self.verify.contains_key(&k.kid) {
                continue;
            }
            if k.public_key.len() != 32 {
                tracing::error!(kid = %k.kid, "retired signing key is damaged; skipped");
                continue;
            }
            self.retired.insert(
                k.kid.clone(),
                VerifyKey {
                    decoding: DecodingKey::from_ed_der(&k.public_key),
                },
            );
        }
        self
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Whether the ring knows `kid`, as a live or a retired key (an unknown one may mean
    /// another instance added a key).
    pub fn knows(&self, kid: &str) -> bool {
        self.verify.contains_key(kid) || self.retired.contains_key(kid)
    }

    /// Signs `claims` with the newest key: the very token `jsonwebtoken::encode` makes (Ed25519
    /// signatures are deterministic; a test holds them equal), at half its cost, since the key
    /// and the header are prepared once instead of on every call.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let claims_json = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(self.header_part.len() + claims_json.len() * 2 + 90);
        token.push_str(&self.header_part);
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
        let signature = self
            .signing
            .try_sign(token.as_bytes())
            .map_err(|_| jsonwebtoken::signature::Error::new())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// Verifies the signature, then expiry against `now_ms`. Says nothing about the session.
    ///
    /// A token of a retired key is never valid: [`TokenError::Expired`] if its signature holds
    /// and it is past `exp` (what it would have got before the key retired), otherwise
    /// [`TokenError::Invalid`].
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
        let kid = token_kid(token).ok_or(TokenError::Invalid)?;
        let (key, live) = match self.verify.get(&kid) {
            Some(k) => (k, true),
            None => (self.retired.get(&kid).ok_or(TokenError::Invalid)?, false),
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp.saturating_mul(1000) <= now_ms {
            return Err(TokenError::Expired);
        }
        if !live {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

/// The `kid` of a JWT's header, if it has one; no signature check.
pub fn token_kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "cxauth".into(),
            sub: "1".into(),
            iat: exp - 300,
            exp,
            jti: "j".into(),
            sid: "s".into(),
            platform_id: "aws80".into(),
            main_account_id: "10000000".into(),
            lapp: LAPP_ADMIN.into(),
            esu: true,
        }
    }

    #[test]
    fn sign_verify_expire_and_refuse_foreign_keys() {
        let secrets = Secrets::derive(&MasterKey::generate().expect("random"));
        let stored = generate_signing_key(&secrets, 0).expect("key");
        let ring = KeyRing::from_stored(&secrets, std::slice::from_ref(&stored)).expect("ring");
        let t = ring.sign(&claims(1_000)).expect("sign");
        assert_eq!(ring.verify(&t, 999_999).expect("valid"), claims(1_000));
        assert_eq!(ring.verify(&t, 1_000_000), Err(TokenError::Expired));

        let other_secrets = Secrets::derive(&MasterKey::generate().expect("random"));
        let other = KeyRing::from_stored(
            &other_secrets,
            &[generate_signing_key(&other_secrets, 0).expect("key")],
        )
        .expect("ring");
        let foreign = other.sign(&claims(1_000)).expect("sign");
        assert_eq!(ring.verify(&foreign, 0), Err(TokenError::Invalid));
        // The same token with a tampered payload.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"2"}"#);
        assert_eq!(ring.verify(&parts.join("."), 0), Err(TokenError::Invalid));
        assert!(matches!(
            KeyRing::from_stored(&other_secrets, &[stored]),
            Err(KeyRingError::WrongMasterKey(_))
        ));
        assert_eq!(ring.jwks().keys.len(), 1);
    }

    /// `sign` builds the token itself; it must be exactly what the library would make.
    #[test]
    fn sign_makes_the_libraries_token_byte_for_byte() {
        let secrets = Secrets::derive(&MasterKey::generate().expect("random"));
        let stored = generate_signing_key(&secrets, 0).expect("key");
        let ring = KeyRing::from_stored(&secrets, std::slice::from_ref(&stored)).expect("ring");
        let seed = secrets
            .open(stored.kid.as_bytes(), &stored.sealed_private_key)
            .expect("open");
        let seed: [u8; 32] = seed.as_slice().try_into().expect("32 bytes");
        let der = ed25519_dalek::SigningKey::from_bytes(&seed)
            .to_pkcs8_der()
            .expect("der");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(stored.kid.clone());
        for c in [claims(1_000), claims(i64::MAX / 1000)] {
            let expected = jsonwebtoken::encode(
                &header,
                &c,
                &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            )
            .expect("encode");
            assert_eq!(ring.sign(&c).expect("sign"), expected);
        }
    }

    #[test]
    fn a_retired_key_only_classifies_expired_tokens() {
        let secrets = Secrets::derive(&MasterKey::generate().expect("random"));
        let old = generate_signing_key(&secrets, 0).expect("key");
        let new = generate_signing_key(&secrets, 1).expect("key");
        let before = KeyRing::from_stored(&secrets, std::slice::from_ref(&old)).expect("ring");
        let expired = before.sign(&claims(1_000)).expect("sign");
        let long_lived = before.sign(&claims(i64::MAX / 1000)).expect("sign");
        let retired = RetiredSigningKey {
            kid: old.kid.clone(),
            public_key: old.public_key.clone(),
            retired_at: 0,
        };
        let after = KeyRing::from_stored(&secrets, std::slice::from_ref(&new))
            .expect("ring")
            .with_retired(std::slice::from_ref(&retired));
        assert!(after.knows(&old.kid));
        assert_eq!(after.jwks().keys.len(), 1, "retired keys are not published");
        assert_eq!(after.verify(&expired, 1_000_000), Err(TokenError::Expired));
        assert_eq!(
            after.verify(&long_lived, 1_000_000),
            Err(TokenError::Invalid)
        );
        // A forgery under the retired kid, even past its exp, is not "expired".
        let mut parts: Vec<String> = expired.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"2","exp":1}"#);
        assert_eq!(
            after.verify(&parts.join("."), 1_000_000),
            Err(TokenError::Invalid)
        );
        // Without the retired key: unknown, so invalid.
        let bare = KeyRing::from_stored(&secrets, std::slice::from_ref(&new)).expect("ring");
        assert_eq!(bare.verify(&expired, 1_000_000), Err(TokenError::Invalid));
    }
}
