//! `session-sidecar --probe URL`: a dependency-free HTTP health probe for container
//! `HEALTHCHECK`s in images that have no curl or wget (distroless).
//!
//! It sends one plain HTTP/1.1 `GET` over a `std::net::TcpStream`, reads the status line and
//! reports the status code. The whole exchange — connect, write, read — is bounded by one
//! deadline, so a hung admin listener makes the probe fail instead of hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Time limit of one probe, from connect to the status line.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest status line accepted before giving up on a response.
const MAX_STATUS_LINE: usize = 8192;

/// Target of a probe, taken from an `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` as written (also sent as the `Host` header).
    pub authority: String,
    /// Host without brackets, for resolution.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses `http://host[:port][/path][?query]` (a fragment is ignored). Only plain HTTP: the
/// admin listener has no TLS.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let without_fragment = url.split('#').next().unwrap_or_default();
    let uri: http::Uri = without_fragment
        .parse()
        .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    {
        return Err(format!("`{url}` is not an http:// URL"));
    }
    let authority = uri
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .ok_or_else(|| format!("`{url}` has no usable host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{url}` has no usable host"));
    }
    let port = match authority.as_str().rsplit_once(':') {
        Some((_, p)) if !p.ends_with(']') => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{url}` has a bad port"))?,
        _ => 80,
    };
    let path = match uri.query() {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    };
    Ok(Target {
        authority: authority.as_str().to_string(),
        host: host.to_string(),
        port,
        path,
    })
}

/// Time left until `deadline`, or an error once it has passed.
fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("timed out".to_string())
    } else {
        Ok(left)
    }
}

/// GETs `url` and returns the response's status code. Any status is `Ok`; errors are
/// connection failures, timeouts and responses that are not HTTP.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let target = parse_url(url)?;
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last_error = format!("{} resolves to no address", target.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_error)?;

    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: session-sidecar-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            break i;
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err("status line too long".to_string());
        }
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed before a status line".to_string()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for the response".to_string())
            }
            Err(e) => return Err(format!("cannot read the response: {e}")),
        }
    };
    parse_status_line(&buf[..line_end])
}

/// `HTTP/1.x NNN reason` -> `NNN`.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = std::str::from_utf8(line).map_err(|_| "status line is not text".to_string())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("not an HTTP/1 response: `{}`", text.escape_debug()));
    }
    code.parse::<u16>().map_err(|e| e.to_string())
}

/// The `--probe` command: `Ok(())` when `url` answers 2xx within [`DEFAULT_TIMEOUT`].
pub fn check(url: &str) -> Result<(), String> {
    match probe(url, DEFAULT_TIMEOUT)? {
        status if (200..300).contains(&status) => Ok(()),
        status => Err(format!("HTTP status {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread;

    /// Serves one connection with `response` and returns the request head it received.
    fn serve_once(response: &'static [u8]) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut stream = stream;
            stream.write_all(response).unwrap();
            head
        });
        (format!("http://{addr}"), handle)
    }

    #[test]
    fn healthy_endpoint_gives_its_status() {
        let (base, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        let url = format!("{base}/healthz");
        assert_eq!(probe(&url, DEFAULT_TIMEOUT), Ok(200));
        let head = server.join().unwrap();
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Host: {}\r\n", &base[7..])),
            "{head}"
        );
        assert!(head.contains("Connection: close\r\n"), "{head}");
    }

    #[test]
    fn check_accepts_2xx_and_refuses_the_rest() {
        let (base, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(check(&format!("{base}/healthz")), Ok(()));
        server.join().unwrap();

        let (base, server) =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        let err = check(&format!("{base}/readyz")).unwrap_err();
        assert!(err.contains("503"), "{err}");
        server.join().unwrap();

        let (base, server) = serve_once(b"HTTP/1.0 301 Moved\r\n\r\n");
        assert!(check(&base).is_err());
        server.join().unwrap();
    }

    #[test]
    fn status_line_split_across_reads_is_parsed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).unwrap();
            stream.write_all(b"HTTP/1.1 2").unwrap();
            stream.flush().unwrap();
            thread::sleep(Duration::from_millis(50));
            stream.write_all(b"00 OK\r\n\r\n").unwrap();
        });
        assert_eq!(probe(&format!("http://{addr}/"), DEFAULT_TIMEOUT), Ok(200));
        server.join().unwrap();
    }

    #[test]
    fn garbage_and_early_close_are_errors() {
        let (base, server) = serve_once(b"SSH-2.0-OpenSSH\r\n");
        assert!(probe(&base, DEFAULT_TIMEOUT).is_err());
        server.join().unwrap();

        let (base, server) = serve_once(b"");
        assert!(probe(&base, DEFAULT_TIMEOUT).is_err());
        server.join().unwrap();
    }

    #[test]
    fn closed_port_is_an_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = probe(&format!("http://127.0.0.1:{port}/healthz"), DEFAULT_TIMEOUT).unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }

    #[test]
    fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (_stream, _) = listener.accept().unwrap();
            thread::sleep(Duration::from_millis(800));
        });
        let start = Instant::now();
        let err = probe(
            &format!("http://{addr}/healthz"),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert!(
            start.elapsed() < Duration::from_millis(700),
            "{:?}",
            start.elapsed()
        );
        server.join().unwrap();
    }

    #[test]
    fn urls_are_parsed_strictly() {
        let t = parse_url("http://127.0.0.1:9091/healthz").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9091, "/healthz")
        );
        assert_eq!(t.authority, "127.0.0.1:9091");
        let t = parse_url("HTTP://localhost").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 80, "/")
        );
        let t = parse_url("http://[::1]:9091/readyz?x=1#frag").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9091, "/readyz?x=1")
        );
        let t = parse_url("http://example:8080?q").unwrap();
        assert_eq!(t.path, "/?q");
        for bad in [
            "https://127.0.0.1:9091/healthz",
            "127.0.0.1:9091/healthz",
            "http://",
            "http:///healthz",
            "http://:9091/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:x/",
            "http://user@127.0.0.1/",
            "http://[::1/",
            "http://127.0.0.1/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be refused");
        }
    }
}
