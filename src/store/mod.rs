//! Where sessions live: the [`SessionStore`] trait, its Redis and memory implementations, and
//! [`Store`], the wrapper the proxy uses, which bounds every operation by `store.timeout` and
//! records its latency and errors.
//!
//! A store key is `key_prefix` + hex SHA-256 of the session ID (see [`crate::cookie`]). Field
//! values are JSON text; metadata lives in `__`-prefixed fields the app never sees.

pub mod memory;
pub mod redis;

pub use crate::metrics::StoreOp;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use self::redis::cluster::Cluster;
use self::redis::sentinel::{Sentinel, SentinelSettings};
use self::redis::standalone::Standalone;
use self::redis::RedisStore;
use crate::config::{StoreBackend, StoreConfig};
use crate::metrics::Metrics;
use crate::session::{is_reserved_key, Change};

/// Metadata field: creation time, unix milliseconds.
pub const CREATED_FIELD: &str = "__created";
/// Metadata field: time of the last expiry refresh, unix milliseconds.
pub const TOUCHED_FIELD: &str = "__touched";

/// A session as loaded from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The app's fields (name, JSON text), without metadata.
    pub fields: Vec<(String, String)>,
    /// Creation time, unix milliseconds.
    pub created_ms: u64,
    /// Last expiry refresh, unix milliseconds.
    pub touched_ms: u64,
}

impl SessionRecord {
    /// Builds a record from raw hash fields, separating metadata. Metadata read back from
    /// the store is input like any other: a hash whose `__created` is missing or not a
    /// number, or whose `__touched` is not a number, is no session (`None`; see
    /// [`note_corrupt_metadata`]). A missing `__touched` means never refreshed.
    pub fn from_hash(pairs: Vec<(String, String)>) -> Option<SessionRecord> {
        let mut created = None;
        let mut touched = Some(None);
        let mut fields = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            if k == CREATED_FIELD {
                created = v.parse::<u64>().ok();
            } else if k == TOUCHED_FIELD {
                touched = v.parse::<u64>().ok().map(Some);
            } else if !is_reserved_key(&k) {
                fields.push((k, v));
            }
        }
        let created_ms = created?;
        Some(SessionRecord {
            fields,
            created_ms,
            touched_ms: touched?.unwrap_or(created_ms),
        })
    }
}

/// [`SessionStore::update_sliding_index`] in two steps: the update, then (when the session
/// was found) [`SessionStore::index_add`] of its entry, whose failure is logged, not returned:
/// the change is saved.
pub async fn update_then_index<S: SessionStore + ?Sized>(
    store: &S,
    key: &str,
    change: &Change,
    now_ms: u64,
    ttl: Duration,
    index: IndexEntry<'_>,
) -> Result<bool, StoreError> {
    let found = store.update(key, change, now_ms, ttl).await?;
    if found {
        let added = store
            .index_add(index.key, key, index.deadline_ms, now_ms, ttl)
            .await;
        if let Err(e) = added {
            tracing::warn!(error = %e, "user index not refreshed");
        }
    }
    Ok(found)
}

/// A session's entry in its user's index: the index key and the session's absolute deadline.
#[derive(Debug, Clone, Copy)]
pub struct IndexEntry<'a> {
    pub key: &'a str,
    pub deadline_ms: u64,
}

/// Corrupt session metadata is logged at warn level once per process, then at debug level:
/// a client replaying such a cookie must not flood the log.
pub fn note_corrupt_metadata() {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!("unreadable session treated as no session");
    } else {
        tracing::warn!(
            "unreadable session (metadata __created/__touched missing or implausible, or a \
             key of another type) treated as no session; further ones are logged at debug level"
        );
    }
}

/// A store operation failed or did not answer in time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store answered something unexpected: {0}")]
    BadReply(String),
}

/// The operations the proxy needs. Every implementation passes `tests/store_suite.rs`.
///
/// `ttl` is the expiry the session gets after the operation (the caller caps the idle timeout
/// at the absolute limit). Keys are full store keys.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The session, or `None` when it does not exist (or has expired).
    async fn load(&self, key: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Creates a session with these fields (the key is fresh and random).
    async fn create(
        &self,
        key: &str,
        fields: &[(String, String)],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Applies a change to an existing session and refreshes its expiry, atomically.
    /// `Ok(false)` when the session no longer exists: nothing is written.
    async fn update(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Moves a session to `new_key` with the change applied; afterwards `old_key` is gone.
    /// `Ok(false)` when the old session no longer exists. On error the old session is whole.
    async fn regenerate(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Deletes a session; `Ok(false)` when it did not exist.
    async fn destroy(&self, key: &str) -> Result<bool, StoreError>;
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Records session `key` in the user index `index_key` until `deadline_ms` (the
    /// session's absolute end). The index expires with its latest deadline.
    async fn index_add(
        &self,
        index_key: &str,
        key: &str,
        deadline_ms: u64,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// [`SessionStore::update`], then, when the session was found, its entry in its user's
    /// index made sure of ([`SessionStore::index_add`]: added back if it went missing, and the
    /// index's expiry slid to at least `ttl`). So a refresh slides the index with its
    /// sessions, and an index lost while a session lives (evicted, or the session predates
    /// `user_field`) is rebuilt by the session's next write. Stores that can do both in one
    /// round trip override it (Redis on one node: one script). A failed index step after a
    /// successful update is logged, not returned: the change is saved.
    async fn update_sliding_index(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
        index: IndexEntry<'_>,
    ) -> Result<bool, StoreError> {
        update_then_index(self, key, change, now_ms, ttl, index).await
    }
    /// Removes sessions `keys` from the user index `index_key`, in one operation.
    async fn index_remove(&self, index_key: &str, keys: &[String]) -> Result<(), StoreError>;
    /// The live sessions of the user index `index_key` whose `user_field` still holds
    /// `user` (JSON text), with their keys, and their record unless its metadata is
    /// unreadable (such a session still names the user, so a logout still ends it).
    /// Entries past their deadline are pruned; an entry whose session is missing or names
    /// another user is skipped but kept, since it may be a create, regenerate or user change
    /// in flight (indexed first, written next) that a later logout must still find.
    async fn user_sessions(
        &self,
        index_key: &str,
        user_field: &str,
        user: &str,
        now_ms: u64,
    ) -> Result<Vec<(String, Option<SessionRecord>)>, StoreError>;
    /// Called once at shutdown (the memory store saves itself here).
    async fn close(&self) {}
}

/// Current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Builds the store of the configured kind: the one place that maps `store.kind` to an
/// implementation. Nothing connects yet: Redis connections are made lazily, on the runtime of
/// the first operation.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match &config.backend {
        StoreBackend::Memory {
            max_sessions,
            persist_path,
        } => Arc::new(memory::MemoryStore::open(
            *max_sessions,
            persist_path.clone(),
        )),
        StoreBackend::Redis { url, ca_file } => Arc::new(RedisStore::new(Standalone::open(
            url,
            ca_file.as_deref(),
            config.timeout,
        )?)),
        StoreBackend::RedisCluster { nodes, auth } => {
            Arc::new(RedisStore::new(Cluster::open(nodes, auth, config.timeout)?))
        }
        StoreBackend::RedisSentinel {
            sentinels,
            master_name,
            db,
            auth,
            sentinel_username,
            sentinel_password,
        } => Arc::new(RedisStore::new(Sentinel::open(SentinelSettings {
            sentinels,
            master_name,
            db: *db,
            auth,
            sentinel_username: sentinel_username.as_deref(),
            sentinel_password: sentinel_password.as_deref(),
            timeout: config.timeout,
        })?)),
    })
}

/// The store as the proxy and admin listener see it: any [`SessionStore`], every operation
/// bounded by `store.timeout` and measured.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn SessionStore>,
    timeout: Duration,
    key_prefix: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Builds the configured store (see [`open`]).
    pub fn from_config(config: &StoreConfig, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        Ok(Store::new(
            open(config)?,
            config.timeout,
            &config.key_prefix,
            metrics,
        ))
    }

    pub fn new(
        inner: Arc<dyn SessionStore>,
        timeout: Duration,
        key_prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Store {
        Store {
            inner,
            timeout,
            key_prefix: key_prefix.into(),
            metrics,
        }
    }

    /// The store key of a session: prefix + hex SHA-256 of its ID.
    pub fn key_for(&self, id: &crate::cookie::SessionId) -> String {
        let digest = id.store_digest();
        let mut key = String::with_capacity(self.key_prefix.len() + digest.len());
        key.push_str(&self.key_prefix);
        key.push_str(&digest);
        key
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one operation, bounded by `store.timeout`.
    async fn run<T>(
        &self,
        op: StoreOp,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.run_within(op, self.timeout, fut).await
    }

    pub async fn load(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.run(StoreOp::Load, self.inner.load(key)).await
    }

    pub async fn create(
        &self,
        key: &str,
        fields: &[(String, String)],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.run(StoreOp::Create, self.inner.create(key, fields, now_ms, ttl))
            .await
    }

    /// Applies `change` to an existing session; with `user` (the user it names and the
    /// session's absolute deadline), the session's entry in that user's index is made sure of
    /// and the index's expiry slides with the session's (in the same round trip where the
    /// store can).
    pub async fn update(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
        user: Option<(&str, u64)>,
    ) -> Result<bool, StoreError> {
        let work = async {
            match user {
                None => self.inner.update(key, change, now_ms, ttl).await,
                Some((user, deadline_ms)) => {
                    let index = self.index_key_for(user);
                    let entry = IndexEntry {
                        key: &index,
                        deadline_ms,
                    };
                    self.inner
                        .update_sliding_index(key, change, now_ms, ttl, entry)
                        .await
                }
            }
        };
        self.run(StoreOp::Update, work).await
    }

    pub async fn regenerate(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.run(
            StoreOp::Regenerate,
            self.inner.regenerate(old_key, new_key, change, now_ms, ttl),
        )
        .await
    }

    pub async fn destroy(&self, key: &str) -> Result<bool, StoreError> {
        self.run(StoreOp::Destroy, self.inner.destroy(key)).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(StoreOp::Ping, self.inner.ping()).await
    }

    /// The user index key for a user (the user field's JSON text): hashed like session keys.
    pub fn index_key_for(&self, user: &str) -> String {
        use sha2::Digest;
        format!(
            "{}user:{}",
            self.key_prefix,
            hex::encode(sha2::Sha256::digest(user.as_bytes()))
        )
    }

    /// Records session `key` under `user` until `deadline_ms`; the index lives at least
    /// `ttl` (the session's own TTL) longer.
    pub async fn index_add(
        &self,
        user: &str,
        key: &str,
        deadline_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let index = self.index_key_for(user);
        self.run(
            StoreOp::IndexAdd,
            self.inner
                .index_add(&index, key, deadline_ms, now_ms(), ttl),
        )
        .await
    }

    pub async fn index_remove(&self, user: &str, key: &str) -> Result<(), StoreError> {
        let index = self.index_key_for(user);
        self.run(
            StoreOp::IndexRemove,
            self.inner
                .index_remove(&index, std::slice::from_ref(&key.to_string())),
        )
        .await
    }

    /// The live sessions of a user. A bulk operation: bounded by four store timeouts.
    pub async fn user_sessions(
        &self,
        user_field: &str,
        user: &str,
    ) -> Result<Vec<(String, Option<SessionRecord>)>, StoreError> {
        let index = self.index_key_for(user);
        self.run_bulk(
            StoreOp::UserSessions,
            self.inner.user_sessions(&index, user_field, user, now_ms()),
        )
        .await
    }

    /// Destroys the given sessions concurrently (pipelined on one connection); returns how
    /// many existed. A bulk operation: bounded by four store timeouts.
    pub async fn destroy_many(&self, user: &str, keys: &[String]) -> Result<usize, StoreError> {
        let index = self.index_key_for(user);
        let inner = self.inner.clone();
        let work = async move {
            let mut destroyed = 0;
            for chunk in keys.chunks(256) {
                let results =
                    futures_util::future::join_all(chunk.iter().map(|k| inner.destroy(k))).await;
                for r in results {
                    if r? {
                        destroyed += 1;
                    }
                }
                inner.index_remove(&index, chunk).await?;
            }
            Ok(destroyed)
        };
        self.run_bulk(StoreOp::DestroyMany, work).await
    }

    /// Runs one bulk operation, bounded by four `store.timeout`s.
    async fn run_bulk<T>(
        &self,
        op: StoreOp,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.run_within(op, self.timeout * 4, fut).await
    }

    /// Runs `fut` for at most `limit`, records its latency and outcome under `op`, and logs a
    /// failure.
    async fn run_within<T>(
        &self,
        op: StoreOp,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(limit)),
        };
        self.metrics
            .observe_store(op, start.elapsed(), result.is_ok());
        if let Err(e) = &result {
            tracing::warn!(op = op.as_str(), error = %e, "store operation failed");
        }
        result
    }

    /// Shutdown hook of the underlying store (not time-limited: saving may take a moment).
    pub async fn close(&self) {
        self.inner.close().await
    }
}
