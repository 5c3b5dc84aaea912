//! `--database` values, and that a PostgreSQL password never shows: neither in the displayed URL
//! nor in the error that refuses it, wherever in the input the password sits.
#![no_main]
use cxauth_store::DatabaseUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let shown = match DatabaseUrl::parse(s) {
        Ok(url) => {
            let _ = (url.default_key_file(), url.is_in_memory());
            // An SQLite path is the user's own file name and is shown as typed.
            if let DatabaseUrl::Sqlite { .. } = url {
                return;
            }
            url.to_string()
        }
        Err(e) => e.to_string(),
    };
    // Every `:PASSWORD@` of the input, not only the one in the user part.
    for (i, _) in s.match_indices(':') {
        let Some((pw, _)) = s[i + 1..].split_once('@') else { break };
        if pw.len() >= 6 && !pw.contains(['/', '?', '#', '%', '@', ':', '[', ']']) {
            assert!(!shown.contains(&format!(":{pw}@")), "password shown: {shown}");
        }
    }
});
