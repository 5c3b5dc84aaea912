//! JWT handling before and after the signature check: header decoding (`kid`) and verification
//! against a fixed key ring.
#![no_main]
use cxauth_core::crypto::{MasterKey, Secrets};
use cxauth_core::jwt::{KeyRing, generate_signing_key, token_kid};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let secrets = Secrets::derive(&MasterKey::generate().expect("random"));
        let key = generate_signing_key(&secrets, 0).expect("key");
        KeyRing::from_stored(&secrets, &[key]).expect("ring")
    })
}

fuzz_target!(|s: &str| {
    let _ = token_kid(s);
    // Nothing but a token this ring signed may verify.
    assert!(ring().verify(s, 0).is_err());
});
