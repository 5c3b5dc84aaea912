//! `--database` values, and that a PostgreSQL password never shows in the displayed URL.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(url) = cxauth_store::DatabaseUrl::parse(s) {
        let shown = url.to_string();
        let _ = url.default_key_file();
        if let cxauth_store::DatabaseUrl::Postgres { .. } = url
            && let Some(pw) = s.split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(auth, _)| auth.split_once(':')).map(|(_, p)| p)
            && pw.len() >= 6
            && !pw.contains(['/', '?', '#', '%', '@', ':', '[', ']'])
        {
            assert!(!shown.contains(&format!(":{pw}@")), "password shown: {shown}");
        }
    }
});
