//! `X-Session-Set` parsing and merging on hostile input.
//!
//! The input is split into header values at `\n`. Invariants: `parse_sets` answers without
//! panicking; the set is whole-or-nothing (it is accepted exactly when every header alone is
//! accepted); an accepted change merged into a session encodes to printable ASCII that is a
//! valid header value and a JSON object holding exactly the merged fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use session_sidecar::protocol::{encode_session, parse_sets};

fuzz_target!(|data: &[u8]| {
    let headers: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let whole = parse_sets(headers.iter().copied());
    let each_ok = headers.iter().all(|h| parse_sets([*h]).is_ok());
    assert_eq!(whole.is_ok(), each_ok, "a set applies whole or not at all");
    let Ok(change) = whole else {
        return;
    };
    for (k, _) in &change.set {
        assert!(!k.is_empty() && !k.starts_with("__"));
        assert!(!change.delete.contains(k), "a field both set and deleted");
    }
    let current = vec![
        ("kept".to_string(), "\"v\"".to_string()),
        ("__created".to_string(), "1".to_string()),
        ("n".to_string(), "1".to_string()),
    ];
    let merged = change.merged(&current);
    let encoded = encode_session(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert!(
        encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{encoded:?}"
    );
    assert!(http::HeaderValue::from_str(&encoded).is_ok());
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&encoded) else {
        panic!("X-Session is not a JSON object: {encoded:?}");
    };
    let visible = merged.iter().filter(|(k, _)| !k.starts_with("__")).count();
    assert_eq!(map.len(), visible, "{encoded:?}");
    for (k, v) in &change.set {
        let expected: Value = serde_json::from_str(v).expect("stored value is JSON");
        assert_eq!(map[k], expected);
    }
});
