//! Request framing checks that pingora does not make strictly enough for an edge proxy.
//!
//! pingora rejects duplicate, differing `Content-Length` headers itself (400), but a request
//! that carries both `Content-Length` and `Transfer-Encoding` is accepted: pingora drops the
//! `Content-Length` and reads the body as chunked (RFC 9112 §6.3). That is correct for one
//! hop, yet such a request is the classic request-smuggling probe, and no honest client sends
//! one. The sidecar refuses it with 400 before anything reaches the app.
//!
//! The check works on the raw request header as received, because pingora has already
//! removed the `Content-Length` from the parsed header by the time our filters run.

/// Why a request's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingViolation {
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    ContentLengthWithTransferEncoding,
    /// Several `Content-Length` values that do not all agree, or one that is not a number.
    ConflictingContentLength,
}

impl FramingViolation {
    pub fn as_str(self) -> &'static str {
        match self {
            FramingViolation::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            FramingViolation::ConflictingContentLength => "conflicting Content-Length",
        }
    }
}

/// The client's IP address, if the connection has one.
pub fn client_ip(session: &pingora::protocols::http::ServerSession) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Checks an HTTP/1 request's framing as received; logs a refused request with the client's
/// address. HTTP/2 frames bodies itself (and forbids `Transfer-Encoding`), so it passes.
pub fn check_request(
    session: &pingora::protocols::http::ServerSession,
) -> Result<(), FramingViolation> {
    let Some(h1) = session.as_http1() else {
        return Ok(());
    };
    // pingora refuses conflicting Content-Lengths itself; what it lets through is a
    // Content-Length beside Transfer-Encoding (it drops the former). Only then is the raw
    // header worth scanning.
    if !session
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return Ok(());
    }
    check_framing(&h1.get_headers_raw_bytes()).inspect_err(|violation| {
        let client = client_ip(session).map(|ip| ip.to_string()).unwrap_or_default();
        tracing::warn!(client = %client, "refused request with ambiguous framing: {}", violation.as_str());
    })
}

/// Checks the raw HTTP/1 request header (request line, header lines, blank line).
/// Header names are matched case-insensitively; bare `\n` line ends are accepted like `\r\n`.
pub fn check_framing(raw_header: &[u8]) -> Result<(), FramingViolation> {
    let mut transfer_encoding = false;
    let mut content_length: Option<&[u8]> = None;
    let mut conflicting = false;
    // The first line is the request line.
    for line in raw_header.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = &line[colon + 1..];
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for token in value.split(|b| *b == b',') {
                let token = trim(token);
                if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
                    conflicting = true;
                }
                match content_length {
                    None => content_length = Some(token),
                    Some(first) if first != token => conflicting = true,
                    Some(_) => {}
                }
            }
        }
    }
    if transfer_encoding && content_length.is_some() {
        return Err(FramingViolation::ContentLengthWithTransferEncoding);
    }
    if conflicting {
        return Err(FramingViolation::ConflictingContentLength);
    }
    Ok(())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_pass() {
        assert_eq!(check_framing(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n"),
            Ok(()),
            "identical duplicates are tolerated (RFC 9110 8.6)"
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            check_framing(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Err(FramingViolation::ContentLengthWithTransferEncoding)
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\nTRANSFER-ENCODING: chunked\ncontent-LENGTH: 0\n\n"),
            Err(FramingViolation::ContentLengthWithTransferEncoding)
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(FramingViolation::ConflictingContentLength)
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nContent-Length: 3,4\r\n\r\n"),
            Err(FramingViolation::ConflictingContentLength)
        );
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
            Err(FramingViolation::ConflictingContentLength)
        );
    }

    #[test]
    fn names_that_only_contain_the_words_do_not_count() {
        assert_eq!(
            check_framing(b"POST / HTTP/1.1\r\nX-Content-Length: 3\r\nX-Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\nContent-Length: 9\r\n"),
            Ok(())
        );
    }
}
