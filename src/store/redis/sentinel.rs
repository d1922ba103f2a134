//! Redis Sentinel: the [`Connector`] for `store.kind: redis-sentinel`.
//!
//! The sentinels are asked for the address of `master_name`; the sidecar keeps one multiplexed
//! connection to that master (with the data-node credentials and `db`) and follows a failover
//! by itself:
//!
//! - a connection error (refused, reset, closed: the master died, or Sentinel demoted it and
//!   killed its clients) or a `READONLY` reply (the node is a replica now) drops the
//!   connection; the next command asks the sentinels again and connects to the master they
//!   name, once that node answers `ROLE` as a master. A command refused with `READONLY` wrote
//!   nothing, so it is retried once on the new master;
//! - a background watch asks the sentinels every [`WATCH_PERIOD`] which node is the master,
//!   and leaves the current one when they name another. This covers what errors cannot show:
//!   a master that went silent (a partition: only timeouts, no reset), and a graceful
//!   failover, where the old master keeps accepting writes until Sentinel demotes it.
//!
//! Asking the sentinels is single-flight and rate-limited: while no master is known, at most
//! one resolution runs per [`RESOLVE_INTERVAL`]; the requests in between fail at once (SPEC §5
//! answers them) instead of queueing. All sentinels are asked in parallel over cached
//! connections; the address most of them report wins. Credentials for the sentinels
//! (`sentinel_username`/`sentinel_password`) are separate from those of the data nodes
//! (`username`/`password`). With `rediss://` sentinel URLs, both the sentinels and the data
//! nodes are reached over TLS, trusting `ca_file` when given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, Value,
};

use super::tls::Tls;
use super::Connector;
use crate::config::RedisAuth;
use crate::store::StoreError;

/// Least time between two attempts to find the master while none is known.
pub const RESOLVE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the background watch asks the sentinels whether the master moved.
pub const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Settings of `store.kind: redis-sentinel`.
pub struct SentinelSettings<'a> {
    pub sentinels: &'a [String],
    pub master_name: &'a str,
    pub db: i64,
    pub auth: &'a RedisAuth,
    pub sentinel_username: Option<&'a str>,
    pub sentinel_password: Option<&'a str>,
    pub timeout: Duration,
}

/// The Sentinel-managed master of `master_name`.
pub struct Sentinel {
    shared: Arc<Shared>,
}

struct Shared {
    sentinels: Vec<Client>,
    /// One cached connection per sentinel (same order), made on demand.
    sentinel_conns: Arc<Mutex<Vec<Option<MultiplexedConnection>>>>,
    master_name: String,
    node: NodeSettings,
    timeout: Duration,
    current: RwLock<Option<Master>>,
    resolving: tokio::sync::Mutex<()>,
    last_resolve: Mutex<Option<Instant>>,
    generation: AtomicU64,
    watching: AtomicBool,
}

/// How to reach a data node the sentinels name.
struct NodeSettings {
    /// The sentinels' scheme and CAs: data nodes are reached the same way.
    tls: Tls,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Clone)]
struct Master {
    conn: MultiplexedConnection,
    addr: String,
    generation: u64,
}

impl Sentinel {
    /// Checks the sentinel URLs and the CA file; connects nothing yet.
    pub fn open(settings: SentinelSettings<'_>) -> Result<Sentinel, StoreError> {
        let bad = |e: RedisError| StoreError::Unavailable(format!("invalid store.sentinels: {e}"));
        if settings.sentinels.is_empty() {
            return Err(StoreError::Unavailable("store.sentinels is empty".into()));
        }
        let tls = Tls::for_urls(
            "store.sentinels",
            settings.sentinels,
            settings.auth.ca_file.as_deref(),
        )?;
        let mut sentinels = Vec::with_capacity(settings.sentinels.len());
        for url in settings.sentinels {
            let info = url.as_str().into_connection_info().map_err(bad)?;
            // Sentinels have no databases; their credentials are their own.
            let mut redis = info.redis_settings().clone().set_db(0);
            if let Some(user) = settings.sentinel_username {
                redis = redis.set_username(user);
            }
            if let Some(password) = settings.sentinel_password {
                redis = redis.set_password(password);
            }
            let info = info.set_redis_settings(redis);
            sentinels.push(tls.client(info).map_err(bad)?);
        }
        let timeout = settings.timeout.max(Duration::from_millis(1));
        Ok(Sentinel {
            shared: Arc::new(Shared {
                sentinel_conns: Arc::new(Mutex::new(vec![None; sentinels.len()])),
                sentinels,
                master_name: settings.master_name.to_string(),
                node: NodeSettings {
                    tls,
                    db: settings.db,
                    username: settings.auth.username.clone(),
                    password: settings.auth.password.clone(),
                },
                timeout,
                current: RwLock::new(None),
                resolving: tokio::sync::Mutex::new(()),
                last_resolve: Mutex::new(None),
                generation: AtomicU64::new(0),
                watching: AtomicBool::new(false),
            }),
        })
    }
}

impl Connector for Sentinel {
    type Conn = SentinelConn;

    fn connection(&self) -> Result<SentinelConn, StoreError> {
        self.shared.watch();
        Ok(SentinelConn {
            shared: self.shared.clone(),
        })
    }
}

/// A handle on "the current master": each command goes to the master known at that moment,
/// which is looked up through the sentinels when none is known.
#[derive(Clone)]
pub struct SentinelConn {
    shared: Arc<Shared>,
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut retried = false;
            loop {
                let master = self.shared.master().await?;
                let result = master.conn.clone().req_packed_command(cmd).await;
                let verdict = match &result {
                    Ok(value) => Verdict::of_value(value),
                    Err(e) => Verdict::of_error(e),
                };
                if verdict != Verdict::Fine {
                    self.shared.forget(master.generation, verdict.why());
                }
                if verdict == Verdict::ReadOnly && !retried {
                    retried = true;
                    continue;
                }
                return result;
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let master = self.shared.master().await?;
            let result = master
                .conn
                .clone()
                .req_packed_commands(pipeline, offset, count)
                .await;
            let verdict = match &result {
                Ok(values) => values
                    .iter()
                    .map(Verdict::of_value)
                    .max()
                    .unwrap_or(Verdict::Fine),
                Err(e) => Verdict::of_error(e),
            };
            if verdict != Verdict::Fine {
                self.shared.forget(master.generation, verdict.why());
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.node.db
    }
}

/// What a command's outcome says about the master connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Fine,
    /// The connection is broken: find the master again.
    Broken,
    /// The node is a replica now (nothing was written): find the master again.
    ReadOnly,
}

impl Verdict {
    fn of_value(value: &Value) -> Verdict {
        match value {
            Value::ServerError(e) if e.code() == "READONLY" => Verdict::ReadOnly,
            _ => Verdict::Fine,
        }
    }

    fn of_error(e: &RedisError) -> Verdict {
        if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
            Verdict::ReadOnly
        } else if e.is_timeout() {
            // Slow is not broken: the watch finds out if the master moved.
            Verdict::Fine
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Verdict::Broken
        } else {
            Verdict::Fine
        }
    }

    fn why(self) -> &'static str {
        match self {
            Verdict::Fine => "",
            Verdict::Broken => "connection lost",
            Verdict::ReadOnly => "the node is a replica now",
        }
    }
}

fn no_master(detail: String) -> RedisError {
    RedisError::from((ErrorKind::Io, "no Redis master known", detail))
}

impl Shared {
    fn current(&self) -> Option<Master> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The master connection, found through the sentinels when none is known.
    async fn master(&self) -> RedisResult<Master> {
        if let Some(m) = self.current() {
            return Ok(m);
        }
        let _single_flight = self.resolving.lock().await;
        if let Some(m) = self.current() {
            return Ok(m);
        }
        {
            let mut last = self.last_resolve.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = *last {
                if at.elapsed() < RESOLVE_INTERVAL {
                    return Err(no_master("the sentinels were asked a moment ago".into()));
                }
            }
            *last = Some(Instant::now());
        }
        let (addr, conn) = match tokio::time::timeout(self.timeout, self.resolve()).await {
            Ok(result) => result?,
            Err(_) => return Err(no_master("the sentinels did not answer in time".into())),
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let master = Master {
            conn,
            addr,
            generation,
        };
        tracing::info!(master = %master.addr, name = %self.master_name, "connected to the Redis master named by the sentinels");
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(master.clone());
        Ok(master)
    }

    /// Drops the master connection of this generation, so the next command resolves again.
    fn forget(&self, generation: u64, why: &str) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|m| m.generation == generation) {
            let old = current.take().map(|m| m.addr).unwrap_or_default();
            tracing::warn!(master = %old, why, "leaving the Redis master; asking the sentinels again");
        }
    }

    /// Starts the background watch once, on the runtime of the first operation. It ends
    /// when the store is dropped.
    fn watch(self: &Arc<Self>) {
        if self.watching.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Shared> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(WATCH_PERIOD).await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let Some(current) = shared.current() else {
                    continue;
                };
                let asked = tokio::time::timeout(shared.timeout, shared.ask_sentinels()).await;
                if let Ok(Ok(votes)) = asked {
                    if votes.first().is_some_and(|(addr, _)| *addr != current.addr) {
                        shared.forget(current.generation, "the sentinels name another master");
                    }
                }
            }
        });
    }

    /// Asks every sentinel at once for the master's address; returns the addresses named,
    /// most votes first (among equal votes, the first answer first). Stops listening once a
    /// majority agrees.
    async fn ask_sentinels(&self) -> RedisResult<Vec<(String, usize)>> {
        let config = self.connection_config();
        let mut asks = tokio::task::JoinSet::new();
        for (i, client) in self.sentinels.iter().enumerate() {
            let client = client.clone();
            let config = config.clone();
            let name = self.master_name.clone();
            let cache = self.sentinel_conns.clone();
            asks.spawn(async move {
                let cached = cache.lock().unwrap_or_else(|e| e.into_inner())[i].clone();
                let mut conn = match cached {
                    Some(conn) => conn,
                    None => {
                        let conn = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        cache.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(conn.clone());
                        conn
                    }
                };
                let addr: RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&name)
                    .query_async(&mut conn)
                    .await;
                if addr.is_err() {
                    cache.lock().unwrap_or_else(|e| e.into_inner())[i] = None;
                }
                addr
            });
        }
        let majority = self.sentinels.len() / 2 + 1;
        let mut votes: HashMap<String, usize> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut last_err = None;
        while let Some(joined) = asks.join_next().await {
            match joined {
                Ok(Ok(Some((host, port)))) => {
                    let addr = join_host_port(&host, &port);
                    let n = votes.entry(addr.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        order.push(addr);
                    }
                    if *n >= majority {
                        break;
                    }
                }
                Ok(Ok(None)) => {
                    last_err = Some(RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "a sentinel does not know the master name",
                        self.master_name.clone(),
                    )))
                }
                Ok(Err(e)) => last_err = Some(e),
                Err(e) => last_err = Some(no_master(format!("sentinel query failed: {e}"))),
            }
        }
        if order.is_empty() {
            return Err(last_err.unwrap_or_else(|| no_master("no sentinel answered".into())));
        }
        let mut ranked: Vec<(String, usize)> = order
            .into_iter()
            .map(|a| {
                let n = votes[&a];
                (a, n)
            })
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
        Ok(ranked)
    }

    /// Finds the master: the address the sentinels name that answers `ROLE` as a master.
    async fn resolve(&self) -> RedisResult<(String, MultiplexedConnection)> {
        let candidates = self.ask_sentinels().await?;
        let mut last_err = None;
        for (addr, _) in candidates {
            match self.connect_master(&addr).await {
                Ok(conn) => return Ok((addr, conn)),
                Err(e) => {
                    tracing::debug!(master = %addr, error = %e, "candidate master refused");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| no_master("no candidate".into())))
    }

    async fn connect_master(&self, addr: &str) -> RedisResult<MultiplexedConnection> {
        let scheme = self.node.tls.scheme();
        let info = format!("{scheme}://{addr}/{}", self.node.db).into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(user) = &self.node.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.node.password {
            redis = redis.set_password(password);
        }
        let client = self.node.tls.client(info.set_redis_settings(redis))?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await?;
        let role: redis::Role = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role {
            redis::Role::Primary { .. } => Ok(conn),
            _ => Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the node the sentinels name is not a master (yet)",
            ))),
        }
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }
}

/// `host:port`, with brackets around an IPv6 host.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(sentinels: &'a [String], auth: &'a RedisAuth) -> SentinelSettings<'a> {
        SentinelSettings {
            sentinels,
            master_name: "mymaster",
            db: 0,
            auth,
            sentinel_username: None,
            sentinel_password: None,
            timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn verdicts() {
        let readonly =
            redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n")
                .unwrap();
        assert_eq!(Verdict::of_value(&readonly), Verdict::ReadOnly);
        assert_eq!(Verdict::of_value(&Value::Okay), Verdict::Fine);
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Verdict::of_error(&refused), Verdict::Broken);
        let closed = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(Verdict::of_error(&closed), Verdict::Broken);
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(Verdict::of_error(&timed_out), Verdict::Fine);
        let other = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert_eq!(Verdict::of_error(&other), Verdict::Fine);
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(join_host_port("10.0.0.1", "6379"), "10.0.0.1:6379");
        assert_eq!(join_host_port("::1", "6379"), "[::1]:6379");
    }

    #[test]
    fn mixed_tls_is_refused() {
        let auth = RedisAuth::default();
        let mixed = vec![
            "redis://127.0.0.1:1".to_string(),
            "rediss://127.0.0.1:2".to_string(),
        ];
        assert!(Sentinel::open(settings(&mixed, &auth)).is_err());
        let plain = vec!["redis://127.0.0.1:1".to_string()];
        assert!(Sentinel::open(settings(&plain, &auth)).is_ok());
    }

    #[tokio::test]
    async fn unreachable_sentinels_fail_fast_and_rate_limit() {
        let auth = RedisAuth::default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let urls = vec![format!("redis://127.0.0.1:{port}")];
        let sentinel = Sentinel::open(settings(&urls, &auth)).unwrap();
        let mut conn = sentinel.connection().unwrap();
        let start = Instant::now();
        let first: RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        assert!(first.is_err());
        let second: RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        let err = second.unwrap_err();
        assert!(err.to_string().contains("a moment ago"), "{err}");
        assert!(start.elapsed() < Duration::from_millis(200));
    }
}
