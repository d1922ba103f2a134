//! SPEC §10, cross-origin protection, through the real binary with a plain HTTP/1.1 client
//! (raw bytes over TCP, so every header is exactly what the test says).
//!
//! Guards: the whole decision table (every method, every combination of `Sec-Fetch-Site`,
//! `Origin` and `Host`, trusted origins, exempt paths) with the app never seeing a refused
//! request and the refusal a short `403`; `report` and `off` modes; login CSRF refused
//! without a cookie and creating no session; a forged write to a live session (memory store
//! and Redis) leaving it untouched; the counter per reason; the throttled log line naming
//! method, path and header but never the cookie.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REFUSED: &str = "cross-origin request refused\n";
const SFS_METRIC: &str = "sidecar_cross_origin_rejected_total{reason=\"sec_fetch_site\"}";
const ORIGIN_METRIC: &str = "sidecar_cross_origin_rejected_total{reason=\"origin\"}";

/// A response as read off the wire.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One request on a fresh connection (`Connection: close`); `Host` is
/// `127.0.0.1:<port>` unless `headers` names one.
async fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut request = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.extend_from_slice(format!("Host: 127.0.0.1:{port}\r\n").as_bytes());
    }
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let body: &[u8] = if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        b""
    } else {
        b"amount=100&to=mallory"
    };
    if !body.is_empty() {
        request.extend_from_slice(
            format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request.extend_from_slice(body);

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the sidecar");
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10s")
        .expect("read response");
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> Raw {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked && !head {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

fn with_csrf(mut settings: Settings, csrf_yaml: &str) -> Settings {
    settings.extra.push_str("csrf:\n");
    settings.extra.push_str(csrf_yaml);
    settings
}

async fn start(csrf_yaml: &str) -> (Backend, Sidecar) {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&with_csrf(Settings::memory(), csrf_yaml), &backend.addr());
    (backend, sidecar)
}

fn hits(backend: &Backend) -> usize {
    backend.hits.load(Ordering::SeqCst)
}

fn assert_refused(r: &Raw, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    assert_eq!(r.text(), REFUSED, "{what}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{what}"
    );
    assert_eq!(
        r.header("content-length"),
        Some(REFUSED.len().to_string().as_str()),
        "{what}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert!(!r.has_header("set-cookie"), "{what}");
}

/// (path, `Sec-Fetch-Site`, `Origin`, `Host` instead of the sidecar's address, expected
/// answer to an unsafe method).
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Want,
);

/// What the test expects for an unsafe method; safe methods are always allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Allow,
    BySecFetchSite,
    ByOrigin,
}

#[tokio::test]
async fn the_decision_table_through_the_binary() {
    let (backend, sidecar) = start(
        "  trusted_origins: [\"http://trusted.example:8443\", \"HTTPS://Admin.Example.com:443\"]\n  exempt_paths: [\"/webhooks/\"]\n",
    )
    .await;
    let port = sidecar.port;
    let me = format!("http://127.0.0.1:{port}");
    let me_upper = format!("HTTP://127.0.0.1:{port}");
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1));
    let localhost = format!("http://localhost:{port}");
    let me_https = format!("https://127.0.0.1:{port}");

    use Want::*;
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("/transfer", None, None, None, Allow),
        ("/transfer", Some("same-origin"), None, None, Allow),
        ("/transfer", Some("same-origin"), Some("https://evil.example"), None, Allow),
        ("/transfer", Some("none"), None, None, Allow),
        ("/transfer", Some("same-site"), None, None, BySecFetchSite),
        ("/transfer", Some("same-site"), Some(&other_port), None, BySecFetchSite),
        ("/transfer", Some("same-site"), Some(&me), None, BySecFetchSite),
        ("/transfer", Some("cross-site"), None, None, BySecFetchSite),
        ("/transfer", Some("cross-site"), Some("https://evil.example"), None, BySecFetchSite),
        ("/transfer", Some("cross-site"), Some("null"), None, BySecFetchSite),
        ("/transfer", Some("cross-site"), Some("http://trusted.example:8443"), None, Allow),
        ("/transfer", Some("same-site"), Some("https://admin.example.com"), None, Allow),
        ("/transfer", Some("cross-site"), Some("https://trusted.example:8443"), None, BySecFetchSite),
        ("/transfer", Some("Same-Origin"), None, None, BySecFetchSite),
        ("/transfer", Some("bogus"), None, None, BySecFetchSite),
        ("/transfer", None, Some(&me), None, Allow),
        ("/transfer", None, Some(&me_upper), None, Allow),
        ("/transfer", None, Some(&me_https), None, Allow),
        ("/transfer", None, Some(&other_port), None, ByOrigin),
        ("/transfer", None, Some(&localhost), None, ByOrigin),
        ("/transfer", None, Some("null"), None, ByOrigin),
        ("/transfer", None, Some("https://evil.example"), None, ByOrigin),
        ("/transfer", None, Some("http://trusted.example:8443"), None, Allow),
        ("/transfer", None, Some("http://TRUSTED.example:8443"), None, Allow),
        ("/transfer", None, Some("https://admin.example.com:443"), None, Allow),
        ("/transfer", None, Some("http://trusted.example"), None, ByOrigin),
        // Behind an ingress that passes the public Host on.
        ("/transfer", None, Some("https://app.example"), Some("app.example"), Allow),
        ("/transfer", None, Some("https://app.example"), Some("APP.example:443"), Allow),
        ("/transfer", None, Some("https://app.example"), Some("app.example:8443"), ByOrigin),
        ("/transfer", None, Some("https://app.example"), Some("internal.svc:8080"), ByOrigin),
        // Exempt prefixes, only for clean paths.
        ("/webhooks/github", Some("cross-site"), None, None, Allow),
        ("/webhooks/github", None, Some("https://github.com"), None, Allow),
        ("/webhooks/../admin", Some("cross-site"), None, None, BySecFetchSite),
        ("/webhooks/%2e%2e/admin", Some("cross-site"), None, None, BySecFetchSite),
        ("/webhooks/..%3b/admin", Some("cross-site"), None, None, BySecFetchSite),
        ("/webhooks/..%3B/admin", None, Some("https://github.com"), None, ByOrigin),
        ("/webhooks/github;jsessionid=1", Some("cross-site"), None, None, BySecFetchSite),
        ("/webhooksx", Some("cross-site"), None, None, BySecFetchSite),
        ("/api/webhooks/x", None, Some("https://github.com"), None, ByOrigin),
    ];

    let mut refused_sfs = 0.0;
    let mut refused_origin = 0.0;
    for method in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] {
        let safe = matches!(method, "GET" | "HEAD" | "OPTIONS");
        for (path, fetch_site, origin, host, want) in &cases {
            let mut headers = Vec::new();
            if let Some(v) = fetch_site {
                headers.push(("Sec-Fetch-Site", *v));
            }
            if let Some(v) = origin {
                headers.push(("Origin", *v));
            }
            if let Some(v) = host {
                headers.push(("Host", *v));
            }
            let what = format!(
                "{method} {path} Sec-Fetch-Site {fetch_site:?} Origin {origin:?} Host {host:?}"
            );
            let before = hits(&backend);
            let r = send(port, method, path, &headers).await;
            let want = if safe { Allow } else { *want };
            match want {
                Allow => {
                    assert_eq!(r.status, 200, "{what}: {}", r.text());
                    assert_eq!(hits(&backend), before + 1, "{what}: the app got it");
                    if method != "HEAD" {
                        assert_eq!(r.json()["method"], method, "{what}");
                        assert_eq!(r.json()["path"], *path, "{what}");
                    }
                }
                BySecFetchSite | ByOrigin => {
                    assert_refused(&r, &what);
                    assert_eq!(hits(&backend), before, "{what}: the app never saw it");
                    if want == BySecFetchSite {
                        refused_sfs += 1.0;
                    } else {
                        refused_origin += 1.0;
                    }
                }
            }
        }
    }
    assert!(refused_sfs > 0.0 && refused_origin > 0.0);
    let metrics = sidecar.metrics().await;
    assert_eq!(metrics.get(SFS_METRIC), Some(&refused_sfs));
    assert_eq!(metrics.get(ORIGIN_METRIC), Some(&refused_origin));
    assert_eq!(metrics.get("sidecar_sessions_created_total"), Some(&0.0));
    assert!(
        metrics
            .get("sidecar_requests_total{code=\"403\"}")
            .copied()
            .unwrap_or(0.0)
            >= refused_sfs + refused_origin
    );
}

#[tokio::test]
async fn counters_exist_from_the_start_and_move_per_reason() {
    let (_backend, sidecar) = start("  mode: enforce\n").await;
    let metrics = sidecar.metrics().await;
    assert_eq!(metrics.get(SFS_METRIC), Some(&0.0));
    assert_eq!(metrics.get(ORIGIN_METRIC), Some(&0.0));
    let r = send(
        sidecar.port,
        "POST",
        "/",
        &[("Sec-Fetch-Site", "cross-site")],
    )
    .await;
    assert_refused(&r, "cross-site");
    assert_eq!(sidecar.metric(SFS_METRIC).await, 1.0);
    assert_eq!(sidecar.metric(ORIGIN_METRIC).await, 0.0);
    for _ in 0..2 {
        let r = send(sidecar.port, "DELETE", "/", &[("Origin", "null")]).await;
        assert_refused(&r, "Origin: null");
    }
    assert_eq!(sidecar.metric(SFS_METRIC).await, 1.0);
    assert_eq!(sidecar.metric(ORIGIN_METRIC).await, 2.0);
}

#[tokio::test]
async fn report_mode_counts_and_logs_but_lets_the_request_through() {
    let (backend, sidecar) = start("  mode: report\n").await;
    let r = send(
        sidecar.port,
        "POST",
        "/transfer",
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("x-reply-x-session-set", r#"{"reported":true}"#),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(hits(&backend), 1);
    assert!(r.has_header("set-cookie"), "the app's write applies");
    let r = send(
        sidecar.port,
        "PUT",
        "/transfer",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(hits(&backend), 2);
    assert_eq!(sidecar.metric(SFS_METRIC).await, 1.0);
    assert_eq!(sidecar.metric(ORIGIN_METRIC).await, 1.0);
    assert!(
        eventually(Duration::from_secs(5), || async {
            sidecar.log().contains("would be refused")
        })
        .await,
        "{}",
        sidecar.log()
    );
}

#[tokio::test]
async fn off_mode_checks_nothing() {
    let (backend, sidecar) = start("  mode: off\n").await;
    for (name, value) in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Origin", "https://evil.example"),
    ] {
        let r = send(sidecar.port, "POST", "/transfer", &[(name, value)]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(hits(&backend), 2);
    assert_eq!(sidecar.metric(SFS_METRIC).await, 0.0);
    assert_eq!(sidecar.metric(ORIGIN_METRIC).await, 0.0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sidecar.log().contains("cross-origin"), "{}", sidecar.log());
}

/// A login form on another site that logs the victim into the attacker's account: refused
/// with no cookie at all, so no session exists afterwards.
#[tokio::test]
async fn login_csrf_without_a_cookie_is_refused_and_creates_no_session() {
    let (backend, sidecar) = start("").await;
    let login = [
        ("x-reply-x-session-set", r#"{"user":"mallory"}"#),
        ("x-reply-x-session-action", "regenerate"),
    ];
    for forged in [
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![
            ("Sec-Fetch-Site", "same-site"),
            ("Origin", "http://127.0.0.1:1"),
        ],
        vec![("Origin", "https://evil.example")],
    ] {
        let headers: Vec<(&str, &str)> = forged.iter().chain(login.iter()).copied().collect();
        let r = send(sidecar.port, "POST", "/login", &headers).await;
        assert_refused(&r, &format!("{forged:?}"));
    }
    assert_eq!(hits(&backend), 0, "the app never saw a forged login");
    assert_eq!(sidecar.metric("sidecar_sessions_created_total").await, 0.0);

    // The same login from the sidecar's own origin creates a session: the test could fail.
    let headers: Vec<(&str, &str)> = [("Sec-Fetch-Site", "same-origin")]
        .iter()
        .chain(login.iter())
        .copied()
        .collect();
    let r = send(sidecar.port, "POST", "/login", &headers).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().starts_with("sid="));
    assert_eq!(sidecar.metric("sidecar_sessions_created_total").await, 1.0);
}

/// Forged writes that carry the victim's cookie (a sibling subdomain: same-site, so
/// SameSite=Lax sends it).
fn forged_writes() -> Vec<Vec<(&'static str, &'static str)>> {
    let writes = [
        vec![(
            "x-reply-x-session-set",
            r#"{"user":"mallory","role":"admin"}"#,
        )],
        vec![("x-reply-x-session-action", "destroy")],
        vec![
            ("x-reply-x-session-set", r#"{"user":null}"#),
            ("x-reply-x-session-action", "regenerate"),
        ],
    ];
    let forgeries = [
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Sec-Fetch-Site", "cross-site"), ("Origin", "null")],
        vec![("Origin", "http://localhost:1")],
    ];
    let mut all = Vec::new();
    for w in &writes {
        for f in &forgeries {
            all.push(f.iter().chain(w.iter()).copied().collect());
        }
    }
    all
}

async fn forge_against(sidecar: &Sidecar, backend: &Backend, cookie: &str) {
    let cookie_header = format!("{COOKIE}={cookie}");
    for (i, forged) in forged_writes().into_iter().enumerate() {
        let method = ["POST", "PUT", "PATCH", "DELETE"][i % 4];
        let mut headers = forged.clone();
        headers.push(("Cookie", cookie_header.as_str()));
        let before = hits(backend);
        let r = send(sidecar.port, method, "/account", &headers).await;
        assert_refused(&r, &format!("{method} {forged:?}"));
        assert_eq!(hits(backend), before, "{method} {forged:?} reached the app");
    }
}

#[tokio::test]
async fn a_forged_write_leaves_a_live_session_unchanged() {
    let (backend, sidecar) = start("").await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"alice","cart":[1,2]}"#).await;
    let cookie = client.cookie.clone().expect("session cookie");
    let loads_before = sidecar
        .metric("sidecar_session_loads_total{result=\"hit\"}")
        .await;

    forge_against(&sidecar, &backend, &cookie).await;

    assert_eq!(
        sidecar
            .metric("sidecar_session_loads_total{result=\"hit\"}")
            .await,
        loads_before,
        "a refused request costs no store round trip"
    );
    assert_eq!(
        client.session().await,
        json!({"user": "alice", "cart": [1, 2]})
    );
    assert_eq!(client.cookie.as_deref(), Some(cookie.as_str()));
    let metrics = sidecar.metrics().await;
    assert_eq!(metrics.get("sidecar_sessions_created_total"), Some(&1.0));
    assert_eq!(
        metrics.get("sidecar_sessions_regenerated_total"),
        Some(&0.0)
    );
    assert_eq!(
        metrics.get("sidecar_sessions_destroyed_total{reason=\"app\"}"),
        Some(&0.0)
    );

    // A write from the session's own origin still works.
    let r = send(
        sidecar.port,
        "POST",
        "/account",
        &[
            ("Sec-Fetch-Site", "same-origin"),
            ("Cookie", &format!("{COOKIE}={cookie}")),
            ("x-reply-x-session-set", r#"{"cart":[1,2,3]}"#),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(client.session().await["cart"], json!([1, 2, 3]));
}

#[tokio::test]
async fn a_forged_write_leaves_a_redis_session_unchanged() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&with_csrf(Settings::redis(&redis), ""), &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"alice"}"#).await;
    let cookie = client.cookie.clone().expect("session cookie");
    let key = session_key(&cookie);
    let hash = |redis: &Redis| {
        let mut lines: Vec<String> = redis
            .cli(&["HGETALL", &key])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let before = hash(&redis);
    assert!(before.iter().any(|l| l.contains("alice")), "{before:?}");
    let ttl_before: i64 = redis.cli(&["PTTL", &key]).unwrap().trim().parse().unwrap();

    forge_against(&sidecar, &backend, &cookie).await;

    assert_eq!(hash(&redis), before, "the stored session did not change");
    assert_eq!(redis.keys("session:*"), vec![key.clone()]);
    let ttl_after: i64 = redis.cli(&["PTTL", &key]).unwrap().trim().parse().unwrap();
    assert!(ttl_after <= ttl_before, "not even the expiry was refreshed");
    assert_eq!(client.session().await, json!({"user": "alice"}));
}

#[tokio::test]
async fn refusals_are_logged_throttled_and_never_with_the_cookie() {
    let (_backend, sidecar) = start("").await;
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"alice"}"#).await;
    let cookie = client.cookie.clone().unwrap();
    let cookie_header = format!("{COOKIE}={cookie}");
    let started = std::time::Instant::now();
    for _ in 0..25 {
        let r = send(
            sidecar.port,
            "POST",
            "/transfer?to=mallory",
            &[
                ("Sec-Fetch-Site", "same-site"),
                ("Origin", "http://evil.example/é"),
                ("Cookie", &cookie_header),
            ],
        )
        .await;
        assert_eq!(r.status, 403);
    }
    let burst = started.elapsed();
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("refused a cross-origin request"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let log = sidecar.log();
    let first = lines(&log);
    // One line per second at most: a burst of 25 gives one line per started second.
    let allowed = burst.as_secs() as usize + 1;
    assert!(
        !first.is_empty() && first.len() <= allowed,
        "{} lines in {burst:?}:\n{log}",
        first.len()
    );
    let line = &first[0];
    for part in [
        "WARN",
        "method=POST",
        "path=/transfer",
        "reason=\"sec_fetch_site\"",
        "sec_fetch_site=same-site",
        "origin=http://evil.example/\\xc3\\xa9",
        "suppressed=0",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    assert!(!line.contains("mallory"), "no query string: {line}");
    assert!(!log.contains(&cookie), "the cookie value was logged");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = send(
        sidecar.port,
        "POST",
        "/transfer",
        &[("Origin", "null"), ("Cookie", &cookie_header)],
    )
    .await;
    assert_eq!(r.status, 403);
    let later = lines(&sidecar.log());
    let last = later.last().unwrap();
    assert!(last.contains("reason=\"origin\""), "{last}");
    assert!(last.contains("origin=null"), "{last}");
    assert!(!last.contains("suppressed=0"), "{last}");
    let suppressed: u64 = later
        .iter()
        .map(|line| {
            line.split("suppressed=")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a suppressed count")
        })
        .sum();
    assert_eq!(
        suppressed as usize + later.len(),
        26,
        "every refusal is either logged or counted as suppressed: {later:?}"
    );
    assert!(!sidecar.log().contains(&cookie));
}
