//! Redis store: a session is one hash (`key_prefix` + digest), its TTL the session's expiry.
//!
//! Every write is one Lua script, so a response's changes land atomically and never recreate
//! a session that expired or was destroyed meanwhile. Connections are one multiplexed
//! connection per sidecar, made lazily on the runtime of the first operation and re-made by
//! the driver when Redis comes back.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

use super::{now_ms, SessionRecord, SessionStore, StoreError, CREATED_FIELD};
use crate::config::{StoreBackend, StoreConfig};
use crate::protocol::Change;

/// Writes one response's change. KEYS[1] = key (KEYS[2] = new key for `regenerate`).
/// ARGV: mode (create | update | regenerate), now_ms, ttl_ms, number of sets,
/// then name/value pairs, then names to delete. Returns 1, or 0 when the session is gone.
const WRITE_SCRIPT: &str = r#"
local mode = ARGV[1]
local key = KEYS[1]
if mode == 'create' then
  redis.call('DEL', key)
else
  if redis.call('EXISTS', key) == 0 then return 0 end
  if mode == 'regenerate' then
    redis.call('RENAME', key, KEYS[2])
    key = KEYS[2]
  end
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', key, ARGV[i])
  i = i + 1
end
if mode == 'create' and redis.call('HEXISTS', key, '__created') == 0 then
  redis.call('HSET', key, '__created', ARGV[2])
end
redis.call('HSET', key, '__touched', ARGV[2])
redis.call('PEXPIRE', key, ARGV[3])
return 1
"#;

fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Unavailable("timed out".into())
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::BadReply(e.to_string())
    }
}

/// Builds the Redis store for a Redis kind of `store` config.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    match &config.backend {
        StoreBackend::Redis { url, ca_file } => {
            let client = client(url, ca_file.as_deref())?;
            Ok(Arc::new(RedisStore::new(Standalone {
                client,
                timeout: config.timeout,
                manager: OnceLock::new(),
            })))
        }
        _ => Err(StoreError::Unavailable(
            "this store kind is not built into this binary".into(),
        )),
    }
}

/// A `redis::Client` for a URL, trusting `ca_file` for `rediss://` when given.
pub fn client(url: &str, ca_file: Option<&std::path::Path>) -> Result<Client, StoreError> {
    let result = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Unavailable(format!("cannot read store.ca_file {}: {e}", path.display()))
            })?;
            Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        None => Client::open(url),
    };
    result.map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))
}

/// How a Redis store reaches its server(s).
pub trait Connector: Send + Sync + 'static {
    type Conn: ConnectionLike + Clone + Send + Sync + 'static;
    /// A connection handle; cheap to call, connects lazily.
    fn connection(&self) -> Result<Self::Conn, StoreError>;
    /// True when the old and new key of a regenerate may live on different nodes, so the
    /// move cannot be one script.
    fn cross_slot(&self) -> bool {
        false
    }
}

/// One Redis server through a reconnecting, multiplexed [`ConnectionManager`].
pub struct Standalone {
    client: Client,
    timeout: Duration,
    manager: OnceLock<ConnectionManager>,
}

impl Connector for Standalone {
    type Conn = ConnectionManager;

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(store_error)?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }
}

/// The Redis [`SessionStore`] over any [`Connector`].
pub struct RedisStore<C: Connector> {
    connector: C,
    write: Script,
}

impl<C: Connector> RedisStore<C> {
    pub fn new(connector: C) -> RedisStore<C> {
        RedisStore {
            connector,
            write: Script::new(WRITE_SCRIPT),
        }
    }

    async fn write(
        &self,
        mode: &str,
        keys: &[&str],
        change_set: &[(String, String)],
        delete: &[String],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connector.connection()?;
        let mut invocation = self.write.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        invocation
            .arg(mode)
            .arg(now_ms)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(change_set.len());
        for (k, v) in change_set {
            invocation.arg(k).arg(v);
        }
        for k in delete {
            invocation.arg(k);
        }
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }

    async fn load_raw(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.connector.connection()?;
        let raw: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(raw
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect())
    }

    /// Regenerate where old and new key may be on different nodes: copy, then delete the
    /// old key; if the delete fails the copy is removed again and the old session stays.
    async fn regenerate_by_copy(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let pairs = self.load_raw(old_key).await?;
        if pairs.is_empty() {
            return Ok(false);
        }
        let record = SessionRecord::from_hash(pairs, now_ms);
        let merged = change.merged(&record.fields);
        let mut fields = merged;
        fields.push((CREATED_FIELD.to_string(), record.created_ms.to_string()));
        self.write("create", &[new_key], &fields, &[], now_ms, ttl)
            .await?;
        let mut conn = self.connector.connection()?;
        let deleted: Result<i64, _> = redis::cmd("DEL").arg(old_key).query_async(&mut conn).await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) => {
                let _: Result<i64, _> = redis::cmd("DEL").arg(new_key).query_async(&mut conn).await;
                Err(store_error(e))
            }
        }
    }
}

#[async_trait]
impl<C: Connector> SessionStore for RedisStore<C> {
    async fn load(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let pairs = self.load_raw(key).await?;
        if pairs.is_empty() {
            return Ok(None);
        }
        Ok(Some(SessionRecord::from_hash(pairs, now_ms())))
    }

    async fn create(
        &self,
        key: &str,
        fields: &[(String, String)],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write("create", &[key], fields, &[], now_ms, ttl)
            .await
            .map(|_| ())
    }

    async fn update(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.write("update", &[key], &change.set, &change.delete, now_ms, ttl)
            .await
    }

    async fn regenerate(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self.connector.cross_slot() {
            return self
                .regenerate_by_copy(old_key, new_key, change, now_ms, ttl)
                .await;
        }
        self.write(
            "regenerate",
            &[old_key, new_key],
            &change.set,
            &change.delete,
            now_ms,
            ttl,
        )
        .await
    }

    async fn destroy(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.connector.connection()?;
        let n: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connector.connection()?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_field_names_match_the_script() {
        assert!(super::WRITE_SCRIPT.contains(super::CREATED_FIELD));
        assert!(super::WRITE_SCRIPT.contains(crate::store::TOUCHED_FIELD));
    }
}
