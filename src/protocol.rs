//! The header protocol between the sidecar and the app.
//!
//! In: which client headers are stripped, and how session fields become the `X-Session` value
//! (compact, ASCII-only JSON). Out: how `X-Session-Set` headers become one [`Change`] (or a
//! rejection of all of them) and how `X-Session-Action` is read. Field values travel as JSON
//! text: stored as written, spliced into `X-Session` without re-parsing when already canonical.

use std::io;

use http::HeaderName;
use serde_json::ser::Formatter;
use serde_json::Value;

/// The header the app reads.
pub const X_SESSION: HeaderName = HeaderName::from_static("x-session");
/// The header the app writes to change fields.
pub const X_SESSION_SET: HeaderName = HeaderName::from_static("x-session-set");
/// The header the app writes to regenerate or destroy the session.
pub const X_SESSION_ACTION: HeaderName = HeaderName::from_static("x-session-action");
/// The optional signature of `X-Session`.
pub const X_SESSION_SIGNATURE: HeaderName = HeaderName::from_static("x-session-signature");

pub use crate::session::{Action, Change, SetRejection, RESERVED_PREFIX};

/// True for every header a client must never be able to send to the app: the `X-Session*`
/// family, matched case-insensitively and with `_` in place of `-`.
pub fn is_reserved_request_header(name: &str) -> bool {
    const NAMES: [&[u8]; 4] = [
        b"x-session",
        b"x-session-set",
        b"x-session-action",
        b"x-session-signature",
    ];
    let name = name.as_bytes();
    NAMES.iter().any(|candidate| {
        candidate.len() == name.len()
            && candidate.iter().zip(name).all(|(c, n)| {
                let n = n.to_ascii_lowercase();
                *c == n || (*c == b'-' && n == b'_')
            })
    })
}

/// Parses every `X-Session-Set` value of one response, in order, into one change.
/// Any invalid header rejects them all.
pub fn parse_sets<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Change, SetRejection> {
    let mut change = Change::default();
    for raw in values {
        let text = std::str::from_utf8(raw).map_err(|_| SetRejection::Malformed)?;
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(SetRejection::Malformed),
        };
        for (key, value) in object {
            if key.is_empty() {
                return Err(SetRejection::Malformed);
            }
            if key.starts_with(RESERVED_PREFIX) {
                return Err(SetRejection::ReservedKey);
            }
            change.set.retain(|(k, _)| *k != key);
            change.delete.retain(|k| *k != key);
            if value.is_null() {
                change.delete.push(key);
            } else {
                change.set.push((key, to_ascii_json(&value)));
            }
        }
    }
    Ok(change)
}

/// Reads the `X-Session-Action` values of one response. The strongest action wins
/// (destroy-all over destroy over regenerate). Unknown values are returned for logging.
pub fn parse_actions<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> (Option<Action>, Vec<String>) {
    let mut action = None;
    let mut unknown = Vec::new();
    for raw in values {
        for part in raw.split(|b| *b == b',') {
            let word = String::from_utf8_lossy(part).trim().to_ascii_lowercase();
            let parsed = match word.as_str() {
                "regenerate" => Action::Regenerate,
                "destroy" => Action::Destroy,
                "destroy-all" => Action::DestroyAll,
                "" => continue,
                _ => {
                    unknown.push(word.chars().take(64).collect());
                    continue;
                }
            };
            action = action.max(Some(parsed));
        }
    }
    (action, unknown)
}

/// Encodes session fields as the `X-Session` value: a compact JSON object, ASCII only.
/// Fields whose names start with `__` are skipped. A stored value that is not JSON (written
/// into the hash by something else) is shown as a JSON string.
pub fn encode_session<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    let mut first = true;
    for (key, value) in fields {
        if key.starts_with(RESERVED_PREFIX) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_ascii_json_string(&mut out, key);
        out.push(':');
        push_value(&mut out, value);
    }
    out.push('}');
    out
}

/// Bytes one field adds to the encoded session (`,"key":value`), for a canonical value.
pub fn encoded_field_len(key: &str, canonical_value: &str) -> usize {
    let key_len = if key
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        key.len() + 2
    } else {
        to_ascii_json(&Value::String(key.to_owned())).len()
    };
    key_len + 1 + canonical_value.len() + 1
}

/// Appends a stored value: spliced as-is when it is already canonical JSON, otherwise
/// re-encoded (or, when it is not JSON at all, encoded as a string).
fn push_value(out: &mut String, value: &str) {
    if is_canonical_json(value) {
        out.push_str(value);
        return;
    }
    match serde_json::from_str::<Value>(value) {
        Ok(v) => out.push_str(&to_ascii_json(&v)),
        Err(_) => push_ascii_json_string(out, value),
    }
}

/// True when `text` is valid JSON, printable ASCII only, and has no whitespace outside
/// strings: exactly what the sidecar itself stores, so it can be spliced.
pub fn is_canonical_json(text: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if !(0x20..0x7f).contains(&b) {
            return false;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b' ' {
            return false;
        }
    }
    if text.is_empty() {
        return false;
    }
    // `IgnoredAny` does not check `\u` escapes (a lone surrogate passes); a full parse does.
    if text.contains("\\u") {
        serde_json::from_str::<Value>(text).is_ok()
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }
}

/// Compact JSON text of a value, with every non-ASCII or control character escaped.
pub fn to_ascii_json(value: &Value) -> String {
    let mut buf = Vec::with_capacity(32);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, AsciiFormatter);
    serde::Serialize::serialize(value, &mut ser).expect("serializing a JSON value to memory");
    String::from_utf8(buf).expect("ASCII output")
}

fn push_ascii_json_string(out: &mut String, s: &str) {
    // Most field names need no escaping at all: copy them as they are.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push_str(&to_ascii_json(&Value::String(s.to_owned())));
}

/// A compact formatter that also escapes DEL and every non-ASCII character as `\uXXXX`
/// (serde_json already escapes the other control characters).
struct AsciiFormatter;

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\u{7f}' {
                continue;
            }
            writer.write_all(&bytes[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{:04x}", unit)?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_match_both_spellings_and_any_case() {
        for name in [
            "X-Session",
            "x_session",
            "X-SESSION-SET",
            "x_Session_Action",
            "X-Session-Signature",
            "x_session_signature",
        ] {
            assert!(is_reserved_request_header(name), "{name}");
        }
        for name in [
            "x-sessions",
            "x-session-",
            "session",
            "x-session-id",
            "cookie",
        ] {
            assert!(!is_reserved_request_header(name), "{name}");
        }
    }

    #[test]
    fn sets_apply_in_order_and_null_deletes() {
        let c = parse_sets([
            br#"{"a":1,"b":"x"}"#.as_slice(),
            br#"{"a":null,"c":[1,{"d":true}]}"#.as_slice(),
        ])
        .unwrap();
        assert_eq!(
            c.set,
            vec![
                ("b".into(), "\"x\"".into()),
                ("c".into(), "[1,{\"d\":true}]".into())
            ]
        );
        assert_eq!(c.delete, vec!["a".to_string()]);
        let c = parse_sets([br#"{"a":null}"#.as_slice(), br#"{"a":2}"#.as_slice()]).unwrap();
        assert_eq!(c.set, vec![("a".into(), "2".into())]);
        assert!(c.delete.is_empty());
    }

    #[test]
    fn invalid_sets_are_rejected_with_a_reason() {
        assert_eq!(
            parse_sets([b"[1]".as_slice()]),
            Err(SetRejection::Malformed)
        );
        assert_eq!(
            parse_sets([b"{\"a\":".as_slice()]),
            Err(SetRejection::Malformed)
        );
        assert_eq!(
            parse_sets([br#"{"":1}"#.as_slice()]),
            Err(SetRejection::Malformed)
        );
        assert_eq!(
            parse_sets([br#"{"__created":1}"#.as_slice()]),
            Err(SetRejection::ReservedKey)
        );
        assert_eq!(
            parse_sets([br#"{"a":1}"#.as_slice(), b"\xff".as_slice()]),
            Err(SetRejection::Malformed)
        );
    }

    #[test]
    fn encoding_is_ascii_only_and_escapes_controls_and_del() {
        let fields = [
            (
                "name".to_string(),
                to_ascii_json(&Value::String("h\u{e9}llo \u{1f600}\r\n\u{7f}".into())),
            ),
            ("__created".to_string(), "1".to_string()),
        ];
        let encoded = encode_session(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(encoded, r#"{"name":"h\u00e9llo \ud83d\ude00\r\n\u007f"}"#);
        let back: Value = serde_json::from_str(&encoded).unwrap();
        assert_eq!(back["name"], "h\u{e9}llo \u{1f600}\r\n\u{7f}");
    }

    #[test]
    fn foreign_values_are_reencoded_or_stringified() {
        let fields = [
            ("a", "{ \"x\" : 1 }"),
            ("b", "not json \u{e9}"),
            ("c", "12345678901234567890123"),
        ];
        let encoded = encode_session(fields);
        assert_eq!(
            encoded,
            r#"{"a":{"x":1},"b":"not json \u00e9","c":12345678901234567890123}"#
        );
    }

    #[test]
    fn canonical_detection() {
        assert!(is_canonical_json(r#"{"a":[1,"b c"]}"#));
        assert!(!is_canonical_json(r#"{"a": 1}"#));
        assert!(!is_canonical_json("\"\u{e9}\""));
        assert!(!is_canonical_json("nope"));
        assert!(!is_canonical_json(""));
        assert!(
            !is_canonical_json(r#""\ud800""#),
            "a lone surrogate is not valid JSON text"
        );
        assert!(is_canonical_json(r#""\ud83d\ude00""#));
    }

    #[test]
    fn actions_strongest_wins() {
        assert_eq!(
            parse_actions([b"regenerate".as_slice(), b"Destroy".as_slice()]).0,
            Some(Action::Destroy)
        );
        let (a, unknown) = parse_actions([b"explode".as_slice()]);
        assert_eq!(a, None);
        assert_eq!(unknown, vec!["explode".to_string()]);
    }
}
