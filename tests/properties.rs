//! Property tests of the invariants the sidecar's security rests on, run by CI every time
//! (the fuzz targets in `fuzz/` check the same invariants for longer, on demand).
//!
//! - An encoded `X-Session` is always a valid header value and valid JSON that round-trips:
//!   field names and values with unicode, control characters and DEL included.
//! - `X-Session-Set` headers apply whole or not at all: one invalid header among several
//!   rejects every one of them; valid ones apply in order like a simple model says.
//! - Cookie verification never accepts a modified cookie (byte flips, truncations,
//!   extensions, insertions, removals, another secret); signed values always verify.
//! - Cookies other than the session cookie pass the split byte-for-byte.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use session_sidecar::config::CookieConfig;
use session_sidecar::cookie::{split_cookies, CookieCodec, SessionId};
use session_sidecar::protocol::{
    encode_session, is_canonical_json, parse_sets, to_ascii_json, SetRejection,
};

const SECRET: &str = "property-test-secret-0123456789abcdef";

fn codec(secrets: &[&str]) -> CookieCodec {
    let mut config =
        CookieConfig::with_defaults(secrets.iter().map(|s| s.as_bytes().to_vec()).collect());
    config.name = "sid".into();
    CookieCodec::new(&config)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any char, weighted towards the troublesome ones: controls, DEL, quotes, backslash,
/// non-ASCII, astral plane.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::char::range('\u{0}', '\u{1f}'),
        1 => Just('\u{7f}'),
        1 => prop::sample::select(vec!['"', '\\', '/', ' ', '\u{2028}', '\u{feff}', '\u{1f600}', 'é']),
        3 => prop::char::range(' ', '~'),
    ]
}

fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn any_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        // Arbitrary precision: longer than any machine number.
        "[1-9][0-9]{20,40}".prop_map(|s| serde_json::from_str(&s).unwrap()),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any_number().prop_map(Value::Number),
        any_text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any_text(6), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A field name the app may write: not empty, not reserved.
fn field_name() -> impl Strategy<Value = String> {
    any_text(10).prop_filter("app field name", |k| !k.is_empty() && !k.starts_with("__"))
}

fn assert_header_safe(encoded: &str) -> Result<Map<String, Value>, TestCaseError> {
    prop_assert!(
        http::HeaderValue::from_str(encoded).is_ok(),
        "not a header value: {encoded:?}"
    );
    prop_assert!(
        encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "not printable ASCII: {encoded:?}"
    );
    match serde_json::from_str::<Value>(encoded) {
        Ok(Value::Object(map)) => Ok(map),
        other => Err(TestCaseError::fail(format!(
            "not a JSON object: {encoded:?} -> {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Values the sidecar stored itself (canonical JSON) come back exactly, under their names.
    #[test]
    fn encoded_session_is_a_header_value_and_round_trips(
        fields in prop::collection::btree_map(field_name(), any_value(), 0..8),
        reserved in prop::collection::btree_map("__[a-z]{0,6}", any_text(8), 0..3),
    ) {
        let mut stored: Vec<(String, String)> =
            fields.iter().map(|(k, v)| (k.clone(), to_ascii_json(v))).collect();
        for (k, v) in &stored {
            prop_assert!(is_canonical_json(v), "the sidecar's own encoding is canonical: {k:?} {v:?}");
        }
        stored.extend(reserved.into_iter());
        let encoded = encode_session(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let back = assert_header_safe(&encoded)?;
        let expected: Map<String, Value> = fields.into_iter().collect();
        prop_assert_eq!(back, expected, "reserved fields hidden, the rest unchanged");
    }

    /// Values written into the store by something else (any text) never break the header:
    /// JSON text is shown as that JSON, anything else as a JSON string of the text.
    #[test]
    fn foreign_stored_values_never_break_the_header(
        fields in prop::collection::btree_map(field_name(), any_text(24), 0..6),
    ) {
        let encoded = encode_session(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let back = assert_header_safe(&encoded)?;
        prop_assert_eq!(back.len(), fields.len());
        for (k, v) in &fields {
            let seen = &back[k];
            match serde_json::from_str::<Value>(v) {
                Ok(parsed) => prop_assert_eq!(seen, &parsed),
                Err(_) => prop_assert_eq!(seen, &Value::String(v.clone())),
            }
        }
    }

    /// Arbitrary bytes as `X-Session-Set` values: an answer, never a panic; an accepted change
    /// always encodes to a safe header.
    #[test]
    fn any_set_headers_give_a_change_or_a_rejection(
        headers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
        objects in prop::collection::vec(prop::collection::btree_map(any_text(6), any_value(), 0..4), 0..3),
    ) {
        let _ = parse_sets(headers.iter().map(Vec::as_slice));
        let texts: Vec<String> = objects
            .iter()
            .map(|o| Value::Object(o.clone().into_iter().collect()).to_string())
            .collect();
        if let Ok(change) = parse_sets(texts.iter().map(String::as_bytes)) {
            let merged = change.merged(&[("kept".into(), "1".into())]);
            let encoded = encode_session(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            assert_header_safe(&encoded)?;
        }
    }

    /// Valid headers apply in order, as a map model says: a member sets, a top-level null
    /// deletes, later headers win.
    #[test]
    fn valid_sets_apply_in_order_like_the_model(
        current in prop::collection::btree_map(field_name(), any_value().prop_filter("stored", |v| !v.is_null()), 0..4),
        headers in prop::collection::vec(prop::collection::btree_map(field_name(), any_value(), 0..4), 1..4),
    ) {
        let texts: Vec<String> = headers
            .iter()
            .map(|o| Value::Object(o.clone().into_iter().collect()).to_string())
            .collect();
        let change = parse_sets(texts.iter().map(String::as_bytes)).expect("valid sets parse");
        let mut model: BTreeMap<String, Value> = current.clone();
        for object in &headers {
            for (k, v) in object {
                if v.is_null() {
                    model.remove(k);
                } else {
                    model.insert(k.clone(), v.clone());
                }
            }
        }
        let stored: Vec<(String, String)> =
            current.iter().map(|(k, v)| (k.clone(), to_ascii_json(v))).collect();
        let merged = change.merged(&stored);
        let encoded = encode_session(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let back = assert_header_safe(&encoded)?;
        let back: BTreeMap<String, Value> = back.into_iter().collect();
        prop_assert_eq!(back, model);
    }

    /// One invalid header among valid ones rejects the whole set: nothing of it applies.
    #[test]
    fn one_invalid_header_rejects_the_whole_set(
        valid in prop::collection::vec(prop::collection::btree_map(field_name(), any_value(), 1..4), 0..4),
        position in any::<prop::sample::Index>(),
        invalid in prop_oneof![
            Just((b"[1,2]".to_vec(), SetRejection::Malformed)),
            Just((b"\"text\"".to_vec(), SetRejection::Malformed)),
            Just((b"null".to_vec(), SetRejection::Malformed)),
            Just((b"{\"a\":".to_vec(), SetRejection::Malformed)),
            Just((b"{\"\":1}".to_vec(), SetRejection::Malformed)),
            Just((b"{\"ok\":\"\xff\"}".to_vec(), SetRejection::Malformed)),
            Just((Vec::new(), SetRejection::Malformed)),
            "__[a-z]{0,8}".prop_map(|k| (format!("{{\"{k}\":1}}").into_bytes(), SetRejection::ReservedKey)),
        ],
    ) {
        let mut headers: Vec<Vec<u8>> = valid
            .iter()
            .map(|o| Value::Object(o.clone().into_iter().collect()).to_string().into_bytes())
            .collect();
        let at = position.index(headers.len() + 1);
        headers.insert(at, invalid.0);
        prop_assert_eq!(parse_sets(headers.iter().map(Vec::as_slice)), Err(invalid.1));
    }

    /// A signed value always verifies, to the same ID.
    #[test]
    fn signed_values_verify(_seed in any::<u8>()) {
        let codec = codec(&[SECRET]);
        let id = SessionId::generate();
        let value = codec.sign(&id);
        prop_assert_eq!(codec.verify(value.as_bytes()), Ok(id));
    }

    /// No single or multiple modification of a signed cookie verifies.
    #[test]
    fn modified_cookies_never_verify(
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 1u8..=255, 0u8..5, prop::collection::vec(any::<u8>(), 1..8)),
            1..4,
        ),
    ) {
        let codec = codec(&[SECRET]);
        let original = codec.sign(&SessionId::generate()).into_bytes();
        let mut value = original.clone();
        for (index, xor, kind, extra) in edits {
            if value.is_empty() {
                value.push(b'A');
            }
            let i = index.index(value.len());
            match kind {
                0 => value[i] ^= xor,                          // flip bits of one byte
                1 => value.truncate(i),                        // truncate
                2 => value.extend_from_slice(&extra),          // extend
                3 => { value.splice(i..i, extra); }            // insert
                _ => { value.remove(i); }                      // remove one byte
            }
        }
        prop_assume!(value != original);
        prop_assert!(codec.verify(&value).is_err(), "accepted a modified cookie");
    }

    /// Arbitrary bytes never verify, and a value signed with another secret never verifies.
    #[test]
    fn foreign_cookies_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        let codec = codec(&[SECRET]);
        prop_assert!(codec.verify(&bytes).is_err());
        let other = self::codec(&["another-secret-of-enough-length-0123456789"]);
        prop_assert!(codec.verify(other.sign(&SessionId::generate()).as_bytes()).is_err());
    }

    /// Other cookies reach the app byte-for-byte (any bytes but `;`), the session cookie is
    /// taken out wherever it is.
    #[test]
    fn other_cookies_pass_the_split_unchanged(
        cookies in prop::collection::vec(
            ("[a-zA-Z0-9_-]{1,8}", prop::collection::vec(any::<u8>().prop_filter("no ;", |b| *b != b';'), 0..12)),
            0..12,
        ),
        session_at in any::<prop::sample::Index>(),
    ) {
        let cookies: Vec<(String, Vec<u8>)> = cookies
            .into_iter()
            .filter(|(name, _)| name != "sid")
            .map(|(name, value)| {
                let value = value.trim_ascii().to_vec();
                (name, value)
            })
            .collect();
        let mut pairs: Vec<Vec<u8>> = cookies
            .iter()
            .map(|(n, v)| [n.as_bytes(), b"=", v].concat())
            .collect();
        let at = session_at.index(pairs.len() + 1);
        pairs.insert(at, b"sid=signed.value".to_vec());
        let header = pairs.join(&b"; "[..]);
        let split = split_cookies("sid", [header.as_slice()]);
        prop_assert!(split.found);
        prop_assert_eq!(split.candidates, vec![b"signed.value".to_vec()]);
        let expected: Vec<Vec<u8>> = pairs.into_iter().filter(|p| !p.starts_with(b"sid=")).collect();
        let expected = (!expected.is_empty()).then(|| expected.join(&b"; "[..]));
        prop_assert_eq!(split.rest, expected);
    }
}

/// A stored value with a lone UTF-16 surrogate escape (`"\ud800"`, valid JSON grammar but not
/// a Unicode string) written into the store by another process must not reach the app as is:
/// strict JSON parsers such as serde_json refuse the whole `X-Session` then. Ignored until
/// `protocol::is_canonical_json` refuses such values (it only checks the grammar); the fuzz
/// target `encode` finds the same case.
#[test]
fn lone_surrogate_escapes_never_break_the_session_json() {
    for stored in [
        r#""\ud800""#,
        r#""\udfff""#,
        r#"["\ud83d"]"#,
        r#"{"k":"\ud83dx"}"#,
    ] {
        let encoded = encode_session([("a", stored)]);
        assert!(
            serde_json::from_str::<Value>(&encoded).is_ok(),
            "{stored} -> {encoded} does not parse"
        );
    }
}
