//! [`SentinelSet`]: a Redis master, its replica and one or three sentinels watching them as
//! [`MASTER_NAME`], on free loopback ports (optionally over TLS, optionally with separate
//! passwords for the data nodes and the sentinels), waited for until the sentinels agree.

use std::collections::HashMap;
use std::time::Duration;

use super::poll::wait_until;
use super::redis::Node;
use super::tls::TlsFiles;

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
        assert!(ready, "sentinels did not settle\n{}", set.describe());
        set
    }

    /// What every node says of itself and what every sentinel thinks of the set, with the tail
    /// of each node's log: printed when a wait on the set gives up, so a failure on a slow
    /// machine (a sentinel in TILT mode, a replica that never synced) can be read afterwards.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let tail = |node: &Node| {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n    ")
        };
        for (name, node) in [("master", &self.master), ("replica", &self.replica)] {
            let repl = node.info("replication");
            out.push_str(&format!(
                "{name} (port {}, running {}): role {:?}, master_port {:?}, master_link_status {:?}, \
                 connected_slaves {:?}\n  log:\n    {}\n",
                node.port,
                node.is_running(),
                repl.get("role"),
                repl.get("master_port"),
                repl.get("master_link_status"),
                repl.get("connected_slaves"),
                tail(node),
            ));
        }
        for (i, s) in self.sentinels.iter().enumerate() {
            let m = s.sentinel_master();
            let info = s.info("sentinel");
            let replicas = s
                .cli(&["SENTINEL", "REPLICAS", MASTER_NAME])
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "sentinel {i} (port {}): tilt {:?}, master port {:?} flags {:?} num-slaves {:?}; \
                 replicas: {replicas}\n  log:\n    {}\n",
                s.port,
                info.get("sentinel_tilt"),
                m.get("port"),
                m.get("flags"),
                m.get("num-slaves"),
                tail(s),
            ));
        }
        out
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

    /// This sentinel's view of the replica on `127.0.0.1:port` (`SENTINEL REPLICAS mymaster`,
    /// one map per replica), if it lists one there.
    pub fn sentinel_replica(&self, port: u16) -> Option<HashMap<String, String>> {
        let out = self.cli(&["SENTINEL", "REPLICAS", MASTER_NAME])?;
        let lines: Vec<&str> = out.lines().collect();
        let name = format!("127.0.0.1:{port}");
        // redis-cli prints the maps one after another, a field per line: split at "name".
        let starts: Vec<usize> = (0..lines.len())
            .step_by(2)
            .filter(|&i| lines[i] == "name")
            .collect();
        starts.iter().enumerate().find_map(|(k, &from)| {
            let to = starts.get(k + 1).copied().unwrap_or(lines.len());
            let map: HashMap<String, String> = lines[from..to]
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (c[0].to_string(), c[1].to_string()))
                .collect();
            (map.get("name") == Some(&name)).then_some(map)
        })
    }
}
