//! Session IDs and the signed session cookie: generate, sign, verify, and build `Set-Cookie`.
//! Nothing here knows about storage beyond [`SessionId::store_digest`], the one-way name a
//! session is stored under.
//!
//! Cookie value: `base64url(id) "." base64url(HMAC-SHA256(secret, "session-sidecar.v1." id))`.

use std::cell::RefCell;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::config::{CookieConfig, SameSite};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of entropy in a session ID (256 bits).
pub const ID_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 32;
const ENCODED_ID_LEN: usize = 43;
const ENCODED_SIGNATURE_LEN: usize = 43;
/// Length of a well-formed cookie value.
pub const COOKIE_VALUE_LEN: usize = ENCODED_ID_LEN + 1 + ENCODED_SIGNATURE_LEN;
const SIGNING_CONTEXT: &[u8] = b"session-sidecar.v1.";

/// A session ID. Its bytes are never logged and never stored: the store sees only
/// [`SessionId::store_digest`]. `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_BYTES]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(redacted)")
    }
}

thread_local! {
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(ChaCha20Rng::from_os_rng());
}

impl SessionId {
    /// A fresh random ID from a per-thread ChaCha20 CSPRNG seeded by the OS.
    pub fn generate() -> SessionId {
        let mut bytes = [0u8; ID_BYTES];
        RNG.with(|rng| rng.borrow_mut().fill_bytes(&mut bytes));
        SessionId(bytes)
    }

    /// Hex SHA-256 of the ID: what the store key is made of, so read access to the store
    /// does not reveal live cookies.
    pub fn store_digest(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(self.0);
        let mut hex = String::with_capacity(2 * digest.len());
        for b in digest {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        hex
    }
}

/// Why a cookie was not accepted (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieRejection {
    #[error("session cookie is malformed")]
    Malformed,
    #[error("session cookie signature does not verify")]
    BadSignature,
}

impl CookieRejection {
    pub fn label(self) -> &'static str {
        match self {
            CookieRejection::Malformed => "malformed",
            CookieRejection::BadSignature => "bad_signature",
        }
    }
}

/// Signs and verifies cookie values and builds `Set-Cookie` headers. Keys are prepared once.
#[derive(Clone)]
pub struct CookieCodec {
    name: String,
    /// One prepared MAC per secret; the first signs.
    keys: Vec<HmacSha256>,
    config: CookieConfig,
}

impl CookieCodec {
    pub fn new(config: &CookieConfig) -> CookieCodec {
        let keys = config
            .secrets
            .iter()
            .map(|s| HmacSha256::new_from_slice(s).expect("HMAC accepts keys of any length"))
            .collect();
        CookieCodec {
            name: config.name.clone(),
            keys,
            config: config.clone(),
        }
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn mac(key: &HmacSha256, id: &[u8]) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(SIGNING_CONTEXT);
        mac.update(id);
        mac
    }

    /// The cookie value for an ID, signed with the first secret.
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = Self::mac(&self.keys[0], &id.0).finalize().into_bytes();
        let mut out = String::with_capacity(COOKIE_VALUE_LEN);
        URL_SAFE_NO_PAD.encode_string(id.0, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Verifies a cookie value against every secret, in constant time per secret.
    pub fn verify(&self, value: &[u8]) -> Result<SessionId, CookieRejection> {
        if value.len() != COOKIE_VALUE_LEN || value[ENCODED_ID_LEN] != b'.' {
            return Err(CookieRejection::Malformed);
        }
        let mut id = [0u8; ID_BYTES];
        let mut tag = [0u8; SIGNATURE_BYTES];
        let id_ok = URL_SAFE_NO_PAD
            .decode_slice(&value[..ENCODED_ID_LEN], &mut id)
            .map(|n| n == ID_BYTES)
            .unwrap_or(false);
        let tag_ok = URL_SAFE_NO_PAD
            .decode_slice(&value[ENCODED_ID_LEN + 1..], &mut tag)
            .map(|n| n == SIGNATURE_BYTES)
            .unwrap_or(false);
        if !id_ok || !tag_ok {
            return Err(CookieRejection::Malformed);
        }
        // Re-encoding must give the same text: rejects non-canonical base64 (trailing bits).
        let mut canonical = [0u8; ENCODED_ID_LEN];
        let mut canonical_tag = [0u8; ENCODED_SIGNATURE_LEN];
        let _ = URL_SAFE_NO_PAD.encode_slice(id, &mut canonical);
        let _ = URL_SAFE_NO_PAD.encode_slice(tag, &mut canonical_tag);
        if canonical[..] != value[..ENCODED_ID_LEN]
            || canonical_tag[..] != value[ENCODED_ID_LEN + 1..]
        {
            return Err(CookieRejection::Malformed);
        }
        let mut valid = false;
        for key in &self.keys {
            valid |= Self::mac(key, &id).verify_slice(&tag).is_ok();
        }
        if valid {
            Ok(SessionId(id))
        } else {
            Err(CookieRejection::BadSignature)
        }
    }

    /// `Set-Cookie` value that gives the client this session.
    pub fn set_cookie(&self, id: &SessionId) -> String {
        self.build(
            self.sign(id),
            self.config.max_age.map(|d| d.as_secs() as i64),
        )
    }

    /// `Set-Cookie` value that makes the client drop the session cookie.
    pub fn expire_cookie(&self) -> String {
        let mut header = self.build(String::new(), Some(0));
        header.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        header
    }

    fn build(&self, value: String, max_age: Option<i64>) -> String {
        let mut c = cookie::Cookie::new(self.name.clone(), value);
        c.set_path(self.config.path.clone());
        c.set_secure(self.config.secure);
        c.set_http_only(self.config.http_only);
        c.set_same_site(match self.config.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        });
        if let Some(domain) = &self.config.domain {
            c.set_domain(domain.clone());
        }
        if let Some(secs) = max_age {
            c.set_max_age(cookie::time::Duration::seconds(secs));
        }
        c.to_string()
    }

    /// The configured cookie lifetime, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.config.max_age
    }
}

/// The session cookie candidates found in a request, and the `Cookie` header without them.
pub struct CookieSplit {
    /// Values of every cookie with the session cookie's name, in order.
    pub candidates: Vec<Vec<u8>>,
    /// The other cookies, unchanged, joined with `; `; `None` when nothing is left.
    pub rest: Option<Vec<u8>>,
    /// True when the session cookie was present (so the header must be rewritten).
    pub found: bool,
}

/// Splits every `Cookie` header value into the session cookie and the rest. Works on bytes:
/// other cookies pass through even when they are not valid UTF-8.
pub fn split_cookies<'a>(name: &str, headers: impl IntoIterator<Item = &'a [u8]>) -> CookieSplit {
    let name = name.as_bytes();
    let mut candidates = Vec::new();
    let mut rest: Vec<u8> = Vec::new();
    let mut found = false;
    for header in headers {
        for pair in header.split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (pair[..i].trim_ascii(), pair[i + 1..].trim_ascii()),
                None => (pair, &pair[pair.len()..]),
            };
            if key == name {
                found = true;
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                candidates.push(value.to_vec());
            } else {
                if !rest.is_empty() {
                    rest.extend_from_slice(b"; ");
                }
                rest.extend_from_slice(pair);
            }
        }
    }
    CookieSplit {
        candidates,
        rest: if rest.is_empty() { None } else { Some(rest) },
        found,
    }
}

/// `X-Session-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<value>")>`.
pub fn sign_header(secret_mac: &Hmac<Sha256>, unix_secs: u64, value: &str) -> String {
    let mut mac = secret_mac.clone();
    let t = unix_secs.to_string();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(value.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secrets: &[&str]) -> CookieConfig {
        CookieConfig::with_defaults(secrets.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    const A: &str = "a-secret-that-is-at-least-32-bytes-long";
    const B: &str = "b-secret-that-is-at-least-32-bytes-long";

    #[test]
    fn sign_then_verify_round_trips() {
        let codec = CookieCodec::new(&config(&[A]));
        let id = SessionId::generate();
        let value = codec.sign(&id);
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert_eq!(codec.verify(value.as_bytes()), Ok(id));
    }

    #[test]
    fn ids_are_distinct() {
        assert_ne!(SessionId::generate(), SessionId::generate());
    }

    #[test]
    fn every_flipped_character_is_rejected() {
        let codec = CookieCodec::new(&config(&[A]));
        let value = codec.sign(&SessionId::generate()).into_bytes();
        for i in 0..value.len() {
            let mut tampered = value.clone();
            tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
            assert!(codec.verify(&tampered).is_err(), "accepted a change at {i}");
        }
        assert_eq!(
            codec.verify(&value[..value.len() - 1]),
            Err(CookieRejection::Malformed)
        );
        assert_eq!(codec.verify(b""), Err(CookieRejection::Malformed));
    }

    #[test]
    fn rotation_verifies_old_secret_and_signs_with_new() {
        let old = CookieCodec::new(&config(&[A]));
        let rotated = CookieCodec::new(&config(&[B, A]));
        let only_new = CookieCodec::new(&config(&[B]));
        let id = SessionId::generate();
        let old_value = old.sign(&id);
        assert_eq!(rotated.verify(old_value.as_bytes()), Ok(id.clone()));
        assert_eq!(
            only_new.verify(old_value.as_bytes()),
            Err(CookieRejection::BadSignature)
        );
        assert_eq!(only_new.verify(rotated.sign(&id).as_bytes()), Ok(id));
    }

    #[test]
    fn set_cookie_carries_the_configured_attributes() {
        let mut c = config(&[A]);
        c.max_age = Some(Duration::from_secs(3600));
        let codec = CookieCodec::new(&c);
        let header = codec.set_cookie(&SessionId::generate());
        for attr in [
            "__Host-session=",
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(header.contains(attr), "{header}");
        }
        let expire = codec.expire_cookie();
        assert!(
            expire.starts_with("__Host-session=;") && expire.contains("Max-Age=0"),
            "{expire}"
        );
    }

    #[test]
    fn split_keeps_other_cookies_unchanged() {
        let split = split_cookies(
            "sid",
            [
                b"a=1; sid=xyz;b=\xff2".as_slice(),
                b"sid=\"q\"; c=3".as_slice(),
            ],
        );
        assert!(split.found);
        assert_eq!(split.candidates, vec![b"xyz".to_vec(), b"q".to_vec()]);
        assert_eq!(split.rest.unwrap(), b"a=1; b=\xff2; c=3".to_vec());
        let none = split_cookies("sid", [b"sid=1".as_slice()]);
        assert!(none.rest.is_none());
    }

    #[test]
    fn store_digest_is_hex_sha256_not_the_id() {
        let id = SessionId::generate();
        let d = id.store_digest();
        assert_eq!(d.len(), 64);
        assert_eq!(d, hex::encode(Sha256::digest(id.0)));
        assert!(!d.contains(&URL_SAFE_NO_PAD.encode(id.0)));
    }
}
