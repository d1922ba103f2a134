//! A tiny demo backend for session-sidecar: std + serde_json only, no cookies, no storage.
//!
//! It reads the session from the `X-Session` request header and changes it with
//! `X-Session-Set` / `X-Session-Action` response headers, exactly as any app behind the sidecar
//! would:
//!
//! - `GET /` — an HTML page with a visit counter (`X-Session-Set: {"visits":N}` on every
//!   visit), the logged-in user, a login form and a logout button.
//! - `POST /login` (form field `user`) — `X-Session-Set: {"user":"..."}` and
//!   `X-Session-Action: regenerate` (a new session ID after login), then 303 to `/`.
//! - `POST /logout` — `X-Session-Action: destroy`, then 303 to `/`.
//! - `GET /api/session` — the `X-Session` JSON as the body (handy with curl).
//!
//! Run it alone with `cargo run --example demo_app [ADDR]` (default `127.0.0.1:3000`, or
//! `DEMO_APP_ADDR`), or the whole demo (app + sidecar) with `cargo run --example demo`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::{Map, Value};

/// Where the demo app listens when neither the first argument nor `DEMO_APP_ADDR` says.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// Largest request head or body the demo app reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest user name the login form accepts (characters).
const MAX_USER_CHARS: usize = 64;

#[allow(dead_code)] // unused when `demo.rs` includes this file as a module
fn main() {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DEMO_APP_ADDR").ok())
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let listener = match bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo_app: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("demo_app: listening on http://{addr}");
    serve(listener);
}

/// Binds the listening socket (separate from [`serve`] so a caller can report a busy port
/// before anything else starts).
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves forever, one thread per connection.
pub fn serve(listener: TcpListener) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    let _ = handle_connection(stream);
                });
            }
            Err(e) => eprintln!("demo_app: accept failed: {e}"),
        }
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    /// The `X-Session` header value, when present.
    session: Option<String>,
    body: Vec<u8>,
    keep_alive: bool,
}

/// One response to write.
struct Response {
    status: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn new(status: &'static str, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    fn redirect_home() -> Response {
        let mut r = Response::new(
            "303 See Other",
            "text/plain; charset=utf-8",
            "see /\n".into(),
        );
        r.headers.push(("Location", "/".into()));
        r
    }

    fn header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn handle_connection(stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => {
                let response = Response::new(
                    "400 Bad Request",
                    "text/plain; charset=utf-8",
                    format!("bad request: {e}\n"),
                );
                let _ = write_response(&mut writer, &response, false);
                return Ok(());
            }
        };
        let keep_alive = request.keep_alive;
        let response = route(&request);
        write_response(&mut writer, &response, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads one HTTP/1.x request; `Ok(None)` when the client closed the connection cleanly.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut head_bytes = line.len();
    let mut parts = line.split_whitespace();
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m.to_string(), t.to_string(), v.to_string()),
        _ => return Err(invalid("malformed request line")),
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0usize;
    let mut session = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(invalid("connection closed inside the request head"));
        }
        head_bytes += header.len();
        if head_bytes > MAX_HEAD_BYTES {
            return Err(invalid("request head too large"));
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("malformed header line"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = value.parse().map_err(|_| invalid("bad Content-Length"))?;
            }
            "transfer-encoding" => return Err(invalid("chunked request bodies are not supported")),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep_alive = false;
                } else if v.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            "x-session" => session = Some(value.to_string()),
            _ => {}
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(invalid("request body too large"));
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or("/").to_string();
    Ok(Some(Request {
        method,
        path,
        session,
        body,
        keep_alive,
    }))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn write_response(
    writer: &mut impl Write,
    response: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&response.body);
    writer.write_all(out.as_bytes())?;
    writer.flush()
}

/// The session the sidecar sent: a JSON object, or empty when the header is missing or
/// not an object (e.g. the app was called directly, without the sidecar).
fn session_of(request: &Request) -> Map<String, Value> {
    match request
        .session
        .as_deref()
        .map(serde_json::from_str::<Value>)
    {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    }
}

fn route(request: &Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/") => home(request),
        ("POST", "/login") => login(request),
        ("POST", "/logout") => {
            Response::redirect_home().header("X-Session-Action", "destroy".into())
        }
        ("GET", "/api/session") => {
            let body = request.session.clone().unwrap_or_else(|| "{}".into());
            Response::new("200 OK", "application/json", body + "\n")
        }
        (_, "/") | (_, "/login") | (_, "/logout") | (_, "/api/session") => Response::new(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "method not allowed\n".into(),
        ),
        _ => Response::new(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    }
}

fn home(request: &Request) -> Response {
    let session = session_of(request);
    let visits = session.get("visits").and_then(Value::as_u64).unwrap_or(0) + 1;
    let user = session.get("user").and_then(Value::as_str);
    let raw = request
        .session
        .as_deref()
        .unwrap_or("(no X-Session header: call me through the sidecar)");

    let who = match user {
        Some(name) => format!(
            "<p>Logged in as <strong>{}</strong>.</p>\n\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>",
            escape_html(name)
        ),
        None => "<p>Not logged in.</p>\n\
             <form method=\"post\" action=\"/login\">\n\
             <label>Name <input name=\"user\" maxlength=\"64\" required autofocus></label>\n\
             <button type=\"submit\">Log in</button>\n</form>"
            .to_string(),
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>session-sidecar demo</title>\n\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}\
         code,pre{{background:#f4f4f4;padding:.2em .4em}}</style></head>\n<body>\n\
         <h1>session-sidecar demo</h1>\n\
         <p>You have visited this page <strong>{visits}</strong> time{plural} in this session.</p>\n\
         {who}\n\
         <h2>What the app received</h2>\n<pre>X-Session: {raw}</pre>\n\
         <p>This app never sees a cookie: the sidecar keeps the session and hands it over in one \
         header. See also <a href=\"/api/session\">/api/session</a>.</p>\n</body>\n</html>\n",
        plural = if visits == 1 { "" } else { "s" },
        raw = escape_html(raw),
    );
    let set = serde_json::json!({ "visits": visits });
    Response::new("200 OK", "text/html; charset=utf-8", body)
        .header("X-Session-Set", ascii_json(&set))
}

fn login(request: &Request) -> Response {
    let user = form_field(&request.body, "user")
        .map(|u| u.trim().chars().take(MAX_USER_CHARS).collect::<String>())
        .unwrap_or_default();
    if user.is_empty() {
        return Response::redirect_home();
    }
    let set = serde_json::json!({ "user": user });
    Response::redirect_home()
        .header("X-Session-Set", ascii_json(&set))
        .header("X-Session-Action", "regenerate".into())
}

/// Compact JSON with every non-ASCII character escaped, so it is a safe header value.
fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (url_decode(key) == name).then(|| url_decode(value))
    })
}

fn url_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
