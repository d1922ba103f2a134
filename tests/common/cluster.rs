//! [`RedisCluster`]: a local Redis Cluster of [`Node`]s on free loopback ports (optionally over
//! TLS), made with `redis-cli --cluster create` and waited for until every node agrees it is
//! whole; plus the questions the failover tests ask it (who is master, who holds which key).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::free_port;
use super::poll::wait_until;
use super::redis::Node;
use super::tls::TlsFiles;

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
