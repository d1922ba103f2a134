//! Test harness: real processes on ephemeral loopback ports.
//!
//! - [`Redis`]: a `redis-server` of the test's own (never the machine's 6379), which a test
//!   may stop and restart on the same port.
//! - [`Backend`]: a real HTTP app (hyper) that echoes what it received as JSON and answers
//!   with whatever headers the request asked for through `x-reply-<name>: <value>`.
//! - [`Sidecar`]: the real `session-sidecar` binary with a generated `proxy.yaml`.
//! - [`Client`]: a real HTTP client with a one-cookie jar for the session cookie.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const SECRET_2: &str = "second-secret-0123456789abcdef-01234567";
pub const COOKIE: &str = "sid";

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// -------------------------------------------------------------------------------------------
// Redis
// -------------------------------------------------------------------------------------------

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    appendonly: bool,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    /// With `appendonly`, every write is fsynced, so a restart keeps acknowledged data.
    pub fn start_with(appendonly: bool) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = Redis {
            port: 0,
            dir,
            child: None,
            appendonly,
        };
        for _ in 0..5 {
            redis.port = free_port();
            if redis.spawn() {
                return redis;
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--daemonize")
            .arg("no")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd.spawn().expect("redis-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.ping() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn ping(&self) -> bool {
        self.cli(&["PING"]).map(|o| o.trim() == "PONG").unwrap_or(false)
    }

    /// Runs redis-cli against this server; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis did not restart on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// -------------------------------------------------------------------------------------------
// Backend
// -------------------------------------------------------------------------------------------

/// The app behind the sidecar. Every response body is JSON describing the request:
/// `{"path", "method", "x_session" (parsed), "x_session_raw", "x_session_count", "cookie",
/// "headers": [[name, value], ...]}`. A request header `x-reply-<name>: <value>` makes the
/// response carry `<name>: <value>` (repeatable); `x-reply-status` sets the status.
pub struct Backend {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(listener, hits.clone()));
        Backend {
            port,
            hits,
            task: Some(task),
        }
    }

    /// Stops accepting and drops the listener (connections in the pool break later).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind backend port: {e}"),
            }
        };
        self.task = Some(tokio::spawn(serve(listener, self.hits.clone())));
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, hits: Arc<AtomicUsize>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hits = hits.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| {
                let hits = hits.clone();
                async move { Ok::<_, Infallible>(answer(req, &hits).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(req: Request<hyper::body::Incoming>, hits: &AtomicUsize) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let x_session: Vec<String> = parts
        .headers
        .get_all("x-session")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let cookie: Vec<String> = parts
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let info = json!({
        "path": parts.uri.path(),
        "method": parts.method.as_str(),
        "x_session": x_session.first().and_then(|v| serde_json::from_str::<Value>(v).ok()),
        "x_session_raw": x_session.first(),
        "x_session_count": x_session.len(),
        "cookie": cookie,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut resp = Response::builder();
    let mut status = 200u16;
    if let Some(ms) = parts.headers.get("x-delay-ms").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    for (name, value) in parts.headers.iter() {
        if let Some(reply) = name.as_str().strip_prefix("x-reply-") {
            if reply == "status" {
                status = value.to_str().unwrap().parse().unwrap();
            } else {
                resp = resp.header(reply, value.clone());
            }
        }
    }
    resp.status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(info.to_string())))
        .unwrap()
}

// -------------------------------------------------------------------------------------------
// Sidecar
// -------------------------------------------------------------------------------------------

/// The store a sidecar under test uses.
#[derive(Clone)]
pub enum StoreKind {
    Redis(String),
    Memory { persist_path: Option<PathBuf>, max_sessions: usize },
}

/// Settings for a generated `proxy.yaml`.
#[derive(Clone)]
pub struct Settings {
    pub store: StoreKind,
    pub fail_open: bool,
    pub idle_timeout: &'static str,
    pub absolute_timeout: &'static str,
    pub max_bytes: usize,
    pub secrets: Vec<&'static str>,
    pub store_timeout: &'static str,
    /// Raw YAML appended under the top level (for keys the tests want to add).
    pub extra: String,
    /// Raw YAML appended inside `session:`.
    pub session_extra: String,
    /// Raw YAML appended inside `cookie:`.
    pub cookie_extra: String,
}

impl Settings {
    pub fn redis(redis: &Redis) -> Settings {
        Settings::with_store(StoreKind::Redis(redis.url()))
    }

    pub fn memory() -> Settings {
        Settings::with_store(StoreKind::Memory {
            persist_path: None,
            max_sessions: 1000,
        })
    }

    pub fn with_store(store: StoreKind) -> Settings {
        Settings {
            store,
            fail_open: false,
            idle_timeout: "30m",
            absolute_timeout: "24h",
            max_bytes: 4096,
            secrets: vec![SECRET],
            store_timeout: "500ms",
            extra: String::new(),
            session_extra: String::new(),
            cookie_extra: String::new(),
        }
    }

    fn yaml(&self, listen: u16, admin: u16, upstream: &str) -> String {
        let store = match &self.store {
            StoreKind::Redis(url) => format!("  kind: redis\n  url: \"{url}\"\n"),
            StoreKind::Memory {
                persist_path,
                max_sessions,
            } => {
                let mut s = format!("  kind: memory\n  max_sessions: {max_sessions}\n");
                if let Some(p) = persist_path {
                    s.push_str(&format!("  persist_path: \"{}\"\n", p.display()));
                }
                s
            }
        };
        let secrets: Vec<String> = self.secrets.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "listen: \"127.0.0.1:{listen}\"\n\
             upstream: \"{upstream}\"\n\
             admin_listen: \"127.0.0.1:{admin}\"\n\
             threads: 2\n\
             grace_period: 5s\n\
             upstream_connect_timeout: 500ms\n\
             upstream_read_timeout: 5s\n\
             cookie:\n  name: {COOKIE}\n  secure: false\n  secrets: [{}]\n{}\
             session:\n  idle_timeout: {}\n  absolute_timeout: {}\n  max_bytes: {}\n{}\
             store:\n{store}  timeout: {}\n\
             on_store_error: {}\n\
             log:\n  level: info\n  access: true\n\
             {}",
            secrets.join(", "),
            self.cookie_extra,
            self.idle_timeout,
            self.absolute_timeout,
            self.max_bytes,
            self.session_extra,
            self.store_timeout,
            if self.fail_open { "fail_open" } else { "fail_closed" },
            self.extra,
        )
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_session-sidecar")
}

pub struct Sidecar {
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn start(settings: &Settings, upstream: &str) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let admin_port = free_port();
            let config_path = dir.path().join("proxy.yaml");
            std::fs::write(&config_path, settings.yaml(port, admin_port, upstream)).unwrap();
            let log_path = dir.path().join(format!("sidecar-{port}.log"));
            let mut sidecar = Sidecar {
                port,
                admin_port,
                config_path,
                log_path,
                child: None,
                _dir: tempfile::tempdir().unwrap(),
            };
            if sidecar.spawn() {
                sidecar._dir = dir;
                return sidecar;
            }
        }
        panic!("sidecar did not start");
    }

    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(&self.log_path).unwrap();
        let sock = self.log_path.with_extension("sock");
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade-sock")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
            {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "exit status {status}");
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!("sidecar did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the same configuration again on the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sidecar did not restart");
    }

    /// Scrapes /metrics into `name{labels} -> value`.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics().await.get(name).copied().unwrap_or(0.0)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// -------------------------------------------------------------------------------------------
// Client
// -------------------------------------------------------------------------------------------

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// What the app saw as `X-Session` (parsed).
    pub fn session(&self) -> Value {
        self.body["x_session"].clone()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A browser-like client that keeps the session cookie.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(sidecar: &Sidecar) -> Client {
        Client::for_base(format!("http://127.0.0.1:{}", sidecar.port))
    }

    pub fn for_base(base: String) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base,
            cookie: None,
        }
    }

    /// A fresh connection pool with the same cookie (after the server restarted).
    pub fn reconnect(&self) -> Client {
        let mut c = Client::for_base(self.base.clone());
        c.cookie = self.cookie.clone();
        c
    }

    /// GET `path` with extra headers; keeps the session cookie from `Set-Cookie`.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_get(path, headers).await.expect("request failed")
    }

    pub async fn try_get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.get(format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{COOKIE}={c}"));
        }
        for (k, v) in headers {
            // Raw bytes, so tests can send UTF-8 (obs-text) the way some apps do.
            req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v.as_bytes()).expect("valid header bytes"));
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let reply = Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
            text,
        };
        for sc in reply.set_cookies() {
            if let Some(rest) = sc.strip_prefix(&format!("{COOKIE}=")) {
                let value = rest.split(';').next().unwrap_or("").to_string();
                if sc.contains("Max-Age=0") || value.is_empty() {
                    self.cookie = None;
                } else {
                    self.cookie = Some(value);
                }
            }
        }
        Ok(reply)
    }

    /// A request whose response makes the app set these fields.
    pub async fn set(&mut self, json: &str) -> Reply {
        self.get("/", &[("x-reply-x-session-set", json)]).await
    }

    /// A request whose response carries this action.
    pub async fn action(&mut self, action: &str) -> Reply {
        self.get("/", &[("x-reply-x-session-action", action)]).await
    }

    /// What the app sees as the session now.
    pub async fn session(&mut self) -> Value {
        self.get("/", &[]).await.session()
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn store_keys_path(dir: &Path) -> PathBuf {
    dir.join("sessions.json")
}

pub fn local(addr: SocketAddr) -> String {
    addr.to_string()
}
