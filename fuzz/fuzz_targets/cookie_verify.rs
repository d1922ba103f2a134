//! Cookie parsing and verification on hostile input.
//!
//! - `split_cookies` + `CookieCodec::verify` on arbitrary `Cookie` header bytes: never a
//!   panic, never an accepted cookie (nobody can sign without the secret), and the session
//!   cookie never leaks into what the app gets.
//! - A genuine signed value with any modification derived from the input (byte flips,
//!   truncation, extension, insertion, removal) never verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_sidecar::config::{CookieConfig, SameSite};
use session_sidecar::cookie::{split_cookies, CookieCodec, SessionId};

const NAME: &str = "sid";

fn codec() -> &'static (CookieCodec, Vec<u8>) {
    static CODEC: OnceLock<(CookieCodec, Vec<u8>)> = OnceLock::new();
    CODEC.get_or_init(|| {
        let codec = CookieCodec::new(&CookieConfig {
            name: NAME.into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            max_age: None,
            secrets: vec![b"fuzz-secret-0123456789abcdef-0123456789".to_vec()],
        });
        let signed = codec.sign(&SessionId::generate()).into_bytes();
        (codec, signed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (codec, signed) = codec();
    assert!(codec.verify(signed).is_ok());

    // 1. Arbitrary Cookie headers (one per line).
    let headers: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let split = split_cookies(NAME, headers.iter().copied());
    for candidate in &split.candidates {
        assert!(codec.verify(candidate).is_err(), "forged cookie accepted");
    }
    assert!(codec.verify(data).is_err(), "forged cookie accepted");
    if let Some(rest) = &split.rest {
        for pair in rest.split(|b| *b == b';') {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            assert!(
                name.trim_ascii() != NAME.as_bytes(),
                "session cookie forwarded"
            );
        }
    }
    assert_eq!(split.found, !split.candidates.is_empty());

    // 2. Edits of a genuine value, driven by the input: op, position, payload.
    let mut value = signed.clone();
    for chunk in data.chunks(4) {
        let op = chunk[0] % 5;
        let at = chunk.get(1).copied().unwrap_or(0) as usize;
        let byte = chunk.get(2).copied().unwrap_or(1);
        match op {
            0 if !value.is_empty() => {
                let i = at % value.len();
                value[i] ^= byte.max(1);
            }
            1 => value.truncate(at % (value.len() + 1)),
            2 => value.extend_from_slice(&chunk[1..]),
            3 => {
                let i = at % (value.len() + 1);
                value.insert(i, byte);
            }
            4 if !value.is_empty() => {
                let i = at % value.len();
                value.remove(i);
            }
            _ => {}
        }
    }
    if value != *signed {
        assert!(codec.verify(&value).is_err(), "modified cookie accepted");
    }
});
