//! Cross-origin protection (SPEC §10): forged cross-origin writes are refused before the
//! session is even loaded, for every app behind the sidecar, from the signals browsers send.
//!
//! Request head -> [`Signals`] (method, path, `Sec-Fetch-Site`, `Origin`, `Host`, as bytes) ->
//! [`Policy::decide`] (pure: allow or refuse, and why) -> [`Guard::refuses`] counts, logs
//! (throttled) and tells the proxy whether to answer `403` with [`REFUSED_BODY`]. The model is
//! Go 1.25's `net/http.CrossOriginProtection` and the OWASP Fetch Metadata guidance:
//!
//! | method | `Sec-Fetch-Site` | `Origin` | decision |
//! |---|---|---|---|
//! | GET, HEAD, OPTIONS | any | any | allow |
//! | other | `same-origin`, `none` | any | allow |
//! | other | anything else | trusted | allow |
//! | other | anything else | not trusted, absent | refuse (`sec_fetch_site`) |
//! | other | absent | absent | allow (not a browser, or a very old one) |
//! | other | absent | host\[:port\] equals `Host`, or trusted | allow |
//! | other | absent | anything else, `null` included | refuse (`origin`) |
//!
//! A request that would be refused is allowed when its path starts with an exempt prefix and
//! is clean (no `.`/`..` segment, no `;`, no encoded `.`, `/`, `\`, `%` or `;`, no `\`), so
//! that neither `/webhooks/../admin` nor `/webhooks/..%3b/admin` borrows the exemption of
//! `/webhooks/`. A GET costs one comparison of the method; nothing on any path allocates.

use std::fmt;
use std::time::{Duration, Instant};

use http::header::{HOST, ORIGIN};
use http::{HeaderName, Method};
use prometheus::IntCounter;

use crate::config::{CsrfConfig, CsrfMode};
use crate::metrics::Metrics;
use crate::throttle::Throttle;

/// The Fetch Metadata request header browsers send with every request.
pub const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Body of the `403` answer to a refused request (`Content-Type: text/plain`).
pub const REFUSED_BODY: &[u8] = b"cross-origin request refused\n";

/// At most one log line about refused requests per this interval; the next line carries the
/// number of refusals that were not logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many bytes of a header value or path are logged.
const LOGGED_BYTES: usize = 200;

/// Why a request is refused; the `reason` label of `sidecar_cross_origin_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `Sec-Fetch-Site` says the request comes from another origin.
    SecFetchSite,
    /// No `Sec-Fetch-Site`, and `Origin` does not match `Host`.
    Origin,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::SecFetchSite => "sec_fetch_site",
            Reason::Origin => "origin",
        }
    }
}

/// The outcome of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Refuse(Reason),
}

/// What the check looks at, as received. A header that is absent is `None`; for repeated
/// headers the proxy passes the first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    pub method: &'a [u8],
    /// The request path, without the query.
    pub path: &'a [u8],
    pub sec_fetch_site: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    /// The request's authority: the URI's when it has one (HTTP/2, absolute-form), else `Host`.
    pub host: Option<&'a [u8]>,
}

/// A trusted origin, prepared for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TrustedOrigin {
    https: bool,
    /// Lowercase.
    host: Box<[u8]>,
    port: u16,
}

/// Trusted origins and exempt paths: everything the decision needs besides the request.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    trusted: Vec<TrustedOrigin>,
    exempt_paths: Vec<Box<[u8]>>,
}

impl Policy {
    /// From validated configuration (`csrf.trusted_origins` as `config` normalizes them).
    pub fn new(trusted_origins: &[String], exempt_paths: &[String]) -> Policy {
        let trusted = trusted_origins
            .iter()
            .filter_map(|text| {
                let (scheme, authority) = parse_origin(text.as_bytes())?;
                let https = http_scheme(scheme)?;
                Some(TrustedOrigin {
                    https,
                    host: authority.host.to_ascii_lowercase().into_boxed_slice(),
                    port: authority.port.unwrap_or(if https { 443 } else { 80 }),
                })
            })
            .collect();
        Policy {
            trusted,
            exempt_paths: exempt_paths
                .iter()
                .map(|p| p.as_bytes().to_vec().into_boxed_slice())
                .collect(),
        }
    }

    /// The decision for one request (see the table in the module documentation).
    pub fn decide(&self, request: &Signals) -> Decision {
        if is_safe_method(request.method) {
            return Decision::Allow;
        }
        let origin = present(request.origin);
        let reason = match present(request.sec_fetch_site) {
            Some(b"same-origin" | b"none") => return Decision::Allow,
            Some(_) => {
                if origin.is_some_and(|o| self.is_trusted(o)) {
                    return Decision::Allow;
                }
                Reason::SecFetchSite
            }
            None => {
                let Some(origin) = origin else {
                    return Decision::Allow;
                };
                let same_host = request
                    .host
                    .is_some_and(|host| origin_matches_host(origin, host));
                if same_host || self.is_trusted(origin) {
                    return Decision::Allow;
                }
                Reason::Origin
            }
        };
        if self.is_exempt(request.path) {
            Decision::Allow
        } else {
            Decision::Refuse(reason)
        }
    }

    /// True when `origin` is one of the trusted origins (scheme, host and effective port).
    pub fn is_trusted(&self, origin: &[u8]) -> bool {
        if self.trusted.is_empty() {
            return false;
        }
        let Some((scheme, authority)) = parse_origin(origin) else {
            return false;
        };
        let Some(https) = http_scheme(scheme) else {
            return false;
        };
        let port = authority.port.unwrap_or(if https { 443 } else { 80 });
        self.trusted.iter().any(|t| {
            t.https == https && t.port == port && t.host.eq_ignore_ascii_case(authority.host)
        })
    }

    /// True when `path` starts with an exempt prefix and is clean (see the module docs).
    pub fn is_exempt(&self, path: &[u8]) -> bool {
        self.exempt_paths.iter().any(|p| path.starts_with(p)) && is_clean_path(path)
    }
}

/// GET, HEAD and OPTIONS: the methods that must not change anything, never checked.
pub fn is_safe_method(method: &[u8]) -> bool {
    matches!(method, b"GET" | b"HEAD" | b"OPTIONS")
}

/// A header value that counts as present: trimmed, not empty.
fn present(value: Option<&[u8]>) -> Option<&[u8]> {
    value.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty())
}

/// `host[:port]` of an origin or a `Host` header; `host` keeps its brackets for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Authority<'a> {
    host: &'a [u8],
    port: Option<u16>,
}

/// Parses `host[:port]`: a registered name or IPv4 address (RFC 3986 reg-name characters,
/// so no userinfo, path, query or fragment), or a bracketed IPv6 address; the port is 1 to 5
/// digits up to 65535. Anything else is `None`.
fn parse_authority(text: &[u8]) -> Option<Authority<'_>> {
    let (host, rest) = if text.first() == Some(&b'[') {
        let close = text.iter().position(|b| *b == b']')?;
        let inside = &text[1..close];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return None;
        }
        text.split_at(close + 1)
    } else {
        let end = text.iter().position(|b| *b == b':').unwrap_or(text.len());
        let host = &text[..end];
        let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
        if host.is_empty() || !host.iter().all(reg_name) {
            return None;
        }
        text.split_at(end)
    };
    let port = match rest {
        [] => None,
        [b':', digits @ ..] => {
            if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let value = digits
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            Some(u16::try_from(value).ok()?)
        }
        _ => return None,
    };
    Some(Authority { host, port })
}

/// Parses an origin, `scheme://host[:port]`, into the scheme and the authority.
fn parse_origin(text: &[u8]) -> Option<(&[u8], Authority<'_>)> {
    let sep = text.windows(3).position(|w| w == b"://")?;
    let scheme = &text[..sep];
    let valid_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid_scheme {
        return None;
    }
    Some((scheme, parse_authority(&text[sep + 3..])?))
}

/// `Some(true)` for https, `Some(false)` for http, `None` for any other scheme.
fn http_scheme(scheme: &[u8]) -> Option<bool> {
    if scheme.eq_ignore_ascii_case(b"https") {
        Some(true)
    } else if scheme.eq_ignore_ascii_case(b"http") {
        Some(false)
    } else {
        None
    }
}

/// True when the origin's host and port are the request's `Host`: hosts compared without
/// regard to case, a missing port meaning the default port of the origin's scheme.
fn origin_matches_host(origin: &[u8], host: &[u8]) -> bool {
    let (Some((scheme, origin)), Some(host)) = (parse_origin(origin), parse_authority(host)) else {
        return false;
    };
    let default_port = http_scheme(scheme).map(|https| if https { 443 } else { 80 });
    origin.host.eq_ignore_ascii_case(host.host)
        && origin.port.or(default_port) == host.port.or(default_port)
}

/// A path the app cannot resolve to somewhere else: no `.` or `..` segment, no `;` (path
/// parameters, which apps such as Spring or Tomcat strip, after decoding, before they route),
/// no percent-encoded `.`, `/`, `\`, `%` or `;`, no `\`.
pub(crate) fn is_clean_path(path: &[u8]) -> bool {
    let dot_segment = path
        .split(|b| *b == b'/')
        .any(|segment| segment == b"." || segment == b"..");
    let encoded = path.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                [w[1], w[2].to_ascii_lowercase()],
                [b'2', b'e' | b'f' | b'5'] | [b'5', b'c'] | [b'3', b'b']
            )
    });
    !dot_segment && !encoded && !path.contains(&b'\\') && !path.contains(&b';')
}

/// Attacker-controlled bytes made safe for a log line: escaped, cut at [`LOGGED_BYTES`].
struct Shown<'a>(Option<&'a [u8]>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return f.write_str("-");
        };
        let cut = &bytes[..bytes.len().min(LOGGED_BYTES)];
        write!(f, "{}", cut.escape_ascii())?;
        if cut.len() < bytes.len() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// The check as the proxy runs it: mode, policy, counters and the throttled log.
pub struct Guard {
    mode: CsrfMode,
    policy: Policy,
    rejected_sec_fetch_site: IntCounter,
    rejected_origin: IntCounter,
    log: Throttle,
}

impl Guard {
    pub fn new(config: &CsrfConfig, metrics: &Metrics) -> Guard {
        Guard {
            mode: config.mode,
            policy: Policy::new(&config.trusted_origins, &config.exempt_paths),
            rejected_sec_fetch_site: metrics.cross_origin_rejected_sec_fetch_site.clone(),
            rejected_origin: metrics.cross_origin_rejected_origin.clone(),
            log: Throttle::new(LOG_INTERVAL),
        }
    }

    /// Checks a request head. A request the policy refuses is counted and logged (throttled;
    /// never a cookie); the answer is true when it must get `403` instead of reaching the
    /// app, which is only in `enforce` mode.
    pub fn refuses(&self, request: &http::request::Parts) -> bool {
        if self.mode == CsrfMode::Off
            || matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS)
        {
            return false;
        }
        let signals = Signals {
            method: request.method.as_str().as_bytes(),
            path: request.uri.path().as_bytes(),
            sec_fetch_site: request.headers.get(SEC_FETCH_SITE).map(|v| v.as_bytes()),
            origin: request.headers.get(ORIGIN).map(|v| v.as_bytes()),
            host: request
                .uri
                .authority()
                .map(|a| a.as_str().as_bytes())
                .or_else(|| request.headers.get(HOST).map(|v| v.as_bytes())),
        };
        let Decision::Refuse(reason) = self.policy.decide(&signals) else {
            return false;
        };
        match reason {
            Reason::SecFetchSite => self.rejected_sec_fetch_site.inc(),
            Reason::Origin => self.rejected_origin.inc(),
        }
        let enforce = self.mode == CsrfMode::Enforce;
        if let Some(suppressed) = self.log.admit(Instant::now()) {
            tracing::warn!(
                method = %Shown(Some(signals.method)),
                path = %Shown(Some(signals.path)),
                reason = reason.label(),
                sec_fetch_site = %Shown(signals.sec_fetch_site),
                origin = %Shown(signals.origin),
                host = %Shown(signals.host),
                suppressed,
                "{}",
                if enforce {
                    "refused a cross-origin request"
                } else {
                    "cross-origin request would be refused (csrf.mode: report, let through)"
                }
            );
        }
        enforce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET";
    const POST: &[u8] = b"POST";

    fn policy() -> Policy {
        Policy::new(
            &[
                "https://admin.example.com".to_string(),
                "http://localhost:3000".to_string(),
                "https://[::1]:8443".to_string(),
            ],
            &["/webhooks/".to_string(), "/api/callback".to_string()],
        )
    }

    fn signals<'a>(
        method: &'a [u8],
        sec_fetch_site: Option<&'a str>,
        origin: Option<&'a str>,
        host: Option<&'a str>,
    ) -> Signals<'a> {
        Signals {
            method,
            path: b"/account/email",
            sec_fetch_site: sec_fetch_site.map(str::as_bytes),
            origin: origin.map(str::as_bytes),
            host: host.map(str::as_bytes),
        }
    }

    const ALLOW: Decision = Decision::Allow;
    const BY_FETCH_SITE: Decision = Decision::Refuse(Reason::SecFetchSite);
    const BY_ORIGIN: Decision = Decision::Refuse(Reason::Origin);

    #[test]
    fn decision_table() {
        let host = Some("app.example.com");
        let same = Some("https://app.example.com");
        let evil = Some("https://evil.example");
        let sibling = Some("https://other.example.com");
        let trusted = Some("https://admin.example.com");
        #[rustfmt::skip]
        let table: &[(Option<&str>, Option<&str>, Decision)] = &[
            // Rule 1: Sec-Fetch-Site decides when present.
            (Some("same-origin"), None, ALLOW),
            (Some("same-origin"), evil, ALLOW),
            (Some("none"), None, ALLOW),
            (Some("none"), evil, ALLOW),
            (Some("same-site"), None, BY_FETCH_SITE),
            (Some("same-site"), sibling, BY_FETCH_SITE),
            (Some("same-site"), same, BY_FETCH_SITE),
            (Some("same-site"), trusted, ALLOW),
            (Some("cross-site"), None, BY_FETCH_SITE),
            (Some("cross-site"), evil, BY_FETCH_SITE),
            (Some("cross-site"), Some("null"), BY_FETCH_SITE),
            (Some("cross-site"), trusted, ALLOW),
            (Some("cross-site"), Some("HTTPS://ADMIN.EXAMPLE.COM:443"), ALLOW),
            (Some("cross-site"), Some("http://admin.example.com"), BY_FETCH_SITE),
            (Some("cross-site"), Some("https://admin.example.com:8443"), BY_FETCH_SITE),
            (Some("cross-site"), Some("https://admin.example.com/"), BY_FETCH_SITE),
            (Some("cross-site"), Some("http://localhost:3000"), ALLOW),
            (Some("cross-site"), Some("http://localhost"), BY_FETCH_SITE),
            (Some("cross-site"), Some("https://[::1]:8443"), ALLOW),
            // Unknown or differently spelled values are not same-origin.
            (Some("Same-Origin"), None, BY_FETCH_SITE),
            (Some("same-origin, cross-site"), None, BY_FETCH_SITE),
            (Some("garbage"), same, BY_FETCH_SITE),
            (Some("  same-origin "), None, ALLOW),
            // An empty Sec-Fetch-Site counts as absent (as in Go).
            (Some(""), None, ALLOW),
            (Some(" "), evil, BY_ORIGIN),
            // Rule 3: neither header.
            (None, None, ALLOW),
            (None, Some(""), ALLOW),
            // Rule 2: Origin against Host.
            (None, same, ALLOW),
            (None, Some("http://app.example.com"), ALLOW),
            (None, Some("https://APP.Example.COM"), ALLOW),
            (None, Some("https://app.example.com:443"), ALLOW),
            (None, Some("http://app.example.com:80"), ALLOW),
            (None, Some("https://app.example.com:80"), BY_ORIGIN),
            (None, Some("https://app.example.com:8443"), BY_ORIGIN),
            (None, evil, BY_ORIGIN),
            (None, sibling, BY_ORIGIN),
            (None, Some("null"), BY_ORIGIN),
            (None, Some("app.example.com"), BY_ORIGIN),
            (None, Some("https://app.example.com/"), BY_ORIGIN),
            (None, Some("https://user@app.example.com"), BY_ORIGIN),
            (None, Some("https://app.example.com.evil.example"), BY_ORIGIN),
            (None, Some("https://app.example.com:"), BY_ORIGIN),
            (None, trusted, ALLOW),
        ];
        let p = policy();
        for (method, safe) in [
            (&b"GET"[..], true),
            (b"HEAD", true),
            (b"OPTIONS", true),
            (b"POST", false),
            (b"PUT", false),
            (b"PATCH", false),
            (b"DELETE", false),
            (b"CONNECT", false),
            (b"TRACE", false),
            (b"PROPFIND", false),
            (b"get", false),
        ] {
            for (fetch_site, origin, expected) in table {
                let expected = if safe { ALLOW } else { *expected };
                let got = p.decide(&signals(method, *fetch_site, *origin, host));
                assert_eq!(
                    got,
                    expected,
                    "{} with Sec-Fetch-Site {fetch_site:?}, Origin {origin:?}",
                    String::from_utf8_lossy(method)
                );
            }
        }
    }

    #[test]
    fn origin_against_host_ports_and_literals() {
        let p = Policy::default();
        #[rustfmt::skip]
        let table: &[(&str, Option<&str>, Decision)] = &[
            ("http://127.0.0.1:8080", Some("127.0.0.1:8080"), ALLOW),
            ("http://127.0.0.1:8081", Some("127.0.0.1:8080"), BY_ORIGIN),
            ("http://localhost:8080", Some("127.0.0.1:8080"), BY_ORIGIN),
            ("http://127.0.0.1", Some("127.0.0.1:80"), ALLOW),
            ("https://127.0.0.1", Some("127.0.0.1:443"), ALLOW),
            ("https://127.0.0.1", Some("127.0.0.1:80"), BY_ORIGIN),
            ("http://[::1]:8080", Some("[::1]:8080"), ALLOW),
            ("http://[::1]:8080", Some("[::2]:8080"), BY_ORIGIN),
            ("http://[::1]", Some("[::1]"), ALLOW),
            ("http://[::1", Some("[::1"), BY_ORIGIN),
            ("http://example.com", Some("Example.Com"), ALLOW),
            ("http://example.com", Some("example.com:99999"), BY_ORIGIN),
            ("http://example.com", Some("example.com "), BY_ORIGIN),
            ("http://example.com", Some(""), BY_ORIGIN),
            ("http://example.com", None, BY_ORIGIN),
            // Another scheme: host and port as written, no default port.
            ("foo://example.com", Some("example.com"), ALLOW),
            ("foo://example.com:80", Some("example.com"), BY_ORIGIN),
            ("chrome-extension://abcdef", Some("example.com"), BY_ORIGIN),
            ("://example.com", Some("example.com"), BY_ORIGIN),
            ("1http://example.com", Some("example.com"), BY_ORIGIN),
        ];
        for (origin, host, expected) in table {
            assert_eq!(
                p.decide(&signals(POST, None, Some(origin), *host)),
                *expected,
                "Origin {origin} against Host {host:?}"
            );
        }
    }

    #[test]
    fn exempt_paths_are_prefixes_of_clean_paths_only() {
        let p = policy();
        #[rustfmt::skip]
        let table: &[(&str, bool)] = &[
            ("/webhooks/github", true),
            ("/webhooks/", true),
            ("/webhooks//x", true),
            ("/webhooks/a.b/c..d/...", true),
            ("/api/callback", true),
            ("/api/callbackx", true),
            ("/webhooks", false),
            ("/Webhooks/github", false),
            ("/other/webhooks/x", false),
            ("/webhooks/../admin", false),
            ("/webhooks/..", false),
            ("/webhooks/./x", false),
            ("/webhooks/..;/admin", false),
            ("/webhooks/..%3b/admin", false),
            ("/webhooks/..%3B/admin", false),
            ("/webhooks/.%3b/admin", false),
            ("/webhooks/github;jsessionid=1", false),
            ("/webhooks/github%3bx", false),
            ("/webhooks/%2e%2e/admin", false),
            ("/webhooks/%2E%2E/admin", false),
            ("/webhooks/..%2fadmin", false),
            ("/webhooks/..%2Fadmin", false),
            ("/webhooks/..%5cadmin", false),
            ("/webhooks/%252e%252e/admin", false),
            ("/webhooks/..\\admin", false),
            ("/webhooks/%41", true),
        ];
        for (path, exempt) in table {
            let mut s = signals(POST, Some("cross-site"), None, None);
            s.path = path.as_bytes();
            let expected = if *exempt { ALLOW } else { BY_FETCH_SITE };
            assert_eq!(p.decide(&s), expected, "{path}");
            let mut s = signals(POST, None, Some("https://evil.example"), Some("a.example"));
            s.path = path.as_bytes();
            let expected = if *exempt { ALLOW } else { BY_ORIGIN };
            assert_eq!(p.decide(&s), expected, "{path}");
        }
        // Exempt or not, safe and same-origin requests are allowed anyway.
        let mut s = signals(GET, Some("cross-site"), None, None);
        s.path = b"/webhooks/../admin";
        assert_eq!(p.decide(&s), ALLOW);
    }

    #[test]
    fn trusted_origins_as_config_stores_them_match_what_browsers_send() {
        // `config` validates and normalizes the entries (lowercase, default port removed,
        // IPv6 in its canonical form); the policy compares browsers' Origin against them.
        let p = Policy::new(
            &[
                "https://admin.example.com".to_string(),
                "http://localhost:3000".to_string(),
                "https://[2001:db8::1]".to_string(),
            ],
            &[],
        );
        assert!(p.is_trusted(b"https://admin.example.com"));
        assert!(p.is_trusted(b"https://ADMIN.example.com:443"));
        assert!(p.is_trusted(b"http://localhost:3000"));
        assert!(p.is_trusted(b"https://[2001:db8::1]"));
        assert!(!p.is_trusted(b"https://admin.example.com.evil.example"));
        assert!(!p.is_trusted(b"http://admin.example.com"));
        assert!(!p.is_trusted(b"http://localhost:3001"));
        assert!(!p.is_trusted(b"null"));
    }

    #[test]
    fn logged_values_are_escaped_and_cut() {
        assert_eq!(Shown(None).to_string(), "-");
        assert_eq!(
            Shown(Some(b"a\nb\x1b\"\xff")).to_string(),
            "a\\nb\\x1b\\\"\\xff"
        );
        let long = vec![b'x'; 1000];
        let shown = Shown(Some(&long)).to_string();
        assert_eq!(shown.len(), LOGGED_BYTES + 3);
    }

    fn request(method: &str, headers: &[(&str, &[u8])]) -> http::request::Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("/transfer?amount=1");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn guard_counts_per_reason_and_passes_in_report_mode() {
        let metrics = Metrics::new();
        let mut config = CsrfConfig::default();
        let enforce = Guard::new(&config, &metrics);
        config.mode = CsrfMode::Report;
        let report = Guard::new(&config, &metrics);
        config.mode = CsrfMode::Off;
        let off = Guard::new(&config, &metrics);

        let cross = request("POST", &[("sec-fetch-site", b"cross-site")]);
        let old_browser = request(
            "PUT",
            &[
                ("host", b"app.example"),
                ("origin", b"https://evil.example"),
            ],
        );
        let same = request(
            "POST",
            &[("host", b"app.example"), ("origin", b"https://app.example")],
        );
        let get = request("GET", &[("sec-fetch-site", b"cross-site")]);

        assert!(enforce.refuses(&cross));
        assert!(enforce.refuses(&old_browser));
        assert!(!enforce.refuses(&same));
        assert!(!enforce.refuses(&get));
        assert!(!report.refuses(&cross));
        assert!(!report.refuses(&old_browser));
        assert!(!off.refuses(&cross));
        assert!(!off.refuses(&old_browser));
        assert_eq!(metrics.cross_origin_rejected_sec_fetch_site.get(), 2);
        assert_eq!(metrics.cross_origin_rejected_origin.get(), 2);
    }

    #[test]
    fn guard_uses_the_uri_authority_before_host() {
        let metrics = Metrics::new();
        let guard = Guard::new(&CsrfConfig::default(), &metrics);
        let mut parts = request(
            "POST",
            &[
                ("host", b"evil.example"),
                ("origin", b"https://app.example"),
            ],
        );
        parts.uri = "https://app.example/transfer".parse().unwrap();
        assert!(!guard.refuses(&parts));
        parts.uri = "https://evil.example/transfer".parse().unwrap();
        assert!(guard.refuses(&parts));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                1 => Just(None),
                3 => prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
                3 => prop::option::of(
                    "(https?|[a-z]{1,5}|)(://)?(\\[[0-9a-f:]{0,10}\\]?|[a-zA-Z0-9.\\-]{0,12})(:[0-9]{0,7})?(/[a-z.%]{0,5})?"
                        .prop_map(String::into_bytes)
                ),
                1 => prop::sample::select(vec![
                    Some(b"same-origin".to_vec()),
                    Some(b"same-site".to_vec()),
                    Some(b"cross-site".to_vec()),
                    Some(b"none".to_vec()),
                    Some(b"null".to_vec()),
                ]),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 2048,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// No combination of header bytes makes the check panic; safe methods and
            /// `Sec-Fetch-Site: same-origin` are always allowed; a refusal's reason names
            /// the header that decided.
            #[test]
            fn never_panics_and_keeps_the_invariants(
                method in prop_oneof![
                    Just(b"GET".to_vec()), Just(b"POST".to_vec()), Just(b"DELETE".to_vec()),
                    prop::collection::vec(any::<u8>(), 0..8),
                ],
                path in prop::collection::vec(any::<u8>(), 0..40),
                fetch_site in bytes(),
                origin in bytes(),
                host in bytes(),
            ) {
                let p = policy();
                let s = Signals {
                    method: &method,
                    path: &path,
                    sec_fetch_site: fetch_site.as_deref(),
                    origin: origin.as_deref(),
                    host: host.as_deref(),
                };
                let decision = p.decide(&s);
                if is_safe_method(&method) {
                    prop_assert_eq!(decision, Decision::Allow);
                }
                if fetch_site.as_deref().map(<[u8]>::trim_ascii) == Some(b"same-origin") {
                    prop_assert_eq!(decision, Decision::Allow);
                }
                match decision {
                    Decision::Refuse(Reason::SecFetchSite) => {
                        prop_assert!(present(s.sec_fetch_site).is_some());
                    }
                    Decision::Refuse(Reason::Origin) => {
                        prop_assert!(present(s.sec_fetch_site).is_none());
                        prop_assert!(present(s.origin).is_some());
                    }
                    Decision::Allow => {}
                }
                let _ = Shown(s.origin).to_string();
            }
        }
    }
}
