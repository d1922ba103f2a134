//! `X-Session` encoding of arbitrary stored fields (the store may hold anything another
//! process wrote).
//!
//! The input is split into strings at 0xFE bytes (never part of UTF-8) and taken in pairs as
//! (name, value). Invariants: the output is printable ASCII, a valid header value and a JSON
//! object with every non-reserved field; canonical JSON values come back as that JSON, other
//! JSON text as its value, and anything else as a string equal to the stored text.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use session_sidecar::protocol::{encode_session, is_canonical_json, to_ascii_json};

fuzz_target!(|data: &[u8]| {
    let parts: Vec<String> = data
        .split(|b| *b == 0xfe)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    // Names are unique in a stored hash.
    let fields: BTreeMap<&str, &str> = parts
        .chunks(2)
        .map(|c| (c[0].as_str(), c.get(1).map_or("", |s| s.as_str())))
        .collect();
    let encoded = encode_session(fields.iter().map(|(k, v)| (*k, *v)));
    assert!(
        encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{encoded:?}"
    );
    assert!(http::HeaderValue::from_str(&encoded).is_ok());
    let map = match serde_json::from_str::<Value>(&encoded) {
        Ok(Value::Object(map)) => map,
        other => panic!("X-Session is not a JSON object: {encoded:?} {other:?}"),
    };
    let visible: Vec<_> = fields
        .iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .collect();
    assert_eq!(map.len(), visible.len(), "{encoded:?}");
    for (k, v) in visible {
        let seen = &map[*k];
        match serde_json::from_str::<Value>(v) {
            Ok(parsed) => {
                assert_eq!(seen, &parsed, "{v:?}");
                if is_canonical_json(v) {
                    assert!(
                        encoded.contains(*v),
                        "canonical values are spliced as stored"
                    );
                }
            }
            Err(_) => assert_eq!(seen, &Value::String(v.to_string()), "{v:?}"),
        }
    }
    // The sidecar's own encoding of any text is canonical and round-trips.
    for part in &parts {
        let json = to_ascii_json(&Value::String(part.clone()));
        assert!(is_canonical_json(&json), "{json:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            Value::String(part.clone())
        );
    }
});
