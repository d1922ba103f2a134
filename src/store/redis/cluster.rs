//! Redis Cluster: the [`Connector`] for `store.kind: redis-cluster`.
//!
//! One [`ClusterConnection`] per sidecar, made lazily on the runtime of the first operation.
//! It keeps one multiplexed connection per cluster node (so the number of Redis connections is
//! bounded by the cluster's size, never by client concurrency), routes every command by its
//! key's slot, follows `MOVED`/`ASK`, and refreshes the slot map when the topology changes
//! (a failover, a resharding). Its retries are few and short, and every request is also cut
//! off after `store.timeout` as a whole, retries included, so no request waits longer.
//!
//! Watchdog: redis-rs 1.8's cluster driver can deadlock during a slot-map refresh under
//! concurrent load while a master fails (the refresh waits for the map's write lock while a
//! request it no longer polls holds a read permit); from then on every command times out,
//! though the cluster is healthy. So the connection is rebuilt when no command has succeeded
//! for [`wedged_after`] while commands kept failing. A false alarm (the whole cluster really
//! down) only costs a reconnect.
//!
//! A session's old and new key after `regenerate` hash to different slots, so regenerate is a
//! copy and a conditional delete ([`Connector::cross_slot`]) rather than one script.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::tls::Tls;
use super::Connector;
use crate::config::RedisAuth;
use crate::store::StoreError;

/// Retries of one command inside the cluster client (after a redirect, a reconnect or a
/// slot-map refresh). Few, because `store.timeout` bounds the whole request anyway.
const RETRIES: u32 = 4;
/// Shortest pause before a retry that waits (e.g. `TRYAGAIN`, or a node with no connection).
const MIN_RETRY_WAIT_MS: u64 = 5;
/// Longest such pause.
const MAX_RETRY_WAIT_MS: u64 = 100;

/// How long every command may fail, with none succeeding, before the cluster connection is
/// rebuilt: one `store.timeout` (at least 250 ms). A wedged driver answers nothing, so its
/// commands all run into the timeout; a failed shard alone never triggers this, as commands
/// for the other shards keep succeeding.
pub fn wedged_after(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(250))
}

/// Redis Cluster through one lazily made [`ClusterConnection`], rebuilt when it wedges.
pub struct Cluster {
    client: ClusterClient,
    timeout: Duration,
    epoch: Instant,
    current: Mutex<Option<(ClusterConnection, Arc<Health>)>>,
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
        if let Some(certificates) =
            Tls::for_urls("store.nodes", nodes, auth.ca_file.as_deref())?.certificates()
        {
            builder = builder.certs(certificates);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Unavailable(format!("invalid store.nodes: {e}")))?;
        Ok(Cluster {
            client,
            timeout,
            epoch: Instant::now(),
            current: Mutex::new(None),
        })
    }
}

impl Connector for Cluster {
    type Conn = ClusterConn;

    fn connection(&self) -> Result<ClusterConn, StoreError> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((conn, health)) = current.as_ref() {
            if !health.wedged(now, wedged_after(self.timeout)) {
                return Ok(ClusterConn {
                    conn: conn.clone(),
                    health: health.clone(),
                });
            }
            tracing::warn!(
                after = ?wedged_after(self.timeout),
                "no Redis Cluster command succeeded for a while; rebuilding the cluster connection"
            );
        }
        // Connects in the background; the first commands wait for it (bounded by the overall
        // response timeout), and a failed first connect is retried by the client. Replacing
        // the old connection drops it, which stops its driver once in-flight commands end.
        let config = ClusterConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let conn = self.client.get_pending_async_connection_with_config(config);
        let health = Arc::new(Health::new(self.epoch));
        *current = Some((conn.clone(), health.clone()));
        Ok(ClusterConn { conn, health })
    }

    fn cross_slot(&self) -> bool {
        true
    }
}

const NEVER: u64 = u64::MAX;

/// Outcomes of the commands on one cluster connection, in ms since the connector's epoch.
struct Health {
    epoch: Instant,
    /// Time of the first failure since the last success; `NEVER` while commands succeed.
    failing_since: AtomicU64,
}

impl Health {
    fn new(epoch: Instant) -> Health {
        Health {
            epoch,
            failing_since: AtomicU64::new(NEVER),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn succeeded(&self) {
        if self.failing_since.load(Ordering::Relaxed) != NEVER {
            self.failing_since.store(NEVER, Ordering::Relaxed);
        }
    }

    fn failed(&self) {
        let _ = self.failing_since.compare_exchange(
            NEVER,
            self.now(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn wedged(&self, now: u64, after: Duration) -> bool {
        let since = self.failing_since.load(Ordering::Relaxed);
        since != NEVER && now.saturating_sub(since) >= after.as_millis() as u64
    }
}

/// Records one command's outcome; dropped unfinished (the store's timeout gave up on it),
/// it counts as a failure.
struct PendingCommand {
    health: Arc<Health>,
    done: bool,
}

impl PendingCommand {
    fn record<T>(mut self, result: &RedisResult<T>) {
        self.done = true;
        match result {
            Ok(_) => self.health.succeeded(),
            Err(_) => self.health.failed(),
        }
    }
}

impl Drop for PendingCommand {
    fn drop(&mut self) {
        if !self.done {
            self.health.failed();
        }
    }
}

/// A handle on the cluster connection. Commands are routed by their keys as usual, except
/// `PING`, which the cluster client would send to every primary: here it asks one node, so
/// `/readyz` reports whether the store answers at all, not whether every shard is up (one
/// failed shard must not take every sidecar out of service while the others serve).
#[derive(Clone)]
pub struct ClusterConn {
    conn: ClusterConnection,
    health: Arc<Health>,
}

fn is_ping(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"PING"))
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let outcome = PendingCommand {
            health: self.health.clone(),
            done: false,
        };
        Box::pin(async move {
            let result = if is_ping(cmd) {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                self.conn.route_command(cmd.clone(), routing).await
            } else {
                self.conn.req_packed_command(cmd).await
            };
            outcome.record(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let outcome = PendingCommand {
            health: self.health.clone(),
            done: false,
        };
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            outcome.record(&result);
            result
        })
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

    #[test]
    fn wedged_only_after_failing_without_success_for_long_enough() {
        let epoch = Instant::now();
        let h = Health::new(epoch);
        let after = Duration::from_secs(1);
        assert!(!h.wedged(10_000, after), "no failure yet");
        h.failed();
        let since = h.failing_since.load(Ordering::Relaxed);
        assert!(!h.wedged(since + 999, after));
        assert!(h.wedged(since + 1000, after));
        h.failed();
        assert_eq!(
            h.failing_since.load(Ordering::Relaxed),
            since,
            "first failure counts"
        );
        h.succeeded();
        assert!(!h.wedged(since + 5000, after), "a success clears it");
        assert_eq!(
            wedged_after(Duration::from_millis(100)),
            Duration::from_millis(250)
        );
        assert_eq!(wedged_after(Duration::from_secs(2)), Duration::from_secs(2));
    }

    #[test]
    fn an_abandoned_command_counts_as_failed() {
        let h = Arc::new(Health::new(Instant::now()));
        drop(PendingCommand {
            health: h.clone(),
            done: false,
        });
        assert_ne!(h.failing_since.load(Ordering::Relaxed), NEVER);
        PendingCommand {
            health: h.clone(),
            done: false,
        }
        .record::<()>(&Ok(()));
        assert_eq!(h.failing_since.load(Ordering::Relaxed), NEVER);
    }
}
