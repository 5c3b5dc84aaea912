//! Login and refresh inputs: query string plus a body read by its shape (form or JSON).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte says where the query string ends and the body begins.
    let Some((&split, rest)) = data.split_first() else { return };
    let (query, body) = rest.split_at(usize::from(split).min(rest.len()));
    let query = std::str::from_utf8(query).ok();
    if let Ok(p) = cxauth_server::params::Params::parse(query, body) {
        let _ = p.flag("flatten");
        let _ = p.get("username");
    }
});
