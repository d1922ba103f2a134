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

/// A standalone `redis-server` of the test's own: a [`Node`] without persistence, or with
/// `appendonly` + `appendfsync always` so a restart keeps every acknowledged write.
pub struct Redis(Node);

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    pub fn start_with(appendonly: bool) -> Redis {
        let args: &[&str] = if appendonly {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        Redis(Node::start(None, args, None))
    }
}

impl std::ops::Deref for Redis {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl std::ops::DerefMut for Redis {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.0
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
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
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
    if let Some(ms) = parts
        .headers
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
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
    Memory {
        persist_path: Option<PathBuf>,
        max_sessions: usize,
    },
    /// Raw YAML lines for inside `store:` (kind and its keys, each line indented two
    /// spaces), e.g. from [`RedisCluster::store_yaml`] or [`SentinelSet::store_yaml`].
    Yaml(String),
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
    /// `log.format`.
    pub log_format: &'static str,
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
            log_format: "text",
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
            StoreKind::Yaml(lines) => lines.clone(),
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
             log:\n  level: info\n  access: true\n  format: {}\n\
             {}",
            secrets.join(", "),
            self.cookie_extra,
            self.idle_timeout,
            self.absolute_timeout,
            self.max_bytes,
            self.session_extra,
            self.store_timeout,
            if self.fail_open {
                "fail_open"
            } else {
                "fail_closed"
            },
            self.log_format,
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
                let _ = child.wait();
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
        let _ = child.wait();
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

    /// Starts a second process on the same configuration that takes over the listening
    /// sockets of this one once it gets SIGQUIT (the zero-downtime restart).
    pub fn spawn_upgrade(&self) -> Child {
        let log = std::fs::File::create(self.log_path.with_extension("upgrade.log")).unwrap();
        Command::new(binary())
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade-sock")
            .arg(self.log_path.with_extension("sock"))
            .arg("--upgrade")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits for this process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        false
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

    /// Status of `GET /readyz`.
    pub async fn readyz(&self) -> u16 {
        reqwest::get(self.admin_url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits until `/readyz` answers 200 (or `timeout` passes); true when it did.
    pub async fn becomes_ready(&self, timeout: Duration) -> bool {
        eventually(timeout, || async { self.readyz().await == 200 }).await
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

    pub async fn try_get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.get(format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{COOKIE}={c}"));
        }
        for (k, v) in headers {
            // Raw bytes, so tests can send UTF-8 (obs-text) the way some apps do.
            req = req.header(
                *k,
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()).expect("valid header bytes"),
            );
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

// -------------------------------------------------------------------------------------------
// Redis topologies for the scale tests: any redis-server node, TLS material, a Redis
// Cluster, a Sentinel set; and the store-level checks every Redis kind must pass.
// -------------------------------------------------------------------------------------------

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Polls `check` (blocking) until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A test CA and a server certificate for `127.0.0.1` / `localhost` signed by it, made
/// with `openssl` in a temporary directory.
#[derive(Clone)]
pub struct TlsFiles {
    dir: Arc<tempfile::TempDir>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(d)).expect("openssl must work");
        };
        Self::make_ca(d, "ca");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        TlsFiles {
            ca: d.join("ca.crt"),
            cert: d.join("server.crt"),
            key: d.join("server.key"),
            dir: Arc::new(dir),
        }
    }

    fn make_ca(dir: &Path, name: &str) -> PathBuf {
        run_ok(Command::new("openssl").current_dir(dir).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=session-sidecar test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))
        .expect("openssl must work");
        dir.join(format!("{name}.crt"))
    }

    /// Another CA, which did not sign the server certificate.
    pub fn unrelated_ca(&self) -> PathBuf {
        Self::make_ca(self.dir.path(), "other-ca")
    }

    fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.cert.display().to_string(),
            "--tls-key-file",
            &self.key.display().to_string(),
            "--tls-ca-cert-file",
            &self.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// Whether this machine's redis-server was built with TLS (Debian's is): starts one.
pub fn redis_supports_tls(tls: &TlsFiles) -> Result<(), String> {
    Node::try_start(None, &[], Some(tls)).map(|_| ())
}

/// One `redis-server` (or sentinel) process of a test, in its own directory, on a free
/// loopback port (its TLS port when started with [`TlsFiles`]). Killed when dropped.
pub struct Node {
    pub port: u16,
    pub dir: tempfile::TempDir,
    config: Option<PathBuf>,
    args: Vec<String>,
    tls: Option<TlsFiles>,
    /// The node's `requirepass`, used by [`Node::cli`].
    password: Option<String>,
    child: Option<Child>,
}

impl Node {
    /// `redis-server [CONFIG] --port P ARGS…`; `config` is the text of a config file given
    /// first (sentinels need one they can rewrite).
    pub fn start(config: Option<&str>, args: &[&str], tls: Option<&TlsFiles>) -> Node {
        Self::try_start(config, args, tls)
            .unwrap_or_else(|e| panic!("redis-server did not start: {e}"))
    }

    pub fn try_start(
        config: Option<&str>,
        args: &[&str],
        tls: Option<&TlsFiles>,
    ) -> Result<Node, String> {
        Self::try_start_auth(config, args, tls, None)
    }

    /// Like [`Node::start`] for a node with `requirepass password` (which `args` or `config`
    /// must set); [`Node::cli`] then authenticates.
    pub fn start_auth(
        config: Option<&str>,
        args: &[&str],
        tls: Option<&TlsFiles>,
        password: &str,
    ) -> Node {
        Self::try_start_auth(config, args, tls, Some(password))
            .unwrap_or_else(|e| panic!("redis-server did not start: {e}"))
    }

    fn try_start_auth(
        config: Option<&str>,
        args: &[&str],
        tls: Option<&TlsFiles>,
        password: Option<&str>,
    ) -> Result<Node, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = config.map(|text| {
            let path = dir.path().join("node.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        let mut node = Node {
            port: 0,
            dir,
            config,
            args: args.iter().map(|s| s.to_string()).collect(),
            tls: tls.cloned(),
            password: password.map(str::to_string),
            child: None,
        };
        let mut last = String::new();
        for _ in 0..5 {
            node.port = free_port();
            match node.spawn() {
                Ok(()) => return Ok(node),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = &self.config {
            cmd.arg(conf);
        }
        match &self.tls {
            Some(tls) => cmd.args(tls.server_args(self.port)),
            None => cmd.arg("--port").arg(self.port.to_string()),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
            "--dir",
        ])
        .arg(self.dir.path())
        .args(&self.args)
        .stdout(log)
        .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("redis-server must be installed: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if self.cli(&["PING"]).is_some_and(|o| o.trim() == "PONG") {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("no PONG within 10s: {}", self.log()))
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ping(&self) -> bool {
        self.cli(&["PING"]).is_some_and(|o| o.trim() == "PONG")
    }

    /// Runs redis-cli against this node; its stdout when the command succeeded (an error
    /// reply counts as failure).
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("redis-cli");
        if let Some(tls) = &self.tls {
            cmd.args(tls.cli_args());
        }
        if let Some(password) = &self.password {
            cmd.env("REDISCLI_AUTH", password);
        }
        let out = cmd
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .ok()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let error_reply = stdout.starts_with("ERR")
            || stdout.starts_with("MOVED")
            || stdout.starts_with("READONLY")
            || stdout.starts_with("(error)");
        (out.status.success() && !error_reply).then_some(stdout)
    }

    /// `INFO <section>` as a map.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        self.cli(&["INFO", section])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn connected_clients(&self) -> usize {
        self.info("clients")
            .get("connected_clients")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// `master` or `slave` (first line of `ROLE`).
    pub fn role(&self) -> Option<String> {
        self.cli(&["ROLE"])
            .and_then(|o| o.lines().next().map(str::to_string))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node did not restart on port {}: {last}", self.port);
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local Redis Cluster: `masters` primaries with `replicas` replicas each, made with
/// `redis-cli --cluster create`. Node timeout 1000 ms, `cluster-require-full-coverage no`
/// (the setting the docs recommend: a failed shard does not stop the others), appendonly.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    tls: Option<TlsFiles>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize, tls: Option<&TlsFiles>) -> RedisCluster {
        Self::start_with(masters, replicas, tls, false)
    }

    /// With `require_full_coverage`, Redis's default: every shard refuses queries while any
    /// slot is uncovered.
    pub fn start_with(
        masters: usize,
        replicas: usize,
        tls: Option<&TlsFiles>,
        require_full_coverage: bool,
    ) -> RedisCluster {
        let coverage = if require_full_coverage { "yes" } else { "no" };
        let count = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let bus = free_port().to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                &bus,
                "--cluster-require-full-coverage",
                coverage,
                "--appendonly",
                "yes",
            ];
            if tls.is_some() {
                args.extend(["--tls-cluster", "yes"]);
            }
            nodes.push(Node::start(None, &args, tls));
        }
        let cluster = RedisCluster {
            nodes,
            tls: tls.cloned(),
        };
        let mut create = Command::new("redis-cli");
        if let Some(tls) = &cluster.tls {
            create.args(tls.cli_args());
        }
        create.args(["--cluster", "create"]);
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        // Nodes present their certificate to each other on the TLS cluster bus, so it is
        // also a client certificate. Never wait forever for the nodes to meet.
        let log = cluster.nodes[0].dir.path().join("create.log");
        let mut child = create
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli");
        let created = wait_until(
            Duration::from_secs(60),
            || matches!(child.try_wait(), Ok(Some(status)) if status.success()),
        );
        if !created {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "redis-cli --cluster create failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let ready = wait_until(Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{count}"))
            }) && cluster.nodes.iter().all(|n| {
                let repl = n.info("replication");
                repl.get("role").map(String::as_str) == Some("master")
                    || repl.get("master_link_status").map(String::as_str) == Some("up")
            })
        });
        assert!(ready, "cluster did not become ready");
        cluster
    }

    /// `store:` lines for a sidecar on this cluster (two seed nodes; the rest is discovered).
    pub fn store_yaml(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .take(2)
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        let mut s = format!("  kind: redis-cluster\n  nodes: [{}]\n", seeds.join(", "));
        if let Some(tls) = &self.tls {
            s.push_str(&format!("  ca_file: \"{}\"\n", tls.ca.display()));
        }
        s
    }

    /// Indices of the running nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].is_running() && self.nodes[i].role().as_deref() == Some("master")
            })
            .collect()
    }

    /// Which running master holds each key matching `pattern`.
    pub fn key_owners(&self, pattern: &str) -> HashMap<String, usize> {
        let mut owners = HashMap::new();
        for i in self.masters() {
            for key in self.nodes[i].keys(pattern) {
                owners.insert(key, i);
            }
        }
        owners
    }

    /// The replica of master `i` (by its `master_port`).
    pub fn replica_of(&self, i: usize) -> Option<usize> {
        let port = self.nodes[i].port.to_string();
        (0..self.nodes.len()).find(|&j| {
            j != i
                && self.nodes[j].is_running()
                && self.nodes[j].info("replication").get("master_port") == Some(&port)
        })
    }

    /// Waits until every master's writes reached its replicas.
    pub fn wait_replicated(&self) {
        for i in self.masters() {
            let _ = self.nodes[i].cli(&["WAIT", "1", "5000"]);
        }
    }
}

/// One master, one replica and three sentinels (quorum 2, down-after 1000 ms, failover
/// timeout 2000 ms), named `mymaster`. With `sentinels: 1`, a single sentinel (quorum 1).
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    tls: Option<TlsFiles>,
}

pub const MASTER_NAME: &str = "mymaster";

/// Passwords of a [`SentinelSet`]: `data` for master and replica, `sentinel` for the sentinels.
#[derive(Clone, Copy)]
pub struct SentinelAuth {
    pub data: &'static str,
    pub sentinel: &'static str,
}

impl SentinelSet {
    pub fn start(sentinels: usize, tls: Option<&TlsFiles>) -> SentinelSet {
        Self::start_with(sentinels, tls, None)
    }

    pub fn start_with(
        sentinels: usize,
        tls: Option<&TlsFiles>,
        auth: Option<SentinelAuth>,
    ) -> SentinelSet {
        let data_node = |args: &[&str]| match auth {
            Some(a) => {
                let mut args = args.to_vec();
                args.extend(["--requirepass", a.data, "--masterauth", a.data]);
                Node::start_auth(None, &args, tls, a.data)
            }
            None => Node::start(None, args, tls),
        };
        let master = data_node(&["--appendonly", "no"]);
        let mport = master.port.to_string();
        let replica = data_node(&["--appendonly", "no", "--replicaof", "127.0.0.1", &mport]);
        let quorum = if sentinels >= 3 { 2 } else { 1 };
        let mut conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {mport} {quorum}\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 2000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n"
        );
        if tls.is_some() {
            conf.push_str("tls-replication yes\n");
        }
        if let Some(a) = auth {
            conf.push_str(&format!(
                "sentinel auth-pass {MASTER_NAME} {}\nrequirepass {}\nsentinel sentinel-pass {}\n",
                a.data, a.sentinel, a.sentinel
            ));
        }
        let sentinels: Vec<Node> = (0..sentinels)
            .map(|_| match auth {
                Some(a) => Node::start_auth(Some(&conf), &["--sentinel"], tls, a.sentinel),
                None => Node::start(Some(&conf), &["--sentinel"], tls),
            })
            .collect();
        let set = SentinelSet {
            master,
            replica,
            sentinels,
            tls: tls.cloned(),
        };
        let others = (set.sentinels.len() - 1).to_string();
        let ready = wait_until(Duration::from_secs(30), || {
            set.replica
                .info("replication")
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
                && set.sentinels.iter().all(|s| {
                    let m = s.sentinel_master();
                    m.get("num-slaves").map(String::as_str) == Some("1")
                        && m.get("num-other-sentinels") == Some(&others)
                })
        });
        assert!(ready, "sentinels did not settle");
        set
    }

    pub fn store_yaml(&self) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        let mut s = format!(
            "  kind: redis-sentinel\n  sentinels: [{}]\n  master_name: {MASTER_NAME}\n",
            urls.join(", ")
        );
        if let Some(tls) = &self.tls {
            s.push_str(&format!("  ca_file: \"{}\"\n", tls.ca.display()));
        }
        s
    }

    /// The master's port as the running sentinels report it.
    pub fn reported_master_port(&self) -> Option<u16> {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .find_map(|s| {
                let out = s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
                out.lines().nth(1)?.trim().parse().ok()
            })
    }
}

impl Node {
    /// `SENTINEL MASTER mymaster` as a map (on a sentinel).
    pub fn sentinel_master(&self) -> HashMap<String, String> {
        let out = self
            .cli(&["SENTINEL", "MASTER", MASTER_NAME])
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }
}

/// The store key (default prefix) of a session cookie value.
pub fn session_key(cookie: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let id = cookie.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap();
    format!("session:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A Redis store of any kind, built from the `store:` settings the sidecar would use.
pub fn open_store(
    backend: session_sidecar::config::StoreBackend,
    timeout: Duration,
) -> Arc<dyn session_sidecar::store::SessionStore> {
    let config = session_sidecar::config::StoreConfig {
        key_prefix: "session:".into(),
        timeout,
        backend,
    };
    session_sidecar::store::open(&config).unwrap_or_else(|e| panic!("store did not open: {e}"))
}

/// The store-trait semantics every store kind must have (a subset of tests/store_suite.rs,
/// for the store kinds that need a running topology): load / create / update / regenerate /
/// destroy / ping, expiry, concurrent writes of different fields, and keys in many slots.
pub async fn check_store_semantics(
    store: Arc<dyn session_sidecar::store::SessionStore>,
    tag: &str,
) {
    use session_sidecar::protocol::Change;
    use session_sidecar::store::now_ms;
    let k = |name: &str| format!("check:{tag}:{name}");
    let set = |pairs: &[(&str, &str)]| Change {
        set: pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        delete: vec![],
    };
    let ttl = Duration::from_secs(60);
    let now = now_ms();

    store.ping().await.expect("ping");
    assert_eq!(store.load(&k("missing")).await.unwrap(), None);

    // create, load
    let fields = vec![
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "\"x\"".to_string()),
    ];
    store.create(&k("s1"), &fields, now, ttl).await.unwrap();
    let rec = store.load(&k("s1")).await.unwrap().expect("created");
    let mut got = rec.fields.clone();
    got.sort();
    assert_eq!(got, fields);
    assert_eq!(rec.created_ms, now);

    // update: set, delete, untouched fields kept
    let change = Change {
        set: vec![("c".into(), "true".into()), ("a".into(), "2".into())],
        delete: vec!["b".into()],
    };
    assert!(store.update(&k("s1"), &change, now + 1, ttl).await.unwrap());
    let mut got = store.load(&k("s1")).await.unwrap().unwrap().fields;
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "2".to_string()),
            ("c".to_string(), "true".to_string())
        ]
    );

    // update of a missing session writes nothing
    assert!(!store
        .update(&k("gone"), &set(&[("z", "1")]), now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&k("gone")).await.unwrap(), None);

    // regenerate: data and creation time move, the change applies, the old key is gone
    assert!(store
        .regenerate(&k("s1"), &k("s1-new"), &set(&[("d", "4")]), now + 2, ttl)
        .await
        .unwrap());
    assert_eq!(
        store.load(&k("s1")).await.unwrap(),
        None,
        "old key dead after regenerate"
    );
    let rec = store.load(&k("s1-new")).await.unwrap().expect("moved");
    let mut got = rec.fields.clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "2".to_string()),
            ("c".to_string(), "true".to_string()),
            ("d".to_string(), "4".to_string())
        ]
    );
    assert_eq!(rec.created_ms, now, "creation time survives regenerate");

    // regenerate of a missing session creates nothing
    assert!(!store
        .regenerate(&k("nope"), &k("nope-new"), &set(&[("x", "1")]), now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&k("nope-new")).await.unwrap(), None);

    // destroy
    assert!(store.destroy(&k("s1-new")).await.unwrap());
    assert!(!store.destroy(&k("s1-new")).await.unwrap());
    assert_eq!(store.load(&k("s1-new")).await.unwrap(), None);

    // concurrent writes of different fields all land
    store
        .create(&k("conc"), &[("base".into(), "0".into())], now, ttl)
        .await
        .unwrap();
    let writes = (0..20).map(|i| {
        let store = store.clone();
        let key = k("conc");
        async move {
            let change = Change {
                set: vec![(format!("f{i}"), i.to_string())],
                delete: vec![],
            };
            store.update(&key, &change, now_ms(), ttl).await.unwrap()
        }
    });
    assert!(futures_util::future::join_all(writes)
        .await
        .into_iter()
        .all(|ok| ok));
    assert_eq!(
        store.load(&k("conc")).await.unwrap().unwrap().fields.len(),
        21
    );

    // many keys (many slots in a cluster)
    for i in 0..50 {
        store
            .create(
                &k(&format!("many{i}")),
                &[("i".into(), i.to_string())],
                now,
                ttl,
            )
            .await
            .unwrap();
    }
    for i in 0..50 {
        let rec = store.load(&k(&format!("many{i}"))).await.unwrap().unwrap();
        assert_eq!(rec.fields, vec![("i".to_string(), i.to_string())]);
    }

    // expiry
    store
        .create(
            &k("short"),
            &[("a".into(), "1".into())],
            now,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(store.load(&k("short")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load(&k("short")).await.unwrap(), None, "expired");
}
