//! [`Sidecar`]: the real `session-sidecar` binary, started on free loopback ports (client and
//! admin listener) with a `proxy.yaml` generated from [`Settings`] in a temporary directory,
//! its stderr captured as its log. Also what tests do to it: signals, graceful upgrade,
//! restart, and reading `/readyz` and `/metrics`.

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::poll::{eventually, poll_until};
use super::redis::Redis;
use super::{free_port, COOKIE, SECRET};

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
    /// `upstream_read_timeout`.
    pub upstream_read_timeout: &'static str,
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
            upstream_read_timeout: "5s",
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
             upstream_read_timeout: {}\n\
             cookie:\n  name: {COOKIE}\n  secure: false\n  secrets: [{}]\n{}\
             session:\n  idle_timeout: {}\n  absolute_timeout: {}\n  max_bytes: {}\n{}\
             store:\n{store}  timeout: {}\n\
             on_store_error: {}\n\
             log:\n  level: info\n  access: true\n  format: {}\n\
             {}",
            self.upstream_read_timeout,
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

/// The `session-sidecar` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_session-sidecar")
}

/// A running `session-sidecar` process (killed when dropped): client listener on `port`,
/// admin listener on `admin_port`, its `proxy.yaml` at `config_path`, its log at `log_path`.
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

    /// Starts the process on `self.port` / `self.admin_port` and waits (15 s at most) until
    /// both listeners accept; false when it exited or never listened.
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
        // Up once both listeners accept; `Some(false)` when the process exited first.
        let listening = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        let up = poll_until(Duration::from_secs(15), Duration::from_millis(20), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            (listening(self.port) && listening(self.admin_port)).then_some(true)
        });
        match up {
            Ok(true) => {
                self.child = Some(child);
                true
            }
            Ok(false) => {
                let _ = child.wait();
                false
            }
            Err(()) => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        }
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
        let exited = poll_until(timeout, Duration::from_millis(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if exited.is_err() {
            self.child = Some(child);
        }
        exited.is_ok()
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
        let left = timeout.saturating_sub(start.elapsed());
        match poll_until(left, Duration::from_millis(10), || {
            child.try_wait().ok().flatten()
        }) {
            Ok(status) => {
                assert!(status.success(), "exit status {status}");
                start.elapsed()
            }
            Err(()) => {
                let _ = child.kill();
                panic!("sidecar did not exit within {timeout:?}");
            }
        }
    }

    /// Starts the same configuration again on the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let restarted = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
            self.spawn()
        });
        assert!(restarted.is_ok(), "sidecar did not restart");
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

/// A `persist_path` for the memory store inside `dir`.
pub fn store_keys_path(dir: &Path) -> PathBuf {
    dir.join("sessions.json")
}
