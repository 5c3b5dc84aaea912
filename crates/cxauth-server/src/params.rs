//! Request parameters of the auth endpoints, from wherever clients put them.
//!
//! The RingCX guide puts credentials in the query string, the SDKs in a form body, some clients
//! in JSON, and several send `Content-Type: application/json` with a form body or an empty `""`
//! body. So the body is read by its shape, not its declared type: empty, `""` or `null` means
//! nothing; `{…}` is a JSON object; anything else is form-encoded. Query and body merge, and a
//! field given twice with different values is refused rather than guessed at. Nothing is
//! guessed in the encodings either: a JSON object with the same key twice, and form encoding
//! that decodes to invalid UTF-8, are refused (a lossy decoding would turn a password into
//! something else, and "last key wins" is how two parsers of one request come to disagree).

use std::collections::HashMap;

/// Why parameters could not be read. The message is safe to show (it never echoes values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The body starts like JSON but is not a JSON object of scalars.
    #[error("the JSON body must be an object whose values are strings, numbers or booleans")]
    BadJson,
    /// A field came twice with different values.
    #[error("field {0:?} is given more than once with different values")]
    Conflict(String),
    /// The JSON object has the same key twice (whatever the values).
    #[error("the JSON body has the key {0:?} more than once")]
    DuplicateJsonKey(String),
    /// Percent-decoding the query string or a form body gave bytes that are not UTF-8.
    #[error("the {0} is not valid UTF-8 once percent-decoded")]
    BadUtf8(&'static str),
}

/// A JSON object read without losing anything: its entries in order, duplicates included
/// (`serde_json::Map` keeps only the last of a repeated key).
struct JsonEntries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for JsonEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = JsonEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonEntries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(entry);
                }
                Ok(JsonEntries(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// `application/x-www-form-urlencoded` pairs, strictly: `+` is a space, `%XX` a byte, and the
/// decoded bytes must be UTF-8 (`form_urlencoded` would replace bad bytes with U+FFFD).
fn form_pairs(raw: &[u8], what: &'static str) -> Result<Vec<(String, String)>, ParamError> {
    let decode = |part: &[u8]| -> Result<String, ParamError> {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).map_err(|_| ParamError::BadUtf8(what))
    };
    raw.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Merged parameters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Reads the query string and the body.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Result<Self, ParamError> {
        let mut p = Params::default();
        if let Some(q) = query {
            p.merge_form(q.as_bytes(), "query string")?;
        }
        let trimmed = body.trim_ascii();
        match trimmed {
            b"" | b"\"\"" | b"null" | b"{}" => {}
            _ if trimmed.first() == Some(&b'{') => p.merge_json(trimmed)?,
            _ => p.merge_form(trimmed, "request body")?,
        }
        Ok(p)
    }

    fn insert(&mut self, key: String, value: String) -> Result<(), ParamError> {
        match self.0.get(&key) {
            Some(existing) if *existing != value => Err(ParamError::Conflict(key)),
            Some(_) => Ok(()),
            None => {
                self.0.insert(key, value);
                Ok(())
            }
        }
    }

    fn merge_form(&mut self, raw: &[u8], what: &'static str) -> Result<(), ParamError> {
        for (k, v) in form_pairs(raw, what)? {
            self.insert(k, v)?;
        }
        Ok(())
    }

    fn merge_json(&mut self, raw: &[u8]) -> Result<(), ParamError> {
        let JsonEntries(entries) = serde_json::from_slice(raw).map_err(|_| ParamError::BadJson)?;
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for (k, _) in &entries {
            if !seen.insert(k.as_str()) {
                return Err(ParamError::DuplicateJsonKey(k.clone()));
            }
        }
        for (k, v) in entries {
            let v = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return Err(ParamError::BadJson),
            };
            self.insert(k, v)?;
        }
        Ok(())
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Removes and returns `name`, so a secret is moved out rather than copied.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// A boolean flag: absent is `None`; `true`/`false`/`1`/`0` in any case; anything else is an
    /// error message naming the field.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(_) => Err(format!("{name} must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(q: Option<&str>, b: &str) -> Result<Params, ParamError> {
        Params::parse(q, b.as_bytes())
    }

    #[test]
    fn all_three_input_styles() {
        let q = p(Some("username=a&password=b%26c&platformId=aws80"), "").expect("query");
        assert_eq!(q.get("password"), Some("b&c"));
        let f = p(None, "username=a&password=b%26c&platformId=aws80").expect("form");
        assert_eq!(f, q);
        let j = p(
            None,
            r#"{"username":"a","password":"b&c","platformId":"aws80"}"#,
        )
        .expect("json");
        assert_eq!(j, q);
        assert_eq!(
            p(Some("username=a&password=b%26c&platformId=aws80"), "\"\"").expect("q+\"\""),
            q
        );
    }

    #[test]
    fn merges_agreeing_duplicates_and_refuses_disagreeing_ones() {
        assert!(p(Some("a=1"), "a=1").is_ok());
        assert_eq!(p(Some("a=1"), "a=2"), Err(ParamError::Conflict("a".into())));
        assert_eq!(
            p(Some("a=1&a=2"), ""),
            Err(ParamError::Conflict("a".into()))
        );
        assert_eq!(
            p(None, r#"{"a":"1"}"#).and_then(|_| p(Some("a=2"), r#"{"a":"1"}"#)),
            Err(ParamError::Conflict("a".into()))
        );
    }

    #[test]
    fn json_scalars_and_refusals() {
        let j = p(None, r#"{"n":5,"b":true,"z":null}"#).expect("json");
        assert_eq!(j.get("n"), Some("5"));
        assert_eq!(j.get("b"), Some("true"));
        assert_eq!(j.get("z"), None);
        assert_eq!(p(None, r#"{"a":[1]}"#), Err(ParamError::BadJson));
        assert_eq!(p(None, r#"{"a":"#), Err(ParamError::BadJson));
    }

    #[test]
    fn duplicate_json_keys_are_refused_even_with_equal_values() {
        assert_eq!(
            p(None, r#"{"username":"a","password":"x","password":"y"}"#),
            Err(ParamError::DuplicateJsonKey("password".into()))
        );
        assert_eq!(
            p(None, r#"{"a":"1","a":"1"}"#),
            Err(ParamError::DuplicateJsonKey("a".into()))
        );
        // Escapes decode before the comparison: "\u0061" is "a".
        assert_eq!(
            p(None, r#"{"a":"1","\u0061":"2"}"#),
            Err(ParamError::DuplicateJsonKey("a".into()))
        );
        let msg = ParamError::DuplicateJsonKey("password".into()).to_string();
        assert!(
            msg.contains("password") && msg.contains("more than once"),
            "{msg}"
        );
    }

    #[test]
    fn form_encoding_is_strict_utf8() {
        assert_eq!(
            p(None, "username=a&password=%FF%FE"),
            Err(ParamError::BadUtf8("request body"))
        );
        assert_eq!(
            Params::parse(None, b"username=a&password=\xff"),
            Err(ParamError::BadUtf8("request body"))
        );
        assert_eq!(
            p(Some("password=%C3"), ""),
            Err(ParamError::BadUtf8("query string"))
        );
        let ok = p(None, "a=%C3%A9+b&c&=d&&e=").expect("valid form");
        assert_eq!(ok.get("a"), Some("é b"));
        assert_eq!(ok.get("c"), Some(""));
        assert_eq!(ok.get(""), Some("d"));
        assert_eq!(ok.get("e"), Some(""));
        // A lone or malformed % is kept as is, as form_urlencoded does.
        assert_eq!(p(None, "a=100%").expect("form").get("a"), Some("100%"));
    }

    #[test]
    fn flags() {
        let f = p(Some("a=TRUE&b=0&c=yes"), "").expect("query");
        assert_eq!(f.flag("a"), Ok(Some(true)));
        assert_eq!(f.flag("b"), Ok(Some(false)));
        assert!(f.flag("c").is_err());
        assert_eq!(f.flag("d"), Ok(None));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(q in proptest::option::of(".{0,200}"), b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Params::parse(q.as_deref(), &b);
        }

        #[test]
        fn form_round_trips_any_values(u in ".{0,40}", pw in ".{0,40}") {
            let body = serde_urlencoded::to_string([("username", &u), ("password", &pw)]).expect("encode");
            let parsed = Params::parse(None, body.as_bytes()).expect("parse");
            prop_assert_eq!(parsed.get("username"), Some(u.as_str()));
            prop_assert_eq!(parsed.get("password"), Some(pw.as_str()));
            let json = serde_json::json!({"username": u, "password": pw}).to_string();
            let parsed_json = Params::parse(None, json.as_bytes()).expect("parse json");
            prop_assert_eq!(parsed_json, parsed);
        }
    }
}
