//! HTTP/1.1 connection behaviour through the real binary, over raw sockets.
//!
//! Guards: pipelined requests on one connection are all answered, in order (none dropped);
//! a client that goes away before its answer is counted as `code="499"`, never `"0"`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The sidecar's `host:port`.
fn address(sidecar: &Sidecar) -> String {
    sidecar.url("").trim_start_matches("http://").to_string()
}

/// Reads `n` complete responses (Content-Length framed) from `stream`.
fn read_responses(stream: &mut TcpStream, n: usize) -> Vec<(u16, String)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    while out.len() < n {
        // Parse every complete response already buffered.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("Content-Length framed");
            if buf.len() < end + 4 + length {
                break;
            }
            let status: u16 = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            out.push((status, body));
            buf.drain(..end + 4 + length);
        }
        if out.len() >= n {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("read failed after {} responses: {e}", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn six_pipelined_requests_are_answered_in_order() {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let addr = address(&sidecar);
    let responses = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut requests = Vec::new();
        for i in 1..=6 {
            requests.extend_from_slice(
                format!("GET /p{i} HTTP/1.1\r\nHost: sidecar\r\nUser-Agent: pipeline\r\n\r\n")
                    .as_bytes(),
            );
        }
        stream.write_all(&requests).unwrap();
        read_responses(&mut stream, 6)
    })
    .await
    .unwrap();
    assert_eq!(responses.len(), 6, "every pipelined request answered");
    for (i, (status, body)) in responses.iter().enumerate() {
        assert_eq!(*status, 200);
        let seen: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(seen["path"], format!("/p{}", i + 1), "answered in order");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_is_counted_as_499() {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let addr = address(&sidecar);
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: sidecar\r\nX-Delay-Ms: 1000\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(stream);
    })
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            sidecar.metric("sidecar_requests_total{code=\"499\"}").await >= 1.0
        })
        .await,
        "the abort is counted as 499: {:?}",
        sidecar.metrics().await
    );
    let metrics = sidecar.metrics().await;
    assert!(
        !metrics.contains_key("sidecar_requests_total{code=\"0\"}"),
        "never as 0"
    );
}

/// Pipelining must not reopen request smuggling: a request with ambiguous framing in the
/// middle of a pipeline is refused with 400 and the connection closed, so nothing behind it
/// (here a smuggled request hidden in its body) ever reaches the app.
#[tokio::test]
async fn a_smuggling_attempt_inside_a_pipeline_ends_the_connection() {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let addr = address(&sidecar);
    let hits_before = backend.hits.load(std::sync::atomic::Ordering::SeqCst);
    let (responses, rest) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: sidecar\r\n\r\n";
        let pipeline = format!(
            "GET /first HTTP/1.1\r\nHost: sidecar\r\n\r\n\
             POST /ambiguous HTTP/1.1\r\nHost: sidecar\r\nContent-Length: {}\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}\
             GET /after HTTP/1.1\r\nHost: sidecar\r\n\r\n",
            5 + smuggled.len()
        );
        stream.write_all(pipeline.as_bytes()).unwrap();
        let responses = read_responses(&mut stream, 2);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        (responses, rest)
    })
    .await
    .unwrap();
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0].0, 200);
    let first: serde_json::Value = serde_json::from_str(&responses[0].1).unwrap();
    assert_eq!(first["path"], "/first");
    assert_eq!(responses[1].0, 400, "the ambiguous request is refused");
    assert!(
        rest.is_empty(),
        "nothing after the refusal: the connection is closed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        backend.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits_before + 1,
        "only /first reached the app"
    );
}
