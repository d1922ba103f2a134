//! Hostile clients and careless apps, through the real binary.
//!
//! Guards: request smuggling shapes (`Content-Length` with `Transfer-Encoding`, differing
//! duplicate `Content-Length`) refused with 400 and never reaching the app; header size
//! limits (431, default and configured); oversized, malformed and very many cookies; cookie
//! bytes that are not UTF-8 passing through unchanged; every `X-Session*` header in any case
//! and in underscore spelling, both directions, and the app's `X-Session` kept when the client
//! names it in `Connection`; `Cache-Control` on responses that set the
//! session cookie (and untouched on the others); throttled warnings naming the address that
//! sends rejected cookies; an interim 103 answer is forwarded without instructions and never
//! settles the session (only the final answer does). Raw TCP is used wherever an HTTP client
//! would refuse or normalize the request.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// -------------------------------------------------------------------------------------------
// Raw HTTP
// -------------------------------------------------------------------------------------------

/// A response read off the wire.
struct RawReply {
    status: u16,
    /// Header lines as received (name, value bytes).
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Writes `request` as is to the sidecar and reads one response (to EOF, so requests should
/// carry `Connection: close` unless the sidecar closes by itself).
async fn raw(port: u16, request: &[u8]) -> RawReply {
    raw_try(port, request).await.unwrap_or_else(|| {
        panic!(
            "no response to {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        )
    })
}

/// Like [`raw`], but `None` when the connection closed without a response.
async fn raw_try(port: u16, request: &[u8]) -> Option<RawReply> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // A peer that refuses early may reset before reading everything: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if response_complete(&buf) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok() || !buf.is_empty(), "no response within 10 s");
    head_end(&buf).map(|_| parse_response(&buf))
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = head_end(buf) else {
        return false;
    };
    let reply = parse_response(&buf[..end]);
    match reply
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(len) => buf.len() >= end + len,
        None => false,
    }
}

fn parse_response(buf: &[u8]) -> RawReply {
    let end = head_end(buf)
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = &buf[..end - 4];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = String::from_utf8_lossy(lines.next().unwrap()).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..colon]).into_owned(),
                l[colon + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect();
    RawReply {
        status,
        headers,
        body: buf[end..].to_vec(),
    }
}

/// A minimal app that records every request head byte-for-byte (the JSON echo of
/// [`Backend`] is lossy for non-UTF-8 bytes) and answers `/set` with an `X-Session-Set`,
/// `/mixed` with instruction headers in unusual spellings, and `/early` with a 103 Early Hints
/// carrying instructions before a final answer carrying others.
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // One request per connection: read the head, answer, close.
                    let end = loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(end) = head_end(&buf) {
                            break end;
                        }
                    };
                    let head = buf[..end].to_vec();
                    let path = head
                        .split(|b| *b == b' ')
                        .nth(1)
                        .unwrap_or_default()
                        .to_vec();
                    recorded.lock().unwrap().push(head);
                    // An interim answer first: 103 Early Hints carrying instructions and
                    // a session cookie of its own, then the final answer.
                    if path.starts_with(b"/early") {
                        let interim: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nX-Session-Set: {\"hint\":1}\r\nX-Session-Action: destroy\r\nSet-Cookie: sid=app-made\r\n\r\n";
                        let _ = stream.write_all(interim).await;
                        // `/early-then-close`: the app dies after its interim answer.
                        if path.as_slice() == b"/early-then-close" {
                            return;
                        }
                    }
                    let extra: &[u8] = match path.as_slice() {
                        b"/set" => b"X-Session-Set: {\"user\":\"u1\"}\r\n",
                        b"/early" => b"X-Session-Set: {\"cart\":[9]}\r\n",
                        b"/mixed" => b"X-SESSION-SET: {\"upper\":1}\r\nx-Session-set: {\"lower\":2}\r\nX_Session_Set: {\"underscore\":3}\r\nX_SESSION_ACTION: destroy\r\nx_session: leak\r\nX-Session-Signature: leak\r\n",
                        b"/regen" => b"X-Session-ACTION: Regenerate\r\n",
                        _ => b"",
                    };
                    let mut resp =
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n".to_vec();
                    resp.extend_from_slice(extra);
                    resp.extend_from_slice(b"\r\nok");
                    let _ = stream.write_all(&resp).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Recorder { port, heads, task }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn last(&self) -> Vec<u8> {
        self.heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the app got a request")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Header lines of a recorded request head: (name as sent, raw value).
fn head_lines(head: &[u8]) -> Vec<(String, Vec<u8>)> {
    head.split(|b| *b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..colon]).into_owned(),
                l[colon + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect()
}

fn values_of(head: &[u8], name: &str) -> Vec<Vec<u8>> {
    head_lines(head)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

async fn memory_setup() -> (Backend, Sidecar) {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    (backend, sidecar)
}

/// A real session cookie value, made by the app setting a field.
async fn login(sidecar: &Sidecar) -> String {
    let mut client = Client::new(sidecar);
    client.set(r#"{"user":"alice"}"#).await;
    client.cookie.clone().expect("a session cookie")
}

fn get(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

// -------------------------------------------------------------------------------------------
// Request smuggling
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_before_the_app() {
    let (backend, sidecar) = memory_setup().await;
    let requests: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nCONTENT-LENGTH: 4\r\nTRANSFER-ENCODING: gzip, chunked\r\n\r\n0\r\n\r\n",
        // The classic CL.TE probe: a second request hidden in the body.
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for request in requests {
        let reply = raw(sidecar.port, request).await;
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(request));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        backend.hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the app"
    );
    // Framings pingora refuses itself: a last coding that is not chunked, TE on HTTP/1.0.
    let refused: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for request in refused {
        let reply = raw(sidecar.port, request).await;
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(request));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        backend.hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the app"
    );
    // Honest framings still pass.
    let ok = raw(
        sidecar.port,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["body_len"], 3);
    let ok = raw(
        sidecar.port,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(backend.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn differing_duplicate_content_length_is_refused_before_the_app() {
    let (backend, sidecar) = memory_setup().await;
    let requests: [&[u8]; 3] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 0\r\n\r\nabcde",
    ];
    for request in requests {
        let reply = raw(sidecar.port, request).await;
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(request));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        backend.hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the app"
    );
    // Identical duplicates are one length (RFC 9110 §8.6) and are accepted.
    let ok = raw(
        sidecar.port,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["body_len"], 3);
}

// -------------------------------------------------------------------------------------------
// Header size limits
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_request_headers_get_431_with_the_default_limit() {
    let (backend, sidecar) = memory_setup().await;
    let pad = format!("X-Pad: {}", "a".repeat(17_000));
    let reply = raw(sidecar.port, &get("/", &[&pad])).await;
    assert_eq!(reply.status, 431);
    // Many small headers add up the same way.
    let many: Vec<String> = (0..100)
        .map(|i| format!("X-Pad-{i}: {}", "b".repeat(200)))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let reply = raw(sidecar.port, &get("/", &many)).await;
    assert_eq!(reply.status, 431);
    // A huge request line counts too.
    let reply = raw(sidecar.port, &get(&format!("/{}", "p".repeat(17_000)), &[])).await;
    assert_eq!(reply.status, 431);
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
    // Just under the limit passes.
    let pad = format!("X-Pad: {}", "a".repeat(15_000));
    let reply = raw(sidecar.port, &get("/", &[&pad])).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_configured_header_limit_is_enforced() {
    let backend = Backend::start().await;
    let mut settings = Settings::memory();
    settings.extra = "limits:\n  max_header_bytes: 2048\n".into();
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let reply = raw(
        sidecar.port,
        &get("/", &[&format!("X-Pad: {}", "a".repeat(2100))]),
    )
    .await;
    assert_eq!(reply.status, 431);
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
    let reply = raw(
        sidecar.port,
        &get("/", &[&format!("X-Pad: {}", "a".repeat(1500))]),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn too_many_header_lines_are_refused() {
    let (backend, sidecar) = memory_setup().await;
    // Small in bytes, but more lines than the parser takes (256).
    let lines: Vec<String> = (0..300).map(|i| format!("X-H{i}: 1")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let reply = raw(sidecar.port, &get("/", &lines)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_header_beyond_the_parser_limit_is_refused_and_never_reaches_the_app() {
    let (backend, sidecar) = memory_setup().await;
    // Far past any limit (pingora's own parser stops at 1 MiB): refused either way.
    let pad = format!("X-Pad: {}", "a".repeat(2 * 1024 * 1024));
    if let Some(reply) = raw_try(sidecar.port, &get("/", &[&pad])).await {
        assert!(
            reply.status == 431 || reply.status == 400,
            "status {}",
            reply.status
        );
    }
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
}

// -------------------------------------------------------------------------------------------
// Cookies
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_cookie_header_gets_431() {
    let (backend, sidecar) = memory_setup().await;
    let cookie = login(&sidecar).await;
    let hits = backend.hits.load(Ordering::SeqCst);
    let big = format!("Cookie: {COOKIE}={cookie}; big={}", "c".repeat(20_000));
    let reply = raw(sidecar.port, &get("/", &[&big])).await;
    assert_eq!(reply.status, 431);
    assert_eq!(backend.hits.load(Ordering::SeqCst), hits);
}

#[tokio::test]
async fn malformed_cookie_headers_go_on_as_anonymous_and_keep_other_cookies() {
    let (_backend, sidecar) = memory_setup().await;
    let cookie = login(&sidecar).await;
    let cases: Vec<(String, &str)> = vec![
        (COOKIE.to_string(), ""),
        (format!("{COOKIE}="), ""),
        (format!("{COOKIE}=\""), ""),
        (format!("{COOKIE}=\"{cookie}"), ""),
        (format!("{COOKIE}=={cookie}"), ""),
        (format!("{COOKIE}={cookie}x"), ""),
        (format!("{COOKIE}={}", &cookie[..cookie.len() - 1]), ""),
        (format!(";;;; ;{COOKIE}=.;; a=1 ;"), "a=1"),
        (format!("a=1;{COOKIE}=={COOKIE}==;b"), "a=1; b"),
        (format!("=; ={COOKIE}; {COOKIE}=%00; c=3"), "=; =sid; c=3"),
    ];
    for (header, rest) in cases {
        let reply = raw(sidecar.port, &get("/", &[&format!("Cookie: {header}")])).await;
        assert_eq!(reply.status, 200, "{header:?}");
        let body = reply.json();
        assert_eq!(body["x_session_raw"], "{}", "{header:?}");
        let forwarded: Vec<String> = body["cookie"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        if rest.is_empty() {
            assert!(forwarded.is_empty(), "{header:?} -> {forwarded:?}");
        } else {
            assert_eq!(forwarded, vec![rest.to_string()], "{header:?}");
        }
    }
}

#[tokio::test]
async fn hundreds_of_cookies_keep_the_session_and_pass_the_others() {
    let (_backend, sidecar) = memory_setup().await;
    let cookie = login(&sidecar).await;
    // 500 cookies in one header, the session cookie in the middle.
    let mut pairs: Vec<String> = (0..500).map(|i| format!("c{i}=v{i}")).collect();
    pairs.insert(250, format!("{COOKIE}={cookie}"));
    let reply = raw(
        sidecar.port,
        &get("/", &[&format!("Cookie: {}", pairs.join("; "))]),
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["x_session"], json!({"user": "alice"}));
    let others: Vec<String> = (0..500).map(|i| format!("c{i}=v{i}")).collect();
    assert_eq!(body["cookie"], json!([others.join("; ")]));

    // 200 separate Cookie lines (as HTTP/2 clients split them); the session one among them.
    let mut lines: Vec<String> = (0..200).map(|i| format!("Cookie: d{i}=w{i}")).collect();
    lines.insert(100, format!("Cookie: {COOKIE}={cookie}"));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let reply = raw(sidecar.port, &get("/", &lines)).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["x_session"], json!({"user": "alice"}));
    let others: Vec<String> = (0..200).map(|i| format!("d{i}=w{i}")).collect();
    assert_eq!(body["cookie"], json!([others.join("; ")]));

    // Many session-cookie candidates: a valid one after bad ones still works.
    let mut pairs: Vec<String> = (0..100).map(|i| format!("{COOKIE}=bad{i}")).collect();
    pairs.push(format!("{COOKIE}={cookie}"));
    let reply = raw(
        sidecar.port,
        &get("/", &[&format!("Cookie: {}", pairs.join("; "))]),
    )
    .await;
    assert_eq!(reply.json()["x_session"], json!({"user": "alice"}));
    assert_eq!(reply.json()["cookie"], json!([]));
}

#[tokio::test]
async fn cookie_bytes_that_are_not_utf8_pass_through_unchanged() {
    let recorder = Recorder::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &recorder.addr());
    let set = raw(sidecar.port, &get("/set", &[])).await;
    let cookie = set_session_cookie(&set).expect("session created");

    let mut request =
        b"GET /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: a=\xff\xfe\x80; ".to_vec();
    request.extend_from_slice(format!("{COOKIE}={cookie}").as_bytes());
    request.extend_from_slice(b"; b=caf\xc3\xa9; c=\xc3\x28\xa0\xa1\r\n\r\n");
    let reply = raw(sidecar.port, &request).await;
    assert_eq!(reply.status, 200);
    let head = recorder.last();
    assert_eq!(
        values_of(&head, "cookie"),
        vec![b"a=\xff\xfe\x80; b=caf\xc3\xa9; c=\xc3\x28\xa0\xa1".to_vec()]
    );
    assert_eq!(
        values_of(&head, "x-session"),
        vec![br#"{"user":"u1"}"#.to_vec()]
    );

    // A session cookie whose value is not UTF-8 is rejected like any other bad cookie.
    let request =
        b"GET /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: sid=\xff\xff; z=1\r\n\r\n";
    let reply = raw(sidecar.port, request).await;
    assert_eq!(reply.status, 200);
    let head = recorder.last();
    assert_eq!(values_of(&head, "cookie"), vec![b"z=1".to_vec()]);
    assert_eq!(values_of(&head, "x-session"), vec![b"{}".to_vec()]);
}

// -------------------------------------------------------------------------------------------
// X-Session* header names in every spelling
// -------------------------------------------------------------------------------------------

const HEADER_SECRET: &str = "x-session-header-secret-0123456789abcdef";

#[tokio::test]
async fn client_session_headers_in_any_case_or_spelling_never_reach_the_app() {
    let recorder = Recorder::start().await;
    let mut settings = Settings::memory();
    settings.session_extra = format!("  sign_header: true\n  header_secret: \"{HEADER_SECRET}\"\n");
    let sidecar = Sidecar::start(&settings, &recorder.addr());
    let spoofs = [
        "X-SESSION: {\"admin\":true}",
        "x_session: {\"admin\":true}",
        "X_Session: {\"admin\":true}",
        "x-SeSsIoN: {\"admin\":true}",
        "X-Session-Set: {\"admin\":true}",
        "X_SESSION_SET: {\"admin\":true}",
        "x_Session-set: {\"admin\":true}",
        "X-Session-Action: destroy",
        "x_session_action: regenerate",
        "X_SESSION-ACTION: destroy",
        "X-Session-Signature: t=1,v1=00",
        "x_session_signature: t=1,v1=00",
        "X-SESSION_SIGNATURE: t=1,v1=00",
        // Headers named in `Connection` are removed on the way to the app: naming the
        // sidecar's own must not take them away.
        "Connection: X-Session, x-session-signature",
    ];
    let reply = raw(sidecar.port, &get("/", &spoofs)).await;
    assert_eq!(reply.status, 200);
    let head = recorder.last();
    let family: Vec<(String, Vec<u8>)> = head_lines(&head)
        .into_iter()
        .filter(|(n, _)| {
            n.to_ascii_lowercase()
                .replace('_', "-")
                .starts_with("x-session")
        })
        .collect();
    let names: Vec<String> = family.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    assert_eq!(names.len(), 2, "{family:?}");
    assert!(
        names.contains(&"x-session".to_string())
            && names.contains(&"x-session-signature".to_string())
    );
    let value = values_of(&head, "x-session").remove(0);
    assert_eq!(value, b"{}");
    // The signature is the sidecar's own, over the exact value the app got.
    let signature = String::from_utf8(values_of(&head, "x-session-signature").remove(0)).unwrap();
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .expect("t=...,v1=...");
    let mut mac = Hmac::<Sha256>::new_from_slice(HEADER_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&value);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("signature verifies");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t.parse::<u64>().unwrap()) <= 5);
}

/// The first session cookie a raw reply sets (its value), if any.
fn set_session_cookie(reply: &RawReply) -> Option<String> {
    let value = reply.header("set-cookie")?;
    let value = value.strip_prefix(&format!("{COOKIE}="))?;
    Some(value.split(';').next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn an_interim_103_neither_settles_the_session_nor_reaches_the_client_with_instructions() {
    let recorder = Recorder::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &recorder.addr());
    let login = raw(sidecar.port, &get("/set", &[])).await;
    let cookie = set_session_cookie(&login).expect("logged in");
    let with_cookie = format!("Cookie: {COOKIE}={cookie}");

    // 103 (with instructions and an app cookie of its own), then 200 setting `cart`.
    let interim = raw(sidecar.port, &get("/early", &[&with_cookie])).await;
    assert_eq!(interim.status, 103, "the interim answer is forwarded");
    assert_eq!(
        interim.header("link").as_deref(),
        Some("</a.css>; rel=preload")
    );
    for (name, value) in &interim.headers {
        let name = name.to_ascii_lowercase();
        assert!(!name.starts_with("x-session"), "{name} reached the client");
        assert!(
            !(name == "set-cookie" && value.starts_with(COOKIE.as_bytes())),
            "a session cookie on the 103"
        );
    }
    let last = parse_response(&interim.body);
    assert_eq!(last.status, 200);
    assert_eq!(
        set_session_cookie(&last),
        None,
        "the live session is updated in place, not replaced by a new one"
    );

    // The same session now holds `cart` beside `user`; the 103's set and destroy were ignored.
    raw(sidecar.port, &get("/read", &[&with_cookie])).await;
    let seen: Value =
        serde_json::from_slice(&values_of(&recorder.last(), "x-session").remove(0)).unwrap();
    assert_eq!(seen, json!({"user": "u1", "cart": [9]}));

    // An app that dies after its 103: the client still gets a final answer, 502.
    let interim = raw(sidecar.port, &get("/early-then-close", &[&with_cookie])).await;
    assert_eq!(interim.status, 103);
    assert_eq!(parse_response(&interim.body).status, 502);
    assert!(
        sidecar.metric("sidecar_requests_total{code=\"502\"}").await >= 1.0,
        "counted as 502, not as 103"
    );
}

#[tokio::test]
async fn app_instructions_match_any_case_and_no_spelling_reaches_the_client() {
    let recorder = Recorder::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &recorder.addr());
    // Mixed-case hyphen spellings are instructions (header names are case-insensitive);
    // underscore spellings are not, and nothing of the family reaches the client.
    let reply = raw(sidecar.port, &get("/mixed", &[])).await;
    assert_eq!(reply.status, 200);
    for (name, _) in &reply.headers {
        assert!(
            !name
                .to_ascii_lowercase()
                .replace('_', "-")
                .starts_with("x-session"),
            "{name} reached the client"
        );
    }
    let cookie = set_session_cookie(&reply).expect("the hyphen spellings created a session");
    raw(
        sidecar.port,
        &get("/read", &[&format!("Cookie: {COOKIE}={cookie}")]),
    )
    .await;
    let seen: Value =
        serde_json::from_slice(&values_of(&recorder.last(), "x-session").remove(0)).unwrap();
    assert_eq!(
        seen,
        json!({"upper": 1, "lower": 2}),
        "the underscore set and destroy are ignored"
    );

    // A mixed-case action value works too.
    let reply = raw(
        sidecar.port,
        &get("/regen", &[&format!("Cookie: {COOKIE}={cookie}")]),
    )
    .await;
    let renewed = reply.header("set-cookie").expect("regenerated");
    assert!(!renewed.contains(&cookie));
}

// -------------------------------------------------------------------------------------------
// Shared caches
// -------------------------------------------------------------------------------------------

fn directives(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn responses_setting_the_cookie_are_private_and_others_keep_the_apps_cache_control() {
    let (_backend, sidecar) = memory_setup().await;

    // No Cache-Control from the app: the sidecar adds one.
    let mut client = Client::new(&sidecar);
    let r = client.set(r#"{"a":1}"#).await;
    assert_eq!(r.set_cookies().len(), 1);
    let cc = directives(&r.header("cache-control").unwrap());
    assert!(
        cc.contains(&"private".into()) && cc.contains(&"no-cache=\"set-cookie\"".into()),
        "{cc:?}"
    );

    // A shared-cacheable answer from the app is made private; its other directives stay.
    let mut client = Client::new(&sidecar);
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"a":1}"#),
                (
                    "x-reply-cache-control",
                    "public, max-age=600, s-maxage=3600, must-revalidate",
                ),
            ],
        )
        .await;
    assert_eq!(r.set_cookies().len(), 1);
    let cc = directives(&r.header("cache-control").unwrap());
    assert!(cc.contains(&"private".into()), "{cc:?}");
    assert!(
        cc.contains(&"max-age=600".into()) && cc.contains(&"must-revalidate".into()),
        "{cc:?}"
    );
    assert!(
        !cc.iter()
            .any(|d| d == "public" || d.starts_with("s-maxage")),
        "{cc:?}"
    );

    // `no-store` is already stronger than private: kept as the app wrote it.
    let mut client = Client::new(&sidecar);
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"a":1}"#),
                ("x-reply-cache-control", "no-store"),
            ],
        )
        .await;
    assert_eq!(r.set_cookies().len(), 1);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

    // Regenerate and destroy set cookies too.
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-action", "regenerate"),
                ("x-reply-cache-control", "public, max-age=60"),
            ],
        )
        .await;
    assert_eq!(r.set_cookies().len(), 1);
    let cc = directives(&r.header("cache-control").unwrap());
    assert!(
        cc.contains(&"private".into()) && !cc.contains(&"public".into()),
        "{cc:?}"
    );
    let r = client
        .get(
            "/",
            &[
                ("x-reply-x-session-action", "destroy"),
                ("x-reply-cache-control", "public, max-age=60"),
            ],
        )
        .await;
    assert_eq!(r.set_cookies().len(), 1);
    let cc = directives(&r.header("cache-control").unwrap());
    assert!(
        cc.contains(&"private".into()) && !cc.contains(&"public".into()),
        "{cc:?}"
    );

    // Without a Set-Cookie from the sidecar the app's header is untouched, with a session
    // or without.
    for app_value in ["public, max-age=600", "max-age=0, s-maxage=30", "no-cache"] {
        let mut anonymous = Client::new(&sidecar);
        let r = anonymous
            .get("/", &[("x-reply-cache-control", app_value)])
            .await;
        assert!(r.set_cookies().is_empty());
        assert_eq!(r.header("cache-control").as_deref(), Some(app_value));
    }
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    let r = client
        .get("/", &[("x-reply-cache-control", "public, max-age=600")])
        .await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("public, max-age=600")
    );
    let r = client.get("/", &[]).await;
    assert!(
        r.header("cache-control").is_none(),
        "nothing added to a response without Set-Cookie"
    );
}

// -------------------------------------------------------------------------------------------
// Brute-force detection
// -------------------------------------------------------------------------------------------

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn rejected_cookies_are_reported_per_address_throttled_and_without_the_cookie() {
    let (_backend, sidecar) = memory_setup().await;
    let cookie = login(&sidecar).await;
    // Tampered copies of a real cookie: the signature no longer matches.
    let mut tampered = Vec::new();
    for i in 0..20 {
        let mut bytes = cookie.clone().into_bytes();
        let at = 44 + i;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        tampered.push(String::from_utf8(bytes).unwrap());
    }
    for value in &tampered {
        let mut client = Client::new(&sidecar);
        client.cookie = Some(value.clone());
        let r = client.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["x_session_raw"], "{}");
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            sidecar.log().lines().any(|l| l.contains("brute forcing"))
        })
        .await,
        "no warning in the log:\n{}",
        sidecar.log()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = strip_ansi(&sidecar.log());
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("brute forcing"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "at most one warning per address per minute: {warnings:?}"
    );
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("127.0.0.1"),
        "names the address: {}",
        warnings[0]
    );
    assert!(warnings[0].contains("rejected=1"), "{}", warnings[0]);
    for value in tampered.iter().chain([&cookie]) {
        assert!(!log.contains(value.as_str()), "a cookie value was logged");
        assert!(!log.contains(&value[..43]), "a session ID was logged");
    }
    assert_eq!(
        sidecar
            .metric("sidecar_cookies_rejected_total{reason=\"bad_signature\"}")
            .await,
        20.0
    );
}
