//! Redis Cluster: the [`Connector`] for `store.kind: redis-cluster`.
//!
//! One [`ClusterConnection`] per sidecar, made lazily on the runtime of the first operation.
//! It keeps one multiplexed connection per cluster node (so the number of Redis connections is
//! bounded by the cluster's size, never by client concurrency), routes every command by its
//! key's slot, follows `MOVED`/`ASK`, and refreshes the slot map when the topology changes
//! (a failover, a resharding). Its retries are few and short, and every request is also cut
//! off after `store.timeout` as a whole, retries included, so no request waits longer.
//!
//! A session's old and new key after `regenerate` hash to different slots, so regenerate is a
//! copy and a conditional delete ([`Connector::cross_slot`]) rather than one script.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::redis::{read_ca_file, Connector};
use super::StoreError;
use crate::config::RedisAuth;

/// Retries of one command inside the cluster client (after a redirect, a reconnect or a
/// slot-map refresh). Few, because `store.timeout` bounds the whole request anyway.
const RETRIES: u32 = 4;
/// Shortest pause before a retry that waits (e.g. `TRYAGAIN`, or a node with no connection).
const MIN_RETRY_WAIT_MS: u64 = 5;
/// Longest such pause.
const MAX_RETRY_WAIT_MS: u64 = 100;

/// Redis Cluster through one lazily made [`ClusterConnection`].
pub struct Cluster {
    client: ClusterClient,
    timeout: Duration,
    conn: OnceLock<ClusterConnection>,
}

impl Cluster {
    /// Checks the seed nodes and credentials; connects nothing yet.
    pub fn open(
        nodes: &[String],
        auth: &RedisAuth,
        timeout: Duration,
    ) -> Result<Cluster, StoreError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let max_wait =
            MAX_RETRY_WAIT_MS.min((timeout.as_millis() as u64 / 4).max(MIN_RETRY_WAIT_MS + 1));
        let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .retries(RETRIES)
            .min_retry_wait(MIN_RETRY_WAIT_MS)
            .max_retry_wait(max_wait)
            .retry_wait_formula(10, 2)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout));
        if let Some(user) = &auth.username {
            builder = builder.username(user);
        }
        if let Some(password) = &auth.password {
            builder = builder.password(password);
        }
        let tls = nodes.first().is_some_and(|n| n.starts_with("rediss://"));
        if let (true, Some(path)) = (tls, &auth.ca_file) {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(read_ca_file(path)?),
            });
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Unavailable(format!("invalid store.nodes: {e}")))?;
        Ok(Cluster {
            client,
            timeout,
            conn: OnceLock::new(),
        })
    }
}

impl Connector for Cluster {
    type Conn = ClusterConn;

    fn connection(&self) -> Result<ClusterConn, StoreError> {
        let conn = self.conn.get_or_init(|| {
            // Connects in the background; the first commands wait for it (bounded by the
            // overall response timeout), and a failed first connect is retried by the client.
            let config = ClusterConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout);
            self.client.get_pending_async_connection_with_config(config)
        });
        Ok(ClusterConn(conn.clone()))
    }

    fn cross_slot(&self) -> bool {
        true
    }
}

/// A handle on the cluster connection. Commands are routed by their keys as usual, except
/// `PING`, which the cluster client would send to every primary: here it asks one node, so
/// `/readyz` reports whether the store answers at all, not whether every shard is up (one
/// failed shard must not take every sidecar out of service while the others serve).
#[derive(Clone)]
pub struct ClusterConn(ClusterConnection);

fn is_ping(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"PING"))
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if is_ping(cmd) {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            return Box::pin(self.0.route_command(cmd.clone(), routing));
        }
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_is_recognised_in_any_case() {
        assert!(is_ping(&redis::cmd("PING")));
        assert!(is_ping(&redis::cmd("ping")));
        assert!(!is_ping(&redis::cmd("HGETALL")));
    }

    #[test]
    fn nodes_must_agree_on_tls() {
        let nodes = vec![
            "redis://127.0.0.1:7000".to_string(),
            "rediss://127.0.0.1:7001".to_string(),
        ];
        assert!(Cluster::open(&nodes, &RedisAuth::default(), Duration::from_millis(500)).is_err());
    }

    #[test]
    fn opening_connects_nothing() {
        let nodes = vec!["redis://127.0.0.1:1".to_string()];
        assert!(Cluster::open(&nodes, &RedisAuth::default(), Duration::from_millis(500)).is_ok());
    }
}
