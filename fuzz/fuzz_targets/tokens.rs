//! The token formats: API tokens (`<platform>:<uuid v4>`) and the token alphabet check.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Some(t) = cxauth_proto::ApiToken::parse(s) {
        // Only the canonical form parses, and it round-trips.
        assert_eq!(t.to_string(), s);
        assert!(cxauth_proto::is_token_alphabet(s));
    }
    let _ = cxauth_proto::is_valid_platform_id(s);
});
