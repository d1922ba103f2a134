//! `redis-server` processes of the test's own: [`Node`], any node (standalone, cluster member,
//! replica or sentinel) in its own temporary directory on a free loopback port, which a test
//! may kill and restart; [`Redis`], a standalone node. `redis-cli` talks to them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;
use super::poll::poll_until;
use super::tls::TlsFiles;

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
        // A port that was free a moment ago may be taken by now: try a few.
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

    /// Starts the process on `self.port` and waits (10 s at most) until it answers PING.
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
        let up = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!("exited with {status}: {}", self.log())));
            }
            self.ping().then_some(Ok(()))
        });
        match up {
            Ok(Ok(())) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(Err(exited)) => Err(exited),
            Err(()) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("no PONG within 10s: {}", self.log()))
            }
        }
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

    /// Starts it again on the same port and directory (retrying for 10 s while the port is
    /// still held).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        if let Err(last) = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
            self.spawn()
        }) {
            panic!("node did not restart on port {}: {last}", self.port);
        }
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
