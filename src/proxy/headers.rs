//! Header work of the proxy, in one place: the reserved `X-Session*` family stripped from
//! client requests and app responses, the session cookie taken out of `Cookie`, the app's
//! instructions read, the app's own `Set-Cookie` for our cookie dropped, `Cache-Control`
//! made private when the sidecar sets a cookie.

use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::cookie;
use crate::protocol;
use crate::session::Instructions;

/// Every header of the `X-Session*` family, in any case or spelling.
pub fn reserved(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| protocol::is_reserved_request_header(name.as_str()))
        .cloned()
        .collect()
}

/// Removes the client's copies of `X-Session*`; returns how many there were.
pub fn strip_client_copies(req: &mut RequestHeader) -> usize {
    let spoofed = reserved(&req.headers);
    if !spoofed.is_empty() {
        tracing::info!(headers = ?spoofed, "removed client-supplied session headers");
        for name in &spoofed {
            req.remove_header(name);
        }
    }
    spoofed.len()
}

/// An interim answer (`100 Continue`, `103 Early Hints`): a final one follows. `101` ends the
/// HTTP exchange, so it is final.
pub fn is_interim(status: http::StatusCode) -> bool {
    status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS
}

/// Takes every session cookie out of the request's `Cookie` headers (the other cookies
/// pass unchanged) and returns their values, first to last. The app gets at most one
/// `Cookie` header: several (as HTTP/2 clients send them) are joined with `; ` before the
/// HTTP/1.1 hop (RFC 9113 §8.2.3), with or without a session cookie among them.
pub fn take_session_cookies(req: &mut RequestHeader, name: &str) -> Result<Vec<Vec<u8>>> {
    let cookies = req.headers.get_all(COOKIE);
    let several = cookies.iter().nth(1).is_some();
    let split = cookie::split_cookies(name, cookies.iter().map(|v| v.as_bytes()));
    if !split.found && !several {
        return Ok(Vec::new());
    }
    req.remove_header(&COOKIE);
    if let Some(rest) = split.rest {
        if let Ok(value) = HeaderValue::from_bytes(&rest) {
            req.insert_header(COOKIE, value)?;
        }
    }
    Ok(split.candidates)
}

/// The size of a request's header as the limit counts it.
pub fn request_bytes(req: &RequestHeader) -> usize {
    let uri_len = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    let mut total = req.method.as_str().len() + uri_len + 12;
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
    }
    total
}

/// True when the app's response carries session instructions.
pub fn has_instructions(resp: &ResponseHeader) -> bool {
    resp.headers.contains_key(protocol::X_SESSION_SET)
        || resp.headers.contains_key(protocol::X_SESSION_ACTION)
}

/// Reads the app's `X-Session-Set` / `X-Session-Action` headers.
pub fn instructions(resp: &ResponseHeader) -> Instructions {
    let (action, unknown) = protocol::parse_actions(
        resp.headers
            .get_all(protocol::X_SESSION_ACTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    if !unknown.is_empty() {
        tracing::warn!(actions = ?unknown, "ignored unknown X-Session-Action");
    }
    let mut sets = resp
        .headers
        .get_all(protocol::X_SESSION_SET)
        .iter()
        .peekable();
    let change = if sets.peek().is_none() {
        Ok(Default::default())
    } else {
        protocol::parse_sets(sets.map(|v| v.as_bytes()))
    };
    Instructions { action, change }
}

/// Removes the `X-Session*` family from the app's response: never sent to the client.
pub fn strip_instructions(resp: &mut ResponseHeader) {
    for name in reserved(&resp.headers) {
        resp.remove_header(&name);
    }
}

/// The session cookie belongs to the sidecar: a `Set-Cookie` for its name from the app
/// (careless or compromised) is dropped, so the app cannot fix a client's session.
pub fn drop_app_session_cookie(resp: &mut ResponseHeader, name: &str) -> Result<()> {
    let name = name.as_bytes();
    let is_ours = |v: &HeaderValue| {
        let b = v.as_bytes();
        let end = b.iter().position(|c| *c == b'=').unwrap_or(b.len());
        b[..end].trim_ascii() == name
    };
    if !resp.headers.get_all(SET_COOKIE).iter().any(is_ours) {
        return Ok(());
    }
    let kept: Vec<HeaderValue> = resp
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| !is_ours(v))
        .cloned()
        .collect();
    tracing::warn!("dropped the app's Set-Cookie for the session cookie");
    resp.remove_header(&SET_COOKIE);
    for v in kept {
        resp.append_header(SET_COOKIE, v)?;
    }
    Ok(())
}

/// Adds the sidecar's `Set-Cookie` and makes the response private to the browser: shared
/// caches must not store it. Other responses keep the app's `Cache-Control` untouched.
pub fn set_cookie(resp: &mut ResponseHeader, value: String) -> Result<()> {
    resp.append_header(SET_COOKIE, value)?;
    let existing: Vec<String> = resp
        .headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    if existing
        .iter()
        .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"))
    {
        return Ok(());
    }
    let mut directives: Vec<String> = existing
        .into_iter()
        .filter(|d| {
            let l = d.to_ascii_lowercase();
            l != "public" && !l.starts_with("s-maxage")
        })
        .collect();
    directives.push("private".into());
    directives.push("no-cache=\"Set-Cookie\"".into());
    resp.insert_header(CACHE_CONTROL, directives.join(", "))?;
    Ok(())
}
